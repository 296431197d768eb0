#version 450
// Fused multi-head attention (tp_attention_args), flash-attention style: no
// [Tq, Tk] matrix is stored. q rows are [B, Tq, ld_q], k and v rows
// [B, Tk, ld_kv] (head h of position t at (b*T + t)*ld + h*hd), out and dout
// [B, Tq, nh*hd], lse [B, nh, Tq].
//   forward (default): a workgroup per query row (b, h, i) walks the keys in
//     tiles of WG with an online softmax; writes out and lse.
//   BWD_Q: per query row: D_i = dout_i . out_i (saved for the others), and
//     dq_i += scale * sum_j dS_ij k_j, P recomputed from lse.
//   BWD_KV: per key row (b, h, j): dv_j += sum_i P'_ij dout_i,
//     dk_j += scale * sum_i dS_ij q_i.
//   BWD_BIAS: per (h, i, j): dbias += sum_b dS_bhij, batch in order.
// dS = P * (Z * dP' - D) with Z the dropout factor (keep / (1 - p)) and
// dP' = dout_i . v_j. A batch entry whose keys are all masked has P = 1/Tk
// (as if every score were 0) and lse = log Tk.
// Head vectors are read four elements at a time (vec4 when the host found
// them 16-byte aligned: pc.al), which matters where loads are expensive
// (lavapipe).
#define WG 64u
#define MAX_HD 512u
#define MAX_HD4 (MAX_HD / 4u)
#define RPT (MAX_HD4 / WG) // head groups of four per invocation
layout(local_size_x = 64) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint B, nh, Tq, Tk, hd, ldq, ldkv;
  float scale, p, dscale;
  uint seed_lo, seed_hi, off_lo, off_hi;
  uint has_mask, has_bias, cdt, al;
} pc;
#include "common.glsl"
#include "reduce.glsl"

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

shared vec4 sa[MAX_HD4];
shared vec4 sb[MAX_HD4];
shared vec4 t1[WG / 4u];
shared vec4 t2[WG / 4u];

vec4 rq4(vec4 x) {
  if (pc.cdt == 0u) return x;
  return vec4(round_to(x.x, pc.cdt), round_to(x.y, pc.cdt), round_to(x.z, pc.cdt),
              round_to(x.w, pc.cdt));
}

// Four head elements from index i (fewer at the end of an odd head size: 0s).
#define LOAD4(NAME, ARR, ARR4)                                                                  \
  vec4 NAME(uint i, uint d0) {                                                                  \
    if (pc.al != 0u) return ARR4[i >> 2];                                                       \
    vec4 r = vec4(0.0);                                                                         \
    uint cnt = min(4u, pc.hd - d0);                                                             \
    for (uint c = 0u; c < cnt; c++) r[c] = ARR[i + c];                                          \
    return r;                                                                                   \
  }
LOAD4(ldq4, q, q4)
LOAD4(ldk4, k, k4)
LOAD4(ldv4, v, v4)
LOAD4(ldo4, dout, dout4)

// Adds four results into a row of dst (dq/dk/dv/out) at index i.
#define ADD4(NAME, ARR)                                                                         \
  void NAME(uint i, uint d0, vec4 x, bool set) {                                                \
    uint cnt = min(4u, pc.hd - d0);                                                             \
    for (uint c = 0u; c < cnt; c++) ARR[i + c] = set ? x[c] : ARR[i + c] + x[c];               \
  }
ADD4(put_o, o)
ADD4(add_dq, dq)
ADD4(add_dk, dk)
ADD4(add_dv, dv)

uint q_at(uint b, uint i, uint h) { return BOFF(1) + (b * pc.Tq + i) * pc.ldq + h * pc.hd; }
uint k_at(uint b, uint j, uint h) { return BOFF(2) + (b * pc.Tk + j) * pc.ldkv + h * pc.hd; }
uint v_at(uint b, uint j, uint h) { return BOFF(3) + (b * pc.Tk + j) * pc.ldkv + h * pc.hd; }
uint o_at(uint b, uint i, uint h) { return (b * pc.Tq + i) * (pc.nh * pc.hd) + h * pc.hd; }

bool key_on(uint b, uint j) { return pc.has_mask == 0u || mask[BOFF(6) + b * pc.Tk + j] != 0; }

