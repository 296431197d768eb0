#version 450
// Elementwise kernels over n f32 elements, one op per dispatch:
// y (binding 1), a (2), b (3).
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  uvec4 offs;
  uint op, n;
  float alpha;   // axpy
  float p;       // dropout probability
  float scale;   // dropout: 1 / (1 - p) rounded once (0 when p == 1)
  uint seed_lo, seed_hi, off_lo, off_hi;
  uint cols;     // bias_add
} pc;
#include "common.glsl"

layout(std430, binding = 1) buffer Y { float y[]; };
layout(std430, binding = 2) readonly buffer A { float a[]; };
layout(std430, binding = 3) readonly buffer B { float b[]; };

#define OP_GELU_F 0u
#define OP_GELU_B 1u
#define OP_RELU_F 2u
#define OP_RELU_B 3u
#define OP_TANH_F 4u
#define OP_TANH_B 5u
#define OP_ADD 6u
#define OP_AXPY 7u
#define OP_DROP_F 8u
#define OP_DROP_B 9u
#define OP_BIAS_ADD 10u

bool keep(uint i) {
  if (pc.p == 0.0) return true;
  uvec2 ctr = add64(uvec2(pc.off_lo, pc.off_hi), i);
  return philox_uniform(uvec2(pc.seed_lo, pc.seed_hi), ctr) >= pc.p;
}

void main() {
  uint oy = BOFF(1), oa = BOFF(2), ob = BOFF(3);
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < pc.n; i += stride) {
    switch (pc.op) {
    case OP_GELU_F: {
      float x = a[oa + i], cdf, pdf;
      gelu_cdf_pdf(x, cdf, pdf);
      y[oy + i] = x * cdf;
      break;
    }
    case OP_GELU_B: {
      float x = b[ob + i], cdf, pdf;
      gelu_cdf_pdf(x, cdf, pdf);
      y[oy + i] += a[oa + i] * (cdf + x * pdf);
      break;
    }
    case OP_RELU_F: {
      float x = a[oa + i];
      y[oy + i] = x > 0.0 ? x : 0.0;
      break;
    }
    case OP_RELU_B:
      y[oy + i] += b[ob + i] > 0.0 ? a[oa + i] : 0.0;
      break;
    case OP_TANH_F:
      y[oy + i] = tanh_acc(a[oa + i]);
      break;
    case OP_TANH_B: {
      float t = b[ob + i];
      y[oy + i] += a[oa + i] * (1.0 - t * t);
      break;
    }
    case OP_ADD:
      y[oy + i] = a[oa + i] + b[ob + i];
      break;
    case OP_AXPY:
      y[oy + i] += pc.alpha * a[oa + i];
      break;
    case OP_DROP_F:
      y[oy + i] = keep(i) ? a[oa + i] * pc.scale : 0.0;
      break;
    case OP_DROP_B:
      y[oy + i] += keep(i) ? a[oa + i] * pc.scale : 0.0;
      break;
    case OP_BIAS_ADD:
      y[oy + i] += a[oa + i % pc.cols];
      break;
    }
  }
}
