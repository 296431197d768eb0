/* plugins/cpu/cpu_kernels.h — private to the CPU backend plugin: the buffer and
 * device structs shared by cpu_backend.c and cpu_kernels.c. */
#pragma once
#include "tensorplug/backend_iface.h"
#include <glib.h>
#include <stddef.h>
#include <stdint.h>

/* Host memory, 64-byte aligned (one cache line, one AVX-512 vector); large
 * buffers 2 MiB aligned (cpu_backend.c). */
struct tp_buffer {
  void *ptr;
  size_t size;
  size_t mapped; /* bytes of its own mapping (large buffers), 0 = malloc'd */
};

/* The instruction-set level the hot loops run at (see cpu_kernels.c). */
typedef enum { CPU_ISA_BASE = 0, CPU_ISA_AVX2 = 1, CPU_ISA_AVX512 = 2 } cpu_isa_level;
extern int cpu_isa;
/* The CPU's best level, lowered by $TENSORPLUG_CPU_ISA (baseline, avx2,
 * avx512); FALSE with err when the variable asks for more than the CPU has
 * or names no level. Then chooses the GEMM library and bf16 strategy
 * (cpu_gemm_init). */
bool cpu_isa_init(GError **err);
const char *cpu_isa_name(int level);

/* Instruction-set variants. Each hot row/element loop is written once as an
 * always-inline body (NAME_impl); CPU_VARIANTS builds an AVX-512, an AVX2 and
 * a baseline copy of it and a NAME() that calls the one for cpu_isa (the
 * CPU's best, or lower when $TENSORPLUG_CPU_ISA asks: the tests run every
 * kernel at every level). The build is ISO C11, so GCC never contracts
 * a*b+c into FMA, and all copies give bitwise-identical results. The plugin
 * is built with -fno-math-errno -fno-trapping-math (no value changes) so GCC
 * vectorises sqrtf and if-converts float selects. */
#define CPU_INLINE static inline __attribute__((always_inline))
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CPU_VARIANTS(name, params, args)                                                          \
  __attribute__((target("avx512f"))) static void name##_avx512 params { name##_impl args; }       \
  __attribute__((target("avx2"))) static void name##_avx2 params { name##_impl args; }            \
  static void name##_base params { name##_impl args; }                                            \
  static void name params {                                                                       \
    if (cpu_isa >= CPU_ISA_AVX512) name##_avx512 args;                                            \
    else if (cpu_isa >= CPU_ISA_AVX2) name##_avx2 args;                                           \
    else name##_base args;                                                                        \
  }
/* For short rows (layernorm over hidden 128) the 512-bit copy measured
 * slower than the 256-bit one: AVX2 and baseline only. */
#define CPU_VARIANTS_256(name, params, args)                                                      \
  __attribute__((target("avx2"))) static void name##_avx2 params { name##_impl args; }            \
  static void name##_base params { name##_impl args; }                                            \
  static void name params {                                                                       \
    if (cpu_isa >= CPU_ISA_AVX2) name##_avx2 args;                                                \
    else name##_base args;                                                                        \
  }
/* The same for a body that returns a value; _ZMM lets the AVX-512 copy use
 * 512-bit vectors (GCC's default is 256): for loops bound by arithmetic,
 * such as exp over attention scores. */
#define CPU_VARIANTS_RET_AT(t512, ret, name, params, args)                                        \
  __attribute__((target(t512))) static ret name##_avx512 params { return name##_impl args; }      \
  __attribute__((target("avx2"))) static ret name##_avx2 params { return name##_impl args; }      \
  static ret name##_base params { return name##_impl args; }                                      \
  static ret name params {                                                                        \
    if (cpu_isa >= CPU_ISA_AVX512) return name##_avx512 args;                                     \
    if (cpu_isa >= CPU_ISA_AVX2) return name##_avx2 args;                                         \
    return name##_base args;                                                                      \
  }
#define CPU_VARIANTS_RET(ret, name, params, args)                                                 \
  CPU_VARIANTS_RET_AT("avx512f", ret, name, params, args)
#define CPU_VARIANTS_RET_ZMM(ret, name, params, args)                                             \
  CPU_VARIANTS_RET_AT("avx512f,prefer-vector-width=512", ret, name, params, args)
