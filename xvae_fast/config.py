"""The trainer's configuration: one dataclass, loaded from defaults, a YAML/JSON file and flags.

Precedence: built-in defaults < per-dataset defaults < config file (`--config`) < command-line flags.
`resolve()` fills every `None` from the dataset's defaults and validates, so the config a run saves
(`config.yaml` in the run folder) is complete and can be passed back with `--config` to repeat it.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Union

from .data.spec import DEFAULTS, parse_dataset_spec
from .errors import ConfigError
from .plans import PRESETS, Plan
from .functional import ROUTINGS
from .models.likelihood import LIKELIHOODS
from .models.vae import KL_OBJECTIVES

MODELS = ("xvae", "vae", "vamp", "hierarchical", "mog", "gmvae")
# The paper's baselines (Section 3, Tables 1-4): trained end to end with a learned or fixed prior, no
# stage 1 and no prior fit (see docs/baselines.md).
BASELINES = ("vae", "vamp", "hierarchical", "mog", "gmvae")
LEARNED_PRIOR_MODELS = ("vamp", "hierarchical", "mog", "gmvae")
GUMBEL_ANNEAL = ("exp", "linear", "none")
# Per-dataset defaults of the baselines' sizes. VampPrior pseudo-inputs: paper Table 5 (MNIST 200,
# CelebA 32); the bundled digits (1437 training images) get 50 and the 2-D clusters 10. Mixture
# components of the MoG prior and clusters of the GM-VAE: 10 (paper Table 4's prior counts, 1.3k on
# MNIST and 5.1k on CelebA, are 10 components), 3 on the three-mode clusters.
BASELINE_DEFAULTS = {
    "digits": dict(pseudo_inputs=50, mog_components=10, gmvae_clusters=10),
    "clusters": dict(pseudo_inputs=10, mog_components=3, gmvae_clusters=3),
    "mnist": dict(pseudo_inputs=200, mog_components=10, gmvae_clusters=10),
    "celeba": dict(pseudo_inputs=32, mog_components=10, gmvae_clusters=10),
    "images": dict(pseudo_inputs=32, mog_components=10, gmvae_clusters=10),
    "npy": dict(pseudo_inputs=50, mog_components=10, gmvae_clusters=10),
}
# which model uses which size option (the others are set to None when resolved)
BASELINE_OPTIONS = {"pseudo_inputs": "vamp", "mog_components": "mog", "gmvae_clusters": "gmvae",
                    "hier_top": "hierarchical"}
PLAN_NAMES = ("single",) + PRESETS
STAGE2_INITS = ("ae", "random")
METHOD_PRESETS = ("default", "paper")
# The stage-2 method choices (SPEC Revision 2). `paper` is the paper read literally (Eq. 18, plan
# `full`, a randomly initialised stage 2, Eq. 20's per-coordinate generation, squared error); `default`
# is the library's, chosen by the measurements in docs/choosing-defaults.md.
METHOD_CHOICES = {
    "paper": dict(plan="full", kl="paper", stage2_init="random", routing="per-coordinate",
                  likelihood="mse"),
    "default": dict(plan="matched", kl="tight", stage2_init="ae", routing="per-row", likelihood=None),
}
# --preset default's likelihood per data kind (docs/choosing-defaults.md)
DEFAULT_LIKELIHOOD = {"digits": "bernoulli", "mnist": "bernoulli", "celeba": "gaussian",
                      "images": "gaussian", "clusters": "gaussian", "npy": "gaussian"}
# What a run saved before these options existed used (the paper's readings): filled in when an older
# checkpoint's config is read, so such runs still resume and sample.
LEGACY_VALUES = dict(preset="paper", kl="paper", stage2_init="random", routing="per-coordinate",
                     likelihood="mse", gamma_min=0.0)
PRIOR_FITS = ("auto", "em", "single")
AMP = ("none", "bf16")
SCHEDULES = ("none", "cosine")

# Keys that may differ between a checkpoint's config and the config given with --resume.
RUNTIME_KEYS = ("device", "progress", "tensorboard", "num_workers", "stop_after", "checkpoint_every",
                "resume", "config", "overwrite", "out", "threads")


@dataclasses.dataclass
class TrainConfig:
    # what to train
    dataset: str = "digits"
    model: str = "xvae"
    preset: str = "default"                  # default (measured) or paper: fills the five below
    plan: Union[str, Dict[str, Any], None] = None
    latent: Optional[int] = None
    # stage-2 method (SPEC Revision 2); None: from --preset (each key is recorded only where it applies)
    kl: Optional[str] = None                 # xvae mixture plans: paper | tight | mixture
    stage2_init: Optional[str] = None        # xvae: ae | random
    routing: Optional[str] = None            # xvae mixture plans: per-row | per-coordinate (generation)
    likelihood: Optional[str] = None         # every model: mse | bernoulli | gaussian
    gamma_min: float = 0.0                   # gaussian likelihood: floor of the learned variance
    # optimisation (paper Table 5: batch 128, Adam 1e-3, seed 42)
    epochs_ae: Optional[int] = None
    epochs_vae: Optional[int] = None
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "none"
    grad_clip: float = 0.0
    seed: int = 42
    # data
    split_seed: int = 0
    test_fraction: float = 0.2
    limit: Optional[int] = None
    image_size: Optional[int] = None
    channels: Optional[int] = None
    standardize: Optional[bool] = None
    hidden: Optional[List[int]] = None
    npz_key: Optional[str] = None
    download: bool = False
    # baselines (docs/baselines.md); each option is used by one --model only
    pseudo_inputs: Optional[int] = None      # vamp: number of learned pseudo-inputs
    mog_components: Optional[int] = None     # mog: components of the learned mixture prior
    gmvae_clusters: Optional[int] = None     # gmvae: values of the discrete cluster variable
    hier_top: Optional[int] = None           # hierarchical: size of the top latent z2 (default K // 2)
    hier_hidden: int = 256                   # hierarchical: hidden width of the conditional prior
    gumbel_tau_start: float = 1.0            # gmvae: Gumbel-Softmax temperature at step 0
    gumbel_tau_end: float = 0.5              # gmvae: temperature after the anneal
    gumbel_anneal: str = "exp"               # gmvae: exp, linear or none
    gumbel_anneal_steps: int = 0             # gmvae: steps of the anneal (0: the whole training)
    # prior fit (stage 1 -> 2)
    prior_fit: str = "auto"
    em_n_init: int = 3
    em_max_iter: int = 200
    em_tol: float = 1e-3
    em_var_floor: float = 1e-4
    em_weight_floor: float = 1e-3
    stage1_from: Optional[str] = None
    # runtime
    device: str = "auto"
    amp: str = "none"
    threads: Optional[int] = None
    num_workers: int = 0
    out: Optional[str] = None
    overwrite: bool = False
    resume: Optional[str] = None
    config: Optional[str] = None
    checkpoint_every: int = 0
    stop_after: int = 0
    eval_every: int = 1
    progress: bool = True
    tensorboard: bool = False
    # outputs
    outputs: bool = True
    n_samples: int = 64
    alpha: float = 1.0
    alphas: List[float] = dataclasses.field(default_factory=lambda: [0.5, 0.8, 1.0, 1.2, 1.5, 2.0])

    # -- conversion ---------------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> List[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a mapping of option names to values, got {type(d).__name__}")
        names = set(cls.field_names())
        clean = {}
        for key, value in d.items():
            k = str(key).replace("-", "_")
            if k not in names:
                raise ConfigError(f"unknown config option {key!r}; valid options: {', '.join(sorted(names))}")
            clean[k] = value
        return cls(**clean)

    @classmethod
    def from_saved(cls, d: Dict[str, Any]) -> "TrainConfig":
        """The config stored in a checkpoint; keys that older versions did not save get the values
        those versions used (LEGACY_VALUES)."""
        if isinstance(d, dict):
            d = {**{k: v for k, v in LEGACY_VALUES.items() if k not in d}, **d}
        return cls.from_dict(d)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    # -- derived ------------------------------------------------------------------------------------
    @property
    def plan_name(self) -> str:
        if self.model == "vae":
            return "standard"
        if self.model != "xvae":
            return self.model
        if isinstance(self.plan, dict):
            return str(self.plan.get("name", "custom"))
        return str(self.plan)

    def build_plan(self) -> Optional[Plan]:
        """The routed-transport Plan (None for `single` and the baselines)."""
        if self.model != "xvae" or self.plan == "single":
            return None
        if isinstance(self.plan, dict):
            return Plan.from_dict(self.plan)
        return Plan.preset(self.plan, self.latent)

    @property
    def uses_mixture(self) -> bool:
        return self.model == "xvae" and self.plan != "single"

    @property
    def has_stage1(self) -> bool:
        """Only X-VAE pretrains an autoencoder; the baselines train end to end (stage 2 only)."""
        return self.model == "xvae"

    @property
    def is_baseline(self) -> bool:
        return self.model in BASELINES


def load_config_file(path: str) -> Dict[str, Any]:
    """A YAML (.yaml/.yml) or JSON (.json) mapping of option names to values."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    try:
        if path.lower().endswith(".json"):
            data = json.loads(text)
        else:
            import yaml
            data = yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError, json.JSONDecodeError
        raise ConfigError(f"could not parse config file {path!r}: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of option names to values")
    return data


