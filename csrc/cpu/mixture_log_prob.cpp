// Diagonal Gaussian mixture log-density (op mixture_log_prob), CPU. Math: ../mixture_density.h.
//
// Vectorised across components: the means and precisions are transposed to (d, width) tables
// (components padded to the vector width; padded components have precision 0 and constant -inf,
// so they add nothing), and each row's quadratic forms accumulate in vector registers, four rows at
// a time so every table load serves four rows. Nothing of size N x C x d is formed.
//
// The tables are cut into tiles of components that fit in L2 (the KDE has 10^4 - 2 10^4
// "components" in up to 128 dimensions: 10-20 MB of tables). With one tile (every mixture prior of
// the paper sizes), a row's C joint terms live in a per-thread buffer and are used in place. With
// several, tiles are the outer loop and each row keeps an online logsumexp across them (as attention
// kernels do), so a tile is read from memory once per thread rather than once per row group; the
// backward then makes one pass for the logsumexp and one for the gradients.
//
// The backward recomputes the joint terms and sums the parameter gradients over fixed row chunks,
// added in chunk order: the result does not depend on the thread count. Only the gradients asked
// for are computed.
#include <torch/library.h>

#include <array>
#include <limits>
#include <type_traits>

#include "../checks.h"
#include "../mixture_density.h"
#include "cpu_common.h"

namespace xvae {
namespace {

constexpr int kRows = 4;                        // rows sharing each table load
constexpr int64_t kTileBytes = int64_t(1) << 18;  // both tables of one tile: half of a 512 KB L2

// Per-call tables in the accumulation type, tile-major: tile k holds components [k Ct, k Ct + w_k)
// as a (d, w_k) block of means and one of precisions (w_k = Ct except for the last tile). The
// inputs are read through their strides: a broadcast input (the KDE's stride-0 expand of one
// log-variance) is never copied to full size.
template <typename acc_t>
struct MixtureTables {
  int64_t C, d, Cp, Ct, tiles;
  std::vector<acc_t> mt, pt;  // the tiles, d * Cp values each
  std::vector<acc_t> kc;      // (Cp) component constants, -inf on padding
  std::vector<acc_t> p;       // (C, d) precisions, for the parameter gradients (if kept)

  int64_t width(int64_t k) const { return std::min(Ct, Cp - k * Ct); }
  int64_t offset(int64_t k) const { return k * Ct * d; }
  // Position of (component c, coordinate j) in a tile-major (d * Cp) array.
  int64_t at(int64_t c, int64_t j) const {
    const int64_t k = c / Ct;
    return offset(k) + j * width(k) + (c - k * Ct);
  }

  template <typename scalar_t>
  MixtureTables(const at::Tensor& log_weights, const at::Tensor& means, const at::Tensor& log_vars,
                scalar_t, bool keep_p) {
    C = means.size(0);
    d = means.size(1);
    const int64_t V = Vec<acc_t>::size();
    Cp = (C + V - 1) / V * V;
    Ct = std::max<int64_t>(V, kTileBytes / (2 * int64_t(sizeof(acc_t)) * std::max<int64_t>(1, d)) / V * V);
    if (Ct >= Cp) Ct = Cp;
    tiles = (Cp + Ct - 1) / Ct;
    mt.assign(d * Cp, acc_t(0));
    pt.assign(d * Cp, acc_t(0));
    kc.assign(Cp, -std::numeric_limits<acc_t>::infinity());
    if (keep_p) p.resize(C * d);
    const scalar_t* lwp = log_weights.data_ptr<scalar_t>();
    const scalar_t* mp = means.data_ptr<scalar_t>();
    const scalar_t* lvp = log_vars.data_ptr<scalar_t>();
    const int64_t sw = log_weights.stride(0), sm0 = means.stride(0), sm1 = means.stride(1),
                  sv0 = log_vars.stride(0), sv1 = log_vars.stride(1);
    // A stride-0 first dimension (one shared row of log-variances) takes its exponentials once.
    std::vector<acc_t> shared_prec;
    if (sv0 == 0 && C > 1) {
      shared_prec.resize(d);
      for (int64_t j = 0; j < d; ++j) shared_prec[j] = std::exp(-static_cast<acc_t>(lvp[j * sv1]));
    }
    // Split only big tables (the KDE's): a parallel region costs more than a small table.
    at::parallel_for(0, C, std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, d)), [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        acc_t sum_lv = 0;
        for (int64_t j = 0; j < d; ++j) {
          const acc_t v = static_cast<acc_t>(lvp[c * sv0 + j * sv1]);
          const acc_t prec = shared_prec.empty() ? std::exp(-v) : shared_prec[j];
          sum_lv += v;
          if (keep_p) p[c * d + j] = prec;
          mt[at(c, j)] = static_cast<acc_t>(mp[c * sm0 + j * sm1]);
          pt[at(c, j)] = prec;
        }
        kc[c] = mixture_component_const(static_cast<acc_t>(lwp[c * sw]), sum_lv, d);
      }
    });
  }
};

