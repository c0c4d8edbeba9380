"""The trainer's configuration: the shared options, and the chosen model's options as a nested block.

`TrainConfig` holds the options every model shares (declared below with `options.option`) and
`model_options`, the chosen model family's own options (its recipe's `Options` dataclass,
models/*.py). Before `resolve()`, `model_options` is the mapping of the model options given; resolve()
turns it into the model's dataclass, refusing options the model does not declare. `TrainConfig(...)`,
`from_dict()` and `replace()` also take model options by name at the top level (`pseudo_inputs=50`).

Precedence: built-in defaults < per-dataset defaults < config file (`--config`) < command-line flags.
`resolve()` fills every `None` from the dataset's and the model's defaults and validates, so the
config a run saves (`config.yaml` in the run folder) is complete and can be passed back with `--config`
to repeat it. Configs saved before the nested block (one flat mapping of every model's options) are
migrated when read (`migrate_flat`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Dict, List, Optional, Set, Tuple

from .config_io import load_config_file  # noqa: F401  (re-exported: train.py and the tests read files)
from .data.spec import DEFAULTS, TOY2D_KINDS, parse_dataset_spec
from .errors import ConfigError
from .models import RECIPES, get_recipe
from .models.protocol import model_names
from .models.likelihood import IMAGE_OUTPUTS, LIKELIHOODS
from .models.xvae import DEFAULT_KL_WEIGHT, METHOD_CHOICES, PLAN_NAMES, PRIOR_FITS  # noqa: F401 (re-exported)
from .options import ModelOptions, check_all, defaults as declared_defaults, flag_of, option, specs
from .ops.plans import Plan

# --model: the registered model recipes (models/protocol.py), X-VAE first
MODELS = ("xvae",) + tuple(n for n in RECIPES if n != "xvae")
# The paper's baselines (Section 3, Tables 1-4): trained end to end with a learned or fixed prior, no
# stage 1 and no prior fit (see docs/baselines.md).
BASELINES = ("vae", "vamp", "hierarchical", "mog", "gmvae")
LEARNED_PRIOR_MODELS = tuple(n for n, r in RECIPES.items() if r.learned_prior)
VECTOR_KINDS = ("clusters",) + TOY2D_KINDS      # data kinds that are vectors (npy may be either)
METHOD_PRESETS = ("default", "paper")
# --preset's likelihood: the paper's squared error, or the library's per data kind
# (docs/choosing-defaults.md)
PRESET_LIKELIHOOD = {"paper": "mse", "default": None}
DEFAULT_LIKELIHOOD = {"digits": "bernoulli", "mnist": "bernoulli", "celeba": "gaussian",
                      "images": "gaussian", "clusters": "gaussian", "npy": "gaussian",
                      # the 2-D benchmark: as the clusters (the learned variance explains the spread)
                      **dict.fromkeys(TOY2D_KINDS, "gaussian")}
# What a run saved before these options existed used (the paper's readings): filled in when an older
# checkpoint's config is read, so such runs still resume and sample. Model options among them apply
# where the saved model declares them.
LEGACY_VALUES = dict(preset="paper", kl="paper", stage2_init="random", routing="per-coordinate",
                     likelihood="mse", gamma_min=0.0, precision="fp32", channels_last="off",
                     em_backend="sklearn")
# Renamed options: a config file or checkpoint written with the old name still reads.
RENAMED = {"amp": ("precision", {"none": "fp32", "bf16": "bf16"})}
PRECISIONS = ("fp32", "bf16", "auto")     # training/precision.py
CHANNELS_LAST = ("auto", "on", "off")
SCHEDULES = ("none", "cosine")
BINARIZE = ("none", "dynamic")
PER_DATASET = "per dataset"               # the help's default of the dataset-dependent options

# Keys that may differ between a checkpoint's config and the config given with --resume.
RUNTIME_KEYS = ("device", "progress", "tensorboard", "num_workers", "stop_after", "checkpoint_every",
                "resume", "config", "overwrite", "out", "threads", "compile", "auto_resume", "precision",
                "channels_last")
# The shared options' help groups, in the order train --help shows them.
GROUPS = ("what to train", "stage-2 method and likelihood (SPEC Revision 2; docs/choosing-defaults.md)",
          "optimisation", "data", "runtime and outputs")
WHAT, METHOD, OPTIM, DATA, RUNTIME = GROUPS


def _renamed(d: Dict[str, Any]) -> Dict[str, Any]:
    """`d` with options saved under an old name (RENAMED) given their new name and values; the new
    name wins where both are present."""
    out = {}
    for key, value in d.items():
        k = str(key).replace("-", "_")
        if k in RENAMED:
            new, values = RENAMED[k]
            if new in d or new.replace("_", "-") in d:
                continue
            k, value = new, values.get(value, value)
        out[k] = value
    return out


def model_option_owners() -> Dict[str, Tuple[str, ...]]:
    """Every declared model option's name -> the models that declare it (of the registered models)."""
    return _owners(tuple((name, get_recipe(name)) for name in model_names()))


