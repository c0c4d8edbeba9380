// Component KLs and the mixture bounds built on them (ops component_kl and mixture_bound, SPEC
// Revision 2), shared by the CPU and CUDA kernels.
//
// For a row's diagonal Gaussian posterior (mu, logvar) (K,) and the prior's components (M[c], S[c]):
//   D[i,c] = sum_k [ log S[c,k] - 1/2 logvar[i,k] + (e[i,k] + (mu[i,k] - M[c,k])^2) h[c,k] - 1/2 ]
//          = kc[c] + rc[i] + q[i,c],   q[i,c] = sum_k (e[i,k] + (mu[i,k] - M[c,k])^2) h[c,k]
// with e = exp(logvar), h = 1/(2 S^2), the component constant kc[c] = sum_k log S[c,k] - K/2 and
// the row constant rc[i] = -1/2 sum_k logvar[i,k]. The two constants are summed in double before
// they meet q, so float32 loses no more than one rounding of kc + rc. The square (mu - M)^2 is kept
// in that form: expanding it into mu^2 h - 2 mu M h + M^2 h (two matrix products) cancels away every
// digit in float32 when mu and M are both far from the origin (|mu| ~ 1e3, S ~ 1e-2).
//
// Bounds per row, with the prior's log-weights lw[c]:
//   tight:   total = -lse,  lse = logsumexp_c(lw[c] - D[c]),  r*[c] = exp(lw[c] - D[c] - lse),
//            gaussian = sum_c r* D,  categorical = sum_c r* (log r* - lw) = sum_c r* (-(D + lse))
//            (the last form is exact for zero-weight components, where r* = 0 and lw = -inf);
//   mixture: r = softplus(l) / sum softplus(l) (xvae_math.h, row-scaled, stable to l = -100),
//            categorical = sum_c r (log r - lw) (0 log 0 = 0), gaussian = sum_c r D, total = cat + gauss.
//
// Backward, with per-row upstream gradients g_t, g_c, g_g on total, categorical, gaussian:
//   tight:   w[c] = dL/dD[c] = r*[c] (g_t + g_g + (g_c - g_g)(D[c] - Dbar)),  Dbar = sum_c r* D;
//   mixture: w[c] = (g_t + g_g) r[c];  dL/dr[c] = (g_t + g_c)(log r[c] + 1 - lw[c]) + (g_t + g_g) D[c],
//            then dL/dl[c] = sigmoid(l[c]) / sum softplus (dL/dr[c] - sum_j r[j] dL/dr[j]);
//   component_kl: w = the upstream gradient of D.
// and then, from w (never to the prior):
//   dmu[i,k]     = sum_c w[c] (mu[i,k] - M[c,k]) / S[c,k]^2 = 2 sum_c w[c] h[c,k] (mu[i,k] - M[c,k])
//   dlogvar[i,k] = 1/2 (e[i,k] sum_c w[c] / S[c,k]^2 - sum_c w[c]) = e[i,k] sum_c w[c] h[c,k] - 1/2 sum_c w[c]
// (mu - M) is again formed directly, never as mu sum(w h) - sum(w h M), which cancels the same way.
//
// Every formula is a template over T: float or double (scalar tails, CUDA), or at::vec::Vectorized
// (CPU lanes, through the overloads of cpu/vec_primitives.h and xfma below).
#pragma once

#include <limits>

#include "xvae_math.h"

