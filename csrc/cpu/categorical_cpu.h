// CPU helpers for the inverse-CDF categorical draw (xvae_math.h: sample_categorical), with the same
// results bit for bit.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#if defined(CPU_CAPABILITY_AVX2)
#include <immintrin.h>
#endif

#include <ATen/ops/empty.h>

#include "../categorical_table.h"
#include "../xvae_math.h"

namespace xvae {

// build_categorical for CPU weights, the same tables: the CDF by the same at::cumsum, the guide by
// one merge of the (increasing) bucket thresholds into the CDF instead of a binary search per bucket.
// The thresholds are the same float64 products, arange(G) * (1 / G) * total, so every guide entry is
// the first c with cdf[c] > threshold (searchsorted right), clamped to C - 1.
inline CategoricalTensors build_categorical_cpu(const at::Tensor& weights) {
  const int64_t C = weights.numel();
  const int64_t G = kGuideBucketsPerComponent * C;
  auto cdf = at::cumsum(weights.to(at::kDouble), 0).contiguous();
  auto guide = at::empty({G}, cdf.options().dtype(at::kInt));
  const double* p = cdf.data_ptr<double>();
  int32_t* g = guide.data_ptr<int32_t>();
  for (int64_t c = 1; c < C; ++c)
    if (!(p[c] >= p[c - 1])) return build_categorical(weights);  // not a CDF: ATen's search as is
  const double total = p[C - 1];
  const double step = 1.0 / static_cast<double>(G);
  int64_t c = 0;
  for (int64_t j = 0; j < G; ++j) {
    const double threshold = (static_cast<double>(j) * step) * total;
    if (!(threshold >= 0.0)) return build_categorical(weights);  // NaN or a negative total
    while (c < C && p[c] <= threshold) ++c;
    g[j] = static_cast<int32_t>(c < C - 1 ? c : C - 1);
  }
  return {cdf, guide};
}

// Batch form of sample_categorical for the CPU kernels.
//
// sample_categorical starts at c0 = guide[j] and walks: up while c < C-1 and cdf[c] <= target, then
// down while c > 0 and cdf[c-1] > target. With the padded CDF
//   bound[0] = -inf, bound[c+1] = cdf[c] (c = 0 .. C-2), bound[C] = bound[C+1] = +inf,
// the walk from c0 ends at c0 + (target >= bound[c0+1]) unless target < bound[c0] (a step down) or
// target >= bound[c0+2] (a second step up). The words x whose bucket is j form an interval (j and
// target are non-decreasing functions of x), so the targets of bucket j lie between those of the
// interval's ends: where that range stays inside [bound[c0], bound[c0+2]), every draw in the bucket
// is c0 + (target >= bound[c0+1]). The other buckets (a bucket holding two
// CDF steps, or rounding at an edge) are flagged, and their draws take sample_categorical itself.
struct CategoricalBatch {
  static constexpr int32_t kFlag = int32_t(1) << 30;  // in start[j]: take sample_categorical

  CategoricalTable table;
  int32_t C = 0, G = 0;
  double total = 0;            // cdf[C-1]
  std::vector<double> bound;   // (C + 2,)
  std::vector<int32_t> start;  // (G,) c0 = guide[j], | kFlag for flagged buckets

  // The bucket (j, as sample_categorical computes it) of word x.
  int32_t bucket(uint64_t x) const {
    const double u = uniform_open(static_cast<uint32_t>(x));
    const int32_t j = static_cast<int32_t>(u * G);
    return j < G ? j : G - 1;
  }

  CategoricalBatch(CategoricalTable t, int32_t C_)
      : table(t), C(C_), G(kGuideBucketsPerComponent * C_), total(t.cdf[C_ - 1]),
        start(static_cast<size_t>(G)) {
    const double inf = std::numeric_limits<double>::infinity();
    bound.assign(static_cast<size_t>(C) + 2, inf);
    bound[0] = -inf;
    for (int32_t c = 0; c + 1 < C; ++c) bound[c + 1] = t.cdf[c];
    const bool usable = total > 0 && total < inf;
    // first[j]: the smallest word in bucket j or above (first[G] = 2^32), from the estimate
    // j 2^32 / G corrected by the exact bucket function.
    constexpr uint64_t kWords = uint64_t(1) << 32;
    std::vector<uint64_t> first(static_cast<size_t>(G) + 1, kWords);
    first[0] = 0;
    for (int32_t j = 1; j < G && usable; ++j) {
      uint64_t x = (static_cast<uint64_t>(j) << 32) / static_cast<uint64_t>(G);
      while (x > 0 && bucket(x - 1) >= j) --x;
      while (x < kWords && bucket(x) < j) ++x;
      first[j] = x;
    }
    for (int32_t j = 0; j < G; ++j) {
      const int32_t c0 = t.guide[j];
      bool clean = usable && first[j] < first[j + 1];
      if (clean) {
        const double lo = uniform_open(static_cast<uint32_t>(first[j])) * total;
        const double hi = uniform_open(static_cast<uint32_t>(first[j + 1] - 1)) * total;
        clean = lo >= bound[c0] && hi < bound[c0 + 2];
      }
      start[j] = c0 | (clean ? 0 : kFlag);
    }
  }

  // Per element of word[0 .. n) (n <= 16): the bucket j[l] and target[l] = uniform_open(word) *
  // total, the float64 products of sample_categorical.
  void prepare(const uint32_t* word, int n, int32_t* j, double* target) const {
    int l = 0;
#if defined(CPU_CAPABILITY_AVX2)
    const __m128i flip = _mm_set1_epi32(static_cast<int32_t>(0x80000000u));
    const __m128i gmax = _mm_set1_epi32(G - 1);
    for (; l + 4 <= n; l += 4) {
      const __m128i w = _mm_loadu_si128(reinterpret_cast<const __m128i*>(word + l));
      const __m256d x = _mm256_add_pd(_mm256_cvtepi32_pd(_mm_xor_si128(w, flip)),
                                      _mm256_set1_pd(2147483648.0));
      const __m256d u = _mm256_mul_pd(_mm256_add_pd(x, _mm256_set1_pd(0.5)),
                                      _mm256_set1_pd(2.3283064365386962890625e-10));
      _mm256_storeu_pd(target + l, _mm256_mul_pd(u, _mm256_set1_pd(total)));
      const __m128i jj = _mm256_cvttpd_epi32(_mm256_mul_pd(u, _mm256_set1_pd(static_cast<double>(G))));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(j + l), _mm_min_epi32(jj, gmax));
    }
#endif
    for (; l < n; ++l) {
      const double u = uniform_open(word[l]);
      target[l] = u * total;
      const int32_t jj = static_cast<int32_t>(u * G);
      j[l] = jj < G ? jj : G - 1;
    }
  }

  // The component of a prepared element, exact unless the bucket is flagged: then flags gets kFlag
  // and the element needs exact() (the value returned is still a valid component index).
  int32_t fast(int32_t j, double target, int32_t& flags) const {
    const int32_t s = start[j];
    flags |= s;
    const int32_t c0 = s & ~kFlag;
    return c0 + (target >= bound[c0 + 1] ? 1 : 0);
  }
  bool flagged(int32_t j) const { return (start[j] & kFlag) != 0; }
  int32_t exact(uint32_t word) const { return sample_categorical(table, C, uniform_open(word)); }
};

}  // namespace xvae
