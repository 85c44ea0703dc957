"""Video index -> face-crop cache + frame manifest: parallel across videos, resumable, bound to its data.

Layout of a cache (``cache_dir``)::

    cache.json                         the cache record: dataset, root, crop contract, storage (dfd.data.cache)
    crops/<video_id>/<frame:06d>.png   one face crop per kept frame (``extract.choice=all``: per face, the extra
                                       faces of a frame as <frame:06d>_<track>.png; manifest column ``track``)
    parts/<hash of video_id>.json      one record per finished video: the resume checkpoint
    manifest.parquet                   schema.MANIFEST_COLUMNS (+ source_path, source fingerprint, the index's
                                       extra columns), index order; the cache record in its metadata
    failures.parquet / failures.csv    video_id, path, reason for every video that produced no crop
    shard-plans/<plan id>/             sharded runs: which shard does which video, finished-shard markers
                                       (dfd.data.sharding)

**Resume and reuse.** A video is done when its part file exists *and* the part's source fingerprint (size and
mtime, plus a SHA-1 with ``extract.hash=true``) and contract id match the source on disk now. Crops are written
under temporary names and renamed, and the part is written (atomically) last, so a killed run leaves nothing
half-written and a rerun redoes only unfinished, changed or new videos. Parts of videos no longer in the index
(moved or deleted sources) are removed with their crops. The manifest is assembled from the parts in index
order, so a resumed run ends with exactly the manifest an uninterrupted run writes.

**The per-video worker** is :func:`process_video`: frames in, crops + part record out. Anything that schedules
extraction differently (shards, GPUs) calls it, and keeps the part-file protocol (:func:`part_path`,
:func:`finish_part`, :func:`part_is_current`) so resume and ``--verify`` keep working: shards
(:mod:`dfd.data.sharding`, ``extract.shard/num_shards/merge``) split the index and merge the parts; the batched
pipeline (:mod:`dfd.data.pipeline`, ``extract.device=cuda`` or ``extract.pipeline=batched``) runs
:func:`process_video` in its workers with MTCNN calls batched across videos in one detection loop.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dfd import atomic
from dfd.data.cache import (
    LEGACY_FILE,
    METADATA_KEY,
    RECORD_FILE,
    make_record,
    normalize_root,
    read_record,
    safe_relpath,
)
from dfd.data.contract import ContractError, CropContract, extract_overrides
from dfd.data.faces import DETECT_BATCH, FaceDetector, crop_faces, crop_stem
from dfd.data.schema import (
    FAILURE_COLUMNS,
    INDEX_COLUMNS,
    MANIFEST_COLUMNS,
    MANIFEST_OPTIONAL_COLUMNS,
    MANIFEST_SOURCE_COLUMNS,
    manifest_table,
    validate_index,
)
from dfd.data.video import Frames, MediaError, fingerprint, iter_archive_sequences, read_source
from dfd.errors import UserError

FORMATS = ("png", "jpg")
INPUTS = ("auto", "frames", "crops")
PIPELINES = ("auto", "video", "batched")
# A label's (or method's) share of sampled frames without a face that differs from another's by this much
# (absolute) and by this factor is a bias worth a warning: every metric would be computed on different data.
DROP_GAP = 0.05
DROP_RATIO = 1.5


class ExtractError(UserError, ValueError):
    """The extraction cannot start (bad settings, or a cache made with other settings or from another root)."""


@dataclass
class ExtractConfig:
    """Settings of ``dfd-extract``: the crop contract (what the crops are) + how to run and store it.

    The ``extract:`` block of the config is flat: the :class:`CropContract` fields plus the fields below;
    :meth:`from_mapping` splits it. ``inputs`` is ``auto`` by default: the dataset decides (face crops for
    datasets shipped as crops, frames otherwise); ``frames`` on a crop dataset re-detects and re-crops.
    """

    contract: CropContract = field(default_factory=CropContract)
    inputs: str = "auto"  # auto | frames | crops (resolved into contract.inputs)
    format: str = "png"  # png (lossless, default) | jpg (smaller, but adds artefacts detectors can learn)
    jpeg_quality: int = 95
    batch_size: int = DETECT_BATCH  # frames per MTCNN call (the batched pipeline: of several videos; 128 on a GPU)
    # processes; None = min(4, cpus), or every CPU in the batched pipeline; 1 runs in this process (per video)
    workers: int | None = None
    device: str = "cpu"  # MTCNN's torch device: cpu | cuda | cuda:<n>
    # How videos meet the detector: `video` = each worker detects its own video's frames; `batched` = workers
    # decode and crop, one detection loop batches same-size frames of several videos (dfd/data/pipeline.py);
    # `auto` = batched on a GPU, video on the CPU.
    pipeline: str = "auto"
    hash: bool = False  # also fingerprint sources by content (SHA-1): slower, catches same-size same-mtime edits
    overwrite: bool = False  # drop an existing cache made with other settings (or another root) instead of refusing
    verify: bool = False  # dfd-extract only checks the cache against its sources and reports
    # Sharded extraction (dfd/data/sharding.py): job `shard` of `num_shards` extracts its part of the videos;
    # the last shard to finish merges. `merge=true` only (re)writes manifest + failures from finished shards.
    shard: int | None = None
    num_shards: int = 1
    merge: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ExtractError(f"extract.format={self.format!r} is not one of {FORMATS}")
        if self.inputs not in INPUTS:
            raise ExtractError(f"extract.inputs={self.inputs!r} is not one of {INPUTS}")
        if self.pipeline not in PIPELINES:
            raise ExtractError(f"extract.pipeline={self.pipeline!r} is not one of {PIPELINES}")
        if not isinstance(self.num_shards, int) or self.num_shards < 1:
            raise ExtractError(f"extract.num_shards={self.num_shards!r} must be a whole number >= 1")
        if self.shard is not None and not (isinstance(self.shard, int) and 0 <= self.shard < self.num_shards):
            raise ExtractError(f"extract.shard={self.shard!r} must be one of 0..{self.num_shards - 1} "
                               f"(extract.num_shards={self.num_shards})")
        if self.num_shards > 1 and self.shard is None and not self.merge:
            raise ExtractError(
                f"extract.num_shards={self.num_shards} needs extract.shard=<0..{self.num_shards - 1}> (one job "
                f"per shard: dfd-extract -m ... extract.shard='range(0,{self.num_shards})' "
                f"extract.num_shards={self.num_shards}), or extract.merge=true to merge finished shards"
            )

    @property
    def sharded(self) -> bool:
        """Whether this run is one shard of several (or the merge of them)."""
        return self.num_shards > 1

    def batched(self) -> bool:
        """Whether detection runs in the batched pipeline (``pipeline=batched``, or ``auto`` on a GPU)."""
        if self.pipeline == "auto":
            return not str(self.device).startswith("cpu")
        return self.pipeline == "batched"

    @classmethod
    def run_keys(cls) -> list[str]:
        """The ``extract.*`` keys that are not part of the crop contract."""
        return [f.name for f in fields(cls) if f.name != "contract"]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> ExtractConfig:
        """Build from the flat ``extract:`` block, naming unknown keys instead of ignoring a typo."""
        values = dict(values or {})
        contract_keys = [k for k in CropContract.keys() if k != "inputs"]  # noqa: SIM118 (a classmethod)
        valid = sorted([*contract_keys, *cls.run_keys()])
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ExtractError(f"unknown extract settings {unknown}; valid: {valid}")
        try:
            contract = CropContract(**{k: values.pop(k) for k in contract_keys if k in values})
        except ContractError as e:
            raise ExtractError(str(e)) from None
        return cls(contract=contract, **values)

    @classmethod
    def create(cls, **values: Any) -> ExtractConfig:
        """``ExtractConfig.create(frames=8, size=64, workers=1)``: flat keyword form of :meth:`from_mapping`."""
        return cls.from_mapping(values)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The flat ``extract:`` block with every default (what conf/extract.yaml composes)."""
        contract = {k: v for k, v in asdict(CropContract()).items() if k != "inputs"}
        contract["thresholds"] = list(contract["thresholds"])
        run = {f.name: getattr(cls(), f.name) for f in fields(cls) if f.name != "contract"}
        return {**contract, **run}

    def resolve(self, faces_are_cropped: bool) -> CropContract:
        """The contract of this extraction, with ``inputs`` decided for a dataset."""
        inputs = self.inputs if self.inputs != "auto" else ("crops" if faces_are_cropped else "frames")
        return self.contract.replace(inputs=inputs)

    def storage(self) -> dict[str, Any]:
        """How crops are stored (part of what a resumed cache must match)."""
        return {"format": self.format, "jpeg_quality": int(self.jpeg_quality) if self.format == "jpg" else None}


