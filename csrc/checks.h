// Argument checks shared by the CPU and CUDA launchers. The Python API validates first and names
// the user's argument; these keep a direct torch.ops call from reading out of bounds.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <optional>
#include <string>
#include <utility>

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

// ---- per-op argument checks, shared by the CPU and CUDA launchers ---------------------------------

inline void check_mixture_kl_args(const at::Tensor& logits, const at::Tensor& mu,
                                  const at::Tensor& logvar, const at::Tensor& log_pi_p,
                                  const at::Tensor& prior_mean, const at::Tensor& prior_std,
                                  int64_t reduction) {
  check_floating(logits, "logits");
  check_batch(mu, "mu", logits);
  check_batch(logvar, "logvar", logits);
  check_reduction(reduction);
  const int64_t K = logits.size(1);
  check_param(log_pi_p, "log_pi_p", {K}, logits);
  check_param(prior_mean, "prior_mean", {K}, logits);
  check_param(prior_std, "prior_std", {K}, logits);
}

inline void check_mixture_kl_backward_args(
    const at::Tensor& g_total, const at::Tensor& g_cat, const at::Tensor& g_gauss,
    const at::Tensor& logits, const at::Tensor& mu, const at::Tensor& logvar,
    const at::Tensor& log_pi_p, const at::Tensor& prior_mean, const at::Tensor& prior_std,
    const at::Tensor& pi_q, const at::Tensor& kln_colsum, int64_t reduction) {
  check_mixture_kl_args(logits, mu, logvar, log_pi_p, prior_mean, prior_std, reduction);
  const int64_t B = logits.size(0), K = logits.size(1);
  check_param(pi_q, "pi_q", {K}, logits);
  check_param(kln_colsum, "kln_colsum", {K}, logits);
  check_grad(g_total, "grad_total", reduction, B);
  check_grad(g_cat, "grad_categorical", reduction, B);
  check_grad(g_gauss, "grad_gaussian", reduction, B);
}

inline void check_gaussian_kl_args(const at::Tensor& mu, const at::Tensor& logvar,
                                   const at::Tensor& prior_mean, const at::Tensor& prior_std,
                                   int64_t reduction) {
  check_floating(mu, "mu");
  check_batch(logvar, "logvar", mu);
  check_reduction(reduction);
  const int64_t K = mu.size(1);
  check_param(prior_mean, "prior_mean", {K}, mu);
  check_param(prior_std, "prior_std", {K}, mu);
}

inline void check_plan(const at::Tensor& plan, int64_t K, int64_t num_posterior,
                       const at::Tensor& ref) {
  TORCH_CHECK(plan.dim() == 1 && plan.size(0) == K && plan.scalar_type() == at::kInt,
              "xvae_fast: plan must be a (K,) int32 tensor of plan codes with K = ", K, ", got ",
              plan.sizes(), " ", plan.scalar_type());
  TORCH_CHECK(plan.device() == ref.device(), "xvae_fast: plan is on ", plan.device(),
              ", expected ", ref.device());
  TORCH_CHECK(num_posterior >= 0 && num_posterior <= K, "xvae_fast: num_posterior out of range");
}

inline void check_routed_transport_args(const at::Tensor& mu, const at::Tensor& logvar,
                                        const at::Tensor& means, const at::Tensor& stds,
                                        const at::Tensor& pi_p,
                                        const std::optional<at::Tensor>& pi_q,
                                        const at::Tensor& plan, int64_t num_posterior) {
  check_floating(mu, "mu");
  check_batch(logvar, "logvar", mu);
  const int64_t K = mu.size(1);
  check_param(means, "means", {K, K}, mu);
  check_param(stds, "stds", {K, K}, mu);
  check_param(pi_p, "pi_p", {K}, mu);
  if (pi_q.has_value()) check_param(*pi_q, "pi_q", {K}, mu);
  check_plan(plan, K, num_posterior, mu);
}

