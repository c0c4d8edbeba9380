// CPU generation of the counter-based draws defined in xvae_math.h, vectorised over pairs.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>

#include <mutex>
#include <utility>

#if defined(CPU_CAPABILITY_AVX2)
#include <immintrin.h>
#endif

#include "cpu_common.h"

namespace xvae {

#if defined(CPU_CAPABILITY_AVX2)
// Philox-4x32-10 for 8 consecutive subsequences p0 .. p0+7 at a fixed (seed, offset), bit-identical
// to at::Philox4_32(seed, p, off). The round keys and the first round's counter-only products are
// computed once. The even and the odd lanes run as two sets of four 64-bit slots, the 32-bit state
// word in the low half of each slot: _mm256_mul_epu32 then gives a round's full products, with no
// shuffles between rounds (the high halves hold junk that nothing reads); the lanes are interleaved
// again at the end.
struct Philox8 {
  __m256i key0[10], key1[10];  // broadcast round keys
  __m256i r0_c0, r0_hi0_k1;    // round 0: lo(c0 * M0), hi(c0 * M0) ^ k1
  __m256i r0_c1_k0;            // round 0: c1 ^ k0

  Philox8(uint64_t seed, uint64_t off_blocks) {
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int r = 0; r < 10; ++r) {
      key0[r] = _mm256_set1_epi32(static_cast<int32_t>(k0));
      key1[r] = _mm256_set1_epi32(static_cast<int32_t>(k1));
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const uint32_t c0 = static_cast<uint32_t>(off_blocks), c1 = static_cast<uint32_t>(off_blocks >> 32);
    const uint64_t prod = static_cast<uint64_t>(c0) * 0xD2511F53u;
    r0_c0 = _mm256_set1_epi64x(static_cast<int64_t>(prod));
    r0_hi0_k1 = _mm256_xor_si256(_mm256_set1_epi32(static_cast<int32_t>(prod >> 32)), key1[0]);
    r0_c1_k0 = _mm256_xor_si256(_mm256_set1_epi32(static_cast<int32_t>(c1)), key0[0]);
  }

  // The four words of one set of four lanes with 64-bit counters ctr (slots: lanes).
  inline void half(__m256i ctr, __m256i& c0, __m256i& c1, __m256i& c2, __m256i& c3) const {
    const __m256i m0 = _mm256_set1_epi64x(0xD2511F53), m1 = _mm256_set1_epi64x(0xCD9E8D57);
    // Round 0: c0, c1 are the offset words; c2, c3 the counter's low and high words.
    __m256i p1 = _mm256_mul_epu32(ctr, m1);
    c0 = _mm256_xor_si256(_mm256_srli_epi64(p1, 32), r0_c1_k0);
    c1 = p1;
    c2 = _mm256_xor_si256(_mm256_srli_epi64(ctr, 32), r0_hi0_k1);
    c3 = r0_c0;
    for (int r = 1; r < 10; ++r) {
      const __m256i p0 = _mm256_mul_epu32(c0, m0);
      p1 = _mm256_mul_epu32(c2, m1);
      c0 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p1, 32), c1), key0[r]);
      c1 = p1;
      c2 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p0, 32), c3), key1[r]);
      c3 = p0;
    }
  }

  inline void operator()(uint64_t p0, __m256i& c0, __m256i& c1, __m256i& c2, __m256i& c3) const {
    const __m256i even = _mm256_add_epi64(_mm256_set1_epi64x(static_cast<int64_t>(p0)),
                                          _mm256_setr_epi64x(0, 2, 4, 6));
    const __m256i odd = _mm256_add_epi64(even, _mm256_set1_epi64x(1));
    __m256i e0, e1, e2, e3, o0, o1, o2, o3;
    half(even, e0, e1, e2, e3);
    half(odd, o0, o1, o2, o3);
    c0 = _mm256_blend_epi32(e0, _mm256_slli_epi64(o0, 32), 0xAA);
    c1 = _mm256_blend_epi32(e1, _mm256_slli_epi64(o1, 32), 0xAA);
    c2 = _mm256_blend_epi32(e2, _mm256_slli_epi64(o2, 32), 0xAA);
    c3 = _mm256_blend_epi32(e3, _mm256_slli_epi64(o3, 32), 0xAA);
  }
};

