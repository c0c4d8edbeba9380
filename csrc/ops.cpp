// The op schemas of the xvae_fast library (one place), and the Python module entry point.
// Kernels register per backend in cpu/*.cpp and cuda/*.cu; autograd and fake (meta) kernels are
// registered from Python (xvae_fast/_ops.py).
#include <Python.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

extern "C" {
// Importing xvae_fast._C loads this library, which runs the registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(xvae_fast, m) {
  m.def("mixture_kl_forward(Tensor logits, Tensor mu, Tensor logvar, Tensor log_pi_p, "
        "Tensor prior_mean, Tensor prior_std, int reduction) "
        "-> (Tensor total, Tensor categorical, Tensor gaussian, Tensor pi_q, Tensor kln_colsum)");
  m.def("mixture_kl_backward(Tensor grad_total, Tensor grad_categorical, Tensor grad_gaussian, "
        "Tensor logits, Tensor mu, Tensor logvar, Tensor log_pi_p, Tensor prior_mean, "
        "Tensor prior_std, Tensor pi_q, Tensor kln_colsum, int reduction) "
        "-> (Tensor grad_logits, Tensor grad_mu, Tensor grad_logvar)");
  m.def("gaussian_kl_forward(Tensor mu, Tensor logvar, Tensor prior_mean, Tensor prior_std, "
        "int reduction) -> Tensor");
  m.def("gaussian_kl_backward(Tensor grad, Tensor mu, Tensor logvar, Tensor prior_mean, "
        "Tensor prior_std, int reduction) -> (Tensor grad_mu, Tensor grad_logvar)");
  m.def("routed_transport(Tensor mu, Tensor logvar, Tensor means, Tensor stds, Tensor pi_p, "
        "Tensor? pi_q, Tensor plan, int num_posterior, Generator? generator=None) "
        "-> (Tensor z, Tensor comp, Tensor rng_state)",
        {at::Tag::nondeterministic_seeded});
  m.def("routed_transport_backward(Tensor grad_z, Tensor z, Tensor mu, Tensor comp, Tensor plan) "
        "-> (Tensor grad_mu, Tensor grad_logvar)");
  m.def("draw_noise(Tensor rng_state, int rows, int cols, bool double_precision) "
        "-> (Tensor eta, Tensor u, Tensor u_row)");
  m.def("sample_prior(Tensor means, Tensor stds, Tensor pi_p, int n, float alpha, bool per_row, "
        "Generator? generator=None) -> (Tensor z, Tensor rng_state)",
        {at::Tag::nondeterministic_seeded});
  m.def("sample_prior_backward(Tensor grad_z, Tensor rng_state, Tensor means, Tensor stds, "
        "Tensor pi_p, float alpha, bool per_row) -> (Tensor grad_means, Tensor grad_stds)");
  // The backward's needs = which of (z, log_weights, means, log_vars) want a gradient; the others
  // are returned undefined (None) and their work is skipped.
  m.def("mixture_log_prob(Tensor z, Tensor log_weights, Tensor means, Tensor log_vars, "
        "bool return_responsibilities) -> (Tensor log_prob, Tensor responsibilities)");
  m.def("mixture_log_prob_backward(Tensor grad, Tensor? grad_resp, Tensor z, Tensor log_weights, "
        "Tensor means, Tensor log_vars, bool[4] needs=[True, True, True, True]) "
        "-> (Tensor grad_z, Tensor grad_log_weights, Tensor grad_means, Tensor grad_log_vars)");
  // The isotropic Gaussian KDE with one bandwidth (a 0-dim tensor): log q (N,), the logsumexp of the
  // scores (N,) in the accumulation dtype and which rows were computed in the direct form (N,) bool,
  // both for the backward. The centres get no gradient.
  m.def("kde_log_prob(Tensor z, Tensor centres, Tensor bandwidth, bool exclude_self) "
        "-> (Tensor log_prob, Tensor lse, Tensor direct)");
  m.def("kde_log_prob_backward(Tensor grad, Tensor z, Tensor centres, Tensor bandwidth, Tensor lse, "
        "Tensor direct, bool exclude_self) -> Tensor grad_z");
  m.def("component_kl(Tensor mu, Tensor logvar, Tensor means, Tensor stds) -> Tensor kl");
  m.def("component_kl_backward(Tensor grad, Tensor mu, Tensor logvar, Tensor means, Tensor stds) "
        "-> (Tensor grad_mu, Tensor grad_logvar)");
  m.def("mixture_bound(Tensor mu, Tensor logvar, Tensor log_weights, Tensor means, Tensor stds, "
        "Tensor? logits, str kind, int reduction, bool return_weights) "
        "-> (Tensor total, Tensor categorical, Tensor gaussian, Tensor weights, Tensor kl)");
  m.def("mixture_bound_backward(Tensor grad_total, Tensor grad_categorical, Tensor grad_gaussian, "
        "Tensor mu, Tensor logvar, Tensor log_weights, Tensor means, Tensor stds, Tensor? logits, "
        "Tensor kl, str kind, int reduction) "
        "-> (Tensor grad_mu, Tensor grad_logvar, Tensor grad_logits)");
}
