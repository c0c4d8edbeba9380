"""Run by tests/test_distributed.py, as one process (`python dist_worker.py OUT`) or under torchrun:
trains each tiny setup with the real Trainer and records, per setup, every optimiser step's loss terms
(the globally reduced values the trainer logs) and the final weights, to OUT/rank<R>.pt."""
import os
import sys

import torch

from xvae_fast.train import applicable_flags, parse_config
from xvae_fast.training.trainer import Trainer

BASE = ["--dataset", "clusters", "--limit", "200", "--batch-size", "37", "--hidden", "16,16",
        "--epochs-ae", "1", "--epochs-vae", "2", "--em-n-init", "1", "--no-progress", "--no-outputs",
        "--device", "cpu", "--threads", "1"]
# 160 training rows at batch 37: shards of 19 and 18 rows, then a last batch of 12 (6 and 6)
SETUPS = {
    "xvae": [],
    "xvae-paper": ["--preset", "paper"],                 # Eq. 18 with the batch pi_q, per-coordinate
    "xvae-single": ["--plan", "single"],
    "vae": ["--model", "vae"],
    "vamp": ["--model", "vamp", "--pseudo-inputs", "8"],
    "mog": ["--model", "mog", "--mog-components", "4"],
    "gmvae": ["--model", "gmvae", "--clusters", "4"],
    "hierarchical": ["--model", "hierarchical"],
    "twostage": ["--model", "twostage", "--epochs-stage2", "1"],
    "uae-vae": ["--model", "uae", "--uae-variant", "vae"],
    "uae-random": ["--model", "uae", "--uae-variant", "utvae", "--uae-heuristic", "random"],
    "uae": ["--model", "uae"],
    # 144 rows after the validation part: 40 KDE centres, 104 SGD rows = batches of 37, 37, 30
    "avae": ["--model", "avae", "--avae-centres", "40", "--avae-bandwidth", "0.5", "--epochs-vae", "5"],
}


class Recording(Trainer):
    def __init__(self, *a, **k):
        self.steps = []
        super().__init__(*a, **k)

    def _train_step(self, stage, x, shard=None):
        values = super()._train_step(stage, x, shard)
        self.steps.append([values[k] for k in stage.terms])
        return values


def main(out: str, names) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:   # the trainers join a group that is already up (as in a user's own script)
        torch.distributed.init_process_group("gloo")
    result = {}
    for name in names:
        # BASE holds X-VAE's stage-1 and EM flags: each setup gets those its model uses
        argv = applicable_flags(BASE + SETUPS[name] + ["--out", os.path.join(out, f"run-{name}")])
        cfg, explicit = parse_config(argv)
        t = Recording(cfg, explicit=explicit, verbose=False)
        try:
            t.run()
        finally:
            t.close()
        result[name] = {"steps": torch.tensor([v for s in t.steps for v in s], dtype=torch.float64),
                        "weights": {m: {k: v.detach().clone() for k, v in mod.state_dict().items()}
                                    for m, mod in t.recipe.modules.items() if mod is not None}}
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(",") if len(sys.argv) > 2 else list(SETUPS))
