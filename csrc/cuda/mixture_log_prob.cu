// Diagonal Gaussian mixture log-density (op mixture_log_prob), CUDA. Math: ../mixture_density.h.
//
// Forward: one thread per row walks the C components with an online logsumexp (nothing of size
// N x C x d is formed); the component tables are read by all threads of a warp at the same address
// (broadcast loads). Backward: (A) one thread per row recomputes its joint terms (kept in the w
// buffer), log p and r-weighted upstream mean in one online pass, then turns the joint terms into
// w = d loss / d joint (N, C) in place and accumulates dz; (B) one block per
// (component, row chunk) sums the mean / log-variance pieces over its rows, threads over
// coordinates; (C) the chunk partials are added in chunk order. No atomics: the result is
// deterministic. Only the requested gradients are computed: with no parameter gradient (a frozen or
// detached prior, the KDE) (B) and (C) do not run and no partials are allocated; with no z gradient
// (A) skips dz.
#include <torch/library.h>

#include <algorithm>
#include <array>

#include "../mixture_density.h"
#include "cuda_common.cuh"

namespace xvae {
namespace cuda {
namespace {

constexpr int64_t kMaxChunks = 128;    // row chunks of the parameter gradients (bounds the partials)
constexpr int64_t kMinChunkRows = 256;

// Per-call tables in the accumulation type: m (C, d), p = exp(-lv) (C, d), kc (C).
template <typename acc_t>
struct Tables {
  const acc_t* m;
  const acc_t* p;
  const acc_t* kc;
};

// Strides of the parameter inputs: read in place, so a broadcast (stride-0) input is never copied.
struct ParamStrides {
  int64_t w, m0, m1, v0, v1;
};

template <typename scalar_t, typename acc_t>
__global__ void mixture_tables_kernel(const scalar_t* __restrict__ log_w,
                                      const scalar_t* __restrict__ means,
                                      const scalar_t* __restrict__ log_vars, ParamStrides st,
                                      int64_t C, int64_t d, acc_t* __restrict__ m,
                                      acc_t* __restrict__ p, acc_t* __restrict__ kc) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C;
       c += int64_t(gridDim.x) * blockDim.x) {
    acc_t sum_lv = acc_t(0);
    for (int64_t j = 0; j < d; ++j) {
      const acc_t v = ld<acc_t>(log_vars, c * st.v0 + j * st.v1);
      sum_lv += v;
      p[c * d + j] = xexp(-v);
      m[c * d + j] = ld<acc_t>(means, c * st.m0 + j * st.m1);
    }
    kc[c] = mixture_component_const(ld<acc_t>(log_w, c * st.w), sum_lv, d);
  }
}

template <typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t joint_at(const scalar_t* __restrict__ zr, const Tables<acc_t>& t,
                                          int64_t c, int64_t d) {
  acc_t q = acc_t(0);
  const acc_t* mc = t.m + c * d;
  const acc_t* pc = t.p + c * d;
  for (int64_t j = 0; j < d; ++j) q = mixture_quad_step(ld<acc_t>(zr, j), mc[j], pc[j], q);
  return mixture_joint(t.kc[c], q);
}

// Online logsumexp of row zr's joint terms (and their r-weighted mean of G_row, when given);
// with joint_out, also stores the joint terms there.
template <typename acc_t, typename scalar_t>
__device__ __forceinline__ OnlineLogSumExp<acc_t> row_logsumexp(const scalar_t* __restrict__ zr,
                                                                const Tables<acc_t>& t, int64_t C,
                                                                int64_t d, const acc_t* G_row,
                                                                acc_t* joint_out) {
  OnlineLogSumExp<acc_t> lse;
  for (int64_t c = 0; c < C; ++c) {
    const acc_t j = joint_at(zr, t, c, d);
    if (joint_out != nullptr) joint_out[c] = j;
    lse.add(j, G_row != nullptr ? G_row[c] : acc_t(0));
  }
  return lse;
}

template <typename scalar_t, typename acc_t>
__global__ void mixture_log_prob_kernel(const scalar_t* __restrict__ z, Tables<acc_t> t, int64_t N,
                                        int64_t C, int64_t d, scalar_t* __restrict__ lp,
                                        scalar_t* __restrict__ resp) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N;
       n += int64_t(gridDim.x) * blockDim.x) {
    const scalar_t* zr = z + n * d;
    const acc_t v = row_logsumexp<acc_t>(zr, t, C, d, nullptr, nullptr).value();
    lp[n] = static_cast<scalar_t>(v);
    if (resp != nullptr) {
      for (int64_t c = 0; c < C; ++c)
        resp[n * C + c] = static_cast<scalar_t>(xexp(joint_at(zr, t, c, d) - v));
    }
  }
}

