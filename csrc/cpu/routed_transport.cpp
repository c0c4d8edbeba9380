// Routed transport (SPEC: routed_transport), CPU: forward draws and transports in one pass per row;
// backward scatters dz into the posterior columns each z depends on. Also the replay op draw_noise,
// which returns the draws a given rng_state produces (for the reference and the tests).
#include <torch/library.h>

#include <memory>

#include "../categorical_table.h"
#include "../checks.h"
#include "categorical_cpu.h"
#include "noise_cpu.h"

namespace xvae {
namespace {

// Plans whose every coordinate routes by pi_p per element and takes its source noise from the prior
// component's value at the coordinate (full, split-*), with K even: z[i,k] needs eta[i,k], the
// component c ~ Cat(pi_p) and M[c,k], S[c,k]. The work is split into tasks of one block of 16
// columns (8 Philox pairs of a row) over a range of rows. A task reads its block's slice of the
// prior tables, copied once per call into a block-major table of (M[c,k], S[c,k]) pairs: 32 KB
// contiguous for K = 256, so it stays in L1 for the whole task (a 16-column slice of the row-major
// tables has a K-float stride, which maps all its lines to a few cache sets). Same draws and
// arithmetic as the per-row loop of routed_transport_kernel.
template <typename scalar_t>
void routed_transport_prior_blocked(const scalar_t* mup, const scalar_t* lvp, const at::opmath_type<scalar_t>* M,
                                    const at::opmath_type<scalar_t>* S, const CategoricalTable& tp,
                                    const int32_t* codes, int64_t B, int64_t K, uint64_t seed,
                                    uint64_t offset, scalar_t* zp) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t kCols = 16;      // one PairDrawer call per row and block
  constexpr int64_t kTaskRows = 256;  // rows per task
  constexpr int64_t kAhead = 4;      // rows of prefetch ahead
  struct Entry {
    acc_t m, s;
  };
  const int64_t n_blocks = (K + kCols - 1) / kCols;
  // table[(b * K + c) * kCols + l] = (M[c, k], S[c, k]) for k = b * kCols + l.
  std::unique_ptr<Entry[]> table(new Entry[static_cast<size_t>(n_blocks * K * kCols)]);
  parallel_tasks(n_blocks, [&](int64_t b) {
    const int64_t k0 = b * kCols, n = std::min(kCols, K - k0);
    Entry* out = table.get() + b * K * kCols;
    for (int64_t c = 0; c < K; ++c)
      for (int64_t l = 0; l < n; ++l) out[c * kCols + l] = {M[c * K + k0 + l], S[c * K + k0 + l]};
  });
  std::vector<acc_t> m_diag(K), inv_s_diag(K), direct(K);
  bool any_direct = false;
  for (int64_t k = 0; k < K; ++k) {
    m_diag[k] = M[k * K + k];
    inv_s_diag[k] = acc_t(1) / S[k * K + k];
    direct[k] = plan_direct(codes[k]) ? acc_t(1) : acc_t(0);
    any_direct |= plan_direct(codes[k]);
  }
  const CategoricalBatch cat(tp, static_cast<int32_t>(K));
  const PairDrawer<acc_t> draw(seed, offset / 4);
  const int64_t n_row_ranges = (B + kTaskRows - 1) / kTaskRows;
  constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(scalar_t));
  parallel_tasks(n_blocks * n_row_ranges, [&](int64_t task) {
    // Tasks in the order (row range, block) would reload the table per task; (block, row range)
    // keeps consecutive tasks of a thread on the same slice.
    const int64_t b = task / n_row_ranges, r = task % n_row_ranges;
    const int64_t kb = b * kCols, n = std::min(kCols, K - kb);
    const int64_t i0 = r * kTaskRows, i1 = std::min(i0 + kTaskRows, B);
    const Entry* tab = table.get() + b * K * kCols;
    const acc_t* md = m_diag.data() + kb;
    const acc_t* isd = inv_s_diag.data() + kb;
    const acc_t* dr = direct.data() + kb;
    alignas(64) acc_t eta[kCols], eps[kCols], mu_b[kCols], lv_b[kCols], z_b[kCols];
    alignas(64) uint32_t word[kCols];
    alignas(64) int32_t bucket[kCols];
    alignas(64) double target[kCols];
    for (int64_t i = i0; i < std::min(i0 + kAhead, i1); ++i) {
      for (int64_t l = 0; l < n; l += kLine) {
        __builtin_prefetch(mup + i * K + kb + l, 0, 3);
        __builtin_prefetch(lvp + i * K + kb + l, 0, 3);
        __builtin_prefetch(zp + i * K + kb + l, 1, 3);
      }
    }
    for (int64_t i = i0; i < i1; ++i) {
      // Rows are a row apart (K elements): prefetch the block of a row kAhead rows down.
      if (i + kAhead < i1) {
        const int64_t pf = (i + kAhead) * K + kb;
        for (int64_t l = 0; l < n; l += kLine) {
          __builtin_prefetch(mup + pf + l, 0, 3);
          __builtin_prefetch(lvp + pf + l, 0, 3);
          __builtin_prefetch(zp + pf + l, 1, 3);
        }
      }
      draw(static_cast<uint64_t>((i * K + kb) >> 1), eta, word);
      cat.prepare(word, static_cast<int>(n), bucket, target);
      int32_t flags = 0;
      for (int64_t l = 0; l < n; ++l) {
        const Entry& e = tab[cat.fast(bucket[l], target[l], flags) * kCols + l];
        eps[l] = e.m + e.s * eta[l];
      }
      if (flags & CategoricalBatch::kFlag) {  // rare: buckets the fast path cannot settle
        for (int64_t l = 0; l < n; ++l) {
          if (!cat.flagged(bucket[l])) continue;
          const Entry& e = tab[cat.exact(word[l]) * kCols + l];
          eps[l] = e.m + e.s * eta[l];
        }
      }
      const acc_t* mr;
      const acc_t* vr;
      acc_t* zr;
      if constexpr (std::is_same<scalar_t, acc_t>::value) {
        mr = mup + i * K + kb;
        vr = lvp + i * K + kb;
        zr = zp + i * K + kb;
      } else {
        for (int64_t l = 0; l < n; ++l) {
          mu_b[l] = static_cast<acc_t>(mup[i * K + kb + l]);
          lv_b[l] = static_cast<acc_t>(lvp[i * K + kb + l]);
        }
        mr = mu_b;
        vr = lv_b;
        zr = z_b;
      }
      for_each_lane<acc_t>(n, [&](auto t, int64_t l) {
        using T = decltype(t);
        const T e = ld(eps + l, t);
        const T moved = transport(ld(mr + l, t), ld(vr + l, t), e, ld(md + l, t), ld(isd + l, t));
        st(zr + l, any_direct ? where_lt(T(0.5), ld(dr + l, t), e, moved) : moved);
      });
      if constexpr (!std::is_same<scalar_t, acc_t>::value) {
        for (int64_t l = 0; l < n; ++l) zp[i * K + kb + l] = static_cast<scalar_t>(z_b[l]);
      }
    }
  });
}

