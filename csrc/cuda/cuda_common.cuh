// CUDA-side helpers shared by the kernels in csrc/cuda/*.cu: dtype dispatch, launch shapes,
// deterministic warp/block reductions, per-coordinate prior constants and the RNG state plumbing.
//
// Only lightweight headers are used (no torch/extension.h, no ATen/cuda/CUDAContext.h), so the files
// also compile against a CPU-only torch wheel for the GPU-less compile check
// (tools/check_cuda_compile.sh). Per-operator ATen headers instead of ATen/Functions.h cut the
// parse (and nvcc's compile time, dominated by it) by about a quarter.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/PhiloxUtils.cuh>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <limits>
#include <mutex>

#include "../checks.h"
#include "../xvae_math.h"

#define XVAE_CUDA_DISPATCH_FLOATING(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

namespace xvae {
namespace cuda {

// Reductions understood by every op, as passed from Python (same codes as cpu/cpu_common.h).
constexpr int64_t kReduceNone = 0;
constexpr int64_t kReduceMean = 1;
constexpr int64_t kReduceSum = 2;

constexpr int kWarp = 32;
constexpr int kThreads = 256;                    // block size of every 1-D launch
constexpr int kWarpsPerBlock = kThreads / kWarp;  // rows per block in the warp-per-row kernels
constexpr int64_t kMaxBlocks = int64_t(1) << 16;  // grid cap; kernels use grid-stride loops

// Blocks for n work items of `per_block` items each (at least 1, at most kMaxBlocks).
inline unsigned grid_for(int64_t n, int64_t per_block = kThreads) {
  int64_t g = (n + per_block - 1) / per_block;
  if (g < 1) g = 1;
  if (g > kMaxBlocks) g = kMaxBlocks;
  return static_cast<unsigned>(g);
}

// ---------------------------------------------------------------------------------------------------
// Deterministic reductions. The xor butterfly leaves the identical sum in every lane (float addition
// is commutative), and the order depends only on the block shape, never on scheduling.
// ---------------------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int m = kWarp / 2; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int m = kWarp / 2; m > 0; m >>= 1) v = xmax(v, __shfl_xor_sync(0xffffffffu, v, m));
  return v;
}

// Sum over a block of kThreads threads; the result is valid in every thread. `smem` holds
// kWarpsPerBlock values. Must be reached by all threads of the block.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* smem) {
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp;
  v = warp_sum(v);
  __syncthreads();  // smem may still be read from a previous call
  if (lane == 0) smem[wid] = v;
  __syncthreads();
  T r = T(0);
#pragma unroll
  for (int w = 0; w < kWarpsPerBlock; ++w) r += smem[w];
  return r;
}

template <typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t ld(const scalar_t* p, int64_t idx) {
  return static_cast<acc_t>(p[idx]);
}

// ---------------------------------------------------------------------------------------------------
// Per-coordinate constants of a diagonal Gaussian prior: m[k], log_s[k] = log s_k, inv_s2[k] = 1/s_k^2
// (the CPU's PriorConsts), written into a (3, K) buffer.
// ---------------------------------------------------------------------------------------------------
template <typename acc_t>
struct KlnConsts {
  const acc_t* m;
  const acc_t* log_s;
  const acc_t* inv_s2;
};

namespace {

template <typename acc_t>
__global__ void kln_consts_kernel(const acc_t* __restrict__ mean, const acc_t* __restrict__ stdv,
                                  int64_t K, acc_t* __restrict__ out) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < K;
       k += int64_t(gridDim.x) * blockDim.x) {
    const acc_t s = stdv[k];
    out[k] = mean[k];
    out[K + k] = xlog(s);
    out[2 * K + k] = acc_t(1) / (s * s);
  }
}

// Unpacks philox_args on the device; thread 0 of block 0 records (seed, offset) in rng_state, on the
// stream, so the returned state is right under CUDA graph capture. Returns the seed and the offset
// in 128-bit blocks, as draw_pair takes them.
struct PhiloxKey {
  uint64_t seed;
  uint64_t off_blocks;
};

