// Two-part mixture KL (SPEC: mixture_kl), CUDA. Same math as cpu/mixture_kl.cpp, from xvae_math.h.
//
// Forward:  (1) per-row softplus scale c_i and 1/S_i (one warp per row);
//           (2) column partial sums of r[i,k] and KLN[i,k] over fixed row chunks -> [nchunks, K];
//           (3) one block adds the chunks in a fixed order (pi_q, kln_colsum) and reduces the
//               categorical KL and the Gaussian total; (4) reduction "none": per-row Gaussian part.
// Backward: (1) reduction "none": column partial sums of b_i KLN[i,k] (w_k, a batch reduction);
//           (2) one block: A (a batch reduction for "none"), b, h_k;
//           (3) one warp per row: S_i, sum_k h_k r_ik, then one pass writing all three gradients.
// Every reduction has a fixed order that depends only on the shapes: deterministic, no atomics.
// The upstream gradients of mean/sum are 0-dim device tensors read by the kernels (no host sync).
#include <torch/library.h>

#include "cuda_common.cuh"

namespace xvae {
namespace cuda {
namespace {

// Column partial sums: blocks of kColTile x kRowLanes threads; a block owns kColTile columns of one
// row chunk, the kRowLanes thread rows split the chunk's rows and are added in a fixed order.
constexpr int kColTile = 32;
constexpr int kRowLanes = kThreads / kColTile;
constexpr int64_t kMinChunkRows = 32;
constexpr int64_t kMaxChunks = 1024;

// Rows per chunk: a function of B only, so the summation order never depends on the device.
inline int64_t chunk_rows(int64_t B) {
  int64_t nchunks = (B + kMinChunkRows - 1) / kMinChunkRows;
  if (nchunks > kMaxChunks) nchunks = kMaxChunks;
  if (nchunks < 1) nchunks = 1;
  return (B + nchunks - 1) / nchunks;
}

// Row scale c_i = min(max_k l[i,k], 0) and 1 / S_i with S_i = sum_k softplus(l[i,k]) exp(-c_i).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void row_scale(const scalar_t* l, int64_t K, int lane, acc_t& c,
                                          acc_t& S) {
  acc_t mx = -std::numeric_limits<acc_t>::infinity();
  for (int64_t k = lane; k < K; k += kWarp) mx = xmax(mx, ld<acc_t>(l, k));
  mx = warp_max(mx);
  c = acc_t(0) < mx ? acc_t(0) : mx;  // std::min(max, 0), as on the CPU
  acc_t s = acc_t(0);
  if (c < acc_t(0)) {
    for (int64_t k = lane; k < K; k += kWarp) s += scaled_softplus_neg(ld<acc_t>(l, k), c);
  } else {
    for (int64_t k = lane; k < K; k += kWarp) s += softplus(ld<acc_t>(l, k));
  }
  S = warp_sum(s);
}

template <typename scalar_t, typename acc_t>
__global__ void row_stats_kernel(const scalar_t* __restrict__ logits, int64_t B, int64_t K,
                                 acc_t* __restrict__ row_c, acc_t* __restrict__ row_invS) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; i < B; i += warps) {
    acc_t c, S;
    row_scale<scalar_t, acc_t>(logits + i * K, K, lane, c, S);
    if (lane == 0) {
      row_c[i] = c;
      row_invS[i] = acc_t(1) / S;
    }
  }
}

