"""Data-parallel training under torchrun: the process group, this process's place in it, and the
few collectives the trainer needs (docs/distributed.md).

`torchrun --nproc_per_node=N -m xvae_fast.train ...` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK and the rendezvous address in the environment; `World.from_env` joins them (gloo on CPU,
NCCL on CUDA, one GPU per local rank). Without those variables (`python -m xvae_fast.train`) the
world is one process and every method below is free.

Rank 0 owns the run folder: it alone writes checkpoints, logs, metrics and outputs; the other ranks
read the same checkpoint when a run resumes (so with several nodes the run folder must be on storage
every node sees). Every rank starts from the same seed, so the models start equal and the RNG
streams stay in step (xvae_fast/shard.py keeps the per-row draws of a sharded batch consistent).
"""
from __future__ import annotations

import datetime
import os
from typing import Any, Optional, Tuple

import torch

from ..errors import ConfigError, XVAEError
from ..shard import Shard, split_sizes

# a rank that dies is normally reported by torchrun, which stops the others at once; this bounds
# the wait of a collective whose peer hangs without dying
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


class World:
    """The ranks of one data-parallel run (size 1: a single process)."""

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0, owns_group: bool = False,
                 shard_group=None):
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.owns_group = owns_group
        self.shard_group = shard_group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def from_env(cls, device: str) -> "World":
        """Join the process group torchrun described in the environment (one process: World())."""
        if not launched_by_torchrun():
            return cls()
        import torch.distributed as dist
        try:
            rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"WORLD_SIZE is set but the torchrun environment is incomplete ({exc}); "
                              "start data-parallel runs with torchrun") from exc
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if cuda:
            if not torch.cuda.is_available():
                raise ConfigError(f"--device {device} under torchrun needs CUDA, but this torch has no "
                                  "usable CUDA device; use --device cpu (gloo)")
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} "
                                  "visible; start at most that many processes per node")
            torch.cuda.set_device(local_rank)
        backend = "nccl" if cuda else "gloo"
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
        elif dist.get_backend() != backend:
            raise ConfigError(f"the process group uses {dist.get_backend()}, but --device {device} "
                              f"needs {backend}")
        # the shard gathers run inside autograd while DDP reduces gradients: their own group keeps
        # the two streams of collectives from interleaving
        group = dist.new_group(backend=backend)
        return cls(rank, size, local_rank, owns, group)

    def device_name(self, device: str) -> str:
        """--device for this rank: CUDA ranks take the GPU of their local rank."""
        if self.distributed and (device in ("cuda", "auto") and torch.cuda.is_available()):
            return f"cuda:{self.local_rank}"
        if self.distributed and device.startswith("cuda:"):
            raise ConfigError(f"--device {device} names one GPU; under torchrun use --device cuda and "
                              "each rank takes the GPU of its LOCAL_RANK")
        return device

    # -- the batch ----------------------------------------------------------------------------------
    def shard(self, rows: int) -> Shard:
        return Shard(self.rank, split_sizes(rows, self.size), self.shard_group)

    def local_slice(self, idx: torch.Tensor) -> Tuple[torch.Tensor, Shard]:
        s = self.shard(int(idx.numel()))
        return idx[s.start:s.start + s.rows], s

    # -- collectives --------------------------------------------------------------------------------
    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            import torch.distributed as dist
            dist.all_reduce(t)
        return t

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (pickled)."""
        if not self.distributed:
            return obj
        import torch.distributed as dist
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist
            dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_group = False


def main_decides(world: World, fn, *args) -> Any:
    """Run fn on rank 0 and give its result to every rank; an error there is raised on every rank
    (the same type when it is one of ours), so no rank waits for a peer that has already failed."""
    if not world.distributed:
        return fn(*args)
    outcome: Optional[Tuple[str, Any]] = None
    error: Optional[BaseException] = None
    if world.is_main:
        try:
            outcome = ("ok", fn(*args))
        except Exception as exc:                    # noqa: BLE001 (re-raised below on every rank)
            error = exc
            outcome = ("ours" if isinstance(exc, XVAEError) else "other", str(exc))
    kind, value = world.broadcast(outcome)
    if error is not None:
        raise error
    if kind == "ours":
        raise ConfigError(value)
    if kind == "other":
        raise RuntimeError(f"rank 0 failed: {value}")
    return value
