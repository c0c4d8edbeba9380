"""The trainer (it drives every model's recipe, models/protocol.py): loop, checkpoints, metrics and figures."""
from .checkpoint import CHECKPOINT, atomic_save, load_checkpoint
from .trainer import RunResult, Trainer, load_expost, load_recipe, load_run, pick_device, train

__all__ = ["Trainer", "RunResult", "train", "load_run", "load_recipe", "load_expost", "pick_device",
           "atomic_save", "load_checkpoint", "CHECKPOINT"]
