// Component KLs and the mixture bounds on them (ops component_kl, mixture_bound), CUDA.
// Math: ../component_kl.h (the CPU kernels use the same formulas).
//
// Forward:  (1) per component (one block each): h = 1/(2 S^2) and kc = sum_k log S - K/2 (double);
//           (2) per row (one warp each): e = exp(logvar) and rc = -1/2 sum_k logvar (double);
//           (3) D (B, C) by 16 x 16 tiles of (rows, components), the K axis staged through shared
//               memory in 16-wide slices; each thread sums its own (row, component) in k order;
//           (4) mixture_bound: per row (one warp each) the weights and the three parts;
//           (5) mean / sum: one block adds the rows in a fixed order (in double).
// Backward: (1), (2) as above (without kc, rc); (3) per row (one warp each) w = dL/dD (B, C) and,
//           for kind mixture, the logits gradient; component_kl takes w as its upstream gradient;
//           (4) dmu, dlogvar (B, K) by 16 x 16 tiles of (rows, coordinates), the C axis staged
//               through shared memory; each thread sums its own (row, coordinate) in c order.
// No atomics anywhere: the results are deterministic. Nothing of size B x C x K is formed.
#include <torch/library.h>

#include <algorithm>

#include "../component_kl.h"
#include "cuda_common.cuh"

namespace xvae {
namespace cuda {
namespace {

constexpr int kTile = 16;  // 16 x 16 thread tiles of the D and posterior-gradient kernels

// (1) h (C, K) and, with kc != null, kc (C): one block per component.
template <typename acc_t>
__global__ void prior_tables_kernel(const acc_t* __restrict__ stds, int64_t C, int64_t K,
                                    acc_t* __restrict__ h, double* __restrict__ kc) {
  __shared__ double smem[kWarpsPerBlock];
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    double ls = 0;
    for (int64_t k = threadIdx.x; k < K; k += kThreads) {
      const acc_t s = stds[c * K + k];
      h[c * K + k] = ckl_half_precision(s);
      ls += ::log(static_cast<double>(s));
    }
    if (kc != nullptr) {
      const double total = block_sum(ls, smem);
      if (threadIdx.x == 0) kc[c] = ckl_component_const(total, K);
    }
  }
}

// (2) e = exp(logvar) (B, K) and, with rc != null, rc (B): one warp per row.
template <typename scalar_t, typename acc_t>
__global__ void posterior_rows_kernel(const scalar_t* __restrict__ logvar, int64_t B, int64_t K,
                                      acc_t* __restrict__ e, double* __restrict__ rc) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; i < B; i += warps) {
    double s = 0;
    for (int64_t k = lane; k < K; k += kWarp) {
      const acc_t v = ld<acc_t>(logvar, i * K + k);
      e[i * K + k] = xexp(v);
      s += static_cast<double>(v);
    }
    s = warp_sum(s);
    if (rc != nullptr && lane == 0) rc[i] = ckl_row_const(s);
  }
}

