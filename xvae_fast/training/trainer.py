"""The trainer: drives a model's recipe (models/protocol.py, docs/models.md) stage by stage.

Each model family lists its stages; the checkpoint records which one a run is in. X-VAE's are
  ae       stage 1: deterministic autoencoder, the likelihood's negative log-likelihood, Adam
  prior    fit the frozen prior on the stage-1 latents of the training set (single or EM mixture)
  vae      stage 2: the VAE with the frozen prior and the chosen configuration; loss = recon + KL
then every model ends with
  outputs  reconstructions, samples, alpha sweep, curves, summary (Table 1 form)
  done
The baselines (`vae`, `vamp`, `hierarchical`, `mog`, `gmvae`; docs/baselines.md) have the one stage
`vae`; the Two-Stage VAE and the Unscented Autoencoder have their own (docs/models.md).

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
import shlex
import shutil
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Set

import numpy as np
import torch

from .. import __version__
from ..config import RUNTIME_KEYS, TrainConfig, differing_options, resolve, save_config
from ..data import DataBundle, DataInfo, describe, load_dataset, parse_dataset_spec
from ..atomic_file import disk_full_error, remove_stale_temp_files
from ..config_io import load_config_file
from ..errors import (CheckpointError, ConfigError, DiskFullError, NonFiniteLossError, TrainingInterrupted,
                      XVAEError)
from ..models import Stage, build_recipe, get_ops, ops_name
from ..devices import pick_device
from ..outpaths import make_out_dir, remove_created
from ..progress import progress_bar, shorten
from .. import shard as sharding
from . import checkpoint as ckpt
from .distributed import World, main_decides
from .run_lock import LOCK_FILE, RunLock, is_writer_rank
from .metrics import TensorBoardLogger, table_row, write_json, write_metrics
from .headline import comparable_headline, next_steps
from .provenance import provenance
from .threads import check_load
from .precision import autocast, native_bf16, resolve_channels_last, resolve_precision, to_channels_last

EVAL_SEED_OFFSET = 1_000_003


class _Stopped(Exception):
    pass


@dataclasses.dataclass
class RunResult:
    status: str            # "done" or "stopped" (--stop-after)
    run_dir: str
    step: int
    summary: Optional[Dict[str, Any]] = None


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
    flat, defaults = cfg.flat(), TrainConfig().flat()
    keys = explicit if explicit is not None else {k for k, v in flat.items() if v != defaults.get(k)}
    return {k: flat.get(k) for k in keys}


# Options a resume may change although they shape the training: the remedies a NaN stop advises. The
# new values apply from the resumed step on and are recorded (the checkpoint's `changes`, train.log).
RESUME_CHANGEABLE = ("lr", "grad_clip")


def _check_resume_flags(cfg: TrainConfig, run: str, run_dir: str) -> None:
    """--resume continues a run in its own folder: --overwrite or another --out cannot be honoured."""
    if cfg.overwrite:
        raise ConfigError(f"--overwrite and --resume contradict each other: --resume {run} continues "
                          "that run, --overwrite would replace it; pass only one")
    if cfg.out and os.path.abspath(cfg.out) != os.path.abspath(run_dir):
        raise ConfigError(f"--out {cfg.out!r} differs from --resume {run!r}: a resumed run continues in "
                          f"its own folder; drop --out (or copy the folder to {cfg.out!r} and resume "
                          "the copy)")


def _check_has_checkpoint(run: str) -> None:
    """A run folder killed before its first checkpoint: say how to start it again."""
    if not os.path.isdir(run) or os.path.exists(os.path.join(run, ckpt.CHECKPOINT)):
        return
    config = os.path.join(run, "config.yaml")
    if not (os.path.isfile(config) or os.path.isfile(os.path.join(run, "train.log"))):
        return          # not a run folder: load_checkpoint says so
    again = (f"python -m xvae_fast.train --config {shlex.quote(config)} --auto-resume"
             if os.path.isfile(config) else
             f"the command that started it with --auto-resume (and --out {shlex.quote(run)})")
    raise CheckpointError(f"run folder {run!r} has no {ckpt.CHECKPOINT}: the run stopped before its first "
                          f"checkpoint, so there is nothing to resume. Start it again with {again}: "
                          "--auto-resume starts a folder without a checkpoint and resumes one with it, so "
                          "the same command also continues the run after a later interruption")


def _check_folder_config(run_dir: str, saved: TrainConfig, path: str) -> Optional[str]:
    """Check a checkpoint against the folder's config.yaml before resuming. A missing or unreadable
    config.yaml (not YAML, not a valid config) is repaired from the checkpoint: returns why, for the
    log. A valid config.yaml with other options than the checkpoint is a refusal naming the keys: the
    checkpoint belongs to another run (RESUME_CHANGEABLE and runtime options aside)."""
    yaml_path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(yaml_path):
        return "config.yaml was missing"
    try:
        recorded = TrainConfig.from_saved(load_config_file(yaml_path))
        resolve(recorded)
    except (XVAEError, OSError, ValueError, TypeError) as exc:     # UnicodeDecodeError is a ValueError
        return f"config.yaml was unreadable ({shorten(str(exc), 160)})"
    diffs = [f"{k} (config.yaml: {r!r}, checkpoint: {c!r})"
             for k, c, r in differing_options(saved, recorded, (*RUNTIME_KEYS, *RESUME_CHANGEABLE))]
    if diffs:
        raise CheckpointError(
            f"checkpoint {path!r} does not belong to the run in {run_dir!r}: it was trained with other "
            f"options than the folder's config.yaml records: {'; '.join(diffs)}. Put the run's own "
            "checkpoint back, or resume this one in a folder of its own; if config.yaml is the file that "
            "is wrong, delete it and resume again (it is rewritten from the checkpoint)")
    return None


def _scale_lrs(scheduler, ratio: float) -> None:
    """Scale a scheduler's base learning rates (inside SchedulerSet / PlateauPerEpoch wrappers too)."""
    if scheduler is None:
        return
    for inner in getattr(scheduler, "schedulers", {}).values():
        _scale_lrs(inner, ratio)
    _scale_lrs(getattr(scheduler, "inner", None), ratio)
    if isinstance(getattr(scheduler, "base_lrs", None), list):
        scheduler.base_lrs = [b * ratio for b in scheduler.base_lrs]


