// Isotropic Gaussian KDE log-density (op kde_log_prob), CUDA. Math: ../kde_density.h.
//
// Preparation: the shift t (the mean of up to 1024 evenly spaced centres, as on the CPU) and the
// shifted centres transposed to (d, m) (coalesced across centres) with their squared norms.
// Forward: one block per row; its threads walk the centres with an online logsumexp each (the
// expanded-square scores, the dot product against the transposed centres), combined across the
// block. A row whose error bound fails kde_expanded_ok is redone in the direct form from the
// unshifted centres by the same block. Backward: one block per row, the centres in chunks of the
// block size: each thread the gradient weight of one centre into shared memory, then each thread
// the weighted sums of its own coordinates. No atomics: the result is deterministic. The bandwidth
// is read on the device (no host sync). Compile-checked only (no GPU here to run or time it).
#include <torch/library.h>

#include <limits>

#include "../kde_density.h"
#include "cuda_common.cuh"

namespace xvae {
namespace cuda {
namespace {

constexpr int64_t kShiftSamples = 1024;

// The shift t: one block, threads over coordinates, the samples added in a fixed order (double).
template <typename scalar_t, typename acc_t>
__global__ void kde_shift_kernel(const scalar_t* __restrict__ c, int64_t s0, int64_t s1, int64_t m,
                                 int64_t d, acc_t* __restrict__ shift) {
  const int64_t step = m / kShiftSamples > 1 ? m / kShiftSamples : 1;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    double acc = 0;
    int64_t n = 0;
    for (int64_t i = 0; i < m; i += step, ++n) acc += static_cast<double>(c[i * s0 + j * s1]);
    shift[j] = static_cast<acc_t>(acc / static_cast<double>(n));
  }
}

// Shifted centres, transposed (d, m), and their squared norms; thread per centre.
template <typename scalar_t, typename acc_t>
__global__ void kde_pack_kernel(const scalar_t* __restrict__ c, int64_t s0, int64_t s1, int64_t m,
                                int64_t d, const acc_t* __restrict__ shift, acc_t* __restrict__ ct,
                                acc_t* __restrict__ cn) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < m;
       i += int64_t(gridDim.x) * blockDim.x) {
    acc_t n = acc_t(0);
    for (int64_t j = 0; j < d; ++j) {
      const acc_t v = ld<acc_t>(c, i * s0 + j * s1) - shift[j];
      ct[j * m + i] = v;
      n += v * v;
    }
    cn[i] = n;
  }
}

template <typename T>
__device__ __forceinline__ T block_max(T v, T* smem) {
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) smem[wid] = v;
  __syncthreads();
  T r = smem[0];
#pragma unroll
  for (int w = 1; w < kWarpsPerBlock; ++w) r = xmax(r, smem[w]);
  return r;
}

// The bandwidth terms from h (double, on the device).
template <typename acc_t>
struct Bandwidth {
  acc_t inv_h2, log_h;
};
template <typename acc_t>
__device__ __forceinline__ Bandwidth<acc_t> bandwidth_terms(const double* h) {
  const double v = *h;
  return {static_cast<acc_t>(1.0 / (v * v)), static_cast<acc_t>(::log(v))};
}

// Combines the threads' online logsumexp states into the block's (every thread gets it): the
// largest term and the logsumexp.
template <typename acc_t>
struct BlockLse {
  acc_t max, lse;
};
template <typename acc_t>
__device__ __forceinline__ BlockLse<acc_t> block_logsumexp(const OnlineLogSumExp<acc_t>& s, acc_t* smem) {
  const acc_t mx = block_max(s.max, smem);
  const acc_t part = s.max == -std::numeric_limits<acc_t>::infinity() ? acc_t(0) : s.sum * xexp(s.max - mx);
  return {mx, mx + xlog(block_sum(part, smem))};
}

// Row i's shifted and unshifted coordinates into shared memory; returns ||z'||^2 (every thread).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t load_row(const scalar_t* __restrict__ z, int64_t i, int64_t d,
                                          const acc_t* __restrict__ shift, acc_t* zs, acc_t* raw,
                                          acc_t* smem) {
  acc_t n = acc_t(0);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    raw[j] = ld<acc_t>(z, i * d + j);
    zs[j] = raw[j] - shift[j];
    n += zs[j] * zs[j];
  }
  return block_sum(n, smem);  // (its barriers also publish zs and raw)
}

// One centre's score for the row in shared memory: expanded (shifted, transposed centres) or direct.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t score_at(bool direct, int64_t c, const acc_t* zs, const acc_t* raw,
                                          acc_t zn, const acc_t* __restrict__ ct,
                                          const acc_t* __restrict__ cn, const scalar_t* __restrict__ corig,
                                          int64_t s0, int64_t s1, int64_t m, int64_t d, acc_t inv_h2) {
  acc_t a = acc_t(0);
  if (direct) {
    for (int64_t j = 0; j < d; ++j) {
      const acc_t diff = raw[j] - ld<acc_t>(corig, c * s0 + j * s1);
      a += diff * diff;
    }
    return kde_score_direct(a, inv_h2);
  }
  for (int64_t j = 0; j < d; ++j) a += zs[j] * ct[j * m + c];
  return kde_score_expanded(a, zn, cn[c], inv_h2);
}

