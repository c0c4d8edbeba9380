"""The bench peers: each op as the leanest plain-PyTorch formulation a user would write (the way a
paper's code writes it), timed eager and under torch.compile against the fused op. Correctness
lives in `xvae_fast.ops.reference` (heavier: stable for every documented input, replayable noise);
these are for speed only, with the same math at the benchmarked inputs (checked by
`tests/test_bench_harness.py`). The floor of an op is its memory traffic at the measured copy
bandwidth: a strict lower bound. Its transcendental count at torch.exp's measured rate is printed
beside it as a second estimate, not a bound (the fused kernels' vectorised exponentials beat
torch.exp's rate here)."""
from __future__ import annotations

import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import median_time  # noqa: E402

LOG_2PI = math.log(2 * math.pi)


def mixture_kl(logits, mu, logvar, logw, m, s):
    """Eq. 18, batch mean: softplus responsibilities, their batch mean pi_q, the categorical KL and
    the pi_q-weighted Gaussian KLs."""
    r = F.softplus(logits)
    pi_q = (r / r.sum(1, keepdim=True)).mean(0)
    cat = (pi_q * (torch.log(pi_q) - logw)).sum()
    kln = torch.log(s) - 0.5 * logvar + (logvar.exp() + (mu - m) ** 2) / (2 * s * s) - 0.5
    return cat + (kln * pi_q).sum(1).mean()


def gaussian_kl(mu, logvar, m, s):
    """Eq. 16, batch mean."""
    return (torch.log(s) - 0.5 * logvar + (logvar.exp() + (mu - m) ** 2) / (2 * s * s) - 0.5).sum(1).mean()


def routed_transport_full(mu, logvar, w, M, S, m, s):
    """Plan `full`: per coordinate a component c ~ Cat(w), prior noise eps = M[c, k] + S[c, k] eta,
    transported to the posterior: z = mu + sigma / s_k (eps - m_k)."""
    B, K = mu.shape
    c = torch.multinomial(w, B * K, replacement=True).view(B, K)
    cols = torch.arange(K, device=mu.device)
    eps = M[c, cols] + S[c, cols] * torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) / s * (eps - m)


def routed_transport_matched(mu, logvar):
    """Plan `matched` (every coordinate's home component): the reparameterisation z = mu + sigma eta."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def sample_prior(w, M, S, n, routing="per-coordinate"):
    """Prior samples: a component per coordinate (Eq. 20) or per row (GMM sampling)."""
    C, K = M.shape
    cols = torch.arange(K, device=M.device)
    if routing == "per-row":
        c = torch.multinomial(w, n, replacement=True)
        return M[c] + S[c] * torch.randn(n, K, device=M.device)
    c = torch.multinomial(w, n * K, replacement=True).view(n, K)
    return M[c, cols] + S[c, cols] * torch.randn(n, K, device=M.device)


def mixture_log_prob(z, log_weights, means, log_vars):
    """log sum_c w_c N(z; means[c], diag exp(log_vars[c])) through the (N, C, d) broadcast."""
    d = z[:, None, :] - means[None]
    joint = -0.5 * (d * d * torch.exp(-log_vars)[None] + log_vars[None] + LOG_2PI).sum(-1) + log_weights
    return torch.logsumexp(joint, dim=1)


def kde_log_prob(z, centres, h):
    """log q(z) of the isotropic Gaussian KDE (AVAE) the lean way: the squared distances expanded into
    one matrix product, ||z - c||^2 = ||z||^2 - 2 z.c + ||c||^2, then logsumexp over the centres
    (memory B x m, not B x m x d). Exact enough near the origin (the benchmarked inputs); in float32 it
    loses every digit when the points sit far from the origin relative to h."""
    m, d = centres.shape
    c = centres.detach()
    scores = (z @ c.t() - 0.5 * (c * c).sum(1) - 0.5 * (z * z).sum(1, keepdim=True)) / (h * h)
    return torch.logsumexp(scores, dim=1) - math.log(m) - d * math.log(h) - 0.5 * d * LOG_2PI


# ---- the floor ------------------------------------------------------------------------------------
def exp_rate(n: int = 1 << 17, rounds: int = 32, device="cpu") -> float:
    """Seconds per element of torch.exp on float32 between two cache-resident tensors (512 KB each,
    large enough for every thread: the compute rate, not the memory's), on this device."""
    x = torch.rand(n, device=device) - 0.5
    y = torch.empty_like(x)

    def run():
        for _ in range(rounds):
            torch.exp(x, out=y)
    return median_time(run, repeats=10, warmup=3) / (n * rounds)


def floor_seconds(nbytes: float, copy_bw: float) -> float:
    """The traffic floor: the bytes the op must read and write, at the copy bandwidth."""
    return nbytes / copy_bw


# Transcendental evaluations per element of a (B, K) input, forward + backward, in the fused kernels
# (one exp per softplus/sigmoid pair, one exp per variance, one log1p per softplus).
TRANSCENDENTALS_FWDBWD = {"mixture_kl": 8, "gaussian_kl": 2, "routed_transport:full": 4,
                          "routed_transport:matched": 3}
