#version 450
#extension GL_GOOGLE_include_directive : require
// The GEMM of gemm.comp (same push constants and semantics) on NVIDIA
// tensor cores through GL_NV_cooperative_matrix, for compute type f16 with
// f32 storage: A and B are rounded to f16 into shared memory, 16x16x16
// products accumulate in f32. A workgroup of 4 subgroups (of 32) computes a
// 64x64 tile of C, each subgroup 32x32 of it (2x2 fragments).
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require
#define BM 64u
#define BN 64u
#define BK 16u
#define LDA 24u // padded shared row strides (elements)
#define LDB 72u
layout(local_size_x = 128) in;
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
layout(std430, binding = 3) buffer C { float c[]; };

shared float16_t As[BM * LDA]; // [row][k]
shared float16_t Bs[BK * LDB]; // [k][col]
shared float Cs[BM * BN];

float16_t to_f16(float v) {
  return float16_t(uintBitsToFloat(f16_to_f32(f32_to_f16(floatBitsToUint(v)))));
}

void main() {
  uint tid = gl_LocalInvocationID.x, sg = gl_SubgroupID;
  uint wr = (sg >> 1) * 32u, wc = (sg & 1u) * 32u; // this subgroup's 32x32 of the tile
  bool ta = (pc.flags & 1u) != 0u, tb = (pc.flags & 2u) != 0u;
  uint tiles_n = (pc.n + BN - 1u) / BN, tiles_m = (pc.m + BM - 1u) / BM;
  uint outs = pc.sc == 0u ? 1u : pc.batch;
  for (uint z = gl_WorkGroupID.z; z < outs; z += gl_NumWorkGroups.z)
    for (uint tm = gl_WorkGroupID.y; tm < tiles_m; tm += gl_NumWorkGroups.y)
      for (uint tn = gl_WorkGroupID.x; tn < tiles_n; tn += gl_NumWorkGroups.x) {
        uint row0 = tm * BM, col0 = tn * BN, cbase = BOFF(3) + z * pc.sc;
        float cv[32]; // this invocation's elements e = tid + 128 * q of the tile
        [[unroll]] for (uint q = 0u; q < 32u; q++) {
          uint e = tid + 128u * q, r = row0 + e / BN, cc = col0 + e % BN;
          cv[q] = pc.beta != 0.0 && r < pc.m && cc < pc.n ? pc.beta * c[cbase + r * pc.ldc + cc]
                                                          : 0.0;
        }
        uint b0 = pc.sc == 0u ? 0u : z, b1 = pc.sc == 0u ? pc.batch : z + 1u;
        for (uint bb = b0; bb < b1; bb++) {
          fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> acc[2][2];
          [[unroll]] for (uint i = 0u; i < 2u; i++)
            [[unroll]] for (uint j = 0u; j < 2u; j++) acc[i][j] = fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0);
          uint abase = BOFF(1) + bb * pc.sa, bbase = BOFF(2) + bb * pc.sb;
          for (uint k0 = 0u; k0 < pc.k; k0 += BK) {
            [[unroll]] for (uint q = 0u; q < 8u; q++) { // 64x16 of A
              uint e = tid + 128u * q, r, kk;
              if (!ta) {
                r = e / BK;
                kk = e % BK;
              } else {
                kk = e / BM;
                r = e % BM;
              }
              uint gr = row0 + r, gk = k0 + kk;
              float v = gr < pc.m && gk < pc.k
                            ? a[abase + (ta ? gk * pc.lda + gr : gr * pc.lda + gk)]
                            : 0.0;
              As[r * LDA + kk] = to_f16(v);
            }
            [[unroll]] for (uint q = 0u; q < 8u; q++) { // 16x64 of B
              uint e = tid + 128u * q, cc, kk;
              if (!tb) {
                kk = e / BN;
                cc = e % BN;
              } else {
                cc = e / BK;
                kk = e % BK;
              }
              uint gc = col0 + cc, gk = k0 + kk;
              float v = gc < pc.n && gk < pc.k
                            ? b[bbase + (tb ? gc * pc.ldb + gk : gk * pc.ldb + gc)]
                            : 0.0;
              Bs[kk * LDB + cc] = to_f16(v);
            }
            barrier();
            fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fa[2], fb[2];
            [[unroll]] for (uint i = 0u; i < 2u; i++) coopMatLoadNV(fa[i], As, (wr + 16u * i) * LDA, LDA, false);
            [[unroll]] for (uint j = 0u; j < 2u; j++) coopMatLoadNV(fb[j], Bs, wc + 16u * j, LDB, false);
            [[unroll]] for (uint i = 0u; i < 2u; i++)
              [[unroll]] for (uint j = 0u; j < 2u; j++) acc[i][j] = coopMatMulAddNV(fa[i], fb[j], acc[i][j]);
            barrier();
          }
          [[unroll]] for (uint i = 0u; i < 2u; i++)
            [[unroll]] for (uint j = 0u; j < 2u; j++)
              coopMatStoreNV(acc[i][j], Cs, (wr + 16u * i) * BN + wc + 16u * j, BN, false);
          barrier();
          [[unroll]] for (uint q = 0u; q < 32u; q++) cv[q] = pc.alpha * Cs[tid + 128u * q] + cv[q];
          barrier();
        }
        [[unroll]] for (uint q = 0u; q < 32u; q++) {
          uint e = tid + 128u * q, r = row0 + e / BN, cc = col0 + e % BN;
          if (r < pc.m && cc < pc.n) c[cbase + r * pc.ldc + cc] = cv[q];
        }
      }
}
