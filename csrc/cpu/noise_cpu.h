// CPU generation of the counter-based draws defined in xvae_math.h, vectorised over pairs.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>

#include <mutex>
#include <utility>

#include "cpu_common.h"

namespace xvae {

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
  uint32_t w2[kChunk], w3[kChunk];
  const int64_t p_begin = e0 >> 1, p_end = (e1 + 1) >> 1;
  for (int64_t p0 = p_begin; p0 < p_end; p0 += kChunk) {
    const int64_t n = std::min(kChunk, p_end - p0);
    for (int64_t j = 0; j < n; ++j) {
      PairWords pw = philox_pair(seed, off_blocks, static_cast<uint64_t>(p0 + j));
      u1[j] = box_muller_u1<acc_t>(pw.w[0]);
      ang[j] = box_muller_angle<acc_t>(pw.w[1]);
      w2[j] = pw.w[2];
      w3[j] = pw.w[3];
    }
    for_each_lane<acc_t>(n, [&](auto t, int64_t j) {
      auto r = box_muller_radius(ld(u1 + j, t));
      auto a = ld(ang + j, t);
      st(rc + j, r * xcos(a));
      st(rs + j, r * xsin(a));
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
