"""Output paths of the commands, checked before any work starts: a folder that can be created and
written, or a file whose folder exists and is writable. A bad path is a ConfigError naming the flag
(exit 2), never a traceback after minutes of training or sampling."""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Optional

from .errors import ConfigError


def _nearest_existing(path: str) -> str:
    p = os.path.abspath(path)
    while not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def _probe_writable(folder: str, flag: str, path: str) -> None:
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".xvae-write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} {path!r}: cannot write in {folder!r} ({exc.strerror or exc})") from None


def check_out_dir(path: str, flag: str = "--out") -> None:
    """Raise unless `path` is a writable folder or could be created as one (nothing is created)."""
    base = _nearest_existing(path)
    if not os.path.isdir(base):
        raise ConfigError(f"{flag} {path!r}: {base!r} is a file, not a folder")
    _probe_writable(base, flag, path)


def make_out_dir(path: str, flag: str = "--out") -> Optional[str]:
    """Create `path` (and its parents) after checking it; returns the topmost folder this call created
    (for `remove_created` on a later error), or None when the folder existed."""
    check_out_dir(path, flag)
    p = os.path.abspath(path)
    if os.path.isdir(p):
        _probe_writable(p, flag, path)
        return None
    top = p
    while not os.path.exists(os.path.dirname(top)):
        top = os.path.dirname(top)
    try:
        os.makedirs(p, exist_ok=True)
        _probe_writable(p, flag, path)
    except OSError as exc:
        remove_created(top)
        raise ConfigError(f"{flag} {path!r}: cannot create the folder ({exc.strerror or exc})") from None
    except ConfigError:
        remove_created(top)
        raise
    return top


def remove_created(top: Optional[str], only_if_empty: bool = False) -> None:
    """Remove a folder `make_out_dir` created (after an error before any work was kept in it); with
    only_if_empty, only when no file was written anywhere under it."""
    if not top or not os.path.isdir(top):
        return
    if only_if_empty and any(files for _, _, files in os.walk(top)):
        return
    shutil.rmtree(top, ignore_errors=True)


def check_out_file(path: str, flag: str = "--out", exts=None) -> None:
    """Raise unless `path` can be written: an allowed extension, an existing writable folder, and not
    an existing folder itself."""
    if exts is not None:
        ext = os.path.splitext(path)[1].lower()
        if ext not in exts:
            raise ConfigError(f"{flag} must end in {' or '.join(exts)}, got {path!r}")
    if os.path.isdir(path):
        raise ConfigError(f"{flag} {path!r} is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(folder):
        raise ConfigError(f"{flag} {path!r}: the folder {folder!r} does not exist")
    if not os.path.isdir(folder):
        raise ConfigError(f"{flag} {path!r}: {folder!r} is a file, not a folder")
    _probe_writable(folder, flag, path)
