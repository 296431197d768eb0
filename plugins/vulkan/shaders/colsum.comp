#version 450
#extension GL_GOOGLE_include_directive : require
// Column sums by chunks of rows: out[ch, c] (+)= sum of in[r, c] over the
// rows r of chunk ch (CHUNK rows each, in order). acc != 0 adds into out.
// One invocation per column: deterministic on every device.
#define CHUNK 64u
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint rows, cols, acc;
} pc;
#include "common.glsl"

layout(std430, binding = 1) buffer O { float o[]; };
layout(std430, binding = 2) readonly buffer I { float x[]; };

void main() {
  uint oo = BOFF(1), oi = BOFF(2);
  uint chunks = (pc.rows + CHUNK - 1u) / CHUNK;
  uint c = gl_GlobalInvocationID.x;
  if (c >= pc.cols) return;
  for (uint ch = gl_WorkGroupID.y; ch < chunks; ch += gl_NumWorkGroups.y) {
    float s = 0.0;
    uint r1 = min(pc.rows, (ch + 1u) * CHUNK);
    for (uint r = ch * CHUNK; r < r1; r++) s += x[oi + r * pc.cols + c];
    uint at = oo + ch * pc.cols + c;
    o[at] = pc.acc != 0u ? o[at] + s : s;
  }
}