// joint[r][c] for R rows (z rows as acc_t) and the components of tile k, into out (R rows of
// stride ld, from the tile's first component).
template <int R, typename acc_t>
inline void joint_tile(const acc_t* const* z, const MixtureTables<acc_t>& t, int64_t k, acc_t* out,
                       int64_t ld) {
  using V = Vec<acc_t>;
  const int64_t w = t.width(k), d = t.d;
  const acc_t* mtile = t.mt.data() + t.offset(k);
  const acc_t* ptile = t.pt.data() + t.offset(k);
  const acc_t* kc = t.kc.data() + k * t.Ct;
  for (int64_t cb = 0; cb < w; cb += V::size()) {
    V q[R];
    for (int r = 0; r < R; ++r) q[r] = V(acc_t(0));
    for (int64_t j = 0; j < d; ++j) {
      const V m = V::loadu(mtile + j * w + cb), p = V::loadu(ptile + j * w + cb);
      for (int r = 0; r < R; ++r) q[r] = mixture_quad_step(V(z[r][j]), m, p, q[r]);
    }
    const V kcv = V::loadu(kc + cb);
    for (int r = 0; r < R; ++r) mixture_joint(kcv, q[r]).store(out + r * ld + cb);
  }
}

template <typename acc_t>
inline acc_t vsum(const Vec<acc_t>& v) {
  return at::vec::vec_reduce_all<acc_t>([](Vec<acc_t>& a, Vec<acc_t>& b) { return a + b; }, v);
}

// logsumexp of a joint row (two passes over the buffer; the row is in L1).
template <typename acc_t>
inline acc_t row_logsumexp(const acc_t* joint, int64_t Cp) {
  using V = Vec<acc_t>;
  const acc_t mx = row_max(joint, Cp);
  const V vmx(mx);
  V s(acc_t(0));
  for (int64_t c = 0; c < Cp; c += V::size()) s = s + xexp(V::loadu(joint + c) - vmx);
  return mx + std::log(vsum(s));
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
  const acc_t total = vsum(s);
  const V inv(acc_t(1) / total);
  for (int64_t c = 0; c < Cp; c += V::size()) (V::loadu(out + c) * inv).store(out + c);
  return mx + std::log(total);
}

