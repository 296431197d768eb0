#version 450
#extension GL_GOOGLE_include_directive : require
// C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b] (tp_gemm_args), a tiled
// shared-memory kernel: a workgroup of 16x16 invocations computes a 64x64
// tile of C, each invocation 4x4 of it, over BK-deep slices of A and B held
// in shared memory. sc == 0: every product adds into the one C, in batch
// order, beta applied once. beta == 0 never reads C.
// Storage (compile-time): AB16 = A and B are 16-bit (bf16/f16 by flags),
// C16 = C is; otherwise f32. Compute bf16/f16 rounds every A and B element
// to that type first; sums are f32.
#if defined(AB16) || defined(C16)
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#endif
#define BM 64u
#define BN 64u
#define BK 16u
layout(local_size_x = 16, local_size_y = 16) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint m, n, k, batch;
  uint lda, ldb, ldc;
  uint sa, sb, sc;
  float alpha, beta;
  uint flags; // bit 0 ta, bit 1 tb; bits 4-5 A/B type, 6-7 C type, 8-9 compute (0 f32, 1 bf16, 2 f16)
} pc;
#include "common.glsl"

#ifdef AB16
layout(std430, binding = 1) readonly buffer A { uint16_t a[]; };
layout(std430, binding = 2) readonly buffer B { uint16_t b[]; };
#else
layout(std430, binding = 1) readonly buffer A { float a[]; };
layout(std430, binding = 2) readonly buffer B { float b[]; };
#endif
#ifdef C16
layout(std430, binding = 3) buffer C { uint16_t c[]; };
#else
layout(std430, binding = 3) buffer C { float c[]; };
#endif

shared float As[BK][BM];
shared float Bs[BK][BN];

float widen(uint h, uint dt) { return uintBitsToFloat(dt == 1u ? bf16_to_f32(h) : f16_to_f32(h)); }

float load_a(uint i, uint abt, uint cdt) {
#ifdef AB16
  float v = widen(uint(a[i]), abt);
#else
  float v = a[i];
#endif
  return cdt != 0u ? round_to(v, cdt) : v;
}

float load_b(uint i, uint abt, uint cdt) {
#ifdef AB16
  float v = widen(uint(b[i]), abt);
#else
  float v = b[i];
#endif
  return cdt != 0u ? round_to(v, cdt) : v;
}

float load_c(uint i, uint ct) {
#ifdef C16
  return widen(uint(c[i]), ct);
#else
  return c[i];
#endif
}

void store_c(uint i, float v, uint ct) {
#ifdef C16
  uint u = floatBitsToUint(v);
  c[i] = uint16_t(ct == 1u ? f32_to_bf16(u) : f32_to_f16(u));
#else
  c[i] = v;
#endif
}

void main() {
  uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y, tid = ty * 16u + tx;
  bool ta = (pc.flags & 1u) != 0u, tb = (pc.flags & 2u) != 0u;
  uint abt = (pc.flags >> 4) & 3u, ct = (pc.flags >> 6) & 3u, cdt = (pc.flags >> 8) & 3u;
  uint tiles_n = (pc.n + BN - 1u) / BN, tiles_m = (pc.m + BM - 1u) / BM;
  uint outs = pc.sc == 0u ? 1u : pc.batch;
  for (uint z = gl_WorkGroupID.z; z < outs; z += gl_NumWorkGroups.z)
    for (uint tm = gl_WorkGroupID.y; tm < tiles_m; tm += gl_NumWorkGroups.y)
      for (uint tn = gl_WorkGroupID.x; tn < tiles_n; tn += gl_NumWorkGroups.x) {
        uint row0 = tm * BM, col0 = tn * BN;
        uint cbase = BOFF(3) + z * pc.sc;
        float cv[4][4];
        [[unroll]] for (uint i = 0u; i < 4u; i++)
          [[unroll]] for (uint j = 0u; j < 4u; j++) {
            uint r = row0 + ty + 16u * i, cc = col0 + tx + 16u * j;
            cv[i][j] = pc.beta != 0.0 && r < pc.m && cc < pc.n
                           ? pc.beta * load_c(cbase + r * pc.ldc + cc, ct)
                           : 0.0;
          }
        uint b0 = pc.sc == 0u ? 0u : z, b1 = pc.sc == 0u ? pc.batch : z + 1u;
        for (uint bb = b0; bb < b1; bb++) {
          float acc[4][4];
          [[unroll]] for (uint i = 0u; i < 4u; i++)
            [[unroll]] for (uint j = 0u; j < 4u; j++) acc[i][j] = 0.0;
          uint abase = BOFF(1) + bb * pc.sa, bbase = BOFF(2) + bb * pc.sb;
          for (uint k0 = 0u; k0 < pc.k; k0 += BK) {
            [[unroll]] for (uint q = 0u; q < 4u; q++) {
              uint e = tid + 256u * q, r, kk;
              if (!ta) {
                r = e / BK;
                kk = e % BK;
              } else {
                kk = e / BM;
                r = e % BM;
              }
              uint gr = row0 + r, gk = k0 + kk;
              float v = 0.0;
              if (gr < pc.m && gk < pc.k)
                v = load_a(abase + (ta ? gk * pc.lda + gr : gr * pc.lda + gk), abt, cdt);
              As[kk][r] = v;
            }
            [[unroll]] for (uint q = 0u; q < 4u; q++) {
              uint e = tid + 256u * q, cc, kk;
              if (!tb) {
                kk = e / BN;
                cc = e % BN;
              } else {
                cc = e / BK;
                kk = e % BK;
              }
              uint gc = col0 + cc, gk = k0 + kk;
              float v = 0.0;
              if (gc < pc.n && gk < pc.k)
                v = load_b(bbase + (tb ? gc * pc.ldb + gk : gk * pc.ldb + gc), abt, cdt);
              Bs[kk][cc] = v;
            }
            barrier();
            for (uint kk = 0u; kk < BK; kk++) {
              float av[4], bv[4];
              [[unroll]] for (uint i = 0u; i < 4u; i++) av[i] = As[kk][ty + 16u * i];
              [[unroll]] for (uint j = 0u; j < 4u; j++) bv[j] = Bs[kk][tx + 16u * j];
              [[unroll]] for (uint i = 0u; i < 4u; i++)
                [[unroll]] for (uint j = 0u; j < 4u; j++) acc[i][j] += av[i] * bv[j];
            }
            barrier();
          }
          [[unroll]] for (uint i = 0u; i < 4u; i++)
            [[unroll]] for (uint j = 0u; j < 4u; j++) cv[i][j] = pc.alpha * acc[i][j] + cv[i][j];
        }
        [[unroll]] for (uint i = 0u; i < 4u; i++)
          [[unroll]] for (uint j = 0u; j < 4u; j++) {
            uint r = row0 + ty + 16u * i, cc = col0 + tx + 16u * j;
            if (r < pc.m && cc < pc.n) store_c(cbase + r * pc.ldc + cc, cv[i][j], ct);
          }
      }
}
