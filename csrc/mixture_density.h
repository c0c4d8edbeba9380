// Diagonal Gaussian mixture log-density (op mixture_log_prob), shared by the CPU and CUDA kernels.
//
//   joint[n,c] = log_w[c] - 1/2 (d log 2 pi + sum_j lv[c,j]) - 1/2 sum_j (z[n,j] - m[c,j])^2 p[c,j]
//   log p(z_n) = logsumexp_c joint[n,c],   r[n,c] = exp(joint[n,c] - log p(z_n))
//
// with the precision p = exp(-lv). The per-component constant (the first two terms) and p are
// precomputed once per call, so the inner loop is one subtract and one fused multiply-add per
// (row, component, coordinate). The square (z - m)^2 is kept in that form (not expanded into
// z^2 p - 2 z m p + m^2 p as a matrix product would) so float32 keeps its precision when z sits
// far from the origin but close to a mean.
//
// Backward, with upstream g[n] on log p and optionally G[n,c] on r:
//   w[n,c]   = r[n,c] (g[n] + G[n,c] - sum_c' r[n,c'] G[n,c'])       (d loss / d joint[n,c])
//   dz[n,j]  = -sum_c w[n,c] (z[n,j] - m[c,j]) p[c,j]
//   dm[c,j]  =  p[c,j] sum_n w[n,c] (z[n,j] - m[c,j])
//   dlv[c,j] =  1/2 (p[c,j] sum_n w[n,c] (z[n,j] - m[c,j])^2 - sum_n w[n,c])
//   dlog_w[c] = sum_n w[n,c]
#pragma once

#include <limits>

#include "xvae_math.h"

namespace xvae {

constexpr double kLog2Pi = 1.8378770664093454835606594728112;

// The component constant log_w - 1/2 (d log 2 pi + sum_j lv[c,j]); sum_lv is that sum.
template <typename T>
C10_HOST_DEVICE inline T mixture_component_const(T log_w, T sum_lv, int64_t d) {
  return log_w - T(0.5) * (T(kLog2Pi) * T(d) + sum_lv);
}

// One coordinate's contribution to the quadratic form: acc + (z - m)^2 p.
template <typename T>
C10_HOST_DEVICE inline T mixture_quad_step(T z, T m, T p, T acc) {
  const T diff = z - m;
  return diff * diff * p + acc;
}

// joint[n,c] from the component constant and the finished quadratic form.
template <typename T>
C10_HOST_DEVICE inline T mixture_joint(T comp_const, T quad) {
  return comp_const - T(0.5) * quad;
}

// Online logsumexp state (as in attention kernels): running max, the sum of exp(x - max) and the
// sum of exp(x - max) G for an optional per-term weight G (the upstream gradient on r, whose
// r-weighted mean the backward needs). Absorbs -inf terms (zero-weight components) without NaN.
template <typename T>
struct OnlineLogSumExp {
  T max = -std::numeric_limits<T>::infinity();
  T sum = T(0);
  T sum_g = T(0);
  C10_HOST_DEVICE inline void add(T x, T G = T(0)) {
    if (x > max) {
      const T scale = xexp(max - x);
      sum = sum * scale + T(1);
      sum_g = sum_g * scale + G;
      max = x;
    } else if (x != -std::numeric_limits<T>::infinity()) {
      const T e = xexp(x - max);
      sum += e;
      sum_g += e * G;
    }
  }
  C10_HOST_DEVICE inline T value() const { return max + xlog(sum); }
  C10_HOST_DEVICE inline T mean_g() const { return sum_g / sum; }
};

// d loss / d joint for one (row, component) from the responsibility r, the upstream g on log p,
// and G on r with its row mean rG = sum_c r G (pass G = rG = 0 when r has no upstream gradient).
template <typename T>
C10_HOST_DEVICE inline T mixture_joint_grad(T r, T g, T G, T rG) {
  return r * (g + G - rG);
}

// Per-coordinate gradient pieces at one (row, component, coordinate), given the joint weight w:
// dz gains -w diff p; the mean and log-variance accumulators gain w diff and w diff^2.
template <typename T>
C10_HOST_DEVICE inline T mixture_dz_step(T z, T m, T p, T w, T dz) {
  return dz - w * (z - m) * p;
}
template <typename T>
C10_HOST_DEVICE inline void mixture_param_step(T z, T m, T w, T* acc_m, T* acc_q) {
  const T diff = z - m;
  const T wd = w * diff;
  *acc_m = *acc_m + wd;
  *acc_q = *acc_q + wd * diff;
}

// Final parameter gradients from the accumulators over rows: acc_m = sum_n w diff,
// acc_q = sum_n w diff^2, wsum = sum_n w.
template <typename T>
C10_HOST_DEVICE inline T mixture_mean_grad(T p, T acc_m) {
  return p * acc_m;
}
template <typename T>
C10_HOST_DEVICE inline T mixture_logvar_grad(T p, T acc_q, T wsum) {
  return T(0.5) * (p * acc_q - wsum);
}

}  // namespace xvae
