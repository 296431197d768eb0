#version 450
#extension GL_GOOGLE_include_directive : require
// Fused multi-head attention (tp_attention_args), flash-attention style: no
// [Tq, Tk] matrix is stored. q rows are [B, Tq, ld_q], k and v rows
// [B, Tk, ld_kv] (head h of position t at (b*T + t)*ld + h*hd), out and dout
// [B, Tq, nh*hd], lse [B, nh, Tq].
//   forward (default): one subgroup per query row (b, h, i) walks the keys
//     with an online softmax; writes out and lse.
//   BWD_Q: per query row: D_i = dout_i . out_i (saved for the others), and
//     dq_i += scale * sum_j dS_ij k_j, P recomputed from lse.
//   BWD_KV: per key row (b, h, j): dv_j += sum_i P'_ij dout_i,
//     dk_j += scale * sum_i dS_ij q_i.
//   BWD_BIAS: per (h, i, j): dbias += sum_b dS_bhij, batch in order.
// dS = P * (Z * dP' - D) with Z the dropout factor (keep / (1 - p)) and
// dP' = dout_i . v_j. A batch entry whose keys are all masked has P = 1/Tk
// (as if every score were 0) and lse = log Tk.
// Each lane holds groups of four head elements (group LANE + LANES * r);
// a score is one subgroupAdd. No shared memory, no barriers (both are slow
// on lavapipe); vec4 loads when the host found the rows 16-byte aligned.
#define MAX_HD4 64u // head_dim <= 256
layout(constant_id = 0) const uint SG_MIN = 8u; // the device's smallest subgroup
const uint RPL = (MAX_HD4 + SG_MIN - 1u) / SG_MIN; // head groups per lane
layout(local_size_x = 64) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint B, nh, Tq, Tk, hd, ldq, ldkv;
  float scale, p, dscale;
  uint seed_lo, seed_hi, off_lo, off_hi;
  uint has_mask, has_bias, cdt, al;
} pc;
#include "common.glsl"
#include "rows.glsl"

layout(std430, binding = 1) readonly buffer Q { float q[]; };
layout(std430, binding = 2) readonly buffer K { float k[]; };
layout(std430, binding = 3) readonly buffer V { float v[]; };
layout(std430, binding = 4) buffer O { float o[]; };
layout(std430, binding = 5) buffer L { float lse[]; };
layout(std430, binding = 6) readonly buffer MK { int mask[]; };
layout(std430, binding = 7) readonly buffer BI { float bias[]; };
layout(std430, binding = 8) readonly buffer DO { float dout[]; };
layout(std430, binding = 9) buffer DQ { float dq[]; };
layout(std430, binding = 10) buffer DK { float dk[]; };
layout(std430, binding = 11) buffer DV { float dv[]; };
layout(std430, binding = 12) buffer DB { float dbias[]; };
layout(std430, binding = 13) buffer DD { float dsum[]; }; // D [B*nh*Tq], then all-masked flags [B]
layout(std430, binding = 1) readonly buffer Q4 { vec4 q4[]; };
layout(std430, binding = 2) readonly buffer K4 { vec4 k4[]; };
layout(std430, binding = 3) readonly buffer V4 { vec4 v4[]; };
layout(std430, binding = 8) readonly buffer DO4 { vec4 dout4[]; };

vec4 rq4(vec4 x) {
  if (pc.cdt == 0u) return x;
  return vec4(round_to(x.x, pc.cdt), round_to(x.y, pc.cdt), round_to(x.z, pc.cdt),
              round_to(x.w, pc.cdt));
}

// Four head elements from index i, the group starting at head element d0
// (fewer at the end of a head size that is not a multiple of 4: 0s).
#define LOAD4(NAME, ARR, ARR4)                                                                  \
  vec4 NAME(uint i, uint d0) {                                                                  \
    if (pc.al != 0u) return ARR4[i >> 2];                                                       \
    vec4 r = vec4(0.0);                                                                         \
    uint cnt = min(4u, pc.hd - d0);                                                             \
    [[unroll]] for (uint c = 0u; c < 4u; c++) if (c < cnt) r[c] = ARR[i + c];                  \
    return r;                                                                                   \
  }
