"""Score images and videos with a bundle (or a checkpoint): the very preprocessing the training crops had.

The bundle's crop contract (dfd.faces.contract) drives everything: frames sampled per video by the same rule,
faces found by the same :func:`dfd.faces.crops.crop_faces` that ``dfd-extract`` runs (same detector settings,
per-video detection scale and full-resolution fallback, same face choice, same box or aligned crop), then
resized and normalised as in training. A file's probability comes from its faces' by the bundle's video-score
rule (``video_score``; dfd.engine.video_score, the function evaluation uses: by default the mean over frames of
the max over each frame's faces); videos are labelled with the video-level threshold, single images with the
frame-level one. A file that cannot be decoded or shows
no face becomes a row with a status and a reason; it never stops the run.

Models trained on face crops as a dataset ships them (WildDeepfake) take crops as they are (``inputs=crops``).

Imports nothing of the training stack (Lightning, Hydra, albumentations, timm): an organiser's server needs
torch, numpy, OpenCV, decord and facenet-pytorch only.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from dfd.engine.video_score import check_video_score, score
from dfd.errors import UserError
from dfd.faces.contract import CropContract, uniform_positions
from dfd.faces.crops import crop_faces, crop_stem
from dfd.faces.detect import DETECT_BATCH, FaceDetector
from dfd.inference.bundle import Bundle, load_bundle
from dfd.store.cache import safe_relpath
from dfd.store.media import MediaError, MissingMedia, media_kind, nvdec_problem, read_image, read_video

# The first seven columns are a contract other tools read: never reorder them; new columns go at the end.
COLUMNS = ("path", "prob_fake", "label", "faces", "frames", "status", "reason")
EXTRA_COLUMNS = ("threshold", "threshold_level", "inputs")
STATUSES = ("ok", "no_face", "unreadable")
INPUT_MODES = ("auto", "frames", "crops")
LIST_EXTENSIONS = (".txt",)


class PredictError(UserError, ValueError):
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
    threshold: float | None = None
    threshold_level: str = ""  # video (videos) | frame (single images)
    inputs: str = ""  # frames (faces detected and cropped) | crops (taken as face crops)

    def row(self) -> list:
        """CSV cells (empty where a value does not exist)."""
        prob = "" if self.prob_fake is None else f"{self.prob_fake:.7f}"
        label = "" if self.label is None else str(self.label)
        thr = "" if self.threshold is None else f"{self.threshold:.7f}"
        return [self.path, prob, label, self.faces, self.frames, self.status, self.reason, thr,
                self.threshold_level, self.inputs]


# ----------------------------------------------------------------------------------------------- inputs
def _kind(path: Path) -> str | None:
    return media_kind(path)


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


def read_media(path: str | Path, frames: int, decoder: str = "cpu", device: str = "cuda"
               ) -> tuple[str, np.ndarray, list[np.ndarray]]:
    """``(kind, frame numbers, RGB frames)`` of one file: ``frames`` uniformly spaced frames of a video (the
    contract's rule; decoded by ``decoder``), or the image itself."""
    p = Path(path)
    kind = _kind(p)
    if kind == "video":
        f = read_video(p, frames, decoder, device)
        return "video", f.numbers, f.images
    if kind == "image":
        return "image", np.zeros(1, np.int64), [read_image(p)]
    # Unknown extension: try both decoders before giving up.
    try:
        return "image", np.zeros(1, np.int64), [read_image(p)]
    except MediaError:
        f = read_video(p, frames, decoder, device)
        return "video", f.numbers, f.images


def open_model(model: str | Path, device: str = "cpu") -> Bundle:
    """A bundle folder (torch only) or a training checkpoint (needs the training stack; thresholds 0.5)."""
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


def resolve_inputs(mode: str, contract: CropContract) -> tuple[CropContract, str | None]:
    """The contract predict runs (``inputs`` set by ``--inputs``) and, when it departs from the one the model
    was trained on, one line saying what happens."""
    if mode not in INPUT_MODES:
        raise PredictError(f"--inputs {mode!r} is not one of {INPUT_MODES}")
    trained = contract.inputs
    if mode in ("auto", trained):
        return contract, None
    if mode == "frames":
        c = contract.replace(inputs="frames")
        return c, (f"this model was trained on face crops as its dataset ships them; --inputs frames detects "
                   f"faces and cuts {c.describe().split(';')[0]}, which may be framed differently from the "
                   "training crops (pass face crops with --inputs crops to match training)")
    c = contract.replace(inputs="crops")
    return c, (f"--inputs crops: every image (and video frame) is taken as a face crop and resized to {c.size} px; "
               f"the model was trained on {contract.describe().split(';')[0]}: crops framed otherwise score "
               "differently")


# ----------------------------------------------------------------------------------------------- predictor
@dataclass
class _Pending:
    index: int
    kind: str
    numbers: np.ndarray
    images: list[np.ndarray]
    result: FileResult
    probs: list[float] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)  # per scored input (crop or clip): its frame number
    tracks: list[int] = field(default_factory=list)  # and its face id


