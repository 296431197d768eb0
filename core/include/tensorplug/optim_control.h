/* tensorplug/optim_control.h — the optimizer's control rule (gradient
 * clipping and dynamic loss scaling) as one pure function over the control
 * block of backend_iface.h. Backends run it on the device (optim_control);
 * this is the reference they follow and the unit tests check. */
#pragma once
#include <math.h>
#include "tensorplug/backend_iface.h"

#ifdef __cplusplus
extern "C" {
#endif

/* PyTorch's GradScaler defaults. */
#define TP_LOSS_SCALE_INIT 65536.0f
#define TP_LOSS_SCALE_GROWTH 2.0f
#define TP_LOSS_SCALE_BACKOFF 0.5f
#define TP_LOSS_SCALE_INTERVAL 2000
#define TP_LOSS_SCALE_MAX 1099511627776.0f /* 2^40: growth never reaches Inf */

static inline void tp_optim_control_host(float *ctl, const tp_control_args *a) {
  float norm = sqrtf(ctl[TP_CTL_SUMSQ]) / ctl[TP_CTL_LOSS_SCALE];
  ctl[TP_CTL_GRAD_NORM] = norm;
  if (a->dynamic && !isfinite(norm)) {
    ctl[TP_CTL_SKIP] = 1.0f;
    ctl[TP_CTL_SKIPPED] += 1.0f;
    ctl[TP_CTL_GRAD_SCALE] = 0.0f;
    ctl[TP_CTL_LOSS_SCALE] = fmaxf(ctl[TP_CTL_LOSS_SCALE] * a->backoff, 1.0f);
    ctl[TP_CTL_GOOD_STEPS] = 0.0f;
  } else {
    float clip = a->max_norm > 0.0f && norm > a->max_norm ? a->max_norm / norm : 1.0f;
    ctl[TP_CTL_SKIP] = 0.0f;
    ctl[TP_CTL_GRAD_SCALE] = clip / ctl[TP_CTL_LOSS_SCALE];
    if (a->dynamic) {
      ctl[TP_CTL_GOOD_STEPS] += 1.0f;
      if (ctl[TP_CTL_GOOD_STEPS] >= (float)a->growth_interval) {
        ctl[TP_CTL_LOSS_SCALE] = fminf(ctl[TP_CTL_LOSS_SCALE] * a->growth, TP_LOSS_SCALE_MAX);
        ctl[TP_CTL_GOOD_STEPS] = 0.0f;
      }
    }
  }
  ctl[TP_CTL_SUMSQ] = 0.0f;
}

#ifdef __cplusplus
}
#endif