#else
#define CPU_VARIANTS(name, params, args)                                                          \
  static void name params { name##_impl args; }
#define CPU_VARIANTS_256 CPU_VARIANTS
#define CPU_VARIANTS_RET(ret, name, params, args)                                                 \
  static ret name params { return name##_impl args; }
#define CPU_VARIANTS_RET_ZMM CPU_VARIANTS_RET
#endif

#include <math.h>
#include <string.h>

#define LANES 8

/* Sum of n floats in 8 lanes, then a fixed tree: vectorisable without
 * -ffast-math and the same bits in every clone. */
CPU_INLINE float lanes_sum(const float *restrict a, int64_t n) {
  float acc[LANES] = {0};
  int64_t j = 0;
  for (; j + LANES <= n; j += LANES)
    for (int l = 0; l < LANES; l++) acc[l] += a[j + l];
  for (int l = 0; j + l < n; l++) acc[l] += a[j + l];
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

CPU_INLINE float lanes_dot(const float *restrict a, const float *restrict b, int64_t n) {
  float acc[LANES] = {0};
  int64_t j = 0;
  for (; j + LANES <= n; j += LANES)
    for (int l = 0; l < LANES; l++) acc[l] += a[j + l] * b[j + l];
  for (int l = 0; j + l < n; l++) acc[l] += a[j + l] * b[j + l];
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

/* An integer key of a float's bits that orders as the floats do (-0 just
 * below +0; NaN beyond +-Inf on its sign's side): the max of the keys is
 * an integer reduction, which vectorises where a float max (NaN rules) does
 * not. The map is its own inverse. */
CPU_INLINE int32_t f32_order_key(int32_t u) { return u ^ ((u >> 31) & 0x7fffffff); }

CPU_INLINE float lanes_max(const float *restrict a, int64_t n) {
  int32_t acc[LANES], ninf;
  float f = -INFINITY;
  memcpy(&ninf, &f, 4);
  for (int l = 0; l < LANES; l++) acc[l] = f32_order_key(ninf);
  int64_t j = 0;
  for (; j + LANES <= n; j += LANES)
    for (int l = 0; l < LANES; l++) {
      int32_t u;
      memcpy(&u, &a[j + l], 4);
      u = f32_order_key(u);
      acc[l] = u > acc[l] ? u : acc[l];
    }
  for (int l = 0; j + l < n; l++) {
    int32_t u;
    memcpy(&u, &a[j + l], 4);
    u = f32_order_key(u);
    acc[l] = u > acc[l] ? u : acc[l];
  }
  int32_t m = acc[0];
  for (int l = 1; l < LANES; l++) m = acc[l] > m ? acc[l] : m;
  m = f32_order_key(m);
  memcpy(&f, &m, 4);
  return f;
}

/* exp(x) for x <= 88, pure arithmetic so loops over it vectorise (libm's expf
 * is a call). Cephes polynomial, error <= 2 ulp over the range; x < -87
 * (including -inf) gives 0. */
CPU_INLINE float exp_fast(float x) {
  const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
  float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  float n = (xc * log2e + magic) - magic;
  float r = (xc - n * ln2_hi) - n * ln2_lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  uint32_t bits = (uint32_t)((int32_t)n + 127) << 23; /* 2^n, n in [-126, 127] */
  float s;
  memcpy(&s, &bits, sizeof s);
  float y = p * s;
  return x < -87.0f ? 0.0f : y;
}

/* GEMM (cpu_gemm.c). The library for f32 products: oneDNN where the plugin
 * was built with it, else OpenBLAS ($TENSORPLUG_CPU_GEMM=openblas|onednn).
 * bf16 compute: NATIVE multiplies bf16 operands in oneDNN's bf16 kernels
 * (AVX512-BF16 dot products or AMX); EMULATE rounds the operands to bf16 and
 * runs the f32 product (bf16 x bf16 is exact in f32, so it is the same
 * arithmetic at the f32 rate). Default: NATIVE only where the CPU multiplies
 * bf16 faster than f32 (AMX, or AVX512-BF16 dot products measured faster
 * than f32 FMA), else EMULATE ($TENSORPLUG_CPU_BF16=native|emulate). */
typedef enum { CPU_GEMM_OPENBLAS = 0, CPU_GEMM_ONEDNN = 1 } cpu_gemm_lib;
typedef enum { CPU_BF16_EMULATE = 0, CPU_BF16_NATIVE = 1 } cpu_bf16_mode;
extern int cpu_gemm_lib_sel;
extern int cpu_bf16_sel;
/* Reads the environment and probes the CPU once; FALSE with err for a bad
 * variable or a request this build or CPU cannot meet. */
bool cpu_gemm_init(GError **err);
/* "oneDNN 2.6.3 (avx512_core_bf16); bf16 as f32 FMA on rounded operands
 * (AVX512-BF16 dot products measured at 0.50x f32 FMA)" and the like. */
void cpu_gemm_describe(char *out, size_t size);
/* The compute type --precision auto should pick here: TP_BF16 where bf16
 * products are faster than f32 (see above), else TP_F32. */
tp_dtype cpu_preferred_compute(tp_backend_dev *d);

/* i8 compute (cpu_gemm_int8.c): whether this build and CPU offer it (oneDNN
 * with VNNI dot products), and the product itself for A [m, k] times B
 * stored [n, k] with f32 storage; FALSE (nothing written) for any other
 * layout or where unavailable. */
bool cpu_gemm_i8_available(void);
bool cpu_gemm_i8(tp_backend_dev *d, const tp_gemm_args *g);

/* One f32 product C = alpha op(A) op(B) + beta C (row-major, strides in
 * elements) with the selected library: its own threads outside a parallel
 * region, the calling thread inside one. */
void cpu_sgemm(tp_backend_dev *d, bool ta, bool tb, int m, int n, int k, float alpha,
               const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
               int64_t ldc);
/* At least bytes of 64-byte aligned memory of the device, kept for later
 * calls of the same slot (one caller at a time per slot); NULL (and a
 * device error) when out of memory. */
enum { CPU_SCRATCH_GEMM = 0, CPU_SCRATCH_ATTENTION = 1, CPU_SCRATCH_SLOTS = 2 };
void *cpu_scratch(tp_backend_dev *d, int slot, size_t bytes);
/* rows x cols of src (row stride lds) into dst (row stride ldd), each
 * element rounded to ct (TP_BF16, TP_F16; TP_F32 copies). Serial. */
void cpu_round_matrix(float *dst, int64_t ldd, const float *src, int64_t lds, int rows, int cols,
                      tp_dtype ct);
/* Philox uniforms tp_philox_uniform(seed, ctr0 + i) for i < n (bit for bit;
 * AVX-512 where the CPU has it). Serial: call it inside parallel work. */
void cpu_philox_uniforms(float *u, uint64_t seed, uint64_t ctr0, int64_t n);

/* Per-device GEMM state (scratch for rounded operands, oneDNN engine and
 * primitives); NULL until the first product that needs it. */
typedef struct cpu_gemm_state cpu_gemm_state;
void cpu_gemm_state_free(cpu_gemm_state *s);

/* Conversions shared with cast (round to nearest even). */
uint16_t cpu_f32_to_half(float f, tp_dtype t);
float cpu_half_to_f32(uint16_t h, tp_dtype t);

struct tp_backend_dev {
  int threads;          /* OpenMP team size for our kernels, OpenBLAS and oneDNN */
  GMutex lock;          /* guards error */
  GError *error;        /* first kernel failure, reported (and cleared) by synchronize */
  cpu_gemm_state *gemm; /* see cpu_gemm.c */
  GQueue *att_masks;    /* attention dropout masks, forward to backward (cpu_attention.c) */
};
void cpu_attention_state_free(tp_backend_dev *d);

/* The core's error domain: the same quark string as tp_error_quark() in
 * libtensorplug, which this plugin must not link. */
GQuark cpu_error_quark(void);
#define CPU_ERROR (cpu_error_quark())

/* Records a kernel failure; the first one is kept until synchronize(). */
void cpu_set_error(tp_backend_dev *d, int code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

/* The kernels, one per tp_kernels slot, with exactly its semantics
 * (see tensorplug/backend_iface.h). */
void cpu_gemm(tp_backend_dev *d, const tp_gemm_args *g);
void cpu_embedding_fwd(tp_backend_dev *d, tp_mem out, tp_mem table, tp_mem ids, int n, int h,
                       int row0, int rows, int vocab);
void cpu_embedding_bwd(tp_backend_dev *d, tp_mem dtable, tp_mem dout, tp_mem ids, int n, int h,
                       int row0, int rows, int vocab);
void cpu_layernorm_fwd(tp_backend_dev *d, tp_mem y, tp_mem mean, tp_mem rstd, tp_mem x,
                       tp_mem gamma, tp_mem beta, int rows, int cols, float eps);
void cpu_layernorm_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dgamma, tp_mem dbeta, tp_mem dy,
                       tp_mem x, tp_mem mean, tp_mem rstd, tp_mem gamma, int rows, int cols);
void cpu_softmax_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, tp_mem mask, int batch, int heads,
                     int rows, int cols, float scale);
void cpu_softmax_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem y, int batch, int heads,
                     int rows, int cols, float scale);
void cpu_gelu_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n);
void cpu_gelu_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem x, int64_t n);
void cpu_relu_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n);
void cpu_relu_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem x, int64_t n);
void cpu_tanh_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n);
void cpu_tanh_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem y, int64_t n);
void cpu_bias_add(tp_backend_dev *d, tp_mem y, tp_mem bias, int64_t rows, int cols);
void cpu_bias_grad(tp_backend_dev *d, tp_mem dbias, tp_mem dy, int64_t rows, int cols);
void cpu_add(tp_backend_dev *d, tp_mem y, tp_mem a, tp_mem b, int64_t n);
void cpu_axpy(tp_backend_dev *d, tp_mem y, tp_mem x, float alpha, int64_t n);
void cpu_fill(tp_backend_dev *d, tp_mem y, float value, int64_t n);
void cpu_dropout_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int64_t n, float p, uint64_t seed,
                     uint64_t offset);