class Predictor:
    """Faces -> probabilities -> one row per file, with a bundle's crop contract and thresholds.

    Args:
        bundle: the loaded model and its preprocess.json.
        frames: frames per video (default: the contract's).
        batch_size: crops (clips) per model call; frames of several images are detected together.
        device: torch device for MTCNN and the model.
        inputs: ``auto`` (as the model was trained: frames, or face crops for crop-trained models), ``frames``
            (detect and crop) or ``crops`` (inputs are face crops).
        save_crops: folder to write every scored crop to (``<folder>/<file path>/<frame:06d>.png``; the extra
            faces of a frame as ``<frame:06d>_<track>.png``).
        detect_batch: frames per MTCNN call (dfd-extract's default, so both see identical batches).
        video_score: the video-score rule (default: the bundle's ``video_score``).
    """

    def __init__(self, bundle: Bundle, frames: int | None = None, batch_size: int = 32, device: str = "cpu",
                 inputs: str = "auto", save_crops: str | Path | None = None, detect_batch: int = DETECT_BATCH,
                 video_score: str | None = None) -> None:
        self.bundle = bundle.to(device)
        contract = bundle.contract if frames is None else bundle.contract.replace(frames=int(frames))
        if contract.frames <= 0:
            raise PredictError(f"--frames must be positive, got {contract.frames}")
        self.contract, self.notice = resolve_inputs(inputs, contract)
        self.device = device
        if self.contract.decoder == "nvdec" and nvdec_problem(device):
            # Trained on NVDEC-decoded frames; decord's colour conversion may differ by a grey level or two.
            self.contract = self.contract.replace(decoder="cpu")
            self.notice = " ".join(filter(None, [self.notice, "the training crops' videos were decoded by NVDEC, "
                                                 f"which cannot run here ({nvdec_problem(device)}): decoding on the "
                                                 "CPU (colours may differ by a grey level or two)"]))
        self.batch_size = max(1, int(batch_size))
        needs_detector = self.contract.inputs == "frames" or bundle.needs_landmarks
        self.detector = FaceDetector(self.contract, batch_size=detect_batch, device=device) if needs_detector else None
        self.save_crops = Path(save_crops) if save_crops else None
        self.video_score = check_video_score(video_score or bundle.video_score, "--video-score")

    def predict(self, paths: Sequence[str], progress: bool = True) -> list[FileResult]:
        """One result per path, in input order."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        results: list[FileResult] = [FileResult(str(p), inputs=self.contract.inputs) for p in paths]
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
                kind, numbers, images = read_media(path, self.contract.frames, self.contract.decoder, self.device)
            except MediaError as e:
                # dfd.store.media's "missing" hint speaks of dataset roots; here the path came from the user.
                detail = "file not found" if isinstance(e, MissingMedia) else e.detail
                res.status, res.reason = "unreadable", f"{e.reason}: {detail}"
                yield [_Pending(i, "", np.zeros(0, np.int64), [], res)]
                continue
            except Exception as e:  # a decoder crash on one odd file must not end a run over thousands
                res.status, res.reason = "unreadable", f"{type(e).__name__}: {str(e).strip()[:200]}"
                yield [_Pending(i, "", np.zeros(0, np.int64), [], res)]
                continue
            res.frames = len(images)
            level = "video" if kind == "video" else "frame"
            res.threshold_level, res.threshold = level, self.bundle.thresholds[level]
            chunk.append(_Pending(i, kind, numbers, images, res))
            n += len(images)
            if n >= self.batch_size:
                yield chunk
                chunk, n = [], 0
        if chunk:
            yield chunk

    def _faces(self, todo: list[_Pending]) -> list[tuple[list[np.ndarray], list[np.ndarray], list[int], list[int]]]:
        """(crops, landmarks in crop pixels, frame numbers, track ids) per file, by the one extraction path.

        Each video is one ``crop_faces`` call (its own detection scale, its faces tracked), exactly as
        dfd-extract makes it; the images of a chunk are detected together (batched; independent frames, no
        per-video scale), as dfd-extract treats an image.
        """
        out: list = [None] * len(todo)
        lm = self.bundle.needs_landmarks
        images = [k for k, p in enumerate(todo) if p.kind != "video"]
        for k, p in enumerate(todo):
            if p.kind == "video":
                f = crop_faces(p.images, self.contract, self.detector, video=True, landmarks=lm)
                out[k] = (f.crops, f.landmarks, [int(p.numbers[i]) for i in f.keep], f.tracks)
        if images:
            f = crop_faces([todo[k].images[0] for k in images], self.contract, self.detector, video=False, landmarks=lm)
            for k in images:
                out[k] = ([], [], [], [])
            for j, i in enumerate(f.keep):  # several faces of one image with choice=all
                crops, marks, numbers, tracks = out[images[i]]
                crops.append(f.crops[j])
                marks.append(f.landmarks[j])
                numbers.append(0)
                tracks.append(f.tracks[j])
        return out

    def _save(self, p: _Pending, crops: list[np.ndarray], numbers: list[int], tracks: list[int]) -> None:
        folder = self.save_crops / safe_relpath(Path(p.result.path).as_posix().lstrip("/"))
        folder.mkdir(parents=True, exist_ok=True)
        for crop, number, track in zip(crops, numbers, tracks, strict=True):
            cv2.imwrite(str(folder / f"{crop_stem(number, track)}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))

    def _score(self, chunk: list[_Pending]) -> None:
        """Detect, crop, run the model and fill each file's result."""
        todo = [p for p in chunk if p.images]
        if not todo:
            return
        inputs, lms, owners = [], [], []
        size = self.contract.size
        for p, (crops, marks, numbers, tracks) in zip(todo, self._faces(todo), strict=True):
            p.images = []  # free the frames: only crops are needed from here on
            p.result.faces = len(crops)
            if not crops:
                p.result.status = "no_face"
                p.result.reason = f"no face with score >= {self.contract.min_score} in {p.result.frames} frame(s)"
                continue
            if self.save_crops is not None:
                self._save(p, crops, numbers, tracks)
            x = self.bundle.preprocess(crops)
            lm = torch.from_numpy(np.stack([self.bundle.scale_landmarks(m, size) for m in marks]))
            if self.bundle.clip_len:
                # One clip per file, of its main face (track 0, as training clips): clip_len of its crops by the
                # same uniform rule as training clips (repeated when fewer).
                main = np.flatnonzero(np.asarray(tracks) == min(tracks))
                pos = torch.from_numpy(main[uniform_positions(len(main), self.bundle.clip_len)])
                x, lm = x[pos][None], lm[pos][None]
                p.frames.append(numbers[int(pos[0])])
                p.tracks.append(tracks[int(pos[0])])
            else:
                p.frames += numbers
                p.tracks += tracks
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
                # The rule evaluation applies (dfd.engine.video_score): same crops, same number.
                s = score(torch.tensor(p.probs, dtype=torch.float32), torch.zeros(len(p.probs), dtype=torch.long),
                          torch.tensor(p.frames), torch.tensor(p.tracks), self.video_score)
                p.result.prob_fake = float(s.video_prob[0])
                p.result.label = int(p.result.prob_fake >= p.result.threshold)


def write_csv(results: Sequence[FileResult], path: str | Path) -> Path:
    """predictions.csv: ``COLUMNS`` (a contract, in this order), then ``EXTRA_COLUMNS``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow((*COLUMNS, *EXTRA_COLUMNS))
        w.writerows(r.row() for r in results)
    return out
