// CPU batch form of the inverse-CDF categorical draw (xvae_math.h: sample_categorical), with the
// same results bit for bit.
//
// sample_categorical starts at c0 = guide[j] and walks: up while c < C-1 and cdf[c] <= target, then
// down while c > 0 and cdf[c-1] > target. With the padded CDF
//   bound[0] = -inf, bound[c+1] = cdf[c] (c = 0 .. C-2), bound[C] = bound[C+1] = +inf,
// the walk from c0 ends at c0 + (target >= bound[c0+1]) unless target < bound[c0] (a step down) or
// target >= bound[c0+2] (a second step up); those rare lanes take sample_categorical itself. So a
// draw costs one guide load and three loads of adjacent bounds, without a branch per element.
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

struct CategoricalBatch {
  CategoricalTable table;
  int32_t C = 0;
  double total = 0;  // cdf[C-1]
  std::vector<double> bound;  // (C + 2,)

  CategoricalBatch(CategoricalTable t, int32_t C_) : table(t), C(C_), total(t.cdf[C_ - 1]) {
    const double inf = std::numeric_limits<double>::infinity();
    bound.assign(static_cast<size_t>(C) + 2, inf);
    bound[0] = -inf;
    for (int32_t c = 0; c + 1 < C; ++c) bound[c + 1] = t.cdf[c];
  }

  // The components of n <= 16 elements from their 32-bit words (uniform_open(word[l]) each).
  template <typename comp_t>
  void draw(const uint32_t* word, int n, comp_t* out) const {
    alignas(32) double target[16];
    alignas(32) int32_t j[16];
    const int32_t G = kGuideBucketsPerComponent * C;
    int l = 0;
#if defined(CPU_CAPABILITY_AVX2)
    const __m128i flip = _mm_set1_epi32(static_cast<int32_t>(0x80000000u));
    const __m128i gmax = _mm_set1_epi32(G - 1);
    for (; l + 4 <= n; l += 4) {
      const __m128i w = _mm_loadu_si128(reinterpret_cast<const __m128i*>(word + l));
      const __m256d x = _mm256_add_pd(_mm256_cvtepi32_pd(_mm_xor_si128(w, flip)),
                                      _mm256_set1_pd(2147483648.0));
      // uniform_open, then the same two products as sample_categorical.
      const __m256d u = _mm256_mul_pd(_mm256_add_pd(x, _mm256_set1_pd(0.5)),
                                      _mm256_set1_pd(2.3283064365386962890625e-10));
      _mm256_store_pd(target + l, _mm256_mul_pd(u, _mm256_set1_pd(total)));
      const __m128i jj = _mm256_cvttpd_epi32(_mm256_mul_pd(u, _mm256_set1_pd(static_cast<double>(G))));
      _mm_store_si128(reinterpret_cast<__m128i*>(j + l), _mm_min_epi32(jj, gmax));
    }
#endif
    for (; l < n; ++l) {
      const double u = uniform_open(word[l]);
      target[l] = u * total;
      const int32_t jj = static_cast<int32_t>(u * G);
      j[l] = jj < G ? jj : G - 1;
    }
    const double* b = bound.data();
    const int32_t* guide = table.guide;
    uint32_t bad = 0;
    for (l = 0; l < n; ++l) {
      const int32_t c0 = guide[j[l]];
      const double t = target[l];
      const double* p = b + c0;
      out[l] = static_cast<comp_t>(c0 + (t >= p[1] ? 1 : 0));
      bad |= static_cast<uint32_t>((t < p[0]) | (t >= p[2])) << l;
    }
    while (bad) {
      const int lane = __builtin_ctz(bad);
      bad &= bad - 1;
      out[lane] = static_cast<comp_t>(sample_categorical(table, C, uniform_open(word[lane])));
    }
  }
};

}  // namespace xvae
