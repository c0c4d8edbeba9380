// CPU-side helpers: Vectorized overloads of the primitives used by xvae_math.h, dtype dispatch and a
// contiguous float/double view of one row of any supported input dtype.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "../xvae_math.h"

namespace xvae {

// Reductions understood by every op, as passed from Python.
enum Reduction : int64_t { kNone = 0, kMean = 1, kSum = 2 };

#define XVAE_DISPATCH_FLOATING(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// Rows are processed in fixed blocks, so batch reductions add partial sums in the same order whatever
// the thread count.
constexpr int64_t kRowBlock = 32;

// A row of a (B, K) contiguous tensor as acc_t: the data itself when scalar_t == acc_t, else a
// converted copy in a per-thread buffer.
template <typename scalar_t, typename acc_t>
struct RowReader {
  const scalar_t* base;
  int64_t K;
  std::vector<acc_t> buf;
  RowReader(const scalar_t* base_, int64_t K_) : base(base_), K(K_) {
    if (!std::is_same<scalar_t, acc_t>::value) buf.resize(K);
  }
  const acc_t* row(int64_t i) {
    const scalar_t* p = base + i * K;
    if constexpr (std::is_same<scalar_t, acc_t>::value) {
      return p;
    } else {
      for (int64_t k = 0; k < K; ++k) buf[k] = static_cast<acc_t>(p[k]);
      return buf.data();
    }
  }
};

// Writes a row of acc_t into a (B, K) tensor of scalar_t.
template <typename scalar_t, typename acc_t>
inline void store_row(scalar_t* dst, const acc_t* src, int64_t K) {
  if constexpr (std::is_same<scalar_t, acc_t>::value) {
    if (dst != src) std::copy(src, src + K, dst);
  } else {
    for (int64_t k = 0; k < K; ++k) dst[k] = static_cast<scalar_t>(src[k]);
  }
}

}  // namespace xvae

namespace xvae {

// Loads, stores and sums that accept a Vectorized lane group or a single scalar, so one generic
// lambda serves the vector body and the scalar tail of a loop over K.
template <typename acc_t>
inline Vec<acc_t> ld(const acc_t* p, Vec<acc_t>) { return Vec<acc_t>::loadu(p); }
template <typename acc_t>
inline acc_t ld(const acc_t* p, acc_t) { return *p; }
template <typename acc_t>
inline void st(acc_t* p, const Vec<acc_t>& v) { v.store(p); }
template <typename acc_t>
inline void st(acc_t* p, acc_t v) { *p = v; }

template <typename acc_t>
struct LaneSum {
  Vec<acc_t> v = Vec<acc_t>(acc_t(0));
  acc_t s = 0;
  void add(const Vec<acc_t>& x) { v = v + x; }
  void add(acc_t x) { s += x; }
  acc_t total() const {
    return at::vec::vec_reduce_all<acc_t>([](Vec<acc_t>& a, Vec<acc_t>& b) { return a + b; }, v) + s;
  }
};

// f(tag, k) with tag a Vec<acc_t> for full lane groups, then an acc_t for the tail.
template <typename acc_t, typename F>
inline void for_each_lane(int64_t K, F&& f) {
  using V = Vec<acc_t>;
  int64_t k = 0;
  for (; k + V::size() <= K; k += V::size()) f(V(), k);
  for (; k < K; ++k) f(acc_t(0), k);
}

template <typename acc_t>
inline acc_t row_max(const acc_t* x, int64_t K) {
  return at::vec::reduce_all<acc_t>(
      [](Vec<acc_t>& a, Vec<acc_t>& b) { return at::vec::maximum(a, b); }, x, K);
}

// Runs f(task) for every task in [0, n) on the intra-op threads; each thread claims the next task
// from a shared counter instead of owning a fixed share, so a thread that starts late or is
// descheduled (a loaded machine) delays only the task it holds. For work whose result does not
// depend on which thread does which task.
template <typename F>
inline void parallel_tasks(int64_t n, F&& f) {
  const int64_t nt = std::min<int64_t>(at::get_num_threads(), n);
  if (nt <= 1 || at::in_parallel_region()) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, nt, 1, [&](int64_t, int64_t) {
    for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < n;
         i = next.fetch_add(1, std::memory_order_relaxed))
      f(i);
  });
}

// Grain (in row blocks) that gives each task at least ~32k elements.
inline int64_t block_grain(int64_t K) {
  int64_t per_block = kRowBlock * (K > 0 ? K : 1);
  int64_t g = (int64_t(1) << 15) / per_block;
  return g > 0 ? g : 1;
}

}  // namespace xvae
