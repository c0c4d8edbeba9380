"""An S-IntroVAE game step (`--model introprior`: the encoder update, then the decoder-and-prior
update, each with forward, backward and Adam) and the share of it spent in the mixture log-density
(7 evaluations of B x T points against M components per step, SPEC-related 1.4), with the fused
`mixture_log_prob` vs the plain-PyTorch reference op.

The share is measured, not estimated from a profile: the same step is also timed with a stand-in
log-density that costs next to nothing (-||z||^2 / 2, same shapes, same autograd path), and
share = (step - step with the stand-in) / step. All variants of a setup are timed in rotation in one
run (one step of each per round), so a slow phase of a shared machine falls on all alike.

    python bench/introprior_step.py [--repeats 10] [--setups 2d,digits,mnist] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import sys
import types

import torch

import xvae_fast as xf
from xvae_fast import reference as R

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import chosen_setups  # noqa: E402
from timing import interleaved_medians  # noqa: E402

SETUPS = {  # name: (label, kind, shape, latent, hidden, batch, components)
    "2d": ("2-D, the paper's 4 x 256 MLP, B 512, M 64, l 2", "vector", (2,), 2, (256,) * 4, 512, 64),
    "digits": ("8x8 digits net, B 128, M 10, l 10", "image", (1, 8, 8), 10, None, 128, 10),
    "mnist": ("MNIST-shaped conv (1x28x28), B 128, M 100, l 32", "image", (1, 28, 28), 32, None, 128, 100),
}


def _standin_log_prob(z, log_weights, means, log_vars, return_responsibilities=False, check_finite=False):
    """A near-free log-density with the op's shapes and an autograd path to z and the parameters."""
    lp = -0.5 * z.pow(2).sum(1) + 0.0 * (log_weights.sum() + means.sum() + log_vars.sum())
    if not return_responsibilities:
        return lp
    C = log_weights.shape[0]
    return lp, (z[:, :1] * 0.0 + 1.0 / C).expand(z.shape[0], C)


STANDIN = types.SimpleNamespace(mixture_log_prob=_standin_log_prob)


def build(setup, ops):
    from xvae_fast.models.introprior import IntroPriorVAE
    _, kind, shape, latent, hidden, batch, C = SETUPS[setup]
    torch.manual_seed(0)
    m = IntroPriorVAE(kind, shape, latent, hidden or (128, 128), ops=ops, prior="ip", weights="learned",
                      components=C, beta_neg=32.0 if kind == "image" else 0.9)
    with torch.no_grad():
        m.pseudo.copy_(torch.rand_like(m.pseudo))
    m.vamp_to_mog()
    m.freeze_clip_range()
    opts = {"encoder": torch.optim.Adam(m.encoder_parameters(), 2e-4),
            "decoder": torch.optim.Adam(m.decoder_parameters(), 2e-4),
            "prior": torch.optim.Adam(m.prior_parameters(), 2e-4)}
    x = torch.rand(batch, *shape)

    def step():
        for upd in m.game_updates(x, train_prior=True):
            for k in upd.optimizers:
                opts[k].zero_grad(set_to_none=True)
            upd.loss.backward()
            for k in upd.optimizers:
                opts[k].step()
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--setups", default=",".join(SETUPS))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    names = chosen_setups(ap, a.setups, SETUPS)
    print(f"S-IntroVAE game step (two updates, forward + backward + Adam), T = 100, CPU, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; medians of {a.repeats} rounds")
    print("| setup | step fused ms | step reference ms | step stand-in ms | mixture share fused | "
          "mixture share reference | step reference / fused |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        steps = {"fused": build(name, xf), "reference": build(name, R), "standin": build(name, STANDIN)}
        med = {k: v * 1e3 for k, v in interleaved_medians(steps, a.repeats, warmup=2).items()}
        f, r, s = med["fused"], med["reference"], med["standin"]
        print(f"| {SETUPS[name][0]} | {f:.1f} | {r:.1f} | {s:.1f} | {max(f - s, 0) / f:.0%} | "
              f"{max(r - s, 0) / r:.0%} | {r / f:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