inline void check_routed_transport_backward_args(const at::Tensor& grad_z, const at::Tensor& z,
                                                 const at::Tensor& mu, const at::Tensor& comp,
                                                 const at::Tensor& plan) {
  check_floating(mu, "mu");
  check_batch(grad_z, "grad_z", mu);
  check_batch(z, "z", mu);
  TORCH_CHECK(comp.dim() == 2 && comp.size(0) == mu.size(0), "xvae_fast: comp must be (B, P)");
  TORCH_CHECK(comp.scalar_type() == at::kShort || comp.scalar_type() == at::kInt,
              "xvae_fast: comp must be int16 or int32, got ", comp.scalar_type());
  TORCH_CHECK(comp.device() == mu.device(), "xvae_fast: comp is on ", comp.device(),
              ", expected ", mu.device());
  check_plan(plan, mu.size(1), comp.size(1), mu);
}

// sample_prior's prior tables: means and stds (C, K) float32/float64, weights pi_p (C,).
inline void check_prior_tables(const at::Tensor& means, const at::Tensor& stds,
                               const at::Tensor& pi_p) {
  TORCH_CHECK(means.dim() == 2, "xvae_fast: means must be (C, K), got ", means.sizes());
  TORCH_CHECK(means.scalar_type() == at::kFloat || means.scalar_type() == at::kDouble,
              "xvae_fast: means must be float32 or float64, got ", means.scalar_type());
  TORCH_CHECK(stds.sizes() == means.sizes() && stds.scalar_type() == means.scalar_type() &&
                  stds.device() == means.device(),
              "xvae_fast: stds must match means in shape, dtype and device");
  TORCH_CHECK(pi_p.dim() == 1 && pi_p.size(0) == means.size(0) &&
                  pi_p.scalar_type() == means.scalar_type() && pi_p.device() == means.device(),
              "xvae_fast: pi_p must be (C,) with the dtype and device of means");
}

// mixture_log_prob: z (N, d); log_weights (C,), means and log_vars (C, d), all of z's dtype and device.
inline void check_mixture_log_prob_args(const at::Tensor& z, const at::Tensor& log_weights,
                                        const at::Tensor& means, const at::Tensor& log_vars) {
  check_floating(z, "z");
  TORCH_CHECK(z.dim() == 2, "xvae_fast: z must be 2-D (N, d), got shape ", z.sizes());
  TORCH_CHECK(log_weights.dim() == 1 && log_weights.size(0) >= 1,
              "xvae_fast: log_weights must be (C,) with C >= 1, got shape ", log_weights.sizes());
  const int64_t C = log_weights.size(0), d = z.size(1);
  const std::pair<const at::Tensor*, const char*> params[] = {
      {&log_weights, "log_weights"}, {&means, "means"}, {&log_vars, "log_vars"}};
  for (const auto& pr : params) {
    TORCH_CHECK(pr.first->scalar_type() == z.scalar_type(), "xvae_fast: ", pr.second,
                " has dtype ", pr.first->scalar_type(), ", expected ", z.scalar_type());
    TORCH_CHECK(pr.first->device() == z.device(), "xvae_fast: ", pr.second, " is on ",
                pr.first->device(), ", expected ", z.device());
  }
  TORCH_CHECK(means.dim() == 2 && means.size(0) == C && means.size(1) == d,
              "xvae_fast: means must be (C, d) = (", C, ", ", d, "), got ", means.sizes());
  TORCH_CHECK(log_vars.sizes() == means.sizes(), "xvae_fast: log_vars must be (C, d) = (", C, ", ",
              d, "), got ", log_vars.sizes());
}

inline void check_mixture_log_prob_backward_args(const at::Tensor& grad,
                                                 const std::optional<at::Tensor>& grad_resp,
                                                 const at::Tensor& z, const at::Tensor& log_weights,
                                                 const at::Tensor& means,
                                                 const at::Tensor& log_vars) {
  check_mixture_log_prob_args(z, log_weights, means, log_vars);
  const int64_t N = z.size(0), C = log_weights.size(0);
  TORCH_CHECK(grad.dim() == 1 && grad.size(0) == N, "xvae_fast: grad must be (", N, ",), got ",
              grad.sizes());
  TORCH_CHECK(grad.device() == z.device(), "xvae_fast: grad is on ", grad.device(), ", expected ",
              z.device());
  if (grad_resp.has_value()) {
    TORCH_CHECK(grad_resp->dim() == 2 && grad_resp->size(0) == N && grad_resp->size(1) == C,
                "xvae_fast: grad_resp must be (", N, ", ", C, "), got ", grad_resp->sizes());
    TORCH_CHECK(grad_resp->device() == z.device(), "xvae_fast: grad_resp is on ",
                grad_resp->device(), ", expected ", z.device());
  }
}