// (3) D[i, c] = kc[c] + rc[i] + sum_k (e + (mu - M)^2) h, into out (B, C) of out_t.
template <typename scalar_t, typename acc_t, typename out_t>
__global__ void component_kl_kernel(const scalar_t* __restrict__ mu, const acc_t* __restrict__ e,
                                    const double* __restrict__ rc, const acc_t* __restrict__ means,
                                    const acc_t* __restrict__ h, const double* __restrict__ kc,
                                    int64_t B, int64_t C, int64_t K, out_t* __restrict__ out) {
  __shared__ acc_t s_mu[kTile][kTile + 1], s_e[kTile][kTile + 1];
  __shared__ acc_t s_m[kTile][kTile + 1], s_h[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t i0 = int64_t(blockIdx.x) * kTile, c0 = int64_t(blockIdx.y) * kTile;
  const int64_t i = i0 + ty, c = c0 + tx;
  acc_t q = acc_t(0);
  for (int64_t k0 = 0; k0 < K; k0 += kTile) {
    // Thread (ty, tx) stages coordinate k0 + tx of row i0 + ty and of component c0 + ty.
    const int64_t k = k0 + tx;
    const int64_t ri = i0 + ty, cj = c0 + ty;
    const bool kin = k < K;
    s_mu[ty][tx] = kin && ri < B ? ld<acc_t>(mu, ri * K + k) : acc_t(0);
    s_e[ty][tx] = kin && ri < B ? e[ri * K + k] : acc_t(0);
    s_m[ty][tx] = kin && cj < C ? means[cj * K + k] : acc_t(0);
    s_h[ty][tx] = kin && cj < C ? h[cj * K + k] : acc_t(0);  // h = 0: padding adds nothing
    __syncthreads();
    const int n = K - k0 < kTile ? static_cast<int>(K - k0) : kTile;
    for (int kk = 0; kk < n; ++kk) q = ckl_quad_step(s_mu[ty][kk], s_e[ty][kk], s_m[tx][kk], s_h[tx][kk], q);
    __syncthreads();
  }
  if (i < B && c < C) out[i * C + c] = static_cast<out_t>(ckl_finish(q, static_cast<acc_t>(kc[c] + rc[i])));
}

// (4) forward rows of mixture_bound: per-row total, categorical, gaussian (acc) and the weights.
template <typename scalar_t, typename acc_t>
__global__ void bound_rows_kernel(const acc_t* __restrict__ D, const acc_t* __restrict__ lw,
                                  const scalar_t* __restrict__ logits, int kind, int64_t B,
                                  int64_t C, acc_t* __restrict__ rows, scalar_t* __restrict__ weights) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; i < B; i += warps) {
    const acc_t* Dr = D + i * C;
    acc_t g = acc_t(0), ca = acc_t(0), total;
    if (kind == kBoundTight) {
      acc_t mx = -std::numeric_limits<acc_t>::infinity();
      for (int64_t c = lane; c < C; c += kWarp) mx = xmax(mx, lw[c] - Dr[c]);
      mx = warp_max(mx);
      acc_t s = acc_t(0);
      for (int64_t c = lane; c < C; c += kWarp) s += xexp(lw[c] - Dr[c] - mx);
      s = warp_sum(s);
      const acc_t lse = mx + xlog(s), inv = acc_t(1) / s;
      for (int64_t c = lane; c < C; c += kWarp) {
        const acc_t r = xexp(lw[c] - Dr[c] - mx) * inv;
        g += r * Dr[c];
        ca += tight_categorical_term(r, Dr[c], lse);
        if (weights != nullptr) weights[i * C + c] = static_cast<scalar_t>(r);
      }
      g = warp_sum(g);
      ca = warp_sum(ca);
      total = -lse;
    } else {
      const scalar_t* l = logits + i * C;
      acc_t mx = -std::numeric_limits<acc_t>::infinity();
      for (int64_t c = lane; c < C; c += kWarp) mx = xmax(mx, ld<acc_t>(l, c));
      mx = warp_max(mx);
      const acc_t sc = acc_t(0) < mx ? acc_t(0) : mx;  // min(max, 0), as on the CPU
      acc_t s = acc_t(0);
      for (int64_t c = lane; c < C; c += kWarp) {
        const acc_t x = ld<acc_t>(l, c);
        s += sc < acc_t(0) ? scaled_softplus_neg(x, sc) : softplus(x);
      }
      const acc_t inv = acc_t(1) / warp_sum(s);
      for (int64_t c = lane; c < C; c += kWarp) {
        const acc_t x = ld<acc_t>(l, c);
        const acc_t r = (sc < acc_t(0) ? scaled_softplus_neg(x, sc) : softplus(x)) * inv;
        g += r * Dr[c];
        ca += mixture_categorical_term<acc_t>(r, lw[c]);
        if (weights != nullptr) weights[i * C + c] = static_cast<scalar_t>(r);
      }
      g = warp_sum(g);
      ca = warp_sum(ca);
      total = ca + g;
    }
    if (lane == 0) {
      rows[i] = total;
      rows[B + i] = ca;
      rows[2 * B + i] = g;
    }
  }
}

