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
// 8 lanes of (a * b) split into low and high 32-bit halves.
inline void mulhilo8(uint32_t a, __m256i b, __m256i& lo, __m256i& hi) {
  const __m256i av = _mm256_set1_epi32(static_cast<int32_t>(a));
  const __m256i even = _mm256_mul_epu32(av, b);                      // lanes 0, 2, 4, 6
  const __m256i odd = _mm256_mul_epu32(av, _mm256_srli_epi64(b, 32));  // lanes 1, 3, 5, 7
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

// Philox-4x32-10 for the 8 subsequences p0 .. p0+7, bit-identical to at::Philox4_32(seed, p, off).
inline void philox8(uint64_t seed, uint64_t off_blocks, uint64_t p0, uint32_t* w0, uint32_t* w1,
                    uint32_t* w2, uint32_t* w3) {
  alignas(32) uint32_t lo_p[8], hi_p[8];
  for (int j = 0; j < 8; ++j) {
    lo_p[j] = static_cast<uint32_t>(p0 + j);
    hi_p[j] = static_cast<uint32_t>((p0 + j) >> 32);
  }
  __m256i c0 = _mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(off_blocks)));
  __m256i c1 = _mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(off_blocks >> 32)));
  __m256i c2 = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo_p));
  __m256i c3 = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi_p));
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    __m256i lo0, hi0, lo1, hi1;
    mulhilo8(0xD2511F53u, c0, lo0, hi0);
    mulhilo8(0xCD9E8D57u, c2, lo1, hi1);
    const __m256i key0 = _mm256_set1_epi32(static_cast<int32_t>(k0));
    const __m256i key1 = _mm256_set1_epi32(static_cast<int32_t>(k1));
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), key0);
    c1 = lo1;
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), key1);
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(w0), c0);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(w1), c1);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(w2), c2);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(w3), c3);
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

// Normals eta[e - e0] and categorical words word[e - e0] of the flat elements e in [e0, e1).
// `offset` counts 32-bit words, as in torch's Philox offsets; one pair uses one 128-bit block.
template <typename acc_t>
void draw_span(uint64_t seed, uint64_t offset, int64_t e0, int64_t e1, acc_t* eta,
               uint32_t* word) {
  constexpr int64_t kChunk = 64;  // pairs per vectorised Box-Muller batch
  const uint64_t off_blocks = offset / 4;
  alignas(64) acc_t u1[kChunk], ang[kChunk], rc[kChunk], rs[kChunk];
  uint32_t w0[kChunk], w1[kChunk], w2[kChunk], w3[kChunk];
  const int64_t p_begin = e0 >> 1, p_end = (e1 + 1) >> 1;
  for (int64_t p0 = p_begin; p0 < p_end; p0 += kChunk) {
    const int64_t n = std::min(kChunk, p_end - p0);
    philox_pairs(seed, off_blocks, static_cast<uint64_t>(p0), n, w0, w1, w2, w3);
    for (int64_t j = 0; j < n; ++j) {
      u1[j] = box_muller_u1<acc_t>(w0[j]);
      ang[j] = box_muller_angle<acc_t>(w1[j]);
    }
    for_each_lane<acc_t>(n, [&](auto t, int64_t j) {
      using T = decltype(t);
      const T r = box_muller_radius(ld(u1 + j, t));
      T sn, cs;
      xsincos(ld(ang + j, t), &sn, &cs);
      st(rc + j, r * cs);
      st(rs + j, r * sn);
    });
    for (int64_t j = 0; j < n; ++j) {
      const int64_t ea = 2 * (p0 + j), eb = ea + 1;
      if (ea >= e0 && ea < e1) {
        eta[ea - e0] = rc[j];
        word[ea - e0] = w2[j];
      }
      if (eb >= e0 && eb < e1) {
        eta[eb - e0] = rs[j];
        word[eb - e0] = w3[j];
      }
    }
  }
}

}  // namespace xvae
