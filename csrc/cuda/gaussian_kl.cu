// Single-Gaussian X-VAE KL (SPEC: gaussian_kl), CUDA. Forward: one warp per row sums KLN over the
// row; reductions mean/sum add the row values in a single block, in a fixed order (deterministic,
// no atomics). Backward: one elementwise pass. Same formulas as cpu/gaussian_kl.cpp (xvae_math.h).
#include <torch/library.h>

#include "cuda_common.cuh"

namespace xvae {
namespace cuda {
namespace {

// rows_acc[i] (reduction mean/sum) or out[i] (reduction none) = sum_k KLN(mu[i,k], logvar[i,k]).
template <typename scalar_t, typename acc_t>
__global__ void gaussian_kl_rows_kernel(const scalar_t* __restrict__ mu,
                                        const scalar_t* __restrict__ logvar, KlnConsts<acc_t> pc,
                                        int64_t B, int64_t K, acc_t* __restrict__ rows_acc,
                                        scalar_t* __restrict__ out) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; i < B; i += warps) {
    const scalar_t* mrow = mu + i * K;
    const scalar_t* vrow = logvar + i * K;
    acc_t s = acc_t(0);
    for (int64_t k = lane; k < K; k += kWarp)
      s += kln(ld<acc_t>(mrow, k), ld<acc_t>(vrow, k), pc.m[k], pc.log_s[k], pc.inv_s2[k]);
    s = warp_sum(s);
    if (lane == 0) {
      if (out != nullptr) out[i] = static_cast<scalar_t>(s);
      else rows_acc[i] = s;
    }
  }
}

// out (0-dim) = sum_i rows[i] (divided by B for mean), one block, fixed order.
template <typename scalar_t, typename acc_t>
__global__ void gaussian_kl_total_kernel(const acc_t* __restrict__ rows, int64_t B, bool mean,
                                         scalar_t* __restrict__ out) {
  __shared__ acc_t smem[kWarpsPerBlock];
  acc_t s = acc_t(0);
  for (int64_t i = threadIdx.x; i < B; i += kThreads) s += rows[i];
  s = block_sum(s, smem);
  if (threadIdx.x == 0) out[0] = static_cast<scalar_t>(mean ? s / acc_t(B) : s);
}

template <typename scalar_t, typename acc_t>
__global__ void gaussian_kl_backward_kernel(const acc_t* __restrict__ g, bool per_row, acc_t scale,
                                            const scalar_t* __restrict__ mu,
                                            const scalar_t* __restrict__ logvar,
                                            KlnConsts<acc_t> pc, int64_t B, int64_t K,
                                            scalar_t* __restrict__ dmu,
                                            scalar_t* __restrict__ dlv) {
  const int64_t n = B * K;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / K, k = e - i * K;
    const acc_t gi = (per_row ? g[i] : g[0]) * scale;
    const acc_t inv = pc.inv_s2[k];
    dmu[e] = static_cast<scalar_t>(gi * kln_grad_mu(ld<acc_t>(mu, e), pc.m[k], inv));
    dlv[e] = static_cast<scalar_t>(gi * kln_grad_logvar(ld<acc_t>(logvar, e), pc.log_s[k]));
  }
}

at::Tensor gaussian_kl_forward_cuda(const at::Tensor& mu_in, const at::Tensor& logvar_in,
                                    const at::Tensor& prior_mean, const at::Tensor& prior_std,
                                    int64_t reduction) {
  check_gaussian_kl_args(mu_in, logvar_in, prior_mean, prior_std, reduction);
  const int64_t B = mu_in.size(0), K = mu_in.size(1);
  const c10::cuda::CUDAGuard guard(mu_in.device());
  std::vector<int64_t> out_shape =
      reduction == kReduceNone ? std::vector<int64_t>{B} : std::vector<int64_t>{};
  // Empty batch or no coordinates: every row sum (and their total) is 0, as on the CPU.
  if (B == 0 || K == 0) return at::zeros(out_shape, mu_in.options());
  at::Tensor out = at::empty(out_shape, mu_in.options());
  auto mu = mu_in.contiguous(), logvar = logvar_in.contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto acc_opts = mu_in.options().dtype(acc_dtype_of(mu_in));
  XVAE_CUDA_DISPATCH_FLOATING(mu.scalar_type(), "gaussian_kl_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // (3K,) prior constants, then (B,) row sums for mean/sum.
    at::Tensor ws = at::empty({3 * K + (reduction == kReduceNone ? 0 : B)}, acc_opts);
    const KlnConsts<acc_t> pc = launch_kln_consts<acc_t>(prior_mean, prior_std, ws, stream);
    acc_t* rows = ws.data_ptr<acc_t>() + 3 * K;
    scalar_t* direct = reduction == kReduceNone ? out.data_ptr<scalar_t>() : nullptr;
    gaussian_kl_rows_kernel<scalar_t, acc_t>
        <<<grid_for(B, kWarpsPerBlock), kThreads, 0, stream>>>(
            mu.data_ptr<scalar_t>(), logvar.data_ptr<scalar_t>(), pc, B, K, rows, direct);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (reduction != kReduceNone) {
      gaussian_kl_total_kernel<scalar_t, acc_t><<<1, kThreads, 0, stream>>>(
          rows, B, reduction == kReduceMean, out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> gaussian_kl_backward_cuda(const at::Tensor& grad,
                                                             const at::Tensor& mu_in,
                                                             const at::Tensor& logvar_in,
                                                             const at::Tensor& prior_mean,
                                                             const at::Tensor& prior_std,
                                                             int64_t reduction) {
  check_gaussian_kl_args(mu_in, logvar_in, prior_mean, prior_std, reduction);
  const int64_t B = mu_in.size(0), K = mu_in.size(1);
  check_grad(grad, "grad", reduction, B);
  const c10::cuda::CUDAGuard guard(mu_in.device());
  at::Tensor dmu = at::empty({B, K}, mu_in.options()), dlv = at::empty({B, K}, mu_in.options());
  if (B == 0 || K == 0) return {dmu, dlv};
  auto mu = mu_in.contiguous(), logvar = logvar_in.contiguous();
  // The upstream gradient stays on the device (0-dim for mean/sum): read in the kernel, no sync.
  auto g = grad.to(mu_in.device(), acc_dtype_of(mu_in)).contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  XVAE_CUDA_DISPATCH_FLOATING(mu.scalar_type(), "gaussian_kl_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor ws = at::empty({3 * K}, g.options());
    const KlnConsts<acc_t> pc = launch_kln_consts<acc_t>(prior_mean, prior_std, ws, stream);
    const acc_t scale = reduction == kReduceMean ? acc_t(1) / acc_t(B) : acc_t(1);
    gaussian_kl_backward_kernel<scalar_t, acc_t><<<grid_for(B * K), kThreads, 0, stream>>>(
        g.data_ptr<acc_t>(), reduction == kReduceNone, scale, mu.data_ptr<scalar_t>(),
        logvar.data_ptr<scalar_t>(), pc, B, K, dmu.data_ptr<scalar_t>(), dlv.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dmu, dlv};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(xvae_fast, CUDA, m) {
  m.impl("gaussian_kl_forward", &cuda::gaussian_kl_forward_cuda);
  m.impl("gaussian_kl_backward", &cuda::gaussian_kl_backward_cuda);
}

}  // namespace xvae