// (5) outputs from the per-row values: reduction none converts; mean / sum: one block, in double.
template <typename scalar_t, typename acc_t>
__global__ void reduce_rows_kernel(const acc_t* __restrict__ rows, int64_t B, int64_t reduction,
                                   scalar_t* __restrict__ total, scalar_t* __restrict__ cat,
                                   scalar_t* __restrict__ gauss) {
  scalar_t* outs[3] = {total, cat, gauss};
  if (reduction == kReduceNone) {
    for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < 3 * B;
         e += int64_t(gridDim.x) * blockDim.x)
      outs[e / B][e % B] = static_cast<scalar_t>(rows[e]);
    return;
  }
  __shared__ double smem[kWarpsPerBlock];
  for (int j = 0; j < 3; ++j) {
    double s = 0;
    for (int64_t i = threadIdx.x; i < B; i += kThreads) s += static_cast<double>(rows[j * B + i]);
    s = block_sum(s, smem);
    if (reduction == kReduceMean && B > 0) s /= static_cast<double>(B);
    if (threadIdx.x == 0) outs[j][0] = static_cast<scalar_t>(static_cast<acc_t>(s));
  }
}

// Backward (3): w = dL/dD (B, C) per row (one warp each); kind mixture also writes the logits
// gradient. Upstream gradients g_* are (B,) (per_row) or 0-dim, times `scale` (1/B for mean).
template <typename scalar_t, typename acc_t>
__global__ void bound_weights_kernel(const acc_t* __restrict__ D, const acc_t* __restrict__ lw,
                                     const scalar_t* __restrict__ logits, int kind,
                                     const acc_t* __restrict__ g_total,
                                     const acc_t* __restrict__ g_cat,
                                     const acc_t* __restrict__ g_gauss, bool per_row, acc_t scale,
                                     int64_t B, int64_t C, acc_t* __restrict__ w,
                                     scalar_t* __restrict__ d_logits) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; i < B; i += warps) {
    const int64_t j = per_row ? i : 0;
    const acc_t gt = g_total[j] * scale, gc = g_cat[j] * scale, gg = g_gauss[j] * scale;
    const acc_t* Dr = D + i * C;
    acc_t* wr = w + i * C;
    if (kind == kBoundTight) {
      acc_t mx = -std::numeric_limits<acc_t>::infinity();
      for (int64_t c = lane; c < C; c += kWarp) mx = xmax(mx, lw[c] - Dr[c]);
      mx = warp_max(mx);
      acc_t s = acc_t(0), sd = acc_t(0);
      for (int64_t c = lane; c < C; c += kWarp) {
        const acc_t ex = xexp(lw[c] - Dr[c] - mx);
        s += ex;
        sd += ex * Dr[c];
      }
      const acc_t inv = acc_t(1) / warp_sum(s);
      const acc_t Dbar = warp_sum(sd) * inv, a = gt + gg, b = gc - gg;
      for (int64_t c = lane; c < C; c += kWarp)
        wr[c] = tight_kl_grad(xexp(lw[c] - Dr[c] - mx) * inv, Dr[c], Dbar, a, b);
    } else {
      const scalar_t* l = logits + i * C;
      acc_t mx = -std::numeric_limits<acc_t>::infinity();
      for (int64_t c = lane; c < C; c += kWarp) mx = xmax(mx, ld<acc_t>(l, c));
      mx = warp_max(mx);
      const acc_t sc = acc_t(0) < mx ? acc_t(0) : mx;
      const bool scaled = sc < acc_t(0);
      acc_t s = acc_t(0);
      for (int64_t c = lane; c < C; c += kWarp) {
        const acc_t x = ld<acc_t>(l, c);
        s += scaled ? scaled_softplus_neg(x, sc) : softplus(x);
      }
      const acc_t inv = acc_t(1) / warp_sum(s), a = gt + gg, cg = gt + gc;
      acc_t rd = acc_t(0);
      for (int64_t c = lane; c < C; c += kWarp) {
        const acc_t x = ld<acc_t>(l, c);
        const acc_t r = (scaled ? scaled_softplus_neg(x, sc) : softplus(x)) * inv;
        rd += r * mixture_weight_grad<acc_t>(r, lw[c], Dr[c], cg, a);
      }
      rd = warp_sum(rd);
      for (int64_t c = lane; c < C; c += kWarp) {
        const acc_t x = ld<acc_t>(l, c);
        acc_t sig, sp;
        if (scaled) {
          sp = scaled_softplus_neg(x, sc);
          sig = scaled_sigmoid_neg(x, sc);
        } else {
          sp = softplus_and_sigmoid(x, &sig);
        }
        const acc_t r = sp * inv;
        const acc_t dr = mixture_weight_grad<acc_t>(r, lw[c], Dr[c], cg, a);
        d_logits[i * C + c] = static_cast<scalar_t>(mixture_logit_grad(sig, inv, dr, rd));
        wr[c] = mixture_kl_grad(r, a);
      }
    }
  }
}

