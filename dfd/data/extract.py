"""Video index -> face-crop cache + frame manifest: parallel across videos, resumable, failures listed.

Layout of a cache (``cache_dir``)::

    crops/<video_id>/<frame:06d>.png   one square face crop per kept frame
    parts/<hash of video_id>.json      one small record per finished video (the resume checkpoint)
    manifest.parquet                   schema.MANIFEST_COLUMNS (+ the index's extra columns), index order
    failures.parquet / failures.csv    video_id, path, reason for every video that produced no crop
    extract_config.json                the settings the crops were made with (a resume must match them)

A video is finished when its part file exists: crops are written under temporary names and renamed, and
the part is written (atomically) last, so a killed run leaves no half-written crop behind and a rerun redoes
only unfinished videos. The manifest is assembled from the parts in index order, so a resumed run ends with
exactly the manifest an uninterrupted run writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dfd.data.faces import CHOICES, FaceDetector, choose_face, crop_face, resize_crop
from dfd.data.schema import FAILURE_COLUMNS, INDEX_COLUMNS, MANIFEST_COLUMNS, validate_index
from dfd.data.video import Frames, MediaError, iter_archive_sequences, read_source

FORMATS = ("png", "jpg")


class ExtractError(ValueError):
    """The extraction cannot start (bad settings, or a cache made with other settings)."""


@dataclass
class ExtractConfig:
    """Settings of ``dfd-extract`` (mirrors the ``extract:`` block of conf/extract.yaml)."""

    frames: int = 32  # frames sampled uniformly per video (DeepfakeBench: 32); <= 0 keeps every frame
    size: int = 320  # crop side in pixels: large enough for every backbone (EfficientNet-B4 320, Xception 299)
    margin: float = 1.3  # crop side = longer face-box side x margin
    format: str = "png"  # png (lossless, default) | jpg (smaller, but adds artefacts detectors can learn)
    jpeg_quality: int = 95
    choice: str = "largest"  # which face to keep when several pass min_score: largest | confident
    min_score: float = 0.9  # MTCNN probability below which a face is ignored
    # Deepfake datasets film one prominent face: a face under 40 px is useless for a 320 px crop, and a shorter
    # MTCNN pyramid on a downscaled frame is where the time goes (crops still come from the full frame).
    min_face_size: int = 40  # MTCNN's smallest face, in detection pixels (larger = faster)
    detect_size: int | None = 640  # downscale frames whose longer side exceeds this for detection only
    # Per video: shrink frames further so its face is about this tall for detection (0 = off); see
    # FaceDetector.detect_video. Frames where that finds nothing are detected again at detect_size.
    face_px: int = 64
    batch_size: int = 16  # frames per MTCNN call
    workers: int | None = None  # processes; None = min(4, cpus); 1 runs in this process
    device: str = "cpu"
    landmarks_for_crops: bool = True  # datasets distributed as crops: still find landmarks with MTCNN
    overwrite: bool = False  # drop an existing cache made with other settings instead of refusing

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ExtractError(f"extract.format={self.format!r} is not one of {FORMATS}")
        if self.choice not in CHOICES:
            raise ExtractError(f"extract.choice={self.choice!r} is not one of {CHOICES}")
        if self.size < 8 or self.margin < 1.0:
            raise ExtractError(f"extract.size must be >= 8 and extract.margin >= 1 (got {self.size}, {self.margin})")

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> ExtractConfig:
        """Build from a config mapping, naming unknown keys instead of ignoring a typo."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ExtractError(f"unknown extract settings {unknown}; valid: {sorted(known)}")
        return cls(**values)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change what is written (not how fast): a resumed cache must match them."""
        skip = {"workers", "device", "overwrite", "batch_size"}
        return {k: v for k, v in asdict(self).items() if k not in skip}


@dataclass
class ExtractSummary:
    """What an extraction did; printed at the end of ``dfd-extract``."""

    videos: int = 0
    videos_ok: int = 0
    videos_failed: int = 0
    videos_resumed: int = 0  # finished by an earlier (interrupted) run and reused
    frames_sampled: int = 0
    frames_saved: int = 0
    frames_dropped: int = 0  # sampled frames of kept videos where no face passed min_score
    seconds: float = 0.0
    manifest_path: Path | None = None
    failures_path: Path | None = None
    failures: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(FAILURE_COLUMNS)))

    def __str__(self) -> str:
        fps = self.frames_saved / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"extracted {self.frames_saved} face crops from {self.videos_ok}/{self.videos} videos "
            f"in {self.seconds:.1f} s ({fps:.1f} crops/s; {self.videos_resumed} videos reused from an earlier run)",
            f"  frames sampled {self.frames_sampled}, dropped without a face {self.frames_dropped}",
            f"  manifest: {self.manifest_path}",
        ]
        if self.videos_failed:
            noun = "video" if self.videos_failed == 1 else "videos"
            lines.append(f"  {self.videos_failed} {noun} skipped (listed in {self.failures_path}):")
            for row in self.failures.head(10).itertuples(index=False):
                lines.append(f"    {row.video_id}: {row.reason}")
            if self.videos_failed > 10:
                lines.append(f"    ... {self.videos_failed - 10} more")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- paths


def _safe_rel(video_id: str) -> str:
    """A relative folder name for a video id: ids with '/' become nested folders; odd characters are
    replaced and a short hash added so two ids can never share a folder."""
    clean = re.sub(r"[^A-Za-z0-9._/-]", "_", video_id).strip("/")
    parts = [p if p not in ("", ".", "..") else "_" for p in clean.split("/")]
    clean = "/".join(parts) or "_"
    if clean != video_id:
        clean = f"{clean}-{_hash(video_id)[:8]}"
    return clean


def _hash(video_id: str) -> str:
    return hashlib.sha1(video_id.encode("utf-8")).hexdigest()


def _part_path(cache_dir: Path, video_id: str) -> Path:
    return cache_dir / "parts" / f"{_hash(video_id)[:24]}.json"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------- worker

_DETECTORS: dict[tuple, FaceDetector] = {}


def _detector(cfg: ExtractConfig) -> FaceDetector:
    # One MTCNN per process and setting, built on first use (never rebuilt per video).
    key = (cfg.min_face_size, cfg.batch_size, cfg.detect_size, cfg.device)
    if key not in _DETECTORS:
        _DETECTORS[key] = FaceDetector(
            min_face_size=cfg.min_face_size,
            batch_size=cfg.batch_size,
            detect_size=cfg.detect_size,
            device=cfg.device,
        )
    return _DETECTORS[key]


def _init_worker(cfg: ExtractConfig, needs_detector: bool) -> None:
    import torch

    # Parallelism comes from processes; torch threads per process would only fight over the cores.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    if needs_detector:
        _detector(cfg)


def _video_record(
    video_id: str, frames: Frames, cache_dir: Path, cfg: ExtractConfig, cropped: bool
) -> dict[str, Any]:
    """Detect, choose and crop faces of one video's sampled frames; write its crops; return its record."""
    n = len(frames.images)
    if cropped:
        crops = [resize_crop(img, cfg.size) for img in frames.images]
        boxes = [np.array([0, 0, img.shape[1], img.shape[0]], np.float32) for img in frames.images]
        scores = [1.0] * n
        lms = [np.full((5, 2), np.nan, np.float32)] * n
        if cfg.landmarks_for_crops:
            # The face fills a crop: MTCNN's pyramid must reach faces as large as the image (a small
            # min_face_size), and a crop is small enough to detect on as it is.
            crop_cfg = replace(cfg, min_face_size=min(cfg.min_face_size, 20), detect_size=None)
            for i, det in enumerate(_detector(crop_cfg).detect(frames.images)):
                k = choose_face(det, cfg.choice, cfg.min_score)
                if k is not None:
                    h, w = frames.images[i].shape[:2]
                    lms[i] = det.landmarks[k] * np.array([cfg.size / w, cfg.size / h], np.float32)
        keep = list(range(n))
    else:
        crops, boxes, scores, lms, keep = [], [], [], [], []
        for i, det in enumerate(_detector(cfg).detect_video(frames.images, cfg.face_px)):
            k = choose_face(det, cfg.choice, cfg.min_score)
            if k is None:
                continue
            crop, lm = crop_face(frames.images[i], det.boxes[k], det.landmarks[k], cfg.margin, cfg.size)
            crops.append(crop)
            boxes.append(det.boxes[k])
            scores.append(float(det.probs[k]))
            lms.append(lm)
            keep.append(i)
    record: dict[str, Any] = {"video_id": video_id, "sampled": n, "dropped": n - len(keep), "rows": []}
    if not keep:
        record["failure"] = (
            f"no face: no face with score >= {cfg.min_score} in any of {n} sampled frames"
            if n
            else "empty: no frames"
        )
        return record
    rel_dir = Path("crops") / _safe_rel(video_id)
    out_dir = cache_dir / rel_dir
    # A folder left by a killed run may hold crops of frames this run will not keep: start clean. Only
    # files go: a sub-folder belongs to another video whose id extends this one ("a" and "a/b").
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.iterdir():
        if stale.is_file():
            stale.unlink()
    ext = ".jpg" if cfg.format == "jpg" else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality] if cfg.format == "jpg" else []
    for j, i in enumerate(keep):
        number = int(frames.numbers[i])
        name = f"{number:06d}{ext}"
        ok, buf = cv2.imencode(ext, cv2.cvtColor(crops[j], cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise RuntimeError(f"cannot encode crop {out_dir / name}")
        _write_atomic(out_dir / name, buf.tobytes())
        record["rows"].append(
            {
                "frame": number,
                "crop_path": f"{rel_dir.as_posix()}/{name}",
                "bbox": [float(v) for v in np.asarray(boxes[j], np.float32)],
                "landmarks": [float(v) for v in np.asarray(lms[j], np.float32).reshape(-1)],
                "score": float(np.float32(scores[j])),
            }
        )
    return record


def _failure_record(video_id: str, err: BaseException) -> dict[str, Any]:
    if isinstance(err, MediaError):
        reason = f"{err.reason}: {err.detail}"
    else:  # an unexpected error on one video must not end a run over thousands
        reason = f"error: {type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err) else ''}"
    return {"video_id": video_id, "sampled": 0, "dropped": 0, "rows": [], "failure": reason}


def _finish(cache_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    # Written last: its existence marks the video as done for a resumed run.
    _write_atomic(_part_path(cache_dir, record["video_id"]), json.dumps(record).encode())
    return {k: v for k, v in record.items() if k != "rows"} | {"saved": len(record["rows"])}


def _run_task(
    task: list[dict[str, Any]], root: str, cache_dir: str, cfg: ExtractConfig, cropped: bool
) -> list[dict[str, Any]]:
    """Process one unit of work: a single video/folder/image, or every wanted sequence of one archive."""
    root_p, cache_p = Path(root), Path(cache_dir)
    results = []
    for video_id, frames in _task_frames(task, root_p, cfg.frames):
        try:
            if isinstance(frames, BaseException):
                raise frames
            record = _video_record(video_id, frames, cache_p, cfg, cropped)
        except Exception as e:
            record = _failure_record(video_id, e)
        results.append(_finish(cache_p, record))
    return results


def _task_frames(
    task: list[dict[str, Any]], root: Path, n: int
) -> Iterator[tuple[str, Frames | BaseException]]:
    if task[0]["kind"] == "archive":
        ids = {row["member"]: row["video_id"] for row in task}
        for member, frames in iter_archive_sequences(root / task[0]["path"], list(ids), n):
            yield ids[member], frames
        return
    for row in task:
        try:
            yield row["video_id"], read_source(row["kind"], root / row["path"], n)
        except Exception as e:
            yield row["video_id"], e


# ----------------------------------------------------------------------------------------------- driver


def _tasks(index: pd.DataFrame, todo: set[str]) -> list[list[dict[str, Any]]]:
    """Units of work in index order: one per video, one per archive (streamed once for all its rows)."""
    cols = ["video_id", "path", "kind"] + (["member"] if "member" in index.columns else [])
    tasks: list[list[dict[str, Any]]] = []
    archives: dict[str, list[dict[str, Any]]] = {}
    for row in index[cols].to_dict("records"):
        if row["video_id"] not in todo:
            continue
        if row["kind"] == "archive":
            if row.get("member") is None or pd.isna(row.get("member")):
                raise ExtractError(
                    f"index row {row['video_id']!r} has kind 'archive' but no 'member' column value "
                    "(the sequence folder inside the archive)"
                )
            if row["path"] not in archives:
                archives[row["path"]] = []
                tasks.append(archives[row["path"]])
            archives[row["path"]].append(row)
        else:
            tasks.append([row])
    return tasks


def _check_cache_settings(cache_dir: Path, cfg: ExtractConfig) -> None:
    path = cache_dir / "extract_config.json"
    want = cfg.fingerprint()
    if path.is_file():
        have = json.loads(path.read_text())
        if have != want:
            if not cfg.overwrite:
                diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
                raise ExtractError(
                    f"the crop cache {cache_dir} was made with other settings {diff} (cached, requested); "
                    "use another cache_dir, or pass extract.overwrite=true to delete and redo it"
                )
            for sub in ("crops", "parts"):
                shutil.rmtree(cache_dir / sub, ignore_errors=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, json.dumps(want, sort_keys=True).encode())


def default_workers() -> int:
    """min(4, CPUs available to this process): MTCNN is CPU-bound and each worker holds its own copy."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def extract_faces(
    index_df: pd.DataFrame,
    root: str | Path,
    cache_dir: str | Path,
    cfg: ExtractConfig | None = None,
    faces_are_cropped: bool = False,
    progress: bool = True,
) -> ExtractSummary:
    """Turn a video index into face crops + ``manifest.parquet`` + ``failures.parquet`` under ``cache_dir``.

    Resumable: videos finished by an earlier run (same settings) are reused. Bad inputs (missing, empty,
    corrupt, faceless) are listed in the failures table; the call itself succeeds.
    """
    cfg = cfg or ExtractConfig()
    start = time.perf_counter()
    index = validate_index(index_df, where="extract index")
    root, cache_dir = Path(root), Path(cache_dir)
    _check_cache_settings(cache_dir, cfg)
    (cache_dir / "parts").mkdir(parents=True, exist_ok=True)
    for tmp in (cache_dir / "parts").glob(".*.tmp*"):  # left by a killed run
        tmp.unlink(missing_ok=True)

    ids = index["video_id"].tolist()
    done = {v for v in ids if _part_path(cache_dir, v).is_file()}
    todo = set(ids) - done
    tasks = _tasks(index, todo)
    needs_detector = not faces_are_cropped or cfg.landmarks_for_crops
    workers = min(cfg.workers or default_workers(), max(len(tasks), 1))
    for _ in _progress(_execute(tasks, root, cache_dir, cfg, faces_are_cropped, needs_detector, workers),
                       total=len(ids), completed=len(done), enabled=progress):
        pass

    summary = _assemble(index, cache_dir)
    summary.videos_resumed = len(done)
    summary.seconds = time.perf_counter() - start
    return summary


def _execute(
    tasks: list[list[dict[str, Any]]],
    root: Path,
    cache_dir: Path,
    cfg: ExtractConfig,
    cropped: bool,
    needs_detector: bool,
    workers: int,
) -> Iterator[dict[str, Any]]:
    if not tasks:
        return
    if workers <= 1:
        for task in tasks:
            yield from _run_task(task, str(root), str(cache_dir), cfg, cropped)
        return
    import multiprocessing as mp

    # spawn, not fork: forking a process that has touched torch's thread pools can deadlock.
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        initargs=(cfg, needs_detector),
    ) as pool:
        futures = [pool.submit(_run_task, t, str(root), str(cache_dir), cfg, cropped) for t in tasks]
        try:
            for fut in as_completed(futures):
                yield from fut.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _progress(items: Iterable[dict[str, Any]], total: int, completed: int, enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield from items
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("extracting faces"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("videos"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("extract", total=total, completed=completed)
        for item in items:
            bar.advance(task, 1)
            yield item


def _assemble(index: pd.DataFrame, cache_dir: Path) -> ExtractSummary:
    """Build manifest and failures from the per-video parts, in index order."""
    s = ExtractSummary(videos=len(index))
    extras = [c for c in index.columns if c not in INDEX_COLUMNS and c not in MANIFEST_COLUMNS]
    cols: dict[str, list] = {c: [] for c in MANIFEST_COLUMNS}
    cols["source_path"] = []
    extra_vals: dict[str, list] = {c: [] for c in extras}
    failures = []
    records = index.to_dict("records")
    for row in records:
        part = _part_path(cache_dir, row["video_id"])
        rec = json.loads(part.read_text()) if part.is_file() else None
        if rec is None:  # only when a run was stopped before this video: say so, never drop it silently
            failures.append((row["video_id"], row["path"], "not processed: extraction was interrupted"))
            continue
        s.frames_sampled += rec["sampled"]
        if rec.get("failure") or not rec["rows"]:
            failures.append((row["video_id"], row["path"], rec.get("failure") or "no crops"))
            continue
        s.videos_ok += 1
        s.frames_dropped += rec["dropped"]
        for r in rec["rows"]:
            for c in ("frame", "crop_path", "bbox", "landmarks", "score"):
                cols[c].append(r[c])
            for c in ("video_id", "label", "split", "method", "identity"):
                cols[c].append(row[c])
            cols["source_path"].append(row["path"])
            for c in extras:
                extra_vals[c].append(row[c])
    s.frames_saved = len(cols["frame"])
    s.videos_failed = len(failures)

    arrays = {
        "video_id": pa.array(cols["video_id"], pa.string()),
        "frame": pa.array(cols["frame"], pa.int32()),
        "crop_path": pa.array(cols["crop_path"], pa.string()),
        "label": pa.array(cols["label"], pa.int8()),
        "split": pa.array(cols["split"], pa.string()),
        "method": pa.array(cols["method"], pa.string()),
        "identity": pa.array(cols["identity"], pa.string()),
        "bbox": pa.array(cols["bbox"], pa.list_(pa.float32(), 4)),
        "landmarks": pa.array(cols["landmarks"], pa.list_(pa.float32(), 10)),
        "score": pa.array(cols["score"], pa.float32()),
        "source_path": pa.array(cols["source_path"], pa.string()),
    }
    table = pa.table(arrays)
    for c in extras:
        try:
            table = table.append_column(c, pa.array(pd.Series(extra_vals[c], dtype=index[c].dtype)))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            continue  # an extra column arrow cannot store is not worth failing the run over
    s.manifest_path = cache_dir / "manifest.parquet"
    _write_table_atomic(table, s.manifest_path)

    s.failures = pd.DataFrame(failures, columns=list(FAILURE_COLUMNS)).astype("string")
    s.failures_path = cache_dir / "failures.parquet"
    _write_table_atomic(pa.Table.from_pandas(s.failures, preserve_index=False), s.failures_path)
    csv = cache_dir / "failures.csv"
    tmp = csv.with_name(f".{csv.name}.tmp")
    s.failures.to_csv(tmp, index=False)
    os.replace(tmp, csv)
    return s


def _write_table_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
