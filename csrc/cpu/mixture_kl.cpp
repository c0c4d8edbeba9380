// Two-part mixture KL (SPEC: mixture_kl), CPU. Forward: one pass over the batch that accumulates
// pi_q and the column sums of KLN (plus a second, per-row pass for reduction "none"). Backward: the
// categorical gradient needs h_k, known from the forward's statistics, so one elementwise pass writes
// all three gradients (reduction "none" first re-weights the KLN column sums by the upstream
// gradient, a second batch reduction).
#include <torch/library.h>

#include "../checks.h"
#include "cpu_common.h"

namespace xvae {
namespace {

// Per-coordinate prior constants.
template <typename acc_t>
struct PriorConsts {
  std::vector<acc_t> m, log_s, inv_s2;
  PriorConsts(const at::Tensor& m_t, const at::Tensor& s_t) {
    int64_t K = m_t.numel();
    auto m_c = m_t.contiguous(), s_c = s_t.contiguous();
    const acc_t* mp = m_c.data_ptr<acc_t>();
    const acc_t* sp = s_c.data_ptr<acc_t>();
    m.assign(mp, mp + K);
    log_s.resize(K);
    inv_s2.resize(K);
    for (int64_t k = 0; k < K; ++k) {
      log_s[k] = std::log(sp[k]);
      inv_s2[k] = acc_t(1) / (sp[k] * sp[k]);
    }
  }
};

// sp[k] = softplus(l[k]) * exp(-c) for the row's scale c; returns sum_k sp[k].
template <typename acc_t>
inline acc_t scaled_softplus_row(const acc_t* l, acc_t* sp, int64_t K, acc_t& c_out) {
  acc_t c = std::min(row_max(l, K), acc_t(0));
  c_out = c;
  LaneSum<acc_t> S;
  for_each_lane<acc_t>(K, [&](auto t, int64_t k) {
    using T = decltype(t);
    T x = ld(l + k, t);
    T v = c < acc_t(0) ? scaled_softplus_neg(x, T(c)) : softplus(x);
    st(sp + k, v);
    S.add(v);
  });
  return S.total();
}

// As scaled_softplus_row, also writing sg[k] = sigmoid(l[k]) * exp(-c), the backward's derivative,
// and returning sum_k h[k] sp[k] in h_dot.
template <typename acc_t>
inline acc_t scaled_softplus_sigmoid_row(const acc_t* l, const acc_t* h, acc_t* sp, acc_t* sg,
                                         int64_t K, acc_t& h_dot) {
  const acc_t c = std::min(row_max(l, K), acc_t(0));
  LaneSum<acc_t> S, H;
  for_each_lane<acc_t>(K, [&](auto t, int64_t k) {
    using T = decltype(t);
    const T x = ld(l + k, t);
    T v, d;
    if (c < acc_t(0)) {
      v = scaled_softplus_neg(x, T(c));
      d = scaled_sigmoid_neg(x, T(c));
    } else {
      v = softplus_and_sigmoid(x, &d);
    }
    st(sp + k, v);
    st(sg + k, d);
    S.add(v);
    H.add(ld(h + k, t) * v);
  });
  h_dot = H.total();
  return S.total();
}

template <typename scalar_t>
void mixture_kl_forward_kernel(const at::Tensor& logits, const at::Tensor& mu,
                               const at::Tensor& logvar, const at::Tensor& log_pi_p,
                               const at::Tensor& m_t, const at::Tensor& s_t, int64_t reduction,
                               at::Tensor& total, at::Tensor& categorical, at::Tensor& gaussian,
                               at::Tensor& pi_q_t, at::Tensor& kln_colsum_t) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = logits.size(0), K = logits.size(1);
  PriorConsts<acc_t> pc(m_t, s_t);
  const scalar_t* lp = logits.data_ptr<scalar_t>();
  const scalar_t* mup = mu.data_ptr<scalar_t>();
  const scalar_t* lvp = logvar.data_ptr<scalar_t>();

  const int64_t nblk = (B + kRowBlock - 1) / kRowBlock;
  std::vector<acc_t> pq_part(nblk * K, acc_t(0)), kc_part(nblk * K, acc_t(0));

