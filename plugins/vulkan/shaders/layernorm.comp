#version 450
#extension GL_GOOGLE_include_directive : require
// LayerNorm over rows of cols, one subgroup per row (rows.glsl).
// Forward: y = (x - mean) * rstd * gamma + beta, mean and rstd stored.
// BACKWARD: dx += rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),
//   dxhat = dy * gamma.
// PARTIALS: per chunk of CHUNK rows, pg[ch, c] = sum dy * xhat and
//   pb[ch, c] = sum dy (summed across chunks by colsum): one invocation per
//   column, rows in order, so the result does not depend on the device.
#define CHUNK 64u
layout(local_size_x = 64) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint rows, cols;
  float eps;
} pc;
#include "common.glsl"
#include "rows.glsl"

#if !defined(BACKWARD) && !defined(PARTIALS)
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(std430, binding = 2) writeonly buffer M { float mean[]; };
layout(std430, binding = 3) writeonly buffer R { float rstd[]; };
layout(std430, binding = 4) readonly buffer X { float x[]; };
layout(std430, binding = 5) readonly buffer G { float gamma[]; };
layout(std430, binding = 6) readonly buffer B { float beta[]; };

void main() {
  uint oy = BOFF(1), om = BOFF(2), orr = BOFF(3), ox = BOFF(4), og = BOFF(5), ob = BOFF(6);
  for (uint r = row_first(); r < pc.rows; r += row_step()) {
    uint base = r * pc.cols;
    float s = 0.0;
    for (uint c = LANE; c < pc.cols; c += LANES) s += x[ox + base + c];
    float mu = subgroupAdd(s) / float(pc.cols);
    float v = 0.0;
    for (uint c = LANE; c < pc.cols; c += LANES) {
      float d = x[ox + base + c] - mu;
      v += d * d;
    }
    float var = subgroupAdd(v) / float(pc.cols);
    float rs = 1.0 / sqrt(var + pc.eps);
    for (uint c = LANE; c < pc.cols; c += LANES)
      y[oy + base + c] = (x[ox + base + c] - mu) * rs * gamma[og + c] + beta[ob + c];
    if (subgroupElect()) {
      mean[om + r] = mu;
      rstd[orr + r] = rs;
    }
  }
}
#elif defined(BACKWARD)
layout(std430, binding = 1) buffer DX { float dx[]; };
layout(std430, binding = 2) readonly buffer DY { float dy[]; };
layout(std430, binding = 3) readonly buffer X { float x[]; };
layout(std430, binding = 4) readonly buffer M { float mean[]; };
layout(std430, binding = 5) readonly buffer R { float rstd[]; };
layout(std430, binding = 6) readonly buffer G { float gamma[]; };

void main() {
  uint odx = BOFF(1), ody = BOFF(2), ox = BOFF(3), om = BOFF(4), orr = BOFF(5), og = BOFF(6);
  for (uint r = row_first(); r < pc.rows; r += row_step()) {
    uint base = r * pc.cols;
    float mu = mean[om + r], rs = rstd[orr + r];
    float s1 = 0.0, s2 = 0.0;
    for (uint c = LANE; c < pc.cols; c += LANES) {
      float xh = (x[ox + base + c] - mu) * rs, dxh = dy[ody + base + c] * gamma[og + c];
      s1 += dxh;
      s2 += dxh * xh;
    }
    float m1 = subgroupAdd(s1) / float(pc.cols);
    float m2 = subgroupAdd(s2) / float(pc.cols);
    for (uint c = LANE; c < pc.cols; c += LANES) {
      float xh = (x[ox + base + c] - mu) * rs, dxh = dy[ody + base + c] * gamma[og + c];
      dx[odx + base + c] += rs * (dxh - m1 - xh * m2);
    }
  }
}
#else
layout(std430, binding = 1) writeonly buffer PG { float pg[]; };
layout(std430, binding = 2) writeonly buffer PB { float pb[]; };
layout(std430, binding = 3) readonly buffer DY { float dy[]; };
layout(std430, binding = 4) readonly buffer X { float x[]; };
layout(std430, binding = 5) readonly buffer M { float mean[]; };
layout(std430, binding = 6) readonly buffer R { float rstd[]; };

void main() {
  uint opg = BOFF(1), opb = BOFF(2), ody = BOFF(3), ox = BOFF(4), om = BOFF(5), orr = BOFF(6);
  uint chunks = (pc.rows + CHUNK - 1u) / CHUNK;
  uint c = gl_GlobalInvocationID.x;
  if (c >= pc.cols) return;
  for (uint ch = gl_WorkGroupID.y; ch < chunks; ch += gl_NumWorkGroups.y) {
    float sg = 0.0, sb = 0.0;
    uint r1 = min(pc.rows, (ch + 1u) * CHUNK);
    for (uint r = ch * CHUNK; r < r1; r++) {
      float g = dy[ody + r * pc.cols + c];
      sg += g * ((x[ox + r * pc.cols + c] - mean[om + r]) * rstd[orr + r]);
      sb += g;
    }
    pg[opg + ch * pc.cols + c] = sg;
    pb[opb + ch * pc.cols + c] = sb;
  }
}
#endif
