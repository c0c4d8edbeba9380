// Single-Gaussian X-VAE KL (SPEC: gaussian_kl), CPU: per-row sums of KLN, and the elementwise backward.
#include <torch/library.h>

#include "../checks.h"
#include "cpu_common.h"

namespace xvae {
namespace {

at::Tensor gaussian_kl_forward_cpu(const at::Tensor& mu_in, const at::Tensor& logvar_in,
                                   const at::Tensor& prior_mean, const at::Tensor& prior_std,
                                   int64_t reduction) {
  check_gaussian_kl_args(mu_in, logvar_in, prior_mean, prior_std, reduction);
  const int64_t B = mu_in.size(0), K = mu_in.size(1);
  at::Tensor rows = at::zeros({B}, mu_in.options().dtype(acc_dtype_of(mu_in)));
  if (B > 0 && K > 0) {
    auto mu = mu_in.contiguous(), logvar = logvar_in.contiguous();
    XVAE_DISPATCH_FLOATING(mu.scalar_type(), "gaussian_kl_forward_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      auto sc = prior_std.contiguous(), mc = prior_mean.contiguous();
      std::vector<acc_t> m(mc.data_ptr<acc_t>(), mc.data_ptr<acc_t>() + K), log_s(K), inv_s2(K);
      for (int64_t k = 0; k < K; ++k) {
        const acc_t s = sc.data_ptr<acc_t>()[k];
        log_s[k] = std::log(s);
        inv_s2[k] = acc_t(1) / (s * s);
      }
      acc_t* out = rows.data_ptr<acc_t>();
      at::parallel_for(0, B, std::max<int64_t>(1, (int64_t(1) << 15) / K), [&](int64_t i0, int64_t i1) {
        RowReader<scalar_t, acc_t> Mr(mu.data_ptr<scalar_t>(), K), Vr(logvar.data_ptr<scalar_t>(), K);
        for (int64_t i = i0; i < i1; ++i) {
          const acc_t* mrow = Mr.row(i);
          const acc_t* vrow = Vr.row(i);
          LaneSum<acc_t> s;
          for_each_lane<acc_t>(K, [&](auto t, int64_t k) {
            s.add(kln(ld(mrow + k, t), ld(vrow + k, t), ld(m.data() + k, t), ld(log_s.data() + k, t),
                      ld(inv_s2.data() + k, t)));
          });
          out[i] = s.total();
        }
      });
    });
  }
  // Row values are summed in the accumulation dtype, in a fixed order.
  if (reduction == kNone) return rows.to(mu_in.scalar_type());
  at::Tensor r = reduction == kMean ? (B > 0 ? rows.sum().div(static_cast<double>(B)) : rows.sum())
                                    : rows.sum();
  return r.to(mu_in.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> gaussian_kl_backward_cpu(const at::Tensor& grad,
                                                            const at::Tensor& mu_in,
                                                            const at::Tensor& logvar_in,
                                                            const at::Tensor& prior_mean,
                                                            const at::Tensor& prior_std,
                                                            int64_t reduction) {
  check_gaussian_kl_args(mu_in, logvar_in, prior_mean, prior_std, reduction);
  const int64_t B = mu_in.size(0), K = mu_in.size(1);
  check_grad(grad, "grad", reduction, B);
  at::Tensor dmu = at::empty({B, K}, mu_in.options()), dlv = at::empty({B, K}, mu_in.options());
  if (B == 0 || K == 0) return {dmu, dlv};
  auto mu = mu_in.contiguous(), logvar = logvar_in.contiguous();
  auto g = grad.to(acc_dtype_of(mu_in)).contiguous();
  XVAE_DISPATCH_FLOATING(mu.scalar_type(), "gaussian_kl_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto sc = prior_std.contiguous(), mc = prior_mean.contiguous();
    std::vector<acc_t> m(mc.data_ptr<acc_t>(), mc.data_ptr<acc_t>() + K), log_s(K), inv_s2(K);
    for (int64_t k = 0; k < K; ++k) {
      const acc_t s = sc.data_ptr<acc_t>()[k];
      log_s[k] = std::log(s);
      inv_s2[k] = acc_t(1) / (s * s);
    }
    const acc_t* gp = g.data_ptr<acc_t>();
    const acc_t scale = reduction == kMean ? acc_t(1) / acc_t(B) : acc_t(1);
    scalar_t* dmp = dmu.data_ptr<scalar_t>();
    scalar_t* dvp = dlv.data_ptr<scalar_t>();
    at::parallel_for(0, B, std::max<int64_t>(1, (int64_t(1) << 15) / K), [&](int64_t i0, int64_t i1) {
      RowReader<scalar_t, acc_t> Mr(mu.data_ptr<scalar_t>(), K), Vr(logvar.data_ptr<scalar_t>(), K);
      // float32 and float64 write the gradients in place (a row buffer and its copy cost ~10% here).
      constexpr bool same = std::is_same<scalar_t, acc_t>::value;
      std::vector<acc_t> om(same ? 0 : K), ov(same ? 0 : K);
      for (int64_t i = i0; i < i1; ++i) {
        const acc_t* mrow = Mr.row(i);
        const acc_t* vrow = Vr.row(i);
        const acc_t gi = (reduction == kNone ? gp[i] : gp[0]) * scale;
        acc_t* gm = same ? reinterpret_cast<acc_t*>(dmp + i * K) : om.data();
        acc_t* gv = same ? reinterpret_cast<acc_t*>(dvp + i * K) : ov.data();
        for_each_lane<acc_t>(K, [&](auto t, int64_t k) {
          using T = decltype(t);
          T inv = ld(inv_s2.data() + k, t);
          st(gm + k, T(gi) * kln_grad_mu(ld(mrow + k, t), ld(m.data() + k, t), inv));
          st(gv + k, T(gi) * kln_grad_logvar(ld(vrow + k, t), ld(log_s.data() + k, t)));
        });
        if constexpr (!same) {
          store_row(dmp + i * K, om.data(), K);
          store_row(dvp + i * K, ov.data(), K);
        }
      }
    });
  });
  return {dmu, dlv};
}

}  // namespace

TORCH_LIBRARY_IMPL(xvae_fast, CPU, m) {
  m.impl("gaussian_kl_forward", &gaussian_kl_forward_cpu);
  m.impl("gaussian_kl_backward", &gaussian_kl_backward_cpu);
}

}  // namespace xvae