  at::parallel_for(0, nblk, block_grain(K), [&](int64_t b0, int64_t b1) {
    RowReader<scalar_t, acc_t> Lr(lp, K), Mr(mup, K), Vr(lvp, K);
    std::vector<acc_t> sp(K);
    for (int64_t blk = b0; blk < b1; ++blk) {
      acc_t* pq = pq_part.data() + blk * K;
      acc_t* kc = kc_part.data() + blk * K;
      const int64_t i1 = std::min(B, (blk + 1) * kRowBlock);
      for (int64_t i = blk * kRowBlock; i < i1; ++i) {
        const acc_t* l = Lr.row(i);
        const acc_t* mrow = Mr.row(i);
        const acc_t* vrow = Vr.row(i);
        acc_t c;
        const acc_t invS = acc_t(1) / scaled_softplus_row(l, sp.data(), K, c);
        for_each_lane<acc_t>(K, [&](auto t, int64_t k) {
          using T = decltype(t);
          st(pq + k, ld(pq + k, t) + ld(sp.data() + k, t) * T(invS));
          T kl = kln(ld(mrow + k, t), ld(vrow + k, t), ld(pc.m.data() + k, t),
                     ld(pc.log_s.data() + k, t), ld(pc.inv_s2.data() + k, t));
          st(kc + k, ld(kc + k, t) + kl);
        });
      }
    }
  });

  // Blocks are added in a fixed order: the result does not depend on the thread count.
  acc_t* pi_q = pi_q_t.data_ptr<acc_t>();
  acc_t* kcs = kln_colsum_t.data_ptr<acc_t>();
  const acc_t* lpp = log_pi_p.data_ptr<acc_t>();
  for (int64_t k = 0; k < K; ++k) {
    acc_t a = 0, b = 0;
    for (int64_t blk = 0; blk < nblk; ++blk) {
      a += pq_part[blk * K + k];
      b += kc_part[blk * K + k];
    }
    pi_q[k] = a / acc_t(B);
    kcs[k] = b;
  }
  acc_t cat = 0, gauss_sum = 0;
  for (int64_t k = 0; k < K; ++k) {
    if (pi_q[k] > acc_t(0)) cat += pi_q[k] * (std::log(pi_q[k]) - lpp[k]);
    gauss_sum += pi_q[k] * kcs[k];
  }

  if (reduction == kNone) {
    scalar_t* tp = total.data_ptr<scalar_t>();
    scalar_t* cp = categorical.data_ptr<scalar_t>();
    scalar_t* gp = gaussian.data_ptr<scalar_t>();
    at::parallel_for(0, nblk, block_grain(K), [&](int64_t b0, int64_t b1) {
      RowReader<scalar_t, acc_t> Mr(mup, K), Vr(lvp, K);
      for (int64_t i = b0 * kRowBlock; i < std::min(B, b1 * kRowBlock); ++i) {
        const acc_t* mrow = Mr.row(i);
        const acc_t* vrow = Vr.row(i);
        LaneSum<acc_t> g;
        for_each_lane<acc_t>(K, [&](auto t, int64_t k) {
          g.add(ld(pi_q + k, t) * kln(ld(mrow + k, t), ld(vrow + k, t), ld(pc.m.data() + k, t),
                                      ld(pc.log_s.data() + k, t), ld(pc.inv_s2.data() + k, t)));
        });
        const acc_t gi = g.total();
        gp[i] = static_cast<scalar_t>(gi);
        cp[i] = static_cast<scalar_t>(cat);
        tp[i] = static_cast<scalar_t>(cat + gi);
      }
    });
  } else {
    const acc_t gauss = reduction == kMean ? gauss_sum / acc_t(B) : gauss_sum;
    const acc_t catr = reduction == kMean ? cat : cat * acc_t(B);
    total.fill_(catr + gauss);
    categorical.fill_(catr);
    gaussian.fill_(gauss);
  }
}

template <typename scalar_t>
void mixture_kl_backward_kernel(const at::Tensor& g_total, const at::Tensor& g_cat,
                                const at::Tensor& g_gauss, const at::Tensor& logits,
                                const at::Tensor& mu, const at::Tensor& logvar,
                                const at::Tensor& log_pi_p, const at::Tensor& m_t,
                                const at::Tensor& s_t, const at::Tensor& pi_q_t,
                                const at::Tensor& kln_colsum_t, int64_t reduction,
                                at::Tensor& d_logits, at::Tensor& d_mu, at::Tensor& d_logvar) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = logits.size(0), K = logits.size(1);
  PriorConsts<acc_t> pc(m_t, s_t);
  const scalar_t* lp = logits.data_ptr<scalar_t>();
  const scalar_t* mup = mu.data_ptr<scalar_t>();
  const scalar_t* lvp = logvar.data_ptr<scalar_t>();
  const acc_t* pi_q = pi_q_t.data_ptr<acc_t>();
  const acc_t* lpp = log_pi_p.data_ptr<acc_t>();
  const int64_t nblk = (B + kRowBlock - 1) / kRowBlock;

