"""What a crop cache holds and where it came from: the record that binds a cache to its data.

Every cache written by ``dfd-extract`` (and the synthetic set) carries a *cache record*: the dataset's name and
root, the :class:`~dfd.faces.contract.CropContract` its crops were made with, the storage format and the
frames dropped per label and method (and, per split, the videos and frames where no face was found:
:func:`faces_not_found`, what evaluation reports per test set). It is written twice: ``<cache>/cache.json`` (read before anything is
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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


# ----------------------------------------------------------------------------------------------- faces not found
def split_drop_stats(videos: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Faces not found, per split: what evaluation reports per test set and what ``eval.no_face=score`` counts.

    ``videos``: one mapping per indexed video with ``video_id, label, split, method`` and its extraction result:
    ``sampled`` (frames decoded), ``dropped`` (sampled frames without a face) and ``failed`` (no crop at all).
    A failed video with sampled frames had no face in any of them; one without sampled frames could not be read
    (corrupt, empty) and is counted apart. Returns ``{split: {"label": {"0": counts}, "method": {name: counts +
    label}, "no_face_videos": [[video_id, label, method], ...]}}``; counts are ``videos, videos_no_face,
    videos_unreadable, sampled, dropped`` (dropped includes every sampled frame of a no-face video).
    """
    out: dict[str, dict[str, Any]] = {}
    for v in videos:
        split = out.setdefault(str(v["split"]), {"label": {}, "method": {}, "no_face_videos": []})
        label, method = int(v["label"]), str(v["method"])
        failed, sampled = bool(v["failed"]), int(v["sampled"])
        no_face, unreadable = failed and sampled > 0, failed and sampled == 0
        for group, key in (("label", str(label)), ("method", method)):
            s = split[group].setdefault(key, {"videos": 0, "videos_no_face": 0, "videos_unreadable": 0,
                                              "sampled": 0, "dropped": 0})
            if group == "method":
                s.setdefault("label", label)
            s["videos"] += 1
            s["videos_no_face"] += int(no_face)
            s["videos_unreadable"] += int(unreadable)
            s["sampled"] += sampled
            s["dropped"] += sampled if failed else int(v["dropped"])
        if no_face:
            split["no_face_videos"].append([str(v["video_id"]), label, method])
    return out


@dataclass(frozen=True)
class FacesNotFound:
    """One split of a cache: its videos where no sampled frame had a face, and its frames without a face.

    ``videos``: (video_id, label, method) of each no-face video; ``frames``: frames without a face per (label,
    method), those videos' frames included, None when the cache does not record them (made by a dfd before
    they were recorded per split); ``unreadable``: videos that could not be decoded, per label.
    """

    videos: tuple[tuple[str, int, str], ...] = ()
    frames: Mapping[tuple[int, str], int] | None = None
    unreadable: Mapping[int, int] = field(default_factory=dict)

    def per_label(self) -> dict[str, Any]:
        """Counts per label as results.json records them (``real``/``fake``; frames None when not recorded)."""
        def by_label(counts: Mapping[int, int] | None) -> dict[str, int] | None:
            if counts is None:
                return None
            return {"real": int(counts.get(0, 0)), "fake": int(counts.get(1, 0))}

        videos = {0: sum(1 for _, y, _ in self.videos if y == 0), 1: sum(1 for _, y, _ in self.videos if y == 1)}
        frames = None
        if self.frames is not None:
            frames = {y: sum(n for (lab, _), n in self.frames.items() if lab == y) for y in (0, 1)}
        return {"videos": by_label(videos), "frames": by_label(frames), "unreadable_videos": by_label(self.unreadable)}


def faces_not_found(record: Mapping[str, Any] | None, split: str) -> FacesNotFound | None:
    """What a cache record says about faces not found in ``split`` (see :func:`split_drop_stats`).

    None when the record does not say (caches made before it was recorded per split). A cache of a dataset's own
    face crops (``inputs=crops``) whose record holds no drops ran no detection that could drop anything: empty.
    """
    drops = (record or {}).get("drops") or {}
    if "split" not in drops:
        contract = contract_of_record(record) if record else None
        return FacesNotFound(frames={}) if contract is not None and contract.inputs == "crops" and not drops else None
    s = drops["split"].get(split) or {"label": {}, "method": {}, "no_face_videos": []}
    frames = {(int(c["label"]), m): int(c["dropped"]) for m, c in s["method"].items() if c["dropped"]}
    unreadable = {int(k): int(c["videos_unreadable"]) for k, c in s["label"].items() if c["videos_unreadable"]}
    videos = tuple((str(v), int(y), str(m)) for v, y, m in s.get("no_face_videos", []))
    return FacesNotFound(videos=videos, frames=frames, unreadable=unreadable)
