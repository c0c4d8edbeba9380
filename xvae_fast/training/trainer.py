"""The two-stage X-VAE trainer.

Stages (the checkpoint records which one a run is in):
  ae       stage 1: deterministic autoencoder, MSE (sum per example), Adam
  prior    fit the frozen prior on the stage-1 latents of the training set (single or EM mixture)
  vae      stage 2: the VAE with the frozen prior and the chosen configuration; loss = recon + KL
  outputs  reconstructions, samples, alpha sweep, curves, summary (Table 1 form)
  done
The standard VAE (`--model vae`) starts at `vae` with the N(0, I) prior; so do the other baselines
(`vamp`, `hierarchical`, `mog`, `gmvae`; docs/baselines.md), whose priors are learned with the model.

Repeatability: every random draw comes from the seeded global torch RNG (model initialisation and
the latent noise of the ops) or the seeded shuffling generator; checkpoints store both, with the
step inside the epoch, so `--resume` continues exactly where the run stopped. Evaluation and the
output figures use their own fixed seeds in a forked RNG and never disturb the training stream.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Set

import numpy as np
import torch

from .. import __version__
from ..config import LEARNED_PRIOR_MODELS, RUNTIME_KEYS, TrainConfig, resolve, save_config
from ..data import DataBundle, DataInfo, describe, load_dataset, parse_dataset_spec
from ..errors import CheckpointError, ConfigError, NonFiniteLossError
from ..models import build_models, get_ops, ops_name
from ..prior import MixturePrior
from ..prior_fit import describe_fit, fit_mixture, fit_single
from . import checkpoint as ckpt
from .metrics import TensorBoardLogger, table_row, write_json, write_metrics

TERMS_AE = ("loss", "recon")
TERMS_VAE = ("loss", "recon", "kl", "kl_cat", "kl_gauss")
EVAL_SEED_OFFSET = 1_000_003
MODEL_NAMES = {"vae": "standard VAE (N(0, I) prior)", "vamp": "VampPrior VAE",
               "hierarchical": "Hierarchical VAE", "mog": "Standard MoG VAE",
               "gmvae": "GM-VAE (Gumbel-Softmax)"}


class _Stopped(Exception):
    pass


@dataclasses.dataclass
class RunResult:
    status: str            # "done" or "stopped" (--stop-after)
    run_dir: str
    step: int
    summary: Optional[Dict[str, Any]] = None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown --device {name!r}; use cpu, cuda, cuda:N or auto") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} asked for CUDA, but this torch has no usable CUDA "
                              f"device (torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA devices")
    elif dev.type != "cpu":
        raise ConfigError(f"unsupported --device {name!r}; use cpu, cuda, cuda:N or auto")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def default_run_dir(cfg: TrainConfig) -> str:
    kind = parse_dataset_spec(cfg.dataset).kind
    plan = cfg.plan_name.replace("/", "of")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if plan == cfg.model:  # the learned-prior baselines have no plan
        return os.path.join("runs", f"{kind}-{cfg.model}-{stamp}")
    return os.path.join("runs", f"{kind}-{cfg.model}-{plan}-{stamp}")


def _explicit_changes(cfg: TrainConfig, explicit: Optional[Set[str]]) -> Dict[str, Any]:
    defaults = TrainConfig()
    keys = explicit if explicit is not None else {
        k for k in TrainConfig.field_names() if getattr(cfg, k) != getattr(defaults, k)}
    return {k: getattr(cfg, k) for k in keys}


class Trainer:
    """Build with a TrainConfig (flags / file merged); `run()` trains to the end (or to
    --stop-after) and returns a RunResult. `explicit` names the options the user set (for the
    consistency check on --resume); by default every non-default option counts as set."""

    def __init__(self, cfg: TrainConfig, explicit: Optional[Set[str]] = None, verbose: bool = True):
        self.verbose = verbose
        self.resume_ck = None
        if cfg.resume:
            cfg = self._config_for_resume(cfg, explicit)
        else:
            cfg = resolve(cfg)
        self.cfg = cfg
        self.run_dir = self._prepare_run_dir()
        self._threads_before = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = pick_device(cfg.device)
        if cfg.amp == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("--amp bf16 needs a GPU with bfloat16 support")
        self.tb = TensorBoardLogger(self.run_dir) if cfg.tensorboard else None
        self.ops = get_ops(device=self.device)
        seed_everything(cfg.seed)
        self.data: DataBundle = load_dataset(cfg)
        self.info: DataInfo = self.data.info
        self._check_likelihood_data()
        self.ae, self.vae = build_models(cfg, self.info, self.ops)
        if hasattr(self.vae, "set_total_steps"):  # schedules over the training (GM-VAE temperature)
            self.vae.set_total_steps(cfg.epochs_vae * self._steps_per_epoch())
        if self.ae is not None:
            self.ae.to(self.device)
        self.vae.to(self.device)
        self.opt = {"vae": torch.optim.Adam(self.vae.parameters(), lr=cfg.lr)}
        if self.ae is not None:
            self.opt["ae"] = torch.optim.Adam(self.ae.parameters(), lr=cfg.lr)
        self.sched = {k: self._make_scheduler(k) for k in self.opt}
        self.shuffle = torch.Generator().manual_seed(cfg.seed)
        self.epoch_shuffle_state = self.shuffle.get_state()
        self.stage = "ae" if cfg.has_stage1 else "vae"
        self.epoch = 0          # epochs completed in the current stage
        self.batch = 0          # batches completed in the current epoch
        self.step = 0           # optimizer steps over both stages
        self.history: List[Dict[str, Any]] = []
        self.running: Dict[str, float] = {}
        self.prior_report: Optional[Dict[str, Any]] = None
        self.stage1_source: Optional[str] = None
        self.last_checkpoint_step: Optional[int] = None
        self.t_start = time.time()
        if self.resume_ck is not None:
            self._restore(self.resume_ck)
            self.log(f"resumed {self.run_dir} at stage {self.stage}, epoch {self.epoch + 1}, "
                     f"batch {self.batch}, step {self.step}")
        else:
            save_config(cfg.replace(stop_after=0, overwrite=False, resume=None, config=None),
                        os.path.join(self.run_dir, "config.yaml"))
            if cfg.stage1_from and cfg.has_stage1:
                self._load_stage1(cfg.stage1_from)
        self.log(f"data {describe(self.data)}; model {self.model_name}; ops {ops_name(self.ops)}; "
                 f"device {self.device}")

    # -- setup helpers ------------------------------------------------------------------------------
    def _check_likelihood_data(self) -> None:
        """`bernoulli` models data in [0, 1]: refuse other data up front (image files are [0, 1] by
        construction; tensors held in memory are checked)."""
        if self.cfg.likelihood != "bernoulli":
            return
        from ..models.likelihood import check_bernoulli_data
        for name, ds in (("training", self.data.train), ("test", self.data.test)):
            if ds.in_memory and len(ds):
                msg = check_bernoulli_data(ds.get_batch(torch.arange(len(ds))),
                                           f"the {name} data ({self.info.name}, model space)")
                if msg:
                    raise ConfigError(msg)

    @property
    def model_name(self) -> str:
        if self.cfg.model in MODEL_NAMES:
            return MODEL_NAMES[self.cfg.model]
        return f"X-VAE ({self.cfg.plan_name})"

    def log(self, msg: str) -> None:
        line = f"[xvae_fast] {msg}"
        if self.verbose:
            try:
                from tqdm import tqdm
                tqdm.write(line, file=sys.stderr)
            except Exception:
                print(line, file=sys.stderr)
        if getattr(self, "run_dir", None):
            with open(os.path.join(self.run_dir, "train.log"), "a", encoding="utf-8") as f:
                f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + msg + "\n")

    def _config_for_resume(self, cfg: TrainConfig, explicit: Optional[Set[str]]) -> TrainConfig:
        run = cfg.resume
        ck = ckpt.load_checkpoint(run)
        try:
            saved = TrainConfig.from_saved(ck["config"])
        except ConfigError as exc:
            raise CheckpointError(f"checkpoint in {run!r} has an unreadable config: {exc}") from exc
        given = _explicit_changes(cfg, explicit)
        structural = {k: v for k, v in given.items() if k not in RUNTIME_KEYS}
        try:
            candidate = resolve(saved.replace(**structural))
        except ConfigError as exc:
            raise CheckpointError(f"cannot resume {run!r} with these options: {exc}") from exc
        diffs = [f"{k} (checkpoint: {getattr(saved, k)!r}, given: {getattr(candidate, k)!r})"
                 for k in TrainConfig.field_names()
                 if k not in RUNTIME_KEYS and getattr(saved, k) != getattr(candidate, k)]
        if diffs:
            raise CheckpointError(f"cannot resume {run!r}: the options differ from the run's saved "
                                  f"config in {'; '.join(diffs)}. Start a new run with --out instead, "
                                  "or drop these options")
        runtime = {k: v for k, v in given.items()
                   if k in RUNTIME_KEYS and k not in ("out", "config", "resume", "overwrite")}
        run_dir = run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run))
        self.resume_ck = ck
        saved = saved.replace(stop_after=0, overwrite=False)  # session controls do not carry over
        return saved.replace(**runtime, out=run_dir, resume=run)

    def _prepare_run_dir(self) -> str:
        cfg = self.cfg
        if cfg.resume:
            return cfg.out
        out = cfg.out or default_run_dir(cfg)
        existing = os.path.join(out, ckpt.CHECKPOINT)
        if os.path.exists(existing):
            if not cfg.overwrite:
                raise ConfigError(f"run folder {out!r} already holds a run; continue it with "
                                  f"--resume {out}, or pass --overwrite or another --out")
            for name in os.listdir(out):
                p = os.path.join(out, name)
                if os.path.isdir(p):
                    shutil.rmtree(p)
                else:
                    os.unlink(p)
        os.makedirs(out, exist_ok=True)
        self.cfg = cfg = cfg.replace(out=out)
        return out

    def _steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.data.train) / self.cfg.batch_size))

    def _make_scheduler(self, stage: str):
        if self.cfg.lr_schedule == "none":
            return None
        epochs = self.cfg.epochs_ae if stage == "ae" else self.cfg.epochs_vae
        total = max(1, epochs * self._steps_per_epoch())
        return torch.optim.lr_scheduler.CosineAnnealingLR(self.opt[stage], T_max=total)

    def _load_stage1(self, source: str) -> None:
        """Reuse the trained autoencoder of another run (skip stage 1; the prior is refitted)."""
        ck = ckpt.load_checkpoint(source)
        src = TrainConfig.from_saved(ck["config"])
        path = ckpt.checkpoint_path(source)
        if src.model != "xvae" or ck["models"].get("ae") is None:
            raise ConfigError(f"--stage1-from {source!r}: that run has no stage-1 autoencoder")
        src_stage_done = ck["stage"] in ("prior", "vae", "outputs", "done")
        if not src_stage_done:
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
        ckpt.load_state(self.ae, ck["models"]["ae"], "stage-1 autoencoder", path)
        self.history = [r for r in ck["history"] if r.get("stage") == "ae"]
        self.stage = "prior"
        self.stage1_source = os.path.abspath(source)
        self.log(f"stage 1: reusing the autoencoder of {source}")

    # -- checkpoints --------------------------------------------------------------------------------
    def _checkpoint_dict(self) -> Dict[str, Any]:
        shuffle_state = self.epoch_shuffle_state if self.batch > 0 else self.shuffle.get_state()
        prior = None
        if self.vae.prior is not None:
            p = self.vae.prior
            prior = {"weights": p.weights.cpu(), "means": p.means.cpu(), "stds": p.stds.cpu()}
        return {
            "format": ckpt.FORMAT, "version": ckpt.VERSION, "xvae_fast_version": __version__,
            "torch_version": str(torch.__version__),
            "config": self.cfg.to_dict(), "stage": self.stage, "epoch": self.epoch,
            "batch": self.batch, "step": self.step,
            "models": {"ae": self.ae.state_dict() if self.ae is not None else None,
                       "vae": self.vae.state_dict()},
            "optimizers": {k: o.state_dict() for k, o in self.opt.items()},
            "schedulers": {k: (s.state_dict() if s is not None else None) for k, s in self.sched.items()},
            "prior": prior, "prior_fit": self.prior_report, "stage1_source": self.stage1_source,
            "rng": ckpt.capture_rng(shuffle_state),
            "data_info": self.info.to_dict(), "history": self.history, "running": dict(self.running),
        }

    def save_checkpoint(self) -> str:
        path = os.path.join(self.run_dir, ckpt.CHECKPOINT)
        ckpt.atomic_save(self._checkpoint_dict(), path)
        self.last_checkpoint_step = self.step
        return path

    def _restore(self, ck: Dict[str, Any]) -> None:
        path = ckpt.checkpoint_path(self.cfg.resume)
        shape = tuple(ck["data_info"]["shape"])
        if shape != self.info.shape or ck["data_info"]["kind"] != self.info.kind:
            raise CheckpointError(f"checkpoint {path!r} was trained on {ck['data_info']['kind']} data of "
                                  f"shape {shape}, but the data now has shape {self.info.shape}")
        if ck["prior"] is not None:
            p = ck["prior"]
            try:
                prior = MixturePrior(p["weights"], p["means"], p["stds"])
                self.vae.set_prior(prior)
            except ValueError as exc:
                raise CheckpointError(f"checkpoint {path!r} holds an unusable prior: {exc}") from exc
        if self.ae is not None:
            ckpt.load_state(self.ae, ck["models"]["ae"], "autoencoder", path)
        ckpt.load_state(self.vae, ck["models"]["vae"], "VAE", path)
        for k, o in self.opt.items():
            state = ck["optimizers"].get(k)
            if state is None:
                raise CheckpointError(f"checkpoint {path!r} has no optimizer state for stage {k!r}")
            try:
                o.load_state_dict(state)
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"checkpoint {path!r}: optimizer state for {k!r} does not match "
                                      f"the model: {exc}") from exc
            s = self.sched.get(k)
            if s is not None and ck["schedulers"].get(k) is not None:
                s.load_state_dict(ck["schedulers"][k])
        self.stage, self.epoch, self.batch, self.step = ck["stage"], ck["epoch"], ck["batch"], ck["step"]
        self.history = list(ck["history"])
        self.running = dict(ck["running"])
        self.prior_report = ck.get("prior_fit")
        self.stage1_source = ck.get("stage1_source")
        state = ckpt.restore_rng(ck["rng"])
        self.shuffle.set_state(state)
        self.epoch_shuffle_state = state
        self.last_checkpoint_step = self.step

    # -- training -----------------------------------------------------------------------------------
    def _autocast(self):
        if self.cfg.amp == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _batches(self, ds, order: torch.Tensor, start: int, stop: int) -> Iterable[torch.Tensor]:
        bs = self.cfg.batch_size
        slices = [order[b * bs:(b + 1) * bs] for b in range(start, stop)]
        if ds.in_memory or self.cfg.num_workers == 0 or not slices:
            for idx in slices:
                yield ds.get_batch(idx)
            return
        loader = torch.utils.data.DataLoader(ds, batch_sampler=[s.tolist() for s in slices],
                                             num_workers=self.cfg.num_workers,
                                             pin_memory=self.device.type == "cuda")
        yield from loader

    def _nonfinite(self, stage: str, values: Dict[str, float], what: str) -> NonFiniteLossError:
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        last = (f"the last good checkpoint is {os.path.join(self.run_dir, ckpt.CHECKPOINT)} (step "
                f"{self.last_checkpoint_step})" if self.last_checkpoint_step is not None
                else "no checkpoint was written before it")
        vals = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        diag = {"stage": stage, "epoch": self.epoch + 1, "batch": self.batch + 1, "step": self.step + 1,
                "terms": values, "non_finite": bad, "what": what,
                "last_checkpoint_step": self.last_checkpoint_step}
        msg = (f"non-finite {what} in stage {'1 (autoencoder)' if stage == 'ae' else '2 (VAE)'} at "
               f"step {self.step + 1} (epoch {self.epoch + 1}, batch {self.batch + 1}): "
               f"{', '.join(bad) or what} is NaN/inf [{vals}]; {last}. Try a lower --lr or "
               "--grad-clip, or check the data for extreme values")
        return NonFiniteLossError(msg, diag)

    def _set_model_step(self, model) -> None:
        """Step-dependent schedules of a model (the GM-VAE's Gumbel temperature) are functions of the
        global optimizer step, so a resumed run continues them exactly."""
        hook = getattr(model, "set_step", None)
        if hook is not None:
            hook(self.step)

    def _train_step(self, stage: str, model, x: torch.Tensor) -> Dict[str, float]:
        terms_names = TERMS_AE if stage == "ae" else TERMS_VAE
        opt = self.opt[stage]
        self._set_model_step(model)
        with self._autocast():
            terms = model.loss(x)
        vec = torch.stack([terms[k].detach().float() for k in terms_names]).cpu()
        values = dict(zip(terms_names, vec.tolist()))
        if not bool(torch.isfinite(vec).all()):
            raise self._nonfinite(stage, values, "loss")
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
        opt.step()
        sched = self.sched[stage]
        if sched is not None:
            sched.step()
        params = [p for p in model.parameters()]
        if not bool(torch.isfinite(torch.stack(torch._foreach_norm(params))).all()):
            bad = next(n for n, p in model.named_parameters() if not torch.isfinite(p).all())
            raise self._nonfinite(stage, values, f"weights after the update ({bad})")
        return values

    @torch.no_grad()
    def evaluate(self, stage: str, ds) -> Dict[str, float]:
        """Average loss terms over `ds` (in order, fixed noise seed; the training RNG is untouched)."""
        model = self.ae if stage == "ae" else self.vae
        names = TERMS_AE if stage == "ae" else TERMS_VAE
        sums = {k: 0.0 for k in names}
        n = len(ds)
        order = torch.arange(n)
        nb = max(1, math.ceil(n / self.cfg.batch_size))
        devices = [self.device] if self.device.type == "cuda" else []
        self._set_model_step(model)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.cfg.seed + EVAL_SEED_OFFSET)
            model.eval()
            for x in self._batches(ds, order, 0, nb):
                x = x.to(self.device)
                with self._autocast():
                    terms = model.loss(x)
                for k in names:
                    sums[k] += float(terms[k]) * x.shape[0]
            model.train()
        return {k: v / max(n, 1) for k, v in sums.items()}

    def _train_stage(self, stage: str) -> None:
        cfg = self.cfg
        model = self.ae if stage == "ae" else self.vae
        epochs = cfg.epochs_ae if stage == "ae" else cfg.epochs_vae
        names = TERMS_AE if stage == "ae" else TERMS_VAE
        ds = self.data.train
        n, nb = len(ds), self._steps_per_epoch()
        label = "AE" if stage == "ae" else "VAE"
        model.train()
        while self.epoch < epochs:
            t0 = time.time()
            self.epoch_shuffle_state = self.shuffle.get_state()
            order = torch.randperm(n, generator=self.shuffle)
            if self.batch == 0:
                self.running = {k: 0.0 for k in names}
                self.running["n"] = 0.0
            bar = None
            if cfg.progress:
                from tqdm import tqdm
                bar = tqdm(total=nb, initial=self.batch, desc=f"{label} epoch {self.epoch + 1}/{epochs}",
                           leave=False, dynamic_ncols=True, file=sys.stderr, disable=None)
            try:
                for x in self._batches(ds, order, self.batch, nb):
                    x = x.to(self.device, non_blocking=True)
                    values = self._train_step(stage, model, x)
                    b = x.shape[0]
                    for k in names:
                        self.running[k] += values[k] * b
                    self.running["n"] += b
                    self.batch += 1
                    self.step += 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix({k: f"{values[k]:.4g}" for k in names[:3]}, refresh=False)
                    if cfg.stop_after and self.step >= cfg.stop_after:
                        self.save_checkpoint()
                        self.log(f"stopped after step {self.step} (--stop-after); continue with "
                                 f"--resume {self.run_dir}")
                        raise _Stopped()
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.batch < nb:
                        self.save_checkpoint()
            finally:
                if bar is not None:
                    bar.close()
            self._end_epoch(stage, epochs, names, time.time() - t0)

    def _end_epoch(self, stage: str, epochs: int, names, seconds: float) -> None:
        cfg = self.cfg
        cnt = max(self.running.get("n", 0.0), 1.0)
        record: Dict[str, Any] = {"stage": stage, "epoch": self.epoch + 1, "step": self.step,
                                  "lr": self.opt[stage].param_groups[0]["lr"]}
        record.update({f"train_{k}": self.running[k] / cnt for k in names})
        model = self.ae if stage == "ae" else self.vae
        record.update(model.likelihood.stats())      # the learned variance (gaussian), per epoch
        last = self.epoch + 1 == epochs
        if last or (cfg.eval_every and (self.epoch + 1) % cfg.eval_every == 0):
            record.update({f"test_{k}": v for k, v in self.evaluate(stage, self.data.test).items()})
        record["time_s"] = round(seconds, 3)
        self.history.append(record)
        write_metrics(self.history, self.run_dir)
        if self.tb is not None:
            self.tb.log_epoch(record)
        label = "AE" if stage == "ae" else "VAE"
        parts = " ".join(f"{k}={record[k]:.4g}" for k in record if k.startswith(("train_", "test_")))
        if "gamma" in record:
            parts += f" gamma={record['gamma']:.4g}" + (" (at the --gamma-min floor)"
                                                         if record["gamma_floor_binds"] else "")
        self.log(f"{label} epoch {self.epoch + 1}/{epochs} step {self.step}: {parts}")
        self.epoch += 1
        self.batch = 0
        self.running = {}
        self.save_checkpoint()

    # -- prior --------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_train(self) -> torch.Tensor:
        ds = self.data.train
        n = len(ds)
        out = []
        self.ae.eval()
        for x in self._batches(ds, torch.arange(n), 0, max(1, math.ceil(n / self.cfg.batch_size))):
            with self._autocast():
                out.append(self.ae.encode(x.to(self.device)).float().cpu())
        self.ae.train()
        return torch.cat(out)

    def fit_prior(self) -> None:
        cfg = self.cfg
        t0 = time.time()
        z = self.encode_train()
        if cfg.plan == "single":
            fit = fit_single(z, cfg.em_var_floor)
        else:
            fit = fit_mixture(z, cfg.latent, seed=cfg.seed, n_init=cfg.em_n_init,
                              max_iter=cfg.em_max_iter, tol=cfg.em_tol, var_floor=cfg.em_var_floor,
                              weight_floor=cfg.em_weight_floor)
        fit.report["seconds"] = round(time.time() - t0, 3)
        try:
            self.vae.set_prior(fit.prior)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.prior_report = fit.report
        write_json(fit.report, os.path.join(self.run_dir, "prior_fit.json"))
        self.log("prior: " + describe_fit(fit.report))
        if not fit.report["converged"]:
            self.log("warning: EM did not converge; the prior is the last iterate")

    # -- the run ------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        try:
            if self.stage == "ae":
                self._train_stage("ae")
                self.stage, self.epoch, self.batch = "prior", 0, 0
            if self.stage == "prior":
                self.fit_prior()
                if self.cfg.stage2_init == "ae":
                    self.vae.init_from_autoencoder(self.ae)
                    self.log("stage 2 initialised from the stage-1 autoencoder (--stage2-init ae)")
                self.stage, self.epoch, self.batch = "vae", 0, 0
                self.save_checkpoint()
            if self.stage == "vae":
                if self.vae.prior is None and getattr(self.vae, "requires_prior_fit", True):
                    raise CheckpointError("stage 2 needs the prior, but the checkpoint holds none")
                self._train_stage("vae")
                self.stage = "outputs"
            summary = None
            if self.stage == "outputs":
                summary = self.finish()
                self.stage = "done"
                self.save_checkpoint()
            elif self.stage == "done":
                summary = _read_json(os.path.join(self.run_dir, "summary.json"))
                self.log("this run is already complete")
        except _Stopped:
            return RunResult("stopped", self.run_dir, self.step)
        except NonFiniteLossError as exc:
            write_json(exc.diagnostic, os.path.join(self.run_dir, "error.json"))
            self.log(str(exc))
            raise
        finally:
            if self.tb is not None:
                self.tb.close()
            torch.set_num_threads(self._threads_before)
        return RunResult("done", self.run_dir, self.step, summary)

    def finish(self) -> Dict[str, Any]:
        from .outputs import write_outputs
        cfg = self.cfg
        last = {}
        for r in self.history:
            if r["stage"] == "vae":
                last = r
        test = {k: last[f"test_{k}"] for k in TERMS_VAE if f"test_{k}" in last}
        if not test:
            test = self.evaluate("vae", self.data.test)
        summary: Dict[str, Any] = {
            "model": cfg.model, "plan": cfg.plan_name, "model_name": self.model_name,
            "preset": cfg.preset, "kl_objective": cfg.kl, "stage2_init": cfg.stage2_init,
            "routing": cfg.routing, "likelihood": cfg.likelihood,
            "objective_units": self.vae.likelihood.units,
            "dataset": cfg.dataset, "latent": cfg.latent, "ops": ops_name(self.ops),
            "device": str(self.device), "steps": self.step,
            "train": {k: last.get(f"train_{k}") for k in TERMS_VAE},
            "test": test,
            "prior_fit": self.prior_report,
            # paper Table 4: trainable parameters of the generative model, and of its prior alone
            "params": self.vae.param_counts(),
        }
        summary.update({f"likelihood_{k}": v for k, v in self.vae.likelihood.stats().items()})
        if self.ae is not None:  # X-VAE's one-time stage-1 autoencoder, not counted in Table 4
            summary["stage1_params"] = int(sum(p.numel() for p in self.ae.parameters() if p.requires_grad))
        ae_last = [r for r in self.history if r["stage"] == "ae"]
        if ae_last:
            summary["ae"] = {"train_recon": ae_last[-1].get("train_recon"),
                             "test_recon": ae_last[-1].get("test_recon")}
        if cfg.outputs:
            summary.update(write_outputs(self))
        summary["seconds"] = round(time.time() - self.t_start, 2)
        write_json(summary, os.path.join(self.run_dir, "summary.json"))
        self.log(table_row(summary))
        self.log(f"run folder: {self.run_dir}")
        return summary


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def train(cfg: TrainConfig, explicit: Optional[Set[str]] = None, verbose: bool = True) -> RunResult:
    """Train (or resume, with cfg.resume) and return the RunResult."""
    return Trainer(cfg, explicit=explicit, verbose=verbose).run()


def load_run(run_dir: str, device: str = "cpu"):
    """(config, DataInfo, VAE with its prior) from a run folder, for sampling."""
    ck = ckpt.load_checkpoint(run_dir)
    path = ckpt.checkpoint_path(run_dir)
    cfg = TrainConfig.from_saved(ck["config"])
    info = DataInfo.from_dict(ck["data_info"])
    learned_prior = cfg.model in LEARNED_PRIOR_MODELS  # no frozen prior buffers to restore
    if ck["stage"] in ("ae", "prior") or (ck["prior"] is None and not learned_prior):
        raise CheckpointError(f"run {run_dir!r} has not reached stage 2 yet (it is at stage "
                              f"{ck['stage']!r}); resume it with --resume first")
    dev = pick_device(device)
    _, vae = build_models(cfg, info, get_ops(device=dev))
    p = ck["prior"]
    if p is not None:
        vae.set_prior(MixturePrior(p["weights"], p["means"], p["stds"]))
    ckpt.load_state(vae, ck["models"]["vae"], "VAE", path)
    vae.to(dev).eval()
    return cfg, info, vae, ck


def load_expost(run_dir: str, device: str = "cpu", routing: str = "per-row"):
    """(config, DataInfo, ExPostModel, checkpoint): the ex-post reference of an X-VAE run, its stage-1
    autoencoder decoding samples of the prior fitted on its latents (no stage 2)."""
    from ..models import Autoencoder, ExPostModel, build_likelihood
    ck = ckpt.load_checkpoint(run_dir)
    path = ckpt.checkpoint_path(run_dir)
    cfg = TrainConfig.from_saved(ck["config"])
    info = DataInfo.from_dict(ck["data_info"])
    if ck["models"].get("ae") is None or ck["prior"] is None:
        raise CheckpointError(f"run {run_dir!r} has no fitted stage-1 prior (it is a {cfg.model} run at "
                              f"stage {ck['stage']!r}); the ex-post reference needs an X-VAE run past "
                              "its prior fit")
    dev = pick_device(device)
    ae = Autoencoder(info.kind, info.shape, cfg.latent, cfg.hidden or (128, 128),
                     likelihood=build_likelihood(cfg.likelihood or "mse", info.kind, cfg.gamma_min or 0.0))
    ckpt.load_state(ae, ck["models"]["ae"], "stage-1 autoencoder", path)
    p = ck["prior"]
    prior = MixturePrior(p["weights"], p["means"], p["stds"])
    model = ExPostModel(ae, prior, routing, get_ops(device=dev)).to(dev).eval()
    return cfg, info, model, ck