// Folds w joint terms (and, when G is given, the weights G of the r-weighted mean) into a row's
// online logsumexp state (max, sum of exp(x - max), sum of exp(x - max) G).
template <typename acc_t>
inline void lse_fold(const acc_t* joint, const acc_t* G, int64_t w, acc_t* mx, acc_t* sum,
                     acc_t* sum_g) {
  using V = Vec<acc_t>;
  const acc_t tmax = row_max(joint, w);
  if (tmax == -std::numeric_limits<acc_t>::infinity()) return;
  if (tmax > *mx) {
    const acc_t scale = std::exp(*mx - tmax);
    *sum *= scale;
    *sum_g *= scale;
    *mx = tmax;
  }
  const V vmx(*mx);
  V s(acc_t(0)), sg(acc_t(0));
  int64_t c = 0;
  for (; c < w; c += V::size()) {
    const V e = xexp(V::loadu(joint + c) - vmx);
    s = s + e;
    if (G != nullptr) sg = sg + e * V::loadu(G + c, std::min<int64_t>(V::size(), w - c));
  }
  *sum += vsum(s);
  if (G != nullptr) *sum_g += vsum(sg);
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

// Rows per task: enough table work per task to amortise the split.
inline int64_t row_grain(int64_t Cp, int64_t d) {
  return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, Cp * d));
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
    using V = Vec<acc_t>;
    const MixtureTables<acc_t> t(log_weights, means, log_vars, scalar_t(0), false);
    const int64_t Cp = t.Cp, Ct = t.Ct;
    const scalar_t* zp = z.data_ptr<scalar_t>();
    scalar_t* lpp = lp.data_ptr<scalar_t>();
    scalar_t* rp = return_resp ? resp.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, N, row_grain(Cp, d), [&](int64_t i0, int64_t i1) {
      std::vector<acc_t> zbuf(kRows * d);
      if (t.tiles == 1) {
        std::vector<acc_t> joint(kRows * Cp);
        for_row_groups<scalar_t, acc_t>(zp, d, i0, i1, zbuf, [&](auto RR, const acc_t* const* rows,
                                                                  int64_t i) {
          constexpr int R = decltype(RR)::value;
          joint_tile<R, acc_t>(rows, t, 0, joint.data(), Cp);
          for (int r = 0; r < R; ++r) {
            acc_t* jr = joint.data() + r * Cp;
            if (rp == nullptr) {
              lpp[i + r] = static_cast<scalar_t>(row_logsumexp(jr, Cp));
              continue;
            }
            lpp[i + r] = static_cast<scalar_t>(row_softmax(jr, Cp, jr));  // r in place of joint
            store_row(rp + (i + r) * C, jr, C);
          }
        });
        return;
      }
      // Several tiles: tiles outermost, an online logsumexp per row across them.
      const int64_t nr = i1 - i0;
      std::vector<acc_t> joint(kRows * Ct), mx(nr, -std::numeric_limits<acc_t>::infinity()),
          sum(nr, acc_t(0)), unused(nr, acc_t(0));
      for (int64_t k = 0; k < t.tiles; ++k) {
        const int64_t w = t.width(k), c0 = k * Ct;
        for_row_groups<scalar_t, acc_t>(zp, d, i0, i1, zbuf, [&](auto RR, const acc_t* const* rows,
                                                                  int64_t i) {
          constexpr int R = decltype(RR)::value;
          joint_tile<R, acc_t>(rows, t, k, joint.data(), Ct);
          for (int r = 0; r < R; ++r) {
            const int64_t s = i + r - i0;
            lse_fold<acc_t>(joint.data() + r * Ct, nullptr, w, &mx[s], &sum[s], &unused[s]);
          }
        });
      }
      for (int64_t s = 0; s < nr; ++s) {
        mx[s] += std::log(sum[s]);  // now the logsumexp
        lpp[i0 + s] = static_cast<scalar_t>(mx[s]);
      }
      if (rp == nullptr) return;
      // The responsibilities: a second pass, exp(joint - log p).
      for (int64_t k = 0; k < t.tiles; ++k) {
        const int64_t w = t.width(k), c0 = k * Ct, wc = std::min(w, C - c0);
        for_row_groups<scalar_t, acc_t>(zp, d, i0, i1, zbuf, [&](auto RR, const acc_t* const* rows,
                                                                  int64_t i) {
          constexpr int R = decltype(RR)::value;
          joint_tile<R, acc_t>(rows, t, k, joint.data(), Ct);
          for (int r = 0; r < R; ++r) {
            acc_t* jr = joint.data() + r * Ct;
            const V lse(mx[i + r - i0]);
            for (int64_t c = 0; c < w; c += V::size()) xexp(V::loadu(jr + c) - lse).store(jr + c);
            store_row(rp + (i + r) * C + c0, jr, wc);
          }
        });
      }
    });
  });
  return {lp, resp};
}

// d loss / d joint of R rows in place over w terms: joint -> w = r (g + G - rG), with r =
// exp(joint - lse); G (rows of stride ldG from the tile's first component) may be null.
template <int R, typename acc_t>
inline void joint_to_grad(acc_t* joint, int64_t ld, int64_t w, const acc_t* lse, const acc_t* gn,
                          const acc_t* const* G, const acc_t* rG) {
  using V = Vec<acc_t>;
  for (int r = 0; r < R; ++r) {
    acc_t* jr = joint + r * ld;
    const V l(lse[r]), g(gn[r]);
    if (G == nullptr) {
      for (int64_t c = 0; c < w; c += V::size()) (xexp(V::loadu(jr + c) - l) * g).store(jr + c);
    } else {
      for (int64_t c = 0; c < w; ++c)
        jr[c] = mixture_joint_grad(std::exp(jr[c] - lse[r]), gn[r], c < w ? G[r][c] : acc_t(0), rG[r]);
    }
  }
}