template <typename scalar_t, typename comp_t>
void routed_transport_kernel(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& M_t,
                             const at::Tensor& S_t, const CategoricalTensors& tab_p,
                             const CategoricalTensors* tab_q, const at::Tensor& plan,
                             uint64_t seed, uint64_t offset, at::Tensor& z, at::Tensor& comp) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = mu.size(0), K = mu.size(1), P = comp.size(1);
  const acc_t* M = M_t.data_ptr<acc_t>();
  const acc_t* S = S_t.data_ptr<acc_t>();
  std::vector<acc_t> m_diag(K), inv_s_diag(K);
  for (int64_t k = 0; k < K; ++k) {
    m_diag[k] = M[k * K + k];
    inv_s_diag[k] = acc_t(1) / S[k * K + k];
  }
  const int32_t* codes = plan.data_ptr<int32_t>();
  const CategoricalTable tp = tab_p.view();
  const CategoricalTable tq = tab_q ? tab_q->view() : tp;
  bool any_row_tie = false;
  // Plans whose every coordinate routes by pi_p per element and draws from the routed component
  // (full, split-*) skip the per-element plan decoding: with K even and enough rows,
  // routed_transport_prior_blocked; else (with K odd a Philox pair can straddle two rows) the first
  // loop below. Same steps, same results.
  bool all_prior_routed = true;
  for (int64_t k = 0; k < K; ++k) {
    any_row_tie |= plan_tie_row(codes[k]);
    all_prior_routed &= plan_route(codes[k]) == kRoutePrior && !plan_tie_row(codes[k]) &&
                        plan_source(codes[k]) == kSourcePrior;
  }
  const scalar_t* mup = mu.data_ptr<scalar_t>();
  const scalar_t* lvp = logvar.data_ptr<scalar_t>();
  scalar_t* zp = z.data_ptr<scalar_t>();
  // The blocked path's setup (a K x K table copy, the bucket table) pays off from about B = K / 4
  // rows (measured at K = 64 and 256); smaller batches take the per-row loop, with the same results.
  if (all_prior_routed && K % 2 == 0 && 4 * B >= K) {
    routed_transport_prior_blocked<scalar_t>(mup, lvp, M, S, tp, codes, B, K, seed, offset, zp);
    return;
  }
  comp_t* cp = P > 0 ? comp.data_ptr<comp_t>() : nullptr;
  const uint64_t off_blocks = offset / 4;

  // Plans whose every coordinate is transported from its home component (matched): c = k, so
  // eps = M[k,k] + S[k,k] eta and the whole row is vectorised; the same steps as the loop below
  // (whose scalar gathers and plan decoding cost about as much as the draws).
  bool all_home_transport = true;
  for (int64_t k = 0; k < K; ++k)
    all_home_transport &= plan_route(codes[k]) == kRouteHome && plan_source(codes[k]) == kSourcePrior &&
                          !plan_direct(codes[k]);
  if (all_home_transport) {
    std::vector<acc_t> s_diag(K);
    for (int64_t k = 0; k < K; ++k) s_diag[k] = S[k * K + k];
    const int64_t rows_per_task = std::max<int64_t>(1, (int64_t(1) << 13) / std::max<int64_t>(K, 1));
    parallel_tasks((B + rows_per_task - 1) / rows_per_task, [&](int64_t task) {
      const int64_t i0 = task * rows_per_task, i1 = std::min(i0 + rows_per_task, B);
      std::vector<acc_t> eta(K), zrow(K);
      std::vector<uint32_t> word(K);
      RowReader<scalar_t, acc_t> Mr(mup, K), Vr(lvp, K);
      for (int64_t i = i0; i < i1; ++i) {
        draw_span<acc_t>(seed, offset, i * K, (i + 1) * K, eta.data(), word.data());
        const acc_t* mrow = Mr.row(i);
        const acc_t* vrow = Vr.row(i);
        constexpr bool same = std::is_same<scalar_t, acc_t>::value;
        acc_t* zout = same ? reinterpret_cast<acc_t*>(zp + i * K) : zrow.data();
        for_each_lane<acc_t>(K, [&](auto t, int64_t k) {
          using T = decltype(t);
          const T e = ld(m_diag.data() + k, t) + ld(s_diag.data() + k, t) * ld(eta.data() + k, t);
          st(zout + k, transport(ld(mrow + k, t), ld(vrow + k, t), e, ld(m_diag.data() + k, t),
                                 ld(inv_s_diag.data() + k, t)));
        });
        if (!same) store_row(zp + i * K, zrow.data(), K);
      }
    });
    return;
  }

  // 1.0 where the coordinate's z is its source noise (mode direct), 0.0 where it is transported.
  std::vector<acc_t> direct(K);
  for (int64_t k = 0; k < K; ++k) direct[k] = plan_direct(codes[k]) ? acc_t(1) : acc_t(0);

  const int64_t rows_per_task = std::max<int64_t>(1, (int64_t(1) << 13) / std::max<int64_t>(K, 1));
  parallel_tasks((B + rows_per_task - 1) / rows_per_task, [&](int64_t task) {
    const int64_t i0 = task * rows_per_task, i1 = std::min(i0 + rows_per_task, B);
    std::vector<acc_t> eta(K), eps(K), zrow(K);
    std::vector<uint32_t> word(K);
    RowReader<scalar_t, acc_t> Mr(mup, K), Vr(lvp, K);
    for (int64_t i = i0; i < i1; ++i) {
      draw_span<acc_t>(seed, offset, i * K, (i + 1) * K, eta.data(), word.data());
      const double u_row =
          any_row_tie ? uniform_open(philox_row_word(seed, off_blocks, static_cast<uint64_t>(i))) : 0.0;
      const acc_t* mrow = Mr.row(i);
      const acc_t* vrow = Vr.row(i);
      // Steps 1-3 (routing and source noise), scalar: gathers from the prior tables.
      if (all_prior_routed) {
        for (int64_t k = 0; k < K; ++k) {
          const int32_t c = sample_categorical(tp, static_cast<int32_t>(K), uniform_open(word[k]));
          eps[k] = routed_source_noise(codes[k], c, static_cast<int32_t>(k), static_cast<int32_t>(K),
                                       M, S, mrow, vrow, eta[k]);
        }
      } else {
        for (int64_t k = 0; k < K; ++k) {
          const int32_t code = codes[k];
          const int32_t c = routed_component(code, static_cast<int32_t>(k), static_cast<int32_t>(K),
                                             tp, tq, uniform_open(word[k]), u_row);
          eps[k] = routed_source_noise(code, c, static_cast<int32_t>(k), static_cast<int32_t>(K), M,
                                       S, mrow, vrow, eta[k]);
          if (plan_source(code) == kSourcePosterior) cp[i * P + plan_slot(code)] = static_cast<comp_t>(c);
        }
      }
      // Step 4, vectorised: transport, or the noise itself for direct coordinates.
      constexpr bool same = std::is_same<scalar_t, acc_t>::value;
      acc_t* zout = same ? reinterpret_cast<acc_t*>(zp + i * K) : zrow.data();
      for_each_lane<acc_t>(K, [&](auto t, int64_t k) {
        using T = decltype(t);
        const T e = ld(eps.data() + k, t);
        const T moved = transport(ld(mrow + k, t), ld(vrow + k, t), e, ld(m_diag.data() + k, t),
                                  ld(inv_s_diag.data() + k, t));
        st(zout + k, where_lt(T(0.5), ld(direct.data() + k, t), e, moved));
      });
      if (!same) store_row(zp + i * K, zrow.data(), K);
    }
  });
}

