"""The trainer's side of its checkpoints: the RNG states (torch, CUDA, numpy, python, the shuffling
generator) it stores as tensors and plain values, so the safe loader can read them, and restores on
resume. The file itself (format, atomic write, integrity digest, validated load) is
xvae_fast/checkpoint_file.py; its names are imported here for the trainer's `ckpt.*` calls."""
from __future__ import annotations

import random
from typing import Any, Dict

import numpy as np
import torch

from ..checkpoint_file import (CHECKPOINT, FORMAT, MODULE_WHAT, VERSION, atomic_save,  # noqa: F401  (the trainer's ckpt.*)
                               checkpoint_path, load_checkpoint, load_state)


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
