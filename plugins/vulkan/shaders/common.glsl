// plugins/vulkan/shaders/common.glsl — shared by every kernel shader.
//
// Conventions (vk_internal.h, vk_dispatch): binding 0 is the status buffer
// (device-side errors), tensors are bindings 1..15, each bound from its byte
// offset aligned down to the device's alignment. The push constants start
// with `uvec4 offs`: byte b of it is binding b's remaining offset in
// elements (BOFF(b)); the kernel's parameters follow. Every shader declares
// its own `pc` block before including this file.
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require
// Loops with a constant trip count are [[unroll]]ed: besides speed, Mesa's
// CPU implementation (lavapipe) ends a shader invocation's loops after
// 65535 iterations in all (LP_MAX_TGSI_LOOP_ITERATIONS), so every loop that
// can run long must be the only one that does (the host splits work that
// would exceed it).

#define BOFF(b) ((pc.offs[(b) >> 2] >> (((b) & 3) * 8)) & 0xffu)

// Device-side error kinds (vk_internal.h has the same numbers).
#define ERR_EMBED_FWD_ID 1u
#define ERR_EMBED_BWD_ID 2u
#define ERR_CE_FWD_LABEL 3u
#define ERR_CE_BWD_LABEL 4u
#define ERR_COUNT_LABEL 5u

layout(std430, binding = 0) buffer Status { uint st[]; } status;

// Keeps the first error only: its kind, the bad value, where, and the limit.
void report(uint kind, int value, uint pos, int limit) {
  if (atomicCompSwap(status.st[0], 0u, kind) == 0u) {
    status.st[1] = uint(value);
    status.st[2] = pos;
    status.st[3] = uint(limit);
  }
}

#define NEG_INF uintBitsToFloat(0xff800000u)

bool is_finite(float x) { return (floatBitsToUint(x) & 0x7f800000u) != 0x7f800000u; }

// exp(x) as the CPU backend computes it (Cephes polynomial, <= 2 ulp; x < -87
// and -inf give 0, x is clamped at 88): GLSL's exp is only 3 + 2|x| ulp.
float exp_fast(float x) {
  const float log2e = 1.44269504088896341, ln2_hi = 0.693359375, ln2_lo = -2.12194440e-4;
  float xc = x < -87.0 ? -87.0 : (x > 88.0 ? 88.0 : x);
  float n = roundEven(xc * log2e);
  float r = (xc - n * ln2_hi) - n * ln2_lo;
  float p = 1.9875691500e-4;
  p = p * r + 1.3981999507e-3;
  p = p * r + 8.3334519073e-3;
  p = p * r + 4.1665795894e-2;
  p = p * r + 1.6666665459e-1;
  p = p * r + 5.0000001201e-1;
  p = p * (r * r) + r + 1.0;
  float s = uintBitsToFloat(uint(int(n) + 127) << 23);
  return x < -87.0 ? 0.0 : p * s;
}

// tanh (Cephes tanhf: a polynomial near 0, exp elsewhere; <= 2 ulp).
float tanh_acc(float x) {
  float a = abs(x);
  if (a < 0.625) {
    float z = x * x;
    float p = ((((-5.70498872745e-3 * z + 2.06390887954e-2) * z - 5.37397155531e-2) * z +
                1.33314422036e-1) * z - 3.33332819422e-1);
    return p * z * x + x;
  }
  if (a > 44.0) return sign(x);
  float e = exp_fast(2.0 * a);
  float t = 1.0 - 2.0 / (e + 1.0);
  return x < 0.0 ? -t : t;
}

// The standard normal's CDF and density for GELU, as the CPU backend: erfc
// by Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7), computed
// directly so the negative tail keeps its relative accuracy.
void gelu_cdf_pdf(float x, out float cdf, out float pdf) {
  const float p = 0.3275911, a1 = 0.254829592, a2 = -0.284496736, a3 = 1.421413741,
              a4 = -1.453152027, a5 = 1.061405429;
  float z = x * 0.70710678118654752;
  float a = abs(z);
  float t = 1.0 / (1.0 + p * a);
  float poly = t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))));
  float e = exp_fast(-(a * a));
  float half_q = 0.5 * (poly * e);
  cdf = z < 0.0 ? half_q : 1.0 - half_q;
  pdf = 0.3989422804014327 * e;
}