// Forward (kForward): part_a[chunk, k] = sum_i r[i,k], part_b[chunk, k] = sum_i KLN[i,k].
// Backward, reduction none: part_b[chunk, k] = sum_i (g_total[i] + g_gauss[i]) KLN[i,k].
template <typename scalar_t, typename acc_t, bool kForward>
__global__ void column_partial_kernel(const scalar_t* __restrict__ logits,
                                      const scalar_t* __restrict__ mu,
                                      const scalar_t* __restrict__ logvar,
                                      const acc_t* __restrict__ row_c,
                                      const acc_t* __restrict__ row_invS,
                                      const acc_t* __restrict__ g_total,
                                      const acc_t* __restrict__ g_gauss, KlnConsts<acc_t> pc,
                                      int64_t B, int64_t K, int64_t rows_per_chunk,
                                      acc_t* __restrict__ part_a, acc_t* __restrict__ part_b) {
  __shared__ acc_t sa[kRowLanes][kColTile];
  __shared__ acc_t sb[kRowLanes][kColTile];
  const int tx = threadIdx.x % kColTile, ty = threadIdx.x / kColTile;
  const int64_t k = int64_t(blockIdx.x) * kColTile + tx;
  const int64_t chunk = blockIdx.y;
  const int64_t r0 = chunk * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < B ? r0 + rows_per_chunk : B;
  acc_t a = acc_t(0), b = acc_t(0);
  if (k < K) {
    const acc_t m = pc.m[k], log_s = pc.log_s[k], inv_s2 = pc.inv_s2[k];
    for (int64_t i = r0 + ty; i < r1; i += kRowLanes) {
      const int64_t e = i * K + k;
      const acc_t kl = kln(ld<acc_t>(mu, e), ld<acc_t>(logvar, e), m, log_s, inv_s2);
      if constexpr (kForward) {
        const acc_t c = row_c[i];
        const acc_t x = ld<acc_t>(logits, e);
        const acc_t sp = c < acc_t(0) ? scaled_softplus_neg(x, c) : softplus(x);
        a += sp * row_invS[i];
        b += kl;
      } else {
        b += (g_total[i] + g_gauss[i]) * kl;
      }
    }
  }
  sa[ty][tx] = a;
  sb[ty][tx] = b;
  __syncthreads();
  if (ty == 0 && k < K) {
    acc_t ta = acc_t(0), tb = acc_t(0);
#pragma unroll
    for (int r = 0; r < kRowLanes; ++r) {
      ta += sa[r][tx];
      tb += sb[r][tx];
    }
    if constexpr (kForward) part_a[chunk * K + k] = ta;
    part_b[chunk * K + k] = tb;
  }
}

// One block: pi_q[k] = (sum of chunks) / B, kln_colsum[k]; the categorical KL and the Gaussian
// total; writes the 0-dim outputs (mean/sum) or the categorical value for the per-row pass (none).
template <typename scalar_t, typename acc_t>
__global__ void forward_finalize_kernel(const acc_t* __restrict__ part_a,
                                        const acc_t* __restrict__ part_b, int64_t nchunks,
                                        int64_t B, int64_t K, const acc_t* __restrict__ log_pi_p,
                                        int64_t reduction, acc_t* __restrict__ pi_q,
                                        acc_t* __restrict__ kcs, acc_t* __restrict__ cat_out,
                                        scalar_t* __restrict__ total, scalar_t* __restrict__ cat,
                                        scalar_t* __restrict__ gauss) {
  __shared__ acc_t smem[kWarpsPerBlock];
  acc_t cat_part = acc_t(0), gauss_part = acc_t(0);
  for (int64_t k = threadIdx.x; k < K; k += kThreads) {
    acc_t a = acc_t(0), b = acc_t(0);
    for (int64_t c = 0; c < nchunks; ++c) {
      a += part_a[c * K + k];
      b += part_b[c * K + k];
    }
    const acc_t p = a / acc_t(B);
    pi_q[k] = p;
    kcs[k] = b;
    if (p > acc_t(0)) cat_part += p * (xlog(p) - log_pi_p[k]);
    gauss_part += p * b;
  }
  const acc_t cat_kl = block_sum(cat_part, smem);
  const acc_t gauss_sum = block_sum(gauss_part, smem);
  if (threadIdx.x == 0) {
    if (reduction == kReduceNone) {
      cat_out[0] = cat_kl;
    } else {
      const acc_t g = reduction == kReduceMean ? gauss_sum / acc_t(B) : gauss_sum;
      const acc_t cr = reduction == kReduceMean ? cat_kl : cat_kl * acc_t(B);
      total[0] = static_cast<scalar_t>(cr + g);
      cat[0] = static_cast<scalar_t>(cr);
      gauss[0] = static_cast<scalar_t>(g);
    }
  }
}

// Reduction none: gaussian[i] = sum_k pi_q[k] KLN[i,k], categorical[i] = KL(pi_q || pi_p),
// total[i] = their sum. One warp per row.
template <typename scalar_t, typename acc_t>
__global__ void forward_rows_kernel(const scalar_t* __restrict__ mu,
                                    const scalar_t* __restrict__ logvar, KlnConsts<acc_t> pc,
                                    const acc_t* __restrict__ pi_q,
                                    const acc_t* __restrict__ cat_kl, int64_t B, int64_t K,
                                    scalar_t* __restrict__ total, scalar_t* __restrict__ cat,
                                    scalar_t* __restrict__ gauss) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; i < B; i += warps) {
    const scalar_t* mrow = mu + i * K;
    const scalar_t* vrow = logvar + i * K;
    acc_t s = acc_t(0);
    for (int64_t k = lane; k < K; k += kWarp)
      s += pi_q[k] * kln(ld<acc_t>(mrow, k), ld<acc_t>(vrow, k), pc.m[k], pc.log_s[k], pc.inv_s2[k]);
    s = warp_sum(s);
    if (lane == 0) {
      const acc_t ck = cat_kl[0];
      gauss[i] = static_cast<scalar_t>(s);
      cat[i] = static_cast<scalar_t>(ck);
      total[i] = static_cast<scalar_t>(ck + s);
    }
  }
}