inline void philox8_regs(uint64_t seed, uint64_t off_blocks, uint64_t p0, __m256i& c0, __m256i& c1,
                         __m256i& c2, __m256i& c3) {
  Philox8(seed, off_blocks)(p0, c0, c1, c2, c3);
}

inline void philox8(uint64_t seed, uint64_t off_blocks, uint64_t p0, uint32_t* w0, uint32_t* w1,
                    uint32_t* w2, uint32_t* w3) {
  __m256i c0, c1, c2, c3;
  philox8_regs(seed, off_blocks, p0, c0, c1, c2, c3);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(w0), c0);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(w1), c1);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(w2), c2);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(w3), c3);
}

// Exact float64 values of 4 uint32 words.
inline __m256d u32_to_pd(__m128i w) {
  const __m128i flip = _mm_set1_epi32(static_cast<int32_t>(0x80000000u));
  return _mm256_add_pd(_mm256_cvtepi32_pd(_mm_xor_si128(w, flip)), _mm256_set1_pd(2147483648.0));
}

// box_muller_angle<float> of 8 words: float(uniform_open(x) * 2 pi), computed in float64 as the
// scalar code does (every step exact but the product by 2 pi, then one rounding to float).
inline __m256 box_muller_angle8(__m256i x) {
  auto half = [](__m128i w) {
    const __m256d u = _mm256_mul_pd(_mm256_add_pd(u32_to_pd(w), _mm256_set1_pd(0.5)),
                                    _mm256_set1_pd(2.3283064365386962890625e-10));
    return _mm256_cvtpd_ps(_mm256_mul_pd(u, _mm256_set1_pd(kTwoPi)));
  };
  return _mm256_set_m128(half(_mm256_extracti128_si256(x, 1)), half(_mm256_castsi256_si128(x)));
}
#endif

// The four Philox words of the n pairs p0 .. p0+n-1.
inline void philox_pairs(uint64_t seed, uint64_t off_blocks, uint64_t p0, int64_t n, uint32_t* w0,
                         uint32_t* w1, uint32_t* w2, uint32_t* w3) {
  int64_t j = 0;
#if defined(CPU_CAPABILITY_AVX2)
  for (; j + 8 <= n; j += 8) philox8(seed, off_blocks, p0 + j, w0 + j, w1 + j, w2 + j, w3 + j);
#endif
  for (; j < n; ++j) {
    const PairWords pw = philox_pair(seed, off_blocks, p0 + j);
    w0[j] = pw.w[0];
    w1[j] = pw.w[1];
    w2[j] = pw.w[2];
    w3[j] = pw.w[3];
  }
}