void cpu_dropout_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, int64_t n, float p, uint64_t seed,
                     uint64_t offset);
void cpu_permute_0213(tp_backend_dev *d, tp_mem y, tp_mem x, int d0, int d1, int d2, int d3,
                      float beta);
void cpu_first_token_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, int batch, int seq, int h);
void cpu_first_token_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dy, int batch, int seq, int h);
void cpu_cross_entropy_fwd(tp_backend_dev *d, tp_mem loss, tp_mem logits, tp_mem labels, int batch,
                           int classes);
void cpu_cross_entropy_bwd(tp_backend_dev *d, tp_mem dlogits, tp_mem dloss, tp_mem logits,
                           tp_mem labels, int batch, int classes);
void cpu_count_correct(tp_backend_dev *d, tp_mem out, tp_mem logits, tp_mem labels, int batch,
                       int classes);
void cpu_optim_control(tp_backend_dev *d, tp_mem ctl, const tp_control_args *args);
void cpu_adam_step(tp_backend_dev *d, tp_mem p, tp_mem g, tp_mem m, tp_mem v, int64_t n,
                   const tp_adam_args *args);
void cpu_sumsq(tp_backend_dev *d, tp_mem out, tp_mem x, int64_t n);
void cpu_nonfinite(tp_backend_dev *d, tp_mem out, tp_mem x, int64_t n);
void cpu_cast(tp_backend_dev *d, tp_mem y, tp_dtype ydt, tp_mem x, tp_dtype xdt, int64_t n);

