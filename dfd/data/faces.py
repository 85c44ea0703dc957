"""Batched MTCNN face detection, choosing one face per frame, square or aligned face crops with landmarks.

:func:`crop_faces` is the one path from a video's sampled frames to its face crops: ``dfd-extract`` writes what
it returns into the cache and ``dfd-predict`` scores what it returns, with the same :class:`CropContract`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from dfd.data.contract import CHOICES, CropContract
from dfd.data.landmarks import apply_transform, arcface_template, similarity_transform

# Frames per MTCNN call unless a caller says otherwise (extraction and predict share it: same batches, same
# floating-point results).
DETECT_BATCH = 16


@dataclass
class Detections:
    """Faces found in one image: boxes (k, 4) x1 y1 x2 y2, probs (k,), landmarks (k, 5, 2); all float32.

    ``scale`` is the detection scale that produced them (1.0 = full resolution); ``fallback`` marks detections
    made by the full-resolution fallback after the reduced scale found no face.
    """

    boxes: np.ndarray
    probs: np.ndarray
    landmarks: np.ndarray
    scale: float = 1.0
    fallback: bool = False

    def __len__(self) -> int:
        return len(self.boxes)


def _empty(scale: float = 1.0) -> Detections:
    return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32), scale)


class FaceDetector:
    """facenet-pytorch's MTCNN (all faces kept) run as a :class:`CropContract` says, on batches of frames.

    Args:
        contract: detection settings (min face size, thresholds, min score, face choice, detection scale,
            per-video face size, full-resolution fallback); the contract's defaults when None.
        batch_size: frames per MTCNN call; frames of different sizes are batched separately.
        device: torch device for MTCNN.
        **overrides: contract fields to change (``FaceDetector(min_face_size=20, detect_size=None)``).
    """

    def __init__(self, contract: CropContract | None = None, batch_size: int = DETECT_BATCH, device: str = "cpu",
                 **overrides) -> None:
        from facenet_pytorch import MTCNN

        self.contract = (contract or CropContract()).replace(**overrides) if overrides else (contract or CropContract())
        c = self.contract
        self.mtcnn = MTCNN(
            keep_all=True,
            min_face_size=c.min_face_size,
            thresholds=list(c.thresholds),
            select_largest=False,
            post_process=False,
            device=device,
        )
        self.batch_size = max(1, int(batch_size))
        self.device = device
        self.detect_size = c.detect_size
        self.face_px = c.face_px
        self._crop_detector: FaceDetector | None = None

    def found(self, det: Detections) -> bool:
        """Whether a face the contract would keep is among the detections."""
        return choose_face(det, self.contract.choice, self.contract.min_score) is not None

    def _base_scale(self, shape: tuple[int, ...]) -> float:
        if self.detect_size and max(shape[:2]) > self.detect_size:
            return self.detect_size / max(shape[:2])
        return 1.0

    def detect(self, images: Sequence[np.ndarray], scale: float | None = None) -> list[Detections]:
        """Detect every face in each RGB uint8 image, once, at one scale; one ``Detections`` per image.

        ``scale`` fixes the detection scale (else frames are fitted into ``detect_size``). No fallback: see
        :meth:`detect_frames` and :meth:`detect_video`.
        """
        out: list[Detections] = [_empty() for _ in images]
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, img in enumerate(images):
            by_shape[img.shape].append(i)
        for shape, idx in by_shape.items():
            fixed = self._base_scale(shape) if scale is None else scale
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                batch = np.stack([_rescale(images[i], fixed) for i in chunk])
                boxes, probs, points = self.mtcnn.detect(batch, landmarks=True)
                for j, i in enumerate(chunk):
                    out[i] = _as_detections(boxes[j], probs[j], points[j], fixed)
        return out

    def detect_frames(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect in independent frames (images): at ``detect_size``, then the full-resolution fallback."""
        return self._fallback(images, self.detect(images))

    def _fallback(self, images: Sequence[np.ndarray], dets: list[Detections]) -> list[Detections]:
        """Frames without a face the contract keeps, detected below full resolution, get one full-res try."""
        if not self.contract.full_res_fallback:
            return dets
        redo = [i for i, d in enumerate(dets) if d.scale < 1.0 and not self.found(d)]
        if redo:
            for i, d in zip(redo, self.detect([images[i] for i in redo], scale=1.0), strict=True):
                if len(d):  # keep the reduced-scale result when full resolution finds nothing at all
                    d.fallback = True
                    dets[i] = d
        return dets

    def detect_video(self, images: Sequence[np.ndarray], face_px: int | None = None) -> list[Detections]:
        """Detect in the frames of one video at a scale fitted to that video's face.

        MTCNN's cost grows with the pixels it scans. Deepfake videos film one prominent face of stable size,
        so one probe detection (middle frame, at ``detect_size``) tells how far the frames can shrink for the
        face to stay about ``face_px`` pixels tall. A frame where no face the contract keeps (``min_score``)
        is found at that scale is detected again at ``detect_size``, then at full resolution
        (``full_res_fallback``): the shortcut saves time, never frames. ``face_px=0`` disables the per-video
        scale (frames are then detected at ``detect_size``, with the same fallback).
        """
        face_px = self.face_px if face_px is None else face_px
        if not face_px or len(images) < 3 or len({img.shape for img in images}) != 1:
            return self.detect_frames(images)
        mid = len(images) // 2
        probe = self.detect([images[mid]])[0]
        if not self.found(probe):
            rest = self.detect([img for i, img in enumerate(images) if i != mid])
            return self._fallback(images, rest[:mid] + [probe] + rest[mid:])
        sides = np.maximum(probe.boxes[:, 2] - probe.boxes[:, 0], probe.boxes[:, 3] - probe.boxes[:, 1])
        base = self._base_scale(images[0].shape)
        scale = min(base, face_px / float(sides.max()))
        others = [img for i, img in enumerate(images) if i != mid]
        if scale >= base * 0.9:  # no real saving
            rest = self.detect(others)
            return self._fallback(images, rest[:mid] + [probe] + rest[mid:])
        out = self.detect(others, scale=scale)
        # At a coarse scale MTCNN can take a whole head-and-shoulders for a giant face; a face does not grow
        # 2.5x between frames of one video, so such boxes are dropped (and the frame re-detected if emptied).
        out = [_within_size(d, 2.5 * float(sides.max())) for d in out]
        out = out[:mid] + [probe] + out[mid:]
        missing = [i for i, d in enumerate(out) if not self.found(d)]
        if missing:
            for i, d in zip(missing, self.detect([images[i] for i in missing]), strict=True):
                if len(d) or not len(out[i]):
                    out[i] = d
        return self._fallback(images, out)

    def for_crops(self) -> FaceDetector:
        """A detector for images that *are* face crops (landmarks of datasets shipped as crops): the face
        fills the image, so MTCNN's pyramid must reach faces as large as the image (a small min face) and a
        crop is small enough to detect on as it is."""
        if self._crop_detector is None:
            c = self.contract.replace(min_face_size=min(self.contract.min_face_size, 20), detect_size=None,
                                      face_px=0, full_res_fallback=False)
            self._crop_detector = FaceDetector(c, batch_size=self.batch_size, device=self.device)
        return self._crop_detector


