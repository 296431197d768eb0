#version 450
// One Adam step over n parameters (in place on p, m, v; g read only):
// g' = gs * g (gs = grad_scale, times ctl[GRAD_SCALE] with a control block,
// and nothing changes when ctl[SKIP] != 0); m = b1 m + (1-b1) g';
// v = b2 v + (1-b2) g'^2; p = p * decay - step * m / (sqrt(v) * vscale + eps)
// (the host folds Keras/AdamW bias corrections into step, vscale, decay).
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint n;
  float b1, b2, gs, decay, step, vscale, eps;
  uint has_ctl;
} pc;
#include "common.glsl"

layout(std430, binding = 1) buffer P { float p[]; };
layout(std430, binding = 2) readonly buffer G { float g[]; };
layout(std430, binding = 3) buffer M { float m[]; };
layout(std430, binding = 4) buffer V { float v[]; };
layout(std430, binding = 5) readonly buffer C { float ctl[]; };

void main() {
  uint op = BOFF(1), og = BOFF(2), om = BOFF(3), ov = BOFF(4), oc = BOFF(5);
  float gs = pc.gs;
  if (pc.has_ctl != 0u) {
    if (ctl[oc + 2u] != 0.0) return; // TP_CTL_SKIP
    gs = gs * ctl[oc + 1u];           // TP_CTL_GRAD_SCALE
  }
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < pc.n; i += stride) {
    float gg = gs * g[og + i];
    float mm = pc.b1 * m[om + i] + (1.0 - pc.b1) * gg;
    float vv = pc.b2 * v[ov + i] + (1.0 - pc.b2) * (gg * gg);
    m[om + i] = mm;
    v[ov + i] = vv;
    p[op + i] = p[op + i] * pc.decay - pc.step * mm / (sqrt(vv) * pc.vscale + pc.eps);
  }
}