  // Row weights of the categorical (a_i) and Gaussian (b_i) parts of the loss.
  auto gt = g_total.to(at::toOpMathType(g_total.scalar_type())).contiguous();
  auto gc = g_cat.to(gt.scalar_type()).contiguous();
  auto gg = g_gauss.to(gt.scalar_type()).contiguous();
  std::vector<acc_t> b_row;
  acc_t A = 0, b_const = 0;
  std::vector<acc_t> w(K, acc_t(0));  // w_k = sum_i b_i KLN[i,k]
  if (reduction == kNone) {
    const acc_t* gtp = gt.data_ptr<acc_t>();
    const acc_t* gcp = gc.data_ptr<acc_t>();
    const acc_t* ggp = gg.data_ptr<acc_t>();
    b_row.resize(B);
    for (int64_t i = 0; i < B; ++i) {
      A += gtp[i] + gcp[i];
      b_row[i] = gtp[i] + ggp[i];
    }
    std::vector<acc_t> w_part(nblk * K, acc_t(0));
    at::parallel_for(0, nblk, block_grain(K), [&](int64_t b0, int64_t b1) {
      RowReader<scalar_t, acc_t> Mr(mup, K), Vr(lvp, K);
      for (int64_t blk = b0; blk < b1; ++blk) {
        acc_t* wp = w_part.data() + blk * K;
        for (int64_t i = blk * kRowBlock; i < std::min(B, (blk + 1) * kRowBlock); ++i) {
          const acc_t* mrow = Mr.row(i);
          const acc_t* vrow = Vr.row(i);
          const acc_t bi = b_row[i];
          for_each_lane<acc_t>(K, [&](auto t, int64_t k) {
            using T = decltype(t);
            T kl = kln(ld(mrow + k, t), ld(vrow + k, t), ld(pc.m.data() + k, t),
                       ld(pc.log_s.data() + k, t), ld(pc.inv_s2.data() + k, t));
            st(wp + k, ld(wp + k, t) + T(bi) * kl);
          });
        }
      }
    });
    for (int64_t blk = 0; blk < nblk; ++blk)
      for (int64_t k = 0; k < K; ++k) w[k] += w_part[blk * K + k];
  } else {
    const acc_t scale = reduction == kMean ? acc_t(1) / acc_t(B) : acc_t(1);
    const acc_t a = (gt.item<acc_t>() + gc.item<acc_t>()) * scale;
    b_const = (gt.item<acc_t>() + gg.item<acc_t>()) * scale;
    A = a * acc_t(B);
    const acc_t* kcs = kln_colsum_t.data_ptr<acc_t>();
    for (int64_t k = 0; k < K; ++k) w[k] = b_const * kcs[k];
  }

  // h_k = dL/dpi_q[k]
  std::vector<acc_t> h(K);
  const acc_t tiny = std::numeric_limits<acc_t>::min();
  for (int64_t k = 0; k < K; ++k)
    h[k] = A * (std::log(std::max(pi_q[k], tiny)) - lpp[k] + acc_t(1)) + w[k];
  const acc_t invB = acc_t(1) / acc_t(B);