// (A) w (N, C) and (when dz is given) dz (N, d) per row; G (N, C) is the upstream gradient on r, or
// null.
template <typename scalar_t, typename acc_t>
__global__ void mixture_rows_backward_kernel(const acc_t* __restrict__ g,
                                             const acc_t* __restrict__ G,
                                             const scalar_t* __restrict__ z, Tables<acc_t> t,
                                             int64_t N, int64_t C, int64_t d,
                                             acc_t* __restrict__ w, acc_t* __restrict__ dz_acc,
                                             scalar_t* __restrict__ dz) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N;
       n += int64_t(gridDim.x) * blockDim.x) {
    const scalar_t* zr = z + n * d;
    acc_t* wr = w + n * C;  // the joint terms first, then d loss / d joint in place
    const acc_t* Gr = G != nullptr ? G + n * C : nullptr;
    const OnlineLogSumExp<acc_t> lse = row_logsumexp<acc_t>(zr, t, C, d, Gr, wr);
    const acc_t v = lse.value(), rG = lse.mean_g(), gn = g[n];
    acc_t* dzr = dz != nullptr ? dz_acc + n * d : nullptr;  // this thread's row: no races
    if (dzr != nullptr)
      for (int64_t j = 0; j < d; ++j) dzr[j] = acc_t(0);
    for (int64_t c = 0; c < C; ++c) {
      const acc_t wc = mixture_joint_grad(xexp(wr[c] - v), gn, Gr != nullptr ? Gr[c] : acc_t(0), rG);
      wr[c] = wc;
      if (dzr == nullptr) continue;
      const acc_t* mc = t.m + c * d;
      const acc_t* pc = t.p + c * d;
      for (int64_t j = 0; j < d; ++j) dzr[j] = mixture_dz_step(ld<acc_t>(zr, j), mc[j], pc[j], wc, dzr[j]);
    }
    if (dzr != nullptr)
      for (int64_t j = 0; j < d; ++j) dz[n * d + j] = static_cast<scalar_t>(dzr[j]);
  }
}

// (B) partials over one chunk of rows for component blockIdx.x, chunk blockIdx.y.
template <typename scalar_t, typename acc_t>
__global__ void mixture_params_partial_kernel(const acc_t* __restrict__ w,
                                              const scalar_t* __restrict__ z, Tables<acc_t> t,
                                              int64_t N, int64_t C, int64_t d, int64_t chunk_rows,
                                              acc_t* __restrict__ part_m, acc_t* __restrict__ part_q,
                                              acc_t* __restrict__ part_w) {
  const int64_t c = blockIdx.x, k = blockIdx.y;
  const int64_t n0 = k * chunk_rows, n1 = n0 + chunk_rows < N ? n0 + chunk_rows : N;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const acc_t m = t.m[c * d + j];
    acc_t am = acc_t(0), aq = acc_t(0);
    for (int64_t n = n0; n < n1; ++n) mixture_param_step(ld<acc_t>(z, n * d + j), m, w[n * C + c], &am, &aq);
    part_m[(k * C + c) * d + j] = am;
    part_q[(k * C + c) * d + j] = aq;
  }
  if (threadIdx.x == 0) {
    acc_t ws = acc_t(0);
    for (int64_t n = n0; n < n1; ++n) ws += w[n * C + c];
    part_w[k * C + c] = ws;
  }
}

