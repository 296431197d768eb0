/* plugins/cuda/cuda_plan.h — the CUDA backend's host-side decisions in plain
 * C, with no CUDA call in them: argument checks, how a GEMM maps onto
 * cuBLASLt, launch grids, scratch and workspace sizes, the attention tiles,
 * and the texts of its errors. cuda_backend.c acts on them;
 * tests/test_cuda_host.c checks them on any machine, GPU or not. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cuda_shared.h"
#include "tensorplug/backend_iface.h"

G_BEGIN_DECLS

/* ------------------------------------------------------------------ GEMM */

/* cuBLASLt compute types the plan can ask for (cublasComputeType_t values
 * are picked by cuda_backend.c). */
typedef enum {
  TPCU_LT_32F = 0,           /* f32 math (also bf16/f16 operands: exact products, f32 sums) */
  TPCU_LT_32F_FAST_16BF = 1, /* f32 operands rounded to bf16, tensor cores, f32 sums */
  TPCU_LT_32F_FAST_16F = 2,  /* f32 operands rounded to f16, tensor cores, f32 sums */
} tpcu_lt_compute;

/* How one tp_gemm_args call runs. cuBLASLt multiplies A and B of type
 * lt_ab into C of type lt_c; when the storage types are not a combination
 * cuBLASLt supports, A and B are first cast into scratch (cast_ab) and/or
 * C goes through an f32 scratch copy (c_temp). */
typedef struct tpcu_gemm_plan {
  tp_dtype lt_ab, lt_c;
  tpcu_lt_compute compute;
  bool cast_ab;     /* A, B cast from ab_dtype to lt_ab into scratch */
  bool c_temp;      /* C computed in an f32 scratch matrix, then cast to c_dtype */
  bool k_zero;      /* k == 0: C = beta * C by a kernel, no product */
  bool sum_batches; /* sc == 0 and batch > 1: one product per call, beta 1 after the first */
  int lt_batch;     /* the batch count one cuBLASLt call gets */
  /* scratch layout (bytes): A copy at 0, B copy at b_off, f32 C copy at c_off */
  size_t a_elems, b_elems, c_elems; /* spans in elements (strided copies keep the strides) */
  size_t b_off, c_off, scratch_bytes;
} tpcu_gemm_plan;

/* Sizes, strides, dtypes: false and a sentence in why when the call is
 * invalid (the kernel then records it as the device's error). */
bool tpcu_gemm_check(const tp_gemm_args *g, char *why, size_t len);
/* A plan for a valid call (tpcu_gemm_check first). */
void tpcu_gemm_plan_make(const tp_gemm_args *g, tpcu_gemm_plan *p);

/* Elements from a matrix's first to its last, over a batch:
 * (batch - 1) * stride + (rows - 1) * ld + cols (0 when empty). */
size_t tpcu_matrix_span(int rows, int cols, int ld, int64_t stride, int batch);

/* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the
 * cuBLASLt operands (its A is our B), each a column-major layout. */
typedef struct tpcu_lt_layout {
  bool trans;        /* the operation applied to this operand */
  uint64_t rows, cols;
  int64_t ld, stride; /* elements */
} tpcu_lt_layout;
typedef struct tpcu_lt_problem {
  uint64_t m, n, k; /* column-major sizes: m = our n, n = our m */
  tpcu_lt_layout a, b, c;
} tpcu_lt_problem;
void tpcu_lt_problem_make(const tp_gemm_args *g, int batch, tpcu_lt_problem *p);

/* The largest power of two <= cap dividing every nonzero value given
 * (addresses and byte strides): the alignment cuBLASLt may assume. */
uint32_t tpcu_alignment(uint32_t cap, uint64_t a, uint64_t b, uint64_t c);

/* cuBLASLt's workspace: 32 MiB on Hopper (NVIDIA's advice for sm_90), 4 MiB before. */
size_t tpcu_lt_workspace_bytes(int cc_major);

/* -------------------------------------------------------------- launches */

/* Launch grids, chunk counts: see cuda_shared.h. */

/* --------------------------------------------------------------- uploads */

/* Uploads go through a ring of pinned staging slots (each reused once the
 * copy that read it has run, told by an event). */
#define TPCU_STAGE_SLOTS 8
#define TPCU_STAGE_SLOT_BYTES ((size_t)4 << 20)
/* Slots an upload of bytes takes. */
size_t tpcu_stage_chunks(size_t bytes, size_t slot_bytes);

/* ------------------------------------------------------------- attention */

/* Sizes, strides, dropout, compute type of one call. */
bool tpcu_attention_check(const tpcu_attn_call *a, char *why, size_t len);
/* The tile layout of kernel (TPCU_ATTN_*) for head_dim, the compute type
 * and the sequence lengths: the largest tiles, no longer than the
 * sequences, that fit in smem_limit bytes of shared memory per block;
 * false (and why) when none does. */
bool tpcu_attn_layout_make(int kernel, int head_dim, tp_dtype compute, int q_len, int kv_len,
                           size_t smem_limit, tpcu_attn_layout *l, char *why, size_t len);

/* The largest head_dim every attention kernel takes in every compute type
 * with smem_limit bytes per block (tp_device_info.max_head_dim; the core
 * composes attention for larger heads); 0 when not even 16 fits. */
int tpcu_attn_max_head_dim(size_t smem_limit);

/* ------------------------------------------------------------ optimizer */

/* Adam's per-call coefficients, in double once as the CPU backend does
 * (tpcu_adam_update takes them); false when args->step < 1. */
bool tpcu_adam_coeffs(const tp_adam_args *a, float *step, float *vscale, float *decay);

/* ---------------------------------------------------------------- errors */

/* The out-of-memory text: what was asked, what is free, and what to do. */
char *tpcu_oom_message(size_t asked, size_t free_bytes, size_t total_bytes);
/* The text of a kernel error word (TPCU_KERR_*), NULL when it holds none. */
char *tpcu_kernel_error_message(const int32_t word[TPCU_KERR_WORDS]);
/* Whether a GPU of compute capability major.minor runs this build's code
 * (sm_80 and sm_90 machine code, compute_90 PTX); why not otherwise. */
bool tpcu_cc_usable(int major, int minor, char *why, size_t len);

G_END_DECLS