@dataclass
class FaceCrops:
    """The faces :func:`crop_faces` kept from a list of frames.

    ``keep`` indexes the input frames that gave a face; ``crops``, ``landmarks`` (5 points in crop pixels, NaN
    unknown), ``boxes`` (source pixels) and ``scores`` follow it. ``full_res`` counts kept frames whose face
    only the full-resolution fallback found.
    """

    keep: list[int] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    full_res: int = 0

    def __len__(self) -> int:
        return len(self.keep)


def crop_faces(images: Sequence[np.ndarray], contract: CropContract, detector: FaceDetector | None,
               video: bool = True, landmarks: bool = True) -> FaceCrops:
    """Frames -> the face crops the contract defines: the one path shared by extraction and predict.

    ``video``: the frames are one video's (per-video detection scale); False for unrelated images.
    ``inputs=crops``: the frames already are face crops: resized to ``size``, kept whole; their 5 landmarks
    are found with MTCNN when ``landmarks`` and the contract's ``landmarks_for_crops`` ask for them.
    """
    out = FaceCrops()
    if contract.inputs == "crops":
        nan = np.full((5, 2), np.nan, np.float32)
        for i, img in enumerate(images):
            out.keep.append(i)
            out.crops.append(resize_crop(img, contract.size))
            out.boxes.append(np.array([0, 0, img.shape[1], img.shape[0]], np.float32))
            out.scores.append(1.0)
            out.landmarks.append(nan)
        if landmarks and contract.landmarks_for_crops and detector is not None and len(images):
            for i, det in enumerate(detector.for_crops().detect(images)):
                k = choose_face(det, contract.choice, contract.min_score)
                if k is not None:
                    h, w = images[i].shape[:2]
                    out.landmarks[i] = det.landmarks[k] * np.array([contract.size / w, contract.size / h], np.float32)
        return out
    if detector is None:
        raise ValueError("crop_faces needs a FaceDetector for inputs=frames")
    dets = detector.detect_video(images) if video else detector.detect_frames(images)
    for i, det in enumerate(dets):
        k = choose_face(det, contract.choice, contract.min_score)
        if k is None:
            continue
        if contract.align == "arcface":
            crop, lm = align_face(images[i], det.landmarks[k], contract.margin, contract.size)
        else:
            crop, lm = crop_face(images[i], det.boxes[k], det.landmarks[k], contract.margin, contract.size)
        out.keep.append(i)
        out.crops.append(crop)
        out.landmarks.append(lm)
        out.boxes.append(det.boxes[k])
        out.scores.append(float(det.probs[k]))
        out.full_res += int(det.fallback)
    return out