class Trainer:
    """Build with a TrainConfig (flags / file merged); `run()` trains to the end (or to
    --stop-after) and returns a RunResult. `explicit` names the options the user set (for the
    consistency check on --resume); by default every non-default option counts as set."""

    def __init__(self, cfg: TrainConfig, explicit: Optional[Set[str]] = None, verbose: bool = True):
        self.verbose = verbose
        self.resume_ck = None
        self._lock: Optional[RunLock] = None        # the run folder's one-writer lock (rank 0)
        self._notes: List[str] = []                 # log lines found before the run folder was set
        self._config_repair: Optional[str] = None   # why config.yaml is rewritten on resume
        self._resume_changes: Dict[str, Any] = {}   # --lr / --grad-clip changed on resume: old values
        if cfg.auto_resume and not cfg.resume:
            if cfg.overwrite:
                raise ConfigError("--auto-resume and --overwrite contradict each other: choose one")
            if not cfg.out:
                raise ConfigError("--auto-resume needs --out DIR (the run folder to start or resume)")
            if os.path.exists(os.path.join(cfg.out, ckpt.CHECKPOINT)):
                cfg = cfg.replace(resume=cfg.out)
        self._created_dir: Optional[str] = None
        try:
            if cfg.resume:
                cfg = self._config_for_resume(cfg, explicit)    # locks the folder first
            else:
                cfg = resolve(cfg)
            self.cfg = cfg
            self.world = World.from_env(cfg.device)     # torchrun's ranks (one process: size 1)
        except BaseException:
            self._release_lock()
            raise
        try:
            self.run_dir = self._prepare_run_dir()
            self._setup()
        except BaseException:
            # a data, device or model error before any work: leave no empty run folder behind
            remove_created(self._created_dir)
            if hasattr(self, "_threads_before"):
                torch.set_num_threads(self._threads_before)
            self.world.close()
            self._release_lock()
            raise

    # -- the run folder's lock ----------------------------------------------------------------------
    def _lock_run_dir(self, folder: str, advice: str) -> None:
        """Take the folder's writer lock (the writing rank only; a second training there is refused,
        naming the holder), then remove the temporary files that killed writes left in it."""
        if self._lock is not None or not is_writer_rank() or not os.path.isdir(folder):
            return
        self._lock = RunLock.acquire(folder, advice)
        if self._lock.note:
            self._notes.append(self._lock.note)
        removed = remove_stale_temp_files(folder)
        if removed:
            self._notes.append(f"removed {len(removed)} temporary file(s) that interrupted writes left: "
                               f"{', '.join(removed)}")

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _setup(self) -> None:
        cfg = self.cfg
        self._threads_before = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = pick_device(self.world.device_name(cfg.device))
        self.precision = resolve_precision(cfg.precision, self.device)
        if self.precision == "bf16" and not native_bf16(self.device):
            if self.device.type == "cuda":
                raise ConfigError(f"--precision bf16: the GPU {torch.cuda.get_device_name(self.device)} "
                                  "has no bfloat16 support; use --precision fp32")
            self._bf16_warning = True
        self.tb = TensorBoardLogger(self.run_dir) if cfg.tensorboard and self.world.is_main else None
        self.ops = get_ops(device=self.device)
        seed_everything(cfg.seed)
        self.data: DataBundle = load_dataset(cfg)
        self.info: DataInfo = self.data.info
        self._check_likelihood_data()
        if cfg.binarize == "dynamic":
            self._binarize_test_split()
        self.recipe = build_recipe(cfg, self.info, self.ops).to(self.device)
        modules = [m for m in self.recipe.modules.values() if m is not None]
        self.channels_last = resolve_channels_last(cfg.channels_last, self.device, self.precision, modules)
        if self.channels_last:
            to_channels_last(modules)
        self._check_world()
        self.recipe.set_total_steps(self._steps_per_epoch())  # schedules over the training
        self.stages: List[Stage] = self.recipe.stages()
        # --compile: one compiled loss for every train stage (dynamo specialises per stage and
        # marks the batch size dynamic once a second size is seen, e.g. a short last batch)
        self._loss = torch.compile(self.recipe.loss) if cfg.compile else self.recipe.loss
        self._ddp: Dict[str, torch.nn.Module] = {}      # per train stage, under torchrun
        train_stages = [s for s in self.stages if s.kind == "train"]
        self.opt = {s.name: self.recipe.make_optimizer(s) for s in train_stages}
        self.sched = {s.name: self._make_scheduler(s) for s in train_stages}
        self.shuffle = torch.Generator().manual_seed(cfg.seed)
        self.epoch_shuffle_state = self.shuffle.get_state()
        self.stage = self.stages[0].name
        self.epoch = 0          # epochs completed in the current stage
        self.batch = 0          # batches completed in the current epoch
        self.step = 0           # optimizer steps over both stages
        self.history: List[Dict[str, Any]] = []
        self.running: Dict[str, float] = {}
        self.changes: List[Dict[str, Any]] = []     # options changed on resume (--lr, --grad-clip)
        self.last_checkpoint_step: Optional[int] = None
        self.t_start = time.time()
        for note in self._notes:
            self.log(note)
        if self.resume_ck is not None:
            self._restore(self.resume_ck)
            self.log(f"resumed {self.run_dir} at stage {self.stage}, epoch {self.epoch + 1}, "
                     f"batch {self.batch}, step {self.step}")
            self._apply_resume_changes()
            if self._config_repair and self.world.is_main:
                self._write_config(self._saved_cfg.replace(out=self.run_dir))
                self.log(f"{self._config_repair}: rewrote it from the checkpoint")
        else:
            if self.world.is_main:
                self._write_config(cfg)
            start = self.recipe.on_new_run(self)
            if start is not None:
                self.stage, self.history = start.stage, [dict(r) for r in start.history]
        ranks = (f" x {self.world.size} ranks (global batch {cfg.batch_size})"
                 if self.world.distributed else "")
        self.log(f"data {describe(self.data)}; model {self.model_name}; ops {ops_name(self.ops)}; "
                 f"device {self.device}{ranks}; {self.numerics}")
        if self.device.type == "cpu" and not cfg.threads:
            busy = check_load(torch.get_num_threads())
            if busy:
                self.log(f"warning: {busy}")
        if getattr(self, "_bf16_warning", False):
            self.log("warning: --precision bf16 on a CPU without bfloat16 units (no AMX or AVX512-BF16): "
                     "oneDNN emulates it, and a step runs many times slower than fp32 "
                     "(bench/paper_scale.py); --precision auto picks what the hardware does natively")
        if self.untrained_stages:
            self.log(f"warning: {', '.join(self.untrained_stages)} ha{'s' if len(self.untrained_stages) == 1 else 've'} "
                     "0 epochs: the model it trains stays at its initialisation, and the run is "
                     "reported as untrained (summary.json 'untrained_stages')")

    @property
    def numerics(self) -> str:
        """The resolved precision and layout, as logged and recorded in summary.json."""
        return (f"precision {self.precision}" + (f" (--precision {self.cfg.precision})"
                                                 if self.cfg.precision == "auto" else "")
                + (", channels-last" if self.channels_last else ""))

    @property
    def untrained_stages(self) -> List[str]:
        """Labels of the train stages given 0 epochs (e.g. --epochs-vae 0 to share a stage 1)."""
        return [f"stage {s.label}" for s in self.stages if s.kind == "train" and s.epochs == 0]

    # -- setup helpers ------------------------------------------------------------------------------
    def _check_world(self) -> None:
        """Under torchrun: every batch must give each rank a row; BatchNorm becomes SyncBatchNorm on
        CUDA (its batch statistics then span the global batch, as in one process)."""
        if not self.world.distributed:
            return
        if not self.recipe.supports_distributed:
            raise ConfigError(f"--model {self.cfg.model} does not train under torchrun yet: "
                              f"{self.recipe.distributed_reason}; run it in one process")
        n, bs, size = len(self.data.train), self.cfg.batch_size, self.world.size
        smallest = min(bs, n % bs or bs)
        if smallest < size:
            raise ConfigError(f"--batch-size {bs} over {n} training rows leaves a batch of {smallest} "
                              f"row(s), fewer than the {size} ranks: every rank needs at least one row "
                              "of each global batch; choose a batch size that divides the data better")
        has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                     for mod in self.recipe.modules.values() if mod is not None for m in mod.modules())
        if has_bn and self.device.type == "cuda":
            for name, mod in list(self.recipe.modules.items()):
                if mod is not None:
                    self.recipe.modules[name] = torch.nn.SyncBatchNorm.convert_sync_batchnorm(mod)
        elif has_bn:
            self.log("warning: this model has BatchNorm layers, and on CPU (gloo) PyTorch has no "
                     "SyncBatchNorm: each rank normalises with its own shard's statistics, so the run "
                     "is not row-for-row the single-process one (on CUDA it is)")

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

    def _binarize_test_split(self) -> None:
        """--binarize dynamic: the test images binarised once with the fixed seed (the protocol the
        NLL evaluation uses), so every epoch's test objective sees the same binary images; the
        training batches are redrawn in `_train_step`."""
        from ..data.base import TensorData
        from ..data.binarize import binarize_fixed, check_unit_interval
        if self.info.kind != "image":
            raise ConfigError(f"--binarize draws image pixels; {self.info.name} is {self.info.kind} data")
        if self.world.distributed:
            raise ConfigError("--binarize dynamic does not run under torchrun yet (each rank would draw "
                              "its own rows' pixels, so the run would not be the single-process one); "
                              "run it in one process")
        for name, ds in (("training", self.data.train), ("test", self.data.test)):
            if ds.in_memory and len(ds):
                check_unit_interval(ds.get_batch(torch.arange(len(ds))), f"the {name} data")
        self.data.test = TensorData(binarize_fixed(self.data.test, range(len(self.data.test)),
                                                   what="the test data"))

    @property
    def ae(self):
        """The stage-1 autoencoder (X-VAE), None for the other models."""
        return self.recipe.autoencoder

    @property
    def vae(self):
        """The generative model: what the outputs, `sample` and `evaluate` use."""
        return self.recipe.generative

    @property
    def model_name(self) -> str:
        return getattr(self.recipe, "display_name", None) or self.recipe.title

    def log(self, msg: str) -> None:
        if not getattr(self, "world", None) or not self.world.is_main:
            return
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
        run_dir = run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run))
        _check_resume_flags(cfg, run, run_dir)
        # the lock first: the checkpoint read below is then the last one any training wrote
        self._lock_run_dir(run_dir, "then resume it")
        _check_has_checkpoint(run)
        ck = ckpt.load_checkpoint(run)
        path = ckpt.checkpoint_path(run)
        try:
            saved = TrainConfig.from_saved(ck["config"])
        except ConfigError as exc:
            raise CheckpointError(f"checkpoint in {run!r} has an unreadable config: {exc}") from exc
        self._config_repair = _check_folder_config(run_dir, saved, path)
        given = _explicit_changes(cfg, explicit)
        changeable = {k: given[k] for k in RESUME_CHANGEABLE if k in given}
        structural = {k: v for k, v in given.items() if k not in RUNTIME_KEYS and k not in changeable}
        try:
            candidate = resolve(saved.replace(**structural, **changeable))
        except ConfigError as exc:
            raise CheckpointError(f"cannot resume {run!r} with these options: {exc}") from exc
        diffs = [f"{k} (checkpoint: {c!r}, given: {g!r})"
                 for k, c, g in differing_options(saved, candidate, (*RUNTIME_KEYS, *RESUME_CHANGEABLE))]
        if diffs:
            raise CheckpointError(f"cannot resume {run!r}: the options differ from the run's saved "
                                  f"config in {'; '.join(diffs)}. Start a new run with --out instead, "
                                  "or drop these options (on resume only the runtime options and "
                                  f"{', '.join('--' + k.replace('_', '-') for k in RESUME_CHANGEABLE)} "
                                  "may change)")
        changed = {k: getattr(candidate, k) for k in changeable}
        self._resume_changes = {k: getattr(saved, k) for k, v in changed.items() if v != getattr(saved, k)}
        runtime = {k: v for k, v in given.items()
                   if k in RUNTIME_KEYS and k not in ("out", "config", "resume", "overwrite")}
        stop = runtime.get("stop_after")
        if stop and stop < ck["step"] and ck["stage"] not in ("outputs", "done"):
            raise ConfigError(f"--stop-after {stop}: the run in {run_dir!r} is already at step "
                              f"{ck['step']}; give a later step, or drop --stop-after to train to the end")
        self.resume_ck = ck
        self._saved_cfg = saved
        saved = saved.replace(stop_after=0, overwrite=False)  # session controls do not carry over
        return saved.replace(**runtime, **changed, out=run_dir, resume=run)

    def _write_config(self, cfg: TrainConfig) -> None:
        """config.yaml: the run's resolved options, less this session's controls (pass it back with
        --config to repeat the run)."""
        save_config(cfg.replace(stop_after=0, overwrite=False, resume=None, config=None, auto_resume=False),
                    os.path.join(self.run_dir, "config.yaml"))

    def _prepare_run_dir(self) -> str:
        if self.cfg.resume:
            return self.cfg.out
        out = main_decides(self.world, self._make_run_dir)   # rank 0 names and creates it
        self.cfg = self.cfg.replace(out=out)
        return out

    def _make_run_dir(self) -> str:
        cfg = self.cfg
        out = cfg.out or default_run_dir(cfg)
        # an existing folder: locked before looking at what it holds
        self._lock_run_dir(out, "or choose another --out")
        existing = os.path.join(out, ckpt.CHECKPOINT)
        if os.path.exists(existing):
            if not cfg.overwrite:
                raise ConfigError(f"run folder {out!r} already holds a run; continue it with "
                                  f"--resume {out}, or pass --overwrite or another --out")
            for name in os.listdir(out):
                if name == LOCK_FILE:   # ours now: removing it would let another training in
                    continue
                p = os.path.join(out, name)
                if os.path.isdir(p):
                    shutil.rmtree(p)
                else:
                    os.unlink(p)
        self._created_dir = make_out_dir(out, "--out")
        self._lock_run_dir(out, "or choose another --out")     # a folder just created
        return out

    def _steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.data.train) / self.cfg.batch_size))

    def _stage_steps_per_epoch(self, stage: Stage) -> int:
        """Steps per epoch of a train stage: its own data's size (AVAE trains on the training set less
        its KDE subset), in global batches."""
        n = self.recipe.train_rows(stage, self.data)
        return max(1, math.ceil(n / self.cfg.batch_size))

    def _make_scheduler(self, stage: Stage):
        own = self.recipe.make_scheduler(stage, self.opt[stage.name], self._stage_steps_per_epoch(stage))
        if own is not None:
            return own
        if self.cfg.lr_schedule == "none":
            return None
        total = max(1, stage.epochs * self._stage_steps_per_epoch(stage))
        return torch.optim.lr_scheduler.CosineAnnealingLR(self.opt[stage.name], T_max=total)

    # -- services for the recipes -------------------------------------------------------------------
    def read_run(self, source: str):
        """(checkpoint, its TrainConfig, checkpoint path) of another run folder."""
        ck = ckpt.load_checkpoint(source)
        return ck, TrainConfig.from_saved(ck["config"]), ckpt.checkpoint_path(source)

    @staticmethod
    def load_module_state(module, state, what: str, path: str) -> None:
        ckpt.load_state(module, state, what, path)

    def write_json(self, obj, name: str) -> None:
        if self.world.is_main:
            write_json(obj, os.path.join(self.run_dir, name))

    @torch.no_grad()
    def encode(self, fn, split: str = "train", data=None) -> torch.Tensor:
        """fn(batch) for every example of a split (or of `data`), in order, batched, in eval mode with
        the recipe's modules, concatenated on the CPU as float32."""
        ds = data if data is not None else (self.data.train if split == "train" else self.data.test)
        n = len(ds)
        out = []
        modules = [m for m in self.recipe.modules.values() if m is not None]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            for x in self._batches(ds, torch.arange(n), 0, max(1, math.ceil(n / self.cfg.batch_size))):
                with self._autocast():
                    out.append(fn(x.to(self.device)).float().cpu())
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)
        return torch.cat(out)

    # -- checkpoints --------------------------------------------------------------------------------
    def _checkpoint_dict(self) -> Dict[str, Any]:
        shuffle_state = self.epoch_shuffle_state if self.batch > 0 else self.shuffle.get_state()
        ck = {
            "format": ckpt.FORMAT, "version": ckpt.VERSION, "xvae_fast_version": __version__,
            "torch_version": str(torch.__version__),
            "config": self.cfg.to_dict(), "stage": self.stage, "epoch": self.epoch,
            "batch": self.batch, "step": self.step,
            "models": self._module_states(),
            "optimizers": {k: o.state_dict() for k, o in self.opt.items()},
            "schedulers": {k: (s.state_dict() if s is not None else None) for k, s in self.sched.items()},
            "rng": ckpt.capture_rng(shuffle_state),
            "data_info": self.info.to_dict(), "history": self.history, "running": dict(self.running),
            "changes": list(self.changes),
        }
        ck.update(self.recipe.state())     # the model's own entries: a fitted prior, frozen codes ...
        return ck

    def save_checkpoint(self) -> str:
        """Rank 0 writes the checkpoint (the ranks hold the same state)."""
        path = os.path.join(self.run_dir, ckpt.CHECKPOINT)
        if self.world.is_main:
            try:
                ckpt.atomic_save(self._checkpoint_dict(), path)
            except DiskFullError as exc:     # the previous checkpoint is intact (atomic write)
                kept = (f"the checkpoint of step {self.last_checkpoint_step} is kept: continue with "
                        f"--resume {self.run_dir} once there is room"
                        if self.last_checkpoint_step is not None and os.path.exists(path)
                        else "no checkpoint was written")
                raise DiskFullError(f"{exc}; {kept}") from exc
        self.last_checkpoint_step = self.step
        return path

    def _apply_resume_changes(self) -> None:
        """--lr / --grad-clip given on resume (the remedies a NaN stop advises): from this step on, the
        clip norm is the new one and every learning rate of the run (its optimizers' groups and its
        schedulers' base rates) is scaled by new / old. Logged and kept in the checkpoint's `changes`."""
        for key, old in self._resume_changes.items():
            new = getattr(self.cfg, key)
            how = ""
            if key == "lr":
                ratio = new / old
                for o in self.opt.values():
                    for g in o.param_groups:
                        g["lr"] *= ratio
                        if "initial_lr" in g:
                            g["initial_lr"] *= ratio
                for sched in self.sched.values():
                    _scale_lrs(sched, ratio)
                how = f" (every learning rate of the run scaled by {ratio:g})"
            self.changes.append({"step": self.step, "option": key, "from": old, "to": new})
            self.log(f"--{key.replace('_', '-')} changed on resume from {old:g} to {new:g} at step "
                     f"{self.step}{how}")

    def _restore(self, ck: Dict[str, Any]) -> None:
        path = ckpt.checkpoint_path(self.cfg.resume)
        shape = tuple(ck["data_info"]["shape"])
        if shape != self.info.shape or ck["data_info"]["kind"] != self.info.kind:
            raise CheckpointError(f"checkpoint {path!r} was trained on {ck['data_info']['kind']} data of "
                                  f"shape {shape}, but the data now has shape {self.info.shape}")
        self._load_modules(ck, path)
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
        self.epoch_shuffle_state = self._restore_rng(ck["rng"])
        self.changes = list(ck.get("changes") or [])     # absent in checkpoints before it existed
        self.last_checkpoint_step = self.step

    def _load_modules(self, ck: Dict[str, Any], path: str) -> None:
        """The recipe's own state and every module's weights from a checkpoint-shaped dict."""
        self.recipe.load_state(ck, path)
        for name, module in self.recipe.modules.items():
            if module is not None:
                ckpt.load_state(module, ck["models"].get(name), ckpt.MODULE_WHAT.get(name, name), path)

    def _module_states(self) -> Dict[str, Any]:
        return {k: (m.state_dict() if m is not None else None) for k, m in self.recipe.modules.items()}

    def _restore_rng(self, rng: Dict[str, Any]) -> torch.Tensor:
        """Restore the RNGs and the shuffling generator; returns its state. Under torchrun every rank's
        GPU takes rank 0's CUDA state (rank 0 runs on cuda:0), so the ranks keep drawing the same
        global-batch noise."""
        state = ckpt.restore_rng(rng)
        if self.world.distributed and self.device.type == "cuda" and rng.get("cuda"):
            torch.cuda.set_rng_state(rng["cuda"][0], self.device)
        self.shuffle.set_state(state)
        return state

    # -- training -----------------------------------------------------------------------------------
    def _autocast(self):
        return autocast(self.precision, self.device)

    def _load(self, ds, slices) -> Iterable[torch.Tensor]:
        """The rows of each index tensor in `slices`, in order (a DataLoader for file datasets)."""
        if ds.in_memory or self.cfg.num_workers == 0 or not slices:
            for idx in slices:
                yield ds.get_batch(idx)
            return
        yield from torch.utils.data.DataLoader(ds, batch_sampler=[s.tolist() for s in slices],
                                               num_workers=self.cfg.num_workers,
                                               pin_memory=self.device.type == "cuda")

    def _batches(self, ds, order: torch.Tensor, start: int, stop: int) -> Iterable[torch.Tensor]:
        bs = self.cfg.batch_size
        return self._load(ds, [order[b * bs:(b + 1) * bs] for b in range(start, stop)])

    def _train_batches(self, ds, order: torch.Tensor, start: int, stop: int):
        """(this rank's rows of each global batch, its Shard): one process holds every row."""
        bs = self.cfg.batch_size
        parts = [self.world.local_slice(order[b * bs:(b + 1) * bs]) for b in range(start, stop)]
        return zip(self._load(ds, [idx for idx, _ in parts]), (s for _, s in parts))

    def _train_index(self, stage: Stage) -> int:
        return [s.name for s in self.stages if s.kind == "train"].index(stage.name) + 1

    def _nonfinite(self, stage: Stage, values: Dict[str, float], what: str) -> NonFiniteLossError:
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        last = (f"the last good checkpoint is {os.path.join(self.run_dir, ckpt.CHECKPOINT)} (step "
                f"{self.last_checkpoint_step})" if self.last_checkpoint_step is not None
                else "no checkpoint was written before it")
        vals = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        diag = {"stage": stage.name, "epoch": self.epoch + 1, "batch": self.batch + 1, "step": self.step + 1,
                "terms": values, "non_finite": bad, "what": what,
                "last_checkpoint_step": self.last_checkpoint_step}
        msg = (f"non-finite {what} in stage {self._train_index(stage)} ({stage.label}) at "
               f"step {self.step + 1} (epoch {self.epoch + 1}, batch {self.batch + 1}): "
               f"{', '.join(bad) or what} is NaN/inf [{vals}]; {last}. {self._nonfinite_advice()}")
        return NonFiniteLossError(msg, diag)

    def _nonfinite_advice(self) -> str:
        """What to do after a NaN stop, as a command that works: a resume may lower --lr and set
        --grad-clip (RESUME_CHANGEABLE)."""
        clip = self.cfg.grad_clip / 2 if self.cfg.grad_clip > 0 else 1.0
        flags = f"--lr {self.cfg.lr / 10:g} --grad-clip {clip:g}"
        if self.last_checkpoint_step is None:
            return (f"Start the run again with a lower learning rate or gradient clipping (e.g. {flags} "
                    "with --overwrite), or check the data for extreme values")
        return (f"Continue from it with a lower learning rate or gradient clipping: python -m "
                f"xvae_fast.train --resume {shlex.quote(self.run_dir)} {flags}; or check the data for "
                "extreme values")

    def _stage_step_module(self, stage: Stage) -> torch.nn.Module:
        """DistributedDataParallel over the stage's optimised parameters, its forward the loss."""
        if stage.name not in self._ddp:
            from torch.nn.parallel import DistributedDataParallel
            params = [p for g in self.opt[stage.name].param_groups for p in g["params"]]
            cuda = self.device.type == "cuda"
            # find_unused_parameters: a stage may leave a head out of its loss (rae-gp's log-variance)
            self._ddp[stage.name] = DistributedDataParallel(
                _StageLoss(self._loss, stage, params), device_ids=[self.device.index] if cuda else None,
                find_unused_parameters=True)
        return self._ddp[stage.name]

    def _train_step(self, stage: Stage, x: torch.Tensor,
                    shard: Optional[sharding.Shard] = None) -> Dict[str, float]:
        opt = self.opt[stage.name]
        self.recipe.set_step(self.step)
        updates = self.recipe.train_updates(stage, x) if shard is None else None
        if updates is not None:
            return self._train_updates(stage, updates)
        with self._autocast():
            if shard is None:
                terms = self._loss(stage, x)
            else:
                with sharding.active(shard):
                    terms = self._stage_step_module(stage)(x)
        vec = torch.stack([terms[k].detach().float() for k in stage.terms])
        if shard is not None:     # each rank's batch means, weighted by its rows: the global means
            vec = self.world.sum_(vec * (shard.rows / shard.total))
        opt.zero_grad(set_to_none=True)
        # the trained loss: a model's "objective" where it differs from the reported "loss" (a KL weight)
        trained = terms.get("objective", terms["loss"])
        if shard is None:
            trained.backward()
        else:   # DDP averages the ranks' gradients: N b / B makes that the global batch mean's
            (trained * shard.loss_scale).backward()
        params = [p for g in opt.param_groups for p in g["params"]]
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        opt.step()
        # One host sync per step: the loss terms and the finiteness of the updated weights come back
        # together, so a GPU never waits for the host between the forward and the backward. A
        # non-finite loss is still reported as the loss; the update it made never reaches a
        # checkpoint (the run stops before the next one is written).
        got = torch.cat([vec, self._weights_finite(params).float().reshape(1).to(vec.device)]).cpu()
        values = dict(zip(stage.terms, got[:-1].tolist()))
        if not bool(torch.isfinite(got[:-1]).all()):
            raise self._nonfinite(stage, values, "loss")
        self._after_step(stage, values, weights_finite=bool(got[-1]))
        return values

    @staticmethod
    def _weights_finite(params) -> torch.Tensor:
        return torch.isfinite(torch.stack(torch._foreach_norm(params))).all()

    def _after_step(self, stage: Stage, values: Dict[str, float],
                    weights_finite: Optional[bool] = None) -> None:
        """The scheduler step, then the check that no weight of the stage became NaN/inf (computed
        here unless the step already fetched it)."""
        sched = self.sched[stage.name]
        if sched is not None:
            sched.step()
        if weights_finite is None:
            params = [p for g in self.opt[stage.name].param_groups for p in g["params"]]
            weights_finite = bool(self._weights_finite(params))
        if not weights_finite:
            module = self.recipe.stage_module(stage)
            bad = next((n for n, p in module.named_parameters() if not torch.isfinite(p).all()), "?")
            raise self._nonfinite(stage, values, f"weights after the update ({bad})")

    def _train_updates(self, stage: Stage, updates) -> Dict[str, float]:
        """A step made of several updates (models/protocol.py `Update`): each one's terms are checked
        finite, its loss backpropagated and its optimizer (a member of the stage's OptimizerSet)
        stepped, before the recipe computes the next one."""
        opts = self.opt[stage.name]
        values: Dict[str, float] = {}
        try:
            for upd in updates:
                part = {k: float(v.detach().float()) for k, v in upd.terms.items()}
                values.update(part)
                what = " and ".join(upd.optimizers)
                if not all(math.isfinite(v) for v in part.values()):
                    raise self._nonfinite(stage, values, f"loss of the {what} update")
                chosen = [opts[k] for k in upd.optimizers]
                for o in chosen:
                    o.zero_grad(set_to_none=True)
                upd.loss.backward()
                if self.cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_([p for o in chosen for g in o.param_groups
                                                    for p in g["params"]], self.cfg.grad_clip)
                for o in chosen:
                    o.step()
        finally:
            close = getattr(updates, "close", None)
            if close is not None:      # a generator's own clean-up (restoring requires_grad) runs now
                close()
        missing = [k for k in stage.terms if k not in values]
        if missing:
            raise RuntimeError(f"the {stage.label} step's updates did not give the terms {missing}")
        self._after_step(stage, values)
        return {k: values[k] for k in stage.terms}

    @torch.no_grad()
    def evaluate(self, stage, split: str = "test") -> Dict[str, float]:
        """Average loss terms of a train stage over a split (in order, fixed noise seed; the training
        RNG is untouched)."""
        if isinstance(stage, str):
            stage = self.recipe.stage(stage)
        ds = self.recipe.stage_data(stage, split, self.data)
        module = self.recipe.stage_module(stage)
        sums = {k: 0.0 for k in stage.terms}
        n = len(ds)
        order = torch.arange(n)
        nb = max(1, math.ceil(n / self.cfg.batch_size))
        devices = [self.device] if self.device.type == "cuda" else []
        self.recipe.set_step(self.step)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.cfg.seed + EVAL_SEED_OFFSET)
            module.eval()
            try:
                for x in self._batches(ds, order, 0, nb):
                    x = x.to(self.device)
                    with torch.enable_grad() if stage_needs_grad(self.recipe, stage) else _nullctx():
                        with self._autocast():
                            terms = self.recipe.loss(stage, x)
                    for k in stage.terms:
                        sums[k] += float(terms[k].detach()) * x.shape[0]
            finally:
                module.train()
        return {k: v / max(n, 1) for k, v in sums.items()}

    def _train_stage(self, stage: Stage) -> None:
        cfg = self.cfg
        module = self.recipe.stage_module(stage)
        epochs, names = stage.epochs, stage.terms
        module.train()
        dist = self.world.distributed
        while self.epoch < epochs:
            t0 = time.time()
            self.recipe.begin_epoch(stage, self.epoch, self)
            ds = self.recipe.stage_data(stage, "train", self.data)
            n = len(ds)
            nb = max(1, math.ceil(n / cfg.batch_size))
            self.epoch_shuffle_state = self.shuffle.get_state()
            order = torch.randperm(n, generator=self.shuffle)
            if self.batch == 0:
                self.running = {k: 0.0 for k in names}
                self.running["n"] = 0.0
            bar = None
            if cfg.progress:
                bar = progress_bar(total=nb, initial=self.batch, unit="batch",
                                   desc=f"{stage.label} epoch {self.epoch + 1}/{epochs}")
            try:
                for x, shard in self._train_batches(ds, order, self.batch, nb):
                    x = x.to(self.device, non_blocking=True)
                    if cfg.binarize == "dynamic" and x.dim() == 4:   # images (not stage-2 latents)
                        x = torch.bernoulli(x)     # the run's seeded RNG: resumes exactly
                    self.recipe.before_step(stage, self.step, self)
                    values = self._train_step(stage, x, shard if dist else None)
                    b = shard.total
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
            self._end_epoch(stage, time.time() - t0)

    def _end_epoch(self, stage: Stage, seconds: float) -> None:
        cfg = self.cfg
        epochs, names = stage.epochs, stage.terms
        self.recipe.end_epoch(stage, self.epoch, self)
        cnt = max(self.running.get("n", 0.0), 1.0)
        record: Dict[str, Any] = {"stage": stage.name, "epoch": self.epoch + 1, "step": self.step,
                                  "lr": self.opt[stage.name].param_groups[0]["lr"]}
        record.update({f"train_{k}": self.running[k] / cnt for k in names})
        record.update(self.recipe.epoch_stats(stage))    # the learned variance (gaussian), per epoch
        last = self.epoch + 1 == epochs
        if self.world.is_main and (last or (cfg.eval_every and (self.epoch + 1) % cfg.eval_every == 0)):
            # rank 0 evaluates the whole test split (no collectives, its own RNG fork)
            t_eval = time.time()
            record.update({f"test_{k}": v for k, v in self.evaluate(stage, "test").items()})
            record["eval_s"] = round(time.time() - t_eval, 3)
        record["time_s"] = round(seconds, 3)
        self.history.append(record)
        if self.world.is_main:
            write_metrics(self.history, self.run_dir)
        if self.tb is not None:
            self.tb.log_epoch(record)
        parts = " ".join(f"{k}={record[k]:.4g}" for k in record if k.startswith(("train_", "test_")))
        if "gamma" in record:
            parts += f" gamma={record['gamma']:.4g}" + (" (at the --gamma-min floor)"
                                                         if record["gamma_floor_binds"] else "")
        self.log(f"{stage.label} epoch {self.epoch + 1}/{epochs} step {self.step}: {parts}")
        self.epoch += 1
        self.batch = 0
        self.running = {}
        self.save_checkpoint()

    # -- the run ------------------------------------------------------------------------------------
    def _next_stage(self, stage: Stage) -> str:
        names = [s.name for s in self.stages]
        i = names.index(stage.name)
        return names[i + 1] if i + 1 < len(names) else "outputs"

    def run(self) -> RunResult:
        try:
            stop = self.cfg.stop_after
            if stop and self.step >= stop and self.stage not in ("outputs", "done"):
                # a resume with --stop-after at its own step (an earlier one is refused): no step
                self.log(f"already at step {self.step} (--stop-after {stop}): nothing to train; "
                         f"continue with --resume {self.run_dir}")
                raise _Stopped()
            for stage in self.stages:
                if self.stage != stage.name:
                    continue
                if stage.kind == "train":
                    why = self.recipe.check_stage_ready(stage)
                    if why:
                        raise CheckpointError(why)
                    self._train_stage(stage)
                    self.stage, self.epoch, self.batch = self._next_stage(stage), 0, 0
                else:
                    self._fit_stage(stage)
                    self.stage, self.epoch, self.batch = self._next_stage(stage), 0, 0
                    self.save_checkpoint()
            summary = None
            if self.stage == "outputs":
                summary = self.finish() if self.world.is_main else None
                self.stage = "done"
                self.save_checkpoint()
            elif self.stage == "done":
                summary = self._complete_outputs()
        except _Stopped:
            return RunResult("stopped", self.run_dir, self.step)
        except NonFiniteLossError as exc:
            if self.world.is_main:
                write_json(exc.diagnostic, os.path.join(self.run_dir, "error.json"))
            self.log(str(exc))
            raise
        finally:
            if self.tb is not None:
                self.tb.close()
            torch.set_num_threads(self._threads_before)
            self._release_lock()        # the run writes nothing more (compare trains the next one)
        return RunResult("done", self.run_dir, self.step, summary)

    def _missing_outputs(self) -> List[str]:
        """The files a finished run wrote that are no longer in its folder (those summary.json lists,
        the metrics, summary.json itself)."""
        summary = _read_json(os.path.join(self.run_dir, "summary.json"))
        names = ["metrics.csv", "metrics.json"]
        if isinstance(summary, dict):
            names += [n for n in (summary.get("files") or {}).values() if isinstance(n, str)]
        else:
            names.append("summary.json")
        return [n for n in dict.fromkeys(names) if not os.path.isfile(os.path.join(self.run_dir, n))]

    def _complete_outputs(self) -> Optional[Dict[str, Any]]:
        """--resume of a finished run: its summary, after writing again whatever output was deleted
        (the same files: the outputs draw from fixed seeds)."""
        missing = self._missing_outputs()
        if not missing:
            self.log("this run is already complete")
            return _read_json(os.path.join(self.run_dir, "summary.json"))
        self.log(f"this run is already complete, but {', '.join(missing)} "
                 f"{'is' if len(missing) == 1 else 'are'} missing: writing its outputs again")
        if not self.world.is_main:
            return None
        write_metrics(self.history, self.run_dir)
        return self.finish()

    def _fit_stage(self, stage: Stage) -> None:
        """A fit stage runs on rank 0; every rank then takes its modules, the recipe's state (the
        fitted prior, frozen codes) and its RNG state, so the ranks continue identical."""
        def fit_and_share():
            self.recipe.fit(stage, self)
            if not self.world.distributed:
                return None
            return _to_cpu({"models": self._module_states(),
                            "rng": ckpt.capture_rng(self.shuffle.get_state()), **self.recipe.state()})
        shared = main_decides(self.world, fit_and_share)
        if shared is not None and not self.world.is_main:
            self._load_modules(shared, "rank 0's fit")
            self._restore_rng(shared["rng"])

    def close(self) -> None:
        """Leave the process group this trainer joined (torchrun) and the run folder's lock."""
        self._release_lock()
        self.world.close()

    def _stage_objectives(self, stage: Stage) -> Dict[str, Any]:
        last = {}
        for r in self.history:
            if r["stage"] == stage.name:
                last = r
        test = {k: last[f"test_{k}"] for k in stage.terms if f"test_{k}" in last}
        if not test:
            test = self.evaluate(stage, "test")
        return {"train": {k: last.get(f"train_{k}") for k in stage.terms}, "test": test}

    def finish(self) -> Dict[str, Any]:
        from .outputs import write_outputs
        cfg = self.cfg
        train_stages = [s for s in self.stages if s.kind == "train"]
        headline = self.recipe.headline_stage()
        objectives = {s.name: self._stage_objectives(s) for s in train_stages
                      if s.name == headline.name or s.module != "ae"}
        gen = self.vae
        summary: Dict[str, Any] = {
            "model": cfg.model, "plan": cfg.plan_name, "model_name": self.model_name,
            "preset": cfg.preset, "likelihood": cfg.likelihood,
            "objective_units": self.recipe.objective_units(),
            "dataset": cfg.dataset, "latent": cfg.latent, "ops": ops_name(self.ops),
            "device": str(self.device), "precision": self.precision,
            "channels_last": self.channels_last, "steps": self.step,
            "train": objectives[headline.name]["train"],
            "test": objectives[headline.name]["test"],
            # paper Table 4: trainable parameters of the generative model, and of its prior alone
            "params": gen.param_counts(),
            # train stages given 0 epochs: their objectives are those of an untrained model
            "untrained_stages": self.untrained_stages,
        }
        if len(objectives) > 1:
            summary["stages"] = objectives
        summary.update({f"likelihood_{k}": v for k, v in gen.likelihood.stats().items()})
        summary.update(self.recipe.summary())
        ae_last = [r for r in self.history if r["stage"] == "ae"]
        if ae_last:
            summary["ae"] = {"train_recon": ae_last[-1].get("train_recon"),
                             "test_recon": ae_last[-1].get("test_recon")}
        if cfg.outputs:
            t_out = time.time()
            summary.update(write_outputs(self))
            summary["outputs_seconds"] = round(time.time() - t_out, 2)
        # a number comparable across models, beside the objective in its own units
        summary["headline"] = comparable_headline(self.info, self.data.test, gen, self.recipe.available_references(),
                                                  cfg.alpha, self.primary_routing(), cfg.seed, self.device)
        summary["provenance"] = provenance(self.world, self.device, self.precision, self.channels_last)
        summary["seconds"] = round(time.time() - self.t_start, 2)
        write_json(summary, os.path.join(self.run_dir, "summary.json"))
        self.log(table_row(summary))
        for line in next_steps(summary, self.run_dir):
            self.log(line)
        return summary

    def primary_routing(self) -> str:
        """The routing of the run's own samples (samples.png, the headline)."""
        return self.vae.default_routing


