// Shared AVX-512 helpers for the CPU kernels: widening loads of a storage dtype to float32, the matching
// narrowing stores, and a vectorized exp. Every user also has a scalar path for CPUs without AVX-512.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace sloserve {

// True when every value of a contiguous int64 tensor lies in [low, high]. A plain loop over the data:
// these checks run once per layer, where two ATen reductions and .item() calls cost more than the loop.
inline bool all_within(const at::Tensor& values, int64_t low, int64_t high) {
  const int64_t* data = values.data_ptr<int64_t>();
  for (int64_t i = 0, n = values.numel(); i < n; ++i)
    if (data[i] < low || data[i] > high) return false;
  return true;
}

}  // namespace sloserve

#if defined(__AVX512F__)
#include <immintrin.h>

namespace sloserve {

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const c10::BFloat16* p) {  // bf16 is the top half of a float32: widen and shift
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}
inline __m512 load16(const c10::Half* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }

inline void store16(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
inline void store16(c10::Half* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
inline void store16(c10::BFloat16* p, __m512 v) {  // round to nearest even, as c10::BFloat16 does (NaN aside)
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(_mm512_srli_epi32(rounded, 16)));
}

// e^x: range reduction to x = n ln2 + r with |r| <= ln2/2, a degree-6 Taylor polynomial for e^r (relative
// error ~1e-7), scalef by 2^n. Inputs are clamped to [-87, 88].
inline __m512 exp16(__m512 x) {
  const __m512 v = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693147181f), v);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.0f / 720), r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, k);
}

}  // namespace sloserve
#endif