// One block: the loss weights A (categorical part, summed over rows) and b (Gaussian part, mean/sum),
// then h_k = A (log max(pi_q[k], tiny) - log pi_p[k] + 1) + w_k with
// w_k = sum_i b_i KLN[i,k] (none: sum of the chunk partials; mean/sum: b * kln_colsum[k]).
template <typename acc_t>
__global__ void backward_h_kernel(const acc_t* __restrict__ g_total, const acc_t* __restrict__ g_cat,
                                  const acc_t* __restrict__ g_gauss, int64_t reduction, int64_t B,
                                  int64_t K, const acc_t* __restrict__ part_w, int64_t nchunks,
                                  const acc_t* __restrict__ kcs, const acc_t* __restrict__ pi_q,
                                  const acc_t* __restrict__ log_pi_p, acc_t tiny,
                                  acc_t* __restrict__ h, acc_t* __restrict__ b_const_out) {
  __shared__ acc_t smem[kWarpsPerBlock];
  acc_t A, b_const = acc_t(0);
  if (reduction == kReduceNone) {
    acc_t a = acc_t(0);
    for (int64_t i = threadIdx.x; i < B; i += kThreads) a += g_total[i] + g_cat[i];
    A = block_sum(a, smem);
  } else {
    const acc_t scale = reduction == kReduceMean ? acc_t(1) / acc_t(B) : acc_t(1);
    const acc_t a = (g_total[0] + g_cat[0]) * scale;
    b_const = (g_total[0] + g_gauss[0]) * scale;
    A = a * acc_t(B);
  }
  for (int64_t k = threadIdx.x; k < K; k += kThreads) {
    acc_t w;
    if (reduction == kReduceNone) {
      w = acc_t(0);
      for (int64_t c = 0; c < nchunks; ++c) w += part_w[c * K + k];
    } else {
      w = b_const * kcs[k];
    }
    h[k] = A * (xlog(xmax(pi_q[k], tiny)) - log_pi_p[k] + acc_t(1)) + w;
  }
  if (threadIdx.x == 0) b_const_out[0] = b_const;
}

