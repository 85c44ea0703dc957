"""The manifest and the failures table of a cache, assembled from the per-video part records in index order
(so a resumed or sharded run writes exactly what one uninterrupted run writes), and the dropped-frame
statistics per label and method that warn of a label-dependent bias (and per split, for evaluation's
faces-not-found counts: dfd.store.cache.split_drop_stats).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dfd import atomic
from dfd.extract.parts import part_path, read_part
from dfd.extract.summary import ExtractSummary
from dfd.store.cache import METADATA_KEY, split_drop_stats
from dfd.store.schema import (
    FAILURE_COLUMNS,
    INDEX_COLUMNS,
    MANIFEST_COLUMNS,
    MANIFEST_OPTIONAL_COLUMNS,
    MANIFEST_SOURCE_COLUMNS,
    manifest_table,
)

# A label's (or method's) share of sampled frames without a face that differs from another's by this much
# (absolute) and by this factor is a bias worth a warning: every metric would be computed on different data.
DROP_GAP = 0.05


DROP_RATIO = 1.5


def tally_parts(index: pd.DataFrame, cache_dir: Path) -> ExtractSummary:
    """Counts of a shard's videos from their parts (the manifest is the merge's job)."""
    s = ExtractSummary(videos=len(index))
    for v in index["video_id"]:
        rec = read_part(part_path(cache_dir, v)) or {}
        rows = len(rec.get("rows", []))
        s.frames_sampled += int(rec.get("sampled", 0))
        if rec.get("failure") or not rows:
            s.videos_failed += 1
            continue
        s.videos_ok += 1
        s.frames_saved += rows
        s.frames_dropped += int(rec.get("dropped", 0))
        s.frames_full_res += int(rec.get("full_res", 0))
        s.frames_near += int(rec.get("near", 0))
        s.frames_kept += len({r["frame"] for r in rec["rows"]})
    return s


def drop_stats(rows: list[tuple[int, str, int, int, bool]]) -> dict[str, dict]:
    """Frames sampled / dropped per label and per method from (label, method, sampled, dropped, failed)."""
    out: dict[str, dict] = {"label": {}, "method": {}}
    for label, method, sampled, dropped, failed in rows:
        for group, key in (("label", str(int(label))), ("method", str(method))):
            s = out[group].setdefault(key, {"videos": 0, "videos_failed": 0, "sampled": 0, "dropped": 0})
            if group == "method":
                s.setdefault("label", int(label))
            s["videos"] += 1
            s["videos_failed"] += int(failed)
            s["sampled"] += int(sampled)
            s["dropped"] += int(dropped)
    for group in out.values():
        for s in group.values():
            s["rate"] = s["dropped"] / s["sampled"] if s["sampled"] else 0.0
    return out


def _differ(a: float, b: float) -> bool:
    lo, hi = sorted((a, b))
    return hi - lo >= DROP_GAP and hi >= DROP_RATIO * lo


def drop_warnings(drops: Mapping[str, Mapping]) -> list[str]:
    """One line per marked difference in dropped-frame rates between labels, or between a fake method and
    the reals: frames lost more often for one side bias every number computed on the cache."""
    out = []
    labels = drops.get("label", {})
    if "0" in labels and "1" in labels and _differ(labels["0"]["rate"], labels["1"]["rate"]):
        out.append(
            f"sampled frames without a face differ by label: real {100 * labels['0']['rate']:.1f} %, fake "
            f"{100 * labels['1']['rate']:.1f} %; metrics are computed on differently filtered data (check "
            "extract.min_face_size, extract.min_score; keep extract.full_res_fallback=true)"
        )
    fakes = {m: s for m, s in drops.get("method", {}).items() if s.get("label") == 1}
    if "0" in labels and len(fakes) > 1:  # with one fake method the label line says it all
        real = labels["0"]["rate"]
        for method, s in sorted(fakes.items()):
            if _differ(real, s["rate"]):
                out.append(f"method {method}: {100 * s['rate']:.1f} % of sampled frames without a face vs "
                           f"{100 * real:.1f} % for reals")
    return out


def assemble(index: pd.DataFrame, cache_dir: Path, record: dict[str, Any]) -> ExtractSummary:
    """Build manifest and failures from the per-video parts, in index order."""
    s = ExtractSummary(videos=len(index))
    extras = [c for c in index.columns if c not in INDEX_COLUMNS and c not in MANIFEST_COLUMNS]
    cols: dict[str, list] = {c: [] for c in MANIFEST_COLUMNS}
    # frame_label only for indexes with partial fakes: every other manifest stays as it was.
    partial = "fake_segments" in index.columns
    for c in (*MANIFEST_OPTIONAL_COLUMNS, *MANIFEST_SOURCE_COLUMNS):
        if c != "frame_label" or partial:
            cols[c] = []
    extra_vals: dict[str, list] = {c: [] for c in extras}
    failures, stats, per_video = [], [], []
    for row in index.to_dict("records"):
        part = part_path(cache_dir, row["video_id"])
        rec = read_part(part) if part.is_file() else None
        where = (row["split"], str(int(row["label"])))
        if rec is None:  # only when a run was stopped before this video: say so, never drop it silently
            failures.append((row["video_id"], row["path"], "not processed: extraction was interrupted", *where))
            continue
        s.frames_sampled += rec["sampled"]
        failed = bool(rec.get("failure") or not rec["rows"])
        # Frames without a face: the part's count (several faces of one frame are several rows).
        dropped = rec["sampled"] if failed else rec.get("dropped", rec["sampled"] - len(rec["rows"]))
        stats.append((row["label"], row["method"], rec["sampled"], dropped, failed))
        per_video.append({"video_id": row["video_id"], "label": row["label"], "split": row["split"],
                          "method": row["method"], "sampled": rec["sampled"], "dropped": dropped, "failed": failed})
        if failed:
            failures.append((row["video_id"], row["path"], rec.get("failure") or "no crops", *where))
            continue
        s.videos_ok += 1
        kept = s.kept.setdefault(row["split"], [0, 0])
        kept[int(row["label"])] += 1
        s.frames_dropped += rec["dropped"]
        s.frames_full_res += rec.get("full_res", 0)
        s.frames_near += rec.get("near", 0)
        s.frames_kept += len({r["frame"] for r in rec["rows"]})
        s.tracks_max = max(s.tracks_max, len({r.get("track", 0) for r in rec["rows"]}))
        src = rec.get("source") or {}
        for r in rec["rows"]:
            for c in ("frame", "crop_path", "bbox", "landmarks", "score"):
                cols[c].append(r[c])
            cols["track"].append(int(r.get("track", 0)))  # parts written before tracks: one face per frame
            cols["kind"].append(row["kind"])  # images are reported at the image level, never as videos
            if partial:  # a frame outside the video's fake segments is real (dfd.faces.contract.segment_labels)
                cols["frame_label"].append(int(r.get("frame_label", row["label"])))
            for c in ("video_id", "label", "split", "method", "identity"):
                cols[c].append(row[c])
            cols["source_path"].append(row["path"])
            cols["source_size"].append(src.get("size"))
            cols["source_mtime_ns"].append(src.get("mtime_ns"))
            for c in extras:
                extra_vals[c].append(row[c])
    s.frames_saved = len(cols["frame"])
    s.videos_failed = len(failures)
    s.drops = drop_stats(stats)
    s.drops["split"] = split_drop_stats(per_video)  # per test set: what evaluation reports (dfd.store.cache)
    s.warnings = drop_warnings(s.drops)

    table = manifest_table(cols)  # track: optional column (schema.MANIFEST_OPTIONAL_COLUMNS)
    for c in extras:
        try:
            table = table.append_column(c, pa.array(pd.Series(extra_vals[c], dtype=index[c].dtype)))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            continue  # an extra column arrow cannot store is not worth failing the run over
    meta = {**record, "drops": s.drops, "frames_full_res": s.frames_full_res}
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    s.manifest_path = cache_dir / "manifest.parquet"
    with atomic.atomic_path(s.manifest_path) as tmp:
        pq.write_table(table, tmp)

    s.failures = pd.DataFrame(failures, columns=list(FAILURE_COLUMNS)).astype("string")
    s.failures_path = cache_dir / "failures.parquet"
    with atomic.atomic_path(s.failures_path) as tmp:
        pq.write_table(pa.Table.from_pandas(s.failures, preserve_index=False), tmp)
    with atomic.atomic_path(cache_dir / "failures.csv") as tmp:
        s.failures.to_csv(tmp, index=False)
    return s