@functools.lru_cache(maxsize=8)
def _owners(recipes: Tuple[Tuple[str, Any], ...]) -> Dict[str, Tuple[str, ...]]:
    owners: Dict[str, List[str]] = {}
    for name, recipe in recipes:
        for key in recipe.Options.names():
            owners.setdefault(key, []).append(name)
    return {k: tuple(v) for k, v in owners.items()}


@dataclasses.dataclass(init=False)
class TrainConfig:
    # what to train
    dataset: str = option("digits", "digits (bundled 8x8 digits), clusters (bundled synthetic 2-D, 3 "
                          "modes), 8gaussians, 2spirals, checkerboard, rings (bundled 2-D benchmark of paper "
                          "001, docs/toy2d.md), mnist:DIR (IDX files, gz or not), celeba:DIR, images:DIR, "
                          "npy:PATH (.npy/.npz array of vectors)", group=WHAT, metavar="SPEC")
    model: str = option("xvae", "the model family; list them with --list-models, see one's options with "
                        "--model M --help", group=WHAT, choices=None)
    # the chosen model's own options (its recipe's Options): a mapping until resolve()
    model_options: Any = None
    latent: Optional[int] = option(None, "latent size K, shared by all stages", type="int", group=WHAT,
                                   metavar="K", minimum=1, default_text=PER_DATASET)
    config: Optional[str] = option(None, "YAML or JSON file of options (keys as the flags, with _ or -; "
                                   "model options at the top level or under model_options); flags win",
                                   type="str", group=WHAT, metavar="FILE", optional=True)
    # stage-2 method and likelihood (SPEC Revision 2)
    preset: str = option("default", "default: the library's measured choices; paper: the paper read "
                         "literally (X-VAE's plan full, --kl paper, --stage2-init random, --routing "
                         "per-coordinate, --kl-weight 1, and --likelihood mse). Flags override either",
                         group=METHOD, choices=METHOD_PRESETS)
    likelihood: Optional[str] = option(None, "decoder likelihood: mse (squared error summed, the paper), "
                                       "bernoulli (cross-entropy, data in [0, 1]), gaussian (learned "
                                       "scalar variance, Two-Stage VAE)", type="str", group=METHOD,
                                       choices=LIKELIHOODS,
                                       default_text="--preset paper mse; default per dataset: digits and "
                                       "mnist bernoulli, else gaussian; models with their own keep it")
    gamma_min: float = option(0.0, "gaussian likelihood: floor of the learned variance gamma", group=METHOD,
                              metavar="G", minimum=0)
    image_output: Optional[str] = option(None, "mse / gaussian likelihood on images: the pixel mean is the "
                                         "decoder's output (linear) or its sigmoid", type="str", group=METHOD,
                                         choices=IMAGE_OUTPUTS, optional=True,
                                         default_text="linear for mse in X-VAE and the baselines, else "
                                         "sigmoid")
    # optimisation (paper Table 5: batch 128, Adam 1e-3, seed 42)
    epochs_ae: Optional[int] = option(None, "stage-1 (autoencoder) epochs", type="int", group=OPTIM,
                                      metavar="N", minimum=0, default_text=PER_DATASET)
    epochs_vae: Optional[int] = option(None, "stage-2 epochs (the models trained end to end: their "
                                       "epochs)", type="int", group=OPTIM, metavar="N", minimum=0,
                                       default_text=PER_DATASET)
    batch_size: int = option(128, "batch size", group=OPTIM, metavar="B", minimum=1)
    lr: float = option(1e-3, "Adam learning rate", group=OPTIM, above=0)
    lr_schedule: str = option("none", "per-stage schedule", group=OPTIM, choices=SCHEDULES)
    grad_clip: float = option(0.0, "clip the gradient norm (0: off)", group=OPTIM, metavar="NORM", minimum=0)
    seed: int = option(42, "seed of initialisation, shuffling and noise", group=OPTIM)
    # data
    split_seed: int = option(0, "seed of the train/test split", group=DATA)
    test_fraction: float = option(0.2, "test share when a split is made", group=DATA, above=0, below=1)
    limit: Optional[int] = option(None, "use at most N examples (quick runs)", type="int", group=DATA,
                                  metavar="N", minimum=2, optional=True)
    binarize: str = option("none", "images in [0, 1]: dynamic redraws every training batch as x ~ "
                           "Bernoulli(intensity) and binarises the test images once (fixed seed), the "
                           "likelihood papers' protocol (VampPrior's code)", group=DATA, choices=BINARIZE)
    image_size: Optional[int] = option(None, "images/celeba: centre crop and resize to SxS", type="int",
                                       group=DATA, metavar="S", optional=True, default_text=PER_DATASET)
    channels: Optional[int] = option(None, "images/celeba: 1 grey or 3 RGB", type="int", group=DATA,
                                     choices=(1, 3), optional=True, default_text=PER_DATASET)
    standardize: Optional[bool] = option(None, "z-score vector features with the training split's "
                                         "mean/std", type="bool", group=DATA, optional=True,
                                         default_text=PER_DATASET)
    hidden: Optional[List[int]] = option(None, "MLP hidden sizes for vector data", type="ints", group=DATA,
                                         metavar="H1,H2", optional=True, default_text=PER_DATASET)
    npz_key: Optional[str] = option(None, "array name inside an .npz file", type="str", group=DATA,
                                    metavar="KEY", optional=True)
    download: bool = option(False, "mnist: download the IDX files if missing", group=DATA,
                            bool_flag="store_true")
    # runtime
    device: str = option("auto", "auto, cpu, cuda or cuda:N", group=RUNTIME)
    precision: str = option("fp32", "fp32, bf16 (the networks under bfloat16 autocast; the fused ops, KL "
                            "and likelihood sums stay float32) or auto (bf16 where the device has bfloat16 "
                            "units); a runtime option, recorded in summary.json", group=RUNTIME,
                            choices=PRECISIONS)
    channels_last: str = option("auto", "conv weights and activations in NHWC order: auto uses it on CPU "
                                "and for bf16 on CUDA, where it measures faster (bench/paper_scale.py)",
                                group=RUNTIME, choices=CHANNELS_LAST)
    compile: bool = option(False, "torch.compile the training step's loss: slower start, faster steps on "
                           "large nets (bench/step.py); --resume may add or drop it", group=RUNTIME,
                           bool_flag="store_true")
    threads: Optional[int] = option(None, "CPU threads for torch", type="int", group=RUNTIME, metavar="N",
                                    minimum=1, optional=True,
                                    default_text="1 for the bundled sets, whose nets are tiny; else "
                                    "torch's default")
    num_workers: int = option(0, "data-loading workers for large image folders", group=RUNTIME, metavar="N",
                              minimum=0)
    out: Optional[str] = option(None, "run folder", type="str", group=RUNTIME, metavar="DIR", optional=True,
                                default_text="runs/<dataset>-<model>-<plan>-<time>")
    overwrite: bool = option(False, "replace an existing run in --out", group=RUNTIME, bool_flag="store_true")
    resume: Optional[str] = option(None, "continue the run in DIR exactly where it stopped", type="str",
                                   group=RUNTIME, metavar="DIR", optional=True)
    auto_resume: bool = option(False, "resume --out DIR when it already holds a checkpoint, else start "
                               "it: one command line for torchrun --max-restarts (docs/distributed.md)",
                               group=RUNTIME, bool_flag="store_true")
    checkpoint_every: int = option(0, "also checkpoint every N steps (always at each epoch end)",
                                   group=RUNTIME, metavar="STEPS", minimum=0)
    stop_after: int = option(0, "stop (with a checkpoint) after this many optimizer steps in total; "
                             "--resume continues (0: train to the end)", group=RUNTIME, metavar="STEPS",
                             minimum=0)
    eval_every: int = option(1, "test-set evaluation period in epochs (0: only at the end)", group=RUNTIME,
                             metavar="EPOCHS", minimum=0)
    progress: bool = option(True, "progress bars", group=RUNTIME, bool_flag="negate")
    tensorboard: bool = option(False, "also log to DIR/tensorboard (needs the tensorboard package)",
                               group=RUNTIME, bool_flag="store_true")
    # outputs
    outputs: bool = option(True, "figures and samples", group=RUNTIME, bool_flag="negate")
    n_samples: int = option(64, "samples in samples.png", group=RUNTIME, metavar="N", minimum=1)
    alpha: float = option(1.0, "sampling std scale for samples.png", group=RUNTIME, above=0)
    alphas: List[float] = option([0.5, 0.8, 1.0, 1.2, 1.5, 2.0], "alpha sweep values", type="floats",
                                 group=RUNTIME, metavar="A1,A2")

    def __init__(self, **kw: Any):
        names = set(self.field_names())
        given_options = kw.pop("model_options", None)
        flat = {k: kw.pop(k) for k in list(kw) if k not in names}
        unknown = sorted(set(flat) - set(model_option_owners()))
        if unknown:
            raise ConfigError(f"unknown config option {unknown[0]!r}; valid options: "
                              f"{', '.join(sorted(names - {'model_options'} | set(model_option_owners())))}")
        for f in dataclasses.fields(self):
            if f.name == "model_options":
                continue
            if f.name in kw:
                value = kw[f.name]
            else:
                value = f.default_factory() if f.default is dataclasses.MISSING else f.default
            setattr(self, f.name, value)
        self.model_options = _merge_options(given_options, flat)

    # -- conversion ---------------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """The nested form config.yaml and checkpoints store."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d = json.loads(json.dumps(d, default=_plain_options))   # deep copy, lists for tuples
        return d

    def flat(self) -> Dict[str, Any]:
        """Shared and model options in one mapping, by option name (for comparisons)."""
        d = {k: v for k, v in self.to_dict().items() if k != "model_options"}
        d.update(self.model_options_dict())
        return d

    def model_options_dict(self) -> Dict[str, Any]:
        mo = self.model_options
        if isinstance(mo, ModelOptions):
            return mo.to_dict()
        return dict(mo or {})

    def option(self, name: str, default: Any = None) -> Any:
        """A model option's value, whether resolved or still as given (`default` where absent)."""
        mo = self.model_options
        if isinstance(mo, ModelOptions):
            return getattr(mo, name, default)
        return (mo or {}).get(name, default)

    def __eq__(self, other: Any) -> bool:
        """Equal options, whether the model options are resolved (a dataclass) or given (a mapping)."""
        return isinstance(other, TrainConfig) and self.flat() == other.flat()

    def __getattr__(self, name: str) -> Any:
        """Read access to the model's own options by name (`cfg.pseudo_inputs` for a vamp run), as
        before they were nested; another model's option is an AttributeError naming its owners."""
        if name.startswith("_") or name == "model_options":
            raise AttributeError(name)
        owners = model_option_owners().get(name)
        if owners is None:
            raise AttributeError(f"TrainConfig has no option {name!r}")
        if self.model not in owners:
            raise AttributeError(f"{name!r} is an option of --model {' and '.join(owners)}, not of "
                                 f"--model {self.model}")
        return self.option(name, declared_defaults(get_recipe(self.model).Options)[name])

    @classmethod
    def field_names(cls) -> List[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        """From a mapping of option names (shared, model options at the top level or nested under
        `model_options`); unknown names are refused."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a mapping of option names to values, got {type(d).__name__}")
        clean = {str(k).replace("-", "_"): v for k, v in _renamed(d).items()}
        nested = clean.pop("model_options", None)
        if nested is not None:
            if not isinstance(nested, dict):
                raise ConfigError(f"model_options must be a mapping of the model's options, got "
                                  f"{type(nested).__name__}")
            nested = {str(k).replace("-", "_"): v for k, v in nested.items()}
            for k in nested:
                if k not in model_option_owners():
                    raise ConfigError(f"unknown model option {k!r} in model_options; valid: "
                                      f"{', '.join(sorted(model_option_owners()))}")
            clean = {**nested, **clean}
        return cls(**clean)

    @classmethod
    def from_saved(cls, d: Dict[str, Any]) -> "TrainConfig":
        """The config stored in a checkpoint or config.yaml; keys that older versions did not save get
        the values those versions used (LEGACY_VALUES), and the flat form is migrated."""
        if isinstance(d, dict):
            d = _renamed(d)
            if "model_options" in d:
                d = {**{k: v for k, v in LEGACY_VALUES.items() if k in cls.field_names() and k not in d}, **d}
            else:
                d = {**{k: v for k, v in LEGACY_VALUES.items() if k not in d}, **d}
                if "kl_weight" not in d and d.get("model", "xvae") in ("xvae", "vae"):
                    d["kl_weight"] = 1.0      # runs before --kl-weight trained the ELBO
                d = migrate_flat(d, strict=False)
            if "image_output" not in d and d.get("likelihood") in ("mse", "gaussian") \
                    and parse_dataset_spec(d.get("dataset", "digits")).kind not in VECTOR_KINDS:
                d["image_output"] = "sigmoid"     # what mse / gaussian image runs used before the option
        cfg = cls.from_dict(d)
        # a saved config is complete: its model options are the model's dataclass as saved
        opts = cfg.model_options
        if cfg.model in RECIPES and isinstance(opts, dict):
            Options = get_recipe(cfg.model).Options
            if set(opts) <= set(Options.names()):
                cfg.model_options = Options(**opts)
        return cfg

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    # -- derived ------------------------------------------------------------------------------------
    @property
    def plan_name(self) -> str:
        if self.model == "vae":
            return "standard"
        if self.model != "xvae":
            return self.model
        from .models.xvae import plan_name
        return plan_name(self.option("plan"))

    def build_plan(self) -> Optional[Plan]:
        """The routed-transport Plan (None for `single` and the other models)."""
        plan = self.option("plan")
        if self.model != "xvae" or plan == "single":
            return None
        if isinstance(plan, dict):
            return Plan.from_dict(plan)
        return Plan.preset(plan, self.latent)

    @property
    def uses_mixture(self) -> bool:
        return self.model == "xvae" and self.option("plan") != "single"

    @property
    def has_stage1(self) -> bool:
        """Only X-VAE pretrains an autoencoder; the baselines train end to end (stage 2 only)."""
        return get_recipe(self.model).pretrains_autoencoder

    @property
    def is_baseline(self) -> bool:
        return self.model in BASELINES


def differing_options(a: TrainConfig, b: TrainConfig, ignore=()) -> List[Tuple[str, Any, Any]]:
    """(name, a's value, b's value) of every option, shared or the model's, whose values differ (as
    config.yaml holds them), in a's order, then b's own; `ignore` names options left out."""
    fa, fb = a.flat(), b.flat()
    return [(k, fa.get(k), fb.get(k)) for k in dict.fromkeys([*fa, *fb])
            if k not in ignore and fa.get(k) != fb.get(k)]


def _plain_options(obj):
    if isinstance(obj, ModelOptions):
        return obj.to_dict()
    if isinstance(obj, tuple):
        return list(obj)
    if isinstance(obj, os.PathLike):      # --out given as a pathlib.Path
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not a config value")


def _merge_options(given: Any, flat: Dict[str, Any]) -> Any:
    """The model_options of a new TrainConfig: a resolved dataclass stays one when the changes are its
    own fields; anything else is the mapping of given values that resolve() checks."""
    if isinstance(given, ModelOptions):
        if all(k in specs(given) for k in flat):
            return given.replace(**flat) if flat else given
        given = given.to_dict()
    if given is not None and not isinstance(given, dict):
        raise ConfigError(f"model_options must be a mapping of the model's options, got "
                          f"{type(given).__name__}")
    merged = {**(given or {}), **flat}
    return merged


def migrate_flat(d: Dict[str, Any], strict: bool) -> Dict[str, Any]:
    """A config in the flat form (before the nested model_options block: every model's options at the
    top level, the other models' at their defaults) in the nested form. Options the saved model does
    not declare are dropped when they hold their old default (or `strict` is False: a checkpoint's
    config, whose other options the old resolve() had reset); otherwise they stay, for resolve() to
    refuse by name."""
    if "model_options" in d:
        return d
    model = d.get("model", "xvae")
    if model not in RECIPES:
        return d          # resolve() names the unknown model
    own = set(get_recipe(model).Options.names())
    owners = model_option_owners()
    out, nested = {}, {}
    for key, value in d.items():
        k = str(key).replace("-", "_")
        if k not in owners:
            out[key] = value
        elif k in own:
            nested[k] = value
        elif strict and value != _old_default(k):
            out[key] = value
    out["model_options"] = nested
    return out


def file_options(d: Any, source: str) -> Dict[str, Any]:
    """The options of a --config file by name, the model's lifted from `model_options`, after
    migrating the flat form that older config.yaml files wrote."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: a config must be a mapping of option names to values, got "
                          f"{type(d).__name__}")
    d = dict(migrate_flat(_renamed(d), strict=True))
    nested = d.pop("model_options", None) or {}
    if not isinstance(nested, dict):
        raise ConfigError(f"{source}: model_options must be a mapping of the model's options, got "
                          f"{type(nested).__name__}")
    return {str(k).replace("-", "_"): v for k, v in {**nested, **d}.items()}


