// Routed transport (SPEC: routed_transport), CUDA: forward draws and transports (one thread per Philox
// pair = two flat elements); backward gathers, for each output element (i, j), the dz of the
// coordinates routed to column j in ascending k (deterministic, no atomics). Also draw_noise, the
// replay of the draws of an rng_state. Same draws and formulas as cpu/routed_transport.cpp and
// cpu/noise_cpu.h (xvae_math.h).
#include <torch/library.h>

#include "../categorical_table.h"
#include "cuda_common.cuh"

namespace xvae {
namespace cuda {
namespace {

// m_diag[k] = M[k,k], inv_s_diag[k] = 1 / S[k,k], into a (2K,) buffer.
template <typename acc_t>
__global__ void diag_consts_kernel(const acc_t* __restrict__ M, const acc_t* __restrict__ S,
                                   int64_t K, acc_t* __restrict__ out) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < K;
       k += int64_t(gridDim.x) * blockDim.x) {
    out[k] = M[k * K + k];
    out[K + k] = acc_t(1) / S[k * K + k];
  }
}

template <typename scalar_t, typename acc_t, typename comp_t>
__global__ void routed_transport_kernel(const scalar_t* __restrict__ mu,
                                        const scalar_t* __restrict__ logvar,
                                        const acc_t* __restrict__ M, const acc_t* __restrict__ S,
                                        const acc_t* __restrict__ m_diag,
                                        const acc_t* __restrict__ inv_s_diag, CategoricalTable tp,
                                        CategoricalTable tq, const int32_t* __restrict__ codes,
                                        int64_t B, int64_t K, int64_t P,
                                        at::PhiloxCudaState philox_args, scalar_t* __restrict__ z,
                                        comp_t* __restrict__ comp, int64_t* __restrict__ rng_state) {
  const auto [seed, off_blocks] = unpack_and_record(philox_args, rng_state);
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t n = B * K, npairs = (n + 1) / 2;
  for (int64_t p = tid; p < npairs; p += int64_t(gridDim.x) * blockDim.x) {
    const PairDraw<acc_t> d = draw_pair<acc_t>(seed, off_blocks, static_cast<uint64_t>(p));
#pragma unroll
    for (int lane = 0; lane < 2; ++lane) {
      const int64_t e = 2 * p + lane;
      if (e >= n) break;
      const int64_t i = e / K, k = e - i * K;
      const int32_t code = codes[k];
      const double u_row =
          plan_tie_row(code) && plan_route(code) != kRouteHome
              ? uniform_open(philox_row_word(seed, off_blocks, static_cast<uint64_t>(i)))
              : 0.0;
      int32_t c;
      const acc_t v = routed_value<acc_t>(code, static_cast<int32_t>(k), static_cast<int32_t>(K),
                                          mu + i * K, logvar + i * K, M, S, m_diag, inv_s_diag,
                                          tp, tq, d.eta[lane], uniform_open(d.word[lane]), u_row,
                                          &c);
      z[e] = static_cast<scalar_t>(v);
      if (plan_source(code) == kSourcePosterior) {
        // The CUDA launcher does not read the plan on the host; an out-of-range slot is dropped
        // instead of written out of bounds.
        const int32_t slot = plan_slot(code);
        if (slot >= 0 && slot < P) comp[i * P + slot] = static_cast<comp_t>(c);
      }
    }
  }
}

// slot_k[s] = the coordinate whose plan slot is s (posterior-source coordinates), -1 if none.
// One block; atomicMax keeps the result deterministic even for a malformed plan.
__global__ void slot_map_kernel(const int32_t* __restrict__ codes, int64_t K, int64_t P,
                                int32_t* __restrict__ slot_k) {
  for (int64_t s = threadIdx.x; s < P; s += blockDim.x) slot_k[s] = -1;
  __syncthreads();
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    const int32_t code = codes[k];
    if (plan_direct(code) && plan_source(code) == kSourcePosterior) {
      const int32_t s = plan_slot(code);
      if (s >= 0 && s < P) atomicMax(slot_k + s, static_cast<int32_t>(k));
    }
  }
}