// One warp per row: c_i, S_i and sum_k h_k sp_ik, then d_logits, d_mu, d_logvar in one pass.
template <typename scalar_t, typename acc_t>
__global__ void backward_rows_kernel(const scalar_t* __restrict__ logits,
                                     const scalar_t* __restrict__ mu,
                                     const scalar_t* __restrict__ logvar, KlnConsts<acc_t> pc,
                                     const acc_t* __restrict__ pi_q, const acc_t* __restrict__ h,
                                     const acc_t* __restrict__ g_total,
                                     const acc_t* __restrict__ g_gauss,
                                     const acc_t* __restrict__ b_const, bool per_row, int64_t B,
                                     int64_t K, scalar_t* __restrict__ d_logits,
                                     scalar_t* __restrict__ d_mu, scalar_t* __restrict__ d_logvar) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * kWarpsPerBlock;
  const acc_t invB = acc_t(1) / acc_t(B);
  for (int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; i < B; i += warps) {
    const scalar_t* l = logits + i * K;
    acc_t mx = -std::numeric_limits<acc_t>::infinity();
    for (int64_t k = lane; k < K; k += kWarp) mx = xmax(mx, ld<acc_t>(l, k));
    mx = warp_max(mx);
    const acc_t c = acc_t(0) < mx ? acc_t(0) : mx;
    const bool scaled = c < acc_t(0);
    acc_t s = acc_t(0), hs = acc_t(0);
    for (int64_t k = lane; k < K; k += kWarp) {
      const acc_t x = ld<acc_t>(l, k);
      const acc_t sp = scaled ? scaled_softplus_neg(x, c) : softplus(x);
      s += sp;
      hs += h[k] * sp;
    }
    const acc_t invS = acc_t(1) / warp_sum(s);
    const acc_t hr = warp_sum(hs) * invS;
    const acc_t bi = per_row ? g_total[i] + g_gauss[i] : b_const[0];
    const acc_t lscale = invB * invS;
    for (int64_t k = lane; k < K; k += kWarp) {
      const int64_t e = i * K + k;
      const acc_t x = ld<acc_t>(l, k);
      const acc_t sg = scaled ? scaled_sigmoid_neg(x, c) : sigmoid(x);
      d_logits[e] = static_cast<scalar_t>(lscale * sg * (h[k] - hr));
      const acc_t wq = bi * pi_q[k];
      const acc_t inv_s2 = pc.inv_s2[k];
      d_mu[e] = static_cast<scalar_t>(wq * kln_grad_mu(ld<acc_t>(mu, e), pc.m[k], inv_s2));
      d_logvar[e] = static_cast<scalar_t>(wq * kln_grad_logvar(ld<acc_t>(logvar, e), pc.log_s[k]));
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mixture_kl_forward_cuda(
    const at::Tensor& logits_in, const at::Tensor& mu_in, const at::Tensor& logvar_in,
    const at::Tensor& log_pi_p, const at::Tensor& prior_mean, const at::Tensor& prior_std,
    int64_t reduction) {
  check_mixture_kl_args(logits_in, mu_in, logvar_in, log_pi_p, prior_mean, prior_std, reduction);
  const int64_t B = logits_in.size(0), K = logits_in.size(1);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  auto opts = logits_in.options();
  auto acc_opts = opts.dtype(acc_dtype_of(logits_in));
  std::vector<int64_t> out_shape =
      reduction == kReduceNone ? std::vector<int64_t>{B} : std::vector<int64_t>{};
  if (B == 0 || K == 0) {
    return {at::zeros(out_shape, opts), at::zeros(out_shape, opts), at::zeros(out_shape, opts),
            at::zeros({K}, acc_opts), at::zeros({K}, acc_opts)};
  }
  at::Tensor total = at::empty(out_shape, opts), cat = at::empty(out_shape, opts),
             gauss = at::empty(out_shape, opts);
  at::Tensor pi_q = at::empty({K}, acc_opts), kln_colsum = at::empty({K}, acc_opts);
  auto logits = logits_in.contiguous(), mu = mu_in.contiguous(), logvar = logvar_in.contiguous();
  auto lpp = log_pi_p.contiguous();
  const int64_t rows_per_chunk = chunk_rows(B);
  const int64_t nchunks = (B + rows_per_chunk - 1) / rows_per_chunk;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  XVAE_CUDA_DISPATCH_FLOATING(logits.scalar_type(), "mixture_kl_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // Workspace: prior constants (3K), c_i and 1/S_i (2B), chunk partials (2 nchunks K), cat (1).
    at::Tensor ws = at::empty({3 * K + 2 * B + 2 * nchunks * K + 1}, acc_opts);
    const KlnConsts<acc_t> pc = launch_kln_consts<acc_t>(prior_mean, prior_std, ws, stream);
    acc_t* row_c = ws.data_ptr<acc_t>() + 3 * K;
    acc_t* row_invS = row_c + B;
    acc_t* part_a = row_invS + B;
    acc_t* part_b = part_a + nchunks * K;
    acc_t* cat_kl = part_b + nchunks * K;
    const scalar_t* lp = logits.data_ptr<scalar_t>();
    const scalar_t* mup = mu.data_ptr<scalar_t>();
    const scalar_t* lvp = logvar.data_ptr<scalar_t>();

    row_stats_kernel<scalar_t, acc_t><<<grid_for(B, kWarpsPerBlock), kThreads, 0, stream>>>(
        lp, B, K, row_c, row_invS);
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    const dim3 grid(static_cast<unsigned>((K + kColTile - 1) / kColTile),
                    static_cast<unsigned>(nchunks));
    column_partial_kernel<scalar_t, acc_t, true><<<grid, kThreads, 0, stream>>>(
        lp, mup, lvp, row_c, row_invS, nullptr, nullptr, pc, B, K, rows_per_chunk, part_a, part_b);
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    const bool none = reduction == kReduceNone;
    forward_finalize_kernel<scalar_t, acc_t><<<1, kThreads, 0, stream>>>(
        part_a, part_b, nchunks, B, K, lpp.data_ptr<acc_t>(), reduction,
        pi_q.data_ptr<acc_t>(), kln_colsum.data_ptr<acc_t>(), cat_kl,
        none ? nullptr : total.data_ptr<scalar_t>(), none ? nullptr : cat.data_ptr<scalar_t>(),
        none ? nullptr : gauss.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    if (none) {
      forward_rows_kernel<scalar_t, acc_t><<<grid_for(B, kWarpsPerBlock), kThreads, 0, stream>>>(
          mup, lvp, pc, pi_q.data_ptr<acc_t>(), cat_kl, B, K, total.data_ptr<scalar_t>(),
          cat.data_ptr<scalar_t>(), gauss.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {total, cat, gauss, pi_q, kln_colsum};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mixture_kl_backward_cuda(
    const at::Tensor& g_total_in, const at::Tensor& g_cat_in, const at::Tensor& g_gauss_in,
    const at::Tensor& logits_in, const at::Tensor& mu_in, const at::Tensor& logvar_in,
    const at::Tensor& log_pi_p, const at::Tensor& prior_mean, const at::Tensor& prior_std,
    const at::Tensor& pi_q_in, const at::Tensor& kln_colsum_in, int64_t reduction) {
  check_mixture_kl_backward_args(g_total_in, g_cat_in, g_gauss_in, logits_in, mu_in, logvar_in,
                                 log_pi_p, prior_mean, prior_std, pi_q_in, kln_colsum_in, reduction);
  const int64_t B = logits_in.size(0), K = logits_in.size(1);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  at::Tensor dl = at::empty({B, K}, logits_in.options());
  at::Tensor dm = at::empty({B, K}, logits_in.options());
  at::Tensor dv = at::empty({B, K}, logits_in.options());
  if (B == 0 || K == 0) return {dl.zero_(), dm.zero_(), dv.zero_()};
  auto logits = logits_in.contiguous(), mu = mu_in.contiguous(), logvar = logvar_in.contiguous();
  auto lpp = log_pi_p.contiguous(), pi_q = pi_q_in.contiguous(), kcs = kln_colsum_in.contiguous();
  // Upstream gradients in the accumulation dtype, on the device: (B,) for none, 0-dim otherwise.
  const auto acc_dt = acc_dtype_of(logits_in);
  auto gt = g_total_in.to(logits_in.device(), acc_dt).contiguous();
  auto gc = g_cat_in.to(logits_in.device(), acc_dt).contiguous();
  auto gg = g_gauss_in.to(logits_in.device(), acc_dt).contiguous();
  const bool none = reduction == kReduceNone;
  const int64_t rows_per_chunk = chunk_rows(B);
  const int64_t nchunks = none ? (B + rows_per_chunk - 1) / rows_per_chunk : 0;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  XVAE_CUDA_DISPATCH_FLOATING(logits.scalar_type(), "mixture_kl_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // Workspace: prior constants (3K), h (K), w chunk partials (nchunks K, none only), b (1).
    at::Tensor ws = at::empty({4 * K + nchunks * K + 1}, gt.options());
    const KlnConsts<acc_t> pc = launch_kln_consts<acc_t>(prior_mean, prior_std, ws, stream);
    acc_t* h = ws.data_ptr<acc_t>() + 3 * K;
    acc_t* part_w = h + K;
    acc_t* b_const = part_w + nchunks * K;
    const scalar_t* lp = logits.data_ptr<scalar_t>();
    const scalar_t* mup = mu.data_ptr<scalar_t>();
    const scalar_t* lvp = logvar.data_ptr<scalar_t>();
    const acc_t* gtp = gt.data_ptr<acc_t>();
    const acc_t* gcp = gc.data_ptr<acc_t>();
    const acc_t* ggp = gg.data_ptr<acc_t>();

    if (none) {
      const dim3 grid(static_cast<unsigned>((K + kColTile - 1) / kColTile),
                      static_cast<unsigned>(nchunks));
      column_partial_kernel<scalar_t, acc_t, false><<<grid, kThreads, 0, stream>>>(
          lp, mup, lvp, nullptr, nullptr, gtp, ggp, pc, B, K, rows_per_chunk, nullptr, part_w);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }

    backward_h_kernel<acc_t><<<1, kThreads, 0, stream>>>(
        gtp, gcp, ggp, reduction, B, K, part_w, nchunks, kcs.data_ptr<acc_t>(),
        pi_q.data_ptr<acc_t>(), lpp.data_ptr<acc_t>(), std::numeric_limits<acc_t>::min(), h,
        b_const);
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    backward_rows_kernel<scalar_t, acc_t><<<grid_for(B, kWarpsPerBlock), kThreads, 0, stream>>>(
        lp, mup, lvp, pc, pi_q.data_ptr<acc_t>(), h, gtp, ggp, b_const, none, B, K,
        dl.data_ptr<scalar_t>(), dm.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dl, dm, dv};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(xvae_fast, CUDA, m) {
  m.impl("mixture_kl_forward", &cuda::mixture_kl_forward_cuda);
  m.impl("mixture_kl_backward", &cuda::mixture_kl_backward_cuda);
}

}  // namespace xvae