LOAD4(ldq4, q, q4)
LOAD4(ldk4, k, k4)
LOAD4(ldv4, v, v4)
LOAD4(ldo4, dout, dout4)

// Writes (set) or adds four results into a row of dst at index i.
#define ADD4(NAME, ARR)                                                                         \
  void NAME(uint i, uint d0, vec4 x, bool set) {                                                \
    uint cnt = min(4u, pc.hd - d0);                                                             \
    [[unroll]] for (uint c = 0u; c < 4u; c++)                                                   \
      if (c < cnt) ARR[i + c] = set ? x[c] : ARR[i + c] + x[c];                                 \
  }
ADD4(put_o, o)
ADD4(add_dq, dq)
ADD4(add_dk, dk)
ADD4(add_dv, dv)

uint q_at(uint b, uint i, uint h) { return BOFF(1) + (b * pc.Tq + i) * pc.ldq + h * pc.hd; }
uint k_at(uint b, uint j, uint h) { return BOFF(2) + (b * pc.Tk + j) * pc.ldkv + h * pc.hd; }
uint v_at(uint b, uint j, uint h) { return BOFF(3) + (b * pc.Tk + j) * pc.ldkv + h * pc.hd; }
uint o_at(uint b, uint i, uint h) { return (b * pc.Tq + i) * (pc.nh * pc.hd) + h * pc.hd; }

// Head element d0 of this lane's group r (>= hd: the lane has no such group).
uint group_at(uint r) { return 4u * (LANE + LANES * r); }

// How many of the RPL groups any lane uses (subgroup-uniform): loops over
// groups stop there, so they cost what the head needs (a CPU implementation
// runs masked-off iterations too) while the arrays keep constant sizes.
uint lane_groups() { return ((pc.hd + 3u) / 4u + LANES - 1u) / LANES; }

bool key_on(uint b, uint j) { return pc.has_mask == 0u || mask[BOFF(6) + b * pc.Tk + j] != 0; }

// Whether every key of batch entry b is masked (subgroup-uniform).
bool all_masked(uint b) {
  if (pc.has_mask == 0u) return false;
  float live = 0.0;
  for (uint j = LANE; j < pc.Tk; j += LANES) live = max(live, key_on(b, j) ? 1.0 : 0.0);
  return subgroupMax(live) == 0.0;
}

// The dropout factor of P[b, h, i, j]: 1 / (1 - p) kept, 0 dropped.
float drop_factor(uint b, uint h, uint i, uint j) {
  if (pc.p == 0.0) return 1.0;
  uint hi, lo;
  umulExtended((b * pc.nh + h) * pc.Tq + i, pc.Tk, hi, lo);
  uvec2 ctr = add64v(uvec2(pc.off_lo, pc.off_hi), add64(uvec2(lo, hi), j));
  return philox_uniform(uvec2(pc.seed_lo, pc.seed_hi), ctr) >= pc.p ? pc.dscale : 0.0;
}

float bias_at(uint h, uint i, uint j) {
  return pc.has_bias != 0u ? bias[BOFF(7) + (h * pc.Tq + i) * pc.Tk + j] : 0.0;
}

