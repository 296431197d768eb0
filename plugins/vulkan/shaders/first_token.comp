#version 450
#extension GL_GOOGLE_include_directive : require
// x [batch, seq, h]: forward y[b, :] = x[b, 0, :]; backward (bwd != 0)
// x[b, 0, :] += y[b, :] (x is then dx, y is dy).
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint batch, seq, h, bwd;
} pc;
#include "common.glsl"

layout(std430, binding = 1) buffer Y { float y[]; };
layout(std430, binding = 2) buffer X { float x[]; };

void main() {
  uint oy = BOFF(1), ox = BOFF(2);
  uint total = pc.batch * pc.h;
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint e = gl_GlobalInvocationID.x; e < total; e += stride) {
    uint b = e / pc.h, c = e - b * pc.h;
    uint xi = ox + b * pc.seq * pc.h + c;
    if (pc.bwd == 0u)
      y[oy + e] = x[xi];
    else
      x[xi] += y[oy + e];
  }
}
