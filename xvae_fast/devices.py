"""The --device flag as a torch.device (auto, cpu, cuda, cuda:N), with errors that name the flag."""
from __future__ import annotations

import torch

from .errors import ConfigError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown --device {name!r}; use cpu, cuda, cuda:N or auto") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} asked for CUDA, but this torch has no usable CUDA "
                              f"device (torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA devices")
    elif dev.type != "cpu":
        raise ConfigError(f"unsupported --device {name!r}; use cpu, cuda, cuda:N or auto")
    elif dev.index is not None:
        raise ConfigError(f"--device {name}: the CPU takes no device index; use --device cpu (--threads "
                          "sets how many cores it uses)")
    return dev
