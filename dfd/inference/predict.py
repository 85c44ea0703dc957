"""Score images and videos with a bundle (or a checkpoint): the very preprocessing the training crops had.

The bundle's crop contract (dfd.faces.contract) drives everything: frames sampled per video by the same rule,
faces found by the same :func:`dfd.faces.crops.crop_faces` that ``dfd-extract`` runs (same detector settings,
per-video detection scale and full-resolution fallback, same face choice, same box or aligned crop), then
resized and normalised as in training. A file's probability comes from its faces' by the bundle's video-score
rule (``video_score``; dfd.engine.video_score, the function evaluation uses: by default the mean over frames of
the max over each frame's faces); videos are labelled with the video-level threshold, single images with the
image-level one (calibrated on the validation split's images; bundles exported before it: the frame-level one).
A file that cannot be decoded or shows
no face becomes a row with a status and a reason; it never stops the run.

Inputs are treated as ``dfd-extract`` treats the same files in a dataset: a video is one video; an image is
detected on its own (``kind=image``: one ``crop_faces`` call per image, the crop dfd-extract caches for it, pixel
for pixel); a folder of numbered frames found inside a folder given (:func:`dfd.sources.base.find_media`'s rule)
is one video (``kind=frames``: sampled, per-video detection scale, tracked, scored by the video threshold).

Faces are detected on the CPU by default, as training caches are extracted (``detect_device``); the model runs on
``device``. Detection on a GPU model without a PASS of ``gpu_checks.sh extract`` comes with a one-line warning
(:mod:`dfd.faces.gpu_passes`).

Models trained on face crops as a dataset ships them (WildDeepfake) take crops as they are (``inputs=crops``).

Imports nothing of the training stack (Lightning, Hydra, albumentations, timm): an organiser's server needs
torch, numpy, OpenCV, decord and facenet-pytorch only. ``explain`` (``--explain DIR``: Grad-CAM heatmaps,
:mod:`dfd.models.explain`) is the exception: TorchScript has no hooks, so it rebuilds the bundle's eager
network from its safetensors weights, which needs dfd's models, timm and grad-cam.
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
from dfd.faces.gpu_passes import detection_warning
from dfd.inference.bundle import Bundle, load_bundle
from dfd.sources.base import find_media
from dfd.store.cache import safe_relpath
from dfd.store.media import (
    MediaError,
    MissingMedia,
    media_kind,
    nvdec_problem,
    read_frames_folder,
    read_image,
    read_video,
)

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
    threshold_level: str = ""  # video (videos) | image (single images; frame: bundles before image thresholds)
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
    """Inputs to score, in a stable order: files as given, folders walked recursively, ``.txt`` lists read.

    Inside a folder given, a folder holding only numbered images (``0000.png``, ``17.jpg``...) is one input, a
    video's frames, as dfd-extract's folder datasets take it (:func:`dfd.sources.base.find_media`). Paths in a
    list file are taken relative to the list's folder when they exist there, else as written.
    """
    out: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += [str(path) for path, _ in find_media(p)]
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


def crops_root(paths: Sequence[str | Path]) -> str:
    """The folder ``--save-crops`` mirrors: the inputs' deepest common folder (``/data/videos/a.mp4`` and
    ``/data/videos/b/c.mp4`` save under ``DIR/a.mp4/`` and ``DIR/b/c.mp4/``)."""
    folders = [os.path.dirname(os.path.abspath(p)) for p in paths]
    return os.path.commonpath(folders) if folders else os.getcwd()


def read_media(path: str | Path, frames: int, decoder: str = "cpu", device: str = "cuda"
               ) -> tuple[str, np.ndarray, list[np.ndarray]]:
    """``(kind, frame numbers, RGB frames)`` of one input: ``frames`` uniformly spaced frames of a video (decoded by
    ``decoder``) or of a folder of frames (the contract's rule, as dfd-extract samples them), or the image itself."""
    p = Path(path)
    if p.is_dir():
        f = read_frames_folder(p, frames)
        return "frames", f.numbers, f.images
    kind = _kind(p)
    if kind == "video":
        f = read_video(p, frames, decoder=decoder, device=device)
        return "video", f.numbers, f.images
    if kind == "image":
        return "image", np.zeros(1, np.int64), [read_image(p)]
    # Unknown extension: try both decoders before giving up.
    try:
        return "image", np.zeros(1, np.int64), [read_image(p)]
    except MediaError:
        f = read_video(p, frames, decoder=decoder, device=device)
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


def resolve_device(device: str, option: str = "--device") -> str:
    """``auto`` -> cuda when a GPU is present, else cpu; explicit cuda without a GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        hint = "cpu (the default)" if option == "--detect-device" else "cpu or auto"
        raise PredictError(f"{option} {device} asked for, but torch sees no GPU; use {option} {hint}")
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
    explained: list = field(default_factory=list)  # --explain: (crop, frame image, frame->crop affine, stem) per map


class Predictor:
    """Faces -> probabilities -> one row per file, with a bundle's crop contract and thresholds.

    Args:
        bundle: the loaded model and its preprocess.json.
        frames: frames per video (default: the contract's).
        batch_size: crops (clips) per model call; frames of several images are detected together.
        device: torch device of the model.
        detect_device: torch device of MTCNN (``cpu`` by default: training caches are CPU-extracted; on a GPU
            model without a PASS record of ``gpu_checks.sh extract``, :attr:`detect_notice` says so).
        inputs: ``auto`` (as the model was trained: frames, or face crops for crop-trained models), ``frames``
            (detect and crop) or ``crops`` (inputs are face crops).
        save_crops: folder to write every scored crop to (``<folder>/<file path>/<frame:06d>.png``, the file's
            path relative to the inputs' common folder; the extra faces of a frame as ``<frame:06d>_<track>.png``).
        explain: folder to write Grad-CAM heatmaps to, per file ``<folder>/<file path>/``: ``<stem>.png`` (the
            crop with its heatmap), ``<stem>_frame.png`` (the heatmap laid back onto the frame) and ``cam.npz``
            (``maps`` (N,S,S) float32 in 0-1, clips (1,L,S,S); ``frames``, ``tracks``, ``probs``).
        detect_batch: frames per MTCNN call (dfd-extract's default, so both see identical batches).
        video_score: the video-score rule (default: the bundle's ``video_score``).
    """

    def __init__(self, bundle: Bundle, frames: int | None = None, batch_size: int = 32, device: str = "cpu",
                 inputs: str = "auto", save_crops: str | Path | None = None, detect_batch: int = DETECT_BATCH,
                 video_score: str | None = None, detect_device: str = "cpu",
                 explain: str | Path | None = None) -> None:
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
        self.detector = (FaceDetector(self.contract, batch_size=detect_batch, device=detect_device) if needs_detector
                         else None)
        self.detect_notice = detection_warning(detect_device) if needs_detector else None
        self.save_crops = Path(save_crops) if save_crops else None
        self._crop_root = os.getcwd()  # set per predict() call: the inputs' common folder
        self.video_score = check_video_score(video_score or bundle.video_score, "--video-score")
        self.explain = Path(explain) if explain else None
        self.explainer = None
        if self.explain is not None:
            from dfd.models.explain import Explainer

            self.explainer = Explainer(eager_model(self.bundle).to(device))

    def predict(self, paths: Sequence[str], progress: bool = True) -> list[FileResult]:
        """One result per path, in input order."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        results: list[FileResult] = [FileResult(str(p), inputs=self.contract.inputs) for p in paths]
        self._crop_root = crops_root(paths)
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
            level = self.bundle.image_level if kind == "image" else "video"  # a folder of frames is a video
            res.threshold_level, res.threshold = level, self.bundle.thresholds[level]
            chunk.append(_Pending(i, kind, numbers, images, res))
            n += len(images)
            if n >= self.batch_size:
                yield chunk
                chunk, n = [], 0
        if chunk:
            yield chunk

    def _faces(self, todo: list[_Pending]) -> list[tuple[list[np.ndarray], list[np.ndarray], list[int], list[int],
                                                         list[tuple[int, np.ndarray]]]]:
        """(crops, landmarks in crop pixels, frame numbers, track ids, (input frame, frame->crop affine)) per input,
        by the one extraction path.

        Each input is one ``crop_faces`` call, exactly as dfd-extract makes its crops: a video or a folder of
        frames with its own detection scale and tracked faces; an image on its own (MTCNN's floats depend on the
        batch an image shares, so images are never batched together: extraction detects each alone).
        """
        lm = self.bundle.needs_landmarks
        out = []
        for p in todo:
            f = crop_faces(p.images, self.contract, self.detector, video=True, landmarks=lm)
            out.append((f.crops, f.landmarks, [int(p.numbers[i]) for i in f.keep], f.tracks,
                        list(zip(f.keep, f.matrices, strict=True))))
        return out

    def _mirror(self, base: Path, p: _Pending) -> Path:
        """``base/<input path>``: the input's path relative to the inputs' common folder (--save-crops, --explain)."""
        rel = os.path.relpath(os.path.abspath(p.result.path), self._crop_root)
        return base / safe_relpath(Path(rel).as_posix())

    def _save(self, p: _Pending, crops: list[np.ndarray], numbers: list[int], tracks: list[int]) -> None:
        folder = self._mirror(self.save_crops, p)
        folder.mkdir(parents=True, exist_ok=True)
        for crop, number, track in zip(crops, numbers, tracks, strict=True):
            cv2.imwrite(str(folder / f"{crop_stem(number, track)}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))

    def _write_explained(self, p: _Pending, heat: np.ndarray) -> None:
        """One file's heatmaps ((N,S,S), a clip's (1,L,S,S)): crop and frame overlays, the raw maps (``cam.npz``)."""
        from dfd.models.explain import MAPS_FILE, frame_overlay, overlay, write_png

        folder = self._mirror(self.explain, p)
        per_crop = heat[0] if heat.ndim == 4 else heat  # a clip's (1,L,S,S) maps are one per frame
        for (crop, frame, matrix, stem), h in zip(p.explained, per_crop, strict=True):
            write_png(folder / f"{stem}.png", overlay(crop, h))
            write_png(folder / f"{stem}_frame.png", frame_overlay(frame, h, matrix, crop.shape[0]))
        np.savez(folder / MAPS_FILE, maps=heat, frames=np.asarray(p.frames, np.int64),
                 tracks=np.asarray(p.tracks, np.int64), probs=np.asarray(p.probs, np.float32))

    def _score(self, chunk: list[_Pending]) -> None:
        """Detect, crop, run the model and fill each file's result."""
        todo = [p for p in chunk if p.images]
        if not todo:
            return
        inputs, lms, owners = [], [], []
        size = self.contract.size
        for p, (crops, marks, numbers, tracks, where) in zip(todo, self._faces(todo), strict=True):
            frames, p.images = p.images, []  # free the frames: only crops are needed from here on
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
                keep = pos.tolist()
            else:
                p.frames += numbers
                p.tracks += tracks
                keep = list(range(len(crops)))
            if self.explainer is not None:
                p.explained = [(crops[i], frames[where[i][0]], where[i][1], crop_stem(numbers[i], tracks[i]))
                               for i in keep]
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
        if self.explainer is not None:
            maps = self.explainer(x_all, lm_all if self.bundle.needs_landmarks else None, self.batch_size)
            per_file: dict[int, list[np.ndarray]] = {}
            for p, heat in zip(owners, maps, strict=True):
                per_file.setdefault(id(p), []).append(heat)
            for p in todo:
                if id(p) in per_file:
                    self._write_explained(p, np.stack(per_file[id(p)]))
        for p in todo:
            if p.probs:
                # The rule evaluation applies (dfd.engine.video_score): same crops, same number.
                s = score(torch.tensor(p.probs, dtype=torch.float32), torch.zeros(len(p.probs), dtype=torch.long),
                          torch.tensor(p.frames), torch.tensor(p.tracks), self.video_score)
                p.result.prob_fake = float(s.video_prob[0])
                p.result.label = int(p.result.prob_fake >= p.result.threshold)


def eager_model(bundle: Bundle) -> torch.nn.Module:
    """The bundle's network as an eager module (hooks work): itself when built from a checkpoint, else rebuilt
    from the bundle's safetensors weights (TorchScript modules have no hooks)."""
    if not isinstance(bundle.model, torch.jit.ScriptModule):
        return bundle.model
    from dfd.inference.bundle import rebuild_from_safetensors

    if bundle.path is None:
        raise PredictError("--explain needs the bundle folder (its model.safetensors)")
    return rebuild_from_safetensors(bundle.path, bundle.config).eval()


def write_csv(results: Sequence[FileResult], path: str | Path) -> Path:
    """predictions.csv: ``COLUMNS`` (a contract, in this order), then ``EXTRA_COLUMNS``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow((*COLUMNS, *EXTRA_COLUMNS))
        w.writerows(r.row() for r in results)
    return out
