"""A trained model as a Python object: `xvae_fast.load(path)` reads a run folder (checkpoint.pt) or
an export (config.json + model.safetensors, export_format.py) and returns a `TrainedModel`.

It speaks data units at its boundary: inputs are examples as the dataset gives them (images in
[0, 1] (N, C, H, W), vectors (N, D) before standardisation), outputs are decoded the way `sample`
writes them (images clamped to [0, 1], vectors un-standardised). Codes are the model's latent
coordinates (N, K). The modules are in eval mode and every method runs without autograd; results
stay on the model's device. Random draws take an optional `generator` (a torch.Generator on the
model's device; the global RNG when None), so `sample(..., generator=torch.Generator().manual_seed(s))`
repeats bit for bit, also after an export is loaded in another process.

This module sits above models/ and training/; the commands (sample, export) sit on top of it.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from . import export_format
from .errors import CheckpointError, ConfigError, ExportError

INTERPOLATIONS = ("linear", "slerp")


class Posterior(NamedTuple):
    """`encode`'s result: the posterior mean (N, K) and log-variance (None for the deterministic
    encoders: the AVAE, and the stage-1 autoencoder behind the ex-post reference)."""
    mean: torch.Tensor
    logvar: Optional[torch.Tensor]


def _positive_int(v, name: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


class TrainedModel:
    """A trained model of any family (`xvae_fast.load`); see the module docstring."""

    def __init__(self, cfg, info, recipe, stage: str, source: Dict[str, Any], device: torch.device):
        self.config, self.info, self.stage, self.source = cfg, info, stage, source
        self.device = device
        self._recipe = recipe
        self._references = dict(recipe.reference_models())
        self._mean = None if info.mean is None else torch.as_tensor(info.mean).to(device)
        self._std = None if info.std is None else torch.as_tensor(info.std).to(device)

    # -- what it is ---------------------------------------------------------------------------------
    @property
    def network(self) -> nn.Module:
        """The generative module `sample`, `evaluate` and the trainer's outputs use."""
        return self._recipe.generative

    @property
    def name(self) -> str:
        """The model family (`--model`)."""
        return self.config.model

    @property
    def title(self) -> str:
        return getattr(self._recipe, "display_name", None) or self._recipe.title

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.info.shape)

    @property
    def latent(self) -> int:
        """K: the size of the codes `decode` takes."""
        return int(self.network.latent)

    @property
    def references(self) -> Tuple[str, ...]:
        """The names of the reference samplers (`sample(reference=...)`): X-VAE's `expost`, the
        Two-Stage VAE's `stage1`, the AVAE's `normal`; empty for the other families."""
        return tuple(self._references)

    @property
    def interpolation(self) -> str:
        """How `interpolate` moves between codes by default: `slerp` for the UAE family (its own
        interpolation), `linear` for the others."""
        return getattr(self.network, "interpolation", "linear")

    def __repr__(self) -> str:
        return (f"TrainedModel({self.title}, data {self.info.name} {self.shape}, latent {self.latent}, "
                f"device {self.device}, from {self.source.get('path')!r})")

    # -- the boundary -------------------------------------------------------------------------------
    def _examples(self, x, name: str) -> torch.Tensor:
        """Data-unit examples to model space on the model's device."""
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise ConfigError(f"{name} must be a tensor or array of shape (N, {', '.join(map(str, self.shape))}), "
                              f"got {type(x).__name__}")
        if x.dim() != 1 + len(self.shape) or tuple(x.shape[1:]) != self.shape or x.shape[0] < 1:
            raise ConfigError(f"{name} must have shape (N, {', '.join(map(str, self.shape))}) for this "
                              f"model's data ({self.info.name}), got {tuple(x.shape)}")
        if x.is_complex() or x.dtype == torch.bool:
            raise ConfigError(f"{name} must hold real numbers, got {x.dtype}")
        x = x.to(self.device, torch.float32)
        if not bool(torch.isfinite(x).all()):
            raise ConfigError(f"{name} contains NaN or inf")
        if self._mean is not None:
            x = (x - self._mean) / self._std        # the training data's standardisation
        return x

    def _codes(self, z, name: str) -> torch.Tensor:
        if isinstance(z, np.ndarray):
            z = torch.from_numpy(z)
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != self.latent or z.shape[0] < 1:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ConfigError(f"{name} must be codes of shape (N, {self.latent}), got {got}")
        return z.to(self.device, torch.float32)

    def _data_units(self, x: torch.Tensor) -> torch.Tensor:
        """Model outputs in data units, as DataInfo.to_data_space (the same operations), on device."""
        x = x.detach().float()
        if self.info.kind == "image":
            return x.clamp(0.0, 1.0)
        if self._mean is not None:
            x = x * self._std + self._mean
        return x

    def _check_generator(self, generator) -> None:
        if generator is None:
            return
        if not isinstance(generator, torch.Generator):
            raise ConfigError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != self.device.type:
            raise ConfigError(f"generator is on {generator.device} but the model is on {self.device}; "
                              f"make it with torch.Generator(device=model.device)")

    # -- sampling -----------------------------------------------------------------------------------
    def sampler(self, reference: Optional[str] = None) -> nn.Module:
        """The module that draws samples (`generate`, `likelihood`): the model's own, or the named
        reference sampler."""
        if reference is None:
            return self.network
        if not isinstance(reference, str) or reference not in self._references:
            have = ", ".join(self._references) or "none"
            raise ConfigError(f"reference {reference!r}: a {self.name} model has no such reference sampler "
                              f"(it has: {have}; X-VAE has expost, twostage stage1, avae normal)")
        return self._references[reference]

    @torch.no_grad()
    def sample(self, n: int, alpha: float = 1.0, routing: Optional[str] = None, generator=None,
               reference: Optional[str] = None, decoder_noise: bool = False) -> torch.Tensor:
        """n decoded samples (n, *shape) in data units. `alpha` scales the prior's standard deviations
        (< 1 fidelity, > 1 diversity); `routing` (`per-row` or `per-coordinate`, X-VAE's mixture
        prior) defaults to the run's; `reference` draws from a reference sampler instead;
        `decoder_noise` adds the likelihood's noise (x ~ p(x | z) rather than its mean)."""
        from .ops.functional import ROUTINGS
        n = _positive_int(n, "n")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < math.inf:
            raise ConfigError(f"alpha must be a positive finite number, got {alpha!r}")
        if routing is not None and routing not in ROUTINGS:
            raise ConfigError(f"routing must be one of {', '.join(ROUTINGS)} (or None: the run's), got {routing!r}")
        self._check_generator(generator)
        net = self.sampler(reference)
        x = net.generate(n, float(alpha), routing, generator=generator)
        if decoder_noise:
            x = net.likelihood.draw(x, generator=generator)
        return self._data_units(x)

    # -- encoder and decoder ------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor) -> Posterior:
        out = self.network.encode(x)
        if isinstance(out, tuple):              # (logits or None, mean, logvar)
            _, mu, logvar = out
            return Posterior(mu.float(), None if logvar is None else logvar.float())
        return Posterior(out.float(), None)      # a deterministic encoder: the code itself

    @torch.no_grad()
    def encode(self, x) -> Posterior:
        """The posterior q(z | x) of examples x (N, *shape): Posterior(mean, logvar), each (N, K)."""
        return self._encode(self._examples(x, "x"))

    @torch.no_grad()
    def decode(self, z) -> torch.Tensor:
        """Codes z (N, K) decoded to the mean of p(x | z), in data units (N, *shape)."""
        return self._data_units(self.network.decode(self._codes(z, "z")))

    @torch.no_grad()
    def reconstruct(self, x, mean: bool = False, generator=None) -> torch.Tensor:
        """Reconstructions of x in data units: the model's own (its forward pass, as `evaluate`
        measures them: a code drawn from q(z | x) for the VAEs), or with mean=True the decoded
        posterior mean (deterministic)."""
        xm = self._examples(x, "x")
        if mean:
            return self._data_units(self.network.decode(self._encode(xm).mean))
        self._check_generator(generator)
        return self._data_units(self.network(xm, generator)["xhat"])

    @torch.no_grad()
    def interpolate(self, x0, x1, steps: int = 8, method: Optional[str] = None,
                    return_codes: bool = False):
        """Decoded points (N, steps, *shape) on the path between the posterior means of x0[i] and
        x1[i]: t = 0, 1/(steps-1), ..., 1, so the first and last codes are the inputs' own. `method`:
        `linear`, or `slerp` (spherical, the UAE papers'); default: the model's (`interpolation`).
        With return_codes also the codes (N, steps, K)."""
        steps = _positive_int(steps, "steps", 2)
        method = self.interpolation if method is None else method
        if method not in INTERPOLATIONS:
            raise ConfigError(f"method must be one of {', '.join(INTERPOLATIONS)}, got {method!r}")
        a_x, b_x = self._examples(x0, "x0"), self._examples(x1, "x1")
        if a_x.shape != b_x.shape:
            raise ConfigError(f"x0 and x1 must hold as many examples, got {a_x.shape[0]} and {b_x.shape[0]}")
        a, b = self._encode(a_x).mean, self._encode(b_x).mean
        ts = [i / (steps - 1) for i in range(steps)]     # exactly 0.0 and 1.0 at the ends
        if method == "slerp":
            from .models.uae import UnscentedAE
            path = [UnscentedAE.slerp(a, b, t) for t in ts]
        else:
            path = [(1 - t) * a + t * b for t in ts]
        codes = torch.stack(path, 1)
        n = codes.shape[0]
        x = self._data_units(self.network.decode(codes.reshape(n * steps, -1)))
        x = x.reshape((n, steps) + self.shape)
        return (x, codes) if return_codes else x

    # -- density ------------------------------------------------------------------------------------
    @torch.no_grad()
    def log_likelihood(self, x, k: int = 500, chunk: Optional[int] = None, generator=None) -> torch.Tensor:
        """log p(x) per example (N,) float64, in nats of the data units, by importance sampling with k
        draws of q(z | x) (the estimator of `evaluate --nll`, evaluation/nll.py; the papers use
        k = 5000). Models without a density (an `mse` likelihood, a deterministic encoder) raise the
        error `evaluate --nll` gives."""
        from .evaluation.nll import check_nll_supported, importance_sampled_nll
        check_nll_supported(self.network)
        k = _positive_int(k, "k")
        if chunk is not None:
            chunk = _positive_int(chunk, "chunk")
        self._check_generator(generator)
        xm = self._examples(x, "x")
        ll = -importance_sampled_nll(self.network, xm, k, chunk=chunk, generator=generator)
        if self._std is not None:
            # the density of the standardised vectors, carried to the data units (the Jacobian)
            ll = ll - torch.log(self._std.double()).sum()
        return ll

    # -- export -------------------------------------------------------------------------------------
    def save(self, directory: str, overwrite: bool = False) -> str:
        """Write the portable export (config.json + model.safetensors) to `directory`; returns its
        absolute path. `xvae_fast.load(directory)` reads it on any machine and device."""
        r = self._recipe
        states = {name: (None if m is None else m.state_dict()) for name, m in r.modules.items()}
        source = {k: v for k, v in self.source.items() if k in ("path", "step", "kind")}
        if self.source.get("kind") == "export":     # re-exported: keep where the weights came from
            source = dict(self.source.get("from") or {}, reexported_from=self.source.get("path"))
        return export_format.write(directory, cfg=self.config, info=self.info, stage=self.stage,
                                   prior=r.state().get("prior"), states=states, source=source,
                                   overwrite=overwrite, flag="directory")


