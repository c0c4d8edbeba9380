"""Errors the trainer reports to users. The command-line tools print their message (no traceback)
and exit with status 2 (1 for a non-finite loss)."""
from __future__ import annotations


class XVAEError(Exception):
    """Base class of the trainer's user-facing errors."""


class ConfigError(XVAEError, ValueError):
    """A bad flag, config-file entry or combination of them."""


class DataError(XVAEError, ValueError):
    """Missing, unreadable or malformed data."""


class CheckpointError(XVAEError, RuntimeError):
    """A missing, corrupt or mismatched checkpoint."""


class ExportError(CheckpointError):
    """A missing, corrupt or mismatched model export (config.json + model.safetensors)."""


class NonFiniteLossError(XVAEError, FloatingPointError):
    """NaN or inf in the loss (or the weights) during training; the last good checkpoint is kept."""

    def __init__(self, message: str, diagnostic: dict):
        super().__init__(message)
        self.diagnostic = diagnostic


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, carrying the run folder (and whether it holds a checkpoint to resume)."""

    def __init__(self, run_dir: str, resumable: bool):
        super().__init__(run_dir)
        self.run_dir = run_dir
        self.resumable = resumable


class DiskFullError(XVAEError):
    """No room for a file: a full device or quota, or the file size limit (RLIMIT_FSIZE). What was
    there before the write is kept (atomic_file.py)."""
