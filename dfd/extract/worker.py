"""One unit of extraction work, in a worker process: decode a video's sampled frames, find and crop its faces
(:func:`dfd.faces.crops.crop_faces`), write its crops, then its part record (last: its existence marks the
video done). The batched pipeline's workers run this same code with detection done elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dfd import atomic
from dfd.extract.config import ExtractConfig
from dfd.extract.parts import clear_crops, crop_dir, failure_record, finish_part
from dfd.faces.contract import CropContract, segment_labels
from dfd.faces.crops import crop_faces, crop_stem
from dfd.faces.detect import FaceDetector
from dfd.store.cache import NO_ROOM
from dfd.store.distort import apply_chain, chain_text, parse_chain, read_distorted
from dfd.store.media import Frames, encode_image, iter_archive_sequences, read_source
from dfd.store.roots import Roots, resolve_row
from dfd.store.schema import parse_segments

_DETECTORS: dict[tuple, FaceDetector] = {}


def detector_for(contract: CropContract, batch_size: int, device: str) -> FaceDetector:
    # One MTCNN per process and setting, built on first use (never rebuilt per video).
    key = (contract.fingerprint(), batch_size, device)
    if key not in _DETECTORS:
        _DETECTORS[key] = FaceDetector(contract, batch_size=batch_size, device=device)
    return _DETECTORS[key]


def worker_detector(contract: CropContract, cfg: ExtractConfig) -> FaceDetector:
    """A CPU FaceDetector that :func:`process_video` will use in this process for ``cfg``'s device (the batched
    pipeline swaps its MTCNN for the detection loop's proxy, dfd.extract.pipeline)."""
    key = (contract.fingerprint(), cfg.batch_size, cfg.device)
    _DETECTORS[key] = FaceDetector(contract, batch_size=cfg.batch_size, device="cpu")
    return _DETECTORS[key]


def init_worker(contract: CropContract, cfg: ExtractConfig, needs_detector: bool) -> None:
    import torch

    # Parallelism comes from processes; torch threads per process would only fight over the cores.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    if needs_detector:
        detector_for(contract, cfg.batch_size, cfg.device)


def process_video(
    video_id: str, frames: Frames, cache_dir: Path, contract: CropContract, cfg: ExtractConfig,
    segments: list[tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """Detect, choose and crop the faces of one video's sampled frames (:func:`dfd.faces.crops.crop_faces`,
    the path dfd-predict runs too); write its crops; return its part record (without the source).

    ``segments`` (a partial fake's fake spans, seconds): each crop row also gets ``frame_label``, its frame's
    own label by :func:`dfd.faces.contract.segment_labels` at the video's frame rate."""
    n = len(frames.images)
    needs = contract.needs_detector
    det = detector_for(contract, cfg.batch_size, cfg.device) if needs else None
    faces = crop_faces(frames.images, contract, det, video=True)
    record: dict[str, Any] = {"video_id": video_id, "sampled": n, "dropped": n - faces.frames,
                              "full_res": faces.full_res, "near": faces.near, "rows": []}
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
    frame_labels = (segment_labels(np.asarray(frames.numbers), frames.fps, segments) if segments else None)
    if segments:
        record["fps"] = frames.fps
    for j, i in enumerate(faces.keep):
        number = int(frames.numbers[i])
        track = int(faces.tracks[j])
        name = f"{crop_stem(number, track)}{ext}"  # unique per (video, frame, track)
        atomic.write_bytes(out_dir / name, encode_image(faces.crops[j], ext, cfg.jpeg_quality))
        record["rows"].append(
            {
                "frame": number,
                "track": track,
                "crop_path": f"{rel_dir.as_posix()}/{name}",
                "bbox": [float(v) for v in np.asarray(faces.boxes[j], np.float32)],
                "landmarks": [float(v) for v in np.asarray(faces.landmarks[j], np.float32).reshape(-1)],
                "score": float(np.float32(faces.scores[j])),
                **({"frame_label": int(frame_labels[i])} if frame_labels is not None else {}),
            }
        )
    return record


def run_task(
    task: list[dict[str, Any]], root: str | Roots, cache_dir: str, contract: CropContract, cfg: ExtractConfig
) -> list[dict[str, Any]]:
    """Process one unit of work: a single video/folder/image, or every wanted sequence of one archive.
    ``root``: the dataset's roots (index paths are relative to the one each row names)."""
    root_p, cache_p = Roots.of(root), Path(cache_dir)
    source = {row["video_id"]: row["source"] for row in task}
    segments = {row["video_id"]: row.get("fake_segments") for row in task}
    distortion = {row["video_id"]: chain_text(parse_chain(row.get("distortion"))) for row in task}
    results = []
    for video_id, frames in _task_frames(task, root_p, contract, cfg.device):
        clear_crops(cache_p, video_id)  # a killed or older run may have left crops this run will not keep
        try:
            if isinstance(frames, BaseException):
                raise frames
            record = process_video(video_id, frames, cache_p, contract, cfg, parse_segments(segments[video_id]))
        except Exception as e:
            if isinstance(e, OSError) and e.errno in NO_ROOM:
                raise  # the cache is full or read-only: every next video would fail alike (the run stops)
            record = failure_record(video_id, e)
        record["source"] = source[video_id]
        record["contract"] = contract.fingerprint()
        if distortion.get(video_id):
            record["distortion"] = distortion[video_id]
        results.append(finish_part(cache_p, record))
    return results


def _task_frames(
    task: list[dict[str, Any]], roots: Roots, contract: CropContract, device: str
) -> Iterator[tuple[str, Frames | BaseException]]:
    # A row's ``distortion`` (dfd.store.distort chain) degrades its source frames before detection.
    n = contract.frames
    if task[0]["kind"] == "archive":
        ids = {row["member"]: row for row in task}
        for member, frames in iter_archive_sequences(resolve_row(roots, task[0]), list(ids), n):
            row = ids[member]
            chain = parse_chain(row.get("distortion"))
            if chain and isinstance(frames, Frames):
                frames = Frames(frames.numbers, apply_chain(frames.images, frames.numbers, chain, row["video_id"]))
            yield row["video_id"], frames
        return
    for row in task:
        try:
            chain = parse_chain(row.get("distortion"))
            segments = parse_segments(row.get("fake_segments"))
            if chain and segments:
                raise ValueError("a distortion chain on a partial fake (fake_segments) is not supported: its frames "
                                 "would be sampled as a whole video's")
            if chain:
                yield row["video_id"], read_distorted(row["kind"], resolve_row(roots, row), n, chain, row["video_id"])
            else:
                yield row["video_id"], read_source(row["kind"], resolve_row(roots, row), n, segments,
                                                  decoder=contract.decoder, device=device)
        except Exception as e:
            yield row["video_id"], e
