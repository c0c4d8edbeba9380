"""One writer per run folder: a training holds an exclusive `flock` on `DIR/.train.lock` for as long
as it writes the folder, so a second training on the same `--out` (or `--resume`) stops at once with
an error naming the holder's pid, instead of both writing and the last one silently winning.

The lock is the kernel's, on the open file: it ends with the process however it ends (a SIGKILL or a
power cut leaves no stale lock, only a lock file that the next training reuses). Readers (`sample`,
`evaluate`, `compare` reading a finished run) never take it. Under torchrun only rank 0, the rank that
writes, takes it. The holder removes the file when it lets go; a training that opened the file just
before it was removed notices (its lock is on a file no longer in the folder) and opens it again."""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from typing import Optional

from ..errors import ConfigError

LOCK_FILE = ".train.lock"


class RunLockedError(ConfigError):
    """Another process is training in this run folder."""


def _holder(fd: int) -> str:
    """What the holder wrote into the lock file: 'pid N on HOST since TIME'."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace")
    except OSError:
        text = ""
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    pid = fields.get("pid", "").strip()
    if not pid.isdigit():
        return "a process that has not written its pid yet"
    where = f" on {fields['host']}" if fields.get("host") and fields["host"] != socket.gethostname() else ""
    since = f" since {fields['since']}" if fields.get("since") else ""
    mine = " (this process)" if int(pid) == os.getpid() and not where else ""
    return f"pid {pid}{where}{mine}{since}"


class RunLock:
    """An exclusive lock on a run folder (`acquire`, then `release`)."""

    def __init__(self, folder: str, fd: Optional[int], note: Optional[str] = None):
        self.folder, self.fd = folder, fd
        self.owner = os.getpid()    # a forked child (a data-loading worker) must not let go of it
        self.path = os.path.join(folder, LOCK_FILE)
        self.note = note        # a warning to log (no lock on this file system)

    @classmethod
    def acquire(cls, folder: str, advice: str = "or choose another --out") -> "RunLock":
        """Lock `folder` (an existing folder) or raise RunLockedError naming the holder (and ending
        with `advice`)."""
        path = os.path.join(folder, LOCK_FILE)
        for _ in range(100):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise RunLockedError(
                    f"run folder {folder!r} is being written by another training ({holder}); two "
                    f"trainings in one folder would overwrite each other: wait for it to end (or stop "
                    f"it), {advice}") from None
            except OSError as exc:      # a file system without flock (some network mounts)
                os.close(fd)
                return cls(folder, None, note=f"warning: cannot lock {folder!r} ({exc.strerror or exc}); "
                                              "nothing stops a second training from writing this folder")
            try:        # the previous holder may have removed the file between our open and our lock
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except OSError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise RunLockedError(f"cannot lock run folder {folder!r}: its lock file keeps changing")
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, (f"pid={os.getpid()}\nhost={socket.gethostname()}\n"
                           f"since={time.strftime('%Y-%m-%d %H:%M:%S')}\n").encode(), 0)
        return cls(folder, fd)

    @property
    def held(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        """Let go (idempotent): remove the lock file while still holding it, then unlock."""
        if self.fd is None or os.getpid() != self.owner:
            return
        fd, self.fd = self.fd, None
        try:
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    os.unlink(self.path)
        finally:
            os.close(fd)

    def __del__(self):      # a Trainer dropped without run() or close(): the fd is not left open
        with contextlib.suppress(Exception):
            self.release()


def is_writer_rank() -> bool:
    """Whether this process writes run folders: every process but torchrun's ranks other than 0
    (read from the environment, as it is needed before the process group exists)."""
    try:
        return int(os.environ.get("RANK", "0") or 0) == 0
    except ValueError:
        return True
