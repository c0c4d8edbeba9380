// Diagonal Gaussian mixture log-density (op mixture_log_prob), CPU. Math: ../mixture_density.h.
//
// Vectorised across components: the means and precisions are transposed to (d, Cp) tables (Cp = C
// rounded up to the vector width; padded components have precision 0 and constant -inf, so they
// add nothing), and each row's C quadratic forms accumulate in vector registers, four rows at a time
// so every table load serves four rows. Nothing of size N x C x d is formed; a row's C joint terms
// live in a per-thread buffer. The backward recomputes them (as attention kernels do) and sums the
// parameter gradients over fixed row chunks, added in chunk order: the result does not depend on
// the thread count.
#include <torch/library.h>

#include <limits>

#include "../checks.h"
#include "../mixture_density.h"
#include "cpu_common.h"

namespace xvae {
namespace {

constexpr int kRows = 4;  // rows sharing each table load

// Per-call tables in the accumulation type.
template <typename acc_t>
struct MixtureTables {
  int64_t C, d, Cp;
  std::vector<acc_t> mt, pt;  // (d, Cp) means and precisions exp(-lv), transposed and padded
  std::vector<acc_t> kc;      // (Cp) component constants, -inf on padding
  std::vector<acc_t> p;       // (C, d) precisions, for the parameter gradients

