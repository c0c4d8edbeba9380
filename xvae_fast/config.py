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

MODELS = ("xvae", "vae")
PLAN_NAMES = ("single",) + PRESETS
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
    plan: Union[str, Dict[str, Any], None] = "full"
    latent: Optional[int] = None
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

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    # -- derived ------------------------------------------------------------------------------------
    @property
    def plan_name(self) -> str:
        if self.model == "vae":
            return "standard"
        if isinstance(self.plan, dict):
            return str(self.plan.get("name", "custom"))
        return str(self.plan)

    def build_plan(self) -> Optional[Plan]:
        """The routed-transport Plan (None for `single` and the standard VAE)."""
        if self.model == "vae" or self.plan == "single":
            return None
        if isinstance(self.plan, dict):
            return Plan.from_dict(self.plan)
        return Plan.preset(self.plan, self.latent)

    @property
    def uses_mixture(self) -> bool:
        return self.model == "xvae" and self.plan != "single"

    @property
    def has_stage1(self) -> bool:
        return self.model == "xvae"


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
    if cfg.model == "vae":
        cfg = cfg.replace(plan=None, prior_fit="auto")
    else:
        if cfg.plan is None:
            raise ConfigError("--model xvae needs a --plan (e.g. full or single)")
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
    if cfg.channels is not None and cfg.channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {cfg.channels!r}")
    return cfg