// Host-side validation of plan codes (CPU tensors only; the CUDA launcher trusts the Python plan).
void check_plan_codes(const at::Tensor& plan, int64_t num_posterior, bool has_pi_q) {
  const int32_t* codes = plan.data_ptr<int32_t>();
  int64_t n_post = 0;
  for (int64_t k = 0; k < plan.size(0); ++k) {
    const int32_t code = codes[k];
    TORCH_CHECK(plan_route(code) <= kRoutePosterior && plan_source(code) <= kSourcePosterior &&
                    (code & 0xC0) == 0,
                "xvae_fast: invalid plan code ", code, " at coordinate ", k);
    TORCH_CHECK(plan_direct(code) || plan_source(code) == kSourcePrior,
                "xvae_fast: coordinate ", k, ": mode transport needs source prior");
    TORCH_CHECK(has_pi_q || plan_route(code) != kRoutePosterior, "xvae_fast: coordinate ", k,
                " routes by pi_q but pi_q was not given");
    if (plan_source(code) == kSourcePosterior) {
      TORCH_CHECK(plan_slot(code) == n_post, "xvae_fast: plan slots must number the posterior ",
                  "coordinates 0, 1, ... in order");
      ++n_post;
    }
  }
  TORCH_CHECK(n_post == num_posterior, "xvae_fast: num_posterior = ", num_posterior, " but the plan has ",
              n_post, " posterior-source coordinates");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> routed_transport_cpu(
    const at::Tensor& mu_in, const at::Tensor& logvar_in, const at::Tensor& means,
    const at::Tensor& stds, const at::Tensor& pi_p, const std::optional<at::Tensor>& pi_q,
    const at::Tensor& plan_in, int64_t num_posterior, std::optional<at::Generator> generator) {
  check_routed_transport_args(mu_in, logvar_in, means, stds, pi_p, pi_q, plan_in, num_posterior);
  const int64_t B = mu_in.size(0), K = mu_in.size(1);
  auto plan = plan_in.contiguous();
  check_plan_codes(plan, num_posterior, pi_q.has_value());
  const auto so = cpu_seed_offset(generator);
  at::Tensor z = at::empty({B, K}, mu_in.options());
  at::Tensor comp = at::empty({B, num_posterior}, mu_in.options().dtype(component_dtype(K)));
  if (B > 0 && K > 0) {
    auto mu = mu_in.contiguous(), logvar = logvar_in.contiguous();
    auto tab_p = build_categorical_cpu(pi_p);
    std::optional<CategoricalTensors> tab_q;
    if (pi_q.has_value()) tab_q = build_categorical_cpu(*pi_q);
    XVAE_DISPATCH_FLOATING(mu.scalar_type(), "routed_transport_cpu", [&] {
      if (comp.scalar_type() == at::kShort) {
        routed_transport_kernel<scalar_t, int16_t>(mu, logvar, means.contiguous(), stds.contiguous(),
                                                   tab_p, tab_q ? &*tab_q : nullptr, plan, so.first,
                                                   so.second, z, comp);
      } else {
        routed_transport_kernel<scalar_t, int32_t>(mu, logvar, means.contiguous(), stds.contiguous(),
                                                   tab_p, tab_q ? &*tab_q : nullptr, plan, so.first,
                                                   so.second, z, comp);
      }
    });
  }
  return {z, comp, make_rng_state(so)};
}

template <typename scalar_t, typename comp_t>
void routed_transport_backward_kernel(const at::Tensor& gz, const at::Tensor& z,
                                      const at::Tensor& mu, const at::Tensor& comp,
                                      const int32_t* codes, at::Tensor& dmu, at::Tensor& dlv) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = mu.size(0), K = mu.size(1), P = comp.size(1);
  const scalar_t* gp = gz.data_ptr<scalar_t>();
  const scalar_t* zp = z.data_ptr<scalar_t>();
  const scalar_t* mup = mu.data_ptr<scalar_t>();
  const comp_t* cp = P > 0 ? comp.data_ptr<comp_t>() : nullptr;
  scalar_t* dmp = dmu.data_ptr<scalar_t>();
  scalar_t* dvp = dlv.data_ptr<scalar_t>();
  if (P == 0) {
    // No posterior-source coordinate: every z[i,k] depends on (mu, logvar)[i,k] alone (transport)
    // or on nothing (direct draw from the prior), so the backward is elementwise and vectorised.
    std::vector<acc_t> moved(K);
    for (int64_t k = 0; k < K; ++k) moved[k] = routed_grad_column(codes[k], int32_t(k), cp) == k;
    constexpr bool same = std::is_same<scalar_t, acc_t>::value;
    const int64_t rows_per_task = std::max<int64_t>(1, (int64_t(1) << 13) / K);
    parallel_tasks((B + rows_per_task - 1) / rows_per_task, [&](int64_t task) {
      const int64_t i0 = task * rows_per_task, i1 = std::min(i0 + rows_per_task, B);
      RowReader<scalar_t, acc_t> Gr(gp, K), Zr(zp, K), Mr(mup, K);
      std::vector<acc_t> am(same ? 0 : K), av(same ? 0 : K);
      for (int64_t i = i0; i < i1; ++i) {
        const acc_t* g = Gr.row(i);
        const acc_t* zr = Zr.row(i);
        const acc_t* mr = Mr.row(i);
        // float32 and float64 write the gradients in place; other dtypes through a row buffer.
        acc_t* om = same ? reinterpret_cast<acc_t*>(dmp + i * K) : am.data();
        acc_t* ov = same ? reinterpret_cast<acc_t*>(dvp + i * K) : av.data();
        for_each_lane<acc_t>(K, [&](auto t, int64_t k) {
          using T = decltype(t);
          const T gm = ld(g + k, t) * ld(moved.data() + k, t);
          st(om + k, gm);
          st(ov + k, T(0.5) * gm * (ld(zr + k, t) - ld(mr + k, t)));
        });
        if (!same) {
          store_row(dmp + i * K, am.data(), K);
          store_row(dvp + i * K, av.data(), K);
        }
      }
    });
    return;
  }
  at::parallel_for(0, B, std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(K, 1)),
                   [&](int64_t i0, int64_t i1) {
    std::vector<acc_t> am(K), av(K);
    for (int64_t i = i0; i < i1; ++i) {
      std::fill(am.begin(), am.end(), acc_t(0));
      std::fill(av.begin(), av.end(), acc_t(0));
      for (int64_t k = 0; k < K; ++k) {
        const int32_t col = routed_grad_column(codes[k], static_cast<int32_t>(k), cp + i * P);
        if (col < 0) continue;
        const acc_t g = static_cast<acc_t>(gp[i * K + k]);
        am[col] += g;
        av[col] += acc_t(0.5) * g *
                   (static_cast<acc_t>(zp[i * K + k]) - static_cast<acc_t>(mup[i * K + col]));
      }
      store_row(dmp + i * K, am.data(), K);
      store_row(dvp + i * K, av.data(), K);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> routed_transport_backward_cpu(const at::Tensor& grad_z,
                                                                 const at::Tensor& z,
                                                                 const at::Tensor& mu,
                                                                 const at::Tensor& comp,
                                                                 const at::Tensor& plan_in) {
  check_routed_transport_backward_args(grad_z, z, mu, comp, plan_in);
  const int64_t B = mu.size(0), K = mu.size(1);
  auto plan = plan_in.contiguous();
  at::Tensor dmu = at::empty({B, K}, mu.options()), dlv = at::empty({B, K}, mu.options());
  if (B == 0 || K == 0) return {dmu, dlv};
  auto gz = grad_z.contiguous(), zc = z.contiguous(), muc = mu.contiguous(), cc = comp.contiguous();
  XVAE_DISPATCH_FLOATING(mu.scalar_type(), "routed_transport_backward_cpu", [&] {
    if (cc.scalar_type() == at::kShort) {
      routed_transport_backward_kernel<scalar_t, int16_t>(gz, zc, muc, cc, plan.data_ptr<int32_t>(),
                                                          dmu, dlv);
    } else {
      routed_transport_backward_kernel<scalar_t, int32_t>(gz, zc, muc, cc, plan.data_ptr<int32_t>(),
                                                          dmu, dlv);
    }
  });
  return {dmu, dlv};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> draw_noise_cpu(const at::Tensor& rng_state,
                                                              int64_t rows, int64_t cols,
                                                              bool double_precision) {
  TORCH_CHECK(rows >= 0 && cols >= 0, "xvae_fast: draw_noise needs rows, cols >= 0");
  const auto so = read_rng_state(rng_state);
  auto f64 = at::TensorOptions().dtype(at::kDouble);
  at::Tensor eta = at::empty({rows, cols}, f64.dtype(double_precision ? at::kDouble : at::kFloat));
  at::Tensor u = at::empty({rows, cols}, f64), u_row = at::empty({rows}, f64);
  std::vector<uint32_t> words(rows * cols);
  AT_DISPATCH_FLOATING_TYPES(eta.scalar_type(), "draw_noise_cpu", [&] {
    draw_span<scalar_t>(so.first, so.second, 0, rows * cols, eta.data_ptr<scalar_t>(), words.data());
  });
  double* up = u.data_ptr<double>();
  for (int64_t e = 0; e < rows * cols; ++e) up[e] = uniform_open(words[e]);
  double* urp = u_row.data_ptr<double>();
  for (int64_t i = 0; i < rows; ++i)
    urp[i] = uniform_open(philox_row_word(so.first, so.second / 4, static_cast<uint64_t>(i)));
  return {eta, u, u_row};
}

}  // namespace

TORCH_LIBRARY_IMPL(xvae_fast, CPU, m) {
  m.impl("routed_transport", &routed_transport_cpu);
  m.impl("routed_transport_backward", &routed_transport_backward_cpu);
  m.impl("draw_noise", &draw_noise_cpu);
}

}  // namespace xvae
