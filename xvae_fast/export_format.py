"""The portable export of a trained model: a folder with two files and no pickle.

- `config.json`: human-readable. The format and its version, the resolved training configuration,
  the data description the model needs (shape, kind, the standardisation statistics of vector data),
  the fitted prior (X-VAE, the standard VAE's N(0, I)) as plain numbers, the stage the run had reached,
  where it came from, and the SHA-256 of `model.safetensors`.
- `model.safetensors`: every module's weights and buffers (`<module>.<state-dict key>`, e.g.
  `vae.decoder.net.0.weight`), nothing else: no optimizer, no RNG state, no training data.

Numbers go through JSON exactly (a float32 or float64 value printed by Python's repr reads back to
the same bits), so an export samples bit-identically to its run. Reading verifies everything and
raises ExportError naming the file: a missing file, an unknown format or version, a checksum that
does not match (bytes damaged after writing), unreadable tensors, NaN or inf, tensors of a module the
configuration does not build. `write` puts model.safetensors first and config.json last, each
atomically, so an interrupted export is never mistaken for a complete one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import struct
from typing import Any, Dict, List, Optional

import torch

from .atomic_file import atomic_open
from .config import TrainConfig
from .data import DataInfo
from .errors import ConfigError, ExportError, XVAEError

FORMAT = "xvae_fast.export"
VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
REQUIRED = ("format", "version", "config", "data", "prior", "stage", "modules", "weights")
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
           "float64": torch.float64}


@dataclasses.dataclass
class Export:
    """What an export folder holds, verified (`read`)."""
    folder: str
    cfg: TrainConfig
    info: DataInfo
    stage: str
    prior: Optional[Dict[str, torch.Tensor]]            # weights, means, stds (None: learned prior)
    states: Dict[str, Optional[Dict[str, torch.Tensor]]]   # module name -> state dict (None: absent)
    source: Dict[str, Any]
    manifest: Dict[str, Any]

    @property
    def config_path(self) -> str:
        return os.path.join(self.folder, CONFIG)

    @property
    def weights_path(self) -> str:
        return os.path.join(self.folder, WEIGHTS)


def is_export(path: str) -> bool:
    """A folder that holds (part of) an export: config.json or model.safetensors."""
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, f)) for f in (CONFIG, WEIGHTS))


# -- plain numbers ---------------------------------------------------------------------------------
def tensor_to_json(t: torch.Tensor) -> Dict[str, Any]:
    """A float tensor as {"dtype", "shape", "values"} (nested lists; exact through JSON)."""
    t = t.detach().cpu()
    name = str(t.dtype).replace("torch.", "")
    if name not in _DTYPES:
        raise ExportError(f"cannot write a {t.dtype} tensor as plain numbers")
    return {"dtype": name, "shape": list(t.shape), "values": t.double().tolist()}


def tensor_from_json(d: Any, what: str, path: str) -> torch.Tensor:
    try:
        dtype = _DTYPES[d["dtype"]]
        t = torch.tensor(d["values"], dtype=torch.float64).to(dtype)
        shape = tuple(int(s) for s in d["shape"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ExportError(f"{path!r}: {what} is not a tensor written by xvae_fast "
                          f"({{'dtype', 'shape', 'values'}}): {exc}") from None
    if tuple(t.shape) != shape:
        raise ExportError(f"{path!r}: {what} has shape {tuple(t.shape)} but says {shape}")
    if not bool(torch.isfinite(t).all()):
        raise ExportError(f"{path!r}: {what} contains NaN or inf")
    return t


def _plain(v: Any, where: str) -> Any:
    """JSON-ready copy of a value of DataInfo.extra (tensors and arrays as lists)."""
    import numpy as np
    if isinstance(v, (torch.Tensor, np.ndarray)):
        return v.tolist()
    if isinstance(v, dict):
        return {str(k): _plain(x, f"{where}.{k}") for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x, f"{where}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise ExportError(f"cannot export {where}: a {type(v).__name__} is not plain data")


def data_to_json(info: DataInfo) -> Dict[str, Any]:
    return {"name": info.name, "kind": info.kind, "shape": list(info.shape),
            "mean": None if info.mean is None else tensor_to_json(torch.as_tensor(info.mean)),
            "std": None if info.std is None else tensor_to_json(torch.as_tensor(info.std)),
            "extra": _plain(info.extra, "the data description's extra entries")}


def data_from_json(d: Any, path: str) -> DataInfo:
    try:
        name, kind, shape = str(d["name"]), d["kind"], tuple(int(s) for s in d["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportError(f"{path!r}: the data description ('data') is malformed: {exc}") from None
    if kind not in ("image", "vector") or not shape or min(shape) < 1:
        raise ExportError(f"{path!r}: the data description has kind {kind!r} and shape {shape}; "
                          "expected image (C, H, W) or vector (D,)")
    mean = None if d.get("mean") is None else tensor_from_json(d["mean"], "data.mean", path)
    std = None if d.get("std") is None else tensor_from_json(d["std"], "data.std", path)
    if (mean is None) != (std is None) or (mean is not None and (tuple(mean.shape) != shape
                                                                   or tuple(std.shape) != shape)):
        raise ExportError(f"{path!r}: the standardisation statistics (data.mean, data.std) must both be "
                          f"given with the data shape {shape}, or both be null")
    if std is not None and not bool((std > 0).all()):
        raise ExportError(f"{path!r}: data.std must be positive")
    return DataInfo(name, kind, shape, mean, std, dict(d.get("extra") or {}))


# -- writing ---------------------------------------------------------------------------------------
def _tensors(states: Dict[str, Optional[Dict[str, torch.Tensor]]]) -> Dict[str, torch.Tensor]:
    out = {}
    for name, sd in states.items():
        for key, t in (sd or {}).items():
            # contiguous private copies: safetensors refuses views that share memory
            out[f"{name}.{key}"] = t.detach().cpu().contiguous().clone()
    return out


def check_out_folder(folder: str, overwrite: bool, flag: str) -> None:
    """The export folder: new, empty, or an earlier export (replaced only with overwrite)."""
    from .outpaths import check_out_dir
    check_out_dir(folder, flag)
    if not os.path.isdir(folder):
        return
    names = [n for n in os.listdir(folder) if not n.startswith(".")]
    if not names:
        return
    if set(names) <= {CONFIG, WEIGHTS}:
        if overwrite:
            return
        raise ConfigError(f"{flag} {folder!r} already holds an export; pass "
                          f"{'--overwrite' if flag.startswith('--') else 'overwrite=True'} to replace it")
    raise ConfigError(f"{flag} {folder!r} is not empty ({', '.join(sorted(names)[:4])}"
                      f"{', ...' if len(names) > 4 else ''}); an export needs a folder of its own")


def write(folder: str, *, cfg: TrainConfig, info: DataInfo, stage: str,
          prior: Optional[Dict[str, torch.Tensor]], states: Dict[str, Optional[Dict[str, torch.Tensor]]],
          source: Dict[str, Any], overwrite: bool = False, flag: str = "directory") -> str:
    """Write an export to `folder` (created if needed); returns its absolute path."""
    from safetensors.torch import save
    from . import __version__
    check_out_folder(folder, overwrite, flag)
    folder = os.path.abspath(folder)
    os.makedirs(folder, exist_ok=True)
    tensors = _tensors(states)
    blob = save(tensors, metadata={"format": FORMAT, "version": str(VERSION)})
    manifest = {
        "format": FORMAT, "version": VERSION, "xvae_fast_version": __version__,
        "torch_version": torch.__version__, "model": cfg.model, "stage": stage, "source": source,
        "data": data_to_json(info),
        "prior": None if prior is None else {k: tensor_to_json(prior[k]) for k in ("weights", "means", "stds")},
        "modules": {name: (None if sd is None else len(sd)) for name, sd in states.items()},
        "weights": {"file": WEIGHTS, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob),
                    "tensors": len(tensors)},
        "config": cfg.to_dict(),
    }
    text = _dumps(manifest)
    with atomic_open(os.path.join(folder, WEIGHTS), "wb", durable=True, size_hint=len(blob)) as f:
        f.write(blob)
    with atomic_open(os.path.join(folder, CONFIG), "w", durable=True) as f:
        f.write(text + "\n")
    return folder


def _dumps(manifest: Dict[str, Any]) -> str:
    """Indented JSON with every innermost list on one line (a prior's rows read as rows). JSON
    strings hold no raw newline, so every newline (and the spaces after it) is indentation."""
    def one_line(m):
        return re.sub(r"\n\s*\]", "]", re.sub(r"\[\n\s*", "[", re.sub(r",\n\s*", ", ", m.group(0))))
    return re.sub(r"\[[^\[\]{}]*\]", one_line, json.dumps(manifest, indent=1, allow_nan=False))


# -- reading ---------------------------------------------------------------------------------------
def _read_manifest(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise ExportError(f"export {os.path.dirname(path)!r} has no {CONFIG}; an export folder holds "
                          f"{CONFIG} and {WEIGHTS} (python -m xvae_fast.export)")
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ExportError(f"{path!r} is corrupt or unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        got = m.get("format") if isinstance(m, dict) else type(m).__name__
        raise ExportError(f"{path!r} is not an xvae_fast export (format {got!r}, expected {FORMAT!r})")
    if m.get("version") != VERSION:
        raise ExportError(f"{path!r} has export format version {m.get('version')!r}; this xvae_fast "
                          f"reads version {VERSION}")
    missing = [k for k in REQUIRED if k not in m]
    if missing:
        raise ExportError(f"{path!r} is incomplete: missing {', '.join(missing)}")
    return m


def _safetensors_metadata(blob: bytes) -> Dict[str, str]:
    n = struct.unpack("<Q", blob[:8])[0] if len(blob) >= 8 else -1
    if n < 2 or 8 + n > len(blob):
        raise ValueError("the header length is out of range")
    header = json.loads(blob[8:8 + n])
    return header.get("__metadata__") or {}


def _read_weights(path: str, manifest: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load
    if not os.path.isfile(path):
        raise ExportError(f"export {os.path.dirname(path)!r} has no {WEIGHTS} (its {CONFIG} is there); "
                          "copy both files of the export")
    with open(path, "rb") as f:
        blob = f.read()
    want = (manifest.get("weights") or {}).get("sha256") if isinstance(manifest.get("weights"), dict) else None
    if hashlib.sha256(blob).hexdigest() != want:
        raise ExportError(f"{path!r} is corrupt or does not belong to this {CONFIG}: its SHA-256 does "
                          f"not match the one {CONFIG} records (damaged after it was written, or mixed "
                          "with another export's file); export the run again")
    try:
        meta = _safetensors_metadata(blob)
        tensors = load(blob)
    except Exception as exc:  # noqa: BLE001 (safetensors raises its own types for every malformation)
        raise ExportError(f"{path!r} is not a readable safetensors file ({type(exc).__name__}: "
                          f"{exc})") from None
    if meta.get("format") != FORMAT:
        raise ExportError(f"{path!r} is not an xvae_fast export's weights (metadata format "
                          f"{meta.get('format')!r})")
    for key, t in tensors.items():
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            raise ExportError(f"{path!r}: tensor {key!r} contains NaN or inf")
    return tensors


def _split(tensors: Dict[str, torch.Tensor], modules: Dict[str, Any],
           path: str) -> Dict[str, Optional[Dict[str, torch.Tensor]]]:
    states: Dict[str, Optional[Dict[str, torch.Tensor]]] = {
        name: (None if n is None else {}) for name, n in modules.items()}
    for key, t in tensors.items():
        name, _, sub = key.partition(".")
        if states.get(name) is None:
            raise ExportError(f"{path!r} holds tensor {key!r} of a module {name!r} that {CONFIG} does "
                              f"not list (modules: {', '.join(k for k, v in modules.items() if v is not None)})")
        states[name][sub] = t
    for name, n in modules.items():
        if n is not None and len(states[name]) != n:
            raise ExportError(f"{path!r} holds {len(states[name])} tensors of module {name!r}; {CONFIG} "
                              f"lists {n}")
    return states


def read(folder: str) -> Export:
    """Read and verify an export folder."""
    folder = os.path.abspath(folder)
    cpath, wpath = os.path.join(folder, CONFIG), os.path.join(folder, WEIGHTS)
    m = _read_manifest(cpath)
    if not isinstance(m["modules"], dict) or not all(
            v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in m["modules"].values()):
        raise ExportError(f"{cpath!r}: 'modules' must map module names to tensor counts (or null)")
    try:
        cfg = TrainConfig.from_saved(m["config"])
    except XVAEError as exc:
        raise ExportError(f"{cpath!r}: its configuration does not read in this xvae_fast: {exc}") from None
    info = data_from_json(m["data"], cpath)
    prior = None
    if m["prior"] is not None:
        if not isinstance(m["prior"], dict):
            raise ExportError(f"{cpath!r}: 'prior' must be null or {{weights, means, stds}}")
        prior = {k: tensor_from_json(m["prior"].get(k), f"prior.{k}", cpath) for k in ("weights", "means", "stds")}
        from .ops.prior import MixturePrior
        try:
            MixturePrior(prior["weights"], prior["means"], prior["stds"])
        except (TypeError, ValueError) as exc:
            raise ExportError(f"{cpath!r} holds an unusable prior: {exc}") from None
    states = _split(_read_weights(wpath, m), m["modules"], wpath)
    return Export(folder, cfg, info, str(m["stage"]), prior, states, dict(m.get("source") or {}), m)


def restore(module: torch.nn.Module, state: Optional[Dict[str, torch.Tensor]], name: str, path: str) -> None:
    """Load one module's tensors strictly; a mismatch names the file and the tensors."""
    if state is None:
        raise ExportError(f"{path!r} holds no weights of module {name!r}, which the configuration builds")
    want, got = module.state_dict(), state
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    # the dtype too: load_state_dict would convert silently, and an export promises the run's bits
    shapes = [f"{k} {str(got[k].dtype).replace('torch.', '')}{tuple(got[k].shape)} (expected "
              f"{str(want[k].dtype).replace('torch.', '')}{tuple(want[k].shape)})" for k in want
              if k in got and (got[k].shape != want[k].shape or got[k].dtype != want[k].dtype)]
    if missing or extra or shapes:
        parts: List[str] = []
        for label, keys in (("missing", missing), ("unexpected", extra), ("mismatched", shapes)):
            if keys:
                parts.append(f"{label}: {', '.join(f'{name}.{k}' for k in keys[:4])}"
                             f"{', ...' if len(keys) > 4 else ''}")
        raise ExportError(f"{path!r} does not match the model its {CONFIG} describes ({'; '.join(parts)})")
    module.load_state_dict(state, strict=True)
