"""The trainer's checkpoint file: written atomically (a temporary file in the same folder, fsync, then
os.replace, so a crash leaves either the old or the new checkpoint, never a torn one), loaded with
`torch.load(weights_only=True)` and validated (format, version, keys, integrity, finite weights), with
errors that say what is wrong. Below training/ and evaluation/ (it imports neither), so reading a run
does not import the trainer; the RNG states a checkpoint stores are training/checkpoint.py's.

Integrity: `torch.load` does not check the zip records' CRCs, so bytes damaged on disk would load as
wrong weights. Every checkpoint therefore carries a `digest`: a SHA-256 over every tensor's dtype,
shape and bytes and every other value, in a fixed traversal of the whole dict (the `digest` entry
aside), checked on every load. The entry is optional, so the format stays version 1 (older xvae_fast
versions read these checkpoints and ignore it); a checkpoint written before it has no digest, and for
those the zip CRCs are checked instead."""
from __future__ import annotations

import hashlib
import numbers
import os
import zipfile
from typing import Any, Dict, Optional, Tuple

import torch

from .atomic_file import atomic_open
from .errors import CheckpointError
from .progress import shorten

FORMAT = "xvae_fast.checkpoint"
VERSION = 1
CHECKPOINT = "checkpoint.pt"
REQUIRED = ("format", "version", "config", "stage", "epoch", "batch", "step", "rng", "data_info",
            "models", "optimizers", "schedulers", "history", "running")


DIGEST = "digest"
MODULE_WHAT = {"ae": "autoencoder", "vae": "VAE"}    # how errors name a checkpoint's module entries
DIGEST_ALGORITHM = "sha256"


def atomic_save(obj: Any, path: str) -> None:
    """torch.save to `path` atomically and durably (`atomic_open`): on any failure `path` is left
    as it was (a full disk is a DiskFullError). A trainer checkpoint gets its digest (`seal`)."""
    size = seal(obj) if is_checkpoint(obj) else None
    with atomic_open(path, "wb", durable=True, size_hint=size) as f:
        torch.save(obj, f)


# -- integrity -------------------------------------------------------------------------------------
def is_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def _scalar(v: Any) -> bytes:
    """An unambiguous encoding of a non-container value (length-prefixed where needed)."""
    if v is None:
        return b"N;"
    if isinstance(v, bool):
        return b"B1;" if v else b"B0;"
    if isinstance(v, numbers.Integral):
        return b"I%d;" % int(v)
    if isinstance(v, numbers.Real):
        return b"F" + float(v).hex().encode() + b";"       # exact, numpy floats included
    if isinstance(v, str):
        b = v.encode("utf-8", "surrogatepass")
        return b"S%d:" % len(b) + b
    if isinstance(v, (bytes, bytearray)):
        return b"Y%d:" % len(v) + bytes(v)
    r = f"{type(v).__name__}:{v!r}".encode("utf-8", "backslashreplace")
    return b"O%d:" % len(r) + r


def _feed(h, v: Any) -> int:
    """Hash `v` into `h` (tensors by dtype, shape and bytes; mappings in key order); returns the
    tensor bytes seen."""
    if isinstance(v, torch.Tensor):
        t = v.detach()
        if t.layout != torch.strided:
            t = t.to_dense()
        t = t.cpu().resolve_conj().resolve_neg().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        return t.numel() * t.element_size()
    if isinstance(v, dict):
        items = sorted(((_key(k), x) for k, x in v.items()), key=lambda kv: kv[0])
        h.update(b"D%d:" % len(items))
        n = 0
        for k, x in items:
            h.update(k)
            n += _feed(h, x)
        return n
    if isinstance(v, (list, tuple)):
        h.update(b"L%d:" % len(v))
        return sum(_feed(h, x) for x in v)
    h.update(_scalar(v))
    return 0


def _key(k: Any) -> bytes:
    return _scalar(k) if not isinstance(k, (tuple, torch.Tensor)) else repr(k).encode()


def digest(ck: Dict[str, Any]) -> Tuple[str, int]:
    """(hex SHA-256 of the checkpoint's content, the `digest` entry aside; the bytes of its tensors)."""
    h = hashlib.sha256()
    n = _feed(h, {k: v for k, v in ck.items() if k != DIGEST})
    return h.hexdigest(), n


