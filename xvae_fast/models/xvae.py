"""X-VAE (paper 000, SPEC.md): stage 1 a deterministic autoencoder; then a single Gaussian or a C = K
diagonal mixture fitted on its latents becomes the frozen prior; stage 2 the VAE with that prior and a
routed-transport plan (`models.vae.VAE`). The recipe the trainer drives (models/protocol.py):

  ae      train: the autoencoder (the likelihood's negative log-likelihood, Adam)
  prior   fit: the prior on the stage-1 latents of the training set (EM, scikit-learn), then the
          stage-2 initialisation (--stage2-init ae copies the autoencoder)
  vae     train: the VAE with the frozen prior

`--stage1-from RUN` reuses another run's trained autoencoder (the run starts at `prior`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Dict, Optional, Union

from ..config_io import load_config_file
from ..errors import ConfigError
from ..ops.functional import ROUTINGS
from ..options import option
from ..ops.plans import PRESETS, Plan
from .prior_fit import BACKENDS as EM_BACKENDS
from .autoencoder import Autoencoder
from .protocol import TERMS_VAE, ModelRecipe, Stage, StartAt, prior_dict, register
from .vae import KL_OBJECTIVES, VAE, KLWeightOption

TERMS_AE = ("loss", "recon")
PLAN_NAMES = ("single",) + PRESETS
PRIOR_FITS = ("auto", "em", "single")
STAGE2_INITS = ("ae", "random")
# X-VAE's stage-2 KL weight under --preset default (docs/choosing-defaults.md, "Stage 2 against its
# ex-post reference")
DEFAULT_KL_WEIGHT = 0.25
# The stage-2 method under each --preset (SPEC Revision 2). `paper` is the paper read literally (Eq. 18,
# plan `full`, a randomly initialised stage 2, Eq. 20's per-coordinate generation; its squared error is
# the shared --likelihood, config.py); `default` is the library's, chosen by the measurements in
# docs/choosing-defaults.md.
METHOD_CHOICES = {
    "paper": dict(plan="full", kl="paper", stage2_init="random", routing="per-coordinate", kl_weight=1.0),
    "default": dict(plan="matched", kl="tight", stage2_init="ae", routing="per-row",
                    kl_weight=DEFAULT_KL_WEIGHT),
}
PRESET_TEXT = "from --preset: default {}, paper {}"


def _preset_default(name: str) -> str:
    return PRESET_TEXT.format(METHOD_CHOICES["default"][name], METHOD_CHOICES["paper"][name])


@dataclasses.dataclass
class XVAEOptions(KLWeightOption):
    """X-VAE's options: the stage-2 method (SPEC Revision 2) and the prior fit between the stages."""
    plan: Union[str, Dict[str, Any], None] = option(
        None, "configuration: single, full, interleaved, split-2/3, split-1/3, k1-pp-np, k1-pq-np, "
        "k1-pp-nq, k1-pq-nq, matched, a custom plan file (JSON/YAML, one entry per latent coordinate) or "
        "inline JSON", type="plan", metavar="NAME|FILE", default_text=_preset_default("plan"))
    kl: Optional[str] = option(
        None, "mixture KL: paper (Eq. 18, batch pi_q), tight (Lemma 1 at the optimal per-row weights, no "
        "logits head), mixture (Lemma 1 with the encoder's per-row weights); mixture plans only",
        type="str", choices=KL_OBJECTIVES, optional=True, default_text=_preset_default("kl"))
    stage2_init: Optional[str] = option(
        None, "start stage 2 from the stage-1 autoencoder's encoder and decoder (ae) or from random "
        "weights (random, the paper)", type="str", choices=STAGE2_INITS, default_text=_preset_default("stage2_init"))
    routing: Optional[str] = option(
        None, "generation: one prior component per sample (per-row: exact sampling of the fitted "
        "mixture) or per coordinate (the paper's Eq. 20); used by the run's outputs, sample and evaluate; "
        "mixture plans only", type="str", choices=ROUTINGS, optional=True, default_text=_preset_default("routing"))
    prior_fit: str = option("auto", "auto: single for --plan single, else the EM mixture",
                            choices=PRIOR_FITS)
    em_backend: str = option(
        "torch", "the EM of the mixture prior: torch (scikit-learn's algorithm in float64 on the run's "
        "device, the fused E-step; ~4x faster on MNIST) or sklearn (GaussianMixture, the reference)",
        choices=EM_BACKENDS)
    em_n_init: int = option(3, "EM restarts, the best kept", metavar="N", minimum=1)
    em_max_iter: int = option(200, "EM iteration cap", metavar="N", minimum=1)
    em_tol: float = option(1e-3, "EM convergence tolerance", minimum=0)
    em_var_floor: float = option(1e-4, "variance floor, relative to the latents' mean variance", minimum=0)
    em_weight_floor: float = option(1e-3, "minimum mixture weight before renormalising (< 1/K)", minimum=0)
    stage1_from: Optional[str] = option(
        None, "reuse the trained autoencoder of another run (same data and latent size) and skip stage 1",
        type="str", metavar="RUN_DIR", optional=True)

    def finish(self, cfg, kind):
        if self.plan == "single" and (self.kl is not None or self.routing is not None):
            raise ConfigError(f"--{'kl' if self.kl is not None else 'routing'} applies to the mixture "
                              "plans; --plan single has one Gaussian prior component")
        choices = METHOD_CHOICES[cfg.preset]
        opts = self.replace(**{k: v for k, v in choices.items() if getattr(self, k) is None})
        plan = parse_plan(opts.plan)
        opts = opts.replace(plan=plan)
        if isinstance(plan, dict) and len(plan["coordinates"]) != cfg.latent:
            raise ConfigError(f"the custom plan has {len(plan['coordinates'])} coordinates but the "
                              f"latent size (--latent) is {cfg.latent}")
        mixture = plan != "single"
        # kl and routing apply to the mixture plans: the saved config names what the run did
        opts = opts.replace(kl=opts.kl if mixture else None, routing=opts.routing if mixture else None,
                            kl_weight=float(opts.kl_weight))
        if cfg.epochs_ae < 1 and opts.stage1_from is None:
            raise ConfigError("X-VAE needs a trained stage-1 autoencoder: --epochs-ae must be >= 1 "
                              "(or reuse one with --stage1-from RUN_DIR)")
        if plan == "single" and opts.prior_fit == "em":
            raise ConfigError("plan 'single' uses the single-Gaussian prior; --prior-fit em needs a "
                              "mixture plan")
        if mixture and opts.prior_fit == "single":
            raise ConfigError(f"plan {plan_name(plan)!r} routes over a C = K mixture prior; "
                              "--prior-fit single is only for --plan single")
        # only the mixture fits a K-component prior
        if mixture and opts.em_weight_floor * cfg.latent >= 1:
            raise ConfigError(f"--em-weight-floor {opts.em_weight_floor:g} is too large for the C = K = "
                              f"{cfg.latent} components of --latent {cfg.latent} (it must be < 1/K = "
                              f"{1 / cfg.latent:.3g}); pass a smaller --em-weight-floor")
        return opts


