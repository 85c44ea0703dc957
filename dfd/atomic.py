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