// kde_log_prob: z (N, d) floating; centres (m, d), m >= 1, of z's dtype and device; bandwidth a 0-dim
// floating tensor on the CPU or z's device; with exclude_self N == m >= 2.
inline void check_kde_args(const at::Tensor& z, const at::Tensor& centres, const at::Tensor& bandwidth,
                           bool exclude_self) {
  check_floating(z, "z");
  TORCH_CHECK(z.dim() == 2, "xvae_fast: z must be 2-D (N, d), got shape ", z.sizes());
  TORCH_CHECK(centres.dim() == 2 && centres.size(0) >= 1 && centres.size(1) == z.size(1),
              "xvae_fast: centres must be (m, d) with m >= 1 and d = ", z.size(1), ", got ",
              centres.sizes());
  TORCH_CHECK(centres.scalar_type() == z.scalar_type(), "xvae_fast: centres has dtype ",
              centres.scalar_type(), ", expected ", z.scalar_type());
  TORCH_CHECK(centres.device() == z.device(), "xvae_fast: centres is on ", centres.device(),
              ", expected ", z.device());
  TORCH_CHECK(bandwidth.dim() == 0 && c10::isFloatingType(bandwidth.scalar_type()),
              "xvae_fast: bandwidth must be a 0-dim floating tensor, got ", bandwidth.sizes(), " ",
              bandwidth.scalar_type());
  TORCH_CHECK(bandwidth.device() == z.device() || bandwidth.device().is_cpu(),
              "xvae_fast: bandwidth is on ", bandwidth.device(), ", expected ", z.device(), " or cpu");
  TORCH_CHECK(!exclude_self || (z.size(0) == centres.size(0) && centres.size(0) >= 2),
              "xvae_fast: exclude_self needs as many rows as centres (N == m) and m >= 2, got N = ",
              z.size(0), ", m = ", centres.size(0));
}

// The backward also takes the upstream gradient (N,) and the forward's lse (N,) in the accumulation
// dtype and direct (N,) bool.
inline void check_kde_backward_args(const at::Tensor& grad, const at::Tensor& z,
                                    const at::Tensor& centres, const at::Tensor& bandwidth,
                                    const at::Tensor& lse, const at::Tensor& direct, bool exclude_self) {
  check_kde_args(z, centres, bandwidth, exclude_self);
  const int64_t N = z.size(0);
  TORCH_CHECK(grad.dim() == 1 && grad.size(0) == N && grad.device() == z.device(),
              "xvae_fast: grad must be (", N, ",) on ", z.device(), ", got ", grad.sizes());
  check_floating(grad, "grad");
  TORCH_CHECK(lse.dim() == 1 && lse.size(0) == N && lse.scalar_type() == acc_dtype_of(z) &&
                  lse.device() == z.device(),
              "xvae_fast: lse must be (", N, ",) ", acc_dtype_of(z), " on ", z.device(), ", got ",
              lse.sizes(), " ", lse.scalar_type());
  TORCH_CHECK(direct.dim() == 1 && direct.size(0) == N && direct.scalar_type() == at::kBool &&
                  direct.device() == z.device(),
              "xvae_fast: direct must be (", N, ",) bool on ", z.device(), ", got ", direct.sizes(),
              " ", direct.scalar_type());
}

// ---- component_kl / mixture_bound ------------------------------------------------------------------
// mu, logvar (B, K); means, stds (C, K) with C >= 1 in the accumulation dtype of mu, on its device.
inline void check_component_kl_args(const at::Tensor& mu, const at::Tensor& logvar,
                                    const at::Tensor& means, const at::Tensor& stds) {
  check_floating(mu, "mu");
  TORCH_CHECK(mu.dim() == 2, "xvae_fast: mu must be 2-D (B, K), got shape ", mu.sizes());
  check_batch(logvar, "logvar", mu);
  TORCH_CHECK(means.dim() == 2 && means.size(0) >= 1 && means.size(1) == mu.size(1),
              "xvae_fast: means must be (C, K) with C >= 1 and K = ", mu.size(1), ", got shape ",
              means.sizes());
  check_param(means, "means", means.sizes(), mu);
  check_param(stds, "stds", means.sizes(), mu);
}

