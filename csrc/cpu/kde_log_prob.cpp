// Isotropic Gaussian KDE log-density (op kde_log_prob), CPU. Math: ../kde_density.h.
//
// The scores are a matrix product against the centres shifted by a shared point t. As a GEMM
// packs its operand, each thread packs one tile of shifted centres at a time (transposed, sized to
// half of L2) and runs all of its rows against it: six rows x two vector widths of centres per
// register block, one fused multiply-add per (row, centre, coordinate), folded into an online
// logsumexp per row. Nothing of size N x m is formed and the centres are read once per thread per
// pass. The rows whose expanded-square error bound is too large for their log q
// (kde_expanded_ok) are redone in the direct form from the unshifted inputs; the forward reports
// which (`direct`) and the backward follows it. Rows are independent and split over threads: the
// results do not depend on the thread count. The backward recomputes the scores from the saved
// logsumexp and forms dz = -(W z' - sum_j w_j c'_j) / h^2 with w = r g, W = sum_j w_j, the second
// product reading the same packed tile.
#include <torch/library.h>

#include <limits>
#include <vector>

#include "../checks.h"
#include "../kde_density.h"
#include "cpu_common.h"

namespace xvae {
namespace {

constexpr int kRows = 6;  // rows per register block (6 x 2 vector widths: 12 accumulators of 16)
constexpr int64_t kTileBytes = int64_t(1) << 18;  // one tile of shifted centres: half of a 512 KB L2
constexpr int64_t kBlock = 16;                    // centres per block of the tile's transposition

template <typename acc_t>
inline acc_t vsum(const Vec<acc_t>& v) {
  return at::vec::vec_reduce_all<acc_t>([](Vec<acc_t>& a, Vec<acc_t>& b) { return a + b; }, v);
}

// The shared shift t: the mean of up to 1024 centres spaced evenly through them (any t keeps the
// scores exact in real arithmetic; a central one keeps ||z'|| and ||c'|| small, which is what the
// expanded square's rounding depends on), accumulated in double.
template <typename scalar_t, typename acc_t>
std::vector<acc_t> kde_shift(const at::Tensor& centres) {
  const int64_t m = centres.size(0), d = centres.size(1), s0 = centres.stride(0), s1 = centres.stride(1);
  const scalar_t* cp = centres.data_ptr<scalar_t>();
  const int64_t step = std::max<int64_t>(1, m / 1024);
  std::vector<double> acc(d, 0.0);
  int64_t n = 0;
  for (int64_t c = 0; c < m; c += step, ++n)
    for (int64_t j = 0; j < d; ++j) acc[j] += static_cast<double>(cp[c * s0 + j * s1]);
  std::vector<acc_t> t(d);
  for (int64_t j = 0; j < d; ++j) t[j] = static_cast<acc_t>(acc[j] / static_cast<double>(n));
  return t;
}

// One thread's packed tile: centres [k Ct, k Ct + w) shifted and transposed to (d, w) (w = Ct but
// for the last tile, a multiple of the vector width), their squared norms (+inf on padding, so
// padded scores are -inf); with rows, also the shifted centres for the backward's second product
// in panels of kPanel coordinates, each (n, kPanel) (n real centres in the tile; the lanes of the
// last panel past d are never read back), so that product streams through memory.
template <typename scalar_t, typename acc_t>
struct KdeTile {
  const scalar_t* cp;
  int64_t s0, s1, m, d, Cp, Ct, tiles;
  const std::vector<acc_t>& shift;
  const bool with_rows;
  std::vector<acc_t> ct, cn, cr;
  int64_t w = 0, c0 = 0, n = 0;

  KdeTile(const at::Tensor& centres, const std::vector<acc_t>& shift_, bool rows = false)
      : shift(shift_), with_rows(rows) {
    cp = centres.data_ptr<scalar_t>();
    s0 = centres.stride(0);
    s1 = centres.stride(1);
    m = centres.size(0);
    d = centres.size(1);
    const int64_t V = Vec<acc_t>::size();
    Cp = (m + V - 1) / V * V;
    const int64_t fit = kTileBytes / (int64_t(sizeof(acc_t)) * std::max<int64_t>(1, d));
    Ct = std::max<int64_t>(kBlock, fit / kBlock * kBlock);
    if (Ct >= Cp) Ct = Cp;
    tiles = (Cp + Ct - 1) / Ct;
    ct.resize(d * Ct);
    cn.resize(Ct);
    panels = (d + kPanel - 1) / kPanel;
    if (with_rows) cr.assign(panels * Ct * kPanel, acc_t(0));  // (finite in the unused lanes)
  }