// A fresh (seed, offset) from torch's CPU generator: the seed is one 64-bit draw, the offset 0.
inline std::pair<uint64_t, uint64_t> cpu_seed_offset(const std::optional<at::Generator>& gen) {
  auto* g = at::get_generator_or_default<at::CPUGeneratorImpl>(gen, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(g->mutex_);
  return {g->random64(), 0};
}

inline at::Tensor make_rng_state(std::pair<uint64_t, uint64_t> so) {
  auto t = at::empty({2}, at::TensorOptions().dtype(at::kLong));
  t.data_ptr<int64_t>()[0] = static_cast<int64_t>(so.first);
  t.data_ptr<int64_t>()[1] = static_cast<int64_t>(so.second);
  return t;
}

inline std::pair<uint64_t, uint64_t> read_rng_state(const at::Tensor& rng_state) {
  TORCH_CHECK(rng_state.numel() == 2 && rng_state.scalar_type() == at::kLong,
              "xvae_fast: rng_state must be a (2,) int64 tensor [seed, offset]");
  auto cpu = rng_state.cpu().contiguous();
  return {static_cast<uint64_t>(cpu.data_ptr<int64_t>()[0]),
          static_cast<uint64_t>(cpu.data_ptr<int64_t>()[1])};
}

// The draws of the 8 pairs p0 .. p0+7, i.e. of the 16 flat elements 2 p0 .. 2 p0 + 15: normals
// eta[2j] = r_j cos(a_j), eta[2j+1] = r_j sin(a_j) and categorical words word[2j] = w2_j,
// word[2j+1] = w3_j of pair p0+j. Every lane takes the same vectorised path, so a draw depends only
// on (seed, offset, element), never on which span or block it was drawn in.
template <typename acc_t>
inline void draw_pairs8_generic(uint64_t seed, uint64_t off_blocks, uint64_t p0, acc_t* eta,
                                uint32_t* word) {
  alignas(64) acc_t u1[8], ang[8], rc[8], rs[8];
  uint32_t w0[8], w1[8], w2[8], w3[8];
  philox_pairs(seed, off_blocks, p0, 8, w0, w1, w2, w3);
  for (int j = 0; j < 8; ++j) {
    u1[j] = box_muller_u1<acc_t>(w0[j]);
    ang[j] = box_muller_angle<acc_t>(w1[j]);
  }
  for_each_lane<acc_t>(8, [&](auto t, int64_t j) {
    using T = decltype(t);
    const T r = box_muller_radius(ld(u1 + j, t));
    T sn, cs;
    xsincos(ld(ang + j, t), &sn, &cs);
    st(rc + j, r * cs);
    st(rs + j, r * sn);
  });
  for (int j = 0; j < 8; ++j) {
    eta[2 * j] = rc[j];
    eta[2 * j + 1] = rs[j];
    word[2 * j] = w2[j];
    word[2 * j + 1] = w3[j];
  }
}

// Draws 8 pairs at a time (as draw_pairs8_generic) for a fixed (seed, offset in blocks):
// drawer(p0, eta, word).
template <typename acc_t>
struct PairDrawer {
  uint64_t seed, off_blocks;
  PairDrawer(uint64_t seed_, uint64_t off_blocks_) : seed(seed_), off_blocks(off_blocks_) {}
  void operator()(uint64_t p0, acc_t* eta, uint32_t* word) const {
    draw_pairs8_generic<acc_t>(seed, off_blocks, p0, eta, word);
  }
};

#if defined(CPU_CAPABILITY_AVX2)
// AVX2: the same operations as draw_pairs8_generic (box_muller_u1, box_muller_angle, Sleef log and
// sincos through the Vectorized overloads), on registers.
template <>
struct PairDrawer<float> {
  Philox8 philox;
  PairDrawer(uint64_t seed, uint64_t off_blocks) : philox(seed, off_blocks) {}
  void operator()(uint64_t p0, float* eta, uint32_t* word) const;
};

inline void PairDrawer<float>::operator()(uint64_t p0, float* eta, uint32_t* word) const {
  using V = Vec<float>;
  __m256i c0, c1, c2, c3;
  philox(p0, c0, c1, c2, c3);
  // box_muller_u1<float>: (float(x >> 8) + 1) * 2^-24, exact.
  const V u1 = V(_mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(c0, 8)),
                                             _mm256_set1_ps(1.0f)),
                               _mm256_set1_ps(5.9604644775390625e-08f)));
  const V r = box_muller_radius(u1);
  V sn, cs;
  xsincos(V(box_muller_angle8(c1)), &sn, &cs);
  const __m256 rc = r * cs, rs = r * sn;
  const __m256 lo = _mm256_unpacklo_ps(rc, rs), hi = _mm256_unpackhi_ps(rc, rs);
  _mm256_storeu_ps(eta, _mm256_permute2f128_ps(lo, hi, 0x20));
  _mm256_storeu_ps(eta + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
  const __m256i wlo = _mm256_unpacklo_epi32(c2, c3), whi = _mm256_unpackhi_epi32(c2, c3);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(word), _mm256_permute2x128_si256(wlo, whi, 0x20));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(word + 8), _mm256_permute2x128_si256(wlo, whi, 0x31));
}

