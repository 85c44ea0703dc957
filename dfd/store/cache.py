"""What a crop cache holds and where it came from: the record that binds a cache to its data.

Every cache written by ``dfd-extract`` (and the synthetic set) carries a *cache record*: the dataset's name and
root, the :class:`~dfd.faces.contract.CropContract` its crops were made with, the storage format and the
frames dropped per label and method (and, per split, the videos and frames where no face was found:
:func:`faces_not_found`, what evaluation reports per test set). It is written twice: ``<cache>/cache.json`` (read before anything is
extracted, e.g. to refuse mixing settings) and the manifest's Parquet key-value metadata (``dfd.cache``), so a
manifest copied on its own still says what it is. Training and evaluation refuse a cache whose recorded root
differs from the configured one, unless the configured root holds the very files the cache was made from (the
dataset was moved: same relative paths and sizes); export copies the contract into the bundle.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfd.errors import UserError
from dfd.faces.contract import CropContract
from dfd.store.roots import DATASET_ROOT, PATH_ROOT_COLUMN, Roots, real

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
    return real(root)


def path_key(root: str | Path | None) -> str:
    """8 hex digits naming a dataset root: ``cache_dir: ${paths.cache_dir}/${.name}-${dfd.path_key:${.root}}``
    gives every root its own cache, so two folders of one dataset kind never share crops."""
    norm = normalize_root(root) or ""
    return hashlib.sha1(norm.encode("utf-8")).hexdigest()[:8]


def make_record(dataset: str, root: str | Path | Roots | None, contract: CropContract, storage: dict | None = None,
                **extra: Any) -> dict[str, Any]:
    """A cache record (JSON-ready). ``root``: the dataset root, or all its named roots (recorded as ``roots``)."""
    from dfd import __version__

    roots = Roots.of(root) if root is not None else Roots({})
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "root": normalize_root(roots.get(DATASET_ROOT)),
        "roots": roots.record(),
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


def moved_here(manifest: str | Path, roots: Roots | str | Path) -> str | None:
    """None when today's ``roots`` hold every source file ``manifest`` was extracted from (same relative path,
    same size: the dataset was moved or is reached through another link); else the first that differs."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(str(manifest)).names
        if not {"source_path", "source_size"} <= set(names):
            return "the manifest records no source sizes"
        cols = ["source_path", "source_size"] + ([PATH_ROOT_COLUMN] if PATH_ROOT_COLUMN in names else [])
        table = pq.read_table(str(manifest), columns=cols).to_pandas().drop_duplicates()
    except (OSError, ValueError) as e:
        return f"cannot read {manifest} ({e})"
    roots = Roots.of(roots)
    if table.empty:
        return "the manifest lists no source"
    for row in table.to_dict("records"):
        try:
            path = roots.resolve(row["source_path"], row.get(PATH_ROOT_COLUMN))
            size = os.stat(path).st_size if path.is_file() else None  # folders of frames: their presence
        except (OSError, ValueError) as e:
            return f"{row['source_path']}: {e}"
        if not path.exists() or (size is not None and row["source_size"] is not None and size != row["source_size"]):
            return f"{path} is {'missing' if not path.exists() else 'another file (size differs)'}"
    return None


def check_root(record: dict[str, Any] | None, name: str, root: str | Path | Roots | None, cache_dir: str | Path,
               config_name: str | None = None, manifest: str | Path | None = None) -> None:
    """Refuse a cache whose recorded dataset root is not ``root`` (one line: both roots and the fix).

    A dataset that was moved (or is reached through another link) is accepted, with one logged line, when the
    configured root holds every file the cache was extracted from (``manifest``'s relative source paths, same
    sizes). A cache made by an older dfd records no root: it is used, with a one-time warning to re-extract it.
    """
    from dfd.errors import DatasetError

    if record is None or "root" not in record:
        key = str(cache_dir)
        if key not in _warned:
            _warned.add(key)
            log.warning("%s: the crop cache %s records no dataset root or crop contract (made by an older dfd); "
                        "re-extract it with dfd-extract to bind it to its data", name, cache_dir)
        return
    roots = Roots.of(root) if root is not None else Roots({})
    recorded, wanted = record.get("root"), normalize_root(roots.get(DATASET_ROOT))
    if recorded is None or wanted is None or recorded == wanted:
        return
    cfg = config_name or name
    if manifest is not None and os.path.isdir(wanted):
        differs = moved_here(manifest, roots)
        if differs is None:
            key = f"{cache_dir}>{wanted}"
            if key not in _warned:
                _warned.add(key)
                log.info("%s: the crop cache %s was made from %s; dataset.root %s holds the same files (moved): "
                         "using it", name, cache_dir, recorded, wanted)
            return
        raise DatasetError(
            f"{name}: the crop cache {cache_dir} holds crops of {recorded}, but dataset.root is {wanted} (other "
            f"files: {differs}); set dataset.root={recorded}, or extract the new root first (`dfd-extract "
            f"dataset={cfg} dataset.root={wanted}`; the default dataset.cache_dir is distinct per root)"
        )
    raise DatasetError(
        f"{name}: the crop cache {cache_dir} holds crops of {recorded}, but dataset.root is {wanted}; set "
        f"dataset.root={recorded}, or extract the new root first (`dfd-extract dataset={cfg} dataset.root={wanted}`; "
        "the default dataset.cache_dir is distinct per root)"
    )


#: errno values of a write that no rerun can fix by itself: the folder is read-only, full or over quota. Reads
#: never raise them, so a worker that meets one stops the run instead of failing video after video.
NO_ROOM = (errno.EROFS, errno.ENOSPC, errno.EDQUOT)


class CacheWriteError(UserError):
    """The crop cache (or the folder a command writes into) cannot be written: one line, what and where."""


def write_problem(folder: str | Path, err: OSError, key: str = "dataset.cache_dir") -> CacheWriteError:
    """The one-line error for a failed write into ``folder`` (read-only, full, over quota, not permitted)."""
    why = {errno.EROFS: "is on a read-only filesystem", errno.ENOSPC: "is full (no space left on its device)",
           errno.EDQUOT: "is over its disk quota", errno.EACCES: "is not writable (permission denied)",
           errno.EPERM: "is not writable (operation not permitted)"}.get(err.errno, f"cannot be written ({err})")
    return CacheWriteError(f"cannot write to {folder}: it {why}; free space there or set {key}=<a writable "
                           "folder with room> (nothing was lost: rerun the command to resume)")


@contextlib.contextmanager
def writing(folder: str | Path, key: str = "dataset.cache_dir") -> Iterator[None]:
    """Around writes into ``folder``: a read-only, full or forbidden folder becomes one line (CacheWriteError)."""
    try:
        yield
    except OSError as e:
        if e.errno in (*NO_ROOM, errno.EACCES, errno.EPERM):
            raise write_problem(folder, e, key) from None
        raise


def check_writable(folder: str | Path, key: str = "dataset.cache_dir") -> Path:
    """Make ``folder`` and write a probe file in it, or raise :class:`CacheWriteError` (before any work)."""
    from dfd import atomic

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = atomic.temp_sibling(folder / "write-probe")
        probe.write_bytes(b"dfd")
        probe.unlink()
    except OSError as e:
        raise write_problem(folder, e, key) from None
    return folder


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
