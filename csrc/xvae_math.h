// Math shared by the CPU and CUDA kernels (SPEC.md). Header-only.
//
// Every formula is written once as a template over the arithmetic type T. The CPU kernels instantiate
// it with at::vec::Vectorized<acc_t> (overloads of the primitives in cpu/vec_primitives.h), the scalar
// tails and the CUDA kernels with float or double (the primitives below).
#pragma once

#include <c10/macros/Macros.h>
#include <ATen/core/PhiloxRNGEngine.h>

#include <cmath>
#include <cstdint>

#if !defined(__CUDACC__)
#include "cpu/vec_primitives.h"
#endif

namespace xvae {

// ---------------------------------------------------------------------------------------------------
// Scalar primitives (host and device). The Vectorized overloads live in cpu/vec_primitives.h.
// ---------------------------------------------------------------------------------------------------
C10_HOST_DEVICE inline float xexp(float x) { return ::expf(x); }
C10_HOST_DEVICE inline double xexp(double x) { return ::exp(x); }
C10_HOST_DEVICE inline float xlog(float x) { return ::logf(x); }
C10_HOST_DEVICE inline double xlog(double x) { return ::log(x); }
C10_HOST_DEVICE inline float xlog1p(float x) { return ::log1pf(x); }
C10_HOST_DEVICE inline double xlog1p(double x) { return ::log1p(x); }
C10_HOST_DEVICE inline float xsqrt(float x) { return ::sqrtf(x); }
C10_HOST_DEVICE inline double xsqrt(double x) { return ::sqrt(x); }
C10_HOST_DEVICE inline float xsin(float x) { return ::sinf(x); }
C10_HOST_DEVICE inline double xsin(double x) { return ::sin(x); }
C10_HOST_DEVICE inline float xcos(float x) { return ::cosf(x); }
C10_HOST_DEVICE inline double xcos(double x) { return ::cos(x); }
C10_HOST_DEVICE inline void xsincos(float x, float* s, float* c) {
#if defined(__CUDA_ARCH__)
  ::sincosf(x, s, c);
#else
  *s = ::sinf(x);
  *c = ::cosf(x);
#endif
}
C10_HOST_DEVICE inline void xsincos(double x, double* s, double* c) {
#if defined(__CUDA_ARCH__)
  ::sincos(x, s, c);
#else
  *s = ::sin(x);
  *c = ::cos(x);
#endif
}
C10_HOST_DEVICE inline float xabs(float x) { return ::fabsf(x); }
C10_HOST_DEVICE inline double xabs(double x) { return ::fabs(x); }
C10_HOST_DEVICE inline float xmax(float a, float b) { return a > b ? a : b; }
C10_HOST_DEVICE inline double xmax(double a, double b) { return a > b ? a : b; }
// where(a < b, x, y)
C10_HOST_DEVICE inline float where_lt(float a, float b, float x, float y) { return a < b ? x : y; }
C10_HOST_DEVICE inline double where_lt(double a, double b, double x, double y) { return a < b ? x : y; }

// ---------------------------------------------------------------------------------------------------
// Responsibilities r[i,k] = softplus(l[i,k]) / sum_j softplus(l[i,j])  (SPEC, Eq. 10)
//
// softplus underflows for very negative logits (softplus(-100) ~ 4e-44 is a float32 denormal), so
// each row is scaled by exp(-c) with c = min(max_j l[i,j], 0): the scale cancels in r and keeps the
// largest term O(1). Rows with a non-negative maximum (c = 0) use softplus and sigmoid directly.
// ---------------------------------------------------------------------------------------------------
template <typename T>
C10_HOST_DEVICE inline T softplus(T x) {
  return xmax(x, T(0)) + xlog1p(xexp(-xabs(x)));
}

template <typename T>
C10_HOST_DEVICE inline T sigmoid(T x) {
  return T(1) / (T(1) + xexp(-x));
}

// softplus(x), and its derivative sigmoid(x) into *sig, from one exponential t = exp(-|x|):
// softplus = max(x, 0) + log1p(t), sigmoid = (x < 0 ? t : 1) / (1 + t).
template <typename T>
C10_HOST_DEVICE inline T softplus_and_sigmoid(T x, T* sig) {
  const T t = xexp(-xabs(x));
  *sig = where_lt(x, T(0), t, T(1)) / (T(1) + t);
  return xmax(x, T(0)) + xlog1p(t);
}

// softplus(l) * exp(-c) for c < 0 (then l <= c < 0): exp(l - c) * log1p(u) / u with u = exp(l) < 1.
template <typename T>
C10_HOST_DEVICE inline T scaled_softplus_neg(T l, T c) {
  T u = xexp(l);
  T ratio = where_lt(u, T(1e-4), T(1) - T(0.5) * u, xlog1p(u) / u);
  return xexp(l - c) * ratio;
}

// sigmoid(l) * exp(-c) for c < 0: exp(l - c) / (1 + exp(l)).
template <typename T>
C10_HOST_DEVICE inline T scaled_sigmoid_neg(T l, T c) {
  return xexp(l - c) / (T(1) + xexp(l));
}

// ---------------------------------------------------------------------------------------------------
// Univariate Gaussian KL  KLN(mu, sigma; m, s) = log(s/sigma) + (sigma^2 + (mu-m)^2) / (2 s^2) - 1/2
// with sigma^2 = exp(logvar). Per-coordinate constants are precomputed: log_s and inv_s2 = 1/s^2.
// The variance ratio sigma^2 / (2 s^2) is one exponential, exp(logvar - 2 log s - log 2): exp(logvar)
// alone overflows float32 from logvar = 88.7, where the ratio (and the KL) may still be finite.
// ---------------------------------------------------------------------------------------------------
template <typename T>
C10_HOST_DEVICE inline T half_var_ratio(T logvar, T log_s) {
  return xexp(logvar - T(2) * log_s - T(0.69314718055994530942));
}

template <typename T>
C10_HOST_DEVICE inline T kln(T mu, T logvar, T m, T log_s, T inv_s2) {
  T d = mu - m;
  return log_s - T(0.5) * logvar + half_var_ratio(logvar, log_s) + T(0.5) * d * d * inv_s2 - T(0.5);
}

// d KLN / d mu
template <typename T>
C10_HOST_DEVICE inline T kln_grad_mu(T mu, T m, T inv_s2) {
  return (mu - m) * inv_s2;
}

// d KLN / d logvar
template <typename T>
C10_HOST_DEVICE inline T kln_grad_logvar(T logvar, T log_s) {
  return half_var_ratio(logvar, log_s) - T(0.5);
}

// ---------------------------------------------------------------------------------------------------
// Routed-transport plans: one int32 code per latent coordinate.
//   bits 0-1 route (home/prior/posterior), bit 2 tie (row), bits 3-4 source (prior/prior_home/
//   posterior), bit 5 mode (direct), bits 8.. the coordinate's column in the saved component index
//   (only meaningful for posterior sources).
// The Python side (xvae_fast/plans.py) builds the same codes.
// ---------------------------------------------------------------------------------------------------
enum : int32_t { kRouteHome = 0, kRoutePrior = 1, kRoutePosterior = 2 };
enum : int32_t { kSourcePrior = 0, kSourcePriorHome = 1, kSourcePosterior = 2 };

C10_HOST_DEVICE inline int32_t plan_route(int32_t code) { return code & 3; }
C10_HOST_DEVICE inline bool plan_tie_row(int32_t code) { return (code >> 2) & 1; }
C10_HOST_DEVICE inline int32_t plan_source(int32_t code) { return (code >> 3) & 3; }
C10_HOST_DEVICE inline bool plan_direct(int32_t code) { return (code >> 5) & 1; }
C10_HOST_DEVICE inline int32_t plan_slot(int32_t code) { return code >> 8; }

// ---------------------------------------------------------------------------------------------------
// Counter-based random numbers (Philox 4x32-10, torch's engine), keyed by (seed, offset).
//
// For an R x K draw, element e = i*K + k belongs to pair p = e / 2; one Philox block per pair (counter
// = pair index as the subsequence) gives four 32-bit words: words 0 and 1 make two normals by
// Box-Muller (lane 0 takes the cosine, lane 1 the sine), words 2 and 3 are the two elements' uniforms
// for per-element categorical draws. Per-row uniforms (tie = row, per-row sampling) come from the
// subsequence 2^63 + i. Nothing depends on thread count or launch shape.
// ---------------------------------------------------------------------------------------------------
constexpr uint64_t kRowStream = uint64_t(1) << 63;
constexpr double kTwoPi = 6.283185307179586476925286766559;

struct PairWords {
  uint32_t w[4];
};

C10_HOST_DEVICE inline PairWords philox_pair(uint64_t seed, uint64_t offset, uint64_t pair) {
  at::Philox4_32 engine(seed, pair, offset);
  PairWords out;
  out.w[0] = engine();
  out.w[1] = engine();
  out.w[2] = engine();
  out.w[3] = engine();
  return out;
}

C10_HOST_DEVICE inline uint32_t philox_row_word(uint64_t seed, uint64_t offset, uint64_t row) {
  at::Philox4_32 engine(seed, kRowStream | row, offset);
  return engine();
}

// A uniform in (0, 1) from 32 bits, exactly representable in double (the categorical draws compare
// it against a float64 CDF, identically on every backend and in the Python reference).
C10_HOST_DEVICE inline double uniform_open(uint32_t x) {
  return (static_cast<double>(x) + 0.5) * 2.3283064365386962890625e-10;  // 2^-32
}

// Box-Muller inputs in the working precision: radius^2 = -2 log(u1), angle = 2 pi u2, u1 in (0, 1].
template <typename acc_t>
C10_HOST_DEVICE inline acc_t box_muller_u1(uint32_t x);
template <>
C10_HOST_DEVICE inline float box_muller_u1<float>(uint32_t x) {
  return (static_cast<float>(x >> 8) + 1.0f) * 5.9604644775390625e-08f;  // (0, 1], 2^-24 steps
}
template <>
C10_HOST_DEVICE inline double box_muller_u1<double>(uint32_t x) {
  return (static_cast<double>(x) + 1.0) * 2.3283064365386962890625e-10;
}
template <typename acc_t>
C10_HOST_DEVICE inline acc_t box_muller_angle(uint32_t x) {
  return static_cast<acc_t>(uniform_open(x) * kTwoPi);
}
// Box-Muller radius sqrt(-2 log u1); the pair's normals are radius*cos(angle), radius*sin(angle).
template <typename T>
C10_HOST_DEVICE inline T box_muller_radius(T u1) {
  return xsqrt(T(-2) * xlog(u1));
}

// ---------------------------------------------------------------------------------------------------
// Categorical draws by inverse CDF: the component is the first c with cdf[c] > u * cdf[C-1]
// (torch.searchsorted(cdf, u * total, right=True) in the reference). A guide table of G = 8 C
// buckets, guide[j] = first c with cdf[c] > (j / G) * total, makes the search O(1): a bucket holds
// a CDF step with probability at most 1/8, so the walk below rarely moves. The two loops correct any
// start the guide gets wrong by rounding, so the result never depends on it.
// ---------------------------------------------------------------------------------------------------
constexpr int32_t kGuideBucketsPerComponent = 8;

struct CategoricalTable {
  const double* cdf;     // (C,) cumulative weights, float64
  const int32_t* guide;  // (G,) guide table, G = kGuideBucketsPerComponent * C
};

C10_HOST_DEVICE inline int32_t sample_categorical(CategoricalTable t, int32_t C, double u) {
  const double* cdf = t.cdf;
  const int32_t G = kGuideBucketsPerComponent * C;
  double target = u * cdf[C - 1];
  int32_t j = static_cast<int32_t>(u * G);
  j = j < G ? j : G - 1;
  int32_t c = t.guide[j];
  while (c < C - 1 && cdf[c] <= target) ++c;
  while (c > 0 && cdf[c - 1] > target) --c;
  return c;
}

// ---------------------------------------------------------------------------------------------------
// Transport (Eq. 11): z = mu + sigma / s_k * (eps - m_k), eps the routed source noise.
// ---------------------------------------------------------------------------------------------------
template <typename T>
C10_HOST_DEVICE inline T transport(T mu, T logvar, T eps, T m_k, T inv_s_k) {
  return mu + xexp(T(0.5) * logvar) * inv_s_k * (eps - m_k);
}

// Step 1: the component of element (i, k) under its plan code (C == K).
C10_HOST_DEVICE inline int32_t routed_component(int32_t code, int32_t k, int32_t K,
                                                CategoricalTable tab_p, CategoricalTable tab_q,
                                                double u_elem, double u_row) {
  const int32_t route = plan_route(code);
  if (route == kRouteHome) return k;
  const double u = plan_tie_row(code) ? u_row : u_elem;
  return sample_categorical(route == kRoutePrior ? tab_p : tab_q, K, u);
}

// Steps 2-3: the source noise eps for component c, from the normal eta. M and S are the prior's
// means and stds (C x K row-major); mu_row and lv_row the row's posterior (any input dtype).
template <typename acc_t, typename in_t>
C10_HOST_DEVICE inline acc_t routed_source_noise(int32_t code, int32_t c, int32_t k, int32_t K,
                                                 const acc_t* M, const acc_t* S,
                                                 const in_t* mu_row, const in_t* lv_row,
                                                 acc_t eta) {
  const int32_t source = plan_source(code);
  if (source == kSourcePrior) return M[c * K + k] + S[c * K + k] * eta;
  if (source == kSourcePriorHome) return M[c * K + c] + S[c * K + c] * eta;
  return static_cast<acc_t>(mu_row[c]) + xexp(acc_t(0.5) * static_cast<acc_t>(lv_row[c])) * eta;
}

// One element of routed transport (SPEC steps 1-4); m_diag and inv_s_diag hold m_k and 1/s_k.
// Writes the component used to *c_out. (The CPU kernel runs the same steps, step 4 vectorised.)
template <typename acc_t, typename in_t>
C10_HOST_DEVICE inline acc_t routed_value(int32_t code, int32_t k, int32_t K, const in_t* mu_row,
                                          const in_t* lv_row, const acc_t* M, const acc_t* S,
                                          const acc_t* m_diag, const acc_t* inv_s_diag,
                                          CategoricalTable tab_p, CategoricalTable tab_q, acc_t eta,
                                          double u_elem, double u_row, int32_t* c_out) {
  const int32_t c = routed_component(code, k, K, tab_p, tab_q, u_elem, u_row);
  *c_out = c;
  const acc_t eps = routed_source_noise(code, c, k, K, M, S, mu_row, lv_row, eta);
  if (plan_direct(code)) return eps;
  return transport(static_cast<acc_t>(mu_row[k]), static_cast<acc_t>(lv_row[k]), eps, m_diag[k],
                   inv_s_diag[k]);
}

// The posterior column that z[i,k] depends on (it receives dz/dmu = 1 and dz/dlogvar = (z - mu)/2),
// or -1 when z[i,k] does not depend on the posterior (direct draw from a prior source).
template <typename comp_t>
C10_HOST_DEVICE inline int32_t routed_grad_column(int32_t code, int32_t k, const comp_t* comp_row) {
  if (!plan_direct(code)) return k;
  if (plan_source(code) == kSourcePosterior) return static_cast<int32_t>(comp_row[plan_slot(code)]);
  return -1;
}

// Prior sample (Eqs. 20-21): z = M[c,k] + alpha * S[c,k] * eta.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t prior_value(const acc_t* M, const acc_t* S, int32_t c, int32_t k,
                                         int32_t K, acc_t alpha, acc_t eta) {
  return M[c * K + k] + alpha * S[c * K + k] * eta;
}

}  // namespace xvae