def check_training_rows(cfg, plan, n_train: int) -> None:
    """X-VAE fits its prior on the stage-1 latents of the training split, after stage 1 trained: too
    few rows for that fit are refused when a run starts (XVAERecipe.on_new_run), not after stage 1,
    which would leave a run folder that can never finish."""
    from ..errors import DataError
    from .prior_fit import MIN_ROWS_PER_COMPONENT
    if plan == "single":
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


def plan_name(plan) -> str:
    if isinstance(plan, dict):
        return str(plan.get("name", "custom"))
    return str(plan)


@register
class XVAERecipe(ModelRecipe):
    name = "xvae"
    title = "X-VAE"
    Options = XVAEOptions
    pretrains_autoencoder = True
    reference_samplers = ("expost",)

    def __init__(self, cfg, info, ops=None):
        self.prior_report = None
        self.stage1_source = None
        super().__init__(cfg, info, ops)

    @property
    def display_name(self) -> str:
        return f"X-VAE ({self.cfg.plan_name})"

    def build(self):
        c, o, i = self.cfg, self.opts, self.info
        ae = Autoencoder(i.kind, i.shape, c.latent, self.hidden, likelihood=self.likelihood())
        if o.plan == "single":
            mode, plan = "single", None
        else:
            mode, plan = "mixture", c.build_plan()
        vae = VAE(i.kind, i.shape, c.latent, mode, plan, kl=o.kl or "paper", routing=o.routing or "per-row",
                  kl_weight=o.kl_weight,
                  hidden=self.hidden, ops=self.ops, likelihood=self.likelihood())
        return {"ae": ae, "vae": vae}

    def stages(self):
        return [Stage("ae", "train", "AE", self.cfg.epochs_ae, TERMS_AE, module="ae"),
                Stage("prior", "fit", "prior fit", module="ae"),
                Stage("vae", "train", "VAE", self.cfg.epochs_vae, TERMS_VAE)]

    # -- the prior fit ------------------------------------------------------------------------------
    def fit(self, stage, trainer) -> None:
        from .prior_fit import describe_fit, fit_mixture, fit_single
        cfg, o, ae, vae = self.cfg, self.opts, self.modules["ae"], self.modules["vae"]
        t0 = time.time()
        z = trainer.encode(ae.encode, "train")
        if o.plan == "single":
            fit = fit_single(z, o.em_var_floor)
        else:
            # the torch EM runs where the run does (the codes come back on the CPU)
            fit = fit_mixture(z.to(trainer.device) if o.em_backend == "torch" else z, cfg.latent,
                              seed=cfg.seed, n_init=o.em_n_init, max_iter=o.em_max_iter,
                              tol=o.em_tol, var_floor=o.em_var_floor,
                              weight_floor=o.em_weight_floor, backend=o.em_backend)
        fit.report["seconds"] = round(time.time() - t0, 3)
        try:
            vae.set_prior(fit.prior)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.prior_report = fit.report
        trainer.write_json(fit.report, "prior_fit.json")
        trainer.log("prior: " + describe_fit(fit.report))
        if not fit.report["converged"]:
            trainer.log("warning: EM did not converge; the prior is the last iterate")
        if o.stage2_init == "ae":
            vae.init_from_autoencoder(ae)
            trainer.log("stage 2 initialised from the stage-1 autoencoder (--stage2-init ae)")

    def check_stage_ready(self, stage):
        if stage.name == "vae" and self.modules["vae"].prior is None:
            return "stage 2 needs the prior, but the checkpoint holds none"
        return None

    # -- reusing another run's stage 1 --------------------------------------------------------------
    def on_new_run(self, trainer) -> Optional[StartAt]:
        # the prior fit comes after stage 1: too few rows for it are refused before anything trains
        check_training_rows(self.cfg, self.opts.plan, len(trainer.data.train))
        source = self.opts.stage1_from
        if not source:
            return None
        ck, src, path = trainer.read_run(source)
        if src.model != self.name or ck["models"].get("ae") is None:
            raise ConfigError(f"--stage1-from {source!r}: that run has no stage-1 autoencoder")
        if ck["stage"] not in ("prior", "vae", "outputs", "done"):
            raise ConfigError(f"--stage1-from {source!r}: that run has not finished stage 1 "
                              f"(it is at stage {ck['stage']!r}); resume it first")
        if src.latent != self.cfg.latent:
            raise ConfigError(f"latent size mismatch between stages: the stage-1 autoencoder in "
                              f"{source!r} has latent size {src.latent}, but this run's VAE has "
                              f"--latent {self.cfg.latent}; the AE and VAE must share K")
        if src.dataset != self.cfg.dataset or tuple(ck["data_info"]["shape"]) != self.info.shape:
            raise ConfigError(f"--stage1-from {source!r} was trained on {src.dataset} "
                              f"{tuple(ck['data_info']['shape'])}, not {self.cfg.dataset} "
                              f"{self.info.shape}")
        if src.likelihood != self.cfg.likelihood:
            raise ConfigError(f"--stage1-from {source!r}: that autoencoder was trained with --likelihood "
                              f"{src.likelihood}, this run uses --likelihood {self.cfg.likelihood}; the "
                              "stages share one likelihood (pass the same --likelihood)")
        trainer.load_module_state(self.modules["ae"], ck["models"]["ae"], "stage-1 autoencoder", path)
        self.stage1_source = os.path.abspath(source)
        trainer.log(f"stage 1: reusing the autoencoder of {source}")
        return StartAt("prior", tuple(r for r in ck["history"] if r.get("stage") == "ae"))

    # -- checkpoint and summary -------------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        prior = self.modules["vae"].prior
        return {"prior": prior_dict(prior) if prior is not None else None,
                "prior_fit": self.prior_report, "stage1_source": self.stage1_source}

    def load_state(self, ck, path) -> None:
        super().load_state(ck, path)
        self.prior_report = ck.get("prior_fit")
        self.stage1_source = ck.get("stage1_source")

    def reference_models(self):
        """The ex-post reference: the stage-1 autoencoder decoding per-row samples of the fitted prior
        (models/expost.py), the sampler stage 2 must beat; available once the prior is fitted."""
        prior = self.modules["vae"].prior
        if self.modules.get("ae") is None or prior is None:
            return {}
        from .expost import ExPostModel
        return {"expost": ExPostModel(self.modules["ae"], prior, "per-row", self.ops).eval()}

    def summary(self) -> Dict[str, Any]:
        ae, o = self.modules["ae"], self.opts
        return {"kl_objective": o.kl, "stage2_init": o.stage2_init, "routing": o.routing,
                "kl_weight": o.kl_weight, "prior_fit": self.prior_report,
                # X-VAE's one-time stage-1 autoencoder, not counted in Table 4
                "stage1_params": int(sum(p.numel() for p in ae.parameters() if p.requires_grad))}


def parse_plan(plan) -> Union[str, Dict[str, Any]]:
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