  scalar_t* dlp = d_logits.data_ptr<scalar_t>();
  scalar_t* dmp = d_mu.data_ptr<scalar_t>();
  scalar_t* dvp = d_logvar.data_ptr<scalar_t>();
  at::parallel_for(0, nblk, block_grain(K), [&](int64_t b0, int64_t b1) {
    RowReader<scalar_t, acc_t> Lr(lp, K), Mr(mup, K), Vr(lvp, K);
    std::vector<acc_t> sp(K), sg(K), ol(K), om(K), ov(K);
    for (int64_t i = b0 * kRowBlock; i < std::min(B, b1 * kRowBlock); ++i) {
      const acc_t* l = Lr.row(i);
      const acc_t* mrow = Mr.row(i);
      const acc_t* vrow = Vr.row(i);
      acc_t h_dot;
      const acc_t invS =
          acc_t(1) / scaled_softplus_sigmoid_row(l, h.data(), sp.data(), sg.data(), K, h_dot);
      const acc_t hr = h_dot * invS;  // sum_k h_k r[i,k]
      const acc_t bi = reduction == kNone ? b_row[i] : b_const;
      const bool same = std::is_same<scalar_t, acc_t>::value;
      acc_t* gl = same ? reinterpret_cast<acc_t*>(dlp + i * K) : ol.data();
      acc_t* gm = same ? reinterpret_cast<acc_t*>(dmp + i * K) : om.data();
      acc_t* gv = same ? reinterpret_cast<acc_t*>(dvp + i * K) : ov.data();
      for_each_lane<acc_t>(K, [&](auto t, int64_t k) {
        using T = decltype(t);
        st(gl + k, T(invB * invS) * ld(sg.data() + k, t) * (ld(h.data() + k, t) - T(hr)));
        T wq = T(bi) * ld(pi_q + k, t);
        T inv_s2 = ld(pc.inv_s2.data() + k, t);
        st(gm + k, wq * kln_grad_mu(ld(mrow + k, t), ld(pc.m.data() + k, t), inv_s2));
        st(gv + k, wq * kln_grad_logvar(ld(vrow + k, t), ld(pc.log_s.data() + k, t)));
      });
      if (!same) {
        store_row(dlp + i * K, ol.data(), K);
        store_row(dmp + i * K, om.data(), K);
        store_row(dvp + i * K, ov.data(), K);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mixture_kl_forward_cpu(const at::Tensor& logits_in, const at::Tensor& mu_in,
                                               const at::Tensor& logvar_in,
                                               const at::Tensor& log_pi_p,
                                               const at::Tensor& prior_mean,
                                               const at::Tensor& prior_std, int64_t reduction) {
  check_mixture_kl_args(logits_in, mu_in, logvar_in, log_pi_p, prior_mean, prior_std, reduction);
  const int64_t B = logits_in.size(0), K = logits_in.size(1);
  auto opts = logits_in.options();
  auto acc_opts = opts.dtype(acc_dtype_of(logits_in));
  std::vector<int64_t> out_shape = reduction == kNone ? std::vector<int64_t>{B} : std::vector<int64_t>{};
  at::Tensor total = at::zeros(out_shape, opts), cat = at::zeros(out_shape, opts),
             gauss = at::zeros(out_shape, opts);
  at::Tensor pi_q = at::zeros({K}, acc_opts), kln_colsum = at::zeros({K}, acc_opts);
  if (B == 0 || K == 0) return {total, cat, gauss, pi_q, kln_colsum};
  auto logits = logits_in.contiguous(), mu = mu_in.contiguous(), logvar = logvar_in.contiguous();
  XVAE_DISPATCH_FLOATING(logits.scalar_type(), "mixture_kl_forward_cpu", [&] {
    mixture_kl_forward_kernel<scalar_t>(logits, mu, logvar, log_pi_p.contiguous(), prior_mean,
                                        prior_std, reduction, total, cat, gauss, pi_q, kln_colsum);
  });
  return {total, cat, gauss, pi_q, kln_colsum};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mixture_kl_backward_cpu(
    const at::Tensor& g_total, const at::Tensor& g_cat, const at::Tensor& g_gauss,
    const at::Tensor& logits_in, const at::Tensor& mu_in, const at::Tensor& logvar_in,
    const at::Tensor& log_pi_p, const at::Tensor& prior_mean, const at::Tensor& prior_std,
    const at::Tensor& pi_q, const at::Tensor& kln_colsum, int64_t reduction) {
  check_mixture_kl_backward_args(g_total, g_cat, g_gauss, logits_in, mu_in, logvar_in,
                                 log_pi_p, prior_mean, prior_std, pi_q, kln_colsum, reduction);
  const int64_t B = logits_in.size(0), K = logits_in.size(1);
  at::Tensor dl = at::empty({B, K}, logits_in.options());
  at::Tensor dm = at::empty({B, K}, logits_in.options());
  at::Tensor dv = at::empty({B, K}, logits_in.options());
  if (B == 0 || K == 0) return {dl.zero_(), dm.zero_(), dv.zero_()};
  auto logits = logits_in.contiguous(), mu = mu_in.contiguous(), logvar = logvar_in.contiguous();
  XVAE_DISPATCH_FLOATING(logits.scalar_type(), "mixture_kl_backward_cpu", [&] {
    mixture_kl_backward_kernel<scalar_t>(g_total, g_cat, g_gauss, logits, mu, logvar,
                                         log_pi_p.contiguous(), prior_mean, prior_std,
                                         pi_q.contiguous(), kln_colsum.contiguous(), reduction, dl,
                                         dm, dv);
  });
  return {dl, dm, dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(xvae_fast, CPU, m) {
  m.impl("mixture_kl_forward", &mixture_kl_forward_cpu);
  m.impl("mixture_kl_backward", &mixture_kl_backward_cpu);
}

}  // namespace xvae