  MixtureTables(const at::Tensor& log_weights, const at::Tensor& means, const at::Tensor& log_vars) {
    const auto acc = std::is_same<acc_t, double>::value ? at::kDouble : at::kFloat;
    auto lw = log_weights.to(acc).contiguous();
    auto m = means.to(acc).contiguous();
    auto lv = log_vars.to(acc).contiguous();
    C = m.size(0);
    d = m.size(1);
    const int64_t V = Vec<acc_t>::size();
    Cp = (C + V - 1) / V * V;
    mt.assign(d * Cp, acc_t(0));
    pt.assign(d * Cp, acc_t(0));
    kc.assign(Cp, -std::numeric_limits<acc_t>::infinity());
    p.resize(C * d);
    const acc_t* lwp = lw.template data_ptr<acc_t>();
    const acc_t* mp = m.template data_ptr<acc_t>();
    const acc_t* lvp = lv.template data_ptr<acc_t>();
    for (int64_t c = 0; c < C; ++c) {
      acc_t sum_lv = 0;
      for (int64_t j = 0; j < d; ++j) {
        const acc_t v = lvp[c * d + j];
        sum_lv += v;
        p[c * d + j] = std::exp(-v);
        mt[j * Cp + c] = mp[c * d + j];
        pt[j * Cp + c] = p[c * d + j];
      }
      kc[c] = mixture_component_const(lwp[c], sum_lv, d);
    }
  }
};

// joint[r][c] for R rows (z rows as acc_t), into out (R, Cp).
template <int R, typename acc_t>
inline void joint_rows(const acc_t* const* z, const MixtureTables<acc_t>& t, acc_t* out) {
  using V = Vec<acc_t>;
  const int64_t Cp = t.Cp, d = t.d;
  for (int64_t cb = 0; cb < Cp; cb += V::size()) {
    V q[R];
    for (int r = 0; r < R; ++r) q[r] = V(acc_t(0));
    const acc_t* mcol = t.mt.data() + cb;
    const acc_t* pcol = t.pt.data() + cb;
    for (int64_t j = 0; j < d; ++j) {
      const V m = V::loadu(mcol + j * Cp), p = V::loadu(pcol + j * Cp);
      for (int r = 0; r < R; ++r) q[r] = mixture_quad_step(V(z[r][j]), m, p, q[r]);
    }
    const V kc = V::loadu(t.kc.data() + cb);
    for (int r = 0; r < R; ++r) mixture_joint(kc, q[r]).store(out + r * Cp + cb);
  }
}

// logsumexp of a joint row (two passes over the buffer; the row is in L1).
template <typename acc_t>
inline acc_t row_logsumexp(const acc_t* joint, int64_t Cp) {
  using V = Vec<acc_t>;
  const acc_t mx = row_max(joint, Cp);
  const V vmx(mx);
  V s(acc_t(0));
  for (int64_t c = 0; c < Cp; c += V::size()) s = s + xexp(V::loadu(joint + c) - vmx);
  return mx + std::log(at::vec::vec_reduce_all<acc_t>([](V& a, V& b) { return a + b; }, s));
}

// Softmax of a joint row into out (0 on padding) with one exp per term; returns the logsumexp.
template <typename acc_t>
inline acc_t row_softmax(const acc_t* joint, int64_t Cp, acc_t* out) {
  using V = Vec<acc_t>;
  const acc_t mx = row_max(joint, Cp);
  const V vmx(mx);
  V s(acc_t(0));
  for (int64_t c = 0; c < Cp; c += V::size()) {
    const V e = xexp(V::loadu(joint + c) - vmx);
    e.store(out + c);
    s = s + e;
  }
  const acc_t total = at::vec::vec_reduce_all<acc_t>([](V& a, V& b) { return a + b; }, s);
  const V inv(acc_t(1) / total);
  for (int64_t c = 0; c < Cp; c += V::size()) (V::loadu(out + c) * inv).store(out + c);
  return mx + std::log(total);
}

// Runs f(rows, i0, R) over rows [i0, i1) in groups of kRows (then single rows), with the z rows as
// acc_t pointers; `zbuf` holds kRows * d converted values when scalar_t != acc_t.
template <typename scalar_t, typename acc_t, typename F>
inline void for_row_groups(const scalar_t* z, int64_t d, int64_t i0, int64_t i1,
                           std::vector<acc_t>& zbuf, F&& f) {
  auto row_ptr = [&](int64_t i, int slot) -> const acc_t* {
    if constexpr (std::is_same<scalar_t, acc_t>::value) {
      return z + i * d;
    } else {
      acc_t* b = zbuf.data() + slot * d;
      for (int64_t j = 0; j < d; ++j) b[j] = static_cast<acc_t>(z[i * d + j]);
      return b;
    }
  };
  int64_t i = i0;
  for (; i + kRows <= i1; i += kRows) {
    const acc_t* rows[kRows];
    for (int r = 0; r < kRows; ++r) rows[r] = row_ptr(i + r, r);
    f(std::integral_constant<int, kRows>(), rows, i);
  }
  for (; i < i1; ++i) {
    const acc_t* rows[1] = {row_ptr(i, 0)};
    f(std::integral_constant<int, 1>(), rows, i);
  }
}

std::tuple<at::Tensor, at::Tensor> mixture_log_prob_cpu(const at::Tensor& z_in,
                                                        const at::Tensor& log_weights,
                                                        const at::Tensor& means,
                                                        const at::Tensor& log_vars,
                                                        bool return_resp) {
  check_mixture_log_prob_args(z_in, log_weights, means, log_vars);
  const int64_t N = z_in.size(0), d = z_in.size(1), C = log_weights.size(0);
  at::Tensor lp = at::empty({N}, z_in.options());
  at::Tensor resp = return_resp ? at::empty({N, C}, z_in.options()) : at::empty({0}, z_in.options());
  if (N == 0) return {lp, resp};
  auto z = z_in.contiguous();
  XVAE_DISPATCH_FLOATING(z.scalar_type(), "mixture_log_prob_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const MixtureTables<acc_t> t(log_weights, means, log_vars);
    const int64_t Cp = t.Cp;
    const scalar_t* zp = z.data_ptr<scalar_t>();
    scalar_t* lpp = lp.data_ptr<scalar_t>();
    scalar_t* rp = return_resp ? resp.data_ptr<scalar_t>() : nullptr;
    const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, Cp * d));
    at::parallel_for(0, N, grain, [&](int64_t i0, int64_t i1) {
      std::vector<acc_t> joint(kRows * Cp), zbuf(kRows * d);
      for_row_groups<scalar_t, acc_t>(zp, d, i0, i1, zbuf, [&](auto R, const acc_t* const* rows,
                                                                int64_t i) {
        joint_rows<decltype(R)::value, acc_t>(rows, t, joint.data());
        for (int r = 0; r < decltype(R)::value; ++r) {
          acc_t* jr = joint.data() + r * Cp;
          if (rp == nullptr) {
            lpp[i + r] = static_cast<scalar_t>(row_logsumexp(jr, Cp));
            continue;
          }
          lpp[i + r] = static_cast<scalar_t>(row_softmax(jr, Cp, jr));  // r in place of joint
          store_row(rp + (i + r) * C, jr, C);
        }
      });
    });
  });
  return {lp, resp};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> mixture_log_prob_backward_cpu(
    const at::Tensor& grad, const std::optional<at::Tensor>& grad_resp, const at::Tensor& z_in,
    const at::Tensor& log_weights, const at::Tensor& means, const at::Tensor& log_vars) {
  check_mixture_log_prob_backward_args(grad, grad_resp, z_in, log_weights, means, log_vars);
  const int64_t N = z_in.size(0), d = z_in.size(1), C = log_weights.size(0);
  at::Tensor dz = at::empty({N, d}, z_in.options());
  at::Tensor dlw = at::empty({C}, z_in.options());
  at::Tensor dm = at::empty({C, d}, z_in.options());
  at::Tensor dlv = at::empty({C, d}, z_in.options());
  if (N == 0) {
    dlw.zero_();
    dm.zero_();
    dlv.zero_();
    return {dz, dlw, dm, dlv};
  }
  auto z = z_in.contiguous();
  const auto acc = acc_dtype_of(z_in);
  auto g = grad.to(acc).contiguous();
  at::Tensor G = grad_resp.has_value() ? grad_resp->to(acc).contiguous() : at::Tensor();
  XVAE_DISPATCH_FLOATING(z.scalar_type(), "mixture_log_prob_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using V = Vec<acc_t>;
    const MixtureTables<acc_t> t(log_weights, means, log_vars);
    const int64_t Cp = t.Cp;
    // Fixed chunks of rows (independent of the thread count), each with its own partial sums.
    const int64_t chunks = std::min<int64_t>((N + 63) / 64, 64);
    const int64_t chunk_rows = (N + chunks - 1) / chunks;
    const int64_t table = d * Cp;
    std::vector<acc_t> part_m(chunks * table, acc_t(0)), part_q(chunks * table, acc_t(0)),
        part_w(chunks * Cp, acc_t(0));
    const scalar_t* zp = z.data_ptr<scalar_t>();
    const acc_t* gp = g.data_ptr<acc_t>();
    const acc_t* Gp = G.defined() ? G.data_ptr<acc_t>() : nullptr;
    scalar_t* dzp = dz.data_ptr<scalar_t>();
    at::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
      std::vector<acc_t> joint(kRows * Cp), zbuf(kRows * d), w(kRows * Cp), dzrow(kRows * d);
      for (int64_t k = k0; k < k1; ++k) {
        acc_t* am = part_m.data() + k * table;
        acc_t* aq = part_q.data() + k * table;
        acc_t* aw = part_w.data() + k * Cp;
        const int64_t i0 = k * chunk_rows, i1 = std::min(N, i0 + chunk_rows);
        for_row_groups<scalar_t, acc_t>(zp, d, i0, i1, zbuf, [&](auto RR, const acc_t* const* rows,
                                                                  int64_t i) {
          constexpr int R = decltype(RR)::value;
          joint_rows<R, acc_t>(rows, t, joint.data());
          // w = d loss / d joint per row (0 on padding, where exp(-inf) = 0).
          for (int r = 0; r < R; ++r) {
            const int64_t n = i + r;
            const acc_t* jr = joint.data() + r * Cp;
            acc_t* wr = w.data() + r * Cp;
            row_softmax(jr, Cp, wr);
            if (Gp != nullptr) {
              const acc_t* Gr = Gp + n * C;
              acc_t rG = 0;
              for (int64_t c = 0; c < C; ++c) rG += wr[c] * Gr[c];
              for (int64_t c = 0; c < C; ++c) wr[c] = mixture_joint_grad(wr[c], gp[n], Gr[c], rG);
            } else {
              const V gv(gp[n]);
              for (int64_t c = 0; c < Cp; c += V::size()) (V::loadu(wr + c) * gv).store(wr + c);
            }
            for (int64_t c = 0; c < Cp; c += V::size())
              (V::loadu(aw + c) + V::loadu(wr + c)).store(aw + c);
          }
          // dz and the parameter accumulators; each table and accumulator load serves R rows.
          for (int64_t j = 0; j < d; ++j) {
            V zj[R], dzv[R];
            for (int r = 0; r < R; ++r) {
              zj[r] = V(rows[r][j]);
              dzv[r] = V(acc_t(0));
            }
            acc_t* amj = am + j * Cp;
            acc_t* aqj = aq + j * Cp;
            const acc_t* mj = t.mt.data() + j * Cp;
            const acc_t* pj = t.pt.data() + j * Cp;
            for (int64_t c = 0; c < Cp; c += V::size()) {
              const V m = V::loadu(mj + c), p = V::loadu(pj + c);
              V accm = V::loadu(amj + c), accq = V::loadu(aqj + c);
              for (int r = 0; r < R; ++r) {
                const V wv = V::loadu(w.data() + r * Cp + c);
                dzv[r] = mixture_dz_step(zj[r], m, p, wv, dzv[r]);
                mixture_param_step(zj[r], m, wv, &accm, &accq);
              }
              accm.store(amj + c);
              accq.store(aqj + c);
            }
            for (int r = 0; r < R; ++r)
              dzrow[r * d + j] = at::vec::vec_reduce_all<acc_t>([](V& a, V& b) { return a + b; }, dzv[r]);
          }
          for (int r = 0; r < R; ++r) store_row(dzp + (i + r) * d, dzrow.data() + r * d, d);
        });
      }
    });
    // Chunk partials, added in chunk order.
    scalar_t* dlwp = dlw.data_ptr<scalar_t>();
    scalar_t* dmp = dm.data_ptr<scalar_t>();
    scalar_t* dlvp = dlv.data_ptr<scalar_t>();
    at::parallel_for(0, C, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, d * chunks)),
                     [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        acc_t ws = 0;
        for (int64_t k = 0; k < chunks; ++k) ws += part_w[k * Cp + c];
        dlwp[c] = static_cast<scalar_t>(ws);
        for (int64_t j = 0; j < d; ++j) {
          acc_t sm = 0, sq = 0;
          for (int64_t k = 0; k < chunks; ++k) {
            sm += part_m[k * table + j * Cp + c];
            sq += part_q[k * table + j * Cp + c];
          }
          const acc_t p = t.p[c * d + j];
          dmp[c * d + j] = static_cast<scalar_t>(mixture_mean_grad(p, sm));
          dlvp[c * d + j] = static_cast<scalar_t>(mixture_logvar_grad(p, sq, ws));
        }
      }
    });
  });
  return {dz, dlw, dm, dlv};
}

}  // namespace

TORCH_LIBRARY_IMPL(xvae_fast, CPU, m) {
  m.impl("mixture_log_prob", &mixture_log_prob_cpu);
  m.impl("mixture_log_prob_backward", &mixture_log_prob_backward_cpu);
}

}  // namespace xvae
