// Vectorized (CPU SIMD) overloads of the primitives xvae_math.h's formulas are written in. Included
// by xvae_math.h itself on the host, before its templates, so ordinary lookup finds them.
#pragma once

#include <ATen/cpu/vec/vec.h>
#if defined(CPU_CAPABILITY_AVX2)
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