# -- loading ----------------------------------------------------------------------------------------
def _load_export(folder: str, device: str) -> TrainedModel:
    from .devices import pick_device
    from .models import build_recipe, get_ops
    ex = export_format.read(folder)
    dev = pick_device(device)
    try:
        recipe = build_recipe(ex.cfg, ex.info, get_ops(device=dev))
    except (ValueError, TypeError, KeyError) as exc:
        raise ExportError(f"{ex.config_path!r} describes a model this xvae_fast cannot build: {exc}") from None
    if not recipe.sampling_ready(ex.stage):
        raise ExportError(f"{ex.config_path!r}: stage {ex.stage!r} is before the stage a {ex.cfg.model} "
                          f"model samples from ({recipe.sampling_stage()!r})")
    if ex.prior is not None:
        try:
            recipe.load_state({"prior": ex.prior}, ex.config_path)
        except CheckpointError as exc:
            raise ExportError(str(exc).replace("checkpoint ", "", 1)) from None
    unknown = [n for n, sd in ex.states.items() if sd is not None and n not in recipe.modules]
    if unknown:
        raise ExportError(f"{ex.weights_path!r} holds weights of module(s) {', '.join(unknown)}, which a "
                          f"{ex.cfg.model} model does not have")
    for name, module in recipe.modules.items():
        if module is not None:
            export_format.restore(module, ex.states.get(name), name, ex.weights_path)
        elif ex.states.get(name) is not None:
            raise ExportError(f"{ex.weights_path!r} holds weights of module {name!r}, which a "
                              f"{ex.cfg.model} model does not have")
    prior = getattr(recipe.generative, "prior", None)
    if ex.prior is not None and prior is not None and not all(
            torch.equal(getattr(prior, k).cpu(), ex.prior[k].to(getattr(prior, k).dtype)) for k in ex.prior):
        raise ExportError(f"{ex.config_path!r} and {ex.weights_path!r} disagree about the prior; "
                          "export the run again")
    recipe.to(dev)
    for m in recipe.modules.values():
        if m is not None:
            m.eval()
    source = {"kind": "export", "path": ex.folder, "from": ex.source}
    return TrainedModel(ex.cfg, ex.info, recipe, ex.stage, source, dev)