def save_config(cfg: TrainConfig, path: str) -> None:
    """Write the resolved config (YAML or JSON by extension) atomically."""
    d = cfg.to_dict()
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        if path.lower().endswith(".json"):
            json.dump(d, f, indent=2)
        else:
            import yaml
            yaml.safe_dump(d, f, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _parse_plan(plan) -> Union[str, Dict[str, Any]]:
    """A preset name, 'single', a Plan dict, or a path to a JSON/YAML file holding a Plan dict, or
    inline JSON."""
    if isinstance(plan, Plan):
        return plan.to_dict()
    if isinstance(plan, dict):
        d = plan
    elif isinstance(plan, str):
        if plan in PLAN_NAMES:
            return plan
        text = plan.strip()
        if text.startswith("{"):
            try:
                d = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"--plan looks like inline JSON but does not parse: {exc}") from exc
        elif os.path.isfile(plan):
            d = load_config_file(plan)
        else:
            raise ConfigError(f"unknown configuration (--plan) {plan!r}; choose one of "
                              f"{', '.join(PLAN_NAMES)}, or give a JSON/YAML file with a custom "
                              "per-coordinate plan ({'coordinates': [{'route':..., 'tie':..., "
                              "'source':..., 'mode':...}, ...]})")
    else:
        raise ConfigError(f"--plan must be a name or a plan mapping, got {type(plan).__name__}")
    if "coordinates" not in d or not isinstance(d["coordinates"], list):
        raise ConfigError("a custom plan needs a 'coordinates' list, one entry per latent coordinate "
                          "with keys route, tie, source, mode")
    try:
        p = Plan.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid custom plan: {exc}") from exc
    return p.to_dict()


