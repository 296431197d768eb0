#version 450
// Fused multi-head attention (tp_attention_args), flash-attention style: no
// [T, T] matrix is stored. q, k, v rows are [B, T, ld] (head h of position t
// at (b*T + t)*ld + h*hd), out and dout are [B, T, nh*hd], lse [B, nh, T].
//   forward (default): a workgroup per query row (b, h, i) walks the keys in
//     tiles of WG with an online softmax; writes out and lse.
//   BWD_Q: per query row: D_i = dout_i . out_i (saved for the others), and
//     dq_i += scale * sum_j dS_ij k_j, P recomputed from lse.
//   BWD_KV: per key row (b, h, j): dv_j += sum_i P'_ij dout_i,
//     dk_j += scale * sum_i dS_ij q_i.
//   BWD_BIAS: per (h, i, j): dbias += sum_b dS_bhij, batch in order.
// dS = P * (Z * dP' - D) with Z the dropout factor (keep / (1 - p)) and
// dP' = dout_i . v_j. A batch entry whose keys are all masked has P = 1/T
// (as if every score were 0) and lse = log T.
#define WG 64u
#define MAX_HD 512u
#define RPT 8u // MAX_HD / WG head elements per invocation
layout(local_size_x = 64) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint B, nh, T, hd, ld;
  float scale, p, dscale;
  uint seed_lo, seed_hi, off_lo, off_hi;
  uint has_mask, has_bias, cdt;
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
layout(std430, binding = 13) buffer DD { float dsum[]; }; // D [B*nh*T], then all-masked flags [B]

shared float sa[MAX_HD];
shared float sb[MAX_HD];
shared float t1[WG];
shared float t2[WG];

float rq(float x) { return pc.cdt != 0u ? round_to(x, pc.cdt) : x; }

uint qkv_at(uint b, uint t, uint h) { return (b * pc.T + t) * pc.ld + h * pc.hd; }
uint out_at(uint b, uint t, uint h) { return (b * pc.T + t) * (pc.nh * pc.hd) + h * pc.hd; }

bool key_on(uint b, uint j) { return pc.has_mask == 0u || mask[BOFF(6) + b * pc.T + j] != 0; }

// Whether every key of batch entry b is masked (workgroup-uniform).
bool all_masked(uint b) {
  if (pc.has_mask == 0u) return false;
  float live = 0.0;
  for (uint j = gl_LocalInvocationID.x; j < pc.T; j += WG) live += key_on(b, j) ? 1.0 : 0.0;
  return wg_sum(live) == 0.0;
}

// The dropout factor of P[b, h, i, j]: 1 / (1 - p) kept, 0 dropped.
float drop_factor(uint b, uint h, uint i, uint j) {
  if (pc.p == 0.0) return 1.0;
  uint hi, lo;
  umulExtended((b * pc.nh + h) * pc.T + i, pc.T, hi, lo);
  uvec2 ctr = add64v(uvec2(pc.off_lo, pc.off_hi), add64(uvec2(lo, hi), j));
  return philox_uniform(uvec2(pc.seed_lo, pc.seed_hi), ctr) >= pc.p ? pc.dscale : 0.0;
}

float bias_at(uint h, uint i, uint j) {
  return pc.has_bias != 0u ? bias[BOFF(7) + (h * pc.T + i) * pc.T + j] : 0.0;
}

