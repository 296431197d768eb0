/* core/dtype.c — element sizes, names and f32 <-> bf16/f16 conversions. */
#include "tensorplug/dtype.h"

#include <math.h>
#include <string.h>

size_t tp_dtype_size(tp_dtype t) {
  switch (t) {
  case TP_F32: return 4;
  case TP_BF16: return 2;
  case TP_F16: return 2;
  case TP_I32: return 4;
  case TP_I8: return 1;
  }
  return 0;
}

const char *tp_dtype_name(tp_dtype t) {
  switch (t) {
  case TP_F32: return "f32";
  case TP_BF16: return "bf16";
  case TP_F16: return "f16";
  case TP_I32: return "i32";
  case TP_I8: return "i8";
  }
  return "?";
}

static uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

uint16_t tp_f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
  return (uint16_t)(u >> 16);
}

float tp_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t tp_f32_to_f16(float f) {
  uint32_t u = f32_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);   /* NaN */
  if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  /* overflow (rounds to) Inf */
  if (abs < 0x38800000u) {                                    /* f16 subnormal or zero */
    /* value / 2^-24 rounded to nearest even */
    float a = bits_f32(abs);
    float scaled = a * 16777216.0f; /* exact: power of two */
    uint32_t q = (uint32_t)nearbyintf(scaled);
    return (uint16_t)(sign | q);
  }
  uint32_t mant = abs & 0x7fffffu;
  uint32_t exp = (abs >> 23) - 127 + 15;
  uint32_t h = (exp << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; /* carries into exp correctly */
  return (uint16_t)(sign | h);
}

float tp_f16_to_f32(uint16_t h) {
  uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    float v = (float)mant * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));
  return bits_f32(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}
