"""Batched MTCNN face detection, choosing one face per frame, and square face crops with their landmarks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

CHOICES = ("largest", "confident")


@dataclass
class Detections:
    """Faces found in one image: boxes (k, 4) x1 y1 x2 y2, probs (k,), landmarks (k, 5, 2); all float32."""

    boxes: np.ndarray
    probs: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


def _empty() -> Detections:
    return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


class FaceDetector:
    """facenet-pytorch's MTCNN (all faces kept), run on batches of same-size frames.

    Args:
        min_face_size: smallest face searched for, in detection pixels; larger is faster (shorter pyramid).
        thresholds: MTCNN's three stage thresholds.
        batch_size: frames per MTCNN call; frames of different sizes are batched separately (MTCNN needs
            equal sizes in a batch).
        detect_size: frames whose longer side exceeds this are downscaled for detection only (boxes are
            mapped back to source pixels); ``None`` detects at full resolution.
        device: torch device for MTCNN.
    """

    def __init__(
        self,
        min_face_size: int = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        batch_size: int = 16,
        detect_size: int | None = None,
        device: str = "cpu",
    ) -> None:
        from facenet_pytorch import MTCNN

        self.mtcnn = MTCNN(
            keep_all=True,
            min_face_size=min_face_size,
            thresholds=list(thresholds),
            select_largest=False,
            post_process=False,
            device=device,
        )
        self.batch_size = max(1, int(batch_size))
        self.detect_size = detect_size

    def detect(self, images: Sequence[np.ndarray], scale: float | None = None) -> list[Detections]:
        """Detect every face in each RGB uint8 image; one ``Detections`` per image, in input order.

        ``scale`` fixes the detection scale (else frames are fitted into ``detect_size``).
        """
        out: list[Detections] = [_empty() for _ in images]
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, img in enumerate(images):
            by_shape[img.shape].append(i)
        for shape, idx in by_shape.items():
            fixed = scale
            if fixed is None:
                fixed = 1.0
                if self.detect_size and max(shape[:2]) > self.detect_size:
                    fixed = self.detect_size / max(shape[:2])
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                batch = np.stack([_rescale(images[i], fixed) for i in chunk])
                boxes, probs, points = self.mtcnn.detect(batch, landmarks=True)
                for j, i in enumerate(chunk):
                    out[i] = _as_detections(boxes[j], probs[j], points[j], fixed)
        return out

    def detect_video(self, images: Sequence[np.ndarray], face_px: int = 0) -> list[Detections]:
        """Detect in the frames of one video at a scale fitted to that video's face.

        MTCNN's cost grows with the pixels it scans. Deepfake videos film one prominent face of stable size,
        so one probe detection (middle frame, at ``detect_size``) tells how far the frames can shrink for the
        face to stay about ``face_px`` pixels tall; frames where nothing is found at that scale are detected
        again at the normal scale, so faces are never lost to the shortcut. ``face_px=0`` disables it.
        """
        if not face_px or len(images) < 3 or len({img.shape for img in images}) != 1:
            return self.detect(images)
        mid = len(images) // 2
        probe = self.detect([images[mid]])[0]
        if len(probe) == 0:
            return self.detect(images)
        sides = np.maximum(probe.boxes[:, 2] - probe.boxes[:, 0], probe.boxes[:, 3] - probe.boxes[:, 1])
        h, w = images[0].shape[:2]
        base = min(1.0, self.detect_size / max(h, w)) if self.detect_size else 1.0
        scale = min(base, face_px / float(sides.max()))
        if scale >= base * 0.9:  # no real saving
            rest = self.detect([img for i, img in enumerate(images) if i != mid])
            return rest[:mid] + [probe] + rest[mid:]
        out = self.detect([img for i, img in enumerate(images) if i != mid], scale=scale)
        # At a coarse scale MTCNN can take a whole head-and-shoulders for a giant face; a face does not grow
        # 2.5x between frames of one video, so such boxes are dropped (and the frame re-detected if emptied).
        out = [_within_size(d, 2.5 * float(sides.max())) for d in out]
        out = out[:mid] + [probe] + out[mid:]
        missing = [i for i, d in enumerate(out) if len(d) == 0]
        if missing:
            for i, d in zip(missing, self.detect([images[i] for i in missing]), strict=True):
                out[i] = d
        return out


def _within_size(det: Detections, max_side: float) -> Detections:
    """The detections whose box side is at most ``max_side``."""
    if len(det) == 0:
        return det
    side = np.maximum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])
    keep = side <= max_side
    return det if keep.all() else Detections(det.boxes[keep], det.probs[keep], det.landmarks[keep])


def _rescale(img: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return img
    h, w = img.shape[:2]
    return cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def _as_detections(boxes, probs, points, scale: float) -> Detections:
    # MTCNN returns None / [None] for an image without faces and object-dtype arrays otherwise.
    if boxes is None or len(boxes) == 0:
        return _empty()
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / scale
    p = np.asarray(probs, dtype=np.float32).reshape(-1)
    lm = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2) / scale
    return Detections(b, p, lm)


def choose_face(det: Detections, choice: str = "largest", min_score: float = 0.9) -> int | None:
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


def crop_box(box: np.ndarray, margin: float = 1.3) -> tuple[int, int, int]:
    """The square crop region around a face box: ``(x0, y0, side)`` in source pixels, enlarged by margin."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(int(round(max(x2 - x1, y2 - y1) * margin)), 1)
    x0 = int(round((x1 + x2) / 2 - side / 2))
    y0 = int(round((y1 + y2) / 2 - side / 2))
    return x0, y0, side


def crop_face(
    image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None = None, margin: float = 1.3, size: int = 320
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
