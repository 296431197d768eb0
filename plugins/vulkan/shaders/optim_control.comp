#version 450
#extension GL_GOOGLE_include_directive : require
// The step's control rule over the control block (tp_optim_control_host in
// tensorplug/optim_control.h is the reference), one invocation.
layout(local_size_x = 1) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  float max_norm;
  uint dynamic_scaling;
  float growth_interval;
  float growth, backoff;
} pc;
#include "common.glsl"

layout(std430, binding = 1) buffer C { float ctl[]; };

#define SUMSQ 0u
#define GRAD_SCALE 1u
#define SKIP 2u
#define LOSS_SCALE 3u
#define GOOD_STEPS 4u
#define SKIPPED 5u
#define GRAD_NORM 6u
#define LOSS_SCALE_MAX 1099511627776.0

void main() {
  uint o = BOFF(1);
  float norm = sqrt(ctl[o + SUMSQ]) / ctl[o + LOSS_SCALE];
  ctl[o + GRAD_NORM] = norm;
  if (pc.dynamic_scaling != 0u && !is_finite(norm)) {
    ctl[o + SKIP] = 1.0;
    ctl[o + SKIPPED] += 1.0;
    ctl[o + GRAD_SCALE] = 0.0;
    ctl[o + LOSS_SCALE] = max(ctl[o + LOSS_SCALE] * pc.backoff, 1.0);
    ctl[o + GOOD_STEPS] = 0.0;
  } else {
    float clip = pc.max_norm > 0.0 && norm > pc.max_norm ? pc.max_norm / norm : 1.0;
    ctl[o + SKIP] = 0.0;
    ctl[o + GRAD_SCALE] = clip / ctl[o + LOSS_SCALE];
    if (pc.dynamic_scaling != 0u) {
      ctl[o + GOOD_STEPS] += 1.0;
      if (ctl[o + GOOD_STEPS] >= pc.growth_interval) {
        ctl[o + LOSS_SCALE] = min(ctl[o + LOSS_SCALE] * pc.growth, LOSS_SCALE_MAX);
        ctl[o + GOOD_STEPS] = 0.0;
      }
    }
  }
  ctl[o + SUMSQ] = 0.0;
}
