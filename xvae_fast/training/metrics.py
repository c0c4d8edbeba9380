"""Per-epoch metrics: metrics.csv and metrics.json in the run folder (rewritten from the full history
each epoch, so a resumed run's files are complete), optional TensorBoard scalars, and the summary's
table row."""
from __future__ import annotations

import csv
import os
from typing import Dict, List, Optional

from ..atomic_file import atomic_open, write_json
from ..errors import ConfigError

COLUMNS = ["stage", "epoch", "step", "lr", "train_loss", "train_recon", "train_kl", "train_kl_cat",
           "train_kl_gauss", "test_loss", "test_recon", "test_kl", "test_kl_cat", "test_kl_gauss",
           "gamma", "gamma_floor_binds", "time_s", "eval_s"]


def write_metrics(history: List[Dict], run_dir: str) -> None:
    with atomic_open(os.path.join(run_dir, "metrics.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in history:
            w.writerow({k: r.get(k, "") for k in COLUMNS})
    write_json(history, os.path.join(run_dir, "metrics.json"))


class TensorBoardLogger:
    """Scalars under run_dir/tensorboard; needs the optional `tensorboard` package."""

    def __init__(self, run_dir: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard "
                              "(or pip install 'xvae_fast[tensorboard]')") from exc
        self.writer = SummaryWriter(os.path.join(run_dir, "tensorboard"))

    def log_epoch(self, record: Dict) -> None:
        stage = record["stage"]
        for k, v in record.items():
            if k.startswith(("train_", "test_")) and isinstance(v, (int, float)):
                split, name = k.split("_", 1)
                self.writer.add_scalar(f"{stage}/{name}/{split}", v, record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def table_row(summary: Dict) -> str:
    """The paper's Table 1 form: train / test objective with reconstruction and KL terms, and the
    trainable parameter counts of Table 4."""
    tr, te = summary.get("train") or {}, summary.get("test") or {}

    def f(v: Optional[float]) -> str:
        return "-" if v is None else f"{v:.4g}"
    untrained = summary.get("untrained_stages")
    row = ((f"UNTRAINED ({', '.join(untrained)}: 0 epochs) " if untrained else "") +
           f"{summary['model_name']}: train {f(tr.get('loss'))}  test {f(te.get('loss'))}  recon "
           f"{f(te.get('recon'))}")
    if "kl" in te:
        row += (f"  KL {f(te.get('kl'))} (categorical {f(te.get('kl_cat'))}, "
                f"Gaussian {f(te.get('kl_gauss'))})")
    row += "".join(f"  {k} {f(v)}" for k, v in te.items() if k not in ("loss", "recon", "kl", "kl_cat",
                                                                      "kl_gauss"))
    if summary.get("likelihood"):
        row += f"; likelihood {summary['likelihood']}, objective in {summary.get('objective_units')}"
    params = summary.get("params")
    if params:  # paper Table 4
        row += f"; trainable parameters {params['total']} (prior {params['prior']})"
    return row