/* Optional slots (appended after tp_backend_iface.k). */
void cpu_dropout_fwd_keep(tp_backend_dev *d, tp_mem y, tp_mem keep, tp_mem x, int64_t n, float p,
                          uint64_t seed, uint64_t offset);
void cpu_dropout_bwd_keep(tp_backend_dev *d, tp_mem dx, tp_mem dy, tp_mem keep, int64_t n,
                          float p);
void cpu_attention_fwd(tp_backend_dev *d, const tp_attention_args *a);
void cpu_bias_gelu_fwd(tp_backend_dev *d, tp_mem y, tp_mem x, tp_mem bias, int64_t rows,
                       int cols);
void cpu_bias_gelu_bwd(tp_backend_dev *d, tp_mem dx, tp_mem dbias, tp_mem dy, tp_mem pre,
                       int64_t rows, int cols);
void cpu_add_layernorm_fwd(tp_backend_dev *d, const tp_add_ln_args *a);
void cpu_add_layernorm_bwd(tp_backend_dev *d, const tp_add_ln_args *a, tp_mem dy, tp_mem da,
                           tp_mem db, tp_mem dgamma, tp_mem dbeta, bool acc_a, bool acc_b);
void cpu_attention_bwd(tp_backend_dev *d, const tp_attention_args *a, tp_mem dout, tp_mem dq,
                       tp_mem dk, tp_mem dv, tp_mem dbias);