namespace xvae {

// Fused multiply-add a * b + c. CUDA: one rounding (fmaf / fma). Host scalars: a * b + c (std::fma
// is a library call without -mfma). CPU lanes: at::vec::fmadd (one FMA instruction with AVX2).
C10_HOST_DEVICE inline float xfma(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return ::fmaf(a, b, c);
#else
  return a * b + c;
#endif
}
C10_HOST_DEVICE inline double xfma(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return ::fma(a, b, c);
#else
  return a * b + c;
#endif
}
#if !defined(__CUDACC__)
template <typename T>
inline Vec<T> xfma(const Vec<T>& a, const Vec<T>& b, const Vec<T>& c) {
  return at::vec::fmadd(a, b, c);
}
#endif

// Kind codes of mixture_bound, as the op's `kind` string names them.
enum BoundKind : int { kBoundTight = 0, kBoundMixture = 1 };

// ---- component KL -----------------------------------------------------------------------------------
// h = 1 / (2 s^2), per component and coordinate.
template <typename T>
C10_HOST_DEVICE inline T ckl_half_precision(T s) {
  return T(0.5) / (s * s);
}

// One coordinate of the quadratic part: q + (e + (mu - m)^2) h.
template <typename T>
C10_HOST_DEVICE inline T ckl_quad_step(T mu, T e, T m, T h, T q) {
  const T d = mu - m;
  return xfma(xfma(d, d, e), h, q);
}

// D from the finished quadratic part and the (double) sum kc[c] + rc[i] of the two constants.
template <typename T>
C10_HOST_DEVICE inline T ckl_finish(T q, T consts) {
  return q + consts;
}

// Component constant kc = sum_k log s - K/2 from sum_k log s (in double).
C10_HOST_DEVICE inline double ckl_component_const(double sum_log_s, int64_t K) {
  return sum_log_s - 0.5 * static_cast<double>(K);
}

// Row constant rc = -1/2 sum_k logvar (in double).
C10_HOST_DEVICE inline double ckl_row_const(double sum_logvar) {
  return -0.5 * sum_logvar;
}

// ---- bounds -----------------------------------------------------------------------------------------
// tight: the categorical term of one component, r (log r - lw) = r (-(D + lse)); 0 where r = 0.
template <typename T>
C10_HOST_DEVICE inline T tight_categorical_term(T r, T D, T lse) {
  return -(r * (D + lse));
}

// mixture: r (log r - lw) with 0 log 0 = 0; log r floored at log(tiny) as in the reference. S is
// the scalar (lane) type.
template <typename S, typename T>
C10_HOST_DEVICE inline T mixture_categorical_term(T r, T lw) {
  const T tiny(std::numeric_limits<S>::min());
  return where_lt(T(0), r, r * (xlog(xmax(r, tiny)) - lw), T(0));
}

// tight: dL/dD = r (a + b (D - Dbar)) with a = g_t + g_g, b = g_c - g_g.
template <typename T>
C10_HOST_DEVICE inline T tight_kl_grad(T r, T D, T Dbar, T a, T b) {
  return r * xfma(b, D - Dbar, a);
}

// mixture: dL/dD = a r with a = g_t + g_g.
template <typename T>
C10_HOST_DEVICE inline T mixture_kl_grad(T r, T a) {
  return a * r;
}

// mixture: dL/dr = cg (log r + 1 - lw) + a D with cg = g_t + g_c, a = g_t + g_g (log r floored).
template <typename S, typename T>
C10_HOST_DEVICE inline T mixture_weight_grad(T r, T lw, T D, T cg, T a) {
  const T tiny(std::numeric_limits<S>::min());
  return xfma(cg, xlog(xmax(r, tiny)) + T(1) - lw, a * D);
}

// mixture: dL/dl from dL/dr through r = sp / sum sp: sig / sum sp (hr_c - sum_j r_j hr_j), where sig
// and sum sp carry the same row scale exp(-c) (xvae_math.h), passed as sig and inv_sum = 1/sum sp.
template <typename T>
C10_HOST_DEVICE inline T mixture_logit_grad(T sig, T inv_sum, T dr, T r_dot_dr) {
  return sig * inv_sum * (dr - r_dot_dr);
}

// ---- gradients to the posterior ---------------------------------------------------------------------
// One component's contribution at one coordinate: acc_m += w h (mu - m), acc_h += w h.
template <typename T>
C10_HOST_DEVICE inline void ckl_posterior_grad_step(T mu, T m, T h, T w, T* acc_m, T* acc_h) {
  const T wh = w * h;
  *acc_m = xfma(wh, mu - m, *acc_m);
  *acc_h = *acc_h + wh;
}

// dmu = 2 acc_m.
template <typename T>
C10_HOST_DEVICE inline T ckl_grad_mu(T acc_m) {
  return T(2) * acc_m;
}

// dlogvar = e acc_h - wsum / 2 with wsum = sum_c w.
template <typename T>
C10_HOST_DEVICE inline T ckl_grad_logvar(T e, T acc_h, T wsum) {
  return xfma(e, acc_h, T(-0.5) * wsum);
}

}  // namespace xvae
