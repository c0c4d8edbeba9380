"""Helpers of the trainer tests: tiny runs (few steps, small data) through the real CLI entry point."""
import contextlib
import os
import subprocess
import sys

import torch

import xvae_fast

# The bundled clusters, cut to 200 points: 160 train / 40 test, 5 steps per epoch at batch 32.
TINY_CLUSTERS = ["--dataset", "clusters", "--limit", "200", "--batch-size", "32", "--hidden", "16,16",
                 "--epochs-ae", "2", "--epochs-vae", "2", "--em-n-init", "1", "--no-progress"]
TINY_DIGITS = ["--dataset", "digits", "--limit", "160", "--batch-size", "64", "--epochs-ae", "2",
               "--epochs-vae", "2", "--em-n-init", "1", "--latent", "4", "--no-progress"]


@contextlib.contextmanager
def one_thread():
    """Run with one torch thread (tiny models; robust on a busy 2-core machine), then restore."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def tiny_for(args):
    """`args` with a leading TINY_* block cut to the flags its --model uses (the block holds X-VAE's
    stage-1 and EM flags, which the other models refuse), as compare does for its --quick flags."""
    from xvae_fast.config import applicable_argv
    from xvae_fast.train import takes_value
    args = [str(a) for a in args]
    model = args[args.index("--model") + 1] if "--model" in args else "xvae"
    for tiny in (TINY_CLUSTERS, TINY_DIGITS):
        if args[:len(tiny)] == tiny:
            return applicable_argv(model, tiny[1], tiny, takes_value) + args[len(tiny):]
    return args


def train(*args) -> int:
    from xvae_fast.train import main
    with one_thread():
        return main(tiny_for(args))


def cli(module, *args, timeout=300):
    """Run `python -m module args` in a fresh interpreter; returns CompletedProcess (text)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(xvae_fast.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    # `python -m` puts the working directory first on sys.path: run from the tested package's parent
    # so a source checkout in the cwd (without the built extension) cannot shadow it.
    args = tiny_for(args) if module == "xvae_fast.train" else [str(a) for a in args]
    return subprocess.run([sys.executable, "-m", module] + args, capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=root)


def load_ck(run_dir):
    return torch.load(os.path.join(run_dir, "checkpoint.pt"), map_location="cpu", weights_only=True)


# One tiny run of every model family (the `family_runs` fixture of conftest.py trains them once per
# session): images (digits) and vectors (clusters; one standardised, so the data-unit transform of
# xvae_fast.load and of an export is exercised).
_IP = ["--epochs-vae", "1", "--introprior-mog-warmup", "1", "--epochs-game", "1", "--introprior-mc", "4"]
FAMILY_RUNS = {
    "xvae": [*TINY_DIGITS, "--model", "xvae"],
    "xvae-std": [*TINY_CLUSTERS, "--model", "xvae", "--standardize"],
    "vae": [*TINY_CLUSTERS, "--model", "vae"],
    "vamp": [*TINY_DIGITS, "--model", "vamp"],
    "hierarchical": [*TINY_CLUSTERS, "--model", "hierarchical"],
    "mog": [*TINY_DIGITS, "--model", "mog"],
    "gmvae": [*TINY_CLUSTERS, "--model", "gmvae"],
    "twostage": [*TINY_DIGITS, "--model", "twostage"],
    "uae": [*TINY_CLUSTERS, "--model", "uae"],
    "avae": [*TINY_DIGITS, "--model", "avae"],
    "introprior": [*TINY_CLUSTERS, "--model", "introprior", *_IP],
}
