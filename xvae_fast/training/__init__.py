"""The two-stage trainer: loop, checkpoints, metrics and figures."""
from .checkpoint import CHECKPOINT, atomic_save, load_checkpoint
from .trainer import RunResult, Trainer, load_expost, load_run, pick_device, train

__all__ = ["Trainer", "RunResult", "train", "load_run", "load_expost", "pick_device", "atomic_save",
           "load_checkpoint", "CHECKPOINT"]