#if !defined(BWD_Q) && !defined(BWD_KV) && !defined(BWD_BIAS)
void main() {
  uint rows = pc.B * pc.nh * pc.Tq;
  for (uint row = row_first(); row < rows; row += row_step()) {
    uint i = row % pc.Tq, bh = row / pc.Tq, h = bh % pc.nh, b = bh / pc.nh, nr = lane_groups();
    vec4 qv[RPL], acc[RPL];
    for (uint r = 0u; r < RPL; r++) {
      if (r >= nr) break;
      uint d0 = group_at(r);
      qv[r] = d0 < pc.hd ? rq4(ldq4(q_at(b, i, h) + d0, d0)) : vec4(0.0);
      acc[r] = vec4(0.0);
    }
    bool fully = all_masked(b);
    float M = NEG_INF, Lsum = 0.0;
    for (uint j = 0u; j < pc.Tk; j++) {
      if (!fully && !key_on(b, j)) continue;
      uint kb = k_at(b, j, h), vb = v_at(b, j, h);
      float part = 0.0;
      for (uint r = 0u; r < RPL; r++) {
      if (r >= nr) break;
        uint d0 = group_at(r);
        if (d0 < pc.hd) part += dot(qv[r], rq4(ldk4(kb + d0, d0)));
      }
      float sum = subgroupAdd(part);
      float s = fully ? 0.0 : pc.scale * sum + bias_at(h, i, j);
      float mn = max(M, s);
      float corr = exp_fast(M - mn), e = exp_fast(s - mn);
      Lsum = Lsum * corr + e;
      float pe = e * drop_factor(b, h, i, j);
      for (uint r = 0u; r < RPL; r++) {
      if (r >= nr) break;
        uint d0 = group_at(r);
        if (d0 < pc.hd) acc[r] = acc[r] * corr + pe * rq4(ldv4(vb + d0, d0));
      }
      M = mn;
    }
    for (uint r = 0u; r < RPL; r++) {
      if (r >= nr) break;
      uint d0 = group_at(r);
      if (d0 < pc.hd) put_o(BOFF(4) + o_at(b, i, h) + d0, d0, acc[r] / Lsum, true);
    }
    if (subgroupElect()) lse[BOFF(5) + row] = M + log(Lsum);
  }
}
#elif defined(BWD_Q)
void main() {
  uint rows = pc.B * pc.nh * pc.Tq;
  for (uint row = row_first(); row < rows; row += row_step()) {
    uint i = row % pc.Tq, bh = row / pc.Tq, h = bh % pc.nh, b = bh / pc.nh, nr = lane_groups();
    vec4 qv[RPL], gv[RPL], acc[RPL];
    float dd = 0.0;
    for (uint r = 0u; r < RPL; r++) {
      if (r >= nr) break;
      uint d0 = group_at(r);
      qv[r] = gv[r] = acc[r] = vec4(0.0);
      if (d0 < pc.hd) {
        qv[r] = rq4(ldq4(q_at(b, i, h) + d0, d0));
        gv[r] = ldo4(BOFF(8) + o_at(b, i, h) + d0, d0);
        uint ob = BOFF(4) + o_at(b, i, h) + d0, cnt = min(4u, pc.hd - d0);
        [[unroll]] for (uint c = 0u; c < 4u; c++) if (c < cnt) dd += gv[r][c] * o[ob + c];
      }
    }
    float D = subgroupAdd(dd);
    bool fully = all_masked(b);
    if (subgroupElect()) {
      dsum[BOFF(13) + row] = D;
      if (h == 0u && i == 0u) dsum[BOFF(13) + rows + b] = fully ? 1.0 : 0.0;
    }
    float l = lse[BOFF(5) + row];
    for (uint j = 0u; j < pc.Tk; j++) {
      if (!fully && !key_on(b, j)) continue;
      uint kb = k_at(b, j, h), vb = v_at(b, j, h);
      vec4 kv[RPL];
      float ps = 0.0, pd = 0.0;
      for (uint r = 0u; r < RPL; r++) {
      if (r >= nr) break;
        uint d0 = group_at(r);
        kv[r] = vec4(0.0);
        if (d0 < pc.hd) {
          kv[r] = rq4(ldk4(kb + d0, d0));
          ps += dot(qv[r], kv[r]);
          pd += dot(gv[r], rq4(ldv4(vb + d0, d0)));
        }
      }
      float sdot = subgroupAdd(ps), dp = subgroupAdd(pd);
      float P = fully ? 1.0 / float(pc.Tk) : exp_fast(pc.scale * sdot + bias_at(h, i, j) - l);
      float ds = P * (drop_factor(b, h, i, j) * dp - D);
      for (uint r = 0u; r < RPL && r < nr; r++) acc[r] += ds * kv[r];
    }
    for (uint r = 0u; r < RPL; r++) {
      if (r >= nr) break;
      uint d0 = group_at(r);
      if (d0 < pc.hd)
        add_dq(BOFF(9) + (b * pc.Tq + i) * pc.ldq + h * pc.hd + d0, d0, pc.scale * acc[r], false);
    }
  }
}
#elif defined(BWD_KV)
void main() {
  uint rows = pc.B * pc.nh * pc.Tq, keys = pc.B * pc.nh * pc.Tk;
  for (uint key = row_first(); key < keys; key += row_step()) {
    uint j = key % pc.Tk, bh = key / pc.Tk, h = bh % pc.nh, b = bh / pc.nh, nr = lane_groups();
    bool fully = dsum[BOFF(13) + rows + b] != 0.0;
    if (!fully && !key_on(b, j)) continue; // P[:, j] = 0: no gradient
    vec4 kv[RPL], vv[RPL], accv[RPL], acck[RPL];
    for (uint r = 0u; r < RPL; r++) {
      if (r >= nr) break;
      uint d0 = group_at(r);
      kv[r] = vv[r] = accv[r] = acck[r] = vec4(0.0);
      if (d0 < pc.hd) {
        kv[r] = rq4(ldk4(k_at(b, j, h) + d0, d0));
        vv[r] = rq4(ldv4(v_at(b, j, h) + d0, d0));
      }
    }
    for (uint i = 0u; i < pc.Tq; i++) {
      uint qb = q_at(b, i, h), gb = BOFF(8) + o_at(b, i, h);
      vec4 qv[RPL], gv[RPL];
      float ps = 0.0, pd = 0.0;
      for (uint r = 0u; r < RPL; r++) {
      if (r >= nr) break;
        uint d0 = group_at(r);
        qv[r] = gv[r] = vec4(0.0);
        if (d0 < pc.hd) {
          qv[r] = rq4(ldq4(qb + d0, d0));
          gv[r] = ldo4(gb + d0, d0);
          ps += dot(qv[r], kv[r]);
          pd += dot(gv[r], vv[r]);
        }
      }
      float sdot = subgroupAdd(ps), dp = subgroupAdd(pd);
      uint row = (b * pc.nh + h) * pc.Tq + i;
      float P = fully ? 1.0 / float(pc.Tk)
                      : exp_fast(pc.scale * sdot + bias_at(h, i, j) - lse[BOFF(5) + row]);
      float z = drop_factor(b, h, i, j);
      float pp = P * z, ds = P * (z * dp - dsum[BOFF(13) + row]);
      for (uint r = 0u; r < RPL; r++) {
      if (r >= nr) break;
        accv[r] += pp * gv[r];
        acck[r] += ds * qv[r];
      }
    }
    for (uint r = 0u; r < RPL; r++) {
      if (r >= nr) break;
      uint d0 = group_at(r);
      if (d0 < pc.hd) {
        uint at = (b * pc.Tk + j) * pc.ldkv + h * pc.hd + d0;
        add_dv(BOFF(11) + at, d0, accv[r], false);
        add_dk(BOFF(10) + at, d0, pc.scale * acck[r], false);
      }
    }
  }
}
#else
void main() {
  uint rows = pc.B * pc.nh * pc.Tq, total = pc.nh * pc.Tq * pc.Tk;
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint e = gl_GlobalInvocationID.x; e < total; e += stride) {
    uint j = e % pc.Tk, hi = e / pc.Tk, i = hi % pc.Tq, h = hi / pc.Tq;
    float sum = 0.0;
    for (uint b = 0u; b < pc.B; b++) {
      bool fully = dsum[BOFF(13) + rows + b] != 0.0;
      if (!fully && !key_on(b, j)) continue;
      uint qb = q_at(b, i, h), kb = k_at(b, j, h), vb = v_at(b, j, h),
           gb = BOFF(8) + o_at(b, i, h);
      float sdot = 0.0, dp = 0.0;
      for (uint d0 = 0u; d0 < pc.hd; d0 += 4u) {
        sdot += dot(rq4(ldq4(qb + d0, d0)), rq4(ldk4(kb + d0, d0)));
        dp += dot(ldo4(gb + d0, d0), rq4(ldv4(vb + d0, d0)));
      }
      uint row = (b * pc.nh + h) * pc.Tq + i;
      float P = fully ? 1.0 / float(pc.Tk)
                      : exp_fast(pc.scale * sdot + bias_at(h, i, j) - lse[BOFF(5) + row]);
      sum += P * (drop_factor(b, h, i, j) * dp - dsum[BOFF(13) + row]);
    }
    dbias[BOFF(12) + e] += sum;
  }
}
#endif
