"""The trainer (it drives every model's recipe, models/protocol.py): loop, checkpoints, metrics and figures."""
from ..run_loading import load_reference, load_recipe, load_run
from .checkpoint import CHECKPOINT, atomic_save, load_checkpoint
from .trainer import RunResult, Trainer, pick_device, train

__all__ = ["Trainer", "RunResult", "train", "load_run", "load_recipe", "load_reference", "pick_device",
           "atomic_save", "load_checkpoint", "CHECKPOINT"]
