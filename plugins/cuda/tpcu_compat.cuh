/* plugins/cuda/tpcu_compat.cuh — the few names the kernels use that differ
 * between nvcc (the real plugin) and the host compiler running them under
 * the emulator of sim/tpsim.h (the tests' "cudasim" plugin): half types and
 * their conversions, WMMA, dynamic shared memory, and the launch. */
#pragma once
#include <stdint.h>

#include "cuda_shared.h"

#ifdef __CUDACC__

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#define TPCU_DEV __device__ __forceinline__
typedef __nv_bfloat16 tpcu_bf16;
typedef __half tpcu_f16;
namespace tpwmma = nvcuda::wmma;

TPCU_DEV float tpcu_to_float(float v) { return v; }
TPCU_DEV float tpcu_to_float(tpcu_bf16 v) { return __bfloat162float(v); }
TPCU_DEV float tpcu_to_float(tpcu_f16 v) { return __half2float(v); }
template <class T> TPCU_DEV T tpcu_from_float(float f);
template <> TPCU_DEV float tpcu_from_float<float>(float f) { return f; }
template <> TPCU_DEV tpcu_bf16 tpcu_from_float<tpcu_bf16>(float f) { return __float2bfloat16_rn(f); }
template <> TPCU_DEV tpcu_f16 tpcu_from_float<tpcu_f16>(float f) { return __float2half_rn(f); }

#define TPCU_DYN_SMEM(name)                                                                        \
  extern __shared__ __align__(128) unsigned char tpcu_dyn_smem_[];                                 \
  unsigned char *name = tpcu_dyn_smem_
/* kern must be one token (alias a template instance first). */
#define TPCU_LAUNCH(kern, grid, block, smem, stream, ...)                                          \
  kern<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)

#else /* the emulator */

#define TPCU_DEV static inline
struct tpcu_bf16 {
  uint16_t bits;
};
struct tpcu_f16 {
  uint16_t bits;
};
static inline float tpcu_to_float(float v) { return v; }
static inline float tpcu_to_float(tpcu_bf16 v) { return tpcu_bf16_to_f32(v.bits); }
static inline float tpcu_to_float(tpcu_f16 v) { return tpcu_f16_to_f32(v.bits); }
template <class T> static inline T tpcu_from_float(float f);
template <> inline float tpcu_from_float<float>(float f) { return f; }
template <> inline tpcu_bf16 tpcu_from_float<tpcu_bf16>(float f) { return {tpcu_f32_to_bf16(f)}; }
template <> inline tpcu_f16 tpcu_from_float<tpcu_f16>(float f) { return {tpcu_f32_to_f16(f)}; }

#include "sim/tpsim.h"
namespace tpwmma = tpsim_wmma;

#define TPCU_DYN_SMEM(name) unsigned char *name = static_cast<unsigned char *>(tpsim_dyn_smem())
#define TPCU_LAUNCH(kern, grid, block, smem, stream, ...)                                          \
  ((void)(stream), tpsim_launch((grid), (block), (smem), [=]() { kern(__VA_ARGS__); }, #kern))

#endif