template <typename scalar_t, typename acc_t>
__global__ void kde_forward_kernel(const scalar_t* __restrict__ z, int64_t N, int64_t d,
                                   const scalar_t* __restrict__ corig, int64_t s0, int64_t s1, int64_t m,
                                   const acc_t* __restrict__ shift, const acc_t* __restrict__ ct,
                                   const acc_t* __restrict__ cn, const double* __restrict__ h,
                                   bool exclude_self,
                                   scalar_t* __restrict__ lp, acc_t* __restrict__ lse,
                                   bool* __restrict__ direct) {
  extern __shared__ unsigned char shared_raw[];
  acc_t* zs = reinterpret_cast<acc_t*>(shared_raw);
  acc_t* raw = zs + d;
  __shared__ acc_t smem[kWarpsPerBlock];
  const Bandwidth<acc_t> bw = bandwidth_terms<acc_t>(h);
  const acc_t cst = kde_const<acc_t>(exclude_self ? m - 1 : m, bw.log_h, d);
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const acc_t zn = load_row(z, i, d, shift, zs, raw, smem);
    acc_t l = acc_t(0);
    bool use_direct = false;
    for (int pass = 0; pass < 2; ++pass) {  // expanded, then (if its bound fails) direct
      OnlineLogSumExp<acc_t> s;
      for (int64_t c = threadIdx.x; c < m; c += blockDim.x) {
        if (exclude_self && c == i) continue;
        s.add(score_at(use_direct, c, zs, raw, zn, ct, cn, corig, s0, s1, m, d, bw.inv_h2));
      }
      const BlockLse<acc_t> b = block_logsumexp(s, smem);
      l = b.lse;
      if (use_direct || kde_expanded_ok(zn, b.max, bw.inv_h2, l + cst, d)) break;
      use_direct = true;
    }
    if (threadIdx.x == 0) {
      lse[i] = l;
      lp[i] = static_cast<scalar_t>(l + cst);
      direct[i] = use_direct;
    }
    __syncthreads();  // zs and raw are rewritten for the next row
  }
}

template <typename scalar_t, typename acc_t>
__global__ void kde_backward_kernel(const acc_t* __restrict__ g, const scalar_t* __restrict__ z,
                                    int64_t N, int64_t d, const scalar_t* __restrict__ corig,
                                    int64_t s0, int64_t s1, int64_t m, const acc_t* __restrict__ shift,
                                    const acc_t* __restrict__ ct, const acc_t* __restrict__ cn,
                                    const double* __restrict__ h, const acc_t* __restrict__ lse,
                                    const bool* __restrict__ direct, bool exclude_self,
                                    scalar_t* __restrict__ dz) {
  extern __shared__ unsigned char shared_raw[];
  acc_t* zs = reinterpret_cast<acc_t*>(shared_raw);
  acc_t* raw = zs + d;
  acc_t* acc = raw + d;        // (d) this row's weighted sums, coordinate j owned by thread j % blockDim
  acc_t* wbuf = acc + d;       // (blockDim) the weights of one chunk of centres
  __shared__ acc_t smem[kWarpsPerBlock];
  const Bandwidth<acc_t> bw = bandwidth_terms<acc_t>(h);
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const acc_t zn = load_row(z, i, d, shift, zs, raw, smem);
    const bool dir = direct[i];
    const acc_t l = lse[i], gi = g[i];
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) acc[j] = acc_t(0);
    acc_t wsum = acc_t(0);
    for (int64_t c0 = 0; c0 < m; c0 += blockDim.x) {
      const int64_t c = c0 + threadIdx.x;
      acc_t w = acc_t(0);
      if (c < m && !(exclude_self && c == i))
        w = xexp(score_at(dir, c, zs, raw, zn, ct, cn, corig, s0, s1, m, d, bw.inv_h2) - l) * gi;
      wbuf[threadIdx.x] = w;
      wsum += w;
      __syncthreads();
      const int64_t nc = m - c0 < int64_t(blockDim.x) ? m - c0 : int64_t(blockDim.x);
      for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
        acc_t a = acc[j];
        for (int64_t q = 0; q < nc; ++q) {
          const acc_t wq = wbuf[q];
          if (dir) {
            a += wq * (raw[j] - ld<acc_t>(corig, (c0 + q) * s0 + j * s1));
          } else {
            a += wq * ct[j * m + c0 + q];
          }
        }
        acc[j] = a;
      }
      __syncthreads();  // wbuf is rewritten by the next chunk
    }
    const acc_t W = block_sum(wsum, smem);
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
      dz[i * d + j] = static_cast<scalar_t>(dir ? kde_dz_direct(acc[j], bw.inv_h2)
                                                : kde_dz_expanded(W, zs[j], acc[j], bw.inv_h2));
    __syncthreads();  // zs, raw and acc are rewritten for the next row
  }
}

