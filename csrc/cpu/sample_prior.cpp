// Prior sampling for generation (SPEC: Generation), CPU. Backward recomputes the draws from the
// saved rng_state, so nothing but the (2,) state is kept between passes.
#include <torch/library.h>

#include "../categorical_table.h"
#include "../checks.h"
#include "categorical_cpu.h"
#include "noise_cpu.h"

namespace xvae {
namespace {

// Calls f(i, k, c, eta) for every element of an n x K prior draw.
template <typename acc_t, typename F>
void for_each_prior_draw(uint64_t seed, uint64_t offset, int64_t n, int64_t K,
                         const CategoricalTable& tab, int32_t C, bool per_row, int64_t k0,
                         int64_t k1, int64_t i0, int64_t i1, F&& f) {
  std::vector<acc_t> eta(K);
  std::vector<uint32_t> word(K);
  for (int64_t i = i0; i < i1; ++i) {
    draw_span<acc_t>(seed, offset, i * K + k0, i * K + k1, eta.data(), word.data());
    int32_t c_row = 0;
    if (per_row)
      c_row = sample_categorical(tab, C, uniform_open(philox_row_word(seed, offset / 4, i)));
    for (int64_t k = k0; k < k1; ++k) {
      const int32_t c = per_row ? c_row : sample_categorical(tab, C, uniform_open(word[k - k0]));
      f(i, k, c, eta[k - k0]);
    }
  }
}

std::tuple<at::Tensor, at::Tensor> sample_prior_cpu(const at::Tensor& means_in,
                                                    const at::Tensor& stds_in,
                                                    const at::Tensor& pi_p, int64_t n, double alpha,
                                                    bool per_row,
                                                    std::optional<at::Generator> generator) {
  check_prior_tables(means_in, stds_in, pi_p);
  TORCH_CHECK(n >= 0, "xvae_fast: n must be >= 0, got ", n);
  const int64_t C = means_in.size(0), K = means_in.size(1);
  const auto so = cpu_seed_offset(generator);
  at::Tensor z = at::empty({n, K}, means_in.options());
  if (n > 0 && K > 0) {
    auto means = means_in.contiguous(), stds = stds_in.contiguous();
    auto tab = build_categorical_cpu(pi_p);
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "sample_prior_cpu", [&] {
      const scalar_t* M = means.data_ptr<scalar_t>();
      const scalar_t* S = stds.data_ptr<scalar_t>();
      scalar_t* zp = z.data_ptr<scalar_t>();
      const CategoricalTable tv = tab.view();
      at::parallel_for(0, n, std::max<int64_t>(1, (int64_t(1) << 14) / K), [&](int64_t i0, int64_t i1) {
        for_each_prior_draw<scalar_t>(so.first, so.second, n, K, tv, C, per_row, 0, K, i0, i1,
                                      [&](int64_t i, int64_t k, int32_t c, scalar_t eta) {
          zp[i * K + k] = prior_value<scalar_t>(M, S, c, k, K, scalar_t(alpha), eta);
        });
      });
    });
  }
  return {z, make_rng_state(so)};
}

std::tuple<at::Tensor, at::Tensor> sample_prior_backward_cpu(const at::Tensor& grad_z,
                                                             const at::Tensor& rng_state,
                                                             const at::Tensor& means,
                                                             const at::Tensor& stds,
                                                             const at::Tensor& pi_p, double alpha,
                                                             bool per_row) {
  check_prior_tables(means, stds, pi_p);
  const int64_t C = means.size(0), K = means.size(1);
  TORCH_CHECK(grad_z.dim() == 2 && grad_z.size(1) == K && grad_z.scalar_type() == means.scalar_type(),
              "xvae_fast: grad_z must be (n, K) with the dtype of means");
  const int64_t n = grad_z.size(0);
  const auto so = read_rng_state(rng_state);
  at::Tensor dM = at::zeros_like(means), dS = at::zeros_like(means);
  if (n == 0 || K == 0) return {dM, dS};
  auto g = grad_z.contiguous();
  auto tab = build_categorical_cpu(pi_p);
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "sample_prior_backward_cpu", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* dMp = dM.data_ptr<scalar_t>();
    scalar_t* dSp = dS.data_ptr<scalar_t>();
    const CategoricalTable tv = tab.view();
    // Threads own disjoint column ranges of dM and dS: no races, and a fixed summation order.
    at::parallel_for(0, K, 1, [&](int64_t k0, int64_t k1) {
      for_each_prior_draw<scalar_t>(so.first, so.second, n, K, tv, C, per_row, k0, k1, 0, n,
                                    [&](int64_t i, int64_t k, int32_t c, scalar_t eta) {
        const scalar_t gi = gp[i * K + k];
        dMp[c * K + k] += gi;
        dSp[c * K + k] += gi * scalar_t(alpha) * eta;
      });
    });
  });
  return {dM, dS};
}

}  // namespace

TORCH_LIBRARY_IMPL(xvae_fast, CPU, m) {
  m.impl("sample_prior", &sample_prior_cpu);
  m.impl("sample_prior_backward", &sample_prior_backward_cpu);
}

}  // namespace xvae