// The kind code of mixture_bound's `kind` ("tight" or "mixture").
inline int bound_kind_code(c10::string_view kind) {
  if (kind == "tight") return 0;
  if (kind == "mixture") return 1;
  TORCH_CHECK(false, "xvae_fast: kind must be 'tight' or 'mixture', got '", std::string(kind), "'");
  return -1;
}

// log_weights (C,); logits (B, C) of mu's dtype and device for kind "mixture", absent for "tight".
inline int check_mixture_bound_args(const at::Tensor& mu, const at::Tensor& logvar,
                                    const at::Tensor& log_weights, const at::Tensor& means,
                                    const at::Tensor& stds, const std::optional<at::Tensor>& logits,
                                    c10::string_view kind, int64_t reduction) {
  check_component_kl_args(mu, logvar, means, stds);
  check_reduction(reduction);
  const int64_t B = mu.size(0), C = means.size(0);
  check_param(log_weights, "log_weights", {C}, mu);
  const int code = bound_kind_code(kind);
  if (code == 1) {
    TORCH_CHECK(logits.has_value(), "xvae_fast: kind 'mixture' needs logits (B, C)");
    TORCH_CHECK(logits->dim() == 2 && logits->size(0) == B && logits->size(1) == C,
                "xvae_fast: logits must be (B, C) = (", B, ", ", C, "), got shape ", logits->sizes());
    TORCH_CHECK(logits->scalar_type() == mu.scalar_type(), "xvae_fast: logits has dtype ",
                logits->scalar_type(), ", expected ", mu.scalar_type());
    TORCH_CHECK(logits->device() == mu.device(), "xvae_fast: logits is on ", logits->device(),
                ", expected ", mu.device());
  } else {
    TORCH_CHECK(!logits.has_value(), "xvae_fast: kind 'tight' takes no logits (pass None)");
  }
  return code;
}

// The forward's kl (B, C) in the accumulation dtype, saved for the backward.
inline void check_saved_kl(const at::Tensor& kl, int64_t B, int64_t C, const at::Tensor& ref) {
  TORCH_CHECK(kl.dim() == 2 && kl.size(0) == B && kl.size(1) == C, "xvae_fast: kl must be (B, C) = (",
              B, ", ", C, "), got shape ", kl.sizes());
  check_param(kl, "kl", {B, C}, ref);
}

inline int check_mixture_bound_backward_args(
    const at::Tensor& g_total, const at::Tensor& g_cat, const at::Tensor& g_gauss,
    const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& log_weights,
    const at::Tensor& means, const at::Tensor& stds, const std::optional<at::Tensor>& logits,
    const at::Tensor& kl, c10::string_view kind, int64_t reduction) {
  const int code =
      check_mixture_bound_args(mu, logvar, log_weights, means, stds, logits, kind, reduction);
  const int64_t B = mu.size(0);
  check_grad(g_total, "grad_total", reduction, B);
  check_grad(g_cat, "grad_categorical", reduction, B);
  check_grad(g_gauss, "grad_gaussian", reduction, B);
  const std::pair<const at::Tensor*, const char*> grads[] = {
      {&g_total, "grad_total"}, {&g_cat, "grad_categorical"}, {&g_gauss, "grad_gaussian"}};
  for (const auto& g : grads) {
    check_floating(*g.first, g.second);
    TORCH_CHECK(g.first->device() == mu.device(), "xvae_fast: ", g.second, " is on ",
                g.first->device(), ", expected ", mu.device());
  }
  check_saved_kl(kl, B, means.size(0), mu);
  return code;
}

inline void check_component_kl_backward_args(const at::Tensor& grad, const at::Tensor& mu,
                                             const at::Tensor& logvar, const at::Tensor& means,
                                             const at::Tensor& stds) {
  check_component_kl_args(mu, logvar, means, stds);
  const int64_t B = mu.size(0), C = means.size(0);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == B && grad.size(1) == C,
              "xvae_fast: grad must be (B, C) = (", B, ", ", C, "), got shape ", grad.sizes());
  check_floating(grad, "grad");
  TORCH_CHECK(grad.device() == mu.device(), "xvae_fast: grad is on ", grad.device(), ", expected ",
              mu.device());
}

}  // namespace xvae
