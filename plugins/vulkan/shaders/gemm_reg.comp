#version 450
#extension GL_GOOGLE_include_directive : require
// The GEMM of gemm.comp (same push constants and semantics) for CPU
// implementations of Vulkan (lavapipe): no shared memory and no barriers
// (both are slow there) and as few load instructions as possible (each one
// is a loop over the SIMD lanes there): each invocation computes a TM x TN
// block of C, loading A and B four contiguous elements at a time. VEC4: the
// host checked that those groups of four are 16-byte aligned. (8x8 blocks
// did about 2 GFLOP per CPU-second on lavapipe, 4x4 1.6, the shared-memory
// tiled kernel 0.8.)
#define TM 8u
#define TN 8u
#define TM4 (TM / 4u)
#define TN4 (TN / 4u)
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

layout(std430, binding = 1) readonly buffer A { float a[]; };
layout(std430, binding = 2) readonly buffer B { float b[]; };
layout(std430, binding = 1) readonly buffer A4 { vec4 a4[]; };
layout(std430, binding = 2) readonly buffer B4 { vec4 b4[]; };
layout(std430, binding = 3) buffer C { float c[]; };

#ifdef VEC4
vec4 ld4a(uint i) { return a4[i >> 2]; }
vec4 ld4b(uint i) { return b4[i >> 2]; }
#else
vec4 ld4a(uint i) { return vec4(a[i], a[i + 1u], a[i + 2u], a[i + 3u]); }
vec4 ld4b(uint i) { return vec4(b[i], b[i + 1u], b[i + 2u], b[i + 3u]); }
#endif

float rnd(float v, uint cdt) { return cdt != 0u ? round_to(v, cdt) : v; }

void main() {
  bool ta = (pc.flags & 1u) != 0u, tb = (pc.flags & 2u) != 0u;
  uint cdt = (pc.flags >> 8) & 3u;
  uint bn = (pc.n + TN - 1u) / TN, bm = (pc.m + TM - 1u) / TM;
  uint blocks = bn * bm, outs = pc.sc == 0u ? 1u : pc.batch;
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint z = gl_WorkGroupID.z; z < outs; z += gl_NumWorkGroups.z)
    for (uint blk = gl_GlobalInvocationID.x; blk < blocks; blk += stride) {
      uint r0 = (blk / bn) * TM, c0 = (blk % bn) * TN;
      uint cbase = BOFF(3) + z * pc.sc;
      bool full = r0 + TM <= pc.m && c0 + TN <= pc.n;
      float cv[TM][TN];
      [[unroll]] for (uint i = 0u; i < TM; i++)
        [[unroll]] for (uint j = 0u; j < TN; j++) {
          uint r = r0 + i, cc = c0 + j;
          cv[i][j] = pc.beta != 0.0 && r < pc.m && cc < pc.n
                         ? pc.beta * c[cbase + r * pc.ldc + cc] : 0.0;
        }
      uint b0 = pc.sc == 0u ? 0u : z, b1 = pc.sc == 0u ? pc.batch : z + 1u;
      for (uint bb = b0; bb < b1; bb++) {
        uint abase = BOFF(1) + bb * pc.sa, bbase = BOFF(2) + bb * pc.sb;
        vec4 acc[TM][TN4];
        [[unroll]] for (uint i = 0u; i < TM; i++)
          [[unroll]] for (uint j = 0u; j < TN4; j++) acc[i][j] = vec4(0.0);
        uint k0 = 0u;
        if (full && cdt == 0u) {
          for (; k0 + 4u <= pc.k; k0 += 4u) {
            vec4 av[TM];       // av[i] = A[r0 + i, k0 .. k0+3]
            vec4 bv[4][TN4];   // bv[kk][j] = B[k0 + kk, c0 + 4j .. c0 + 4j + 3]
            if (!ta) {
              [[unroll]] for (uint i = 0u; i < TM; i++) av[i] = ld4a(abase + (r0 + i) * pc.lda + k0);
            } else {
              [[unroll]] for (uint i4 = 0u; i4 < TM4; i4++) {
                vec4 t[4]; // t[kk] = A[r0 + 4 i4 .. +3, k0 + kk]
                [[unroll]] for (uint kk = 0u; kk < 4u; kk++)
                  t[kk] = ld4a(abase + (k0 + kk) * pc.lda + r0 + 4u * i4);
                [[unroll]] for (uint i = 0u; i < 4u; i++)
                  av[4u * i4 + i] = vec4(t[0][i], t[1][i], t[2][i], t[3][i]);
              }
            }
            if (!tb) {
              [[unroll]] for (uint kk = 0u; kk < 4u; kk++)
                [[unroll]] for (uint j = 0u; j < TN4; j++)
                  bv[kk][j] = ld4b(bbase + (k0 + kk) * pc.ldb + c0 + 4u * j);
            } else {
              [[unroll]] for (uint j = 0u; j < TN4; j++) {
                vec4 t[4]; // t[jj] = B[k0 .. k0+3, c0 + 4j + jj]
                [[unroll]] for (uint jj = 0u; jj < 4u; jj++)
                  t[jj] = ld4b(bbase + (c0 + 4u * j + jj) * pc.ldb + k0);
                [[unroll]] for (uint kk = 0u; kk < 4u; kk++)
                  bv[kk][j] = vec4(t[0][kk], t[1][kk], t[2][kk], t[3][kk]);
              }
            }
            [[unroll]] for (uint i = 0u; i < TM; i++)
              [[unroll]] for (uint j = 0u; j < TN4; j++)
                acc[i][j] += av[i].x * bv[0][j] + av[i].y * bv[1][j] + av[i].z * bv[2][j] +
                             av[i].w * bv[3][j];
          }
        }
        // the rest (edges, the k tail, rounded compute types): one k at a
        // time, the block's loads clamped inside the matrices
        for (; k0 < pc.k; k0++) {
          float av[TM], bv[TN];
          [[unroll]] for (uint i = 0u; i < TM; i++) {
            uint r = min(r0 + i, pc.m - 1u);
            av[i] = rnd(a[abase + (ta ? k0 * pc.lda + r : r * pc.lda + k0)], cdt);
          }
          [[unroll]] for (uint j = 0u; j < TN; j++) {
            uint cc = min(c0 + j, pc.n - 1u);
            bv[j] = rnd(b[bbase + (tb ? cc * pc.ldb + k0 : k0 * pc.ldb + cc)], cdt);
          }
          [[unroll]] for (uint i = 0u; i < TM; i++)
            [[unroll]] for (uint j = 0u; j < TN4; j++)
              acc[i][j] += av[i] * vec4(bv[4u * j], bv[4u * j + 1u], bv[4u * j + 2u], bv[4u * j + 3u]);
        }
        [[unroll]] for (uint i = 0u; i < TM; i++)
          [[unroll]] for (uint j = 0u; j < TN; j++) cv[i][j] = pc.alpha * acc[i][j >> 2][j & 3u] + cv[i][j];
      }
      [[unroll]] for (uint i = 0u; i < TM; i++)
        [[unroll]] for (uint j = 0u; j < TN; j++) {
          uint r = r0 + i, cc = c0 + j;
          if (r < pc.m && cc < pc.n) c[cbase + r * pc.ldc + cc] = cv[i][j];
        }
    }
}
