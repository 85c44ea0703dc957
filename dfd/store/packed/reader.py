"""Opening a shard store for reading (local folder or URL) and reading one crop's bytes from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from dfd import atomic
from dfd.store.packed.format import (
    FORMAT,
    INDEX_NAME,
    META_NAME,
    ShardError,
    is_url,
    join_url,
    open_url,
    sha256_file,
)

# ----------------------------------------------------------------------------------------------- helpers


# ----------------------------------------------------------------------------------------------- writing


# ----------------------------------------------------------------------------------------------- reading
class ShardStore:
    """A shard store opened for reading: its metadata, its index (as a local file) and its shards' URLs.

    Args:
        root: a folder, or a URL (``s3://bucket/dfd/ffpp``, ``https://...``, ``file:///...``,
            ``pipe:aws s3 cp s3://bucket/dfd/ffpp/{path} -``).
        cache_dir: for URL roots, where ``shards.json`` and ``manifest.parquet`` are kept locally (re-fetched
            when the remote ``shards.json`` changes).
    """

    def __init__(self, root: str | Path, cache_dir: str | Path | None = None) -> None:
        self.root = str(root)
        self.remote = is_url(self.root)
        if not self.remote:
            meta_path = Path(self.root) / META_NAME
            if not meta_path.is_file():
                raise ShardError(f"no shard store at {self.root} ({META_NAME} missing); pack the crop cache first "
                                 f"with `dfd-pack dataset=<name>`, or use data.store=files")
            self.meta = json.loads(meta_path.read_text())
            self.manifest_path = Path(self.root) / INDEX_NAME
        else:
            self.meta, self.manifest_path = self._fetch(cache_dir)
        if self.meta.get("format") != FORMAT:
            raise ShardError(f"{self.root}: shard format {self.meta.get('format')!r} is not {FORMAT!r}; re-run dfd-pack")
        self.shards: list[dict] = self.meta["shards"]
        self.urls = [self.url(s["path"]) for s in self.shards]

    def url(self, rel: str) -> str:
        return join_url(self.root, rel) if self.remote else str(Path(self.root) / rel)

    def _fetch(self, cache_dir: str | Path | None) -> tuple[dict, Path]:
        base = Path(cache_dir or Path.home() / ".cache" / "dfd" / "remote_shards")
        local = base / hashlib.sha1(self.root.encode()).hexdigest()[:16]
        local.mkdir(parents=True, exist_ok=True)
        try:
            with open_url(self.url(META_NAME)) as f:
                raw = f.read()
        except (OSError, FileNotFoundError) as e:
            raise ShardError(f"cannot read {self.url(META_NAME)}: {e}; check data.shards.root") from None
        cached = local / META_NAME
        if not (cached.is_file() and cached.read_bytes() == raw and (local / INDEX_NAME).is_file()):
            tmp = local / f".{INDEX_NAME}.tmp{os.getpid()}"
            with open_url(self.url(INDEX_NAME)) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            os.replace(tmp, local / INDEX_NAME)
            atomic.write_bytes(cached, raw)
        return json.loads(raw), local / INDEX_NAME

    def check_source(self, manifest: Path) -> str | None:
        """A one-line warning when the store was packed from another version of ``manifest`` (else None)."""
        src = self.meta.get("source", {})
        if not manifest.is_file():
            return None
        if manifest.stat().st_size != src.get("bytes") or sha256_file(manifest) != src.get("sha256"):
            return (f"shard store {self.root} was packed from an older {manifest}; re-run dfd-pack to include "
                    f"the current crops (training uses the store's own manifest)")
        return None


class ByteReader:
    """Reads one crop's bytes: ``os.pread`` on local shards (descriptors opened lazily, per process), or an
    fsspec range read for URL roots."""

    def __init__(self, urls: list[str], remote: bool) -> None:
        self.urls, self.remote = urls, remote
        self._fds: dict[int, Any] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        return {"urls": self.urls, "remote": self.remote}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["urls"], state["remote"])

    def read(self, shard: int, offset: int, nbytes: int) -> bytes:
        if self._pid != os.getpid():  # forked DataLoader worker: its own descriptors
            self._fds, self._pid = {}, os.getpid()
        if self.remote:
            import fsspec

            fs, path = fsspec.core.url_to_fs(self.urls[shard])
            return fs.cat_file(path, start=int(offset), end=int(offset) + int(nbytes))
        fd = self._fds.get(shard)
        if fd is None:
            if len(self._fds) >= 256:
                os.close(self._fds.pop(next(iter(self._fds))))
            fd = self._fds[shard] = os.open(self.urls[shard], os.O_RDONLY)
        data = os.pread(fd, int(nbytes), int(offset))
        if len(data) != nbytes:
            raise OSError(f"shard {self.urls[shard]} is truncated at offset {offset}; re-run dfd-pack")
        return data

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            for fd in getattr(self, "_fds", {}).values():
                with contextlib.suppress(OSError):
                    os.close(fd)


# ----------------------------------------------------------------------------------------------- DataModule glue


_STORES: dict[tuple[str, str | None], ShardStore] = {}


def open_store(root: str, cache_dir: str | None = None) -> ShardStore:
    """An opened store, reused across a DataModule's splits."""
    key = (root, cache_dir)
    if key not in _STORES:
        _STORES[key] = ShardStore(root, cache_dir)
    return _STORES[key]