// Backward (4): dmu, dlogvar from w (B, C): thread (ty, tx) owns row i0 + ty, coordinate k0 + tx.
template <typename scalar_t, typename acc_t>
__global__ void posterior_grad_kernel(const scalar_t* __restrict__ mu, const acc_t* __restrict__ e,
                                      const acc_t* __restrict__ w, const acc_t* __restrict__ means,
                                      const acc_t* __restrict__ h, int64_t B, int64_t C, int64_t K,
                                      scalar_t* __restrict__ d_mu, scalar_t* __restrict__ d_logvar) {
  __shared__ acc_t s_w[kTile][kTile + 1], s_m[kTile][kTile + 1], s_h[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t i0 = int64_t(blockIdx.x) * kTile, k0 = int64_t(blockIdx.y) * kTile;
  const int64_t i = i0 + ty, k = k0 + tx;
  const bool in = i < B && k < K;
  const acc_t m_ik = in ? ld<acc_t>(mu, i * K + k) : acc_t(0);
  acc_t am = acc_t(0), ah = acc_t(0), aw = acc_t(0);
  for (int64_t c0 = 0; c0 < C; c0 += kTile) {
    // Thread (ty, tx) stages w[i0 + ty, c0 + tx] and the tables at (c0 + ty, k0 + tx).
    const int64_t cw = c0 + tx, ct = c0 + ty;
    s_w[ty][tx] = i < B && cw < C ? w[i * C + cw] : acc_t(0);
    s_m[ty][tx] = ct < C && k < K ? means[ct * K + k] : acc_t(0);
    s_h[ty][tx] = ct < C && k < K ? h[ct * K + k] : acc_t(0);
    __syncthreads();
    const int n = C - c0 < kTile ? static_cast<int>(C - c0) : kTile;
    for (int cc = 0; cc < n; ++cc) {
      const acc_t wc = s_w[ty][cc];
      ckl_posterior_grad_step(m_ik, s_m[cc][tx], s_h[cc][tx], wc, &am, &ah);
      aw += wc;
    }
    __syncthreads();
  }
  if (in) {
    d_mu[i * K + k] = static_cast<scalar_t>(ckl_grad_mu(am));
    d_logvar[i * K + k] = static_cast<scalar_t>(ckl_grad_logvar(e[i * K + k], ah, aw));
  }
}

// Grid of 16 x 16 tiles: rows on x, columns (components or coordinates) on y, at least one each.
inline dim3 tiles(int64_t rows, int64_t cols) {
  const int64_t gx = std::max<int64_t>(1, (rows + kTile - 1) / kTile);
  const int64_t gy = std::max<int64_t>(1, (cols + kTile - 1) / kTile);
  TORCH_CHECK(gx <= std::numeric_limits<int32_t>::max() && gy <= 65535,
              "xvae_fast: component_kl / mixture_bound on CUDA support up to 2^35 rows and ",
              65535 * kTile, " components and coordinates, got ", rows, " x ", cols);
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
}

inline unsigned table_blocks(int64_t C) {
  return static_cast<unsigned>(C < kMaxBlocks ? (C > 0 ? C : 1) : kMaxBlocks);
}

// Prior and posterior tables; kc and rc only for the forward (with_consts).
template <typename scalar_t, typename acc_t>
void launch_tables(const at::Tensor& stds, const at::Tensor& logvar, int64_t B, int64_t C, int64_t K,
                   acc_t* h, double* kc, acc_t* e, double* rc, cudaStream_t stream) {
  prior_tables_kernel<acc_t><<<table_blocks(C), kThreads, 0, stream>>>(stds.data_ptr<acc_t>(), C,
                                                                        K, h, kc);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  posterior_rows_kernel<scalar_t, acc_t><<<grid_for(B, kWarpsPerBlock), kThreads, 0, stream>>>(
      logvar.data_ptr<scalar_t>(), B, K, e, rc);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor component_kl_cuda(const at::Tensor& mu_in, const at::Tensor& logvar_in,
                             const at::Tensor& means_in, const at::Tensor& stds_in) {
  check_component_kl_args(mu_in, logvar_in, means_in, stds_in);
  const int64_t B = mu_in.size(0), K = mu_in.size(1), C = means_in.size(0);
  const c10::cuda::CUDAGuard guard(mu_in.device());
  at::Tensor out = at::empty({B, C}, mu_in.options());
  if (B == 0) return out;
  auto mu = mu_in.contiguous(), logvar = logvar_in.contiguous();
  auto means = means_in.contiguous(), stds = stds_in.contiguous();
  const auto acc_opts = mu_in.options().dtype(acc_dtype_of(mu_in));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  XVAE_CUDA_DISPATCH_FLOATING(mu.scalar_type(), "component_kl_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor ws = at::empty({C * K + B * K}, acc_opts);
    at::Tensor consts = at::empty({C + B}, mu_in.options().dtype(at::kDouble));
    acc_t* h = ws.data_ptr<acc_t>();
    acc_t* e = h + C * K;
    double* kc = consts.data_ptr<double>();
    double* rc = kc + C;
    launch_tables<scalar_t, acc_t>(stds, logvar, B, C, K, h, kc, e, rc, stream);
    component_kl_kernel<scalar_t, acc_t, scalar_t><<<tiles(B, C), dim3(kTile, kTile), 0, stream>>>(
        mu.data_ptr<scalar_t>(), e, rc, means.data_ptr<acc_t>(), h, kc, B, C, K,
        out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> component_kl_backward_cuda(const at::Tensor& grad_in,
                                                              const at::Tensor& mu_in,
                                                              const at::Tensor& logvar_in,
                                                              const at::Tensor& means_in,
                                                              const at::Tensor& stds_in) {
  check_component_kl_backward_args(grad_in, mu_in, logvar_in, means_in, stds_in);
  const int64_t B = mu_in.size(0), K = mu_in.size(1), C = means_in.size(0);
  const c10::cuda::CUDAGuard guard(mu_in.device());
  at::Tensor dmu = at::empty({B, K}, mu_in.options()), dlv = at::empty({B, K}, mu_in.options());
  if (B == 0) return {dmu, dlv};
  auto mu = mu_in.contiguous(), logvar = logvar_in.contiguous();
  auto means = means_in.contiguous(), stds = stds_in.contiguous();
  const auto acc_opts = mu_in.options().dtype(acc_dtype_of(mu_in));
  auto w = grad_in.to(acc_opts).contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  XVAE_CUDA_DISPATCH_FLOATING(mu.scalar_type(), "component_kl_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor ws = at::empty({C * K + B * K}, acc_opts);
    acc_t* h = ws.data_ptr<acc_t>();
    acc_t* e = h + C * K;
    launch_tables<scalar_t, acc_t>(stds, logvar, B, C, K, h, nullptr, e, nullptr, stream);
    posterior_grad_kernel<scalar_t, acc_t><<<tiles(B, K), dim3(kTile, kTile), 0, stream>>>(
        mu.data_ptr<scalar_t>(), e, w.data_ptr<acc_t>(), means.data_ptr<acc_t>(), h, B, C, K,
        dmu.data_ptr<scalar_t>(), dlv.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dmu, dlv};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mixture_bound_cuda(
    const at::Tensor& mu_in, const at::Tensor& logvar_in, const at::Tensor& log_weights,
    const at::Tensor& means_in, const at::Tensor& stds_in,
    const std::optional<at::Tensor>& logits_in, c10::string_view kind_name, int64_t reduction,
    bool return_weights) {
  const int kind = check_mixture_bound_args(mu_in, logvar_in, log_weights, means_in, stds_in,
                                            logits_in, kind_name, reduction);
  const int64_t B = mu_in.size(0), K = mu_in.size(1), C = means_in.size(0);
  const c10::cuda::CUDAGuard guard(mu_in.device());
  const auto opts = mu_in.options();
  const auto acc_opts = opts.dtype(acc_dtype_of(mu_in));
  std::vector<int64_t> out_shape = reduction == kReduceNone ? std::vector<int64_t>{B}
                                                            : std::vector<int64_t>{};
  at::Tensor total = at::empty(out_shape, opts), cat = at::empty(out_shape, opts),
             gauss = at::empty(out_shape, opts);
  at::Tensor kl = at::empty({B, C}, acc_opts);
  at::Tensor weights = return_weights ? at::empty({B, C}, opts) : at::empty({0}, opts);
  auto mu = mu_in.contiguous(), logvar = logvar_in.contiguous();
  auto means = means_in.contiguous(), stds = stds_in.contiguous(), lw = log_weights.contiguous();
  at::Tensor logits = kind == kBoundMixture ? logits_in->contiguous() : at::Tensor();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  XVAE_CUDA_DISPATCH_FLOATING(mu.scalar_type(), "mixture_bound_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor ws = at::empty({C * K + B * K + 3 * B}, acc_opts);
    at::Tensor consts = at::empty({C + B}, opts.dtype(at::kDouble));
    acc_t* h = ws.data_ptr<acc_t>();
    acc_t* e = h + C * K;
    acc_t* rows = e + B * K;
    double* kc = consts.data_ptr<double>();
    double* rc = kc + C;
    if (B > 0) {
      launch_tables<scalar_t, acc_t>(stds, logvar, B, C, K, h, kc, e, rc, stream);
      component_kl_kernel<scalar_t, acc_t, acc_t><<<tiles(B, C), dim3(kTile, kTile), 0, stream>>>(
          mu.data_ptr<scalar_t>(), e, rc, means.data_ptr<acc_t>(), h, kc, B, C, K,
          kl.data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      bound_rows_kernel<scalar_t, acc_t><<<grid_for(B, kWarpsPerBlock), kThreads, 0, stream>>>(
          kl.data_ptr<acc_t>(), lw.data_ptr<acc_t>(),
          logits.defined() ? logits.data_ptr<scalar_t>() : nullptr, kind, B, C, rows,
          return_weights ? weights.data_ptr<scalar_t>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (reduction != kReduceNone || B > 0) {
      const unsigned blocks = reduction == kReduceNone ? grid_for(3 * B) : 1;
      reduce_rows_kernel<scalar_t, acc_t><<<blocks, kThreads, 0, stream>>>(
          rows, B, reduction, total.data_ptr<scalar_t>(), cat.data_ptr<scalar_t>(),
          gauss.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {total, cat, gauss, weights, kl};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mixture_bound_backward_cuda(
    const at::Tensor& g_total, const at::Tensor& g_cat, const at::Tensor& g_gauss,
    const at::Tensor& mu_in, const at::Tensor& logvar_in, const at::Tensor& log_weights,
    const at::Tensor& means_in, const at::Tensor& stds_in,
    const std::optional<at::Tensor>& logits_in, const at::Tensor& kl_in,
    c10::string_view kind_name, int64_t reduction) {
  const int kind = check_mixture_bound_backward_args(g_total, g_cat, g_gauss, mu_in, logvar_in,
                                                     log_weights, means_in, stds_in, logits_in,
                                                     kl_in, kind_name, reduction);
  const int64_t B = mu_in.size(0), K = mu_in.size(1), C = means_in.size(0);
  const c10::cuda::CUDAGuard guard(mu_in.device());
  const auto opts = mu_in.options();
  at::Tensor dmu = at::empty({B, K}, opts), dlv = at::empty({B, K}, opts);
  at::Tensor dl = kind == kBoundMixture ? at::empty({B, C}, opts) : at::empty({0}, opts);
  if (B == 0) return {dmu, dlv, dl};
  auto mu = mu_in.contiguous(), logvar = logvar_in.contiguous(), kl = kl_in.contiguous();
  auto means = means_in.contiguous(), stds = stds_in.contiguous(), lw = log_weights.contiguous();
  at::Tensor logits = kind == kBoundMixture ? logits_in->contiguous() : at::Tensor();
  // Upstream gradients in the accumulation dtype, on the device (no host sync).
  const auto acc_opts = opts.dtype(acc_dtype_of(mu_in));
  auto gt = g_total.to(acc_opts).contiguous();
  auto gc = g_cat.to(acc_opts).contiguous();
  auto gg = g_gauss.to(acc_opts).contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  XVAE_CUDA_DISPATCH_FLOATING(mu.scalar_type(), "mixture_bound_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor ws = at::empty({C * K + B * K + B * C}, acc_opts);
    acc_t* h = ws.data_ptr<acc_t>();
    acc_t* e = h + C * K;
    acc_t* w = e + B * K;
    launch_tables<scalar_t, acc_t>(stds, logvar, B, C, K, h, nullptr, e, nullptr, stream);
    const acc_t scale = reduction == kReduceMean ? acc_t(1) / acc_t(B) : acc_t(1);
    bound_weights_kernel<scalar_t, acc_t><<<grid_for(B, kWarpsPerBlock), kThreads, 0, stream>>>(
        kl.data_ptr<acc_t>(), lw.data_ptr<acc_t>(),
        logits.defined() ? logits.data_ptr<scalar_t>() : nullptr, kind, gt.data_ptr<acc_t>(),
        gc.data_ptr<acc_t>(), gg.data_ptr<acc_t>(), reduction == kReduceNone, scale, B, C, w,
        logits.defined() ? dl.data_ptr<scalar_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    posterior_grad_kernel<scalar_t, acc_t><<<tiles(B, K), dim3(kTile, kTile), 0, stream>>>(
        mu.data_ptr<scalar_t>(), e, w, means.data_ptr<acc_t>(), h, B, C, K,
        dmu.data_ptr<scalar_t>(), dlv.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dmu, dlv, dl};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(xvae_fast, CUDA, m) {
  m.impl("component_kl", &cuda::component_kl_cuda);
  m.impl("component_kl_backward", &cuda::component_kl_backward_cuda);
  m.impl("mixture_bound", &cuda::mixture_bound_cuda);
  m.impl("mixture_bound_backward", &cuda::mixture_bound_backward_cuda);
}

}  // namespace xvae
