"""How a run ran (issue 26, item 18): a two-rank torchrun run and a one-process run used to write the
same summary. Recorded in summary.json as `provenance` and shown by `evaluate` and `compare`
(evaluation/report.py's provenance_line)."""
from __future__ import annotations

import os
import platform
import subprocess
from typing import Any, Dict, Optional

import torch


def source_revision() -> Optional[str]:
    """The git commit of the source tree this package was imported from (with `+dirty` when it has
    uncommitted changes), or None for an installed copy outside a checkout."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    root = os.path.dirname(here)
    if not os.path.exists(os.path.join(root, ".git")):
        return None
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(world, device: torch.device, precision: str, channels_last: bool) -> Dict[str, Any]:
    from .. import __version__
    name = None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    backend = None
    if world.distributed:
        import torch.distributed as dist
        backend = dist.get_backend() if dist.is_initialized() else None
    return {
        "world_size": world.size, "backend": backend, "device": str(device),
        "device_name": name, "threads": torch.get_num_threads(), "precision": precision,
        "channels_last": channels_last, "torch": torch.__version__, "xvae_fast": __version__,
        "source_revision": source_revision(), "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
