"""Score images and videos with a bundle (or a checkpoint): the same face detection and crop as training.

Per file: N uniformly spaced frames (videos) or the image itself, MTCNN on every frame, one face per frame
chosen as dfd-extract chooses it, a square crop with the training margin at the training crop size, resized and
normalised as in training; the file's probability is the mean over its faces. A file that cannot be decoded or
shows no face becomes a row with a status and a reason; it never stops the run.

Work is chunked across files: frames of several small files go through MTCNN and the model together (batches of
``batch_size``), which is what makes folders of images fast.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dfd.data.faces import FaceDetector, choose_face, crop_face
from dfd.data.video import IMAGE_EXTENSIONS, MediaError, MissingMedia, read_image, read_video
from dfd.inference.bundle import Bundle, load_bundle

COLUMNS = ("path", "prob_fake", "label", "faces", "frames", "status", "reason")
STATUSES = ("ok", "no_face", "unreadable")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
LIST_EXTENSIONS = (".txt",)


class PredictError(ValueError):
    """Predict cannot start (no model, no inputs); the message says what and how to fix."""


@dataclass
class FileResult:
    """One CSV row: a file's probability, label and how it was obtained."""

    path: str
    prob_fake: float | None = None
    label: int | None = None
    faces: int = 0
    frames: int = 0
    status: str = "ok"
    reason: str = ""

    def row(self) -> list:
        """CSV cells (empty where a value does not exist)."""
        prob = "" if self.prob_fake is None else f"{self.prob_fake:.7f}"
        label = "" if self.label is None else str(self.label)
        return [self.path, prob, label, self.faces, self.frames, self.status, self.reason]


# ----------------------------------------------------------------------------------------------- inputs
def _kind(path: Path) -> str | None:
    ext = path.suffix.lower()
    return "video" if ext in VIDEO_EXTENSIONS else "image" if ext in (*IMAGE_EXTENSIONS, ".tif", ".tiff") else None


def collect_inputs(inputs: Iterable[str | Path]) -> list[str]:
    """Files to score, in a stable order: files as given, folders walked recursively, ``.txt`` lists read.

    Paths in a list file are taken relative to the list's folder when they exist there, else as written.
    """
    out: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                out += [str(Path(dirpath) / f) for f in sorted(filenames)
                        if not f.startswith(".") and _kind(Path(f))]
        elif p.suffix.lower() in LIST_EXTENSIONS and p.is_file():
            for line in p.read_text().splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                q = Path(line)
                if not q.is_absolute() and (p.parent / q).exists():
                    q = p.parent / q
                out.append(str(q))
        else:
            out.append(str(p))  # a missing file still gets its row ("unreadable: missing")
    return list(dict.fromkeys(out))


def read_media(path: str | Path, frames: int) -> list[np.ndarray]:
    """RGB frames of one file: ``frames`` uniformly spaced ones for a video, the image itself for an image."""
    p = Path(path)
    kind = _kind(p)
    if kind == "video":
        return read_video(p, frames).images
    if kind == "image":
        return [read_image(p)]
    # Unknown extension: try both decoders before giving up.
    try:
        return [read_image(p)]
    except MediaError:
        return read_video(p, frames).images


def open_model(model: str | Path, device: str = "cpu") -> Bundle:
    """A bundle folder (torch only) or a training checkpoint (needs the training stack; threshold 0.5)."""
    p = Path(model)
    if p.is_dir():
        return load_bundle(p, device=device)
    if not p.is_file():
        raise PredictError(f"model {p} not found: pass a bundle folder written by dfd-export or a .ckpt checkpoint")
    from dfd.inference.export import checkpoint_bundle

    return checkpoint_bundle(p).to(device)


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when a GPU is present, else cpu; explicit cuda without a GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PredictError("--device cuda asked for, but torch sees no GPU; use --device cpu or auto")
    return device


# ----------------------------------------------------------------------------------------------- predictor
@dataclass
class _Pending:
    index: int
    images: list[np.ndarray]
    result: FileResult
    probs: list[float] = field(default_factory=list)


