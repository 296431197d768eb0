#version 450
#extension GL_GOOGLE_include_directive : require
// The GEMM of gemm.comp (same push constants and semantics) for skinny
// products (few rows or few columns of C: the classifier head, the [CLS]
// rows), where 64x64 tiles would sit idle: one subgroup per element of C,
// the lanes splitting the inner dimension, summed with subgroupAdd. f32
// storage; compute bf16/f16 rounds A and B as everywhere.
layout(local_size_x = 64) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint m, n, k, batch;
  uint lda, ldb, ldc;
  uint sa, sb, sc;
  float alpha, beta;
  uint flags;
} pc;
#include "common.glsl"
#include "rows.glsl"

layout(std430, binding = 1) readonly buffer A { float a[]; };
layout(std430, binding = 2) readonly buffer B { float b[]; };
layout(std430, binding = 3) buffer C { float c[]; };

float rnd(float v, uint cdt) { return cdt != 0u ? round_to(v, cdt) : v; }

void main() {
  bool ta = (pc.flags & 1u) != 0u, tb = (pc.flags & 2u) != 0u;
  uint cdt = (pc.flags >> 8) & 3u;
  uint outs = pc.sc == 0u ? 1u : pc.batch, per = pc.m * pc.n;
  for (uint e = row_first(); e < outs * per; e += row_step()) {
    uint z = e / per, rc = e - z * per, r = rc / pc.n, cc = rc - r * pc.n;
    uint at = BOFF(3) + z * pc.sc + r * pc.ldc + cc;
    float cv = pc.beta != 0.0 ? pc.beta * c[at] : 0.0;
    uint b0 = pc.sc == 0u ? 0u : z, b1 = pc.sc == 0u ? pc.batch : z + 1u;
    for (uint bb = b0; bb < b1; bb++) {
      uint abase = BOFF(1) + bb * pc.sa + (ta ? r : r * pc.lda);
      uint bbase = BOFF(2) + bb * pc.sb + (tb ? cc * pc.ldb : cc);
      uint astep = ta ? pc.lda : 1u, bstep = tb ? 1u : pc.ldb;
      float s = 0.0;
      for (uint l = LANE; l < pc.k; l += LANES)
        s += rnd(a[abase + l * astep], cdt) * rnd(b[bbase + l * bstep], cdt);
      cv = pc.alpha * subgroupAdd(s) + cv;
    }
    if (subgroupElect()) c[at] = cv;
  }
}
