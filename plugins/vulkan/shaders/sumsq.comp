#version 450
#extension GL_GOOGLE_include_directive : require
// Sums in a fixed order. stage 0: part[ch] = sum of x^2 over chunk ch
// (CHUNK elements, one workgroup); stage 1 (one workgroup):
// out[0] = (acc ? out[0] : 0) + scale * sum of the n values (sumsq's
// partials; cross-entropy's row losses; count_correct's row flags).
#define CHUNK 4096u
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint n, stage;
  float scale;
  uint acc;
} pc;
#include "common.glsl"

layout(std430, binding = 1) buffer O { float o[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };

shared float part[256];

// Sum of the workgroup's 256 values in a fixed tree.
float tree_sum(float v) {
  uint t = gl_LocalInvocationID.x;
  part[t] = v;
  barrier();
  for (uint s = 128u; s > 0u; s >>= 1) {
    if (t < s) part[t] += part[t + s];
    barrier();
  }
  float r = part[0];
  barrier();
  return r;
}

void main() {
  uint oo = BOFF(1), ox = BOFF(2), t = gl_LocalInvocationID.x;
  if (pc.stage == 0u) {
    uint chunks = (pc.n + CHUNK - 1u) / CHUNK;
    for (uint ch = gl_WorkGroupID.x; ch < chunks; ch += gl_NumWorkGroups.x) {
      float s = 0.0;
      uint end = min(pc.n, (ch + 1u) * CHUNK);
      for (uint i = ch * CHUNK + t; i < end; i += 256u) {
        float v = x[ox + i];
        s += v * v;
      }
      float r = tree_sum(s);
      if (t == 0u) o[oo + ch] = r;
    }
  } else {
    float s = 0.0;
    for (uint i = t; i < pc.n; i += 256u) s += x[ox + i];
    float r = pc.scale * tree_sum(s);
    if (t == 0u) o[oo] = pc.acc != 0u ? o[oo] + r : r;
  }
}