// (C) element e < C d: mean and log-variance gradients; e >= C d: log-weight gradient of c = e - C d.
template <typename scalar_t, typename acc_t>
__global__ void mixture_params_finish_kernel(const acc_t* __restrict__ part_m,
                                             const acc_t* __restrict__ part_q,
                                             const acc_t* __restrict__ part_w, Tables<acc_t> t,
                                             int64_t C, int64_t d, int64_t chunks,
                                             scalar_t* __restrict__ dm, scalar_t* __restrict__ dlv,
                                             scalar_t* __restrict__ dlw) {
  // Outputs not asked for are null.
  const int64_t total = C * d + C;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = e < C * d ? e / d : e - C * d;
    acc_t ws = acc_t(0);
    for (int64_t k = 0; k < chunks; ++k) ws += part_w[k * C + c];
    if (e >= C * d) {
      if (dlw != nullptr) dlw[c] = static_cast<scalar_t>(ws);
      continue;
    }
    if (dm == nullptr && dlv == nullptr) continue;
    acc_t sm = acc_t(0), sq = acc_t(0);
    for (int64_t k = 0; k < chunks; ++k) {
      sm += part_m[k * C * d + e];
      sq += part_q[k * C * d + e];
    }
    const acc_t p = t.p[e];
    if (dm != nullptr) dm[e] = static_cast<scalar_t>(mixture_mean_grad(p, sm));
    if (dlv != nullptr) dlv[e] = static_cast<scalar_t>(mixture_logvar_grad(p, sq, ws));
  }
}

// Fills a (C (2 d + 1),) acc buffer with the tables.
template <typename scalar_t, typename acc_t>
Tables<acc_t> launch_tables(const at::Tensor& log_weights, const at::Tensor& means,
                            const at::Tensor& log_vars, at::Tensor& buf, cudaStream_t stream) {
  const int64_t C = means.size(0), d = means.size(1);
  acc_t* base = buf.data_ptr<acc_t>();
  Tables<acc_t> t{base, base + C * d, base + 2 * C * d};
  const ParamStrides st{log_weights.stride(0), means.stride(0), means.stride(1), log_vars.stride(0),
                        log_vars.stride(1)};
  mixture_tables_kernel<scalar_t, acc_t><<<grid_for(C), kThreads, 0, stream>>>(
      log_weights.data_ptr<scalar_t>(), means.data_ptr<scalar_t>(), log_vars.data_ptr<scalar_t>(), st,
      C, d, base, base + C * d, base + 2 * C * d);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return t;
}

constexpr int kRowThreads = 128;  // rows per block of the per-row kernels

