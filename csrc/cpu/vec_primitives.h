// Vectorized (CPU SIMD) overloads of the primitives xvae_math.h's formulas are written in. Included
// by xvae_math.h itself on the host, before its templates, so ordinary lookup finds them.
#pragma once

#include <ATen/cpu/vec/vec.h>
#if defined(CPU_CAPABILITY_AVX2)
#include <immintrin.h>
#include <sleef.h>
#endif

namespace xvae {

template <typename T>
using Vec = at::vec::Vectorized<T>;

template <typename T>
inline Vec<T> xexp(const Vec<T>& x) { return x.exp(); }
template <typename T>
inline Vec<T> xlog(const Vec<T>& x) { return x.log(); }
template <typename T>
inline Vec<T> xlog1p(const Vec<T>& x) { return x.log1p(); }
template <typename T>
inline Vec<T> xsqrt(const Vec<T>& x) { return x.sqrt(); }
template <typename T>
inline Vec<T> xsin(const Vec<T>& x) { return x.sin(); }
template <typename T>
inline Vec<T> xcos(const Vec<T>& x) { return x.cos(); }
template <typename T>
inline Vec<T> xabs(const Vec<T>& x) { return x.abs(); }
template <typename T>
inline Vec<T> xmax(const Vec<T>& a, const Vec<T>& b) { return at::vec::maximum(a, b); }
template <typename T>
inline Vec<T> where_lt(const Vec<T>& a, const Vec<T>& b, const Vec<T>& x, const Vec<T>& y) {
  return Vec<T>::blendv(y, x, a < b);
}

#if defined(CPU_CAPABILITY_AVX2)
// float32 exp and log1p, inlined. Sleef's are out-of-line calls and the fused ops' main cost (an op
// spends most of its time in them: B = 4096, K = 256 is about 1M elements, cache-resident):
// measured 0.58 ns (exp) and 1.31 ns (log1p) per element against 0.41 and 0.35 here.
//
// exp: Cody-Waite reduction by ln 2 and Cephes' degree-5 polynomial for e^r (max error 1.01 ulp
// over the normal range, against Sleef u10's 0.56); 2^n is applied in two halves, so that results
// in the denormal range round once; inf above 88.72, 0 below -103.98, NaN stays NaN (MINPS and
// MAXPS return their second operand when one is NaN).
inline Vec<float> xexp(const Vec<float>& v) {
  const __m256 x = v;
  const __m256 xc = _mm256_max_ps(_mm256_set1_ps(-104.0f), _mm256_min_ps(_mm256_set1_ps(89.0f), x));
  const __m256 n = _mm256_floor_ps(
      _mm256_fmadd_ps(xc, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  return Vec<float>(_mm256_mul_ps(_mm256_mul_ps(y, s1), s2));
}

// log1p: the formulas call it on t in [0, 1] (softplus's log1p(exp(-|x|))): there
// s = t / (2 + t) <= 1/3 and log1p(t) = 2 atanh(s) = t - s (t - 2 s^2 Q(s^2)), Q the atanh series
// 1/3 + z/5 + ... to z^6 (max error 1.02 ulp). Any lane outside [0, 1] (or NaN): Sleef.
inline Vec<float> xlog1p(const Vec<float>& v) {
  const __m256 t = v;
  const __m256 in = _mm256_and_ps(_mm256_cmp_ps(t, _mm256_setzero_ps(), _CMP_GE_OQ),
                                  _mm256_cmp_ps(t, _mm256_set1_ps(1.0f), _CMP_LE_OQ));
  if (_mm256_movemask_ps(in) != 0xFF) return v.log1p();
  const __m256 s = _mm256_div_ps(t, _mm256_add_ps(_mm256_set1_ps(2.0f), t));
  const __m256 z = _mm256_mul_ps(s, s);
  __m256 q = _mm256_set1_ps(1.0f / 15);
  q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(1.0f / 13));
  q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(1.0f / 11));
  q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(1.0f / 9));
  q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(1.0f / 7));
  q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(1.0f / 5));
  q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(1.0f / 3));
  const __m256 inner = _mm256_fnmadd_ps(_mm256_mul_ps(_mm256_set1_ps(2.0f), z), q, t);
  return Vec<float>(_mm256_fnmadd_ps(s, inner, t));
}
#endif

// sin and cos of one argument (Box-Muller); AVX2 uses Sleef's joint sincos (3.5 ulp).
template <typename T>
inline void xsincos(const Vec<T>& x, Vec<T>* s, Vec<T>* c) {
  *s = x.sin();
  *c = x.cos();
}
#if defined(CPU_CAPABILITY_AVX2)
inline void xsincos(const Vec<float>& x, Vec<float>* s, Vec<float>* c) {
  const Sleef___m256_2 r = Sleef_sincosf8_u35(x);
  *s = Vec<float>(r.x);
  *c = Vec<float>(r.y);
}
inline void xsincos(const Vec<double>& x, Vec<double>* s, Vec<double>* c) {
  const Sleef___m256d_2 r = Sleef_sincosd4_u35(x);
  *s = Vec<double>(r.x);
  *c = Vec<double>(r.y);
}
#endif

}  // namespace xvae