  static constexpr int64_t kPanel = 2 * Vec<acc_t>::size();
  int64_t panels = 0;

  void pack(int64_t k) {
    c0 = k * Ct;
    w = std::min(Ct, Cp - c0);
    n = std::min(w, m - c0);
    if (s1 == 1) {
      pack_cols(n, std::integral_constant<int64_t, 1>());
    } else {
      pack_cols(n, s1);
    }
    for (int64_t q = n; q < w; ++q) {  // padding: zero centres of infinite norm
      for (int64_t j = 0; j < d; ++j) ct[j * w + q] = acc_t(0);
      cn[q] = std::numeric_limits<acc_t>::infinity();
    }
  }

 private:
  // S: the coordinate stride (a compile-time 1 for row-major centres). Blocks of kBlock centres:
  // as many source rows streamed, one 64-byte destination run per coordinate.
  template <typename S>
  void pack_cols(int64_t n, S cs) {
    acc_t* rows = with_rows ? cr.data() : nullptr;
    acc_t norm[kBlock];
    for (int64_t b = 0; b < n; b += kBlock) {
      const int64_t nb = std::min(kBlock, n - b);
      const scalar_t* src = cp + (c0 + b) * s0;
      for (int64_t q = 0; q < nb; ++q) norm[q] = acc_t(0);
      for (int64_t j = 0; j < d; ++j) {
        const acc_t sh = shift[j];
        acc_t* dst = ct.data() + j * w + b;
        for (int64_t q = 0; q < nb; ++q) {
          const acc_t v = static_cast<acc_t>(src[q * s0 + j * cs]) - sh;
          dst[q] = v;
          norm[q] += v * v;
          if (rows != nullptr) rows[((j / kPanel) * n + b + q) * kPanel + j % kPanel] = v;
        }
      }
      for (int64_t q = 0; q < nb; ++q) cn[b + q] = norm[q];
    }
  }
};

// Scores of R rows (shifted, as acc_t, with squared norms zn) against the packed tile, into out (R
// rows of stride ld from the tile's first centre): two vector widths of centres per register block.
template <int R, typename scalar_t, typename acc_t>
inline void scores_tile(const acc_t* const* zs, const acc_t* zn, const KdeTile<scalar_t, acc_t>& t,
                        acc_t inv_h2, acc_t* out, int64_t ld) {
  using V = Vec<acc_t>;
  constexpr int64_t W = V::size();
  const int64_t w = t.w, d = t.d;
  const acc_t* tile = t.ct.data();
  const acc_t* cn = t.cn.data();
  const V ih(inv_h2);
  int64_t cb = 0;
  for (; cb + 2 * W <= w; cb += 2 * W) {
    V a0[R], a1[R];
    for (int r = 0; r < R; ++r) a0[r] = a1[r] = V(acc_t(0));
    for (int64_t j = 0; j < d; ++j) {
      const V c0 = V::loadu(tile + j * w + cb), c1 = V::loadu(tile + j * w + cb + W);
      for (int r = 0; r < R; ++r) {
        const V zj(zs[r][j]);
        a0[r] = at::vec::fmadd(zj, c0, a0[r]);
        a1[r] = at::vec::fmadd(zj, c1, a1[r]);
      }
    }
    const V n0 = V::loadu(cn + cb), n1 = V::loadu(cn + cb + W);
    for (int r = 0; r < R; ++r) {
      kde_score_expanded(a0[r], V(zn[r]), n0, ih).store(out + r * ld + cb);
      kde_score_expanded(a1[r], V(zn[r]), n1, ih).store(out + r * ld + cb + W);
    }
  }
  for (; cb < w; cb += W) {
    V a0[R];
    for (int r = 0; r < R; ++r) a0[r] = V(acc_t(0));
    for (int64_t j = 0; j < d; ++j) {
      const V c0 = V::loadu(tile + j * w + cb);
      for (int r = 0; r < R; ++r) a0[r] = at::vec::fmadd(V(zs[r][j]), c0, a0[r]);
    }
    const V n0 = V::loadu(cn + cb);
    for (int r = 0; r < R; ++r) kde_score_expanded(a0[r], V(zn[r]), n0, ih).store(out + r * ld + cb);
  }
}

// out[r][j] += sum_c w[r][c] c'[c][j] over n centres (w and out rows of strides ld and d), c' in
// panels of two vector widths of coordinates, each (n, 2 W): the backward's second product, a
// broadcast weight per (row, centre).
template <int R, typename acc_t>
inline void weighted_rows(const acc_t* __restrict__ w, int64_t ld, const acc_t* __restrict__ panels,
                          int64_t n, int64_t d, acc_t* __restrict__ out) {
  using V = Vec<acc_t>;
  constexpr int64_t W = V::size(), P = 2 * W;
  for (int64_t jb = 0; jb < d; jb += P) {
    const acc_t* panel = panels + (jb / P) * n * P;
    V a0[R], a1[R];
    for (int r = 0; r < R; ++r) a0[r] = a1[r] = V(acc_t(0));
    for (int64_t c = 0; c < n; ++c) {
      const V c0 = V::loadu(panel + c * P), c1 = V::loadu(panel + c * P + W);
      for (int r = 0; r < R; ++r) {
        const V wv(w[r * ld + c]);
        a0[r] = at::vec::fmadd(wv, c0, a0[r]);
        a1[r] = at::vec::fmadd(wv, c1, a1[r]);
      }
    }
    // All accumulators out in one fully unrolled loop: indexing a0[r] inside a loop that also runs
    // the inner copy made GCC keep the arrays on the stack, storing them in every iteration above.
    acc_t tmp[R][P];
    for (int r = 0; r < R; ++r) {
      a0[r].store(tmp[r]);
      a1[r].store(tmp[r] + W);
    }
    const int64_t valid = std::min(P, d - jb);
    for (int r = 0; r < R; ++r)
      for (int64_t q = 0; q < valid; ++q) out[r * d + jb + q] += tmp[r][q];
  }
}

// Folds w scores into a row's online logsumexp state (max, sum of exp(s - max)).
template <typename acc_t>
inline void lse_fold(const acc_t* s, int64_t w, acc_t* mx, acc_t* sum) {
  using V = Vec<acc_t>;
  const acc_t tmax = row_max(s, w);
  if (tmax == -std::numeric_limits<acc_t>::infinity()) return;
  if (tmax > *mx) {
    *sum *= std::exp(*mx - tmax);
    *mx = tmax;
  }
  const V vmx(*mx);
  V acc(acc_t(0));
  for (int64_t c = 0; c < w; c += V::size()) acc = acc + xexp(V::loadu(s + c) - vmx);
  *sum += vsum(acc);
}

// Rows of z as acc_t, unshifted (raw) and shifted (zs); returns ||z'||^2.
template <typename scalar_t, typename acc_t>
inline acc_t load_row(const scalar_t* z, int64_t i, int64_t d, const std::vector<acc_t>& shift,
                      acc_t* raw, acc_t* zs) {
  acc_t n = 0;
  for (int64_t j = 0; j < d; ++j) {
    raw[j] = static_cast<acc_t>(z[i * d + j]);
    zs[j] = raw[j] - shift[j];
    n += zs[j] * zs[j];
  }
  return n;
}

// Runs f(R, slot) over the listed rows in groups of kRows, then pairs, then singly; slots index
// `rows`.
template <typename F>
inline void for_groups(const std::vector<int64_t>& rows, F&& f) {
  size_t s = 0;
  for (; s + kRows <= rows.size(); s += kRows) f(std::integral_constant<int, kRows>(), s);
  for (; s + 2 <= rows.size(); s += 2) f(std::integral_constant<int, 2>(), s);
  for (; s < rows.size(); ++s) f(std::integral_constant<int, 1>(), s);
}

// Sets the self score of the listed rows to -inf where their centre lies in the tile.
template <int R, typename acc_t>
inline void mask_self(acc_t* s, int64_t ld, const int64_t* rows, int64_t c0, int64_t w) {
  for (int r = 0; r < R; ++r) {
    const int64_t c = rows[r] - c0;
    if (c >= 0 && c < w) s[r * ld + c] = -std::numeric_limits<acc_t>::infinity();
  }
}

// The direct-form scores of one (unshifted) row against every centre, into out (m), from the
// centres as acc_t rows (m, d).
template <typename acc_t>
inline void direct_scores(const acc_t* zr, const acc_t* corig, int64_t m, int64_t d, acc_t inv_h2,
                          int64_t self, acc_t* out) {
  using V = Vec<acc_t>;
  for (int64_t c = 0; c < m; ++c) {
    const acc_t* cr = corig + c * d;
    V acc(acc_t(0));
    int64_t j = 0;
    for (; j + V::size() <= d; j += V::size()) {
      const V diff = V::loadu(zr + j) - V::loadu(cr + j);
      acc = at::vec::fmadd(diff, diff, acc);
    }
    acc_t sq = vsum(acc);
    for (; j < d; ++j) sq += (zr[j] - cr[j]) * (zr[j] - cr[j]);
    out[c] = c == self ? -std::numeric_limits<acc_t>::infinity() : kde_score_direct(sq, inv_h2);
  }
}

// The centres as contiguous acc_t rows (m, d), for the direct form.
template <typename scalar_t, typename acc_t>
std::vector<acc_t> centres_rows(const at::Tensor& centres) {
  const int64_t m = centres.size(0), d = centres.size(1), s0 = centres.stride(0), s1 = centres.stride(1);
  const scalar_t* cp = centres.data_ptr<scalar_t>();
  std::vector<acc_t> out(m * d);
  at::parallel_for(0, m, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, d)), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t j = 0; j < d; ++j) out[c * d + j] = static_cast<acc_t>(cp[c * s0 + j * s1]);
  });
  return out;
}

