#version 450
#extension GL_GOOGLE_include_directive : require
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
  uint has_ctl, al;
} pc;
#include "common.glsl"

layout(std430, binding = 1) buffer P { float p[]; };
layout(std430, binding = 2) readonly buffer G { float g[]; };
layout(std430, binding = 3) buffer M { float m[]; };
layout(std430, binding = 4) buffer V { float v[]; };
layout(std430, binding = 5) readonly buffer C { float ctl[]; };
layout(std430, binding = 1) buffer P4 { vec4 p4[]; };
layout(std430, binding = 2) readonly buffer G4 { vec4 g4[]; };
layout(std430, binding = 3) buffer M4 { vec4 m4[]; };
layout(std430, binding = 4) buffer V4 { vec4 v4[]; };

void main() {
  uint op = BOFF(1), og = BOFF(2), om = BOFF(3), ov = BOFF(4), oc = BOFF(5);
  float gs = pc.gs;
  if (pc.has_ctl != 0u) {
    if (ctl[oc + 2u] != 0.0) return; // TP_CTL_SKIP
    gs = gs * ctl[oc + 1u];           // TP_CTL_GRAD_SCALE
  }
  // groups of four elements, as vec4 when every binding is 16-byte aligned
  uint groups = (pc.n + 3u) / 4u, stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint q = gl_GlobalInvocationID.x; q < groups; q += stride) {
    uint i0 = 4u * q;
    if (pc.al != 0u && i0 + 4u <= pc.n) {
      vec4 gg = gs * g4[(og + i0) >> 2];
      vec4 mm = pc.b1 * m4[(om + i0) >> 2] + (1.0 - pc.b1) * gg;
      vec4 vv = pc.b2 * v4[(ov + i0) >> 2] + (1.0 - pc.b2) * (gg * gg);
      m4[(om + i0) >> 2] = mm;
      v4[(ov + i0) >> 2] = vv;
      p4[(op + i0) >> 2] = p4[(op + i0) >> 2] * pc.decay - pc.step * mm / (sqrt(vv) * pc.vscale + pc.eps);
      continue;
    }
    for (uint i = i0; i < min(i0 + 4u, pc.n); i++) {
      float gg = gs * g[og + i];
      float mm = pc.b1 * m[om + i] + (1.0 - pc.b1) * gg;
      float vv = pc.b2 * v[ov + i] + (1.0 - pc.b2) * (gg * gg);
      m[om + i] = mm;
      v[ov + i] = vv;
      p[op + i] = p[op + i] * pc.decay - pc.step * mm / (sqrt(vv) * pc.vscale + pc.eps);
    }
  }
}