def seal(ck: Dict[str, Any]) -> int:
    """Store the checkpoint's digest in it (replacing an older one); returns its tensor bytes."""
    hexdigest, n = digest(ck)
    ck[DIGEST] = {"algorithm": DIGEST_ALGORITHM, "hex": hexdigest}
    return n


def _check_integrity(ck: Dict[str, Any], path: str) -> None:
    fix = "restore it from a backup, or start a new run (--overwrite)"
    stored = ck.get(DIGEST)
    if stored is None:          # written before checkpoints had a digest: the zip CRCs still tell
        bad = _bad_zip_record(path)
        if bad:
            raise CheckpointError(f"checkpoint {path!r} is corrupt: its record {bad!r} fails the zip "
                                  f"CRC check (the file was damaged after it was written); {fix}")
        return
    if not isinstance(stored, dict) or stored.get("algorithm") != DIGEST_ALGORITHM \
            or not isinstance(stored.get("hex"), str):
        raise CheckpointError(f"checkpoint {path!r} is corrupt: its digest entry is unreadable; {fix}")
    if digest(ck)[0] != stored["hex"]:
        raise CheckpointError(f"checkpoint {path!r} is corrupt: its content does not match the "
                              f"{DIGEST_ALGORITHM} digest written with it (the file was damaged after "
                              f"it was written); {fix}")


def _bad_zip_record(path: str) -> Optional[str]:
    """The first record of a zip checkpoint whose CRC does not match, else None."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f"(zip structure: {exc})" if zipfile.is_zipfile(path) else None


# -- loading ---------------------------------------------------------------------------------------
def checkpoint_path(run_or_file: str) -> str:
    return os.path.join(run_or_file, CHECKPOINT) if os.path.isdir(run_or_file) else run_or_file


def _check_finite(tree, where: str, path: str) -> None:
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() and tree.numel() and not bool(torch.isfinite(tree).all()):
            raise CheckpointError(f"checkpoint {path!r} is corrupt: tensor {where!r} contains NaN or "
                                  "inf")
    elif isinstance(tree, dict):
        for k, v in tree.items():
            _check_finite(v, f"{where}.{k}" if where else str(k), path)
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            _check_finite(v, f"{where}[{i}]", path)


def load_checkpoint(run_or_file: str, map_location="cpu") -> Dict[str, Any]:
    """Load and validate a checkpoint (a run folder or a checkpoint file)."""
    path = checkpoint_path(run_or_file)
    if not os.path.exists(path):
        where = (f"run folder {run_or_file!r} has no {CHECKPOINT}" if os.path.isdir(run_or_file)
                 else f"no checkpoint at {path!r}")
        raise CheckpointError(f"{where}; is this a run folder written by `python -m xvae_fast.train`?")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle errors, unexpected types...
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else "")
        raise CheckpointError(f"checkpoint {path!r} is corrupt or unreadable "
                              f"({type(exc).__name__}: {shorten(detail)}); restore it from a backup or "
                              "start a new run") from exc
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not an xvae_fast trainer checkpoint")
    if ck.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path!r} has format version {ck.get('version')!r}; this "
                              f"xvae_fast reads version {VERSION}")
    missing = [k for k in REQUIRED if k not in ck]
    if missing:
        raise CheckpointError(f"checkpoint {path!r} is incomplete: missing {', '.join(missing)}")
    _check_finite(ck["models"], "models", path)
    _check_finite(ck.get("prior"), "prior", path)
    if DIGEST not in ck:
        # without a digest, inf in the optimizer state may be damage; with one it is Adam's own state
        # after an overflowing gradient (exp_avg_sq = inf makes the update 0), which a resume continues
        _check_finite(ck["optimizers"], "optimizers", path)
    _check_integrity(ck, path)
    return ck


def load_state(module: torch.nn.Module, state: Optional[dict], what: str, path: str) -> None:
    if state is None:
        raise CheckpointError(f"checkpoint {path!r} holds no {what} weights")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path!r} does not match the {what} this config builds "
                              f"(different data shape, latent size or architecture?): "
                              f"{str(exc).splitlines()[0]}") from exc