template <>
struct PairDrawer<double> {
  Philox8 philox;
  PairDrawer(uint64_t seed, uint64_t off_blocks) : philox(seed, off_blocks) {}
  void operator()(uint64_t p0, double* eta, uint32_t* word) const;
};

inline void PairDrawer<double>::operator()(uint64_t p0, double* eta, uint32_t* word) const {
  using V = Vec<double>;
  __m256i c0, c1, c2, c3;
  philox(p0, c0, c1, c2, c3);
  const __m256d two32 = _mm256_set1_pd(2.3283064365386962890625e-10);
  for (int h = 0; h < 2; ++h) {
    const __m128i x0 = h ? _mm256_extracti128_si256(c0, 1) : _mm256_castsi256_si128(c0);
    const __m128i x1 = h ? _mm256_extracti128_si256(c1, 1) : _mm256_castsi256_si128(c1);
    // box_muller_u1<double>: (double(x) + 1) * 2^-32; box_muller_angle<double>: uniform_open * 2 pi.
    const V u1 = V(_mm256_mul_pd(_mm256_add_pd(u32_to_pd(x0), _mm256_set1_pd(1.0)), two32));
    const V ang = V(_mm256_mul_pd(
        _mm256_mul_pd(_mm256_add_pd(u32_to_pd(x1), _mm256_set1_pd(0.5)), two32), _mm256_set1_pd(kTwoPi)));
    const V r = box_muller_radius(u1);
    V sn, cs;
    xsincos(ang, &sn, &cs);
    const __m256d rc = r * cs, rs = r * sn;
    const __m256d lo = _mm256_unpacklo_pd(rc, rs), hi = _mm256_unpackhi_pd(rc, rs);
    _mm256_storeu_pd(eta + 8 * h, _mm256_permute2f128_pd(lo, hi, 0x20));
    _mm256_storeu_pd(eta + 8 * h + 4, _mm256_permute2f128_pd(lo, hi, 0x31));
  }
  const __m256i wlo = _mm256_unpacklo_epi32(c2, c3), whi = _mm256_unpackhi_epi32(c2, c3);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(word), _mm256_permute2x128_si256(wlo, whi, 0x20));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(word + 8), _mm256_permute2x128_si256(wlo, whi, 0x31));
}
#endif

// Normals eta[e - e0] and categorical words word[e - e0] of the flat elements e in [e0, e1).
// `offset` counts 32-bit words, as in torch's Philox offsets; one pair uses one 128-bit block.
template <typename acc_t>
void draw_span(uint64_t seed, uint64_t offset, int64_t e0, int64_t e1, acc_t* eta,
               uint32_t* word) {
  const PairDrawer<acc_t> draw(seed, offset / 4);
  alignas(64) acc_t eta16[16];
  alignas(64) uint32_t word16[16];
  for (int64_t b = (e0 >> 1) << 1; b < e1; b += 16) {  // b: first element of 8 pairs
    if (b >= e0 && b + 16 <= e1) {
      draw(static_cast<uint64_t>(b >> 1), eta + (b - e0), word + (b - e0));
      continue;
    }
    draw(static_cast<uint64_t>(b >> 1), eta16, word16);
    for (int64_t e = std::max(b, e0); e < std::min(b + 16, e1); ++e) {
      eta[e - e0] = eta16[e - b];
      word[e - e0] = word16[e - b];
    }
  }
}

}  // namespace xvae