def register_configs() -> None:
    """Register the ``extract:`` defaults with Hydra's ConfigStore (``dfd/extract`` in conf/extract.yaml's
    defaults list), so the YAML holds no second copy of them."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(group="dfd", name="extract", node=OmegaConf.create(ExtractConfig.defaults()))


@dataclass
class ExtractSummary:
    """What an extraction did; printed at the end of ``dfd-extract``."""

    videos: int = 0
    videos_ok: int = 0
    videos_failed: int = 0
    videos_resumed: int = 0  # finished by an earlier run, source unchanged: reused
    videos_stale: int = 0  # extracted earlier, but the source changed since: redone
    videos_removed: int = 0  # cached videos no longer in the index (moved or deleted sources): crops removed
    processed: list[str] = field(default_factory=list)  # ids extracted by this run
    frames_sampled: int = 0
    frames_saved: int = 0
    frames_dropped: int = 0  # sampled frames of kept videos where no face passed min_score
    frames_full_res: int = 0  # kept frames whose face only the full-resolution fallback found
    frames_kept: int = 0  # sampled frames that gave at least one crop (< frames_saved with several faces each)
    tracks_max: int = 0  # most face tracks in one video (extract.choice=all)
    drops: dict = field(default_factory=dict)  # per label and per method (see _drop_stats)
    warnings: list[str] = field(default_factory=list)
    contract: CropContract | None = None
    seconds: float = 0.0
    manifest_path: Path | None = None
    failures_path: Path | None = None
    failures: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(FAILURE_COLUMNS)))
    shard_status: str = ""  # sharded runs: which shard this was, what was merged
    merged: bool = False  # this summary is a merge of shards (its counts cover every shard)
    pipeline: dict = field(default_factory=dict)  # batched pipeline: detection-loop figures (dfd.data.pipeline)

    def __str__(self) -> str:
        fps = self.frames_saved / self.seconds if self.seconds > 0 else 0.0
        reused = f"{self.videos_resumed} videos reused from an earlier run"
        if self.videos_stale:
            reused += f", {self.videos_stale} redone because their source changed"
        if self.videos_removed:
            reused += f", {self.videos_removed} no longer in the index removed"
        head = (f"extracted {self.frames_saved} face crops from {self.videos_ok}/{self.videos} videos "
                f"in {self.seconds:.1f} s ({fps:.1f} crops/s; {reused})")
        if self.merged:  # the whole cache, made by every shard: this job's time says nothing about its rate
            head = (f"all shards: {self.frames_saved} face crops from {self.videos_ok}/{self.videos} videos ({reused} "
                    f"by the shards); this job took {self.seconds:.1f} s")
        lines = [
            head,
            f"  frames sampled {self.frames_sampled}, dropped without a face {self.frames_dropped}"
            + (f", found only at full resolution {self.frames_full_res}" if self.frames_full_res else ""),
        ]
        if self.frames_saved > self.frames_kept:
            lines.append(f"  faces: {self.frames_saved} crops from {self.frames_kept} frames "
                         f"({self.frames_saved / max(self.frames_kept, 1):.2f} per frame, up to {self.tracks_max} "
                         "tracks per video)")
        by_label = self.drops.get("label", {})
        if by_label:
            parts = [f"{'real' if k == '0' else 'fake'} {v['dropped']}/{v['sampled']} ({100 * v['rate']:.1f} %)"
                     for k, v in sorted(by_label.items())]
            lines.append(f"  frames without a face by label: {', '.join(parts)}")
        if self.contract is not None:
            lines.append(f"  crops: {self.contract.describe()}")
        if self.pipeline:
            from dfd.data.pipeline import describe_stats

            lines.append(f"  {describe_stats(self.pipeline)}")
        if self.shard_status:
            lines.append(f"  {self.shard_status}")
        lines.append(f"  manifest: {self.manifest_path or 'not yet (written by the last shard to finish)'}")
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.videos_failed:
            noun = "video" if self.videos_failed == 1 else "videos"
            lines.append(f"  {self.videos_failed} {noun} skipped (listed in {self.failures_path}):")
            for row in self.failures.head(10).itertuples(index=False):
                lines.append(f"    {row.video_id}: {row.reason}")
            if self.videos_failed > 10:
                lines.append(f"    ... {self.videos_failed - 10} more")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- paths


def part_path(cache_dir: Path, video_id: str) -> Path:
    """The part file (resume checkpoint) of one video."""
    return Path(cache_dir) / "parts" / f"{hashlib.sha1(video_id.encode()).hexdigest()[:24]}.json"


def crop_dir(cache_dir: Path, video_id: str) -> Path:
    """The folder holding one video's crops."""
    return Path(cache_dir) / "crops" / safe_relpath(video_id)


