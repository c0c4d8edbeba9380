"""Train a fixed set of small runs (one per model family, plus the paper preset) and print their
summary.json train/test terms and a hash of samples.npy as JSON: run it before and after a refactor
and diff the two files. Results must be bit-identical (same machine, same torch).

    PYTHONPATH=. python tools/summary_terms.py --out /tmp/terms-before > /tmp/terms-before.json
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

COMMON = ["--dataset", "digits", "--limit", "400", "--no-progress", "--seed", "3"]
RUNS = {
    "xvae-default": ["--epochs-ae", "3", "--epochs-vae", "3"],
    "xvae-paper": ["--preset", "paper", "--epochs-ae", "3", "--epochs-vae", "3"],
    "vae": ["--model", "vae", "--epochs-vae", "3"],
    "vamp": ["--model", "vamp", "--epochs-vae", "3"],
    "mog": ["--model", "mog", "--epochs-vae", "3"],
    "gmvae": ["--model", "gmvae", "--epochs-vae", "3"],
    "hierarchical": ["--model", "hierarchical", "--epochs-vae", "3"],
    "twostage": ["--model", "twostage", "--epochs-vae", "3", "--epochs-stage2", "3"],
    "uae": ["--model", "uae", "--epochs-vae", "3"],
    "avae": ["--model", "avae", "--epochs-vae", "3"],
    "introprior": ["--model", "introprior", "--epochs-vae", "2", "--epochs-game", "2"],
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    result = {}
    for name, flags in RUNS.items():
        if a.only and name not in a.only.split(","):
            continue
        run = os.path.join(a.out, name)
        cmd = [sys.executable, "-m", "xvae_fast.train", *COMMON, *flags, "--out", run, "--overwrite"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(run, "summary.json")) as f:
            s = json.load(f)
        with open(os.path.join(run, "samples.npy"), "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        result[name] = {"train": s.get("train"), "test": s.get("test"), "samples_sha256": digest}
    json.dump(result, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