__device__ __forceinline__ PhiloxKey unpack_and_record(const at::PhiloxCudaState& philox_args,
                                                       int64_t* rng_state) {
  auto [seed, offset] = at::cuda::philox::unpack(philox_args);
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    rng_state[0] = static_cast<int64_t>(seed);
    rng_state[1] = static_cast<int64_t>(offset);
  }
  return {seed, offset / 4};
}

// Records the state alone, when there is nothing to draw (empty output).
__global__ void write_rng_state_kernel(at::PhiloxCudaState philox_args, int64_t* rng_state) {
  unpack_and_record(philox_args, rng_state);
}

}  // namespace

// Fills buf (a (3K,) acc tensor on the current device) and returns views of its three parts.
template <typename acc_t>
inline KlnConsts<acc_t> launch_kln_consts(const at::Tensor& mean, const at::Tensor& stdv,
                                          at::Tensor& buf, cudaStream_t stream) {
  const int64_t K = mean.numel();
  auto mc = mean.contiguous(), sc = stdv.contiguous();
  acc_t* out = buf.data_ptr<acc_t>();
  kln_consts_kernel<acc_t><<<grid_for(K), kThreads, 0, stream>>>(mc.data_ptr<acc_t>(),
                                                                  sc.data_ptr<acc_t>(), K, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out, out + K, out + 2 * K};
}

// ---------------------------------------------------------------------------------------------------
// Random numbers: a graph-safe Philox state from the device's CUDA generator. Every draw of one call
// lives in one 128-bit block of its subsequence, so the call consumes 4 words of offset.
// ---------------------------------------------------------------------------------------------------
inline at::PhiloxCudaState cuda_philox_state(const std::optional<at::Generator>& generator,
                                             c10::DeviceIndex device_index) {
  auto* gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(
      generator, at::cuda::detail::getDefaultCUDAGenerator(device_index));
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return gen->philox_cuda_state(4);
}

inline void launch_write_rng_state(const at::PhiloxCudaState& philox_args, at::Tensor& rng_state,
                                   cudaStream_t stream) {
  write_rng_state_kernel<<<1, 1, 0, stream>>>(philox_args, rng_state.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// An rng_state ((2,) int64 [seed, offset]) as a contiguous tensor on `device`; read by the kernels
// themselves, never on the host (no sync, graph-safe).
inline at::Tensor rng_state_on(const at::Tensor& rng_state, const at::Device& device) {
  TORCH_CHECK(rng_state.numel() == 2 && rng_state.scalar_type() == at::kLong,
              "xvae_fast: rng_state must be a (2,) int64 tensor [seed, offset]");
  return rng_state.to(device).contiguous();
}

// The draws of one Philox pair (flat elements 2p and 2p+1): normals eta[0..1] and categorical
// words[0..1], exactly as cpu/noise_cpu.h draw_span computes them.
template <typename acc_t>
struct PairDraw {
  acc_t eta[2];
  uint32_t word[2];
};

template <typename acc_t>
__device__ __forceinline__ PairDraw<acc_t> draw_pair(uint64_t seed, uint64_t off_blocks,
                                                     uint64_t pair) {
  const PairWords pw = philox_pair(seed, off_blocks, pair);
  const acc_t u1 = box_muller_u1<acc_t>(pw.w[0]);
  const acc_t ang = box_muller_angle<acc_t>(pw.w[1]);
  const acc_t r = box_muller_radius(u1);
  PairDraw<acc_t> d;
  acc_t sn, cs;
  xsincos(ang, &sn, &cs);
  d.eta[0] = r * cs;
  d.eta[1] = r * sn;
  d.word[0] = pw.w[2];
  d.word[1] = pw.w[3];
  return d;
}

}  // namespace cuda
}  // namespace xvae