def _clear_crops(cache_dir: Path, video_id: str) -> None:
    # Only files: a sub-folder belongs to another video whose id extends this one ("a" and "a/b").
    folder = crop_dir(cache_dir, video_id)
    if folder.is_dir():
        for stale in folder.iterdir():
            if stale.is_file():
                stale.unlink()


# ----------------------------------------------------------------------------------------------- sources


def source_fingerprint(root: Path, row: Mapping[str, Any], content: bool = False) -> dict | None:
    """The fingerprint of an index row's source (an archive's for sequences inside it); None when missing."""
    kind = "video" if row["kind"] == "archive" else row["kind"]
    return fingerprint(root / row["path"], kind, content)


def same_source(recorded: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> bool:
    """Whether a part's recorded fingerprint still describes the source (SHA-1 compared when both have one)."""
    if not recorded or not current:
        return False
    keys = set(recorded) & set(current)
    if not {"size", "mtime_ns"} <= keys:
        return False
    return all(recorded[k] == current[k] for k in keys)


def part_is_current(part: Mapping[str, Any] | None, contract_id: str, current: Mapping[str, Any] | None) -> bool:
    """Whether a finished video can be reused: same contract, same source."""
    return bool(part) and part.get("contract") == contract_id and same_source(part.get("source"), current)


def _read_part(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a damaged part is redone


# ----------------------------------------------------------------------------------------------- worker

_DETECTORS: dict[tuple, FaceDetector] = {}


def _detector(contract: CropContract, batch_size: int, device: str) -> FaceDetector:
    # One MTCNN per process and setting, built on first use (never rebuilt per video).
    key = (contract.fingerprint(), batch_size, device)
    if key not in _DETECTORS:
        _DETECTORS[key] = FaceDetector(contract, batch_size=batch_size, device=device)
    return _DETECTORS[key]


def worker_detector(contract: CropContract, cfg: ExtractConfig) -> FaceDetector:
    """A CPU FaceDetector that :func:`process_video` will use in this process for ``cfg``'s device (the batched
    pipeline swaps its MTCNN for the detection loop's proxy, dfd.data.pipeline)."""
    key = (contract.fingerprint(), cfg.batch_size, cfg.device)
    _DETECTORS[key] = FaceDetector(contract, batch_size=cfg.batch_size, device="cpu")
    return _DETECTORS[key]


def _init_worker(contract: CropContract, cfg: ExtractConfig, needs_detector: bool) -> None:
    import torch

    # Parallelism comes from processes; torch threads per process would only fight over the cores.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    if needs_detector:
        _detector(contract, cfg.batch_size, cfg.device)


def process_video(
    video_id: str, frames: Frames, cache_dir: Path, contract: CropContract, cfg: ExtractConfig
) -> dict[str, Any]:
    """Detect, choose and crop the faces of one video's sampled frames (:func:`dfd.data.faces.crop_faces`,
    the path dfd-predict runs too); write its crops; return its part record (without the source)."""
    n = len(frames.images)
    needs = contract.needs_detector
    det = _detector(contract, cfg.batch_size, cfg.device) if needs else None
    faces = crop_faces(frames.images, contract, det, video=True)
    record: dict[str, Any] = {"video_id": video_id, "sampled": n, "dropped": n - faces.frames,
                              "full_res": faces.full_res, "rows": []}
    if not len(faces):
        record["failure"] = (
            f"no face: no face with score >= {contract.min_score} in any of {n} sampled frames"
            if n
            else "empty: no frames"
        )
        return record
    out_dir = crop_dir(cache_dir, video_id)
    rel_dir = out_dir.relative_to(cache_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ext = ".jpg" if cfg.format == "jpg" else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality] if cfg.format == "jpg" else []
    for j, i in enumerate(faces.keep):
        number = int(frames.numbers[i])
        track = int(faces.tracks[j])
        name = f"{crop_stem(number, track)}{ext}"  # unique per (video, frame, track)
        ok, buf = cv2.imencode(ext, cv2.cvtColor(faces.crops[j], cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise RuntimeError(f"cannot encode crop {out_dir / name}")
        atomic.write_bytes(out_dir / name, buf.tobytes())
        record["rows"].append(
            {
                "frame": number,
                "track": track,
                "crop_path": f"{rel_dir.as_posix()}/{name}",
                "bbox": [float(v) for v in np.asarray(faces.boxes[j], np.float32)],
                "landmarks": [float(v) for v in np.asarray(faces.landmarks[j], np.float32).reshape(-1)],
                "score": float(np.float32(faces.scores[j])),
            }
        )
    return record


def _failure_record(video_id: str, err: BaseException) -> dict[str, Any]:
    if isinstance(err, MediaError):
        reason = f"{err.reason}: {err.detail}"
    else:  # an unexpected error on one video must not end a run over thousands
        reason = f"error: {type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err) else ''}"
    return {"video_id": video_id, "sampled": 0, "dropped": 0, "full_res": 0, "rows": [], "failure": reason}


def finish_part(cache_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Write a video's part (last: its existence marks the video done) and return its summary."""
    atomic.write_text(part_path(cache_dir, record["video_id"]), json.dumps(record))
    return {k: v for k, v in record.items() if k != "rows"} | {"saved": len(record["rows"])}


def _run_task(
    task: list[dict[str, Any]], root: str, cache_dir: str, contract: CropContract, cfg: ExtractConfig
) -> list[dict[str, Any]]:
    """Process one unit of work: a single video/folder/image, or every wanted sequence of one archive."""
    root_p, cache_p = Path(root), Path(cache_dir)
    source = {row["video_id"]: row["source"] for row in task}
    results = []
    for video_id, frames in _task_frames(task, root_p, contract.frames):
        _clear_crops(cache_p, video_id)  # a killed or older run may have left crops this run will not keep
        try:
            if isinstance(frames, BaseException):
                raise frames
            record = process_video(video_id, frames, cache_p, contract, cfg)
        except Exception as e:
            record = _failure_record(video_id, e)
        record["source"] = source[video_id]
        record["contract"] = contract.fingerprint()
        results.append(finish_part(cache_p, record))
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


def _tasks(index: pd.DataFrame, todo: set[str], sources: dict[str, dict | None]) -> list[list[dict[str, Any]]]:
    """Units of work in index order: one per video, one per archive (streamed once for all its rows)."""
    cols = ["video_id", "path", "kind"] + (["member"] if "member" in index.columns else [])
    tasks: list[list[dict[str, Any]]] = []
    archives: dict[str, list[dict[str, Any]]] = {}
    for row in index[cols].to_dict("records"):
        if row["video_id"] not in todo:
            continue
        row["source"] = {"path": row["path"], **(sources.get(row["video_id"]) or {})}
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


def _check_cache(cache_dir: Path, record: dict[str, Any], overwrite: bool) -> None:
    """Refuse (or, with overwrite, clear) a cache made with other settings or from another root."""
    have = read_record(cache_dir)
    legacy = (cache_dir / LEGACY_FILE).is_file()
    problem = None
    if have is None and legacy:
        problem = (f"the crop cache {cache_dir} was made by an older dfd and records no crop contract or dataset "
                   "root")
    elif have is not None and have.get("root") != record["root"]:
        problem = (f"the crop cache {cache_dir} holds crops of {have.get('root')}, not of {record['root']} "
                   "(the default dataset.cache_dir is distinct per root)")
    elif have is not None and (have.get("contract_id") != record["contract_id"] or have.get("storage") != record["storage"]):
        old = CropContract.from_mapping(have.get("contract"), where="cached contract")
        new = CropContract.from_mapping(record["contract"])
        diff = old.diff(new)
        cached = {k: a for k, (a, _) in diff.items()}  # the settings that reuse the cache as it is
        if have.get("storage") != record["storage"]:
            diff["storage"] = (have.get("storage"), record["storage"])
            stored = have.get("storage") or {}
            cached.update({k: v for k, v in stored.items() if v is not None and v != record["storage"].get(k)})
        problem = f"the crop cache {cache_dir} was made with other settings {diff} (cached, requested)"
        if cached:
            problem += f"; to use it as it is, request its settings ({extract_overrides(cached)})"
    if problem:
        if not overwrite:
            raise ExtractError(f"{problem}; use another dataset.cache_dir, or pass extract.overwrite=true to "
                               "delete and redo it")
        for sub in ("crops", "parts"):
            shutil.rmtree(cache_dir / sub, ignore_errors=True)
        for name in ("manifest.parquet", "failures.parquet", "failures.csv", LEGACY_FILE):
            (cache_dir / name).unlink(missing_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(cache_dir / RECORD_FILE, json.dumps(record, indent=2, sort_keys=True))


def default_workers(batched: bool = False) -> int:
    """Worker processes by default: min(4, CPUs available to this process), since MTCNN is CPU-bound and each
    worker holds its own copy; in the batched pipeline (no MTCNN in the workers: they decode and crop), every
    CPU, so that some are always decoding while others wait for detections."""
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, cpus if batched else min(4, cpus))


def _fingerprints(index: pd.DataFrame, root: Path, content: bool) -> dict[str, dict | None]:
    """Source fingerprint per video id (an archive's is computed once for all its sequences)."""
    out: dict[str, dict | None] = {}
    seen: dict[tuple[str, str], dict | None] = {}
    for row in index[["video_id", "path", "kind"]].to_dict("records"):
        key = (row["path"], row["kind"])
        if key not in seen:
            seen[key] = source_fingerprint(root, row, content)
        out[row["video_id"]] = seen[key]
    return out


def _prune(cache_dir: Path, keep: set[str]) -> int:
    """Remove parts and crops of videos no longer in the index; return how many."""
    removed = 0
    parts = cache_dir / "parts"
    if not parts.is_dir():
        return 0
    wanted = {part_path(cache_dir, v).name for v in keep}
    for p in parts.glob("*.json"):
        if p.name in wanted:
            continue
        rec = _read_part(p) or {}
        for row in rec.get("rows", []):
            (cache_dir / row["crop_path"]).unlink(missing_ok=True)
        p.unlink(missing_ok=True)
        removed += 1
    return removed


def extract_faces(
    index_df: pd.DataFrame,
    root: str | Path,
    cache_dir: str | Path,
    cfg: ExtractConfig | None = None,
    faces_are_cropped: bool = False,
    progress: bool = True,
    dataset: str = "",
) -> ExtractSummary:
    """Turn a video index into face crops + ``manifest.parquet`` + ``failures.parquet`` under ``cache_dir``.

    Resumable and incremental: videos finished by an earlier run from the same source file (fingerprint)
    with the same contract are reused; changed sources are redone; videos that left the index are removed.
    Bad inputs (missing, empty, corrupt, faceless) are listed in the failures table; the call itself succeeds.

    With ``cfg.num_shards > 1`` this is one shard's job (``cfg.shard``): it extracts its part of the videos
    (:mod:`dfd.data.sharding`) and, if it is the last to finish, merges; ``cfg.merge`` merges on request. The
    files written are the ones a single run writes.
    """
    cfg = cfg or ExtractConfig()
    contract = cfg.resolve(faces_are_cropped)
    if contract.needs_detector:
        _check_device(cfg.device)  # a device this machine lacks is refused up front, even with nothing left to do
    start = time.perf_counter()
    index = validate_index(index_df, where="extract index")
    root, cache_dir = Path(root), Path(cache_dir)
    record = make_record(dataset, root, contract, cfg.storage())
    if cfg.sharded and cfg.overwrite:
        raise ExtractError(
            "extract.overwrite=true cannot run sharded: each shard would delete the crops other shards are "
            f"writing; delete {cache_dir} (or use another dataset.cache_dir) and start the shards again"
        )
    _check_cache(cache_dir, record, cfg.overwrite)
    (cache_dir / "parts").mkdir(parents=True, exist_ok=True)
    if cfg.sharded or cfg.merge:
        return _extract_shard(index, root, cache_dir, record, contract, cfg, progress, start)

    _clean_temps(cache_dir)
    ids = index["video_id"].tolist()
    removed = _prune(cache_dir, set(ids))
    run = _extract_videos(index, root, cache_dir, contract, cfg, progress)
    summary = _assemble(index, cache_dir, record)
    return run.fill(summary, contract, start, removed)


@dataclass
class _Run:
    """What one extraction pass over some videos did (before the manifest is assembled)."""

    processed: list[str] = field(default_factory=list)
    resumed: int = 0
    stale: int = 0
    pipeline: dict = field(default_factory=dict)

    def fill(self, summary: ExtractSummary, contract: CropContract, start: float, removed: int = 0) -> ExtractSummary:
        summary.videos_resumed = self.resumed
        summary.videos_stale = self.stale
        summary.videos_removed = removed
        summary.processed = self.processed
        summary.pipeline = self.pipeline
        summary.contract = contract
        summary.seconds = time.perf_counter() - start
        return summary


def _extract_videos(index: pd.DataFrame, root: Path, cache_dir: Path, contract: CropContract, cfg: ExtractConfig,
                    progress: bool, what: str = "extracting faces") -> _Run:
    """Extract the index's videos that are not current in the cache (the resume rule of the module docstring)."""
    ids = index["video_id"].tolist()
    sources = _fingerprints(index, root, cfg.hash)
    cid = contract.fingerprint()
    done, stale = set(), set()
    for v in ids:
        p = part_path(cache_dir, v)
        if p.is_file():
            (done if part_is_current(_read_part(p), cid, sources[v]) else stale).add(v)
    todo = set(ids) - done
    tasks = _tasks(index, todo, sources)
    run = _Run(resumed=len(done), stale=len(stale))
    items = _execute(tasks, root, cache_dir, contract, cfg, run.pipeline)
    for item in _progress(items, total=len(ids), completed=len(done), enabled=progress, what=what):
        run.processed.append(item["video_id"])
    return run


def _extract_shard(index: pd.DataFrame, root: Path, cache_dir: Path, record: dict[str, Any], contract: CropContract,
                   cfg: ExtractConfig, progress: bool, start: float) -> ExtractSummary:
    """One shard's job (its videos, then the merge if it finishes last), or the merge alone."""
    from dfd.data import sharding

    n = cfg.num_shards
    folder = sharding.plan_dir(cache_dir, index, n)
    if cfg.shard is None:  # extract.merge=true alone
        if n > 1 and not (folder / "plan.parquet").is_file():
            raise ExtractError(
                f"nothing to merge: no shards of this index split {n} ways in {cache_dir / sharding.PLANS} (run "
                "them first with extract.shard=<k>, or check extract.num_shards; a changed index makes a new plan)"
            )
        summary, run, removed = _merge(index, cache_dir, record, folder, n, _Run())
        return run.fill(summary, contract, start, removed)

    if not (folder / "plan.parquet").is_file():
        sizes = _fingerprints(index, root, content=False)  # the plan balances bytes; content hashes not needed
        folder, plan = sharding.load_or_create_plan(cache_dir, index, sizes, n)
    else:
        plan = sharding.read_plan(folder)
    shard_of = dict(zip(plan["video_id"].astype(str), plan["shard"].astype(int), strict=True))
    mine = index[[shard_of[v] == cfg.shard for v in index["video_id"]]]
    sharding.start_shard(folder, cfg.shard)
    run = _extract_videos(mine, root, cache_dir, contract, cfg, progress,
                          what=f"extracting faces (shard {cfg.shard}/{n})")
    tally = _tally(mine, cache_dir)
    sharding.finish_shard(folder, cfg.shard, n, {
        "videos": len(mine), "extracted": len(run.processed), "reused": run.resumed, "stale": run.stale,
        "failed": tally.videos_failed, "crops": tally.frames_saved,
        "seconds": round(time.perf_counter() - start, 3)})
    if cfg.merge or sharding.claim_merge(folder, n):
        summary, run, removed = _merge(index, cache_dir, record, folder, n, run)
        return run.fill(summary, contract, start, removed)
    waiting = sharding.pending(folder, n)
    tally.shard_status = (
        f"shard {cfg.shard} of {n} done ({len(mine)} of {len(index)} videos, plan {folder.name}); waiting for "
        f"shard(s) {', '.join(map(str, waiting))}: the last one to finish writes the manifest (merge by hand: "
        f"the same command with extract.merge=true)"
    )
    return run.fill(tally, contract, start)


def _merge(index: pd.DataFrame, cache_dir: Path, record: dict[str, Any], folder: Path, n: int,
           run: _Run) -> tuple[ExtractSummary, _Run, int]:
    """Manifest + failures (+ the cache record in the manifest) from every shard's parts: what one run writes."""
    from dfd.data import sharding

    waiting = sharding.pending(folder, n) if n > 1 else []
    if not waiting:
        _clean_temps(cache_dir)  # no shard is writing any more
    removed = _prune(cache_dir, set(index["video_id"].tolist()))
    summary = _assemble(index, cache_dir, record)
    if n > 1:
        markers = sharding.finished(folder, n)
        run = _Run(processed=run.processed, resumed=sum(m.get("reused", 0) for m in markers.values()),
                   stale=sum(m.get("stale", 0) for m in markers.values()), pipeline=run.pipeline)
        sharding.record_merge(folder, n, {"videos": summary.videos, "crops": summary.frames_saved,
                                          "failed": summary.videos_failed})
        summary.shard_status = f"merged {n - len(waiting)} of {n} shards (plan {folder.name})"
        summary.merged = True
        if waiting:
            summary.warnings.append(
                f"shard(s) {', '.join(map(str, waiting))} have not finished: their unfinished videos are listed as "
                "not processed; run them (extract.shard=<k>) and the last to finish merges again"
            )
    return summary, run, removed


def _check_device(device: str) -> None:
    """One line instead of a CUDA traceback from inside MTCNN."""
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ExtractError(f"extract.device={device} but no CUDA GPU is visible here (torch.cuda.is_available() "
                               "is False); use extract.device=cpu, or run on a GPU node")


def _tally(index: pd.DataFrame, cache_dir: Path) -> ExtractSummary:
    """Counts of a shard's videos from their parts (the manifest is the merge's job)."""
    s = ExtractSummary(videos=len(index))
    for v in index["video_id"]:
        rec = _read_part(part_path(cache_dir, v)) or {}
        rows = len(rec.get("rows", []))
        s.frames_sampled += int(rec.get("sampled", 0))
        if rec.get("failure") or not rows:
            s.videos_failed += 1
            continue
        s.videos_ok += 1
        s.frames_saved += rows
        s.frames_dropped += int(rec.get("dropped", 0))
        s.frames_full_res += int(rec.get("full_res", 0))
    return s


def _clean_temps(cache_dir: Path) -> None:
    """Remove temporary part files left by a killed run (only when no other process is extracting)."""
    for tmp in (cache_dir / "parts").glob(".*.tmp*"):
        tmp.unlink(missing_ok=True)


def _execute(
    tasks: list[list[dict[str, Any]]],
    root: Path,
    cache_dir: Path,
    contract: CropContract,
    cfg: ExtractConfig,
    stats: dict | None = None,
) -> Iterator[dict[str, Any]]:
    """Run the tasks (per video, or through the batched detection pipeline); yield each video's summary."""
    if not tasks:
        return
    if cfg.batched() and contract.needs_detector:
        from dfd.data.pipeline import run_batched

        workers = min(cfg.workers or default_workers(batched=True), len(tasks))
        yield from run_batched(tasks, root, cache_dir, contract, cfg, workers, stats)
        return
    workers = min(cfg.workers or default_workers(), max(len(tasks), 1))
    if workers <= 1:
        for task in tasks:
            yield from _run_task(task, str(root), str(cache_dir), contract, cfg)
        return
    import multiprocessing as mp

    # spawn, not fork: forking a process that has touched torch's thread pools can deadlock.
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        initargs=(contract, cfg, contract.needs_detector),
    ) as pool:
        futures = [pool.submit(_run_task, t, str(root), str(cache_dir), contract, cfg) for t in tasks]
        try:
            for fut in as_completed(futures):
                yield from fut.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _progress(items: Iterable[dict[str, Any]], total: int, completed: int, enabled: bool,
              what: str = "extracting faces") -> Iterator[Any]:
    if not enabled:
        yield from items
        return
    import sys

    if not sys.stdout.isatty():
        # Batch jobs (SLURM logs): a plain line every minute instead of a bar redrawn into the log file.
        yield from _progress_lines(items, total, completed, what)
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
        TextColumn(what),
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


PROGRESS_EVERY_S = 60.0


def _progress_lines(items: Iterable[dict[str, Any]], total: int, completed: int, what: str) -> Iterator[Any]:
    t0 = last = time.perf_counter()
    for done, item in enumerate(items, start=1):
        now = time.perf_counter()
        if now - last >= PROGRESS_EVERY_S:
            last = now
            rate = done / (now - t0)
            left = (total - completed - done) / rate if rate > 0 else float("nan")
            print(f"{what}: {completed + done}/{total} videos, {rate:.2f} videos/s, about {left / 60:.0f} min left",
                  flush=True)
        yield item


def _drop_stats(rows: list[tuple[int, str, int, int, bool]]) -> dict[str, dict]:
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


def _assemble(index: pd.DataFrame, cache_dir: Path, record: dict[str, Any]) -> ExtractSummary:
    """Build manifest and failures from the per-video parts, in index order."""
    s = ExtractSummary(videos=len(index))
    extras = [c for c in index.columns if c not in INDEX_COLUMNS and c not in MANIFEST_COLUMNS]
    cols: dict[str, list] = {c: [] for c in MANIFEST_COLUMNS}
    for c in (*MANIFEST_OPTIONAL_COLUMNS, *MANIFEST_SOURCE_COLUMNS):
        cols[c] = []
    extra_vals: dict[str, list] = {c: [] for c in extras}
    failures, stats = [], []
    for row in index.to_dict("records"):
        part = part_path(cache_dir, row["video_id"])
        rec = _read_part(part) if part.is_file() else None
        if rec is None:  # only when a run was stopped before this video: say so, never drop it silently
            failures.append((row["video_id"], row["path"], "not processed: extraction was interrupted"))
            continue
        s.frames_sampled += rec["sampled"]
        failed = bool(rec.get("failure") or not rec["rows"])
        # Frames without a face: the part's count (several faces of one frame are several rows).
        dropped = rec["sampled"] if failed else rec.get("dropped", rec["sampled"] - len(rec["rows"]))
        stats.append((row["label"], row["method"], rec["sampled"], dropped, failed))
        if failed:
            failures.append((row["video_id"], row["path"], rec.get("failure") or "no crops"))
            continue
        s.videos_ok += 1
        s.frames_dropped += rec["dropped"]
        s.frames_full_res += rec.get("full_res", 0)
        s.frames_kept += len({r["frame"] for r in rec["rows"]})
        s.tracks_max = max(s.tracks_max, len({r.get("track", 0) for r in rec["rows"]}))
        src = rec.get("source") or {}
        for r in rec["rows"]:
            for c in ("frame", "crop_path", "bbox", "landmarks", "score"):
                cols[c].append(r[c])
            cols["track"].append(int(r.get("track", 0)))  # parts written before tracks: one face per frame
            for c in ("video_id", "label", "split", "method", "identity"):
                cols[c].append(row[c])
            cols["source_path"].append(row["path"])
            cols["source_size"].append(src.get("size"))
            cols["source_mtime_ns"].append(src.get("mtime_ns"))
            for c in extras:
                extra_vals[c].append(row[c])
    s.frames_saved = len(cols["frame"])
    s.videos_failed = len(failures)
    s.drops = _drop_stats(stats)
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


# ----------------------------------------------------------------------------------------------- verify


@dataclass
class VerifyReport:
    """A cache checked against its sources (``dfd-extract extract.verify=true``, or ``--verify``)."""

    cache_dir: Path
    videos: int = 0
    current: int = 0
    stale: list[str] = field(default_factory=list)  # source changed since its crops were made
    missing_sources: list[str] = field(default_factory=list)  # indexed source no longer on disk
    not_extracted: list[str] = field(default_factory=list)  # in the index, never extracted (or interrupted)
    orphaned: int = 0  # cached videos the index no longer lists (moved or deleted sources)
    missing_crops: list[str] = field(default_factory=list)  # crops the manifest lists but the disk lacks
    problems: list[str] = field(default_factory=list)  # root/contract/manifest level

    @property
    def ok(self) -> bool:
        return not (self.stale or self.missing_sources or self.not_extracted or self.orphaned
                    or self.missing_crops or self.problems)

    def __str__(self) -> str:
        head = (f"cache {self.cache_dir}: {self.current}/{self.videos} videos current"
                + ("; nothing stale or missing" if self.ok else ""))
        lines = [head, *[f"  problem: {p}" for p in self.problems]]
        for label, items, what in (
            ("stale", self.stale, "source changed since extraction: rerun dfd-extract to redo them"),
            ("missing source", self.missing_sources, "source gone: rerun dfd-index + dfd-extract"),
            ("not extracted", self.not_extracted, "rerun dfd-extract"),
            ("crops missing", self.missing_crops, "crop files gone: rerun with extract.overwrite=true"),
        ):
            if items:
                lines.append(f"  {label}: {len(items)} ({what}), e.g. {', '.join(items[:5])}")
        if self.orphaned:
            lines.append(f"  orphaned: {self.orphaned} cached videos no longer in the index (removed by the next "
                         "dfd-extract)")
        return "\n".join(lines)


def verify_cache(index_df: pd.DataFrame, root: str | Path, cache_dir: str | Path, cfg: ExtractConfig | None = None,
                 faces_are_cropped: bool = False) -> VerifyReport:
    """Check a cache against its sources without changing anything: what the next dfd-extract would redo."""
    cfg = cfg or ExtractConfig()
    index = validate_index(index_df, where="extract index")
    root, cache_dir = Path(root), Path(cache_dir)
    rep = VerifyReport(cache_dir, videos=len(index))
    have = read_record(cache_dir)
    contract = cfg.resolve(faces_are_cropped)
    if have is None:
        rep.problems.append("no cache record (cache.json): not extracted yet, or made by an older dfd")
    else:
        if have.get("root") != normalize_root(root):
            rep.problems.append(f"made from root {have.get('root')}, configured root is {normalize_root(root)}")
        if have.get("contract_id") != contract.fingerprint():
            old = CropContract.from_mapping(have.get("contract"), where="cached contract")
            rep.problems.append(f"made with other crop settings {old.diff(contract)} (cached, configured)")
    if not (cache_dir / "manifest.parquet").is_file():
        rep.problems.append("no manifest.parquet")
    sources = _fingerprints(index, root, cfg.hash)
    cid = contract.fingerprint()
    ids = index["video_id"].tolist()
    for v in ids:
        if sources[v] is None:
            rep.missing_sources.append(v)
            continue
        part = _read_part(part_path(cache_dir, v)) if part_path(cache_dir, v).is_file() else None
        if part is None:
            rep.not_extracted.append(v)
        elif not part_is_current(part, cid, sources[v]):
            rep.stale.append(v)
        else:
            rep.current += 1
            if any(not (cache_dir / r["crop_path"]).is_file() for r in part.get("rows", [])):
                rep.missing_crops.append(v)
    parts = cache_dir / "parts"
    if parts.is_dir():
        wanted = {part_path(cache_dir, v).name for v in ids}
        rep.orphaned = sum(1 for p in parts.glob("*.json") if p.name not in wanted)
    return rep