// dz (kDz) and the mean / log-variance accumulators (kMQ) of R rows from their gradient weights w
// (rows of stride ld) over tile k; dz rows (stride d) and the accumulators (tile-major, at the tile)
// are added to. Each table and accumulator load serves R rows.
template <int R, bool kDz, bool kMQ, typename acc_t>
inline void grad_tile(const acc_t* const* rows, const MixtureTables<acc_t>& t, int64_t k,
                      const acc_t* w, int64_t ld, acc_t* dz, acc_t* am, acc_t* aq) {
  using V = Vec<acc_t>;
  const int64_t wd = t.width(k), d = t.d, off = t.offset(k);
  for (int64_t j = 0; j < d; ++j) {
    V zj[R], dzv[R];
    for (int r = 0; r < R; ++r) {
      zj[r] = V(rows[r][j]);
      dzv[r] = V(acc_t(0));
    }
    const acc_t* mj = t.mt.data() + off + j * wd;
    const acc_t* pj = t.pt.data() + off + j * wd;
    for (int64_t c = 0; c < wd; c += V::size()) {
      const V m = V::loadu(mj + c);
      if constexpr (kMQ) {
        acc_t* amj = am + off + j * wd;
        acc_t* aqj = aq + off + j * wd;
        V accm = V::loadu(amj + c), accq = V::loadu(aqj + c);
        for (int r = 0; r < R; ++r) mixture_param_step(zj[r], m, V::loadu(w + r * ld + c), &accm, &accq);
        accm.store(amj + c);
        accq.store(aqj + c);
      }
      if constexpr (kDz) {
        const V p = V::loadu(pj + c);
        for (int r = 0; r < R; ++r) dzv[r] = mixture_dz_step(zj[r], m, p, V::loadu(w + r * ld + c), dzv[r]);
      }
    }
    if constexpr (kDz) {
      for (int r = 0; r < R; ++r) dz[r * d + j] += vsum(dzv[r]);
    }
  }
}

