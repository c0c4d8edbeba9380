"""Files written whole or not at all: the data goes to a temporary file beside the target, which
replaces it in one rename on success, so a reader (or a run that crashed mid-write) sees the old file
or the new one, never a torn one. Used by checkpoints, the bandwidth cache and streamed samples."""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Iterator, Optional


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb", durable: bool = False, prefix: Optional[str] = None,
                suffix: str = ".tmp") -> Iterator[IO]:
    """Open a temporary file in `path`'s folder for writing; on a clean exit it replaces `path`, on
    any error it is removed and `path` is left as it was. `durable`: fsync the data and the rename
    (checkpoints); without it a power cut may lose the new file but never tears it."""
    if "w" not in mode:
        raise ValueError(f"atomic_open writes a file: mode {mode!r} has no 'w'")
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".{os.path.basename(path)}.", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        with contextlib.suppress(OSError):
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
