"""The model protocol: what the trainer needs of a model family, and nothing else (docs/models.md).

A model family is one `ModelRecipe` subclass, registered under its `--model` name. The trainer
builds it from the resolved config and the data, then drives it stage by stage:

- `stages()`: the ordered `Stage`s. A `train` stage runs epochs of optimiser steps over a dataset,
  with its own optimiser and scheduler; a `fit` stage runs once, without gradients (a prior fit, the
  freezing of stage-1 posteriors). The checkpoint records the stage a run is in by its name.
- `modules`: every module whose weights the checkpoint holds, by name (None: not part of this model);
  `generative` is the one `sample`, `evaluate` and the outputs use (`generate`, `forward`, `likelihood`).
- `stage_parameters(stage)` / `make_optimizer(stage)`: what one stage optimises, and how.
- `stage_data(stage, split, data)`: what a train stage iterates over (the data by default; the
  Two-Stage VAE's second stage iterates over the frozen stage-1 posteriors).
- `loss(stage, batch)`: one step's loss terms (a dict with "loss" and the stage's `terms`).
- `fit(stage, trainer)`: a fit stage's work; `trainer.encode(fn, split)` maps a function over a split.
- `state()` / `load_state(ck, path)`: the extra checkpoint entries (a fitted prior, frozen codes...).
- `summary()`: extra entries for summary.json.
- epoch and step hooks (`begin_epoch`, `before_step`, `end_epoch`): work a stage does around its
  epochs and steps (AVAE redraws its KDE subset per epoch and re-encodes the centres every k_b steps);
- `train_updates(stage, batch)`: a step made of several updates, each by its own optimizer of an
  `OptimizerSet` (S-IntroVAE's encoder, then decoder-and-prior update); `make_scheduler` gives such a
  stage its own schedulers.
- class attributes: `name`, `title`, `Options` (the model's options: a `ModelOptions` dataclass of
  declared fields, options.py; the resolved instance is `cfg.model_options`, also `self.opts`), and the
  capabilities below (`pretrains_autoencoder`, `likelihoods`, `dataset_defaults`, ...).
Random draws inside `loss` come from the global torch RNG, which the trainer seeds and checkpoints,
so a resumed run continues exactly.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, Iterable, Iterator, List, Optional, Tuple, Type

import torch
from torch import nn

from ..options import ModelOptions, NoOptions
from .generative import GenerativeModule

TERMS_VAE = ("loss", "recon", "kl", "kl_cat", "kl_gauss")
STAGE_KINDS = ("train", "fit")


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str                       # recorded in the checkpoint and in the history rows
    kind: str                       # "train" or "fit"
    label: str                      # for logs and error messages ("AE", "VAE", "stage 2", ...)
    epochs: int = 0                 # train stages
    terms: Tuple[str, ...] = ()     # train stages: the loss terms logged per epoch ("loss" first)
    module: str = "vae"             # the module put in train / eval mode for the stage

    def __post_init__(self):
        if self.kind not in STAGE_KINDS:
            raise ValueError(f"stage kind must be one of {STAGE_KINDS}, got {self.kind!r}")


@dataclasses.dataclass
class Update:
    """One update of a multi-update training step (`ModelRecipe.train_updates`): the trainer checks
    `terms` are finite, backpropagates `loss` and steps the members `optimizers` of the stage's
    OptimizerSet. `terms` are the values logged for the step (merged over its updates)."""
    optimizers: Tuple[str, ...]
    loss: torch.Tensor
    terms: Dict[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class StartAt:
    """Where a new run starts when its recipe reuses earlier work (`on_new_run`): the stage to begin
    with and the history rows of the stages it skips (X-VAE's --stage1-from)."""
    stage: str
    history: Tuple[Dict[str, Any], ...] = ()


class TensorRows:
    """An in-memory dataset of tensor rows with the interface the trainer's batching uses."""
    in_memory = True

    def __init__(self, rows: torch.Tensor):
        self.rows = rows

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def __getitem__(self, i):
        return self.rows[i]

    def get_batch(self, idx: torch.Tensor) -> torch.Tensor:
        return self.rows[idx]


class ModelRecipe:
    """Base recipe: one train stage `vae` over the data, Adam on all of the generative module's
    parameters, the module's own `loss(x)`."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    Options: ClassVar[Type[ModelOptions]] = NoOptions   # the model's own options (options.py)
    pretrains_autoencoder: ClassVar[bool] = False   # X-VAE: a deterministic stage-1 autoencoder
    learned_prior: ClassVar[bool] = False           # the prior is learned with the model (no buffers)
    likelihoods: ClassVar[Optional[Tuple[str, ...]]] = None   # the --likelihood values it takes (None: any)
    likelihood_reason: ClassVar[str] = ""
    reference_samplers: ClassVar[Tuple[str, ...]] = ()        # evaluated beside the model by default
    # per dataset kind, defaults that replace the dataset's own (latent, epochs_vae, ...) for this model
    dataset_defaults: ClassVar[Dict[str, Dict[str, Any]]] = {}
    # under torchrun: False where a step cannot be split over ranks row-exactly (the reason is shown)
    supports_distributed: ClassVar[bool] = True
    distributed_reason: ClassVar[str] = ""

    def __init__(self, cfg, info, ops=None):
        if not isinstance(cfg.model_options, self.Options):
            raise TypeError(f"the {self.name} recipe needs a resolved config (config.resolve) whose "
                            f"model_options are {self.Options.__name__}, got {type(cfg.model_options).__name__}")
        self.cfg, self.info, self.ops = cfg, info, ops
        self.opts = cfg.model_options     # the resolved Options of this model
        self.modules: Dict[str, Optional[nn.Module]] = self.build()

    # -- construction -------------------------------------------------------------------------------
    def build(self) -> Dict[str, Optional[nn.Module]]:
        raise NotImplementedError

    def likelihood(self):
        from .likelihood import build_likelihood
        return build_likelihood(self.cfg.likelihood or "mse", self.info.kind, self.cfg.gamma_min or 0.0,
                                self.cfg.image_output)

    @property
    def hidden(self):
        return self.cfg.hidden or (128, 128)

    @property
    def generative(self) -> nn.Module:
        return self.modules["vae"]

    @property
    def autoencoder(self) -> Optional[nn.Module]:
        return self.modules.get("ae")

    def to(self, device) -> "ModelRecipe":
        for m in self.modules.values():
            if m is not None:
                m.to(device)
        return self

    # -- training -----------------------------------------------------------------------------------
    def stages(self) -> List[Stage]:
        return [Stage("vae", "train", "VAE", self.cfg.epochs_vae, TERMS_VAE)]

    def stage(self, name: str) -> Stage:
        for s in self.stages():
            if s.name == name:
                return s
        raise KeyError(name)

    def stage_module(self, stage: Stage) -> nn.Module:
        return self.modules[stage.module]

    def stage_parameters(self, stage: Stage) -> Iterable[nn.Parameter]:
        return self.stage_module(stage).parameters()

    def make_optimizer(self, stage: Stage) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.stage_parameters(stage), lr=self.cfg.lr)

    def make_scheduler(self, stage: Stage, optimizer, steps_per_epoch: int):
        """The stage's learning-rate scheduler (stepped once per training step), or None to use the
        trainer's `--lr-schedule`."""
        return None

    def train_updates(self, stage: Stage, batch: torch.Tensor) -> Optional[Iterator[Update]]:
        """None: a step is one update of `loss(stage, batch)["loss"]` by the stage's optimizer.
        Otherwise an iterator of `Update`s, run in order: each is backpropagated and its optimizer
        stepped before the iterator resumes (so a later update sees the earlier one's parameters)."""
        return None

    # -- epoch and step hooks (training only; a resumed run calls begin_epoch again for its epoch) ---
    def begin_epoch(self, stage: Stage, epoch: int, trainer) -> None:
        """Before an epoch's batch order is drawn (`epoch` counts from 0 within the stage). Must be
        repeatable: a run resumed inside the epoch calls it again and must get the same data."""

    def before_step(self, stage: Stage, step: int, trainer) -> None:
        """Before each training step (`step`: the global optimizer steps taken so far)."""

    def end_epoch(self, stage: Stage, epoch: int, trainer) -> None:
        """After an epoch's last step, before its metrics are logged and its checkpoint written."""

    def stage_data(self, stage: Stage, split: str, data):
        return data.train if split == "train" else data.test

    def train_rows(self, stage: Stage, data) -> int:
        """Rows a train stage iterates per epoch, known before it runs (for its schedules): the
        training set's size by default."""
        return len(data.train)

    def loss(self, stage: Stage, batch: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.stage_module(stage).loss(batch)

    def set_step(self, step: int) -> None:
        """Step-dependent schedules (the GM-VAE temperature) as functions of the global step."""
        for m in self.modules.values():
            hook = getattr(m, "set_step", None)
            if hook is not None:
                hook(step)

    def set_total_steps(self, steps_per_epoch: int) -> None:
        for m in self.modules.values():
            hook = getattr(m, "set_total_steps", None)
            if hook is not None:
                hook(self.cfg.epochs_vae * steps_per_epoch)

    def epoch_stats(self, stage: Stage) -> Dict[str, float]:
        """Scalars logged per epoch of a train stage: the learned decoder variance, by default."""
        lik = getattr(self.stage_module(stage), "likelihood", None)
        return lik.stats() if lik is not None else {}

    def headline_stage(self) -> Stage:
        """The train stage whose objective summary.json reports as the model's (`train`, `test`)."""
        return [s for s in self.stages() if s.kind == "train"][-1]

    def loss_needs_grad(self, stage: Stage) -> bool:
        """Whether the loss differentiates inside (a gradient penalty): evaluation then keeps autograd on."""
        return False

    def fit(self, stage: Stage, trainer) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no fit stage {stage.name!r}")

    def on_new_run(self, trainer) -> Optional[StartAt]:
        """Called once when a run starts fresh (not on resume): checks that need the data, or reuse of
        another run's work (load it into the modules and return where the run starts)."""
        return None

    def check_stage_ready(self, stage: Stage) -> Optional[str]:
        """None when a train stage can run from the restored state, else why not."""
        return None

    # -- checkpoint and summary -------------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        """Extra top-level checkpoint entries. The base stores the generative module's frozen prior
        (the standard VAE's N(0, I)); None for learned priors."""
        prior = getattr(self.generative, "prior", None)
        return {"prior": prior_dict(prior) if prior is not None and not self.learned_prior else None}

    def load_state(self, ck: Dict[str, Any], path: str) -> None:
        from ..errors import CheckpointError
        from ..ops.prior import MixturePrior
        p = ck.get("prior")
        if p is not None:
            try:
                self.generative.set_prior(MixturePrior(p["weights"], p["means"], p["stds"]))
            except ValueError as exc:
                raise CheckpointError(f"checkpoint {path!r} holds an unusable prior: {exc}") from exc

    def sampling_ready(self, ck_stage: str) -> bool:
        """Whether a checkpoint at stage `ck_stage` holds a model that can sample."""
        names = [s.name for s in self.stages()]
        first = self.sampling_stage()
        order = names + ["outputs", "done"]
        return ck_stage in order and order.index(ck_stage) >= order.index(first)

    def sampling_stage(self) -> str:
        """The first stage whose checkpoint can sample (the last train stage by default)."""
        return [s.name for s in self.stages() if s.kind == "train"][-1]

    def summary(self) -> Dict[str, Any]:
        return {}

    def objective_units(self) -> str:
        """What the reported objective measures (summary.json `objective_units`)."""
        return self.generative.likelihood.units

    def reference_models(self) -> Dict[str, nn.Module]:
        """The reference samplers available from the current state, by name (GenerativeModules with
        a `reference_title`); `reference_samplers` names those the outputs, the headline and
        `evaluate` report beside the model."""
        return {}

    def available_references(self) -> Dict[str, nn.Module]:
        """The declared reference samplers (`reference_samplers`) the current state provides."""
        models = self.reference_models()
        return {name: models[name] for name in self.reference_samplers if name in models}


class ReferenceSampler(GenerativeModule):
    """A model's other sampler that `evaluate` reports beside it (`reference_models()`): the same
    network, reconstructions and likelihood, another `generate` (subclasses implement it)."""
    mode = "reference"

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def likelihood(self):
        return self.model.likelihood

    def forward(self, x, generator=None):
        return self.model(x, generator)

    def param_counts(self):
        return self.model.param_counts()

    def generate(self, n: int, alpha: float = 1.0, routing: Optional[str] = None, generator=None):
        raise NotImplementedError


def prior_dict(prior) -> Dict[str, torch.Tensor]:
    return {"weights": prior.weights.cpu(), "means": prior.means.cpu(), "stds": prior.stds.cpu()}


RECIPES: Dict[str, Type[ModelRecipe]] = {}


def register(cls: Type[ModelRecipe]) -> Type[ModelRecipe]:
    """Class decorator: make a recipe available as `--model cls.name`."""
    if not cls.name or cls.name in RECIPES:
        raise ValueError(f"a recipe needs a unique name, got {cls.name!r}")
    RECIPES[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a registered recipe (a model family registered for a while, e.g. by a test)."""
    RECIPES.pop(name, None)


def model_names() -> Tuple[str, ...]:
    """The registered models, X-VAE first (the `--model` choices)."""
    return tuple(sorted(RECIPES, key=lambda n: n != "xvae"))


def get_recipe(name: str) -> Type[ModelRecipe]:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(RECIPES)}") from None


def build_recipe(cfg, info, ops=None) -> ModelRecipe:
    return get_recipe(cfg.model)(cfg, info, ops)