// Philox4x32-10 (tensorplug/philox.h): the first output word for counter
// (lo, hi, 0, 0) and key seed.
uint philox_word(uvec2 seed, uvec2 ctr) {
  uint c0 = ctr.x, c1 = ctr.y, c2 = 0u, c3 = 0u, k0 = seed.x, k1 = seed.y;
  [[unroll]] for (int r = 0; r < 10; r++) {
    uint hi0, lo0, hi1, lo1;
    umulExtended(0xD2511F53u, c0, hi0, lo0);
    umulExtended(0xCD9E8D57u, c2, hi1, lo1);
    uint n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c0;
}

// tp_philox_uniform(seed, ctr): top 24 bits / 2^24, exact in f32.
float philox_uniform(uvec2 seed, uvec2 ctr) {
  return float(philox_word(seed, ctr) >> 8) * (1.0 / 16777216.0);
}

uvec2 add64(uvec2 a, uint b) {
  uint carry;
  uint lo = uaddCarry(a.x, b, carry);
  return uvec2(lo, a.y + carry);
}

uvec2 add64v(uvec2 a, uvec2 b) {
  uint carry;
  uint lo = uaddCarry(a.x, b.x, carry);
  return uvec2(lo, a.y + b.y + carry);
}

// Round-to-nearest-even conversions (core/dtype.c), NaN stays NaN; only
// integer operations, so no denormal flushing can change them.
uint f32_to_bf16(uint u) {
  if ((u & 0x7fffffffu) > 0x7f800000u) return ((u >> 16) | 0x40u) & 0xffffu;
  u += 0x7fffu + ((u >> 16) & 1u);
  return u >> 16;
}
uint bf16_to_f32(uint h) { return h << 16; }

uint f32_to_f16(uint u) {
  uint sgn = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sgn | 0x7e00u;  // NaN
  if (a >= 0x477ff000u) return sgn | 0x7c00u; // rounds to Inf
  if (a < 0x38800000u) {                      // f16 subnormal or zero
    if (a < 0x33000000u) return sgn;          // below half the smallest subnormal
    // value = m 2^(e - 150), so value / 2^-24 = m >> (126 - e), rounded
    uint e = a >> 23, m = (a & 0x7fffffu) | 0x800000u, sh = 126u - e;
    uint q = m >> sh, rest = m & ((1u << sh) - 1u), halfv = 1u << (sh - 1u);
    if (rest > halfv || (rest == halfv && (q & 1u) != 0u)) q++;
    return sgn | q;
  }
  uint mant = a & 0x7fffffu, e = (a >> 23) - 127u + 15u;
  uint h = (e << 10) | (mant >> 13), rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u) != 0u)) h++;
  return sgn | h;
}

uint f16_to_f32(uint h) {
  uint sgn = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0u) {
    if (m == 0u) return sgn;
    // subnormal: normalise (value m * 2^-24)
    int lz = findMSB(m);              // 0..9
    uint mm = (m << (23 - lz)) & 0x7fffffu;
    return sgn | (uint(lz - 24 + 127) << 23) | mm;
  }
  if (e == 31u) return sgn | 0x7f800000u | (m << 13);
  return sgn | ((e - 15u + 127u) << 23) | (m << 13);
}

// f32 bits -> the value rounded to bf16 (1) or f16 (2), as f32.
float round_to(float x, uint dt) {
  uint u = floatBitsToUint(x);
  if (dt == 1u) return uintBitsToFloat(bf16_to_f32(f32_to_bf16(u)));
  if (dt == 2u) return uintBitsToFloat(f16_to_f32(f32_to_f16(u)));
  return x;
}
