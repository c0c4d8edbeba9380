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

import json
import os
import time
from typing import Any, Dict, Union

from ..config_io import load_config_file
from ..errors import ConfigError
from ..plans import PRESETS, Plan
from .autoencoder import Autoencoder
from .protocol import TERMS_VAE, ModelRecipe, Stage, prior_dict, register
from .vae import VAE

TERMS_AE = ("loss", "recon")
PLAN_NAMES = ("single",) + PRESETS
PRIOR_FITS = ("auto", "em", "single")


@register
class XVAERecipe(ModelRecipe):
    name = "xvae"
    title = "X-VAE"
    options = ("plan", "kl", "stage2_init", "routing", "prior_fit")
    pretrains_autoencoder = True

    @classmethod
    def resolve_options(cls, cfg, kind):
        plan = parse_plan(cfg.plan)
        cfg = cfg.replace(plan=plan)
        if isinstance(plan, dict) and len(plan["coordinates"]) != cfg.latent:
            raise ConfigError(f"the custom plan has {len(plan['coordinates'])} coordinates but the "
                              f"latent size (--latent) is {cfg.latent}")
        if cfg.epochs_ae < 1 and cfg.stage1_from is None:
            raise ConfigError("X-VAE needs a trained stage-1 autoencoder: --epochs-ae must be >= 1 "
                              "(or reuse one with --stage1-from RUN_DIR)")
        if cfg.prior_fit not in PRIOR_FITS:
            raise ConfigError(f"--prior-fit must be one of {PRIOR_FITS}, got {cfg.prior_fit!r}")
        if cfg.plan == "single" and cfg.prior_fit == "em":
            raise ConfigError("plan 'single' uses the single-Gaussian prior; --prior-fit em needs a "
                              "mixture plan")
        if cfg.plan != "single" and cfg.prior_fit == "single":
            raise ConfigError(f"plan {cfg.plan_name!r} routes over a C = K mixture prior; "
                              "--prior-fit single is only for --plan single")
        return cfg

    def __init__(self, cfg, info, ops=None):
        self.prior_report = None
        self.stage1_source = None
        super().__init__(cfg, info, ops)

    @property
    def display_name(self) -> str:
        return f"X-VAE ({self.cfg.plan_name})"

    def build(self):
        c, i = self.cfg, self.info
        ae = Autoencoder(i.kind, i.shape, c.latent, self.hidden, likelihood=self.likelihood())
        if c.plan == "single":
            mode, plan = "single", None
        else:
            mode, plan = "mixture", c.build_plan()
        vae = VAE(i.kind, i.shape, c.latent, mode, plan, kl=c.kl or "paper", routing=c.routing or "per-row",
                  kl_weight=c.kl_weight if c.kl_weight is not None else 1.0,
                  hidden=self.hidden, ops=self.ops, likelihood=self.likelihood())
        return {"ae": ae, "vae": vae}

    def stages(self):
        return [Stage("ae", "train", "AE", self.cfg.epochs_ae, TERMS_AE, module="ae"),
                Stage("prior", "fit", "prior fit", module="ae"),
                Stage("vae", "train", "VAE", self.cfg.epochs_vae, TERMS_VAE)]

    # -- the prior fit ------------------------------------------------------------------------------
    def fit(self, stage, trainer) -> None:
        from ..prior_fit import describe_fit, fit_mixture, fit_single
        cfg, ae, vae = self.cfg, self.modules["ae"], self.modules["vae"]
        t0 = time.time()
        z = trainer.encode(ae.encode, "train")
        if cfg.plan == "single":
            fit = fit_single(z, cfg.em_var_floor)
        else:
            # the torch EM runs where the run does (the codes come back on the CPU)
            fit = fit_mixture(z.to(trainer.device) if cfg.em_backend == "torch" else z, cfg.latent,
                              seed=cfg.seed, n_init=cfg.em_n_init, max_iter=cfg.em_max_iter,
                              tol=cfg.em_tol, var_floor=cfg.em_var_floor,
                              weight_floor=cfg.em_weight_floor, backend=cfg.em_backend)
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
        if cfg.stage2_init == "ae":
            vae.init_from_autoencoder(ae)
            trainer.log("stage 2 initialised from the stage-1 autoencoder (--stage2-init ae)")

    def check_stage_ready(self, stage):
        if stage.name == "vae" and self.modules["vae"].prior is None:
            return "stage 2 needs the prior, but the checkpoint holds none"
        return None

    # -- reusing another run's stage 1 --------------------------------------------------------------
    def on_new_run(self, trainer) -> None:
        from ..config import check_training_rows
        # the prior fit comes after stage 1: too few rows for it are refused before anything trains
        check_training_rows(self.cfg, len(trainer.data.train))
        source = self.cfg.stage1_from
        if not source:
            return
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
        trainer.history = [r for r in ck["history"] if r.get("stage") == "ae"]
        trainer.stage = "prior"
        self.stage1_source = os.path.abspath(source)
        trainer.log(f"stage 1: reusing the autoencoder of {source}")

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
        (models/expost.py; `evaluate` reports it through its own --expost)."""
        prior = self.modules["vae"].prior
        if self.modules.get("ae") is None or prior is None:
            return {}
        from .expost import ExPostModel
        return {"expost": ExPostModel(self.modules["ae"], prior, "per-row", self.ops).eval()}

    def summary(self) -> Dict[str, Any]:
        ae = self.modules["ae"]
        return {"prior_fit": self.prior_report,
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


