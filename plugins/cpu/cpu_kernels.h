/* plugins/cpu/cpu_kernels.h — private to the CPU backend plugin: the buffer and
 * device structs shared by cpu_backend.c and cpu_kernels.c. */
#pragma once
#include "tensorplug/backend_iface.h"
#include <glib.h>
#include <stddef.h>

/* Host memory, 64-byte aligned (one cache line, one AVX-512 vector). */
struct tp_buffer {
  void *ptr;
  size_t size;
};

/* The instruction-set level the hot loops run at (see cpu_kernels.c). */
typedef enum { CPU_ISA_BASE = 0, CPU_ISA_AVX2 = 1, CPU_ISA_AVX512 = 2 } cpu_isa_level;
extern int cpu_isa;
/* The CPU's best level, lowered by $TENSORPLUG_CPU_ISA (baseline, avx2,
 * avx512); FALSE with err when the variable asks for more than the CPU has
 * or names no level. */
bool cpu_isa_init(GError **err);
const char *cpu_isa_name(int level);

struct tp_backend_dev {
  int threads;   /* OpenMP team size for our kernels and OpenBLAS */
  GMutex lock;   /* guards error */
  GError *error; /* first kernel failure, reported (and cleared) by synchronize */
};

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
