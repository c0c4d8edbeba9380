"""A trained run folder, read back for sampling and evaluation: the model's recipe with every module
restored from the checkpoint, its generative model, its reference samplers, and the run's
summary.json. It sits below training/ and evaluation/ and imports neither, so sample, evaluate,
compare, export, the experiments and evaluation/ load runs without importing the trainer."""
from __future__ import annotations

import json
import os
from typing import Any, Dict

from .checkpoint_file import MODULE_WHAT, checkpoint_path, load_checkpoint, load_state
from .config import TrainConfig
from .data import DataInfo
from .devices import pick_device
from .errors import CheckpointError
from .models import build_recipe, get_ops



def load_recipe(run_dir: str, device: str = "cpu"):
    """(config, DataInfo, the model's recipe with every module restored, checkpoint) of a run folder."""
    ck = load_checkpoint(run_dir)
    path = checkpoint_path(run_dir)
    cfg = TrainConfig.from_saved(ck["config"])
    info = DataInfo.from_dict(ck["data_info"])
    dev = pick_device(device)
    recipe = build_recipe(cfg, info, get_ops(device=dev))
    if not recipe.sampling_ready(ck["stage"]):
        raise CheckpointError(f"run {run_dir!r} has not reached the stage it samples from "
                              f"({recipe.sampling_stage()!r}) yet (it is at stage {ck['stage']!r}); "
                              "resume it with --resume first")
    recipe.load_state(ck, path)
    for name, module in recipe.modules.items():
        if module is not None:
            load_state(module, ck["models"].get(name), MODULE_WHAT.get(name, name), path)
    recipe.to(dev)
    for m in recipe.modules.values():
        if m is not None:
            m.eval()
    return cfg, info, recipe, ck


def load_run(run_dir: str, device: str = "cpu"):
    """(config, DataInfo, the generative model, checkpoint) from a run folder, for sampling."""
    cfg, info, recipe, ck = load_recipe(run_dir, device)
    return cfg, info, recipe.generative, ck


def load_reference(run_dir: str, name: str, device: str = "cpu"):
    """(config, DataInfo, the reference sampler `name`, checkpoint): one of the run's reference
    samplers (the recipe's `reference_models()`: X-VAE's `expost`, the Two-Stage VAE's `stage1`, the
    AVAE's `normal`)."""
    cfg, info, recipe, ck = load_recipe(run_dir, device)
    samplers = recipe.reference_models()
    if name not in samplers:
        why = ("; it declares it, but its checkpoint cannot provide it yet" if name in recipe.reference_samplers
               else "")
        raise CheckpointError(f"run {run_dir!r} ({cfg.model}, at stage {ck['stage']!r}) has no {name!r} reference "
                              f"sampler{why}; it has {', '.join(samplers) or 'none'}")
    return cfg, info, samplers[name], ck


def read_summary(run: str) -> Dict[str, Any]:
    """The summary.json of a run folder (or of the folder of a checkpoint file); {} when it has none,
    or an unreadable one."""
    folder = run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run))
    try:
        with open(os.path.join(folder, "summary.json"), encoding="utf-8") as f:
            s = json.load(f)
        return s if isinstance(s, dict) else {}
    except (OSError, ValueError):
        return {}
