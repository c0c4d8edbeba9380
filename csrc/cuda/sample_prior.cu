// Prior sampling for generation (SPEC: Generation), CUDA. One thread per Philox pair (two flat
// elements), the same draws as cpu/sample_prior.cpp. Backward recomputes the draws from the saved
// rng_state, read on the device (no host sync).
#include <torch/library.h>

#include "../categorical_table.h"
#include "cuda_common.cuh"

namespace xvae {
namespace cuda {
namespace {

// The component of element (i, k): per-row (one draw per row, shared by its coordinates) or
// per-element (the pair's categorical word).
__device__ __forceinline__ int32_t prior_component(const CategoricalTable& tab, int32_t C,
                                                   bool per_row, uint64_t seed,
                                                   uint64_t off_blocks, int64_t i, uint32_t word) {
  const double u = per_row ? uniform_open(philox_row_word(seed, off_blocks, static_cast<uint64_t>(i)))
                           : uniform_open(word);
  return sample_categorical(tab, C, u);
}

template <typename scalar_t>
__global__ void sample_prior_kernel(const scalar_t* __restrict__ M, const scalar_t* __restrict__ S,
                                    CategoricalTable tab, int32_t C, int64_t n, int64_t K,
                                    scalar_t alpha, bool per_row, at::PhiloxCudaState philox_args,
                                    scalar_t* __restrict__ z, int64_t* __restrict__ rng_state) {
  const auto [seed, off_blocks] = unpack_and_record(philox_args, rng_state);
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t total = n * K, npairs = (total + 1) / 2;
  for (int64_t p = tid; p < npairs; p += int64_t(gridDim.x) * blockDim.x) {
    const PairDraw<scalar_t> d = draw_pair<scalar_t>(seed, off_blocks, static_cast<uint64_t>(p));
#pragma unroll
    for (int lane = 0; lane < 2; ++lane) {
      const int64_t e = 2 * p + lane;
      if (e >= total) break;
      const int64_t i = e / K, k = e - i * K;
      const int32_t c = prior_component(tab, C, per_row, seed, off_blocks, i, d.word[lane]);
      z[e] = prior_value<scalar_t>(M, S, c, static_cast<int32_t>(k), static_cast<int32_t>(K),
                                   alpha, d.eta[lane]);
    }
  }
}

// atomicAdd on double needs sm_60; older targets (still in some TORCH_CUDA_ARCH_LIST defaults) get
// the compare-and-swap loop.
__device__ __forceinline__ void atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(double* p, double v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 600
  auto* a = reinterpret_cast<unsigned long long*>(p);
  unsigned long long old = *a, assumed;
  do {
    assumed = old;
    old = atomicCAS(a, assumed, __double_as_longlong(v + __longlong_as_double(assumed)));
  } while (assumed != old);
#else
  atomicAdd(p, v);
#endif
}

// dM[c,k] += g[i,k], dS[c,k] += g[i,k] * alpha * eta[i,k] for the component c each element drew.
// Uses atomicAdd: the summation order (hence the last bits of dM and dS) is not deterministic.
// Acceptable here: this op only serves gradients of generation w.r.t. the frozen prior.
template <typename scalar_t>
__global__ void sample_prior_backward_kernel(const scalar_t* __restrict__ g,
                                             const int64_t* __restrict__ rng_state,
                                             CategoricalTable tab, int32_t C, int64_t n, int64_t K,
                                             scalar_t alpha, bool per_row, scalar_t* __restrict__ dM,
                                             scalar_t* __restrict__ dS) {
  const uint64_t seed = static_cast<uint64_t>(rng_state[0]);
  const uint64_t off_blocks = static_cast<uint64_t>(rng_state[1]) / 4;
  const int64_t total = n * K, npairs = (total + 1) / 2;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < npairs;
       p += int64_t(gridDim.x) * blockDim.x) {
    const PairDraw<scalar_t> d = draw_pair<scalar_t>(seed, off_blocks, static_cast<uint64_t>(p));
#pragma unroll
    for (int lane = 0; lane < 2; ++lane) {
      const int64_t e = 2 * p + lane;
      if (e >= total) break;
      const int64_t i = e / K, k = e - i * K;
      const int32_t c = prior_component(tab, C, per_row, seed, off_blocks, i, d.word[lane]);
      const scalar_t gi = g[e];
      atomic_add(dM + c * K + k, gi);
      atomic_add(dS + c * K + k, gi * alpha * d.eta[lane]);
    }
  }
}

std::tuple<at::Tensor, at::Tensor> sample_prior_cuda(const at::Tensor& means_in,
                                                     const at::Tensor& stds_in,
                                                     const at::Tensor& pi_p, int64_t n,
                                                     double alpha, bool per_row,
                                                     std::optional<at::Generator> generator) {
  check_prior_tables(means_in, stds_in, pi_p);
  TORCH_CHECK(n >= 0, "xvae_fast: n must be >= 0, got ", n);
  const int64_t C = means_in.size(0), K = means_in.size(1);
  const c10::cuda::CUDAGuard guard(means_in.device());
  const at::PhiloxCudaState philox_args = cuda_philox_state(generator, means_in.device().index());
  at::Tensor z = at::empty({n, K}, means_in.options());
  at::Tensor rng_state = at::empty({2}, means_in.options().dtype(at::kLong));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (n == 0 || K == 0) {
    launch_write_rng_state(philox_args, rng_state, stream);
    return {z, rng_state};
  }
  auto means = means_in.contiguous(), stds = stds_in.contiguous();
  const CategoricalTensors tab = build_categorical(pi_p);
  const int64_t npairs = (n * K + 1) / 2;
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "sample_prior_cuda", [&] {
    sample_prior_kernel<scalar_t><<<grid_for(npairs), kThreads, 0, stream>>>(
        means.data_ptr<scalar_t>(), stds.data_ptr<scalar_t>(), tab.view(),
        static_cast<int32_t>(C), n, K, static_cast<scalar_t>(alpha), per_row, philox_args,
        z.data_ptr<scalar_t>(), rng_state.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {z, rng_state};
}

std::tuple<at::Tensor, at::Tensor> sample_prior_backward_cuda(const at::Tensor& grad_z,
                                                              const at::Tensor& rng_state_in,
                                                              const at::Tensor& means,
                                                              const at::Tensor& stds,
                                                              const at::Tensor& pi_p, double alpha,
                                                              bool per_row) {
  check_prior_tables(means, stds, pi_p);
  const int64_t C = means.size(0), K = means.size(1);
  TORCH_CHECK(grad_z.dim() == 2 && grad_z.size(1) == K && grad_z.scalar_type() == means.scalar_type(),
              "xvae_fast: grad_z must be (n, K) with the dtype of means");
  TORCH_CHECK(grad_z.device() == means.device(), "xvae_fast: grad_z is on ", grad_z.device(),
              ", expected ", means.device());
  const int64_t n = grad_z.size(0);
  const c10::cuda::CUDAGuard guard(means.device());
  // rng_state is read by the kernel (moved to the device first if it was saved elsewhere).
  const at::Tensor rng_state = rng_state_on(rng_state_in, means.device());
  // Contiguous (C, K) outputs: the kernel indexes them as c * K + k.
  at::Tensor dM = at::zeros(means.sizes(), means.options());
  at::Tensor dS = at::zeros(means.sizes(), means.options());
  if (n == 0 || K == 0) return {dM, dS};
  auto g = grad_z.contiguous();
  const CategoricalTensors tab = build_categorical(pi_p);
  const int64_t npairs = (n * K + 1) / 2;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "sample_prior_backward_cuda", [&] {
    sample_prior_backward_kernel<scalar_t><<<grid_for(npairs), kThreads, 0, stream>>>(
        g.data_ptr<scalar_t>(), rng_state.data_ptr<int64_t>(), tab.view(),
        static_cast<int32_t>(C), n, K, static_cast<scalar_t>(alpha), per_row,
        dM.data_ptr<scalar_t>(), dS.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dM, dS};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(xvae_fast, CUDA, m) {
  m.impl("sample_prior", &cuda::sample_prior_cuda);
  m.impl("sample_prior_backward", &cuda::sample_prior_backward_cuda);
}

}  // namespace xvae
