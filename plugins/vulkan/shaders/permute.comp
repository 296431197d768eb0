#version 450
#extension GL_GOOGLE_include_directive : require
// y [d0, d2, d1, d3] = x [d0, d1, d2, d3] with axes 1 and 2 swapped, plus
// beta * y (beta 0 never reads y). One invocation per element of y.
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint d0, d1, d2, d3;
  float beta;
} pc;
#include "common.glsl"

layout(std430, binding = 1) buffer Y { float y[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };

void main() {
  uint oy = BOFF(1), ox = BOFF(2);
  uint total = pc.d0 * pc.d1 * pc.d2 * pc.d3;
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint e = gl_GlobalInvocationID.x; e < total; e += stride) {
    uint i3 = e % pc.d3, t = e / pc.d3;
    uint i1 = t % pc.d1;
    t /= pc.d1;
    uint i2 = t % pc.d2, i0 = t / pc.d2;
    float v = x[ox + ((i0 * pc.d1 + i1) * pc.d2 + i2) * pc.d3 + i3];
    y[oy + e] = pc.beta == 0.0 ? v : v + pc.beta * y[oy + e];
  }
}
