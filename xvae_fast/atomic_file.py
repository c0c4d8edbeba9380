"""Files written whole or not at all: the data goes to a temporary file beside the target, which
replaces it in one rename on success, so a reader (or a run that crashed mid-write) sees the old file
or the new one, never a torn one. Used by checkpoints, the run folder's JSON, CSV and YAML files, the
bandwidth cache, the feature-classifier cache, the comparison tables, downloads and streamed samples.

Also here: the one-line error of a full disk (or a file size limit) and the removal of the temporary
files that writes killed by a signal leave behind. A temporary file's name carries its writer's pid
(`.checkpoint.pt.<pid>-<random>.tmp`), so a cleanup can tell a dead writer's file from a live one's."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import tempfile
from typing import IO, Iterator, List, Optional, Tuple

from .errors import DiskFullError

# errno values that mean "no room for this file": a full device, a full quota, RLIMIT_FSIZE
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _umask() -> int:
    try:        # Linux >= 4.7 reports it without changing it (os.umask would, for an instant)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_file_mode(path: str) -> int:
    """The mode a replaced file keeps, or what open() would give a new one (0666 less the umask);
    mkstemp's 0600 would make a checkpoint unreadable to the group the other outputs are shared with."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def disk_full_error(exc: BaseException, path: Optional[str] = None, needed: Optional[int] = None,
                    written: Optional[int] = None, folder: Optional[str] = None) -> Optional[DiskFullError]:
    """A one-line DiskFullError when `exc` (or an exception it was raised from, e.g. torch.save's
    'enforce fail at inline_container.cc' over an OSError) is a full disk, a full quota or the file size
    limit; None for any other error. `needed`: the file's size when known, else `written`: the bytes it
    got before the error; `folder`: where the writing went, when the file is not known."""
    seen, e = set(), exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFullError):
            return e
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            break
        e = e.__cause__ or e.__context__
    else:
        return None
    target = path or (e.filename if isinstance(e.filename, str) else None)
    if target:
        target = os.path.abspath(target)
        folder = os.path.dirname(target)
    what = f"{os.path.basename(target)!r} in {folder!r}" if target else \
        f"in {folder!r}" if folder else "a file"
    need = (f"needs about {_human(needed)}" if needed else
            f"needs more than the {_human(written)} written" if written else "needs more room")
    if e.errno == errno.EFBIG:
        why = "the file size limit (ulimit -f) is reached"
    else:
        why = "no space left on the device" if e.errno == errno.ENOSPC else "the disk quota is full"
        with contextlib.suppress(OSError, TypeError):
            st = os.statvfs(folder)
            need += f", {_human(st.f_bavail * st.f_frsize)} free"
    return DiskFullError(f"cannot write {what}: {why} ({need})")


@contextlib.contextmanager
def _replacing(path: str, durable: bool, prefix: Optional[str], suffix: str,
               size_hint: Optional[int]) -> Iterator[Tuple[int, str]]:
    """(fd, name) of a new temporary file in `path`'s folder; on a clean exit it replaces `path`
    (`durable`: and the rename is fsynced), on any error it is removed and `path` is left as it was."""
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    file_mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix or f'.{os.path.basename(path)}.'}{os.getpid()}-",
                               suffix=suffix, dir=folder)
    try:
        os.fchmod(fd, file_mode)
        yield fd, tmp
        os.replace(tmp, path)
    except BaseException as exc:
        written = None
        with contextlib.suppress(OSError):
            written = os.stat(tmp).st_size
            os.unlink(tmp)
        full = disk_full_error(exc, path, size_hint, written) if isinstance(exc, Exception) else None
        if full is not None and full is not exc:
            raise full from exc
        raise
    if durable:
        with contextlib.suppress(OSError):
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb", durable: bool = False, prefix: Optional[str] = None,
                suffix: str = ".tmp", size_hint: Optional[int] = None,
                newline: Optional[str] = None) -> Iterator[IO]:
    """Open a temporary file in `path`'s folder for writing; on a clean exit it replaces `path`, on
    any error it is removed and `path` is left as it was. `durable`: fsync the data and the rename
    (checkpoints); without it a power cut may lose the new file but never tears it. A full disk is a
    DiskFullError naming the file and its folder (`size_hint`: the bytes the file needs, if known)."""
    if "w" not in mode:
        raise ValueError(f"atomic_open writes a file: mode {mode!r} has no 'w'")
    with _replacing(path, durable, prefix, suffix, size_hint) as (fd, _):
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": newline})) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str, prefix: Optional[str] = None, suffix: str = ".tmp") -> Iterator[str]:
    """atomic_open for a writer that takes a file name rather than a file (urllib's urlretrieve): the
    name of an empty temporary file in `path`'s folder, which replaces `path` on a clean exit and is
    removed on any error."""
    with _replacing(path, False, prefix, suffix, None) as (fd, tmp):
        os.close(fd)
        yield tmp


def write_json(obj, path: str) -> None:
    """`obj` as indented JSON, atomically (no temporary file is left on an error, a full disk is a
    one-line DiskFullError); values JSON lacks (numpy scalars) are written as floats."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, default=float)


# -- temporary files of killed writes ----------------------------------------------------------------
# atomic_open's: a dot, a prefix, the writer's pid, '-', mkstemp's 8 random characters, the suffix
_ATOMIC_TEMP = re.compile(r"^\..*?(\d+)-[a-z0-9_]{8}(?:\.tmp|\.npy\.part)$")
# the `name.tmp-<pid>` files of older writers
_PID_TEMP = re.compile(r"^.+\.tmp-(\d+)$")
# checkpoints written before the pid was in the name: only a training writes them, so in a run folder
# whose lock a training holds they are always stale
_OLD_CHECKPOINT_TEMP = re.compile(r"^\.checkpoint\.pt\.[a-z0-9_]{8}\.tmp$")


def _pid_alive(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():     # our own: nothing of ours is being written at cleanup time
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError) as exc:
        return isinstance(exc, PermissionError)     # another user's live process
    return True


def stale_temp_files(folder: str) -> List[str]:
    """Paths of the temporary files in `folder` (not below it) whose writer is no longer running;
    call it while holding the folder's run lock (training/run_lock.py)."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    stale = []
    for name in names:
        m = _ATOMIC_TEMP.match(name) or _PID_TEMP.match(name)
        if (m and not _pid_alive(int(m.group(1)))) or (not m and _OLD_CHECKPOINT_TEMP.match(name)):
            p = os.path.join(folder, name)
            if os.path.isfile(p) and not os.path.islink(p):
                stale.append(p)
    return stale


def remove_stale_temp_files(folder: str) -> List[str]:
    """Remove `stale_temp_files(folder)`; returns the names removed."""
    removed = []
    for p in stale_temp_files(folder):
        with contextlib.suppress(OSError):
            os.unlink(p)
            removed.append(os.path.basename(p))
    return removed
