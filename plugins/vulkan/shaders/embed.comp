#version 450
#extension GL_GOOGLE_include_directive : require
// Embedding over table rows [row0, row0 + rows) of a table of vocab rows.
// Forward: out[i, c] = table[ids[i] - row0, c] for ids in range, one
//   invocation per element of out.
// BACKWARD: dtable[ids[i] - row0, c] += dout[i, c], one invocation per
//   column walking i in order (repeated ids add in order, deterministic).
// An id outside [0, vocab) is reported (once per call, by column 0).
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint n, h;
  int row0, rows, vocab;
  uint base; // position of the first id (the host splits long id lists)
} pc;
#include "common.glsl"

layout(std430, binding = 1) buffer T { float table[]; };  // out / dtable
layout(std430, binding = 2) readonly buffer S { float src[]; }; // table / dout
layout(std430, binding = 3) readonly buffer I { int ids[]; };

void main() {
  uint ot = BOFF(1), os = BOFF(2), oi = BOFF(3);
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
#ifndef BACKWARD
  uint total = pc.n * pc.h;
  for (uint e = gl_GlobalInvocationID.x; e < total; e += stride) {
    uint i = e / pc.h, c = e - i * pc.h;
    int id = ids[oi + i];
    if (id < 0 || id >= pc.vocab) {
      if (c == 0u) report(ERR_EMBED_FWD_ID, id, pc.base + i, pc.vocab);
      continue;
    }
    int r = id - pc.row0;
    if (r >= 0 && r < pc.rows) table[ot + e] = src[os + uint(r) * pc.h + c];
  }
#else
  for (uint c = gl_GlobalInvocationID.x; c < pc.h; c += stride) {
    for (uint i = 0u; i < pc.n; i++) {
      int id = ids[oi + i];
      if (id < 0 || id >= pc.vocab) {
        if (c == 0u) report(ERR_EMBED_BWD_ID, id, pc.base + i, pc.vocab);
        continue;
      }
      int r = id - pc.row0;
      if (r >= 0 && r < pc.rows) table[ot + uint(r) * pc.h + c] += src[os + i * pc.h + c];
    }
  }
#endif
}