def _old_default(name: str) -> Any:
    """An option's default as the flat config wrote it (its first declaring model's default)."""
    for model in model_option_owners()[name]:
        return declared_defaults(get_recipe(model).Options).get(name)


def save_config(cfg: TrainConfig, path: str) -> None:
    """Write the resolved config (YAML or JSON by extension) atomically."""
    from .atomic_file import atomic_open
    d = cfg.to_dict()
    with atomic_open(path, "w", durable=True) as f:
        if path.lower().endswith(".json"):
            json.dump(d, f, indent=2)
        else:
            import yaml
            yaml.safe_dump(d, f, sort_keys=False)


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill the dataset's and the model's defaults and validate; returns a new, complete TrainConfig
    whose model_options is the model's own Options dataclass."""
    spec = parse_dataset_spec(cfg.dataset)
    if cfg.model not in RECIPES:
        raise ConfigError(f"unknown --model {cfg.model!r}; choose one of {', '.join(model_names())}")
    recipe = get_recipe(cfg.model)
    defaults = dict(DEFAULTS[spec.kind])
    defaults.update(recipe.dataset_defaults.get(spec.kind, {}))   # the model's sizes and budgets win
    changes: Dict[str, Any] = {"dataset": str(spec)}
    for key in ("latent", "epochs_ae", "epochs_vae", "hidden", "image_size", "channels", "standardize",
                "threads"):
        if getattr(cfg, key) is None and key in defaults:
            changes[key] = defaults[key]
    for key in ("out", "resume", "config", "npz_key"):     # paths given as pathlib.Path
        if isinstance(getattr(cfg, key), os.PathLike):
            changes[key] = os.fspath(getattr(cfg, key))
    cfg = cfg.replace(**changes)
    check_all(cfg)
    if not cfg.alphas or not all(0 < a < float("inf") for a in cfg.alphas):
        raise ConfigError(f"--alphas must be a non-empty list of positive finite numbers, got {cfg.alphas!r}")
    if cfg.hidden is not None and not (cfg.hidden and all(h > 0 for h in cfg.hidden)):
        raise ConfigError(f"--hidden must be a non-empty list of positive layer sizes, got {cfg.hidden!r}")
    if cfg.binarize != "none" and spec.kind in VECTOR_KINDS:
        raise ConfigError(f"--binarize draws image pixels as Bernoulli(intensity); {spec.kind} is vector "
                          "data")
    cfg = _resolve_likelihood(cfg, spec.kind)
    return cfg.replace(model_options=_resolve_model_options(cfg, spec.kind))


