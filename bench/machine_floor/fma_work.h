// A fixed amount of floating-point work that stays in registers: eight
// independent chains of vector multiply-adds (GCC vector extensions, so
// -march=native picks AVX-512 where the CPU has it). Shared by the two
// probes of bench/machine_floor.py.
#pragma once

typedef float floor_v16 __attribute__((vector_size(64)));

static inline float floor_fma_work(long long iterations) {
  floor_v16 acc[8];
  const floor_v16 scale = {1.0001f, 1.0001f, 1.0001f, 1.0001f, 1.0001f, 1.0001f, 1.0001f, 1.0001f,
                           1.0001f, 1.0001f, 1.0001f, 1.0001f, 1.0001f, 1.0001f, 1.0001f, 1.0001f};
  for (int j = 0; j < 8; ++j) acc[j] = scale * (float)j;
  for (long long i = 0; i < iterations; ++i) {
    for (int j = 0; j < 8; ++j) acc[j] = acc[j] * scale + scale;
  }
  float sum = 0.0f;
  for (int j = 0; j < 8; ++j) {
    for (int k = 0; k < 16; ++k) sum += acc[j][k];
  }
  return sum;
}
