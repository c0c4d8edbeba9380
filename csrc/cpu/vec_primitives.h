// Vectorized (CPU SIMD) overloads of the primitives xvae_math.h's formulas are written in. Included
// by xvae_math.h itself on the host, before its templates, so ordinary lookup finds them.
#pragma once

#include <ATen/cpu/vec/vec.h>

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

}  // namespace xvae