def _positive_int(cfg, name, minimum=1):
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {v!r}")


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill dataset defaults and validate; returns a new, complete TrainConfig."""
    spec = parse_dataset_spec(cfg.dataset)
    defaults = DEFAULTS[spec.kind]
    changes: Dict[str, Any] = {"dataset": str(spec)}
    for key in ("latent", "epochs_ae", "epochs_vae", "hidden", "image_size", "channels", "standardize",
                "threads"):
        if getattr(cfg, key) is None and key in defaults:
            changes[key] = defaults[key]
    cfg = cfg.replace(**changes)
    if cfg.model not in MODELS:
        raise ConfigError(f"unknown --model {cfg.model!r}; choose one of {', '.join(MODELS)}")
    _positive_int(cfg, "latent")
    _positive_int(cfg, "batch_size")
    _positive_int(cfg, "epochs_vae", 0)
    _positive_int(cfg, "epochs_ae", 0)
    _positive_int(cfg, "em_n_init")
    _positive_int(cfg, "em_max_iter")
    _positive_int(cfg, "n_samples")
    _positive_int(cfg, "checkpoint_every", 0)
    _positive_int(cfg, "stop_after", 0)
    _positive_int(cfg, "eval_every", 0)
    _positive_int(cfg, "num_workers", 0)
    if cfg.threads is not None:
        _positive_int(cfg, "threads")
    if cfg.limit is not None:
        _positive_int(cfg, "limit", 2)
    cfg = _resolve_method(cfg, spec.kind)
    if cfg.model != "xvae":
        cfg = cfg.replace(plan=None, prior_fit="auto")
    else:
        plan = _parse_plan(cfg.plan)
        cfg = cfg.replace(plan=plan)
        if isinstance(plan, dict) and len(plan["coordinates"]) != cfg.latent:
            raise ConfigError(f"the custom plan has {len(plan['coordinates'])} coordinates but the "
                              f"latent size (--latent) is {cfg.latent}")
        if cfg.epochs_ae < 1 and cfg.stage1_from is None:
            raise ConfigError("X-VAE needs a trained stage-1 autoencoder: --epochs-ae must be >= 1 "
                              "(or reuse one with --stage1-from RUN_DIR)")
    if cfg.prior_fit not in PRIOR_FITS:
        raise ConfigError(f"--prior-fit must be one of {PRIOR_FITS}, got {cfg.prior_fit!r}")
    if cfg.model == "xvae":
        if cfg.plan == "single" and cfg.prior_fit == "em":
            raise ConfigError("plan 'single' uses the single-Gaussian prior; --prior-fit em needs a "
                              "mixture plan")
        if cfg.plan != "single" and cfg.prior_fit == "single":
            raise ConfigError(f"plan {cfg.plan_name!r} routes over a C = K mixture prior; "
                              "--prior-fit single is only for --plan single")
    if cfg.amp not in AMP:
        raise ConfigError(f"--amp must be one of {AMP}, got {cfg.amp!r}")
    if cfg.lr_schedule not in SCHEDULES:
        raise ConfigError(f"--lr-schedule must be one of {SCHEDULES}, got {cfg.lr_schedule!r}")
    for name in ("lr", "alpha"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ConfigError(f"{name} must be a positive number, got {v!r}")
    if not (isinstance(cfg.alphas, list) and cfg.alphas
            and all(isinstance(a, (int, float)) and a > 0 for a in cfg.alphas)):
        raise ConfigError(f"alphas must be a non-empty list of positive numbers, got {cfg.alphas!r}")
    if not 0 < cfg.test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {cfg.test_fraction!r}")
    for name in ("em_var_floor", "em_weight_floor", "em_tol", "grad_clip"):
        v = getattr(cfg, name)
        if not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"{name} must be a non-negative number, got {v!r}")
    if cfg.em_weight_floor * cfg.latent >= 1:
        raise ConfigError(f"em_weight_floor {cfg.em_weight_floor} is too large for K = {cfg.latent} "
                          "components (it must be < 1/K)")
    if cfg.hidden is not None and not (isinstance(cfg.hidden, list) and cfg.hidden
                                       and all(isinstance(h, int) and h > 0 for h in cfg.hidden)):
        raise ConfigError(f"hidden must be a non-empty list of positive layer sizes, got {cfg.hidden!r}")
    cfg = _resolve_baseline_options(cfg, spec.kind)
    if cfg.channels is not None and cfg.channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {cfg.channels!r}")
    return cfg


def _choice(cfg: TrainConfig, name: str, allowed) -> None:
    v = getattr(cfg, name)
    if v not in allowed:
        raise ConfigError(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, got {v!r}")


def _resolve_method(cfg: TrainConfig, kind: str) -> TrainConfig:
    """Fill the stage-2 method options from --preset (flags win) and clear those the model does not
    use, so the saved config names what the run did: `kl` and `routing` apply to the mixture X-VAE,
    `stage2_init` to X-VAE, `likelihood` to every model, `gamma_min` to the gaussian likelihood."""
    _choice(cfg, "preset", METHOD_PRESETS)
    choices = dict(METHOD_CHOICES[cfg.preset])
    if choices["likelihood"] is None:
        choices["likelihood"] = DEFAULT_LIKELIHOOD[kind]
    changes = {k: v for k, v in choices.items() if getattr(cfg, k) is None}
    cfg = cfg.replace(**changes)
    _choice(cfg, "likelihood", LIKELIHOODS)
    g = cfg.gamma_min
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 <= g < float("inf"):
        raise ConfigError(f"--gamma-min must be a non-negative number, got {g!r}")
    if g > 0 and cfg.likelihood != "gaussian":
        raise ConfigError(f"--gamma-min floors the learned variance of --likelihood gaussian; this run "
                          f"uses --likelihood {cfg.likelihood}")
    xvae = cfg.model == "xvae"
    mixture = xvae and cfg.plan != "single"
    if xvae:
        _choice(cfg, "stage2_init", STAGE2_INITS)
    if mixture:
        _choice(cfg, "kl", KL_OBJECTIVES)
        _choice(cfg, "routing", ROUTINGS)
    return cfg.replace(kl=cfg.kl if mixture else None, routing=cfg.routing if mixture else None,
                       stage2_init=cfg.stage2_init if xvae else None)


def _resolve_baseline_options(cfg: TrainConfig, kind: str) -> TrainConfig:
    """Fill the chosen baseline's size from the dataset defaults, validate it, and clear the size
    options of the other models (so a saved config names only what the run uses)."""
    changes: Dict[str, Any] = {}
    for name, model in BASELINE_OPTIONS.items():
        if cfg.model != model:
            changes[name] = None
        elif getattr(cfg, name) is None and name in BASELINE_DEFAULTS[kind]:
            changes[name] = BASELINE_DEFAULTS[kind][name]
    if cfg.model == "hierarchical" and cfg.hier_top is None:
        changes["hier_top"] = max(1, cfg.latent // 2)
    cfg = cfg.replace(**changes)
    for name, model in BASELINE_OPTIONS.items():
        if cfg.model == model and getattr(cfg, name) is not None:
            _positive_int(cfg, name)
    if cfg.model == "hierarchical":
        if cfg.latent < 2:
            raise ConfigError("--model hierarchical splits the latent into two levels and needs "
                              f"--latent >= 2, got {cfg.latent}")
        if cfg.hier_top is not None and cfg.hier_top >= cfg.latent:
            raise ConfigError(f"--hier-top must be smaller than the latent size {cfg.latent} (the rest "
                              f"is the bottom level), got {cfg.hier_top}")
    _positive_int(cfg, "hier_hidden")
    _positive_int(cfg, "gumbel_anneal_steps", 0)
    if cfg.gumbel_anneal not in GUMBEL_ANNEAL:
        raise ConfigError(f"--gumbel-anneal must be one of {GUMBEL_ANNEAL}, got {cfg.gumbel_anneal!r}")
    for name in ("gumbel_tau_start", "gumbel_tau_end"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
            raise ConfigError(f"{name} must be a positive number, got {v!r}")
    if cfg.gumbel_tau_end > cfg.gumbel_tau_start:
        raise ConfigError(f"the Gumbel-Softmax temperature anneals downwards: --gumbel-tau-end "
                          f"({cfg.gumbel_tau_end}) must be <= --gumbel-tau-start ({cfg.gumbel_tau_start})")
    return cfg
