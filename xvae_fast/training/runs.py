"""Runs that commands drive in bulk (`compare`, the experiment sweeps): train a run folder, or reuse it
when it already holds the finished run with the same options, or resume it when it stopped early."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Set, Tuple

from ..config import RUNTIME_KEYS, TrainConfig, differing_options, resolve
from ..errors import ConfigError
from . import checkpoint as ckpt

# options that may differ between a reused run and the one asked for
IGNORED_ON_REUSE = set(RUNTIME_KEYS) | {"stage1_from"}


def run_status(run_dir: str, intended: TrainConfig) -> str:
    """'new', 'done' (reuse), or 'resume'; raises if the folder holds a run with other options."""
    if not os.path.exists(os.path.join(run_dir, ckpt.CHECKPOINT)):
        return "new"
    ck = ckpt.load_checkpoint(run_dir)
    saved = TrainConfig.from_saved(ck["config"])
    diffs = [f"{k} (run: {r!r}, asked for: {w!r})"
             for k, r, w in differing_options(saved, intended, IGNORED_ON_REUSE)]
    if diffs:
        raise ConfigError(f"{run_dir!r} holds a run trained with other options: {'; '.join(diffs)}. "
                          "Pass --overwrite to retrain, or choose another --out")
    if ck["stage"] == "done" and os.path.isfile(os.path.join(run_dir, "summary.json")):
        return "done"
    return "resume"


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def train_or_reuse(cfg: TrainConfig, explicit: Set[str], overwrite: bool = False,
                   verbose: bool = True) -> Tuple[Optional[Dict[str, Any]], str, TrainConfig]:
    """(summary, status, resolved config) of the run `cfg` (options as parsed from flags, with `out`
    set; `explicit` the options given) asks for: trained ('new'), continued ('resume') or read back
    ('done')."""
    from .trainer import train
    intended = resolve(cfg)
    run_dir = intended.out
    status = "new" if overwrite else run_status(run_dir, intended)
    summary = None
    if status == "new":
        summary = train(cfg.replace(overwrite=True), explicit=set(explicit) | {"overwrite"},
                        verbose=verbose).summary
    elif status == "resume":
        summary = train(TrainConfig(resume=run_dir, progress=False), explicit={"resume", "progress"},
                        verbose=verbose).summary
    if summary is None:
        summary = read_json(os.path.join(run_dir, "summary.json"))
    return summary, status, intended
