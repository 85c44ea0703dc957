"""What a crop cache holds and where it came from: the record that binds a cache to its data.

Every cache written by ``dfd-extract`` (and the synthetic set) carries a *cache record*: the dataset's name and
root, the :class:`~dfd.faces.contract.CropContract` its crops were made with, the storage format and the
frames dropped per label and method. It is written twice: ``<cache>/cache.json`` (read before anything is
extracted, e.g. to refuse mixing settings) and the manifest's Parquet key-value metadata (``dfd.cache``), so a
manifest copied on its own still says what it is. Training and evaluation refuse a cache whose recorded root
differs from the configured one; export copies the contract into the bundle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from dfd.faces.contract import CropContract

log = logging.getLogger(__name__)

RECORD_FILE = "cache.json"
LEGACY_FILE = "extract_config.json"  # dfd before crop contracts: settings only, no root
METADATA_KEY = b"dfd.cache"
FORMAT = "dfd-crop-cache"
FORMAT_VERSION = 1
_warned: set[str] = set()


def normalize_root(root: str | Path | None) -> str | None:
    """The absolute, symlink-resolved form of a dataset root (how caches record and compare roots)."""
    if root is None:
        return None
    return os.path.realpath(os.path.expanduser(str(root)))


def path_key(root: str | Path | None) -> str:
    """8 hex digits naming a dataset root: ``cache_dir: ${paths.cache_dir}/${.name}-${dfd.path_key:${.root}}``
    gives every root its own cache, so two folders of one dataset kind never share crops."""
    norm = normalize_root(root) or ""
    return hashlib.sha1(norm.encode("utf-8")).hexdigest()[:8]


def make_record(dataset: str, root: str | Path | None, contract: CropContract, storage: dict | None = None,
                **extra: Any) -> dict[str, Any]:
    """A cache record (JSON-ready)."""
    from dfd import __version__

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "root": normalize_root(root),
        "contract": contract.to_dict(),
        "contract_id": contract.fingerprint(),
        "storage": dict(storage or {}),
        "dfd_version": __version__,
        **extra,
    }


def read_record(cache_dir: str | Path) -> dict[str, Any] | None:
    """``<cache_dir>/cache.json``, or None when the cache has none (new, or made by an older dfd)."""
    path = Path(cache_dir) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def manifest_record(manifest: str | Path) -> dict[str, Any] | None:
    """The record stored in a manifest's Parquet metadata (None for manifests written without one)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(str(manifest)).metadata or {}
    except (OSError, ValueError):
        return None
    raw = meta.get(METADATA_KEY)
    return json.loads(raw) if raw else None


def record_of(manifest: str | Path) -> dict[str, Any] | None:
    """A manifest's record: its own metadata, else the ``cache.json`` beside it."""
    return manifest_record(manifest) or read_record(Path(manifest).parent)


def contract_of_record(record: dict[str, Any] | None) -> CropContract | None:
    """The crop contract a record names (None when absent)."""
    if not record or not record.get("contract"):
        return None
    return CropContract.from_mapping(record["contract"], where="cache contract")


def check_root(record: dict[str, Any] | None, name: str, root: str | Path | None, cache_dir: str | Path,
               config_name: str | None = None) -> None:
    """Refuse a cache whose recorded dataset root is not ``root`` (one line: both roots and the fix).

    A cache made by an older dfd records no root: it is used, with a one-time warning to re-extract it.
    """
    from dfd.errors import DatasetError

    if record is None or "root" not in record:
        key = str(cache_dir)
        if key not in _warned:
            _warned.add(key)
            log.warning("%s: the crop cache %s records no dataset root or crop contract (made by an older dfd); "
                        "re-extract it with dfd-extract to bind it to its data", name, cache_dir)
        return
    recorded, wanted = record.get("root"), normalize_root(root)
    if recorded is None or wanted is None or recorded == wanted:
        return
    cfg = config_name or name
    raise DatasetError(
        f"{name}: the crop cache {cache_dir} holds crops of {recorded}, but dataset.root is {wanted}; set "
        f"dataset.root={recorded}, or extract the new root first (`dfd-extract dataset={cfg} dataset.root={wanted}`; "
        "the default dataset.cache_dir is distinct per root)"
    )


def safe_relpath(name: str) -> str:
    """A relative folder for a video id or a file path: '/' nests folders; odd characters are replaced and a
    short hash added, so two names never share a folder (cache crops, dfd-predict --save-crops)."""
    clean = re.sub(r"[^A-Za-z0-9._/-]", "_", name).strip("/")
    parts = [p if p not in ("", ".", "..") else "_" for p in clean.split("/")]
    clean = "/".join(parts) or "_"
    if clean != name:
        clean = f"{clean}-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"
    return clean