class Predictor:
    """Faces -> probabilities -> one row per file, with a bundle's preprocessing facts.

    Args:
        bundle: the loaded model and its preprocess.json.
        frames: frames per video (default: the bundle's).
        batch_size: frames per MTCNN call and crops (clips) per model call.
        device: torch device for MTCNN and the model.
    """

    def __init__(self, bundle: Bundle, frames: int | None = None, batch_size: int = 32, device: str = "cpu") -> None:
        self.bundle = bundle.to(device)
        face = bundle.config["face"]
        self.margin = float(face["margin"])
        self.crop_size = int(face["crop_size"])
        self.choice = str(face.get("choice", "largest"))
        self.min_score = float(face.get("min_score", 0.9))
        self.frames = int(frames or bundle.config["video"]["frames"])
        if self.frames <= 0:
            raise PredictError(f"--frames must be positive, got {self.frames}")
        self.batch_size = max(1, int(batch_size))
        self.detector = FaceDetector(min_face_size=int(face.get("min_face_size", 20)), batch_size=self.batch_size,
                                     device=device)

    def predict(self, paths: Sequence[str], progress: bool = True) -> list[FileResult]:
        """One result per path, in input order."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        results: list[FileResult] = [FileResult(str(p)) for p in paths]
        columns = (TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, disable=not progress, transient=False) as bar:
            task = bar.add_task("files", total=len(paths))
            for chunk in self._chunks(paths, results):
                self._score(chunk)
                bar.advance(task, len(chunk))
        return results

    def _chunks(self, paths: Sequence[str], results: list[FileResult]) -> Iterator[list[_Pending]]:
        """Decoded files grouped until they hold about ``batch_size`` frames; unreadable files end here."""
        chunk: list[_Pending] = []
        n = 0
        for i, path in enumerate(paths):
            res = results[i]
            try:
                images = read_media(path, self.frames)
            except MediaError as e:
                # dfd.data.video's "missing" hint speaks of dataset roots; here the path came from the user.
                detail = "file not found" if isinstance(e, MissingMedia) else e.detail
                res.status, res.reason = "unreadable", f"{e.reason}: {detail}"
                yield [_Pending(i, [], res)]
                continue
            except Exception as e:  # a decoder crash on one odd file must not end a run over thousands
                res.status, res.reason = "unreadable", f"{type(e).__name__}: {str(e).strip()[:200]}"
                yield [_Pending(i, [], res)]
                continue
            res.frames = len(images)
            chunk.append(_Pending(i, images, res))
            n += len(images)
            if n >= self.batch_size:
                yield chunk
                chunk, n = [], 0
        if chunk:
            yield chunk

    def _score(self, chunk: list[_Pending]) -> None:
        """Detect, crop, run the model and fill each file's result."""
        todo = [p for p in chunk if p.images]
        if not todo:
            return
        flat = [img for p in todo for img in p.images]
        dets = self.detector.detect(flat)
        inputs, lms, owners = [], [], []
        k = 0
        for p in todo:
            crops, marks = [], []
            for img in p.images:
                det = dets[k]
                k += 1
                j = choose_face(det, self.choice, self.min_score)
                if j is None:
                    continue
                crop, lm = crop_face(img, det.boxes[j], det.landmarks[j], self.margin, self.crop_size)
                crops.append(crop)
                marks.append(self.bundle.scale_landmarks(lm, self.crop_size))
            p.images = []  # free the frames: only crops are needed from here on
            p.result.faces = len(crops)
            if not crops:
                p.result.status = "no_face"
                p.result.reason = f"no face with score >= {self.min_score} in {p.result.frames} frame(s)"
                continue
            x, lm = self.bundle.preprocess(crops), torch.from_numpy(np.stack(marks))
            if self.bundle.clip_len:
                # One clip per file: clip_len faces evenly spread over the file (repeated when fewer).
                from dfd.data.datasets import uniform_positions

                pos = torch.from_numpy(uniform_positions(len(crops), self.bundle.clip_len))
                x, lm = x[pos][None], lm[pos][None]
            inputs.append(x)
            lms.append(lm)
            owners += [p] * len(x)
        if not inputs:
            return
        x_all, lm_all = torch.cat(inputs), torch.cat(lms)
        probs = torch.cat([
            self.bundle(x_all[s : s + self.batch_size], lm_all[s : s + self.batch_size])
            for s in range(0, len(x_all), self.batch_size)
        ]).tolist()
        for p, prob in zip(owners, probs, strict=True):
            p.probs.append(prob)
        for p in todo:
            if p.probs:
                p.result.prob_fake = float(np.mean(p.probs))
                p.result.label = int(p.result.prob_fake >= self.bundle.threshold)


def write_csv(results: Sequence[FileResult], path: str | Path) -> Path:
    """predictions.csv with exactly ``COLUMNS``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(r.row() for r in results)
    return out