def _load_run(run: str, device: str) -> TrainedModel:
    from .devices import pick_device
    from .run_loading import load_recipe
    cfg, info, recipe, ck = load_recipe(run, device)
    source = {"kind": "run", "path": os.path.abspath(run), "step": int(ck["step"])}
    return TrainedModel(cfg, info, recipe, ck["stage"], source, pick_device(device))


def load(path: Union[str, "os.PathLike[str]"], device: str = "cpu") -> TrainedModel:
    """A trained model from a run folder (or its checkpoint.pt) or an export folder (or its
    config.json), on `device` (cpu, cuda, cuda:N or auto), in eval mode."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"path must be a run folder or an export folder, got {type(path).__name__}")
    path = os.fspath(path)
    if os.path.isfile(path) and os.path.basename(path) in (export_format.CONFIG, export_format.WEIGHTS):
        path = os.path.dirname(os.path.abspath(path))
    if export_format.is_export(path):
        return _load_export(path, device)
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "checkpoint.pt")):
        raise CheckpointError(f"{path!r} has no checkpoint.pt (a run folder, written by python -m "
                              f"xvae_fast.train) and no {export_format.CONFIG} + {export_format.WEIGHTS} "
                              "(an export, written by python -m xvae_fast.export)")
    return _load_run(path, device)      # a missing path: the checkpoint loader says so