// dmu[i,j] = sum of g[i,k] and dlogvar[i,j] = sum of 0.5 g[i,k] (z[i,k] - mu[i,j]) over the k with
// routed_grad_column(code_k, k, comp_row) == j, added in ascending k (the CPU's order). Column j
// receives its own coordinate (transport, k = j) and the direct posterior-source coordinates whose
// drawn component is j; the latter are the plan's slots, visited through slot_k in slot (= k) order.
template <typename scalar_t, typename acc_t, typename comp_t>
__global__ void routed_transport_backward_kernel(const scalar_t* __restrict__ gz,
                                                 const scalar_t* __restrict__ z,
                                                 const scalar_t* __restrict__ mu,
                                                 const comp_t* __restrict__ comp,
                                                 const int32_t* __restrict__ codes,
                                                 const int32_t* __restrict__ slot_k, int64_t B,
                                                 int64_t K, int64_t P, scalar_t* __restrict__ dmu,
                                                 scalar_t* __restrict__ dlv) {
  const int64_t n = B * K;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / K, j = e - i * K;
    const comp_t* comp_row = comp + i * P;
    const acc_t mu_ij = ld<acc_t>(mu, e);
    // routed_grad_column(code_j, j, .) == j exactly when coordinate j is transported.
    bool self_pending = !plan_direct(codes[j]);
    acc_t am = acc_t(0), av = acc_t(0);
    for (int64_t s = 0; s < P; ++s) {
      const int32_t k = slot_k[s];
      if (k < 0) continue;
      if (self_pending && k > j) {
        const acc_t g = ld<acc_t>(gz, e);
        am += g;
        av += acc_t(0.5) * g * (ld<acc_t>(z, e) - mu_ij);
        self_pending = false;
      }
      const int32_t code = codes[k];
      if (!plan_direct(code)) continue;  // only direct posterior sources scatter
      if (routed_grad_column(code, k, comp_row) != j) continue;
      const int64_t ek = i * K + k;
      const acc_t g = ld<acc_t>(gz, ek);
      am += g;
      av += acc_t(0.5) * g * (ld<acc_t>(z, ek) - mu_ij);
    }
    if (self_pending) {
      const acc_t g = ld<acc_t>(gz, e);
      am += g;
      av += acc_t(0.5) * g * (ld<acc_t>(z, e) - mu_ij);
    }
    dmu[e] = static_cast<scalar_t>(am);
    dlv[e] = static_cast<scalar_t>(av);
  }
}

