"""Atomic file writes: write a temp file beside the target, fsync, rename.

A reader sees either the old file or the new one, never half of either; a
crash mid-write leaves at most a stray temp file that nothing reads, and the
next write of the same file removes it (its name carries the writer's pid).

The new file keeps the mode of the one it replaces; a new file gets the
umask's mode, like any file the user creates (``mkstemp`` alone would make
every document, report and checkpoint private to its owner).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

_umask_lock = threading.Lock()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temp file for writing; on clean exit it replaces ``path`` atomically."""
    if mode not in ("w", "wb"):
        raise ValueError("atomic_open supports 'w' and 'wb' only")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    try:
        file_mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        file_mode = 0o666 & ~_umask()
    tmp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), file_mode)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def _umask() -> int:
    # The only portable way to read the umask is to set it; put it straight back.
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _remove_stale_temps(target: Path) -> None:
    """Remove temp files of earlier writes of ``target`` whose writer is gone
    (killed mid-write); a live writer's temp file is left alone."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(\d+)\.[0-9a-f]+\.tmp$")
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    for name in names:
        m = pattern.match(name)
        if m and not _alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(target.parent / name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may be writing
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # alive, but another user's
    return True


def _fsync_dir(directory: Path) -> None:
    # Make the rename itself durable (POSIX); harmless where unsupported.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
