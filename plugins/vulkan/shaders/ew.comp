#version 450
#extension GL_GOOGLE_include_directive : require
// Elementwise kernels over n f32 elements, one operation per pipeline (OP,
// a compile-time constant: a run-time switch made lavapipe 8x slower):
// y (binding 1), a (2), b (3). Each invocation takes a group of four
// elements, as vec4 when the host found every binding 16-byte aligned
// (pc.al).
#define OP_GELU_F 0
#define OP_GELU_B 1
#define OP_RELU_F 2
#define OP_RELU_B 3
#define OP_TANH_F 4
#define OP_TANH_B 5
#define OP_ADD 6
#define OP_AXPY 7
#define OP_DROP_F 8
#define OP_DROP_B 9
#define OP_BIAS_ADD 10
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint n;
  float alpha;   // axpy
  float p;       // dropout probability
  float scale;   // dropout: 1 / (1 - p) rounded once (0 when p == 1)
  uint seed_lo, seed_hi, off_lo, off_hi;
  uint cols;     // bias_add
  uint al;
} pc;
#include "common.glsl"

layout(std430, binding = 1) buffer Y { float y[]; };
layout(std430, binding = 2) readonly buffer A { float a[]; };
layout(std430, binding = 3) readonly buffer B { float b[]; };
layout(std430, binding = 1) buffer Y4 { vec4 y4[]; };
layout(std430, binding = 2) readonly buffer A4 { vec4 a4[]; };
layout(std430, binding = 3) readonly buffer B4 { vec4 b4[]; };

// Which operands the operation reads.
#if OP == OP_GELU_B || OP == OP_RELU_B || OP == OP_TANH_B || OP == OP_AXPY || OP == OP_DROP_B || \
    OP == OP_BIAS_ADD
#define READS_Y 1
#else
#define READS_Y 0
#endif
#if OP == OP_GELU_B || OP == OP_RELU_B || OP == OP_TANH_B || OP == OP_ADD
#define READS_B 1
#else
#define READS_B 0
#endif
#if OP == OP_BIAS_ADD
#define A_AT(i) ((i) % pc.cols)
#else
#define A_AT(i) (i)
#endif

bool keep(uint i) {
  if (pc.p == 0.0) return true;
  uvec2 ctr = add64(uvec2(pc.off_lo, pc.off_hi), i);
  return philox_uniform(uvec2(pc.seed_lo, pc.seed_hi), ctr) >= pc.p;
}

// The new y[i] from y[i], a and b.
float apply(uint i, float yv, float av, float bv) {
#if OP == OP_GELU_F
  float cdf, pdf;
  gelu_cdf_pdf(av, cdf, pdf);
  return av * cdf;
#elif OP == OP_GELU_B
  float cdf, pdf;
  gelu_cdf_pdf(bv, cdf, pdf);
  return yv + av * (cdf + bv * pdf);
#elif OP == OP_RELU_F
  return av > 0.0 ? av : 0.0;
#elif OP == OP_RELU_B
  return yv + (bv > 0.0 ? av : 0.0);
#elif OP == OP_TANH_F
  return tanh_acc(av);
#elif OP == OP_TANH_B
  return yv + av * (1.0 - bv * bv);
#elif OP == OP_ADD
  return av + bv;
#elif OP == OP_AXPY
  return yv + pc.alpha * av;
#elif OP == OP_DROP_F
  return keep(i) ? av * pc.scale : 0.0;
#elif OP == OP_DROP_B
  return yv + (keep(i) ? av * pc.scale : 0.0);
#elif OP == OP_BIAS_ADD
  return yv + av;
#endif
}

void main() {
  uint oy = BOFF(1), oa = BOFF(2), ob = BOFF(3);
  uint groups = (pc.n + 3u) / 4u, stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint g = gl_GlobalInvocationID.x; g < groups; g += stride) {
    uint i0 = 4u * g;
    if (pc.al != 0u && i0 + 4u <= pc.n) {
      vec4 yv = READS_Y != 0 ? y4[(oy + i0) >> 2] : vec4(0.0);
      vec4 av = a4[(oa + A_AT(i0)) >> 2];
      vec4 bv = READS_B != 0 ? b4[(ob + i0) >> 2] : vec4(0.0);
      vec4 r;
      [[unroll]] for (uint c = 0u; c < 4u; c++) r[c] = apply(i0 + c, yv[c], av[c], bv[c]);
      y4[(oy + i0) >> 2] = r;
    } else {
      for (uint i = i0; i < min(i0 + 4u, pc.n); i++)
        y[oy + i] = apply(i, READS_Y != 0 ? y[oy + i] : 0.0, a[oa + A_AT(i)],
                          READS_B != 0 ? b[ob + i] : 0.0);
    }
  }
}
