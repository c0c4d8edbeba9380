// Component KLs and the mixture bounds on them (ops component_kl, mixture_bound), CPU.
// Math: ../component_kl.h.
//
// Forward: D (B, C) is vectorised across components. The prior's means and half-precisions
// h = 1/(2 S^2) are laid out block-major, (C/V, K, V) with V the vector width (padded components
// have h = 0), so one component block's tables are contiguous; each task owns a block of kBlockRows
// rows, and the block's rows walk one component block at a time, kRows rows at a time sharing each
// table load (the block's table slice stays in L1 for all its rows). The row's bound (logsumexp or
// the softplus weights, and the three parts) follows on the finished D row; D is kept (B, C) for the
// backward, so nothing is recomputed there. Nothing of size B x C x K is formed.
// Backward: per row the weights w = dL/dD (and the logits gradient), then the posterior gradients,
// vectorised across coordinates over block-major (K/V, C, V) tables, kRows rows sharing each load.
// Rows are independent and the batch reductions add the rows in order (in double): results do not
// depend on the thread count.
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "../checks.h"
#include "../component_kl.h"
#include "cpu_common.h"

namespace xvae {
namespace {

constexpr int kRows = 4;            // rows sharing each table load
constexpr int64_t kBlockRows = 32;  // rows per task

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Per-call tables of the prior in the accumulation type.
template <typename acc_t>
struct KlTables {
  int64_t C = 0, K = 0, Cp = 0, Kp = 0;
  std::vector<acc_t> fm, fh;  // forward: (Cp/V, K, V), component-blocked; 0 on padding
  std::vector<double> kc;     // (C) component constants sum_k log S - K/2
  std::vector<acc_t> bm, bh;  // backward: (Kp/V, C, V), coordinate-blocked; 0 on padding

  KlTables(const at::Tensor& means, const at::Tensor& stds, bool forward) {
    constexpr int64_t V = Vec<acc_t>::size();
    auto m = means.contiguous(), s = stds.contiguous();
    C = m.size(0);
    K = m.size(1);
    Cp = round_up(C, V);
    Kp = round_up(K, V);
    const acc_t* mp = m.template data_ptr<acc_t>();
    const acc_t* sp = s.template data_ptr<acc_t>();
    std::vector<acc_t> h(C * K);
    for (int64_t e = 0; e < C * K; ++e) h[e] = ckl_half_precision(sp[e]);
    if (forward) {
      // log S in the accumulation type (vectorised), summed per component in double.
      std::vector<acc_t> log_s(C * K);
      for_each_lane<acc_t>(C * K, [&](auto tag, int64_t e) { st(log_s.data() + e, xlog(ld(sp + e, tag))); });
      kc.resize(C);
      for (int64_t c = 0; c < C; ++c) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(log_s[c * K + k]);
        kc[c] = ckl_component_const(acc, K);
      }
      fm.assign(Cp * K, acc_t(0));
      fh.assign(Cp * K, acc_t(0));
      for (int64_t c = 0; c < C; ++c) {
        const int64_t base = (c / V) * K * V + c % V;
        for (int64_t k = 0; k < K; ++k) {
          fm[base + k * V] = mp[c * K + k];
          fh[base + k * V] = h[c * K + k];
        }
      }
    } else {
      bm.assign(Kp * C, acc_t(0));
      bh.assign(Kp * C, acc_t(0));
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t k = 0; k < K; ++k) {
          const int64_t at_ = ((k / V) * C + c) * V + k % V;
          bm[at_] = mp[c * K + k];
          bh[at_] = h[c * K + k];
        }
      }
    }
  }
};

// A posterior row as acc_t: mu into mu_out, e = exp(logvar) into e_out (K values each); returns the
// row constant rc = -1/2 sum logvar, summed in double (four fixed interleaved partial sums).
template <typename scalar_t, typename acc_t>
inline double load_posterior_row(const scalar_t* mu, const scalar_t* lv, int64_t K, acc_t* mu_out,
                                 acc_t* e_out) {
  double s[4] = {0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    for (int u = 0; u < 4; ++u) {
      const acc_t v = static_cast<acc_t>(lv[k + u]);
      e_out[k + u] = v;
      s[u] += static_cast<double>(v);
    }
  }
  for (; k < K; ++k) {
    const acc_t v = static_cast<acc_t>(lv[k]);
    e_out[k] = v;
    s[0] += static_cast<double>(v);
  }
  for (int64_t j = 0; j < K; ++j) mu_out[j] = static_cast<acc_t>(mu[j]);
  for_each_lane<acc_t>(K, [&](auto t, int64_t j) { st(e_out + j, xexp(ld(e_out + j, t))); });
  return ckl_row_const((s[0] + s[1]) + (s[2] + s[3]));
}