#if !defined(BWD_Q) && !defined(BWD_KV) && !defined(BWD_BIAS)
void main() {
  uint t = gl_LocalInvocationID.x, rows = pc.B * pc.nh * pc.T;
  uint oq = BOFF(1), ok = BOFF(2), ov = BOFF(3), oo = BOFF(4), ol = BOFF(5);
  for (uint g = gl_WorkGroupID.x; g < rows; g += gl_NumWorkGroups.x) {
    uint i = g % pc.T, bh = g / pc.T, h = bh % pc.nh, b = bh / pc.nh;
    for (uint d = t; d < pc.hd; d += WG) sa[d] = rq(q[oq + qkv_at(b, i, h) + d]);
    bool fully = all_masked(b); // its reduction's barriers also publish sa
    barrier();
    float M = NEG_INF, Lsum = 0.0;
    float acc[RPT];
    for (uint r = 0u; r < RPT; r++) acc[r] = 0.0;
    for (uint j0 = 0u; j0 < pc.T; j0 += WG) {
      uint j = j0 + t;
      float s = NEG_INF;
      if (j < pc.T) {
        if (fully) {
          s = 0.0;
        } else if (key_on(b, j)) {
          uint kb = ok + qkv_at(b, j, h);
          float dot = 0.0;
          for (uint d = 0u; d < pc.hd; d++) dot += sa[d] * rq(k[kb + d]);
          s = pc.scale * dot + bias_at(h, i, j);
        }
      }
      float mn = max(M, wg_max(s));
      float e = s == NEG_INF ? 0.0 : exp_fast(s - mn);
      float corr = M == NEG_INF ? 0.0 : exp_fast(M - mn);
      Lsum = Lsum * corr + wg_sum(e);
      t1[t] = e != 0.0 ? e * drop_factor(b, h, i, j) : 0.0;
      barrier();
      uint cnt = min(WG, pc.T - j0);
      for (uint r = 0u; r < RPT; r++) {
        uint d = t + r * WG;
        if (d < pc.hd) {
          float s2 = 0.0;
          for (uint u = 0u; u < cnt; u++) s2 += t1[u] * rq(v[ov + qkv_at(b, j0 + u, h) + d]);
          acc[r] = acc[r] * corr + s2;
        }
      }
      barrier();
      M = mn;
    }
    for (uint r = 0u; r < RPT; r++) {
      uint d = t + r * WG;
      if (d < pc.hd) o[oo + out_at(b, i, h) + d] = acc[r] / Lsum;
    }
    if (t == 0u) lse[ol + (b * pc.nh + h) * pc.T + i] = M + log(Lsum);
  }
}
#elif defined(BWD_Q)
void main() {
  uint t = gl_LocalInvocationID.x, rows = pc.B * pc.nh * pc.T;
  uint oq = BOFF(1), ok = BOFF(2), ov = BOFF(3), oo = BOFF(4), ol = BOFF(5), odo = BOFF(8),
       odq = BOFF(9), odd = BOFF(13);
  for (uint g = gl_WorkGroupID.x; g < rows; g += gl_NumWorkGroups.x) {
    uint i = g % pc.T, bh = g / pc.T, h = bh % pc.nh, b = bh / pc.nh;
    float dd = 0.0;
    for (uint d = t; d < pc.hd; d += WG) {
      sa[d] = rq(q[oq + qkv_at(b, i, h) + d]);
      float g2 = dout[odo + out_at(b, i, h) + d];
      sb[d] = g2;
      dd += g2 * o[oo + out_at(b, i, h) + d];
    }
    float D = wg_sum(dd);
    bool fully = all_masked(b);
    barrier();
    uint row = (b * pc.nh + h) * pc.T + i;
    if (t == 0u) {
      dsum[odd + row] = D;
      if (h == 0u && i == 0u) dsum[odd + rows + b] = fully ? 1.0 : 0.0;
    }
    float l = lse[ol + row];
    float acc[RPT];
    for (uint r = 0u; r < RPT; r++) acc[r] = 0.0;
    for (uint j0 = 0u; j0 < pc.T; j0 += WG) {
      uint j = j0 + t;
      float ds = 0.0;
      if (j < pc.T && (fully || key_on(b, j))) {
        uint kb = ok + qkv_at(b, j, h), vb = ov + qkv_at(b, j, h);
        float dot = 0.0, dp = 0.0;
        for (uint d = 0u; d < pc.hd; d++) {
          dot += sa[d] * rq(k[kb + d]);
          dp += sb[d] * rq(v[vb + d]);
        }
        float P = fully ? 1.0 / float(pc.T) : exp_fast(pc.scale * dot + bias_at(h, i, j) - l);
        ds = P * (drop_factor(b, h, i, j) * dp - D);
      }
      t1[t] = ds;
      barrier();
      uint cnt = min(WG, pc.T - j0);
      for (uint r = 0u; r < RPT; r++) {
        uint d = t + r * WG;
        if (d < pc.hd) {
          float s2 = 0.0;
          for (uint u = 0u; u < cnt; u++) s2 += t1[u] * rq(k[ok + qkv_at(b, j0 + u, h) + d]);
          acc[r] += s2;
        }
      }
      barrier();
    }
    for (uint r = 0u; r < RPT; r++) {
      uint d = t + r * WG;
      if (d < pc.hd) dq[odq + qkv_at(b, i, h) + d] += pc.scale * acc[r];
    }
  }
}
#elif defined(BWD_KV)
void main() {
  uint t = gl_LocalInvocationID.x, rows = pc.B * pc.nh * pc.T;
  uint oq = BOFF(1), ok = BOFF(2), ov = BOFF(3), ol = BOFF(5), odo = BOFF(8), odk = BOFF(10),
       odv = BOFF(11), odd = BOFF(13);
  for (uint g = gl_WorkGroupID.x; g < rows; g += gl_NumWorkGroups.x) {
    uint j = g % pc.T, bh = g / pc.T, h = bh % pc.nh, b = bh / pc.nh;
    bool fully = dsum[odd + rows + b] != 0.0;
    if (!fully && !key_on(b, j)) continue; // P[:, j] = 0: no gradient
    for (uint d = t; d < pc.hd; d += WG) {
      sa[d] = rq(k[ok + qkv_at(b, j, h) + d]);
      sb[d] = rq(v[ov + qkv_at(b, j, h) + d]);
    }
    barrier();
    float accv[RPT], acck[RPT];
    for (uint r = 0u; r < RPT; r++) {
      accv[r] = 0.0;
      acck[r] = 0.0;
    }
    for (uint i0 = 0u; i0 < pc.T; i0 += WG) {
      uint i = i0 + t;
      float pp = 0.0, ds = 0.0;
      if (i < pc.T) {
        uint qb = oq + qkv_at(b, i, h), gb = odo + out_at(b, i, h);
        float dot = 0.0, dp = 0.0;
        for (uint d = 0u; d < pc.hd; d++) {
          dot += rq(q[qb + d]) * sa[d];
          dp += dout[gb + d] * sb[d];
        }
        uint row = (b * pc.nh + h) * pc.T + i;
        float P = fully ? 1.0 / float(pc.T)
                        : exp_fast(pc.scale * dot + bias_at(h, i, j) - lse[ol + row]);
        float z = drop_factor(b, h, i, j);
        pp = P * z;
        ds = P * (z * dp - dsum[odd + row]);
      }
      t1[t] = pp;
      t2[t] = ds;
      barrier();
      uint cnt = min(WG, pc.T - i0);
      for (uint r = 0u; r < RPT; r++) {
        uint d = t + r * WG;
        if (d < pc.hd) {
          float sv = 0.0, sk = 0.0;
          for (uint u = 0u; u < cnt; u++) {
            sv += t1[u] * dout[odo + out_at(b, i0 + u, h) + d];
            sk += t2[u] * rq(q[oq + qkv_at(b, i0 + u, h) + d]);
          }
          accv[r] += sv;
          acck[r] += sk;
        }
      }
      barrier();
    }
    for (uint r = 0u; r < RPT; r++) {
      uint d = t + r * WG;
      if (d < pc.hd) {
        dv[odv + qkv_at(b, j, h) + d] += accv[r];
        dk[odk + qkv_at(b, j, h) + d] += pc.scale * acck[r];
      }
    }
  }
}
#else
void main() {
  uint rows = pc.B * pc.nh * pc.T, total = pc.nh * pc.T * pc.T;
  uint oq = BOFF(1), ok = BOFF(2), ov = BOFF(3), ol = BOFF(5), odo = BOFF(8), odb = BOFF(12),
       odd = BOFF(13);
  uint stride = gl_NumWorkGroups.x * WG;
  for (uint e = gl_GlobalInvocationID.x; e < total; e += stride) {
    uint j = e % pc.T, hi = e / pc.T, i = hi % pc.T, h = hi / pc.T;
    float sum = 0.0;
    for (uint b = 0u; b < pc.B; b++) {
      bool fully = dsum[odd + rows + b] != 0.0;
      if (!fully && !key_on(b, j)) continue;
      uint qb = oq + qkv_at(b, i, h), kb = ok + qkv_at(b, j, h), vb = ov + qkv_at(b, j, h),
           gb = odo + out_at(b, i, h);
      float dot = 0.0, dp = 0.0;
      for (uint d = 0u; d < pc.hd; d++) {
        dot += rq(q[qb + d]) * rq(k[kb + d]);
        dp += dout[gb + d] * rq(v[vb + d]);
      }
      uint row = (b * pc.nh + h) * pc.T + i;
      float P = fully ? 1.0 / float(pc.T)
                      : exp_fast(pc.scale * dot + bias_at(h, i, j) - lse[ol + row]);
      sum += P * (drop_factor(b, h, i, j) * dp - dsum[odd + row]);
    }
    dbias[odb + e] += sum;
  }
}
#endif