// needs = which of (z, log_weights, means, log_vars) want a gradient; the others come back
// undefined (None in Python), and their work is skipped: with no parameter gradient (a frozen or
// detached prior, the KDE) there are no chunk partials and no reduction, and with no z gradient no dz.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> mixture_log_prob_backward_cpu(
    const at::Tensor& grad, const std::optional<at::Tensor>& grad_resp, const at::Tensor& z_in,
    const at::Tensor& log_weights, const at::Tensor& means, const at::Tensor& log_vars,
    std::array<bool, 4> needs) {
  check_mixture_log_prob_backward_args(grad, grad_resp, z_in, log_weights, means, log_vars);
  const int64_t N = z_in.size(0), d = z_in.size(1), C = log_weights.size(0);
  const bool need_z = needs[0], need_lw = needs[1], need_m = needs[2], need_lv = needs[3];
  const bool need_mq = need_m || need_lv, need_w = need_lw || need_lv;
  const bool need_params = need_w || need_mq;
  at::Tensor dz = need_z ? at::empty({N, d}, z_in.options()) : at::Tensor();
  at::Tensor dlw = need_lw ? at::zeros({C}, z_in.options()) : at::Tensor();
  at::Tensor dm = need_m ? at::zeros({C, d}, z_in.options()) : at::Tensor();
  at::Tensor dlv = need_lv ? at::zeros({C, d}, z_in.options()) : at::Tensor();
  if (N == 0 || !(need_z || need_params)) return {dz, dlw, dm, dlv};
  auto z = z_in.contiguous();
  const auto acc = acc_dtype_of(z_in);
  auto g = grad.to(acc).contiguous();
  at::Tensor G = grad_resp.has_value() ? grad_resp->to(acc).contiguous() : at::Tensor();
  XVAE_DISPATCH_FLOATING(z.scalar_type(), "mixture_log_prob_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using V = Vec<acc_t>;
    const MixtureTables<acc_t> t(log_weights, means, log_vars, scalar_t(0), need_mq);
    const int64_t Cp = t.Cp, Ct = t.Ct;
    const scalar_t* zp = z.data_ptr<scalar_t>();
    const acc_t* gp = g.data_ptr<acc_t>();
    const acc_t* Gp = G.defined() ? G.data_ptr<acc_t>() : nullptr;
    scalar_t* dzp = need_z ? dz.data_ptr<scalar_t>() : nullptr;
    // Rows [i0, i1) into the given accumulators (null when not needed; tile-major like the tables).
    auto run_rows = [&](int64_t i0, int64_t i1, acc_t* am, acc_t* aq, acc_t* aw) {
      const int64_t nr = i1 - i0;
      std::vector<acc_t> zbuf(kRows * d), joint(kRows * Ct), dzacc(need_z ? nr * d : 0, acc_t(0));
      std::vector<acc_t> lse(nr), rG(nr, acc_t(0));
      auto grads = [&](auto RR, const acc_t* const* rows, int64_t i, int64_t k, acc_t* wbuf, int64_t ld) {
        constexpr int R = decltype(RR)::value;
        const int64_t w = t.width(k), c0 = k * Ct;
        if (aw != nullptr)
          for (int r = 0; r < R; ++r)
            for (int64_t c = 0; c < w; c += V::size())
              (V::loadu(aw + c0 + c) + V::loadu(wbuf + r * ld + c)).store(aw + c0 + c);
        acc_t* dzr = need_z ? dzacc.data() + (i - i0) * d : nullptr;
        if (need_z && need_mq) grad_tile<R, true, true, acc_t>(rows, t, k, wbuf, ld, dzr, am, aq);
        else if (need_z) grad_tile<R, true, false, acc_t>(rows, t, k, wbuf, ld, dzr, am, aq);
        else if (need_mq) grad_tile<R, false, true, acc_t>(rows, t, k, wbuf, ld, dzr, am, aq);
      };
      if (t.tiles == 1) {
        // One tile: the joint row in a buffer, its softmax in place, then the gradient weights.
        std::vector<acc_t> jbuf(kRows * Cp);
        for_row_groups<scalar_t, acc_t>(zp, d, i0, i1, zbuf, [&](auto RR, const acc_t* const* rows,
                                                                  int64_t i) {
          constexpr int R = decltype(RR)::value;
          joint_tile<R, acc_t>(rows, t, 0, jbuf.data(), Cp);
          for (int r = 0; r < R; ++r) {
            const int64_t n = i + r;
            acc_t* wr = jbuf.data() + r * Cp;
            row_softmax(wr, Cp, wr);
            if (Gp != nullptr) {
              const acc_t* Gr = Gp + n * C;
              acc_t s = 0;
              for (int64_t c = 0; c < C; ++c) s += wr[c] * Gr[c];
              for (int64_t c = 0; c < C; ++c) wr[c] = mixture_joint_grad(wr[c], gp[n], Gr[c], s);
            } else {
              const V gv(gp[n]);
              for (int64_t c = 0; c < Cp; c += V::size()) (V::loadu(wr + c) * gv).store(wr + c);
            }
          }
          grads(RR, rows, i, 0, jbuf.data(), Cp);
        });
      } else {
        // Several tiles. Pass 1: each row's logsumexp (and r-weighted mean of G) across the tiles.
        std::vector<acc_t> sum(nr, acc_t(0)), sum_g(nr, acc_t(0));
        for (int64_t s = 0; s < nr; ++s) lse[s] = -std::numeric_limits<acc_t>::infinity();
        for (int64_t k = 0; k < t.tiles; ++k) {
          const int64_t w = t.width(k), c0 = k * Ct, wc = std::min(w, C - c0);
          for_row_groups<scalar_t, acc_t>(zp, d, i0, i1, zbuf, [&](auto RR, const acc_t* const* rows,
                                                                    int64_t i) {
            constexpr int R = decltype(RR)::value;
            joint_tile<R, acc_t>(rows, t, k, joint.data(), Ct);
            for (int r = 0; r < R; ++r) {
              const int64_t s = i + r - i0;
              // G is read over the real components only (the padding's joint is -inf anyway).
              lse_fold<acc_t>(joint.data() + r * Ct, Gp != nullptr ? Gp + (i + r) * C + c0 : nullptr,
                              Gp != nullptr ? wc : w, &lse[s], &sum[s], &sum_g[s]);
            }
          });
        }
        for (int64_t s = 0; s < nr; ++s) {
          rG[s] = sum_g[s] / sum[s];
          lse[s] += std::log(sum[s]);
        }
        // Pass 2: the gradient weights per tile, then dz and the accumulators.
        for (int64_t k = 0; k < t.tiles; ++k) {
          const int64_t w = t.width(k), c0 = k * Ct, wc = std::min(w, C - c0);
          for_row_groups<scalar_t, acc_t>(zp, d, i0, i1, zbuf, [&](auto RR, const acc_t* const* rows,
                                                                    int64_t i) {
            constexpr int R = decltype(RR)::value;
            joint_tile<R, acc_t>(rows, t, k, joint.data(), Ct);
            const acc_t* Grows[R];
            acc_t gn[R];
            for (int r = 0; r < R; ++r) {
              Grows[r] = Gp != nullptr ? Gp + (i + r) * C + c0 : nullptr;
              gn[r] = gp[i + r];
            }
            joint_to_grad<R, acc_t>(joint.data(), Ct, Gp != nullptr ? wc : w, lse.data() + (i - i0),
                                    gn, Gp != nullptr ? Grows : nullptr, rG.data() + (i - i0));
            if (Gp != nullptr)  // the padding columns (past wc) carry weight 0
              for (int r = 0; r < R; ++r)
                for (int64_t c = wc; c < w; ++c) joint[r * Ct + c] = acc_t(0);
            grads(RR, rows, i, k, joint.data(), Ct);
          });
        }
      }
      if (need_z)
        for (int64_t s = 0; s < nr; ++s) store_row(dzp + (i0 + s) * d, dzacc.data() + s * d, d);
    };
    if (!need_params) {
      // dz only: rows are independent, split as the forward splits them.
      at::parallel_for(0, N, row_grain(Cp, d), [&](int64_t i0, int64_t i1) { run_rows(i0, i1, nullptr, nullptr, nullptr); });
      return;
    }
    // Fixed chunks of rows (independent of the thread count), each with its own partial sums.
    const int64_t chunks = std::min<int64_t>((N + 63) / 64, 64);
    const int64_t chunk_rows = (N + chunks - 1) / chunks;
    const int64_t table = d * Cp;
    std::vector<acc_t> part_m(need_mq ? chunks * table : 0, acc_t(0)),
        part_q(need_mq ? chunks * table : 0, acc_t(0)), part_w(need_w ? chunks * Cp : 0, acc_t(0));
    at::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t i0 = k * chunk_rows, i1 = std::min(N, i0 + chunk_rows);
        run_rows(i0, i1, need_mq ? part_m.data() + k * table : nullptr,
                 need_mq ? part_q.data() + k * table : nullptr,
                 need_w ? part_w.data() + k * Cp : nullptr);
      }
    });
    // Chunk partials, added in chunk order.
    scalar_t* dlwp = need_lw ? dlw.data_ptr<scalar_t>() : nullptr;
    scalar_t* dmp = need_m ? dm.data_ptr<scalar_t>() : nullptr;
    scalar_t* dlvp = need_lv ? dlv.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, C, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, d * chunks)),
                     [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        acc_t ws = 0;
        if (need_w)
          for (int64_t k = 0; k < chunks; ++k) ws += part_w[k * Cp + c];
        if (dlwp != nullptr) dlwp[c] = static_cast<scalar_t>(ws);
        if (!need_mq) continue;
        for (int64_t j = 0; j < d; ++j) {
          const int64_t e = t.at(c, j);
          acc_t sm = 0, sq = 0;
          for (int64_t k = 0; k < chunks; ++k) {
            sm += part_m[k * table + e];
            sq += part_q[k * table + e];
          }
          const acc_t p = t.p[c * d + j];
          if (dmp != nullptr) dmp[c * d + j] = static_cast<scalar_t>(mixture_mean_grad(p, sm));
          if (dlvp != nullptr) dlvp[c * d + j] = static_cast<scalar_t>(mixture_logvar_grad(p, sq, ws));
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
