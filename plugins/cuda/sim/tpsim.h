/* plugins/cuda/sim/tpsim.h — runs the CUDA backend's kernels on the CPU,
 * for tests on machines without a GPU.
 *
 * cuda_kernels.cu is compiled a second time by the host C++ compiler with
 * this header in place of the CUDA toolkit's device headers. A launch runs
 * each block in turn; every thread of the block is a coroutine (ucontext)
 * that runs until it reaches a barrier (__syncthreads, __syncwarp, a warp
 * shuffle) or ends. A barrier releases when every live thread of its scope
 * waits at it; anything else — threads split between different barriers,
 * a barrier after some threads returned, a shuffle with a lane missing —
 * is a bug on a GPU too, and aborts with a message saying which.
 * Odd-numbered blocks run their threads in reverse order, so a read of
 * shared memory that misses its barrier sees stale data in one of the two.
 * Dynamic shared memory starts filled with 0xff bytes (NaN as f32).
 *
 * Tensor cores: the WMMA fragments hold a whole 16 x 16 tile in every lane
 * (their layout is opaque, so kernels cannot tell); mma_sync multiplies in
 * f32 the values the fragments were loaded with. Loads and stores are
 * warp-collective, as on the GPU: every lane waits at a warp barrier first,
 * so no lane reads a tile another lane of its warp has already stored
 * over. Only what the kernels use is here. */
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#include <vector_types.h> /* dim3, uint3 (plain structs in host code) */

/* The toolkit's host_defines.h maps these to attributes GCC warns about. */
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#undef __align__
#define __global__
#define __device__
#define __host__
/* One block runs at a time, so a function-local static is its shared memory. */
#define __shared__ static
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

uint3 tpsim_thread_idx();
uint3 tpsim_block_idx();
dim3 tpsim_block_dim();
dim3 tpsim_grid_dim();
void *tpsim_dyn_smem();
#define threadIdx (tpsim_thread_idx())
#define blockIdx (tpsim_block_idx())
#define blockDim (tpsim_block_dim())
#define gridDim (tpsim_grid_dim())
#define warpSize 32

void __syncthreads();
void __syncwarp(unsigned mask = 0xffffffffu);
inline void __threadfence() {}

/* Every lane offers v; returns the value lane src offered (own value when
 * src is outside the warp). */
uint64_t tpsim_warp_exchange(uint64_t v, int src);
int tpsim_lane();

template <class T> static inline T tpsim_shfl_(T v, int src) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of a type wider than 64 bits");
  uint64_t bits = 0;
  memcpy(&bits, &v, sizeof v);
  bits = tpsim_warp_exchange(bits, src);
  T r;
  memcpy(&r, &bits, sizeof r);
  return r;
}
template <class T> static inline T __shfl_xor_sync(unsigned, T v, int lane_mask, int = 32) {
  return tpsim_shfl_(v, tpsim_lane() ^ lane_mask);
}
template <class T> static inline T __shfl_sync(unsigned, T v, int src, int = 32) {
  return tpsim_shfl_(v, src);
}
template <class T> static inline T __shfl_down_sync(unsigned, T v, unsigned delta, int = 32) {
  int src = tpsim_lane() + (int)delta;
  return tpsim_shfl_(v, src < 32 ? src : tpsim_lane());
}

/* One thread runs at a time and never between these statements. */
template <class T> static inline T atomicAdd(T *p, T v) {
  T old = *p;
  *p = old + v;
  return old;
}
static inline int atomicCAS(int *p, int cmp, int v) {
  int old = *p;
  if (old == cmp) *p = v;
  return old;
}
static inline int atomicOr(int *p, int v) {
  int old = *p;
  *p = old | v;
  return old;
}

static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float __int_as_float(int i) {
  float f;
  memcpy(&f, &i, sizeof f);
  return f;
}

/* Runs body in every thread of every block of grid, one block at a time. */
void tpsim_launch(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body,
                  const char *name);

/* ------------------------------------------------------------------ WMMA */
namespace tpsim_wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
  float v[16 * 16]; /* row-major [rows of the operand][cols], values as loaded */
  static constexpr int num_elements = 256;
};

/* tpcu_to_float() is declared by tpcu_compat.cuh before this header. */
template <class T> static inline float elem_f(const T &x) { return tpcu_to_float(x); }

/* A is M x K (16 x 16), B is K x N. */
template <class T, class L>
static inline void load_matrix_sync(fragment<matrix_a, 16, 16, 16, T, L> &f, const T *p,
                                    unsigned ldm) {
  __syncwarp();
  const bool col = std::is_same<L, col_major>::value;
  for (int r = 0; r < 16; r++)
    for (int c = 0; c < 16; c++) f.v[r * 16 + c] = elem_f(p[col ? c * ldm + r : r * ldm + c]);
}
template <class T, class L>
static inline void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, L> &f, const T *p,
                                    unsigned ldm) {
  __syncwarp();
  const bool col = std::is_same<L, col_major>::value;
  for (int r = 0; r < 16; r++)
    for (int c = 0; c < 16; c++) f.v[r * 16 + c] = elem_f(p[col ? c * ldm + r : r * ldm + c]);
}
static inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p,
                                    unsigned ldm, layout_t l) {
  __syncwarp();
  for (int r = 0; r < 16; r++)
    for (int c = 0; c < 16; c++)
      f.v[r * 16 + c] = p[l == mem_col_major ? c * ldm + r : r * ldm + c];
}
static inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f,
                                     unsigned ldm, layout_t l) {
  __syncwarp();
  for (int r = 0; r < 16; r++)
    for (int c = 0; c < 16; c++)
      p[l == mem_col_major ? c * ldm + r : r * ldm + c] = f.v[r * 16 + c];
}
template <class F> static inline void fill_fragment(F &f, float x) {
  for (int i = 0; i < 256; i++) f.v[i] = x;
}
template <class T, class LA, class LB>
static inline void mma_sync(fragment<accumulator, 16, 16, 16, float> &d,
                            const fragment<matrix_a, 16, 16, 16, T, LA> &a,
                            const fragment<matrix_b, 16, 16, 16, T, LB> &b,
                            const fragment<accumulator, 16, 16, 16, float> &c) {
  float out[256];
  for (int m = 0; m < 16; m++)
    for (int n = 0; n < 16; n++) {
      float s = c.v[m * 16 + n];
      for (int k = 0; k < 16; k++) s += a.v[m * 16 + k] * b.v[k * 16 + n];
      out[m * 16 + n] = s;
    }
  memcpy(d.v, out, sizeof out);
}
} /* namespace tpsim_wmma */