inline int64_t kde_grain(int64_t m, int64_t d) {
  return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, m * d));
}

double bandwidth_value(const at::Tensor& bandwidth) {
  return bandwidth.to(at::kCPU, at::kDouble).item<double>();
}

// The direct form for the listed rows: their logsumexp (forward, dz == nullptr) or, given the
// forward's logsumexp, dz = -sum_j w_j (z - c_j) / h^2 with w = exp(s - lse) g (backward).
template <typename scalar_t, typename acc_t>
void direct_rows(const std::vector<int64_t>& redo, const scalar_t* z, const at::Tensor& centres,
                 const std::vector<acc_t>& shift, acc_t inv_h2, bool exclude_self, acc_t* lse,
                 const acc_t* g, scalar_t* dz) {
  if (redo.empty()) return;
  const int64_t m = centres.size(0), d = centres.size(1);
  const std::vector<acc_t> corig = centres_rows<scalar_t, acc_t>(centres);
  const int64_t Cp = (m + Vec<acc_t>::size() - 1) / Vec<acc_t>::size() * Vec<acc_t>::size();
  at::parallel_for(0, static_cast<int64_t>(redo.size()), 1, [&](int64_t a, int64_t b) {
    // (padded to the vector width with -inf for lse_fold's full-width loads)
    std::vector<acc_t> raw(d), zs(d), s(Cp, -std::numeric_limits<acc_t>::infinity()), acc(d);
    for (int64_t q = a; q < b; ++q) {
      const int64_t i = redo[q];
      load_row(z, i, d, shift, raw.data(), zs.data());
      direct_scores(raw.data(), corig.data(), m, d, inv_h2, exclude_self ? i : -1, s.data());
      if (dz == nullptr) {
        acc_t mx = -std::numeric_limits<acc_t>::infinity(), sum = 0;
        lse_fold(s.data(), Cp, &mx, &sum);
        lse[i] = mx + std::log(sum);
        continue;
      }
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t c = 0; c < m; ++c) {
        const acc_t wv = std::exp(s[c] - lse[i]) * g[i];
        if (wv == acc_t(0)) continue;
        for (int64_t j = 0; j < d; ++j) acc[j] += wv * (raw[j] - corig[c * d + j]);
      }
      for (int64_t j = 0; j < d; ++j) dz[i * d + j] = static_cast<scalar_t>(kde_dz_direct(acc[j], inv_h2));
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kde_log_prob_cpu(const at::Tensor& z_in,
                                                                const at::Tensor& centres,
                                                                const at::Tensor& bandwidth,
                                                                bool exclude_self) {
  check_kde_args(z_in, centres, bandwidth, exclude_self);
  const int64_t N = z_in.size(0), d = z_in.size(1), m = centres.size(0);
  at::Tensor lp = at::empty({N}, z_in.options());
  at::Tensor lse = at::empty({N}, z_in.options().dtype(acc_dtype_of(z_in)));
  at::Tensor direct = at::zeros({N}, z_in.options().dtype(at::kBool));
  if (N == 0) return {lp, lse, direct};
  auto z = z_in.contiguous();
  const double h = bandwidth_value(bandwidth);
  XVAE_DISPATCH_FLOATING(z.scalar_type(), "kde_log_prob_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const std::vector<acc_t> shift = kde_shift<scalar_t, acc_t>(centres);
    const acc_t inv_h2 = static_cast<acc_t>(1.0 / (h * h));
    const acc_t cst = kde_const<acc_t>(exclude_self ? m - 1 : m, static_cast<acc_t>(std::log(h)), d);
    const scalar_t* zp = z.data_ptr<scalar_t>();
    scalar_t* lpp = lp.data_ptr<scalar_t>();
    acc_t* lsep = lse.data_ptr<acc_t>();
    bool* dirp = direct.data_ptr<bool>();
    at::parallel_for(0, N, kde_grain(m, d), [&](int64_t i0, int64_t i1) {
      KdeTile<scalar_t, acc_t> t(centres, shift);
      const int64_t nr = i1 - i0, Ct = t.Ct;
      std::vector<acc_t> raw(d), zs(nr * d), zn(nr), sbuf(kRows * Ct),
          mx(nr, -std::numeric_limits<acc_t>::infinity()), sum(nr, acc_t(0));
      std::vector<int64_t> idx(nr);
      for (int64_t s = 0; s < nr; ++s) {
        idx[s] = i0 + s;
        zn[s] = load_row(zp, i0 + s, d, shift, raw.data(), zs.data() + s * d);
      }
      for (int64_t k = 0; k < t.tiles; ++k) {
        t.pack(k);
        for_groups(idx, [&](auto RR, size_t s) {
          constexpr int R = decltype(RR)::value;
          const acc_t* zr[R];
          for (int r = 0; r < R; ++r) zr[r] = zs.data() + (s + r) * d;
          scores_tile<R>(zr, zn.data() + s, t, inv_h2, sbuf.data(), Ct);
          if (exclude_self) mask_self<R>(sbuf.data(), Ct, idx.data() + s, t.c0, t.w);
          for (int r = 0; r < R; ++r) lse_fold(sbuf.data() + r * Ct, t.w, &mx[s + r], &sum[s + r]);
        });
      }
      for (int64_t s = 0; s < nr; ++s) {
        const acc_t l = mx[s] + std::log(sum[s]);
        lsep[i0 + s] = l;
        dirp[i0 + s] = !kde_expanded_ok(zn[s], mx[s], inv_h2, l + cst, d);
      }
    });
    // Rows the expanded square cannot serve: the direct form, from the unshifted inputs.
    std::vector<int64_t> redo;
    for (int64_t i = 0; i < N; ++i)
      if (dirp[i]) redo.push_back(i);
    direct_rows<scalar_t, acc_t>(redo, zp, centres, shift, inv_h2, exclude_self, lsep, nullptr, nullptr);
    for (int64_t i = 0; i < N; ++i) lpp[i] = static_cast<scalar_t>(lsep[i] + cst);
  });
  return {lp, lse, direct};
}

at::Tensor kde_log_prob_backward_cpu(const at::Tensor& grad, const at::Tensor& z_in,
                                     const at::Tensor& centres, const at::Tensor& bandwidth,
                                     const at::Tensor& lse, const at::Tensor& direct, bool exclude_self) {
  check_kde_backward_args(grad, z_in, centres, bandwidth, lse, direct, exclude_self);
  const int64_t N = z_in.size(0), d = z_in.size(1), m = centres.size(0);
  at::Tensor dz = at::empty({N, d}, z_in.options());
  if (N == 0) return dz;
  auto z = z_in.contiguous();
  const double h = bandwidth_value(bandwidth);
  const auto acc = acc_dtype_of(z_in);
  auto g = grad.to(acc).contiguous();
  auto lse_c = lse.contiguous();
  auto dir = direct.contiguous();
  XVAE_DISPATCH_FLOATING(z.scalar_type(), "kde_log_prob_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using V = Vec<acc_t>;
    const std::vector<acc_t> shift = kde_shift<scalar_t, acc_t>(centres);
    const acc_t inv_h2 = static_cast<acc_t>(1.0 / (h * h));
    const scalar_t* zp = z.data_ptr<scalar_t>();
    const acc_t* gp = g.data_ptr<acc_t>();
    acc_t* lsep = lse_c.data_ptr<acc_t>();
    const bool* dirp = dir.data_ptr<bool>();
    scalar_t* dzp = dz.data_ptr<scalar_t>();
    at::parallel_for(0, N, kde_grain(m, d), [&](int64_t i0, int64_t i1) {
      std::vector<int64_t> idx;  // rows of this range in the expanded form
      for (int64_t i = i0; i < i1; ++i)
        if (!dirp[i]) idx.push_back(i);
      if (idx.empty()) return;
      KdeTile<scalar_t, acc_t> t(centres, shift, /*rows=*/true);
      const int64_t nr = static_cast<int64_t>(idx.size()), Ct = t.Ct;
      std::vector<acc_t> raw(d), zs(nr * d), zn(nr), sbuf(kRows * Ct), wsum(nr, acc_t(0)),
          wc(nr * d, acc_t(0));
      for (int64_t s = 0; s < nr; ++s) zn[s] = load_row(zp, idx[s], d, shift, raw.data(), zs.data() + s * d);
      for (int64_t k = 0; k < t.tiles; ++k) {
        t.pack(k);
        const int64_t w = t.w;
        for_groups(idx, [&](auto RR, size_t s) {
          constexpr int R = decltype(RR)::value;
          const acc_t* zr[R];
          for (int r = 0; r < R; ++r) zr[r] = zs.data() + (s + r) * d;
          scores_tile<R>(zr, zn.data() + s, t, inv_h2, sbuf.data(), Ct);
          if (exclude_self) mask_self<R>(sbuf.data(), Ct, idx.data() + s, t.c0, w);
          // w = r g in place of the scores (0 on padding and on a masked self term)
          for (int r = 0; r < R; ++r) {
            acc_t* sr = sbuf.data() + r * Ct;
            const V l(lsep[idx[s + r]]), gv(gp[idx[s + r]]);
            V acc(acc_t(0));
            for (int64_t c = 0; c < w; c += V::size()) {
              const V wv = xexp(V::loadu(sr + c) - l) * gv;
              wv.store(sr + c);
              acc = acc + wv;
            }
            wsum[s + r] += vsum(acc);
          }
          // sum_c w[r, c] c'_c: the row-major tile, two vector widths of coordinates per register
          // block, a broadcast weight per (row, centre); each tile load serves R rows
          weighted_rows<R>(sbuf.data(), Ct, t.cr.data(), t.n, d, wc.data() + s * d);
        });
      }
      for (int64_t s = 0; s < nr; ++s)
        for (int64_t j = 0; j < d; ++j)
          dzp[idx[s] * d + j] = static_cast<scalar_t>(
              kde_dz_expanded(wsum[s], zs[s * d + j], wc[s * d + j], inv_h2));
    });
    // Rows the forward computed in the direct form.
    std::vector<int64_t> redo;
    for (int64_t i = 0; i < N; ++i)
      if (dirp[i]) redo.push_back(i);
    direct_rows<scalar_t, acc_t>(redo, zp, centres, shift, inv_h2, exclude_self, lsep, gp, dzp);
  });
  return dz;
}

}  // namespace

TORCH_LIBRARY_IMPL(xvae_fast, CPU, m) {
  m.impl("kde_log_prob", &kde_log_prob_cpu);
  m.impl("kde_log_prob_backward", &kde_log_prob_backward_cpu);
}

}  // namespace xvae