def stage_needs_grad(recipe, stage: Stage) -> bool:
    """Whether a stage's loss takes gradients inside (the UAE's decoder gradient penalty)."""
    return bool(getattr(recipe, "loss_needs_grad", lambda s: False)(stage))


def _nullctx():
    return contextlib.nullcontext()


class _StageLoss(torch.nn.Module):
    """What DistributedDataParallel wraps for a train stage: the stage's optimised parameters (and
    nothing else, so the gradients it averages are exactly the optimiser's) and a forward that is
    the recipe's loss."""

    def __init__(self, loss, stage: Stage, params):
        super().__init__()
        self.params = torch.nn.ParameterList(params)
        self._loss, self._stage = loss, stage

    def forward(self, x):
        return self._loss(self._stage, x)


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def train(cfg: TrainConfig, explicit: Optional[Set[str]] = None, verbose: bool = True) -> RunResult:
    """Train (or resume, with cfg.resume) and return the RunResult. Ctrl-C raises TrainingInterrupted
    (a KeyboardInterrupt) naming the run folder; the last checkpoint is kept."""
    trainer = None
    try:
        trainer = Trainer(cfg, explicit=explicit, verbose=verbose)
        return trainer.run()
    except KeyboardInterrupt as exc:
        if trainer is None:
            raise
        resumable = os.path.isfile(os.path.join(trainer.run_dir, ckpt.CHECKPOINT))
        raise TrainingInterrupted(trainer.run_dir, resumable) from exc
    except Exception as exc:
        # a full disk in a plain write (train.log, a figure): a DiskFullError naming the run folder
        folder = trainer.run_dir if trainer is not None else cfg.out or cfg.resume
        full = disk_full_error(exc, folder=folder)
        if full is None or full is exc:
            raise
        raise full from exc
    finally:
        if trainer is not None:
            trainer.close()
