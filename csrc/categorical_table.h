// Host-side construction of the inverse-CDF tables (xvae_math.h: sample_categorical) with ATen ops,
// so the same code serves CPU and CUDA tensors without a device sync.
#pragma once

#include <ATen/ops/arange.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/searchsorted.h>
#include <ATen/core/Tensor.h>

#include "xvae_math.h"

namespace xvae {

struct CategoricalTensors {
  at::Tensor cdf;    // (C,) float64
  at::Tensor guide;  // (G,) int32, G = kGuideBucketsPerComponent * C
  CategoricalTable view() const {
    return {cdf.data_ptr<double>(), guide.data_ptr<int32_t>()};
  }
};

inline CategoricalTensors build_categorical(const at::Tensor& weights) {
  const int64_t C = weights.numel();
  const int64_t G = kGuideBucketsPerComponent * C;
  auto cdf = at::cumsum(weights.to(at::kDouble), 0).contiguous();
  auto thresholds = at::arange(G, cdf.options()).mul(1.0 / static_cast<double>(G)).mul(cdf.select(0, C - 1));
  auto guide = at::searchsorted(cdf, thresholds, /*out_int32=*/true, /*right=*/true)
                   .clamp_max(C - 1)
                   .contiguous();
  return {cdf, guide};
}

// Saved component indices use the smallest integer type that holds C.
inline at::ScalarType component_dtype(int64_t C) {
  return C <= 32767 ? at::kShort : at::kInt;
}

}  // namespace xvae
