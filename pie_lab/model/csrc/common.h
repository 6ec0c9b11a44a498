// What pie_lab's CPU kernels share: float conversion, a vectorisable exp, AVX-512 loads, the pool check.
// Compiled with -ffp-contract=off (model/cpu_kernels.py): RoPE and the K/V write round exactly as torch's
// separate ops do.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace pie_lab {

constexpr int64_t LANES = 16;   // partial sums kept apart so the compiler vectorises the reductions

template <typename T> inline float f32(T x) { return static_cast<float>(x); }

// e^x for x <= 88: 2^(x log2 e) as 2^round * 2^frac, frac in [-0.5, 0.5] by a degree-7 Taylor series
// (relative error below 1e-8). Plain arithmetic, so loops over it vectorise (libm's expf does not).
inline float fast_exp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float t = x * 1.44269504088896341f;
  const float r = (t + 12582912.0f) - 12582912.0f;           // round to nearest (1.5 * 2^23)
  const float f = (t - r) * 0.693147180559945309f;
  float p = 1.0f / 5040;
  p = p * f + 1.0f / 720;
  p = p * f + 1.0f / 120;
  p = p * f + 1.0f / 24;
  p = p * f + 1.0f / 6;
  p = p * f + 0.5f;
  p = p * f + 1.0f;
  p = p * f + 1.0f;
  const int32_t bits = (static_cast<int32_t>(r) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

#if defined(__AVX512F__)
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const c10::BFloat16* p) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}
#endif

inline void check_pool(const at::Tensor& pool, const char* what) {
  TORCH_CHECK(pool.dim() == 5 && pool.size(1) == 2, what, " must be [blocks, 2, block_size, kv_heads, head_dim], got ",
              pool.sizes());
  TORCH_CHECK(pool.is_contiguous(), what, " must be contiguous");
}

}  // namespace pie_lab
