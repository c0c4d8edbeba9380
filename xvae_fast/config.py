"""The trainer's configuration: one dataclass, loaded from defaults, a YAML/JSON file and flags.

Precedence: built-in defaults < per-dataset defaults < config file (`--config`) < command-line flags.
`resolve()` fills every `None` from the dataset's defaults and validates, so the config a run saves
(`config.yaml` in the run folder) is complete and can be passed back with `--config` to repeat it.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional, Union

from .data.spec import DEFAULTS, TOY2D_KINDS, parse_dataset_spec
from .errors import ConfigError
from .plans import Plan
from .functional import ROUTINGS
from .models.likelihood import IMAGE_OUTPUTS, LIKELIHOODS
from .prior_fit import BACKENDS as EM_BACKENDS
from .models import RECIPES, get_recipe
from .models.vae import KL_OBJECTIVES
from .models.xvae import PLAN_NAMES, PRIOR_FITS  # noqa: F401  (re-exported for callers of the config)
from .config_io import load_config_file  # noqa: F401  (re-exported: train.py and the tests read files)

# --model: the registered model recipes (models/protocol.py), X-VAE first
MODELS = ("xvae",) + tuple(n for n in RECIPES if n != "xvae")
# The paper's baselines (Section 3, Tables 1-4): trained end to end with a learned or fixed prior, no
# stage 1 and no prior fit (see docs/baselines.md).
BASELINES = ("vae", "vamp", "hierarchical", "mog", "gmvae")
LEARNED_PRIOR_MODELS = tuple(n for n, r in RECIPES.items() if r.learned_prior)
STAGE2_INITS = ("ae", "random")
VECTOR_KINDS = ("clusters",) + TOY2D_KINDS      # data kinds that are vectors (npy may be either)
METHOD_PRESETS = ("default", "paper")
# X-VAE's stage-2 KL weight under --preset default (docs/choosing-defaults.md, "Stage 2 against its
# ex-post reference")
DEFAULT_KL_WEIGHT = 0.25
# The stage-2 method choices (SPEC Revision 2). `paper` is the paper read literally (Eq. 18, plan
# `full`, a randomly initialised stage 2, Eq. 20's per-coordinate generation, squared error); `default`
# is the library's, chosen by the measurements in docs/choosing-defaults.md.
METHOD_CHOICES = {
    "paper": dict(plan="full", kl="paper", stage2_init="random", routing="per-coordinate",
                  likelihood="mse", kl_weight=1.0),
    "default": dict(plan="matched", kl="tight", stage2_init="ae", routing="per-row", likelihood=None,
                    kl_weight=DEFAULT_KL_WEIGHT),
}
# The models whose loss is the likelihood plus a weighted KL (models/vae.py): --kl-weight applies to
# them; --preset sets X-VAE's, the standard VAE keeps the ELBO (1) unless the flag is given.
KL_WEIGHT_MODELS = ("xvae", "vae")
# --preset default's likelihood per data kind (docs/choosing-defaults.md)
DEFAULT_LIKELIHOOD = {"digits": "bernoulli", "mnist": "bernoulli", "celeba": "gaussian",
                      "images": "gaussian", "clusters": "gaussian", "npy": "gaussian",
                      # the 2-D benchmark: as the clusters (the learned variance explains the spread)
                      **dict.fromkeys(TOY2D_KINDS, "gaussian")}
# What a run saved before these options existed used (the paper's readings): filled in when an older
# checkpoint's config is read, so such runs still resume and sample.
LEGACY_VALUES = dict(preset="paper", kl="paper", stage2_init="random", routing="per-coordinate",
                     likelihood="mse", gamma_min=0.0, precision="fp32", channels_last="off",
                     em_backend="sklearn")
# Renamed options: a config file or checkpoint written with the old name still reads.
RENAMED = {"amp": ("precision", {"none": "fp32", "bf16": "bf16"})}
PRECISIONS = ("fp32", "bf16", "auto")     # training/precision.py
CHANNELS_LAST = ("auto", "on", "off")
SCHEDULES = ("none", "cosine")

# Keys that may differ between a checkpoint's config and the config given with --resume.
RUNTIME_KEYS = ("device", "progress", "tensorboard", "num_workers", "stop_after", "checkpoint_every",
                "resume", "config", "overwrite", "out", "threads", "compile", "auto_resume", "precision",
                "channels_last")


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
    kl_weight: Optional[float] = None        # xvae, vae: beta, the KL's weight in the trained loss
    likelihood: Optional[str] = None         # every model: mse | bernoulli | gaussian
    gamma_min: float = 0.0                   # gaussian likelihood: floor of the learned variance
    image_output: Optional[str] = None       # mse / gaussian on images: linear | sigmoid pixel mean
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
    binarize: str = "none"                   # none | dynamic: Bernoulli-redrawn training pixels (data/binarize.py)
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
    # related systems (docs/models.md); each option is used by one --model only
    arch: str = "library"                    # twostage, uae: library nets, or the paper's (SPEC-related 3.2/4.2)
    epochs_stage2: Optional[int] = None      # twostage: stage-2 epochs (default 2x --epochs-vae)
    stage2_latent: Optional[int] = None      # twostage: size of u (default K)
    stage2_width: int = 256                  # twostage: stage-2 MLP width (paper 1024)
    stage2_depth: int = 3                    # twostage: stage-2 MLP depth
    stage2_input: str = "sampled"            # twostage: sampled (fresh z each step) | mean (ablation)
    stage2_noise: bool = True                # twostage: generation adds the stage-2 decoder noise
    uae_variant: str = "uae"                 # uae: vae | utvae | vae-w | utvae-w | uae | rae-gp
    uae_form: str = "code"                   # uae: code (authors' reductions) | paper (Eqs. 8-12)
    uae_points: int = 8                      # uae: K sigma points (or samples) per example
    uae_heuristic: str = "random"            # uae: random | random-pairs | top-pairs
    uae_kappa: float = 1e-3                  # uae: sigma-point spread kappa
    uae_beta: Optional[float] = None         # uae: regulariser weight (default per form/variant)
    uae_gamma: Optional[float] = None        # uae: gradient-penalty weight (default 1e-6)
    expost_components: int = 10              # uae: full-covariance GMM components of the ex-post sampler
    introprior_prior: str = "ip"             # introprior: sg | fixed | ip (SPEC-related 1.1)
    introprior_weights: str = "learned"      # introprior: uniform | learned (LC) mixture weights
    introprior_components: Optional[int] = None   # introprior: M (default per dataset)
    introprior_mog_warmup: Optional[int] = None   # introprior: last warm-up epochs with the mixture
    epochs_game: Optional[int] = None        # introprior: epochs of the adversarial game
    introprior_beta_rec: Optional[float] = None   # introprior: b_rec (default per dataset)
    introprior_beta_kl: Optional[float] = None    # introprior: b_kl
    introprior_beta_neg: Optional[float] = None   # introprior: b_neg
    introprior_preset: str = "paper"         # introprior: 2-D betas from the paper's grid | the code
    introprior_mc: int = 100                 # introprior: T Monte Carlo draws per KL
    introprior_alpha: float = 2.0            # introprior: alpha of the exponential ELBO
    introprior_gamma: float = 1.0            # introprior: gamma (fake KL weight in LDP)
    introprior_gamma_r: float = 1e-8         # introprior: gamma_r (fake reconstruction weight in LDP)
    introprior_entropy: float = 0.0          # introprior: r_ent, responsibility-entropy weight
    introprior_clip: float = 10.0            # introprior: K of the adaptive soft clip (0: none)
    introprior_scale: Optional[float] = None      # introprior: s (default 1 / input size)
    introprior_lr_prior: Optional[float] = None   # introprior: the prior's Adam lr (default --lr)
    introprior_milestones: Optional[List[int]] = None   # introprior: lr x0.1 at these global steps
    introprior_code_parity: bool = False     # introprior: the code's Vamp->MoG weight conversion
    avae_centres: Optional[int] = None       # avae: KDE centres m (None: per dataset, <= half the rows)
    avae_val_fraction: float = 0.1           # avae: held-out share of the training set that sets beta
    avae_refresh_steps: int = 10             # avae: k_b, re-encode the centres every k_b global steps
    avae_beta: str = "rule"                  # avae: rule (Eq. 9) | rms | rms:V | const:V (code parity)
    avae_bandwidth: Optional[float] = None   # avae: the used bandwidth h in (0, 1) (None: the estimator)
    avae_kde_floor: Optional[float] = None   # avae: max_cdf of the code's floored log10 KDE (None: paper)
    avae_lr_plateau: Optional[int] = None    # avae: ReduceLROnPlateau patience in epochs (0: off)
    # prior fit (stage 1 -> 2)
    prior_fit: str = "auto"
    em_n_init: int = 3
    em_backend: str = "torch"                # torch (prior_fit / em.py) | sklearn (the reference)
    em_max_iter: int = 200
    em_tol: float = 1e-3
    em_var_floor: float = 1e-4
    em_weight_floor: float = 1e-3
    stage1_from: Optional[str] = None
    # runtime
    device: str = "auto"
    precision: str = "fp32"                  # fp32 | bf16 | auto (runtime; training/precision.py)
    channels_last: str = "auto"              # auto | on | off: NHWC conv weights (runtime)
    compile: bool = False                    # torch.compile the training step's loss (runtime only)
    threads: Optional[int] = None
    num_workers: int = 0
    out: Optional[str] = None
    overwrite: bool = False
    resume: Optional[str] = None
    auto_resume: bool = False       # --out DIR holding a checkpoint: resume it (torchrun restarts)
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
        for key, value in _renamed(d).items():
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
            d = _renamed(d)
            d = {**{k: v for k, v in LEGACY_VALUES.items() if k not in d}, **d}
            if "kl_weight" not in d and d.get("model", "xvae") in KL_WEIGHT_MODELS:
                d["kl_weight"] = 1.0      # runs before --kl-weight trained the ELBO
            if "image_output" not in d and d.get("likelihood") in ("mse", "gaussian") \
                    and parse_dataset_spec(d.get("dataset", "digits")).kind not in VECTOR_KINDS:
                d["image_output"] = "sigmoid"     # what mse / gaussian image runs used before the option
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
        return get_recipe(self.model).pretrains_autoencoder

    @property
    def is_baseline(self) -> bool:
        return self.model in BASELINES


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


def _positive_int(cfg, name, minimum=1):
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {v!r}")


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill dataset defaults and validate; returns a new, complete TrainConfig."""
    spec = parse_dataset_spec(cfg.dataset)
    defaults = dict(DEFAULTS[spec.kind])
    if cfg.model in RECIPES:   # a model's own per-dataset sizes and budgets win over the dataset's
        defaults.update(get_recipe(cfg.model).dataset_defaults.get(spec.kind, {}))
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
    cfg = _resolve_model_options(cfg, spec.kind)
    _choice(cfg, "em_backend", EM_BACKENDS)
    _choice(cfg, "binarize", ("none", "dynamic"))
    if cfg.binarize != "none" and spec.kind in VECTOR_KINDS:
        raise ConfigError(f"--binarize draws image pixels as Bernoulli(intensity); {spec.kind} is vector "
                          "data")
    _choice(cfg, "precision", PRECISIONS)
    _choice(cfg, "channels_last", CHANNELS_LAST)
    if cfg.lr_schedule not in SCHEDULES:
        raise ConfigError(f"--lr-schedule must be one of {SCHEDULES}, got {cfg.lr_schedule!r}")
    for name in ("lr", "alpha"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
            raise ConfigError(f"--{name} must be a positive finite number, got {v!r}")
    if not (isinstance(cfg.alphas, list) and cfg.alphas
            and all(isinstance(a, (int, float)) and not isinstance(a, bool) and 0 < a < float("inf")
                    for a in cfg.alphas)):
        raise ConfigError(f"--alphas must be a non-empty list of positive finite numbers, got "
                          f"{cfg.alphas!r}")
    if not 0 < cfg.test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {cfg.test_fraction!r}")
    for name in ("em_var_floor", "em_weight_floor", "em_tol", "grad_clip"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
            raise ConfigError(f"--{name.replace('_', '-')} must be a non-negative finite number, "
                              f"got {v!r}")
    # only the mixture X-VAE fits a K-component prior (the other models never read the floor)
    if cfg.uses_mixture and cfg.em_weight_floor * cfg.latent >= 1:
        raise ConfigError(f"--em-weight-floor {cfg.em_weight_floor:g} is too large for the C = K = "
                          f"{cfg.latent} components of --latent {cfg.latent} (it must be < 1/K = "
                          f"{1 / cfg.latent:.3g}); pass a smaller --em-weight-floor")
    if cfg.hidden is not None and not (isinstance(cfg.hidden, list) and cfg.hidden
                                       and all(isinstance(h, int) and h > 0 for h in cfg.hidden)):
        raise ConfigError(f"hidden must be a non-empty list of positive layer sizes, got {cfg.hidden!r}")
    if cfg.channels is not None and cfg.channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {cfg.channels!r}")
    return cfg


def check_training_rows(cfg: TrainConfig, n_train: int) -> None:
    """X-VAE fits its prior on the stage-1 latents of the training split, after stage 1 trained: too
    few rows for that fit are refused when a run starts (XVAERecipe.on_new_run), not after stage 1,
    which would leave a run folder that can never finish."""
    if cfg.model != "xvae" or not isinstance(cfg.latent, int):
        return
    from .errors import DataError
    from .prior_fit import MIN_ROWS_PER_COMPONENT
    if cfg.plan == "single":
        if n_train < 2:
            raise DataError(f"the single-Gaussian prior (--plan single) is fitted on the training "
                            f"split's stage-1 latents and needs at least 2 training rows; the data "
                            f"has {n_train} (--test-fraction {cfg.test_fraction:g}); use more data")
        return
    need = MIN_ROWS_PER_COMPONENT * cfg.latent
    if n_train < need:
        raise DataError(f"--latent {cfg.latent} fits a mixture prior of {cfg.latent} components on the "
                        f"training split's stage-1 latents, which needs at least {need} training rows "
                        f"({MIN_ROWS_PER_COMPONENT} per component); the data has {n_train} (--test-fraction "
                        f"{cfg.test_fraction:g}{f', --limit {cfg.limit}' if cfg.limit else ''}); use more "
                        "data" + (f", --latent {n_train // MIN_ROWS_PER_COMPONENT} or less, or --plan "
                                  "single" if n_train >= MIN_ROWS_PER_COMPONENT else ""))


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
    recipe = get_recipe(cfg.model) if cfg.model in RECIPES else None
    if recipe is not None and recipe.likelihoods is not None:
        choices["likelihood"] = recipe.likelihoods[0]   # the model's own likelihood, whatever the preset
    if cfg.model != "xvae":
        choices["kl_weight"] = 1.0 if cfg.model in KL_WEIGHT_MODELS else None
    if cfg.kl_weight is not None and cfg.model not in KL_WEIGHT_MODELS:
        raise ConfigError(f"--kl-weight weights the KL of --model {' or '.join(KL_WEIGHT_MODELS)}; "
                          f"--model {cfg.model} does not use it")
    changes = {k: v for k, v in choices.items() if getattr(cfg, k) is None}
    cfg = cfg.replace(**changes)
    _choice(cfg, "likelihood", LIKELIHOODS)
    if recipe is not None and recipe.likelihoods is not None and cfg.likelihood not in recipe.likelihoods:
        raise ConfigError(f"--model {cfg.model} uses --likelihood {' or '.join(recipe.likelihoods)} "
                          f"({recipe.likelihood_reason}), got --likelihood {cfg.likelihood}")
    cfg = _resolve_image_output(cfg, kind)
    g = cfg.gamma_min
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 <= g < float("inf"):
        raise ConfigError(f"--gamma-min must be a non-negative number, got {g!r}")
    if g > 0 and cfg.likelihood != "gaussian":
        raise ConfigError(f"--gamma-min floors the learned variance of --likelihood gaussian; this run "
                          f"uses --likelihood {cfg.likelihood}")
    w = cfg.kl_weight
    if w is not None and (isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w < float("inf")):
        raise ConfigError(f"--kl-weight must be a positive number (1: the ELBO), got {w!r}")
    xvae = cfg.model == "xvae"
    mixture = xvae and cfg.plan != "single"
    if xvae:
        _choice(cfg, "stage2_init", STAGE2_INITS)
    if mixture:
        _choice(cfg, "kl", KL_OBJECTIVES)
        _choice(cfg, "routing", ROUTINGS)
    return cfg.replace(kl=cfg.kl if mixture else None, routing=cfg.routing if mixture else None,
                       stage2_init=cfg.stage2_init if xvae else None,
                       kl_weight=float(w) if w is not None else None)


def _resolve_image_output(cfg: TrainConfig, kind: str) -> TrainConfig:
    """`image_output` applies to the mse and gaussian likelihoods on images. X-VAE and the paper's
    baselines take the linear mean under mse (a squared error through a sigmoid kills stage 1 for half
    the seeds on MNIST; models/likelihood.py). The gaussian likelihood, and the related systems that
    fix their own likelihood (uae, avae, introprior, twostage: their digits results were measured with
    it), keep the sigmoid until they are measured with the linear mean (docs/choosing-defaults.md)."""
    if cfg.image_output is not None:
        _choice(cfg, "image_output", IMAGE_OUTPUTS)
        if cfg.likelihood == "bernoulli":
            raise ConfigError("--image-output sets the pixel mean of --likelihood mse or gaussian; "
                              "bernoulli always maps its logits through a sigmoid")
        if kind in VECTOR_KINDS:
            raise ConfigError(f"--image-output applies to image data; {kind} is vector data, whose "
                              "mean is the decoder's output")
        return cfg
    if cfg.likelihood == "bernoulli" or kind in VECTOR_KINDS:
        return cfg
    own = cfg.model in RECIPES and get_recipe(cfg.model).likelihoods is not None
    return cfg.replace(image_output="linear" if cfg.likelihood == "mse" and not own else "sigmoid")


def _resolve_model_options(cfg: TrainConfig, kind: str) -> TrainConfig:
    """The chosen model's recipe fills and validates its own options; the options other models own
    go back to their defaults, so a saved config names only what the run uses."""
    recipe = get_recipe(cfg.model)
    defaults = TrainConfig()
    owned = set(recipe.options)
    others = {k for name, r in RECIPES.items() if name != cfg.model for k in r.options} - owned
    cfg = cfg.replace(**{k: getattr(defaults, k) for k in others})
    if cfg.arch not in recipe.archs:
        raise ConfigError(f"--arch {cfg.arch!r} is not available for --model {cfg.model}; it takes "
                          f"{', '.join(recipe.archs)}")
    return recipe.resolve_options(cfg, kind)