def _resolve_likelihood(cfg: TrainConfig, kind: str) -> TrainConfig:
    """The likelihood every model shares: from --preset (flags win), or the model's own where it fixes
    one; `gamma_min` applies to the gaussian likelihood."""
    recipe = get_recipe(cfg.model)
    if cfg.likelihood is None:
        if recipe.likelihoods is not None:
            likelihood = recipe.likelihoods[0]      # the model's own likelihood, whatever the preset
        else:
            likelihood = PRESET_LIKELIHOOD[cfg.preset] or DEFAULT_LIKELIHOOD[kind]
        cfg = cfg.replace(likelihood=likelihood)
    if recipe.likelihoods is not None and cfg.likelihood not in recipe.likelihoods:
        raise ConfigError(f"--model {cfg.model} uses --likelihood {' or '.join(recipe.likelihoods)} "
                          f"({recipe.likelihood_reason}), got --likelihood {cfg.likelihood}")
    cfg = _resolve_image_output(cfg, kind)
    if cfg.gamma_min > 0 and cfg.likelihood != "gaussian":
        raise ConfigError(f"--gamma-min floors the learned variance of --likelihood gaussian; this run "
                          f"uses --likelihood {cfg.likelihood}")
    return cfg


def _resolve_image_output(cfg: TrainConfig, kind: str) -> TrainConfig:
    """`image_output` applies to the mse and gaussian likelihoods on images. X-VAE and the paper's
    baselines take the linear mean under mse (a squared error through a sigmoid kills stage 1 for half
    the seeds on MNIST; models/likelihood.py). The gaussian likelihood, and the related systems that
    fix their own likelihood (uae, avae, introprior, twostage: their digits results were measured with
    it), keep the sigmoid until they are measured with the linear mean (docs/choosing-defaults.md)."""
    if cfg.image_output is not None:
        if cfg.likelihood == "bernoulli":
            raise ConfigError("--image-output sets the pixel mean of --likelihood mse or gaussian; "
                              "bernoulli always maps its logits through a sigmoid")
        if kind in VECTOR_KINDS:
            raise ConfigError(f"--image-output applies to image data; {kind} is vector data, whose "
                              "mean is the decoder's output")
        return cfg
    if cfg.likelihood == "bernoulli" or kind in VECTOR_KINDS:
        return cfg
    own = get_recipe(cfg.model).likelihoods is not None
    return cfg.replace(image_output="linear" if cfg.likelihood == "mse" and not own else "sigmoid")


