"""Named optimizers and schedulers that a train stage checkpoints as one (S-IntroVAE's encoder,
decoder and prior, each with its own Adam and MultiStepLR, SPEC-related 1.1).

The trainer treats an `OptimizerSet` like one optimizer: `param_groups` (for the logged learning rate,
gradient clipping and the finite-weights check), `zero_grad`, `step`, `state_dict` and
`load_state_dict`. A recipe whose step is several updates (`ModelRecipe.train_updates`) names the
member each update steps. A `SchedulerSet` steps every member scheduler once per training step.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch


class OptimizerSet:
    """Several named optimizers over disjoint parameters, stepped together or one at a time."""

    def __init__(self, optimizers: Dict[str, torch.optim.Optimizer]):
        if not optimizers:
            raise ValueError("an OptimizerSet needs at least one optimizer")
        self.optimizers = dict(optimizers)

    def __getitem__(self, name: str) -> torch.optim.Optimizer:
        try:
            return self.optimizers[name]
        except KeyError:
            raise KeyError(f"no optimizer {name!r} in this set; it has {', '.join(self.optimizers)}") from None

    def __contains__(self, name: str) -> bool:
        return name in self.optimizers

    def names(self) -> List[str]:
        return list(self.optimizers)

    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        return [g for o in self.optimizers.values() for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers.values():
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers.values():
            o.step()

    def state_dict(self) -> Dict[str, Any]:
        return {"optimizer_set": {k: o.state_dict() for k, o in self.optimizers.items()}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        inner = state.get("optimizer_set") if isinstance(state, dict) else None
        if not isinstance(inner, dict) or set(inner) != set(self.optimizers):
            got = sorted(inner) if isinstance(inner, dict) else type(state).__name__
            raise ValueError(f"expected the states of optimizers {sorted(self.optimizers)}, got {got}")
        for k, o in self.optimizers.items():
            o.load_state_dict(inner[k])


class SchedulerSet:
    """Named learning-rate schedulers, all stepped once per training step."""

    def __init__(self, schedulers: Dict[str, Any]):
        self.schedulers = dict(schedulers)

    def step(self) -> None:
        for s in self.schedulers.values():
            s.step()

    def state_dict(self) -> Dict[str, Any]:
        return {"scheduler_set": {k: s.state_dict() for k, s in self.schedulers.items()}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        inner = state.get("scheduler_set") if isinstance(state, dict) else None
        if not isinstance(inner, dict) or set(inner) != set(self.schedulers):
            got = sorted(inner) if isinstance(inner, dict) else type(state).__name__
            raise ValueError(f"expected the states of schedulers {sorted(self.schedulers)}, got {got}")
        for k, s in self.schedulers.items():
            s.load_state_dict(inner[k])
