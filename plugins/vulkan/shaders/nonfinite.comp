#version 450
#extension GL_GOOGLE_include_directive : require
// out[0] (i32) = 1 when any of the n floats is NaN or +-Inf.
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint n;
} pc;
#include "common.glsl"

layout(std430, binding = 1) buffer O { int o[]; };
layout(std430, binding = 2) readonly buffer X { uint x[]; };

void main() {
  uint oo = BOFF(1), ox = BOFF(2);
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  bool any = false;
  for (uint i = gl_GlobalInvocationID.x; i < pc.n; i += stride)
    any = any || (x[ox + i] & 0x7f800000u) == 0x7f800000u;
  if (any) o[oo] = 1;
}