def unused_options(model: str, given: Dict[str, Any]) -> List[str]:
    """The given model options that `model` does not declare."""
    own = set(get_recipe(model).Options.names())
    return [k for k in given if k not in own]


def _resolve_model_options(cfg: TrainConfig, kind: str) -> ModelOptions:
    """The chosen model's Options from the given ones: an option the model does not declare is an
    error naming the flag and the models that use it."""
    recipe = get_recipe(cfg.model)
    given = cfg.model_options_dict()
    extra = unused_options(cfg.model, given)
    if extra:
        owners = model_option_owners()
        k = extra[0]
        sp = specs(get_recipe(owners[k][0]).Options)[k]
        raise ConfigError(f"{flag_of(k, sp)} is an option of --model {' and '.join(owners[k])}; --model "
                          f"{cfg.model} does not use it (its options: `python -m xvae_fast.train --model "
                          f"{cfg.model} --help`)")
    try:
        opts = recipe.Options(**given)
    except TypeError as exc:      # not a declared field: reported above; anything else is a bug
        raise ConfigError(f"bad options for --model {cfg.model}: {exc}") from exc
    return opts.resolve(cfg, kind)


# Shared options that apply to some data kinds or models only: given explicitly elsewhere, an error.
IMAGE_KINDS = ("digits", "mnist", "celeba", "images")


