/* tests/test_dtype.c — f32 <-> bf16/f16 conversions and the Philox RNG. */
#include <math.h>

#include "tensorplug/dtype.h"
#include "tensorplug/philox.h"
#include "tp_test.h"

TP_TEST(Dtype, SizesAndNames) {
  TP_CHECK_INT_EQ(tp_dtype_size(TP_F32), 4);
  TP_CHECK_INT_EQ(tp_dtype_size(TP_BF16), 2);
  TP_CHECK_INT_EQ(tp_dtype_size(TP_F16), 2);
  TP_CHECK_INT_EQ(tp_dtype_size(TP_I32), 4);
  TP_CHECK_STR_EQ(tp_dtype_name(TP_BF16), "bf16");
}

TP_TEST(Dtype, Bf16KnownValues) {
  TP_CHECK_INT_EQ(tp_f32_to_bf16(1.0f), 0x3f80);
  TP_CHECK_INT_EQ(tp_f32_to_bf16(-2.0f), 0xc000);
  /* 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to even (1.0) */
  TP_CHECK_INT_EQ(tp_f32_to_bf16(1.00390625f), 0x3f80);
  TP_CHECK_INT_EQ(tp_f32_to_bf16(1.01171875f), 0x3f82); /* tie, rounds up to even */
  TP_CHECK(isnan(tp_bf16_to_f32(tp_f32_to_bf16(NAN))));
  TP_CHECK(isinf(tp_bf16_to_f32(tp_f32_to_bf16(INFINITY))));
  TP_CHECK_NEAR(tp_bf16_to_f32(tp_f32_to_bf16(3.14159f)), 3.140625, 0);
}

TP_TEST(Dtype, F16KnownValues) {
  TP_CHECK_INT_EQ(tp_f32_to_f16(1.0f), 0x3c00);
  TP_CHECK_INT_EQ(tp_f32_to_f16(-2.0f), 0xc000);
  TP_CHECK_INT_EQ(tp_f32_to_f16(65504.0f), 0x7bff);
  TP_CHECK_INT_EQ(tp_f32_to_f16(65520.0f), 0x7c00); /* rounds to Inf */
  TP_CHECK_INT_EQ(tp_f32_to_f16(5.9604645e-8f), 0x0001); /* smallest subnormal */
  TP_CHECK_INT_EQ(tp_f32_to_f16(1e-9f), 0x0000);
  TP_CHECK_NEAR(tp_f16_to_f32(0x0001), 5.9604645e-8, 1e-15);
  TP_CHECK_NEAR(tp_f16_to_f32(0x3555), 0.333251953125, 0);
  TP_CHECK(isnan(tp_f16_to_f32(tp_f32_to_f16(NAN))));
  TP_CHECK(isinf(tp_f16_to_f32(0xfc00)) && tp_f16_to_f32(0xfc00) < 0);
}

TP_TEST(Dtype, F16RoundTripEveryHalf) {
  int bad = 0;
  for (uint32_t h = 0; h < 0x10000u; h++) {
    if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) continue; /* NaN payloads */
    if (tp_f32_to_f16(tp_f16_to_f32((uint16_t)h)) != h) bad++;
  }
  TP_CHECK_INT_EQ(bad, 0);
}

TP_TEST(Philox, KnownAnswers) {
  /* Random123's known-answer vectors for philox4x32-10 */
  uint32_t c0[4] = {0, 0, 0, 0}, k0[2] = {0, 0};
  tp_philox4x32_10(c0, k0);
  TP_CHECK_INT_EQ(c0[0], 0x6627e8d5u);
  TP_CHECK_INT_EQ(c0[1], 0xe169c58du);
  TP_CHECK_INT_EQ(c0[2], 0xbc57ac4cu);
  TP_CHECK_INT_EQ(c0[3], 0x9b00dbd8u);
  uint32_t c1[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
  uint32_t k1[2] = {0xffffffffu, 0xffffffffu};
  tp_philox4x32_10(c1, k1);
  TP_CHECK_INT_EQ(c1[0], 0x408f276du);
  TP_CHECK_INT_EQ(c1[1], 0x41c83b0eu);
  TP_CHECK_INT_EQ(c1[2], 0xa20bc7c6u);
  TP_CHECK_INT_EQ(c1[3], 0x6d5451fdu);
}

TP_TEST(Philox, UniformInRangeAndMeanHalf) {
  double sum = 0;
  for (uint64_t i = 0; i < 100000; i++) {
    float u = tp_philox_uniform(42, i);
    if (u < 0.0f || u >= 1.0f) {
      TP_FAILF("uniform %g out of [0, 1) at %llu", u, (unsigned long long)i);
      return;
    }
    sum += u;
  }
  TP_CHECK_NEAR(sum / 100000.0, 0.5, 0.005);
}
