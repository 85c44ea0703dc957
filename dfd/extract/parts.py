"""The part-file protocol of a crop cache: one JSON record per finished video, the resume checkpoint that the
worker writes, the run driver reuses, the merge assembles and ``--verify`` checks.

Layout of a cache (``cache_dir``)::

    cache.json                         the cache record: dataset, root, crop contract, storage (dfd.store.cache)
    crops/<video_id>/<frame:06d>.png   one face crop per kept frame (``extract.choice=all``: per face, the extra
                                       faces of a frame as <frame:06d>_<track>.png; manifest column ``track``)
    parts/<hash of video_id>.json      one record per finished video: the resume checkpoint
    manifest.parquet                   schema.MANIFEST_COLUMNS (+ source_path, source fingerprint, the index's
                                       extra columns), index order; the cache record in its metadata
    failures.parquet / failures.csv    video_id, path, reason for every video that produced no crop
    shard-plans/<plan id>/             sharded runs: which shard does which video, finished-shard markers
                                       (dfd.extract.jobs)

**Resume and reuse.** A video is done when its part file exists *and* the part's source fingerprint (size and
mtime, plus a SHA-1 with ``extract.hash=true``) and contract id match the source on disk now. Crops are written
under temporary names and renamed, and the part is written (atomically) last, so a killed run leaves nothing
half-written and a rerun redoes only unfinished, changed or new videos. Parts of videos no longer in the index
(moved or deleted sources) are removed with their crops. The manifest is assembled from the parts in index
order, so a resumed run ends with exactly the manifest an uninterrupted run writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from dfd import atomic
from dfd.store.cache import safe_relpath
from dfd.store.media import MediaError, fingerprint
from dfd.store.roots import PATH_ROOT_COLUMN, Roots, resolve_row


def part_path(cache_dir: Path, video_id: str) -> Path:
    """The part file (resume checkpoint) of one video."""
    return Path(cache_dir) / "parts" / f"{hashlib.sha1(video_id.encode()).hexdigest()[:24]}.json"


def crop_dir(cache_dir: Path, video_id: str) -> Path:
    """The folder holding one video's crops."""
    return Path(cache_dir) / "crops" / safe_relpath(video_id)


def clear_crops(cache_dir: Path, video_id: str) -> None:
    # Only files: a sub-folder belongs to another video whose id extends this one ("a" and "a/b").
    folder = crop_dir(cache_dir, video_id)
    if folder.is_dir():
        for stale in folder.iterdir():
            if stale.is_file():
                stale.unlink()


def source_fingerprint(roots: Roots | Path, row: Mapping[str, Any], content: bool = False) -> dict | None:
    """The fingerprint of an index row's source (an archive's for sequences inside it); None when missing."""
    kind = "video" if row["kind"] == "archive" else row["kind"]
    return fingerprint(resolve_row(Roots.of(roots), row), kind, content)


def same_source(recorded: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> bool:
    """Whether a part's recorded fingerprint still describes the source (SHA-1 compared when both have one)."""
    if not recorded or not current:
        return False
    keys = set(recorded) & set(current)
    if not {"size", "mtime_ns"} <= keys:
        return False
    return all(recorded[k] == current[k] for k in keys)


def part_is_current(part: Mapping[str, Any] | None, contract_id: str, current: Mapping[str, Any] | None,
                    distortion: str = "") -> bool:
    """Whether a finished video can be reused: same contract, same source, same distortion of its frames."""
    return (bool(part) and part.get("contract") == contract_id and same_source(part.get("source"), current)
            and (part.get("distortion") or "") == (distortion or ""))


def distortions(index: pd.DataFrame) -> dict[str, str]:
    """The canonical distortion chain per video id (index column ``distortion``; "" when clean or absent)."""
    if "distortion" not in index.columns:
        return {}
    from dfd.store.distort import chain_text, parse_chain

    texts = index["distortion"].fillna("").astype(str)
    return {v: chain_text(parse_chain(t)) for v, t in zip(index["video_id"], texts, strict=True) if t}


def read_part(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a damaged part is redone


def failure_record(video_id: str, err: BaseException) -> dict[str, Any]:
    if isinstance(err, MediaError):
        reason = f"{err.reason}: {err.detail}"
    else:  # an unexpected error on one video must not end a run over thousands
        reason = f"error: {type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err) else ''}"
    return {"video_id": video_id, "sampled": 0, "dropped": 0, "full_res": 0, "rows": [], "failure": reason}


def finish_part(cache_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Write a video's part (last: its existence marks the video done) and return its summary."""
    atomic.write_text(part_path(cache_dir, record["video_id"]), json.dumps(record))
    return {k: v for k, v in record.items() if k != "rows"} | {"saved": len(record["rows"])}


def fingerprints(index: pd.DataFrame, root: Roots | Path, content: bool) -> dict[str, dict | None]:
    """Source fingerprint per video id (an archive's is computed once for all its sequences)."""
    out: dict[str, dict | None] = {}
    seen: dict[tuple[str, str, str], dict | None] = {}
    roots = Roots.of(root)
    cols = ["video_id", "path", "kind"] + ([PATH_ROOT_COLUMN] if PATH_ROOT_COLUMN in index.columns else [])
    for row in index[cols].to_dict("records"):
        key = (row["path"], row["kind"], str(row.get(PATH_ROOT_COLUMN) or ""))
        if key not in seen:
            seen[key] = source_fingerprint(roots, row, content)
        out[row["video_id"]] = seen[key]
    return out


def prune(cache_dir: Path, keep: set[str]) -> int:
    """Remove parts and crops of videos no longer in the index; return how many."""
    removed = 0
    parts = cache_dir / "parts"
    if not parts.is_dir():
        return 0
    wanted = {part_path(cache_dir, v).name for v in keep}
    for p in parts.glob("*.json"):
        if p.name in wanted:
            continue
        rec = read_part(p) or {}
        for row in rec.get("rows", []):
            (cache_dir / row["crop_path"]).unlink(missing_ok=True)
        p.unlink(missing_ok=True)
        removed += 1
    return removed


def clean_temps(cache_dir: Path) -> None:
    """Remove temporary part files left by a killed run (only when no other process is extracting)."""
    for tmp in (cache_dir / "parts").glob(".*.tmp*"):
        tmp.unlink(missing_ok=True)
