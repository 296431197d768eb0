/* tensorplug/philox.h — Philox4x32-10 counter-based RNG (Salmon et al. 2011).
 * Header-only so every backend (C, CUDA, GLSL ports) computes the same bits:
 * a (seed, counter) pair always gives the same number on every device. */
#pragma once
#include <stdint.h>

static inline void tp_philox4x32_10(uint32_t ctr[4], uint32_t key[2]) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  uint32_t k0 = key[0], k1 = key[1];
  for (int r = 0; r < 10; r++) {
    uint64_t p0 = (uint64_t)M0 * ctr[0], p1 = (uint64_t)M1 * ctr[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t n0 = hi1 ^ ctr[1] ^ k0, n2 = hi0 ^ ctr[3] ^ k1;
    ctr[0] = n0; ctr[1] = lo1; ctr[2] = n2; ctr[3] = lo0;
    k0 += W0; k1 += W1;
  }
}

/* Uniform in [0, 1): first word of Philox(counter = (i lo, i hi, 0, 0), key = seed). */
static inline float tp_philox_uniform(uint64_t seed, uint64_t i) {
  uint32_t ctr[4] = {(uint32_t)i, (uint32_t)(i >> 32), 0u, 0u};
  uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  tp_philox4x32_10(ctr, key);
  return (float)(ctr[0] >> 8) * (1.0f / 16777216.0f);
}