std::tuple<at::Tensor, at::Tensor> mixture_log_prob_cuda(const at::Tensor& z_in,
                                                         const at::Tensor& log_weights,
                                                         const at::Tensor& means,
                                                         const at::Tensor& log_vars,
                                                         bool return_resp) {
  check_mixture_log_prob_args(z_in, log_weights, means, log_vars);
  const int64_t N = z_in.size(0), d = z_in.size(1), C = log_weights.size(0);
  const c10::cuda::CUDAGuard guard(z_in.device());
  at::Tensor lp = at::empty({N}, z_in.options());
  at::Tensor resp = return_resp ? at::empty({N, C}, z_in.options()) : at::empty({0}, z_in.options());
  if (N == 0) return {lp, resp};
  auto z = z_in.contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  XVAE_CUDA_DISPATCH_FLOATING(z.scalar_type(), "mixture_log_prob_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor buf = at::empty({C * (2 * d + 1)}, z_in.options().dtype(acc_dtype_of(z_in)));
    const Tables<acc_t> t = launch_tables<scalar_t, acc_t>(log_weights, means, log_vars, buf, stream);
    mixture_log_prob_kernel<scalar_t, acc_t><<<grid_for(N, kRowThreads), kRowThreads, 0, stream>>>(
        z.data_ptr<scalar_t>(), t, N, C, d, lp.data_ptr<scalar_t>(),
        return_resp ? resp.data_ptr<scalar_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {lp, resp};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> mixture_log_prob_backward_cuda(
    const at::Tensor& grad, const std::optional<at::Tensor>& grad_resp, const at::Tensor& z_in,
    const at::Tensor& log_weights, const at::Tensor& means, const at::Tensor& log_vars,
    std::array<bool, 4> needs) {
  check_mixture_log_prob_backward_args(grad, grad_resp, z_in, log_weights, means, log_vars);
  const int64_t N = z_in.size(0), d = z_in.size(1), C = log_weights.size(0);
  const bool need_z = needs[0], need_params = needs[1] || needs[2] || needs[3];
  const c10::cuda::CUDAGuard guard(z_in.device());
  at::Tensor dz = need_z ? at::empty({N, d}, z_in.options()) : at::Tensor();
  at::Tensor dlw = needs[1] ? at::zeros({C}, z_in.options()) : at::Tensor();
  at::Tensor dm = needs[2] ? at::zeros({C, d}, z_in.options()) : at::Tensor();
  at::Tensor dlv = needs[3] ? at::zeros({C, d}, z_in.options()) : at::Tensor();
  if (N == 0 || !(need_z || need_params)) return {dz, dlw, dm, dlv};
  auto z = z_in.contiguous();
  const auto acc_opts = z_in.options().dtype(acc_dtype_of(z_in));
  auto g = grad.to(acc_opts).contiguous();
  at::Tensor G = grad_resp.has_value() ? grad_resp->to(acc_opts).contiguous() : at::Tensor();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t chunk_rows = std::max(kMinChunkRows, (N + kMaxChunks - 1) / kMaxChunks);
  const int64_t chunks = need_params ? (N + chunk_rows - 1) / chunk_rows : 0;
  XVAE_CUDA_DISPATCH_FLOATING(z.scalar_type(), "mixture_log_prob_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor buf = at::empty({C * (2 * d + 1)}, acc_opts);
    const Tables<acc_t> t = launch_tables<scalar_t, acc_t>(log_weights, means, log_vars, buf, stream);
    // w (N, C); dz accumulators (N, d) only for dz; the partials (chunks, C, d) x 2 and (chunks, C)
    // only for parameter gradients (chunks = 0 otherwise).
    const int64_t dz_size = need_z ? N * d : 0;
    at::Tensor ws = at::empty({N * C + dz_size + chunks * C * (2 * d + 1)}, acc_opts);
    acc_t* w = ws.data_ptr<acc_t>();
    acc_t* dz_acc = w + N * C;
    acc_t* part_m = dz_acc + dz_size;
    acc_t* part_q = part_m + chunks * C * d;
    acc_t* part_w = part_q + chunks * C * d;
    mixture_rows_backward_kernel<scalar_t, acc_t>
        <<<grid_for(N, kRowThreads), kRowThreads, 0, stream>>>(
            g.data_ptr<acc_t>(), G.defined() ? G.data_ptr<acc_t>() : nullptr,
            z.data_ptr<scalar_t>(), t, N, C, d, w, dz_acc,
            need_z ? dz.data_ptr<scalar_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (!need_params) return;
    const int threads = static_cast<int>(std::min<int64_t>(kThreads, std::max<int64_t>(kWarp, (d + kWarp - 1) / kWarp * kWarp)));
    const dim3 grid(static_cast<unsigned>(C), static_cast<unsigned>(chunks));
    mixture_params_partial_kernel<scalar_t, acc_t><<<grid, threads, 0, stream>>>(
        w, z.data_ptr<scalar_t>(), t, N, C, d, chunk_rows, part_m, part_q, part_w);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    mixture_params_finish_kernel<scalar_t, acc_t><<<grid_for(C * d + C), kThreads, 0, stream>>>(
        part_m, part_q, part_w, t, C, d, chunks, dm.defined() ? dm.data_ptr<scalar_t>() : nullptr,
        dlv.defined() ? dlv.data_ptr<scalar_t>() : nullptr,
        dlw.defined() ? dlw.data_ptr<scalar_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dz, dlw, dm, dlv};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(xvae_fast, CUDA, m) {
  m.impl("mixture_log_prob", &cuda::mixture_log_prob_cuda);
  m.impl("mixture_log_prob_backward", &cuda::mixture_log_prob_backward_cuda);
}

}  // namespace xvae
