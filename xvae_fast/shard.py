"""The rows of a global batch that this process holds under data-parallel training (torchrun).

With N ranks, the trainer splits each global batch of B rows into N contiguous shards and activates
this rank's `Shard` around the loss. Models use three helpers so that the N ranks together compute
exactly what one process computes on the whole batch (docs/distributed.md):

- `randn_rows` / `rand_rows`: per-row noise. Every rank draws the noise of the whole global batch
  from the shared RNG stream and keeps its own rows, so row i gets the noise one process would give it
  and every rank's RNG stays in step (the draw is B x K numbers, negligible beside the nets).
- `gather_rows(...)`: a differentiable all-gather of per-row tensors (the posterior statistics) into
  the global batch, for the terms that couple rows (X-VAE's batch responsibilities pi_q, the Eq. 18
  categorical KL) and for the fused ops that draw their noise inside the kernel; `local_rows` takes
  this rank's rows back out. Its backward sums every rank's gradient for this rank's rows.
- `global_term(t)`: marks a loss term computed on gathered rows (the same value on every rank).

The trainer multiplies a rank's loss by N b / B (b its rows) before DistributedDataParallel averages
the gradients, which turns each rank's batch means into the global batch mean; `global_term` undoes
that factor for the terms that already are global. Without an active shard (one process, evaluation,
sampling) every helper is the identity or the plain draw.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Optional, Sequence, Tuple

import torch

_ACTIVE: Optional["Shard"] = None


@dataclasses.dataclass(frozen=True)
class Shard:
    """This rank's rows [start, start + rows) of a global batch split into `sizes` (one per rank)."""
    rank: int
    sizes: Tuple[int, ...]
    group: Any = None          # the torch.distributed process group of the collectives

    @property
    def world(self) -> int:
        return len(self.sizes)

    @property
    def rows(self) -> int:
        return self.sizes[self.rank]

    @property
    def start(self) -> int:
        return sum(self.sizes[:self.rank])

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def loss_scale(self) -> float:
        """N b / B: the factor that makes DDP's gradient average the global batch mean."""
        return self.world * self.rows / self.total


def split_sizes(total: int, world: int) -> Tuple[int, ...]:
    """Contiguous shard sizes of a batch of `total` rows over `world` ranks (the first ones get the
    remainder), as torch.tensor_split does."""
    q, r = divmod(total, world)
    return tuple(q + (1 if i < r else 0) for i in range(world))


@contextlib.contextmanager
def active(shard: Optional[Shard]):
    """Make `shard` the current one for the duration (None: no sharding)."""
    global _ACTIVE
    before, _ACTIVE = _ACTIVE, shard
    try:
        yield shard
    finally:
        _ACTIVE = before


def current() -> Optional[Shard]:
    return _ACTIVE


def _sharded() -> Optional[Shard]:
    s = _ACTIVE
    return s if s is not None and s.world > 1 else None


def _draw_rows(draw, shape: Sequence[int], dtype, device, generator) -> torch.Tensor:
    shape = tuple(int(v) for v in shape)
    s = _sharded()
    if s is None or generator is not None:
        return draw(shape, dtype=dtype, device=device, generator=generator)
    if not shape or shape[0] != s.rows:
        raise ValueError(f"a per-row draw under data-parallel training needs {s.rows} rows (this "
                         f"rank's shard), got shape {shape}")
    full = draw((s.total,) + shape[1:], dtype=dtype, device=device)
    return full[s.start:s.start + s.rows]


def randn_rows(shape: Sequence[int], dtype=None, device=None, generator=None) -> torch.Tensor:
    """torch.randn(shape) whose row i is the global batch's row start + i under an active shard."""
    return _draw_rows(torch.randn, shape, dtype, device, generator)


def rand_rows(shape: Sequence[int], dtype=None, device=None, generator=None) -> torch.Tensor:
    """torch.rand(shape), row-consistent under an active shard like `randn_rows`."""
    return _draw_rows(torch.rand, shape, dtype, device, generator)


def randint_rows(high: int, shape: Sequence[int], device=None, generator=None) -> torch.Tensor:
    """torch.randint(0, high, shape), row-consistent under an active shard like `randn_rows`."""
    def draw(size, dtype=None, device=None, generator=None):
        return torch.randint(0, high, size, device=device, generator=generator)
    return _draw_rows(draw, shape, None, device, generator)


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: torch.Tensor, shard: Shard):
        import torch.distributed as dist
        ctx.shard = shard
        width = max(shard.sizes)       # all_gather needs equal shapes: pad to the largest shard
        padded = t.new_zeros((width,) + tuple(t.shape[1:]))
        padded[:t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in shard.sizes]
        dist.all_gather(parts, padded, group=shard.group)
        return torch.cat([p[:n] for p, n in zip(parts, shard.sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        import torch.distributed as dist
        s = ctx.shard
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=s.group)     # every rank's gradient for every row, summed
        return grad[s.start:s.start + s.rows], None


def gather_rows(*tensors: Optional[torch.Tensor]):
    """The global batch of each per-row tensor (None passes through); a tuple when given several."""
    s = _sharded()
    out = tuple(t if (t is None or s is None) else _GatherRows.apply(t.contiguous(), s) for t in tensors)
    return out[0] if len(out) == 1 else out


def local_rows(t: torch.Tensor) -> torch.Tensor:
    """This rank's rows of a global-batch tensor (the identity without sharding)."""
    s = _sharded()
    return t if s is None else t[s.start:s.start + s.rows]


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: torch.Tensor, factor: float):
        ctx.factor = factor
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


def global_term(t: torch.Tensor) -> torch.Tensor:
    """Mark a term computed on gathered rows: its value is unchanged, its gradient is not scaled by
    the trainer's per-rank N b / B."""
    s = _sharded()
    return t if s is None else _ScaleGrad.apply(t, 1.0 / s.loss_scale)