def inapplicable_options(cfg: TrainConfig, explicit: Set[str]) -> Optional[str]:
    """Why one of the explicitly given shared options does not apply to this run, or None (an unknown
    model or dataset is left to resolve() to name)."""
    if cfg.model not in RECIPES:
        return None
    try:
        kind = parse_dataset_spec(cfg.dataset).kind
    except ConfigError:
        return None
    recipe = get_recipe(cfg.model)
    if "epochs_ae" in explicit and not recipe.pretrains_autoencoder:
        return (f"--epochs-ae sets the epochs of X-VAE's stage-1 autoencoder; --model {cfg.model} has no "
                "stage 1 (its epochs are --epochs-vae)")
    if "download" in explicit and cfg.download and kind != "mnist":
        return f"--download fetches MNIST; --dataset {cfg.dataset} is not mnist"
    if "npz_key" in explicit and kind != "npy":
        return f"--npz-key names an array in an .npz file; --dataset {cfg.dataset} is not npy"
    for key in ("image_size", "channels"):
        if key in explicit and kind not in ("celeba", "images"):
            return (f"--{key.replace('_', '-')} applies to celeba and images folders; --dataset "
                    f"{cfg.dataset} has a fixed shape")
    if "standardize" in explicit and kind in IMAGE_KINDS:
        return f"--standardize z-scores vector features; --dataset {cfg.dataset} is images"
    return None


def applicable_argv(model: str, dataset: str, argv: List[str], takes_value) -> List[str]:
    """`argv` less the flags (and their values) that `model` on `dataset` does not use: a model option
    of another model, or a shared option inapplicable_options() refuses (for tools that pass one set of
    flags to several models, e.g. compare's --quick). `takes_value(flag)` says whether a flag reads a
    value (None: not a flag of the trainer)."""
    owners = model_option_owners()
    flag_names = {}
    for m in model_names():
        for name, sp in specs(get_recipe(m).Options).items():
            flag_names[flag_of(name, sp)] = name
    for name, sp in specs(TrainConfig).items():
        flag_names[flag_of(name, sp)] = name
    cfg = None
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        flag = tok.split("=", 1)[0]
        n = 1 + (1 if "=" not in tok and takes_value(flag) else 0)
        name = flag_names.get(flag)
        drop = False
        if name in owners:
            drop = model not in owners[name]
        elif name is not None:
            if cfg is None:
                cfg = TrainConfig(model=model, dataset=dataset)
            drop = inapplicable_options(cfg, {name}) is not None
        if not drop:
            out += argv[i:i + n]
        i += n
    return out