// Whether every key of batch entry b is masked (workgroup-uniform).
bool all_masked(uint b) {
  if (pc.has_mask == 0u) return false;
  float live = 0.0;
  for (uint j = gl_LocalInvocationID.x; j < pc.Tk; j += WG) live += key_on(b, j) ? 1.0 : 0.0;
  return wg_sum(live) == 0.0;
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

// sa . the row of K at index base
float dot_shared_k(uint base) {
  float s = 0.0;
  for (uint d0 = 0u; d0 < pc.hd; d0 += 4u) s += dot(sa[d0 >> 2], rq4(ldk4(base + d0, d0)));
  return s;
}

#if !defined(BWD_Q) && !defined(BWD_KV) && !defined(BWD_BIAS)
void main() {
  uint t = gl_LocalInvocationID.x, rows = pc.B * pc.nh * pc.Tq, G = (pc.hd + 3u) / 4u;
  for (uint g = gl_WorkGroupID.x; g < rows; g += gl_NumWorkGroups.x) {
    uint i = g % pc.Tq, bh = g / pc.Tq, h = bh % pc.nh, b = bh / pc.nh;
    for (uint d4 = t; d4 < G; d4 += WG) sa[d4] = rq4(ldq4(q_at(b, i, h) + 4u * d4, 4u * d4));
    bool fully = all_masked(b); // its reduction's barriers also publish sa
    barrier();
    float M = NEG_INF, Lsum = 0.0;
    vec4 acc[RPT];
    for (uint r = 0u; r < RPT; r++) acc[r] = vec4(0.0);
    for (uint j0 = 0u; j0 < pc.Tk; j0 += WG) {
      uint j = j0 + t;
      float s = NEG_INF;
      if (j < pc.Tk) {
        if (fully) s = 0.0;
        else if (key_on(b, j)) s = pc.scale * dot_shared_k(k_at(b, j, h)) + bias_at(h, i, j);
      }
      float mn = max(M, wg_max(s));
      float e = s == NEG_INF ? 0.0 : exp_fast(s - mn);
      float corr = M == NEG_INF ? 0.0 : exp_fast(M - mn);
      Lsum = Lsum * corr + wg_sum(e);
      t1[t >> 2][t & 3u] = e != 0.0 ? e * drop_factor(b, h, i, j) : 0.0;
      barrier();
      uint cnt = min(WG, pc.Tk - j0);
      for (uint r = 0u; r < RPT; r++) {
        uint d4 = t + r * WG;
        if (d4 < G) {
          vec4 s2 = vec4(0.0);
          for (uint u = 0u; u < cnt; u++)
            s2 += t1[u >> 2][u & 3u] * rq4(ldv4(v_at(b, j0 + u, h) + 4u * d4, 4u * d4));
          acc[r] = acc[r] * corr + s2;
        }
      }
      barrier();
      M = mn;
    }
    for (uint r = 0u; r < RPT; r++) {
      uint d4 = t + r * WG;
      if (d4 < G) put_o(BOFF(4) + o_at(b, i, h) + 4u * d4, 4u * d4, acc[r] / Lsum, true);
    }
    if (t == 0u) lse[BOFF(5) + (b * pc.nh + h) * pc.Tq + i] = M + log(Lsum);
  }
}
#elif defined(BWD_Q)
void main() {
  uint t = gl_LocalInvocationID.x, rows = pc.B * pc.nh * pc.Tq, G = (pc.hd + 3u) / 4u;
  for (uint g = gl_WorkGroupID.x; g < rows; g += gl_NumWorkGroups.x) {
    uint i = g % pc.Tq, bh = g / pc.Tq, h = bh % pc.nh, b = bh / pc.nh;
    float dd = 0.0;
    for (uint d4 = t; d4 < G; d4 += WG) {
      sa[d4] = rq4(ldq4(q_at(b, i, h) + 4u * d4, 4u * d4));
      vec4 g2 = ldo4(BOFF(8) + o_at(b, i, h) + 4u * d4, 4u * d4);
      sb[d4] = g2;
      uint ob = BOFF(4) + o_at(b, i, h) + 4u * d4, cnt = min(4u, pc.hd - 4u * d4);
      for (uint c = 0u; c < cnt; c++) dd += g2[c] * o[ob + c];
    }
    float D = wg_sum(dd);
    bool fully = all_masked(b);
    barrier();
    uint row = (b * pc.nh + h) * pc.Tq + i;
    if (t == 0u) {
      dsum[BOFF(13) + row] = D;
      if (h == 0u && i == 0u) dsum[BOFF(13) + rows + b] = fully ? 1.0 : 0.0;
    }
    float l = lse[BOFF(5) + row];
    vec4 acc[RPT];
    for (uint r = 0u; r < RPT; r++) acc[r] = vec4(0.0);
    for (uint j0 = 0u; j0 < pc.Tk; j0 += WG) {
      uint j = j0 + t;
      float ds = 0.0;
      if (j < pc.Tk && (fully || key_on(b, j))) {
        uint kb = k_at(b, j, h), vb = v_at(b, j, h);
        float sdot = 0.0, dp = 0.0;
        for (uint d0 = 0u; d0 < pc.hd; d0 += 4u) {
          sdot += dot(sa[d0 >> 2], rq4(ldk4(kb + d0, d0)));
          dp += dot(sb[d0 >> 2], rq4(ldv4(vb + d0, d0)));
        }
        float P = fully ? 1.0 / float(pc.Tk) : exp_fast(pc.scale * sdot + bias_at(h, i, j) - l);
        ds = P * (drop_factor(b, h, i, j) * dp - D);
      }
      t1[t >> 2][t & 3u] = ds;
      barrier();
      uint cnt = min(WG, pc.Tk - j0);
      for (uint r = 0u; r < RPT; r++) {
        uint d4 = t + r * WG;
        if (d4 < G) {
          vec4 s2 = vec4(0.0);
          for (uint u = 0u; u < cnt; u++)
            s2 += t1[u >> 2][u & 3u] * rq4(ldk4(k_at(b, j0 + u, h) + 4u * d4, 4u * d4));
          acc[r] += s2;
        }
      }
      barrier();
    }
    for (uint r = 0u; r < RPT; r++) {
      uint d4 = t + r * WG;
      if (d4 < G) add_dq(BOFF(9) + (b * pc.Tq + i) * pc.ldq + h * pc.hd + 4u * d4, 4u * d4,
                         pc.scale * acc[r], false);
    }
  }
}
#elif defined(BWD_KV)
void main() {
  uint t = gl_LocalInvocationID.x, rows = pc.B * pc.nh * pc.Tq, G = (pc.hd + 3u) / 4u;
  uint keys = pc.B * pc.nh * pc.Tk;
  for (uint g = gl_WorkGroupID.x; g < keys; g += gl_NumWorkGroups.x) {
    uint j = g % pc.Tk, bh = g / pc.Tk, h = bh % pc.nh, b = bh / pc.nh;
    bool fully = dsum[BOFF(13) + rows + b] != 0.0;
    if (!fully && !key_on(b, j)) continue; // P[:, j] = 0: no gradient
    for (uint d4 = t; d4 < G; d4 += WG) {
      sa[d4] = rq4(ldk4(k_at(b, j, h) + 4u * d4, 4u * d4));
      sb[d4] = rq4(ldv4(v_at(b, j, h) + 4u * d4, 4u * d4));
    }
    barrier();
    vec4 accv[RPT], acck[RPT];
    for (uint r = 0u; r < RPT; r++) {
      accv[r] = vec4(0.0);
      acck[r] = vec4(0.0);
    }
    for (uint i0 = 0u; i0 < pc.Tq; i0 += WG) {
      uint i = i0 + t;
      float pp = 0.0, ds = 0.0;
      if (i < pc.Tq) {
        uint qb = q_at(b, i, h), gb = BOFF(8) + o_at(b, i, h);
        float sdot = 0.0, dp = 0.0;
        for (uint d0 = 0u; d0 < pc.hd; d0 += 4u) {
          sdot += dot(rq4(ldq4(qb + d0, d0)), sa[d0 >> 2]);
          dp += dot(ldo4(gb + d0, d0), sb[d0 >> 2]);
        }
        uint row = (b * pc.nh + h) * pc.Tq + i;
        float P = fully ? 1.0 / float(pc.Tk)
                        : exp_fast(pc.scale * sdot + bias_at(h, i, j) - lse[BOFF(5) + row]);
        float z = drop_factor(b, h, i, j);
        pp = P * z;
        ds = P * (z * dp - dsum[BOFF(13) + row]);
      }
      t1[t >> 2][t & 3u] = pp;
      t2[t >> 2][t & 3u] = ds;
      barrier();
      uint cnt = min(WG, pc.Tq - i0);
      for (uint r = 0u; r < RPT; r++) {
        uint d4 = t + r * WG;
        if (d4 < G) {
          vec4 sv = vec4(0.0), sk = vec4(0.0);
          for (uint u = 0u; u < cnt; u++) {
            sv += t1[u >> 2][u & 3u] * ldo4(BOFF(8) + o_at(b, i0 + u, h) + 4u * d4, 4u * d4);
            sk += t2[u >> 2][u & 3u] * rq4(ldq4(q_at(b, i0 + u, h) + 4u * d4, 4u * d4));
          }
          accv[r] += sv;
          acck[r] += sk;
        }
      }
      barrier();
    }
    for (uint r = 0u; r < RPT; r++) {
      uint d4 = t + r * WG;
      if (d4 < G) {
        uint at = (b * pc.Tk + j) * pc.ldkv + h * pc.hd + 4u * d4;
        add_dv(BOFF(11) + at, 4u * d4, accv[r], false);
        add_dk(BOFF(10) + at, 4u * d4, pc.scale * acck[r], false);
      }
    }
  }
}
#else
void main() {
  uint rows = pc.B * pc.nh * pc.Tq, total = pc.nh * pc.Tq * pc.Tk;
  uint stride = gl_NumWorkGroups.x * WG;
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