// q[r][c] for R rows against NB consecutive component blocks (V components each): tm, th point at
// the first block's (K, V) tables, block b's at + b K V; out[r] at the row's first block. Each table
// load serves R rows and each broadcast row value NB blocks.
template <int R, int NB, typename acc_t>
inline void quad_tile(const acc_t* const* mu, const acc_t* const* e, const acc_t* tm,
                      const acc_t* th, int64_t K, acc_t* const* out) {
  using V = Vec<acc_t>;
  constexpr int64_t VS = V::size();
  V q[R][NB];
  for (int r = 0; r < R; ++r)
    for (int b = 0; b < NB; ++b) q[r][b] = V(acc_t(0));
  for (int64_t j = 0; j < K; ++j) {
    V m[NB], h[NB];
    for (int b = 0; b < NB; ++b) {
      m[b] = V::loadu(tm + (b * K + j) * VS);
      h[b] = V::loadu(th + (b * K + j) * VS);
    }
    for (int r = 0; r < R; ++r) {
      const V mu_r(mu[r][j]), e_r(e[r][j]);
      for (int b = 0; b < NB; ++b) q[r][b] = ckl_quad_step(mu_r, e_r, m[b], h[b], q[r][b]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int b = 0; b < NB; ++b) q[r][b].store(out[r] + b * VS);
}

// Gradient accumulators for R rows over all C components at one coordinate block (V coordinates):
// tm, th point at the block's (C, V) tables; mu[r] at the row's block, w[r] at its C weights.
template <int R, typename acc_t>
inline void grad_tile(const acc_t* const* mu, const acc_t* const* w, const acc_t* tm,
                      const acc_t* th, int64_t C, Vec<acc_t>* acc_m, Vec<acc_t>* acc_h) {
  using V = Vec<acc_t>;
  V am[R], ah[R], mv[R];
  for (int r = 0; r < R; ++r) {
    am[r] = V(acc_t(0));
    ah[r] = V(acc_t(0));
    mv[r] = V::loadu(mu[r]);
  }
  for (int64_t c = 0; c < C; ++c) {
    const V m = V::loadu(tm + c * V::size()), h = V::loadu(th + c * V::size());
    for (int r = 0; r < R; ++r) ckl_posterior_grad_step(mv[r], m, h, V(w[r][c]), &am[r], &ah[r]);
  }
  for (int r = 0; r < R; ++r) {
    acc_m[r] = am[r];
    acc_h[r] = ah[r];
  }
}

// Runs f(R, first) over [0, n) in groups of kRows, then single rows.
template <typename F>
inline void for_row_tiles(int64_t n, F&& f) {
  int64_t i = 0;
  for (; i + kRows <= n; i += kRows) f(std::integral_constant<int, kRows>(), i);
  for (; i < n; ++i) f(std::integral_constant<int, 1>(), i);
}

// The D rows of a block of n rows, into D (n rows of stride ldd, C values each; acc_t). mu, e: the
// block's rows (stride K); rc: their row constants. q is a (n, Cp) scratch.
template <typename acc_t>
void kl_block(const KlTables<acc_t>& t, const acc_t* mu, const acc_t* e, const double* rc, int64_t n,
              acc_t* q, acc_t* D, int64_t ldd) {
  constexpr int64_t V = Vec<acc_t>::size();
  const int64_t K = t.K, C = t.C, Cp = t.Cp;
  auto blocks = [&](auto NBB, int64_t cb) {
    constexpr int NB = decltype(NBB)::value;
    const acc_t* tm = t.fm.data() + cb * K * V;
    const acc_t* th = t.fh.data() + cb * K * V;
    for_row_tiles(n, [&](auto RR, int64_t i) {
      constexpr int R = decltype(RR)::value;
      const acc_t* mr[R];
      const acc_t* er[R];
      acc_t* out[R];
      for (int r = 0; r < R; ++r) {
        mr[r] = mu + (i + r) * K;
        er[r] = e + (i + r) * K;
        out[r] = q + (i + r) * Cp + cb * V;
      }
      quad_tile<R, NB, acc_t>(mr, er, tm, th, K, out);
    });
  };
  const int64_t nb = Cp / V;
  int64_t cb = 0;
  for (; cb + 2 <= nb; cb += 2) blocks(std::integral_constant<int, 2>(), cb);
  for (; cb < nb; ++cb) blocks(std::integral_constant<int, 1>(), cb);
  for (int64_t r = 0; r < n; ++r) {
    const acc_t* qr = q + r * Cp;
    acc_t* Dr = D + r * ldd;
    for (int64_t c = 0; c < C; ++c)
      Dr[c] = ckl_finish(qr[c], static_cast<acc_t>(t.kc[c] + rc[r]));
  }
}

// Softplus weights of one logits row: sp = softplus(l) exp(-c) (and sg = sigmoid(l) exp(-c) when
// sg is given) for the row scale c = min(max l, 0); returns sum sp.
template <typename acc_t>
inline acc_t softplus_row(const acc_t* l, int64_t C, acc_t* sp, acc_t* sg) {
  const acc_t c = std::min(row_max(l, C), acc_t(0));
  LaneSum<acc_t> S;
  for_each_lane<acc_t>(C, [&](auto t, int64_t k) {
    using T = decltype(t);
    const T x = ld(l + k, t);
    T v, d;
    if (c < acc_t(0)) {
      v = scaled_softplus_neg(x, T(c));
      if (sg != nullptr) d = scaled_sigmoid_neg(x, T(c));
    } else if (sg != nullptr) {
      v = softplus_and_sigmoid(x, &d);
    } else {
      v = softplus(x);
    }
    st(sp + k, v);
    if (sg != nullptr) st(sg + k, d);
    S.add(v);
  });
  return S.total();
}

// tight: r* = softmax(lw - D) into r; returns lse = logsumexp(lw - D).
template <typename acc_t>
inline acc_t tight_weights(const acc_t* D, const acc_t* lw, int64_t C, acc_t* r) {
  for_each_lane<acc_t>(C, [&](auto t, int64_t k) { st(r + k, ld(lw + k, t) - ld(D + k, t)); });
  const acc_t mx = row_max(r, C);
  LaneSum<acc_t> s;
  for_each_lane<acc_t>(C, [&](auto t, int64_t k) {
    using T = decltype(t);
    const T ex = xexp(ld(r + k, t) - T(mx));
    st(r + k, ex);
    s.add(ex);
  });
  const acc_t total = s.total(), inv = acc_t(1) / total;
  for_each_lane<acc_t>(C, [&](auto t, int64_t k) {
    using T = decltype(t);
    st(r + k, ld(r + k, t) * T(inv));
  });
  return mx + std::log(total);
}

// Upstream gradients of the three outputs as acc_t, per row (reduction none) or one scalar each
// (mean: divided by B).
template <typename acc_t>
struct Upstream {
  at::Tensor t, c, g;
  const acc_t *tp, *cp, *gp;
  bool rows;
  acc_t scale;
  Upstream(const at::Tensor& gt, const at::Tensor& gc, const at::Tensor& gg, int64_t reduction,
           int64_t B) {
    const auto acc = std::is_same<acc_t, double>::value ? at::kDouble : at::kFloat;
    t = gt.to(acc).contiguous();
    c = gc.to(acc).contiguous();
    g = gg.to(acc).contiguous();
    tp = t.template data_ptr<acc_t>();
    cp = c.template data_ptr<acc_t>();
    gp = g.template data_ptr<acc_t>();
    rows = reduction == kNone;
    scale = reduction == kMean && B > 0 ? acc_t(1) / acc_t(B) : acc_t(1);
  }
  void at_row(int64_t i, acc_t* gt, acc_t* gc, acc_t* gg) const {
    const int64_t j = rows ? i : 0;
    *gt = tp[j] * scale;
    *gc = cp[j] * scale;
    *gg = gp[j] * scale;
  }
};

// Reduced (or per-row) outputs from per-row values.
template <typename scalar_t, typename acc_t>
at::Tensor reduce_rows(const std::vector<acc_t>& v, int64_t reduction, const at::TensorOptions& opts) {
  const int64_t B = static_cast<int64_t>(v.size());
  if (reduction == kNone) {
    at::Tensor out = at::empty({B}, opts);
    store_row(out.data_ptr<scalar_t>(), v.data(), B);
    return out;
  }
  double s = 0;
  for (int64_t i = 0; i < B; ++i) s += static_cast<double>(v[i]);
  if (reduction == kMean && B > 0) s /= static_cast<double>(B);
  at::Tensor out = at::empty({}, opts);
  out.data_ptr<scalar_t>()[0] = static_cast<scalar_t>(static_cast<acc_t>(s));
  return out;
}

// Runs f(i0, n) for the blocks of kBlockRows rows of [0, B) (n rows in each, fewer in the last),
// claimed dynamically by the intra-op threads; inline for small problems. The rows are independent,
// so which thread runs a block never changes a result.
template <typename F>
inline void parallel_row_blocks(int64_t B, int64_t C, int64_t K, F&& f) {
  const int64_t nblk = (B + kBlockRows - 1) / kBlockRows;
  auto run = [&](int64_t blk) {
    const int64_t i0 = blk * kBlockRows;
    f(i0, std::min(kBlockRows, B - i0));
  };
  if (B * std::max<int64_t>(1, C) * std::max<int64_t>(1, K) < (int64_t(1) << 18)) {
    for (int64_t blk = 0; blk < nblk; ++blk) run(blk);
    return;
  }
  parallel_tasks(nblk, run);
}

// ---- component_kl -----------------------------------------------------------------------------------
at::Tensor component_kl_cpu(const at::Tensor& mu_in, const at::Tensor& logvar_in,
                            const at::Tensor& means, const at::Tensor& stds) {
  check_component_kl_args(mu_in, logvar_in, means, stds);
  const int64_t B = mu_in.size(0), K = mu_in.size(1), C = means.size(0);
  at::Tensor out = at::empty({B, C}, mu_in.options());
  if (B == 0) return out;
  auto mu = mu_in.contiguous(), logvar = logvar_in.contiguous();
  XVAE_DISPATCH_FLOATING(mu.scalar_type(), "component_kl_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const KlTables<acc_t> t(means, stds, /*forward=*/true);
    const scalar_t* mup = mu.data_ptr<scalar_t>();
    const scalar_t* lvp = logvar.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    parallel_row_blocks(B, C, K, [&](int64_t i0, int64_t n) {
      std::vector<acc_t> mb(kBlockRows * K), eb(kBlockRows * K), q(kBlockRows * t.Cp),
          D(kBlockRows * C);
      double rc[kBlockRows];
      for (int64_t r = 0; r < n; ++r)
        rc[r] = load_posterior_row(mup + (i0 + r) * K, lvp + (i0 + r) * K, K, mb.data() + r * K,
                                   eb.data() + r * K);
      kl_block(t, mb.data(), eb.data(), rc, n, q.data(), D.data(), C);
      for (int64_t r = 0; r < n; ++r) store_row(op + (i0 + r) * C, D.data() + r * C, C);
    });
  });
  return out;
}

// The posterior gradients of a block of n rows from their weights w (n, C) and sums wsum (n):
// mub, eb are (n, Kp), zero-padded; dmu, dlv (n, Kp) scratch.
template <typename acc_t>
void posterior_grad_block(const KlTables<acc_t>& t, const acc_t* mub, const acc_t* eb,
                          const acc_t* w, const acc_t* wsum, int64_t n, acc_t* dmu, acc_t* dlv) {
  using V = Vec<acc_t>;
  constexpr int64_t VS = V::size();
  const int64_t C = t.C, Kp = t.Kp;
  for (int64_t kb = 0; kb < Kp / VS; ++kb) {
    const acc_t* tm = t.bm.data() + kb * C * VS;
    const acc_t* th = t.bh.data() + kb * C * VS;
    for_row_tiles(n, [&](auto RR, int64_t i) {
      constexpr int R = decltype(RR)::value;
      const acc_t* mr[R];
      const acc_t* wr[R];
      V am[R], ah[R];
      for (int r = 0; r < R; ++r) {
        mr[r] = mub + (i + r) * Kp + kb * VS;
        wr[r] = w + (i + r) * C;
      }
      grad_tile<R, acc_t>(mr, wr, tm, th, C, am, ah);
      for (int r = 0; r < R; ++r) {
        const int64_t o = (i + r) * Kp + kb * VS;
        ckl_grad_mu(am[r]).store(dmu + o);
        ckl_grad_logvar(V::loadu(eb + o), ah[r], V(wsum[i + r])).store(dlv + o);
      }
    });
  }
}

// Shared backward driver: weights(i, r, w_row) fills row i's C weights (acc) and returns their sum.
template <typename scalar_t, typename acc_t, typename W>
void posterior_backward(const KlTables<acc_t>& t, const scalar_t* mup, const scalar_t* lvp, int64_t B,
                        scalar_t* dmup, scalar_t* dlvp, W&& weights) {
  const int64_t K = t.K, C = t.C, Kp = t.Kp;
  parallel_row_blocks(B, C, K, [&](int64_t i0, int64_t n) {
    std::vector<acc_t> mb(kBlockRows * Kp, acc_t(0)), eb(kBlockRows * Kp, acc_t(0)),
        w(kBlockRows * C), dm(kBlockRows * Kp), dv(kBlockRows * Kp), scratch(2 * C + 1);
    acc_t wsum[kBlockRows];
    for (int64_t r = 0; r < n; ++r) {
      load_posterior_row(mup + (i0 + r) * K, lvp + (i0 + r) * K, K, mb.data() + r * Kp,
                         eb.data() + r * Kp);
      wsum[r] = weights(i0 + r, w.data() + r * C, scratch.data());
    }
    posterior_grad_block(t, mb.data(), eb.data(), w.data(), wsum, n, dm.data(), dv.data());
    for (int64_t r = 0; r < n; ++r) {
      store_row(dmup + (i0 + r) * K, dm.data() + r * Kp, K);
      store_row(dlvp + (i0 + r) * K, dv.data() + r * Kp, K);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> component_kl_backward_cpu(const at::Tensor& grad_in,
                                                             const at::Tensor& mu_in,
                                                             const at::Tensor& logvar_in,
                                                             const at::Tensor& means,
                                                             const at::Tensor& stds) {
  check_component_kl_backward_args(grad_in, mu_in, logvar_in, means, stds);
  const int64_t B = mu_in.size(0), K = mu_in.size(1), C = means.size(0);
  at::Tensor dmu = at::empty({B, K}, mu_in.options()), dlv = at::empty({B, K}, mu_in.options());
  if (B == 0) return {dmu, dlv};
  auto mu = mu_in.contiguous(), logvar = logvar_in.contiguous();
  auto grad = grad_in.to(acc_dtype_of(mu_in)).contiguous();
  XVAE_DISPATCH_FLOATING(mu.scalar_type(), "component_kl_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const KlTables<acc_t> t(means, stds, /*forward=*/false);
    const acc_t* gp = grad.data_ptr<acc_t>();
    posterior_backward<scalar_t, acc_t>(
        t, mu.data_ptr<scalar_t>(), logvar.data_ptr<scalar_t>(), B, dmu.data_ptr<scalar_t>(),
        dlv.data_ptr<scalar_t>(), [&](int64_t i, acc_t* w, acc_t*) {
          LaneSum<acc_t> s;
          for_each_lane<acc_t>(C, [&](auto tag, int64_t c) {
            const auto v = ld(gp + i * C + c, tag);
            st(w + c, v);
            s.add(v);
          });
          return s.total();
        });
  });
  return {dmu, dlv};
}

// ---- mixture_bound ----------------------------------------------------------------------------------
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mixture_bound_cpu(
    const at::Tensor& mu_in, const at::Tensor& logvar_in, const at::Tensor& log_weights,
    const at::Tensor& means, const at::Tensor& stds, const std::optional<at::Tensor>& logits_in,
    c10::string_view kind_name, int64_t reduction, bool return_weights) {
  const int kind = check_mixture_bound_args(mu_in, logvar_in, log_weights, means, stds, logits_in,
                                            kind_name, reduction);
  const int64_t B = mu_in.size(0), K = mu_in.size(1), C = means.size(0);
  const auto opts = mu_in.options();
  at::Tensor kl = at::empty({B, C}, opts.dtype(acc_dtype_of(mu_in)));
  at::Tensor weights = return_weights ? at::empty({B, C}, opts) : at::empty({0}, opts);
  at::Tensor total, cat, gauss;
  auto mu = mu_in.contiguous(), logvar = logvar_in.contiguous();
  at::Tensor logits = kind == kBoundMixture ? logits_in->contiguous() : at::Tensor();
  XVAE_DISPATCH_FLOATING(mu.scalar_type(), "mixture_bound_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<acc_t> rt(B), rcat(B), rg(B);
    if (B > 0) {
      const KlTables<acc_t> t(means, stds, /*forward=*/true);
      auto lw_t = log_weights.contiguous();
      const acc_t* lw = lw_t.data_ptr<acc_t>();
      const scalar_t* mup = mu.data_ptr<scalar_t>();
      const scalar_t* lvp = logvar.data_ptr<scalar_t>();
      const scalar_t* lp = logits.defined() ? logits.data_ptr<scalar_t>() : nullptr;
      acc_t* klp = kl.data_ptr<acc_t>();
      scalar_t* wp = return_weights ? weights.data_ptr<scalar_t>() : nullptr;
      parallel_row_blocks(B, C, K, [&](int64_t i0, int64_t n) {
        std::vector<acc_t> mb(kBlockRows * K), eb(kBlockRows * K), q(kBlockRows * t.Cp), r(C);
        RowReader<scalar_t, acc_t> Lr(lp, C);
        double rc[kBlockRows];
        for (int64_t j = 0; j < n; ++j)
          rc[j] = load_posterior_row(mup + (i0 + j) * K, lvp + (i0 + j) * K, K, mb.data() + j * K,
                                     eb.data() + j * K);
        kl_block(t, mb.data(), eb.data(), rc, n, q.data(), klp + i0 * C, C);
        for (int64_t j = 0; j < n; ++j) {
          const int64_t i = i0 + j;
          const acc_t* D = klp + i * C;
          LaneSum<acc_t> g, ca;
          if (kind == kBoundTight) {
            const acc_t lse = tight_weights(D, lw, C, r.data());
            for_each_lane<acc_t>(C, [&](auto tag, int64_t c) {
              using T = decltype(tag);
              const T rv = ld(r.data() + c, tag), Dv = ld(D + c, tag);
              g.add(rv * Dv);
              ca.add(tight_categorical_term(rv, Dv, T(lse)));
            });
            rt[i] = -lse;
            rg[i] = g.total();
            rcat[i] = ca.total();
          } else {
            const acc_t* l = Lr.row(i);
            const acc_t inv = acc_t(1) / softplus_row(l, C, r.data(), static_cast<acc_t*>(nullptr));
            for_each_lane<acc_t>(C, [&](auto tag, int64_t c) {
              using T = decltype(tag);
              const T rv = ld(r.data() + c, tag) * T(inv);
              st(r.data() + c, rv);
              g.add(rv * ld(D + c, tag));
              ca.add(mixture_categorical_term<acc_t>(rv, ld(lw + c, tag)));
            });
            rg[i] = g.total();
            rcat[i] = ca.total();
            rt[i] = rcat[i] + rg[i];
          }
          if (wp != nullptr) store_row(wp + i * C, r.data(), C);
        }
      });
    }
    total = reduce_rows<scalar_t>(rt, reduction, opts);
    cat = reduce_rows<scalar_t>(rcat, reduction, opts);
    gauss = reduce_rows<scalar_t>(rg, reduction, opts);
  });
  return {total, cat, gauss, weights, kl};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mixture_bound_backward_cpu(
    const at::Tensor& g_total, const at::Tensor& g_cat, const at::Tensor& g_gauss,
    const at::Tensor& mu_in, const at::Tensor& logvar_in, const at::Tensor& log_weights,
    const at::Tensor& means, const at::Tensor& stds, const std::optional<at::Tensor>& logits_in,
    const at::Tensor& kl_in, c10::string_view kind_name, int64_t reduction) {
  const int kind = check_mixture_bound_backward_args(g_total, g_cat, g_gauss, mu_in, logvar_in,
                                                     log_weights, means, stds, logits_in, kl_in,
                                                     kind_name, reduction);
  const int64_t B = mu_in.size(0), K = mu_in.size(1), C = means.size(0);
  at::Tensor dmu = at::empty({B, K}, mu_in.options()), dlv = at::empty({B, K}, mu_in.options());
  at::Tensor dl = kind == kBoundMixture ? at::empty({B, C}, mu_in.options())
                                        : at::empty({0}, mu_in.options());
  if (B == 0) return {dmu, dlv, dl};
  auto mu = mu_in.contiguous(), logvar = logvar_in.contiguous(), kl = kl_in.contiguous();
  at::Tensor logits = kind == kBoundMixture ? logits_in->contiguous() : at::Tensor();
  XVAE_DISPATCH_FLOATING(mu.scalar_type(), "mixture_bound_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const KlTables<acc_t> t(means, stds, /*forward=*/false);
    const Upstream<acc_t> up(g_total, g_cat, g_gauss, reduction, B);
    auto lw_t = log_weights.contiguous();
    const acc_t* lw = lw_t.data_ptr<acc_t>();
    const acc_t* klp = kl.data_ptr<acc_t>();
    const scalar_t* lp = logits.defined() ? logits.data_ptr<scalar_t>() : nullptr;
    scalar_t* dlp = logits.defined() ? dl.data_ptr<scalar_t>() : nullptr;
    posterior_backward<scalar_t, acc_t>(
        t, mu.data_ptr<scalar_t>(), logvar.data_ptr<scalar_t>(), B, dmu.data_ptr<scalar_t>(),
        dlv.data_ptr<scalar_t>(), [&](int64_t i, acc_t* w, acc_t* scratch) {
          acc_t gt, gc, gg;
          up.at_row(i, &gt, &gc, &gg);
          const acc_t* D = klp + i * C;
          LaneSum<acc_t> ws;
          if (kind == kBoundTight) {
            tight_weights(D, lw, C, w);  // r* in w
            LaneSum<acc_t> db;
            for_each_lane<acc_t>(C, [&](auto tag, int64_t c) { db.add(ld(w + c, tag) * ld(D + c, tag)); });
            const acc_t Dbar = db.total(), a = gt + gg, b = gc - gg;
            for_each_lane<acc_t>(C, [&](auto tag, int64_t c) {
              using T = decltype(tag);
              const T v = tight_kl_grad(ld(w + c, tag), ld(D + c, tag), T(Dbar), T(a), T(b));
              st(w + c, v);
              ws.add(v);
            });
            return ws.total();
          }
          // mixture: r, sigmoid and the logits row in scratch (2 C + 1 values per thread).
          acc_t* sg = scratch;
          acc_t* lrow = scratch + C;
          for (int64_t c = 0; c < C; ++c) lrow[c] = static_cast<acc_t>(lp[i * C + c]);
          const acc_t inv = acc_t(1) / softplus_row(lrow, C, w, sg);  // sp in w
          const acc_t a = gt + gg, cg = gt + gc;
          LaneSum<acc_t> rd;
          for_each_lane<acc_t>(C, [&](auto tag, int64_t c) {
            using T = decltype(tag);
            const T rv = ld(w + c, tag) * T(inv);
            const T dr = mixture_weight_grad<acc_t>(rv, ld(lw + c, tag), ld(D + c, tag), T(cg), T(a));
            st(lrow + c, dr);  // the logits are not needed any more
            rd.add(rv * dr);
            const T v = mixture_kl_grad(rv, T(a));
            st(w + c, v);
            ws.add(v);
          });
          const acc_t r_dot_dr = rd.total();
          for_each_lane<acc_t>(C, [&](auto tag, int64_t c) {
            using T = decltype(tag);
            st(sg + c, mixture_logit_grad(ld(sg + c, tag), T(inv), ld(lrow + c, tag), T(r_dot_dr)));
          });
          store_row(dlp + i * C, sg, C);
          return ws.total();
        });
  });
  return {dmu, dlv, dl};
}

}  // namespace

TORCH_LIBRARY_IMPL(xvae_fast, CPU, m) {
  m.impl("component_kl", &component_kl_cpu);
  m.impl("component_kl_backward", &component_kl_backward_cpu);
  m.impl("mixture_bound", &mixture_bound_cpu);
  m.impl("mixture_bound_backward", &mixture_bound_backward_cpu);
}

}  // namespace xvae
