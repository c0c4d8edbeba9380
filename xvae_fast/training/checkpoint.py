"""Checkpoints: written atomically (a temporary file in the same folder, fsync, then os.replace, so a
crash leaves either the old or the new checkpoint, never a torn one), loaded with
`torch.load(weights_only=True)` and validated (format, version, keys, finite weights), with errors
that say what is wrong. RNG states (torch, CUDA, numpy, python, the shuffling generator) are stored
as tensors and plain values so the safe loader can read them."""
from __future__ import annotations

import os
import random
from typing import Any, Dict, Optional

import numpy as np
import torch

from ..atomic_file import atomic_open
from ..errors import CheckpointError
from ..progress import shorten

FORMAT = "xvae_fast.checkpoint"
VERSION = 1
CHECKPOINT = "checkpoint.pt"
REQUIRED = ("format", "version", "config", "stage", "epoch", "batch", "step", "rng", "data_info",
            "models", "optimizers", "schedulers", "history", "running")


def atomic_save(obj: Any, path: str) -> None:
    """torch.save to `path` atomically and durably (`atomic_open`): on any failure `path` is left
    as it was."""
    with atomic_open(path, "wb", durable=True) as f:
        torch.save(obj, f)


# -- RNG states ------------------------------------------------------------------------------------
def capture_rng(shuffle_state: torch.Tensor) -> Dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": {"version": int(py_state[0]), "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss": py_state[2]},
        "shuffle": shuffle_state.clone(),
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Dict[str, Any]) -> torch.Tensor:
    """Restore the global RNGs; returns the shuffling generator's state."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
    return state["shuffle"]


# -- loading ---------------------------------------------------------------------------------------
def checkpoint_path(run_or_file: str) -> str:
    return os.path.join(run_or_file, CHECKPOINT) if os.path.isdir(run_or_file) else run_or_file


def _check_finite(tree, where: str, path: str) -> None:
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() and tree.numel() and not bool(torch.isfinite(tree).all()):
            raise CheckpointError(f"checkpoint {path!r} is corrupt: tensor {where!r} contains NaN or "
                                  "inf")
    elif isinstance(tree, dict):
        for k, v in tree.items():
            _check_finite(v, f"{where}.{k}" if where else str(k), path)
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            _check_finite(v, f"{where}[{i}]", path)


def load_checkpoint(run_or_file: str, map_location="cpu") -> Dict[str, Any]:
    """Load and validate a checkpoint (a run folder or a checkpoint file)."""
    path = checkpoint_path(run_or_file)
    if not os.path.exists(path):
        where = (f"run folder {run_or_file!r} has no {CHECKPOINT}" if os.path.isdir(run_or_file)
                 else f"no checkpoint at {path!r}")
        raise CheckpointError(f"{where}; is this a run folder written by `python -m xvae_fast.train`?")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle errors, unexpected types...
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else "")
        raise CheckpointError(f"checkpoint {path!r} is corrupt or unreadable "
                              f"({type(exc).__name__}: {shorten(detail)}); restore it from a backup or "
                              "start a new run") from exc
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not an xvae_fast trainer checkpoint")
    if ck.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path!r} has format version {ck.get('version')!r}; this "
                              f"xvae_fast reads version {VERSION}")
    missing = [k for k in REQUIRED if k not in ck]
    if missing:
        raise CheckpointError(f"checkpoint {path!r} is incomplete: missing {', '.join(missing)}")
    _check_finite(ck["models"], "models", path)
    _check_finite(ck.get("prior"), "prior", path)
    _check_finite(ck["optimizers"], "optimizers", path)
    return ck


def load_state(module: torch.nn.Module, state: Optional[dict], what: str, path: str) -> None:
    if state is None:
        raise CheckpointError(f"checkpoint {path!r} holds no {what} weights")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path!r} does not match the {what} this config builds "
                              f"(different data shape, latent size or architecture?): "
                              f"{str(exc).splitlines()[0]}") from exc
