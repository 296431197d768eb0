#version 450
#extension GL_GOOGLE_include_directive : require
// Scaled masked softmax over the last axis, one subgroup per row (rows.glsl).
// Forward: y = softmax(scale * x) over unmasked j; masked j get 0; a row
//   with every j masked gets 1 / cols.
// BACKWARD: dx += scale * y * (dy - sum(dy * y)).
layout(local_size_x = 64) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint nrows;     // batch * heads * rows
  uint per_batch; // heads * rows
  uint cols;
  float scale;
  uint has_mask;
} pc;
#include "common.glsl"
#include "rows.glsl"

#ifndef BACKWARD
layout(std430, binding = 1) buffer Y { float y[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };
layout(std430, binding = 3) readonly buffer K { int mask[]; };

void main() {
  uint oy = BOFF(1), ox = BOFF(2), om = BOFF(3);
  for (uint r = row_first(); r < pc.nrows; r += row_step()) {
    uint base = r * pc.cols, mb = (r / pc.per_batch) * pc.cols;
    float mx = NEG_INF, live = 0.0;
    for (uint j = LANE; j < pc.cols; j += LANES) {
      bool on = pc.has_mask == 0u || mask[om + mb + j] != 0;
      if (on) {
        mx = max(mx, pc.scale * x[ox + base + j]);
        live += 1.0;
      }
    }
    mx = subgroupMax(mx);
    live = subgroupAdd(live);
    if (live == 0.0) {
      for (uint j = LANE; j < pc.cols; j += LANES) y[oy + base + j] = 1.0 / float(pc.cols);
      continue;
    }
    float s = 0.0;
    for (uint j = LANE; j < pc.cols; j += LANES) {
      bool on = pc.has_mask == 0u || mask[om + mb + j] != 0;
      float e = on ? exp_fast(pc.scale * x[ox + base + j] - mx) : 0.0;
      y[oy + base + j] = e;
      s += e;
    }
    float inv = 1.0 / subgroupAdd(s);
    for (uint j = LANE; j < pc.cols; j += LANES) y[oy + base + j] *= inv;
  }
}
#else
layout(std430, binding = 1) buffer DX { float dx[]; };
layout(std430, binding = 2) readonly buffer DY { float dy[]; };
layout(std430, binding = 3) readonly buffer Y { float y[]; };

void main() {
  uint odx = BOFF(1), ody = BOFF(2), oy = BOFF(3);
  for (uint r = row_first(); r < pc.nrows; r += row_step()) {
    uint base = r * pc.cols;
    float s = 0.0;
    for (uint j = LANE; j < pc.cols; j += LANES) s += dy[ody + base + j] * y[oy + base + j];
    float dot = subgroupAdd(s);
    for (uint j = LANE; j < pc.cols; j += LANES) {
      float yy = y[oy + base + j];
      dx[odx + base + j] += pc.scale * yy * (dy[ody + base + j] - dot);
    }
  }
}
#endif