// The preparation: shift (d), transposed shifted centres (d, m) and norms (m) in one acc buffer.
struct Prepared {
  at::Tensor buf;
  at::Tensor h;  // the bandwidth as a 0-dim double on the device
};

template <typename scalar_t, typename acc_t>
Prepared prepare(const at::Tensor& centres, const at::Tensor& bandwidth, const at::Tensor& z,
                 cudaStream_t stream) {
  const int64_t m = centres.size(0), d = centres.size(1);
  Prepared p{at::empty({d + d * m + m}, z.options().dtype(acc_dtype_of(z))),
             bandwidth.to(z.device(), at::kDouble).contiguous()};
  acc_t* base = p.buf.data_ptr<acc_t>();
  const scalar_t* cp = centres.data_ptr<scalar_t>();
  kde_shift_kernel<scalar_t, acc_t><<<1, kThreads, 0, stream>>>(cp, centres.stride(0), centres.stride(1), m,
                                                                d, base);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  kde_pack_kernel<scalar_t, acc_t><<<grid_for(m), kThreads, 0, stream>>>(
      cp, centres.stride(0), centres.stride(1), m, d, base, base + d, base + d + d * m);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return p;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kde_log_prob_cuda(const at::Tensor& z_in,
                                                                 const at::Tensor& centres,
                                                                 const at::Tensor& bandwidth,
                                                                 bool exclude_self) {
  check_kde_args(z_in, centres, bandwidth, exclude_self);
  const int64_t N = z_in.size(0), d = z_in.size(1), m = centres.size(0);
  const c10::cuda::CUDAGuard guard(z_in.device());
  at::Tensor lp = at::empty({N}, z_in.options());
  at::Tensor lse = at::empty({N}, z_in.options().dtype(acc_dtype_of(z_in)));
  at::Tensor direct = at::zeros({N}, z_in.options().dtype(at::kBool));
  if (N == 0) return {lp, lse, direct};
  auto z = z_in.contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  XVAE_CUDA_DISPATCH_FLOATING(z.scalar_type(), "kde_log_prob_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const Prepared p = prepare<scalar_t, acc_t>(centres, bandwidth, z, stream);
    const acc_t* base = p.buf.data_ptr<acc_t>();
    const size_t shared = 2 * d * sizeof(acc_t);
    kde_forward_kernel<scalar_t, acc_t><<<grid_for(N, 1), kThreads, shared, stream>>>(
        z.data_ptr<scalar_t>(), N, d, centres.data_ptr<scalar_t>(), centres.stride(0), centres.stride(1),
        m, base, base + d, base + d + d * m, p.h.data_ptr<double>(), exclude_self,
        lp.data_ptr<scalar_t>(), lse.data_ptr<acc_t>(), direct.data_ptr<bool>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {lp, lse, direct};
}

at::Tensor kde_log_prob_backward_cuda(const at::Tensor& grad, const at::Tensor& z_in,
                                      const at::Tensor& centres, const at::Tensor& bandwidth,
                                      const at::Tensor& lse, const at::Tensor& direct, bool exclude_self) {
  check_kde_backward_args(grad, z_in, centres, bandwidth, lse, direct, exclude_self);
  const int64_t N = z_in.size(0), d = z_in.size(1), m = centres.size(0);
  const c10::cuda::CUDAGuard guard(z_in.device());
  at::Tensor dz = at::empty({N, d}, z_in.options());
  if (N == 0) return dz;
  auto z = z_in.contiguous();
  const auto acc_opts = z_in.options().dtype(acc_dtype_of(z_in));
  auto g = grad.to(acc_opts).contiguous();
  auto lse_c = lse.contiguous();
  auto dir = direct.contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  XVAE_CUDA_DISPATCH_FLOATING(z.scalar_type(), "kde_log_prob_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const Prepared p = prepare<scalar_t, acc_t>(centres, bandwidth, z, stream);
    const acc_t* base = p.buf.data_ptr<acc_t>();
    const size_t shared = (3 * d + kThreads) * sizeof(acc_t);
    kde_backward_kernel<scalar_t, acc_t><<<grid_for(N, 1), kThreads, shared, stream>>>(
        g.data_ptr<acc_t>(), z.data_ptr<scalar_t>(), N, d, centres.data_ptr<scalar_t>(), centres.stride(0),
        centres.stride(1), m, base, base + d, base + d + d * m, p.h.data_ptr<double>(),
        lse_c.data_ptr<acc_t>(), dir.data_ptr<bool>(), exclude_self, dz.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return dz;
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(xvae_fast, CUDA, m) {
  m.impl("kde_log_prob", &cuda::kde_log_prob_cuda);
  m.impl("kde_log_prob_backward", &cuda::kde_log_prob_backward_cuda);
}

}  // namespace xvae
