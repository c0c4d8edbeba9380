// Argument checks shared by the CPU and CUDA launchers. The Python API validates first and names
// the user's argument; these keep a direct torch.ops call from reading out of bounds.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace xvae {

inline void check_floating(const at::Tensor& t, const char* name) {
  auto dt = t.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
              "xvae_fast: ", name, " must be float32, float64, float16 or bfloat16, got ", dt);
}

// A (B, K) batch tensor with the reference tensor's dtype and device.
inline void check_batch(const at::Tensor& t, const char* name, const at::Tensor& ref) {
  TORCH_CHECK(t.dim() == 2, "xvae_fast: ", name, " must be 2-D (B, K), got shape ", t.sizes());
  TORCH_CHECK(t.sizes() == ref.sizes(), "xvae_fast: ", name, " has shape ", t.sizes(),
              ", expected ", ref.sizes());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "xvae_fast: ", name, " has dtype ",
              t.scalar_type(), ", expected ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), "xvae_fast: ", name, " is on ", t.device(),
              ", expected ", ref.device());
}

// A prior or statistics tensor of the given shape in the accumulation dtype of `ref`.
inline at::ScalarType acc_dtype_of(const at::Tensor& ref) {
  return ref.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_param(const at::Tensor& t, const char* name, at::IntArrayRef shape,
                        const at::Tensor& ref) {
  TORCH_CHECK(t.sizes() == shape, "xvae_fast: ", name, " has shape ", t.sizes(), ", expected ",
              shape);
  TORCH_CHECK(t.scalar_type() == acc_dtype_of(ref), "xvae_fast: ", name, " must be ",
              acc_dtype_of(ref), " for ", ref.scalar_type(), " inputs, got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), "xvae_fast: ", name, " is on ", t.device(),
              ", expected ", ref.device());
}

inline void check_reduction(int64_t reduction) {
  TORCH_CHECK(reduction >= 0 && reduction <= 2, "xvae_fast: reduction code must be 0 (none), ",
              "1 (mean) or 2 (sum), got ", reduction);
}

// Upstream gradient of a reduced output: 0-dim for mean/sum, (B,) for none.
inline void check_grad(const at::Tensor& g, const char* name, int64_t reduction, int64_t B) {
  if (reduction == 0) {
    TORCH_CHECK(g.dim() == 1 && g.size(0) == B, "xvae_fast: ", name, " must have shape (", B,
                ",), got ", g.sizes());
  } else {
    TORCH_CHECK(g.numel() == 1, "xvae_fast: ", name, " must be a scalar, got ", g.sizes());
  }
}

}  // namespace xvae
