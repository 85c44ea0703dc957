"""Atomic file writes: a killed run never leaves a half-written file where a finished one is expected.

Write to a temporary sibling (same folder, so the final rename stays on one file system), then ``os.replace``.
Temporary names are ``.<name>.<pid>-<random>.tmp``: hidden, unique per writer, and recognisable by the
``.*.tmp`` glob that cleans up after killed runs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temp_sibling(path: str | Path) -> Path:
    """A unique temporary path beside ``path``."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` (with ``mode`` if given), else it goes.

    For writers that want a file name (``pq.write_table``, ``DataFrame.to_csv``, ``torch.jit.save``).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str, mode: int | None = None) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"), mode)


def write_table(table: Any, path: str | Path) -> Path:
    """Write a pyarrow ``table`` to the Parquet file ``path`` atomically."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


class LockHeld(BlockingIOError):
    """Another process holds the lock; ``holder`` is what it wrote about itself (pid, host, command, start)."""

    def __init__(self, path: Path, holder: dict) -> None:
        super().__init__(f"{path} is locked by {holder or 'another process'}")
        self.path, self.holder = path, holder


@contextmanager
def held_lock(path: str | Path, shared: bool = False, about: dict | None = None) -> Iterator[Path]:
    """Hold an advisory lock on ``path`` (``fcntl.flock``) for the block: exclusive, or shared with other shared
    holders. Raises :class:`LockHeld` at once when it cannot be had.

    The kernel drops the lock when its process ends, however it ends (SIGKILL included): a killed run never
    leaves a lock that stops the next one. An exclusive holder writes ``about`` (who it is) into the file.
    Filesystems without flock (some network mounts) go unlocked rather than fail.
    """
    import fcntl
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            except (OSError, ValueError):
                holder = {}
            raise LockHeld(path, holder) from None
        except OSError as e:
            import errno

            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
        if not shared and about is not None:
            data = json.dumps(about).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        yield path
    finally:
        os.close(fd)