// draw_noise: eta[e], u[e] for e < rows*cols, u_row[i] for i < rows; seed and offset read on the device.
template <typename acc_t>
__global__ void draw_noise_kernel(const int64_t* __restrict__ rng_state, int64_t rows, int64_t cols,
                                  acc_t* __restrict__ eta, double* __restrict__ u,
                                  double* __restrict__ u_row) {
  const uint64_t seed = static_cast<uint64_t>(rng_state[0]);
  const uint64_t off_blocks = static_cast<uint64_t>(rng_state[1]) / 4;
  const int64_t n = rows * cols, npairs = (n + 1) / 2;
  const int64_t items = npairs > rows ? npairs : rows;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < items;
       t += int64_t(gridDim.x) * blockDim.x) {
    if (t < npairs) {
      const PairDraw<acc_t> d = draw_pair<acc_t>(seed, off_blocks, static_cast<uint64_t>(t));
      const int64_t e = 2 * t;
      eta[e] = d.eta[0];
      u[e] = uniform_open(d.word[0]);
      if (e + 1 < n) {
        eta[e + 1] = d.eta[1];
        u[e + 1] = uniform_open(d.word[1]);
      }
    }
    if (t < rows) u_row[t] = uniform_open(philox_row_word(seed, off_blocks, static_cast<uint64_t>(t)));
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> routed_transport_cuda(
    const at::Tensor& mu_in, const at::Tensor& logvar_in, const at::Tensor& means,
    const at::Tensor& stds, const at::Tensor& pi_p, const std::optional<at::Tensor>& pi_q,
    const at::Tensor& plan_in, int64_t num_posterior, std::optional<at::Generator> generator) {
  check_routed_transport_args(mu_in, logvar_in, means, stds, pi_p, pi_q, plan_in, num_posterior);
  const int64_t B = mu_in.size(0), K = mu_in.size(1);
  // The plan codes themselves are validated by the Python API (reading them here would sync).
  const c10::cuda::CUDAGuard guard(mu_in.device());
  const at::PhiloxCudaState philox_args = cuda_philox_state(generator, mu_in.device().index());
  at::Tensor z = at::empty({B, K}, mu_in.options());
  at::Tensor comp = at::empty({B, num_posterior}, mu_in.options().dtype(component_dtype(K)));
  at::Tensor rng_state = at::empty({2}, mu_in.options().dtype(at::kLong));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (B == 0 || K == 0) {
    launch_write_rng_state(philox_args, rng_state, stream);
    return {z, comp, rng_state};
  }
  auto mu = mu_in.contiguous(), logvar = logvar_in.contiguous(), plan = plan_in.contiguous();
  auto M = means.contiguous(), S = stds.contiguous();
  const CategoricalTensors tab_p = build_categorical(pi_p);
  std::optional<CategoricalTensors> tab_q;
  if (pi_q.has_value()) tab_q = build_categorical(*pi_q);
  const CategoricalTable tp = tab_p.view();
  const CategoricalTable tq = tab_q ? tab_q->view() : tp;
  const int64_t npairs = (B * K + 1) / 2;
  XVAE_CUDA_DISPATCH_FLOATING(mu.scalar_type(), "routed_transport_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor diag = at::empty({2 * K}, M.options());
    acc_t* dp = diag.data_ptr<acc_t>();
    diag_consts_kernel<acc_t><<<grid_for(K), kThreads, 0, stream>>>(
        M.data_ptr<acc_t>(), S.data_ptr<acc_t>(), K, dp);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    auto launch = [&](auto* comp_ptr) {
      using comp_t = std::remove_pointer_t<decltype(comp_ptr)>;
      routed_transport_kernel<scalar_t, acc_t, comp_t><<<grid_for(npairs), kThreads, 0, stream>>>(
          mu.data_ptr<scalar_t>(), logvar.data_ptr<scalar_t>(), M.data_ptr<acc_t>(),
          S.data_ptr<acc_t>(), dp, dp + K, tp, tq, plan.data_ptr<int32_t>(), B, K, num_posterior,
          philox_args, z.data_ptr<scalar_t>(), comp_ptr, rng_state.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (comp.scalar_type() == at::kShort) {
      launch(num_posterior > 0 ? comp.data_ptr<int16_t>() : static_cast<int16_t*>(nullptr));
    } else {
      launch(num_posterior > 0 ? comp.data_ptr<int32_t>() : static_cast<int32_t*>(nullptr));
    }
  });
  return {z, comp, rng_state};
}

std::tuple<at::Tensor, at::Tensor> routed_transport_backward_cuda(const at::Tensor& grad_z,
                                                                  const at::Tensor& z,
                                                                  const at::Tensor& mu,
                                                                  const at::Tensor& comp,
                                                                  const at::Tensor& plan_in) {
  check_routed_transport_backward_args(grad_z, z, mu, comp, plan_in);
  const int64_t B = mu.size(0), K = mu.size(1);
  const c10::cuda::CUDAGuard guard(mu.device());
  at::Tensor dmu = at::empty({B, K}, mu.options()), dlv = at::empty({B, K}, mu.options());
  if (B == 0 || K == 0) return {dmu, dlv};
  const int64_t P = comp.size(1);
  auto plan = plan_in.contiguous();
  auto gz = grad_z.contiguous(), zc = z.contiguous(), muc = mu.contiguous(), cc = comp.contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor slot_k = at::empty({P}, plan.options());
  if (P > 0) {
    slot_map_kernel<<<1, kThreads, 0, stream>>>(plan.data_ptr<int32_t>(), K, P,
                                                slot_k.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const int32_t* skp = P > 0 ? slot_k.data_ptr<int32_t>() : nullptr;
  XVAE_CUDA_DISPATCH_FLOATING(mu.scalar_type(), "routed_transport_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto launch = [&](const auto* comp_ptr) {
      using comp_t = std::remove_const_t<std::remove_pointer_t<decltype(comp_ptr)>>;
      routed_transport_backward_kernel<scalar_t, acc_t, comp_t>
          <<<grid_for(B * K), kThreads, 0, stream>>>(
              gz.data_ptr<scalar_t>(), zc.data_ptr<scalar_t>(), muc.data_ptr<scalar_t>(), comp_ptr,
              plan.data_ptr<int32_t>(), skp, B, K, P, dmu.data_ptr<scalar_t>(),
              dlv.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (cc.scalar_type() == at::kShort) {
      launch(P > 0 ? cc.data_ptr<int16_t>() : static_cast<int16_t*>(nullptr));
    } else {
      launch(P > 0 ? cc.data_ptr<int32_t>() : static_cast<int32_t*>(nullptr));
    }
  });
  return {dmu, dlv};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> draw_noise_cuda(const at::Tensor& rng_state_in,
                                                               int64_t rows, int64_t cols,
                                                               bool double_precision) {
  TORCH_CHECK(rows >= 0 && cols >= 0, "xvae_fast: draw_noise needs rows, cols >= 0");
  const c10::cuda::CUDAGuard guard(rng_state_in.device());
  const at::Tensor rng_state = rng_state_on(rng_state_in, rng_state_in.device());
  auto f64 = rng_state_in.options().dtype(at::kDouble);
  at::Tensor eta = at::empty({rows, cols}, f64.dtype(double_precision ? at::kDouble : at::kFloat));
  at::Tensor u = at::empty({rows, cols}, f64), u_row = at::empty({rows}, f64);
  if (rows == 0) return {eta, u, u_row};
  const int64_t npairs = (rows * cols + 1) / 2;
  const int64_t items = npairs > rows ? npairs : rows;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(eta.scalar_type(), "draw_noise_cuda", [&] {
    draw_noise_kernel<scalar_t><<<grid_for(items), kThreads, 0, stream>>>(
        rng_state.data_ptr<int64_t>(), rows, cols, eta.data_ptr<scalar_t>(), u.data_ptr<double>(),
        u_row.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {eta, u, u_row};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(xvae_fast, CUDA, m) {
  m.impl("routed_transport", &cuda::routed_transport_cuda);
  m.impl("routed_transport_backward", &cuda::routed_transport_backward_cuda);
  m.impl("draw_noise", &cuda::draw_noise_cuda);
}

}  // namespace xvae
