/* plugins/cuda/sim/tpsim_cublaslt.c — cuBLASLt's matmul, as its manual
 * defines it, on host memory, for the "cudasim" test plugin:
 *   D = alpha * op(A) op(B) + beta * C, column-major, per batch entry,
 * with the manual's rules checked rather than assumed: each layout's rows
 * and columns must match op()'s shape, ld >= rows, batch counts agree, and
 * only the type combinations of the manual's table for cublasLtMatmul are
 * accepted (CUBLAS_STATUS_NOT_SUPPORTED otherwise). So the plugin's mapping
 * of row-major products onto cuBLASLt is exercised without a GPU; what this
 * file cannot show is a misreading of the manual, which the GPU check
 * (scripts/gpu-check.sh) settles. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>

#include "../cuda_shared.h"

typedef struct sim_desc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t ta, tb;
} sim_desc;

typedef struct sim_layout {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld, stride;
  int32_t batch;
} sim_layout;

static char the_handle;

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
  *h = (cublasLtHandle_t)(void *)&the_handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
  (void)h;
  return CUBLAS_STATUS_SUCCESS;
}
size_t cublasLtGetVersion(void) { return CUBLAS_VERSION; }

const char *cublasLtGetStatusName(cublasStatus_t s) {
  switch (s) {
  case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
  case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
  case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  default: return "CUBLAS_STATUS_(other)";
  }
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  sim_desc *x = calloc(1, sizeof *x);
  x->compute = compute;
  x->scale = scale;
  x->ta = x->tb = CUBLAS_OP_N;
  *d = (cublasLtMatmulDesc_t)(void *)x;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
  free(d);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t attr, const void *buf,
                                              size_t size) {
  sim_desc *x = (sim_desc *)(void *)d;
  if (attr == CUBLASLT_MATMUL_DESC_TRANSA || attr == CUBLASLT_MATMUL_DESC_TRANSB) {
    if (size != sizeof(cublasOperation_t)) return CUBLAS_STATUS_INVALID_VALUE;
    cublasOperation_t op;
    memcpy(&op, buf, sizeof op);
    if (op != CUBLAS_OP_N && op != CUBLAS_OP_T) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (attr == CUBLASLT_MATMUL_DESC_TRANSA)
      x->ta = op;
    else
      x->tb = op;
    return CUBLAS_STATUS_SUCCESS;
  }
  return CUBLAS_STATUS_NOT_SUPPORTED; /* the plugin sets nothing else */
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  if (ld < (int64_t)rows || ld < 1) return CUBLAS_STATUS_INVALID_VALUE;
  sim_layout *x = calloc(1, sizeof *x);
  x->type = type;
  x->rows = rows;
  x->cols = cols;
  x->ld = ld;
  x->batch = 1;
  *l = (cublasLtMatrixLayout_t)(void *)x;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
  free(l);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l,
                                                cublasLtMatrixLayoutAttribute_t attr,
                                                const void *buf, size_t size) {
  sim_layout *x = (sim_layout *)(void *)l;
  if (attr == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT && size == sizeof(int32_t)) {
    memcpy(&x->batch, buf, size);
    return x->batch >= 1 ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
  }
  if (attr == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET && size == sizeof(int64_t)) {
    memcpy(&x->stride, buf, size);
    return CUBLAS_STATUS_SUCCESS;
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
  *p = (cublasLtMatmulPreference_t)calloc(1, 8);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
  free(p);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t size) {
  (void)p;
  (void)buf;
  switch (attr) {
  case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
    return size == sizeof(uint64_t) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
  case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
  case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
  case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
  case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
    return size == sizeof(uint32_t) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
  default: return CUBLAS_STATUS_INVALID_VALUE;
  }
}

/* The manual's table of cublasLtMatmul's supported types (the rows this
 * plugin can reach): compute, scale, A/B, C/D. */
static bool types_supported(const sim_desc *d, cudaDataType_t ab, cudaDataType_t c) {
  if (d->scale != CUDA_R_32F) return false;
  switch (d->compute) {
  case CUBLAS_COMPUTE_32F:
    return (ab == CUDA_R_32F && c == CUDA_R_32F) ||
           ((ab == CUDA_R_16BF || ab == CUDA_R_16F) && (c == ab || c == CUDA_R_32F));
  case CUBLAS_COMPUTE_32F_FAST_16BF:
  case CUBLAS_COMPUTE_32F_FAST_16F: return ab == CUDA_R_32F && c == CUDA_R_32F;
  default: return false;
  }
}

/* op(A) must be m x k, op(B) k x n, C and D m x n; batches agree. */
static cublasStatus_t check(const sim_desc *d, const sim_layout *a, const sim_layout *b,
                            const sim_layout *c, const sim_layout *dd) {
  if (a->type != b->type || c->type != dd->type) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (!types_supported(d, a->type, c->type)) return CUBLAS_STATUS_NOT_SUPPORTED;
  uint64_t m = d->ta == CUBLAS_OP_N ? a->rows : a->cols, k = d->ta == CUBLAS_OP_N ? a->cols : a->rows;
  uint64_t kb = d->tb == CUBLAS_OP_N ? b->rows : b->cols, n = d->tb == CUBLAS_OP_N ? b->cols : b->rows;
  if (k != kb || c->rows != m || c->cols != n || dd->rows != m || dd->cols != n ||
      c->ld != dd->ld)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (a->batch != c->batch || b->batch != c->batch || dd->batch != c->batch)
    return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[],
                                              int *found) {
  (void)h;
  (void)pref;
  cublasStatus_t s = check((const sim_desc *)(void *)desc, (const sim_layout *)(void *)a,
                           (const sim_layout *)(void *)b, (const sim_layout *)(void *)c,
                           (const sim_layout *)(void *)d);
  *found = 0;
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
  memset(&results[0], 0, sizeof results[0]);
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.0f;
  *found = 1;
  return CUBLAS_STATUS_SUCCESS;
}

static float load(const void *p, cudaDataType_t t, int64_t i) {
  switch (t) {
  case CUDA_R_16BF: return tpcu_bf16_to_f32(((const uint16_t *)p)[i]);
  case CUDA_R_16F: return tpcu_f16_to_f32(((const uint16_t *)p)[i]);
  default: return ((const float *)p)[i];
  }
}

static void store(void *p, cudaDataType_t t, int64_t i, float v) {
  switch (t) {
  case CUDA_R_16BF: ((uint16_t *)p)[i] = tpcu_f32_to_bf16(v); break;
  case CUDA_R_16F: ((uint16_t *)p)[i] = tpcu_f32_to_f16(v); break;
  default: ((float *)p)[i] = v; break;
  }
}

/* What the tensor cores see of an f32 operand under the FAST compute types. */
static float operand(const sim_desc *d, float v) {
  if (d->compute == CUBLAS_COMPUTE_32F_FAST_16BF) return tpcu_bf16_to_f32(tpcu_f32_to_bf16(v));
  if (d->compute == CUBLAS_COMPUTE_32F_FAST_16F) return tpcu_f16_to_f32(tpcu_f32_to_f16(v));
  return v;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t desc, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t la, const void *B,
                              cublasLtMatrixLayout_t lb, const void *beta, const void *C,
                              cublasLtMatrixLayout_t lc, void *D, cublasLtMatrixLayout_t ld,
                              const cublasLtMatmulAlgo_t *algo, void *ws, size_t ws_bytes,
                              cudaStream_t stream) {
  (void)h;
  (void)algo;
  (void)ws;
  (void)ws_bytes;
  (void)stream;
  const sim_desc *d = (const sim_desc *)(void *)desc;
  const sim_layout *a = (const sim_layout *)(void *)la, *b = (const sim_layout *)(void *)lb;
  const sim_layout *c = (const sim_layout *)(void *)lc, *dd = (const sim_layout *)(void *)ld;
  cublasStatus_t s = check(d, a, b, c, dd);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  if (!alpha || !beta || !A || !B || !D) return CUBLAS_STATUS_INVALID_VALUE;
  float al = *(const float *)alpha, be = *(const float *)beta;
  if (be != 0.0f && !C) return CUBLAS_STATUS_INVALID_VALUE;
  uint64_t m = c->rows, n = c->cols, k = d->ta == CUBLAS_OP_N ? a->cols : a->rows;
  /* Every D element from the old C first: D may be C, and beta == 0 never reads C. */
  for (int32_t bt = 0; bt < c->batch; bt++)
    for (uint64_t j = 0; j < n; j++)
      for (uint64_t i = 0; i < m; i++) {
        float acc = 0.0f;
        for (uint64_t p = 0; p < k; p++) {
          int64_t ia = d->ta == CUBLAS_OP_N ? (int64_t)(i + p * (uint64_t)a->ld)
                                            : (int64_t)(p + i * (uint64_t)a->ld);
          int64_t ib = d->tb == CUBLAS_OP_N ? (int64_t)(p + j * (uint64_t)b->ld)
                                            : (int64_t)(j + p * (uint64_t)b->ld);
          float x = operand(d, load(A, a->type, bt * a->stride + ia));
          float y = operand(d, load(B, b->type, bt * b->stride + ib));
          acc = fmaf(x, y, acc);
        }
        int64_t ic = bt * c->stride + (int64_t)(i + j * (uint64_t)c->ld);
        float old = be != 0.0f ? load(C, c->type, ic) : 0.0f;
        store(D, dd->type, bt * dd->stride + (int64_t)(i + j * (uint64_t)dd->ld),
              al * acc + (be != 0.0f ? be * old : 0.0f));
      }
  return CUBLAS_STATUS_SUCCESS;
}
