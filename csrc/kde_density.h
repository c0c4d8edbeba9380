// Isotropic Gaussian kernel density estimate (op kde_log_prob), shared by the CPU and CUDA kernels.
//
//   s[i,j]   = -||z_i - c_j||^2 / (2 h^2)                    (the scores; s[i,i] = -inf with exclude_self)
//   lse_i    = logsumexp_j s[i,j]
//   log q_i  = lse_i - log m' - d log h - (d/2) log 2 pi     (m' = m, or m - 1 with exclude_self)
//   d log q_i / d z_i = -(z_i - sum_j r[i,j] c_j) / h^2,    r[i,.] = softmax_j s[i,.]
//
// With one bandwidth the scores are a matrix product: after a shared shift t (the centres' mean; it
// cancels in z - c) with z' = z - t, c' = c - t,
//   s[i,j] = (z'_i . c'_j - ||z'_i||^2 / 2 - ||c'_j||^2 / 2) / h^2,
// one fused multiply-add per (row, centre, coordinate) against three for the diagonal mixture's
// direct form, and the backward's sum_j w[i,j] c'_j is a second product. The expanded square loses
// digits when ||z'|| or ||c'|| is large against ||z - c||: the rounding error of s[i,j] is about
// g (||z'_i|| + ||c'_j||)^2 / (2 h^2), g = sqrt(d) eps. With ||c'_j|| <= ||z'_i|| + ||z_i - c_j||
// that is at most g (4 ||z'_i||^2 / h^2 + 2 (s_max - s[i,j]) + 2 |s_max|), s_max the row's largest
// score: for the terms within T = 40 of s_max (the rest weigh under e^-40) at most g A_i with
// A_i = 4 ||z'_i||^2 / h^2 + 2 T + 2 |s_max|, and the terms further down stay negligible. Each row
// checks g A_i against its own log q (kde_expanded_ok) and, where it is too large (points far off
// the centres' shift relative to h: clusters far apart, a far query), is computed in the direct
// form (z_i - c_j)^2 from the unshifted inputs instead, so every row keeps its dtype's relative
// accuracy (the bound: 128 eps of log q).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "mixture_density.h"

namespace xvae {

// log q_i - lse_i: the normalisation -log m' - d log h - (d/2) log 2 pi.
template <typename T>
C10_HOST_DEVICE inline T kde_const(int64_t m_eff, T log_h, int64_t d) {
  return -xlog(T(m_eff)) - T(d) * log_h - T(0.5) * T(d) * T(kLog2Pi);
}

// The expanded-square score from the dot product z'.c' and the squared norms zn = ||z'||^2,
// cn = ||c'||^2 (cn = +inf on padding gives -inf).
template <typename T>
C10_HOST_DEVICE inline T kde_score_expanded(T dot, T zn, T cn, T inv_h2) {
  return (dot - T(0.5) * (zn + cn)) * inv_h2;
}

// The direct score from the squared distance ||z - c||^2.
template <typename T>
C10_HOST_DEVICE inline T kde_score_direct(T sq, T inv_h2) {
  return T(-0.5) * sq * inv_h2;
}

// Whether a row's expanded-square scores are accurate enough: the rounding error bound g A_i above,
// in units of eps, within 128 max(1, |log q|). zn = ||z'_i||^2, s_max the row's largest score; also
// false for a non-finite log q.
template <typename T>
C10_HOST_DEVICE inline bool kde_expanded_ok(T zn, T s_max, T inv_h2, T log_q, int64_t d) {
  const T err = xsqrt(T(d)) * (T(4) * zn * inv_h2 + T(2 * 40) + T(2) * xabs(s_max));
  const T mag = xabs(log_q);
  return mag == mag && mag < std::numeric_limits<T>::infinity() &&
         err <= T(128) * (mag > T(1) ? mag : T(1));
}

// d log q / d z for one coordinate from W = sum_j w[i,j] and the w-weighted sum sum_j w[i,j] c'_j
// (expanded form, shifted coordinates), or from the direct sum sum_j w[i,j] (z_i - c_j).
template <typename T>
C10_HOST_DEVICE inline T kde_dz_expanded(T W, T z_shifted, T wc, T inv_h2) {
  return -(W * z_shifted - wc) * inv_h2;
}
template <typename T>
C10_HOST_DEVICE inline T kde_dz_direct(T wdiff, T inv_h2) {
  return -wdiff * inv_h2;
}

}  // namespace xvae