def _within_size(det: Detections, max_side: float) -> Detections:
    """The detections whose box side is at most ``max_side``."""
    if len(det) == 0:
        return det
    side = np.maximum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])
    keep = side <= max_side
    return det if keep.all() else Detections(det.boxes[keep], det.probs[keep], det.landmarks[keep], det.scale)


def _rescale(img: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return img
    h, w = img.shape[:2]
    return cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def _as_detections(boxes, probs, points, scale: float) -> Detections:
    # MTCNN returns None / [None] for an image without faces and object-dtype arrays otherwise.
    if boxes is None or len(boxes) == 0:
        return _empty(scale)
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / scale
    p = np.asarray(probs, dtype=np.float32).reshape(-1)
    lm = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2) / scale
    return Detections(b, p, lm, scale)


def choose_face(det: Detections, choice: str = CropContract.choice,
                min_score: float = CropContract.min_score) -> int | None:
    """Index of the face to keep (``largest`` area or most ``confident``) among those scoring >= min_score."""
    if choice not in CHOICES:
        raise ValueError(f"face choice {choice!r} is not one of {CHOICES}; set extract.choice accordingly")
    ok = np.flatnonzero(det.probs >= min_score)
    if ok.size == 0:
        return None
    if choice == "largest":
        b = det.boxes[ok]
        key = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    else:
        key = det.probs[ok]
    return int(ok[np.argmax(key)])


def crop_box(box: np.ndarray, margin: float = CropContract.margin) -> tuple[int, int, int]:
    """The square crop region around a face box: ``(x0, y0, side)`` in source pixels, enlarged by margin."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(int(round(max(x2 - x1, y2 - y1) * margin)), 1)
    x0 = int(round((x1 + x2) / 2 - side / 2))
    y0 = int(round((y1 + y2) / 2 - side / 2))
    return x0, y0, side


def crop_face(
    image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None = None, margin: float = CropContract.margin,
    size: int = CropContract.size,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a square ``size`` px crop around a face, black-padded past the frame, and map landmarks into it.

    Returns the crop (size x size x 3 uint8) and the landmarks in crop pixels as (5, 2) float32 (NaN when
    ``landmarks`` is None).
    """
    h, w = image.shape[:2]
    x0, y0, side = crop_box(box, margin)
    # Slice the part inside the frame, then pad what falls outside so the face stays centred.
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, w), min(y0 + side, h)
    if sx1 <= sx0 or sy1 <= sy0:
        raise ValueError(f"face box {np.asarray(box).tolist()} lies outside the {w}x{h} frame")
    region = image[sy0:sy1, sx0:sx1]
    pad = (sy0 - y0, y0 + side - sy1, sx0 - x0, x0 + side - sx1)
    if any(pad):
        region = cv2.copyMakeBorder(region, *pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    crop = cv2.resize(region, (size, size), interpolation=interp)
    if landmarks is None:
        lm = np.full((5, 2), np.nan, np.float32)
    else:
        lm = ((np.asarray(landmarks, np.float32) - np.array([x0, y0], np.float32)) * (size / side)).astype(
            np.float32
        )
    return crop, lm


def resize_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an already-cropped face to the cache's ``size`` (datasets distributed as crops)."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interp = cv2.INTER_AREA if max(h, w) > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def align_face(image: np.ndarray, landmarks: np.ndarray, scale: float = CropContract.margin,
               size: int = CropContract.size) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` px crop in which the 5 landmarks sit on the ArcFace template shrunk by ``scale``.

    The similarity transform is the least-squares fit of the landmarks onto the template (DeepfakeBench and
    GenD: scale 1.3, 256 px); pixels beyond the frame are black. Returns the crop and the landmarks mapped
    into it (float32, (5, 2)).
    """
    lm = np.asarray(landmarks, np.float32).reshape(5, 2)
    m = fit = similarity_transform(lm, arcface_template(size, scale))
    src = image
    zoom = float(np.hypot(m[0, 0], m[1, 0]))
    if zoom < 0.5:
        # warpAffine samples bilinearly: shrinking by more than 2x would alias. Pre-shrink with area averaging
        # to about twice the output scale, and fold that resize into the transform.
        f = min(1.0, 2.0 * zoom)
        h, w = image.shape[:2]
        src = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        fx, fy = src.shape[1] / w, src.shape[0] / h
        m = m @ np.diag([1.0 / fx, 1.0 / fy, 1.0])
    crop = cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))
    return crop, apply_transform(fit, lm)
