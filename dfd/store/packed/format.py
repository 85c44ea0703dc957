"""The shard store's names and small rules: format id, file names, member keys, size strings, URLs and the
``data.shards`` settings (everything the writer and the readers agree on).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.parquet as pq

from dfd.errors import UserError

FORMAT = "dfd-shards/1"


META_NAME = "shards.json"


INDEX_NAME = "manifest.parquet"


MODES = ("auto", "random", "stream")


LOCATION_COLUMNS = ("shard", "offset", "nbytes")


BLOCK = 512  # tar block size: member data starts on, and is padded to, a block boundary


MTIME = 0  # fixed member times: the same cache packs to byte-identical shards (resume == uninterrupted run)


class ShardError(UserError, ValueError):
    """A shard store is missing, stale, inconsistent, or used in a way its read mode cannot serve."""


def parse_size(value: int | float | str) -> int:
    """``512MB``, ``1GiB``, ``2.5e8`` or an int -> bytes (decimal units: MB = 10^6, MiB = 2^20)."""
    if isinstance(value, int | float):
        return int(value)
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([KMGT]?)(i?)B?\s*", str(value), flags=re.IGNORECASE)
    if not m:
        raise ShardError(f"cannot read size {value!r}; write e.g. 512MB, 1GB, 256MiB or a byte count")
    unit = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * unit ** "_KMGT".index((m.group(2) or "_").upper()))


def sample_key(video_id: str, frame: int, track: int = 0) -> str:
    """The tar member stem of one crop: the video id made path- and WebDataset-safe, then the frame (and the
    face track when it is not 0: several faces of one frame, ``extract.choice=all``).

    WebDataset splits a member name at its first dot after the last slash, so dots and odd characters become
    ``_`` (with a short hash of the original id so two ids never share a key).
    """
    clean = re.sub(r"[^A-Za-z0-9_/-]", "_", video_id).strip("/") or "_"
    clean = "/".join(p or "_" for p in clean.split("/"))
    if clean != video_id:
        clean = f"{clean}-{hashlib.sha1(video_id.encode()).hexdigest()[:8]}"
    return f"{clean}/{int(frame):06d}" + (f"_{int(track)}" if track else "")


def is_url(root: str | Path) -> bool:
    """A remote (or fsspec) root: ``s3://``, ``gs://``, ``https://``, ``file://``, ``pipe:...``."""
    s = str(root)
    return "://" in s or s.startswith("pipe:")


def join_url(root: str | Path, rel: str) -> str:
    """A file of the store: ``{path}`` in the root is replaced (``pipe:`` commands), else ``root/rel``."""
    s = str(root)
    return s.replace("{path}", rel) if "{path}" in s else f"{s.rstrip('/')}/{rel}"


def open_url(url: str) -> Any:
    """A readable binary stream for a local path, an fsspec URL (s3:// needs s3fs) or a WebDataset ``pipe:``."""
    scheme = urlparse(url).scheme if "://" in url else ("pipe" if url.startswith("pipe:") else "")
    if scheme == "":
        return open(url, "rb")  # noqa: SIM115 - the caller closes it
    if scheme == "pipe":
        from webdataset.gopen import gopen

        return gopen(url, "rb")
    import fsspec

    try:
        return fsspec.open(url, "rb").open()
    except (ImportError, ValueError) as e:
        raise ShardError(f"cannot open {url}: {e} (install the fsspec backend for '{scheme}://', e.g. "
                         f"`pip install s3fs`, or give a root like 'pipe:aws s3 cp s3://bucket/dir/{{path}} -')") from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def source_info(manifest: Path, cache_dir: str | Path | None = None) -> dict:
    """What a store records about the manifest it was made from (a stale store is detected by its sha256): its
    path relative to the dataset's cache (``dataset.cache_dir``; the manifest's own folder when not given), never
    an absolute path that a moved cache would make wrong."""
    manifest = Path(manifest)
    base = Path(cache_dir) if cache_dir is not None else manifest.parent
    rel = os.path.relpath(os.path.abspath(manifest), os.path.abspath(base))
    info: dict[str, Any] = {
        "manifest": Path(rel).as_posix() if not rel.startswith("..") else manifest.name,
        "manifest_root": "dataset.cache_dir",
        "sha256": sha256_file(manifest),
        "bytes": manifest.stat().st_size,
        "rows": pq.ParquetFile(manifest).metadata.num_rows,
    }
    for name in ("extract_config.json", "params.json"):  # extraction settings / synthetic generator params
        p = manifest.parent / name
        if p.is_file():
            with contextlib.suppress(ValueError):
                info[name.removesuffix(".json")] = json.loads(p.read_text())
    return info


@dataclass
class ShardSettings:
    """``data.shards``: where a dataset's shards are and how to read them."""

    root: str | None = None  # None: <dataset cache>/shards; a URL may hold {name} (the dataset's name)
    mode: str = "auto"  # auto | random | stream
    shuffle_buffer: int = 1000
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ShardError(f"data.shards.mode={self.mode!r} is not valid; choose one of {', '.join(MODES)}")

    @classmethod
    def from_mapping(cls, values: Mapping | None) -> ShardSettings:
        values = dict(values or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ShardError(f"unknown data.shards settings {unknown}; valid: {sorted(known)}")
        return cls(**values)

    def root_for(self, name: str, manifest: Path) -> str:
        if self.root:
            return str(self.root).replace("{name}", name)
        return str(manifest.parent / "shards")

    def mode_for(self, root: str) -> str:
        return self.mode if self.mode != "auto" else ("stream" if is_url(root) else "random")
