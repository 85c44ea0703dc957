"""Batched MTCNN face detection as the crop contract says: detection size, the per-video scale fitted to the
video's face, the full-resolution fallback, and IEEE fp32 on CUDA (boxes as on the CPU).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import cv2
import numpy as np

from dfd.faces.boxes import Detections, empty_detections, largest_side, within_size
from dfd.faces.contract import CropContract
from dfd.faces.track import choose_face

# Frames per MTCNN call unless a caller says otherwise (extraction and predict share it: same batches, same
# floating-point results).
DETECT_BATCH = 16


def mtcnn_detect(mtcnn, batch: np.ndarray) -> tuple:
    """``mtcnn.detect(batch, landmarks=True)``; on CUDA with IEEE fp32 arithmetic, as on the CPU.

    MTCNN's cascade (thresholds, NMS, boxes rounded to pixels before the next stage) turns small float
    differences into other boxes. On the CPU, rounding its convolution and linear inputs and weights to TF32 (what
    cuDNN does to fp32 convolutions by default on Ampere and later) moved boxes about as much as the H200 did against
    the CPU (16 videos: 87 % of frames at IoU >= 0.95, min 0.85), while CPU kernels that differ in summation
    order only (oneDNN on/off, 1 or 2 threads) changed no box. Turning TF32 off alone did not help on the H200,
    and cuDNN may also choose Winograd or FFT algorithms of similar rounding, so cuDNN is bypassed: PyTorch's own
    convolution (im2col + an IEEE fp32 GEMM). MTCNN's layers are small; detection was not the GPU path's
    bottleneck (busy 16-20 % of the run).
    """
    import torch

    if torch.device(getattr(mtcnn, "device", "cpu")).type != "cuda":
        return mtcnn.detect(batch, landmarks=True)
    matmul = torch.backends.cuda.matmul
    tf32 = matmul.allow_tf32
    matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=False):
            return mtcnn.detect(batch, landmarks=True)
    finally:
        matmul.allow_tf32 = tf32


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
        self.scale_steps = c.scale_steps
        self.probes = c.probes
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
        out: list[Detections] = [empty_detections() for _ in images]
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, img in enumerate(images):
            by_shape[img.shape].append(i)
        for shape, idx in by_shape.items():
            fixed = self._base_scale(shape) if scale is None else scale
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                batch = np.stack([_rescale(images[i], fixed) for i in chunk])
                boxes, probs, points = mtcnn_detect(self.mtcnn, batch)
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

        MTCNN's cost grows with the pixels it scans. Deepfake videos film one prominent face of stable size, so
        a few probe detections (``probes`` frames spread over the video, at ``detect_size``) tell how far the
        other frames can shrink for the face to stay about ``face_px`` pixels tall: the median of the probes'
        largest face sides sets the scale, rounded by :func:`video_scale`. The median keeps one odd probe (a
        turned head, a box that float noise moved) from setting the video's scale. A frame where no face the
        contract keeps (``min_score``) is found at that scale is detected again at ``detect_size``, then at full
        resolution (``full_res_fallback``): the shortcut saves time, never frames. ``face_px=0`` disables the
        per-video scale (frames are then detected at ``detect_size``, with the same fallback).
        """
        face_px = self.face_px if face_px is None else face_px
        if not face_px or len(images) < 3 or len({img.shape for img in images}) != 1:
            return self.detect_frames(images)
        n = len(images)
        picks = probe_positions(n, self.probes, self.contract.probe_spacing)
        out: list[Detections | None] = [None] * n
        for i, d in zip(picks, self.detect([images[i] for i in picks]), strict=True):
            out[i] = d
        others = [i for i in range(n) if out[i] is None]
        sides = [largest_side(out[i]) for i in picks if self.found(out[i])]
        base = scale = self._base_scale(images[0].shape)
        if sides:
            side = float(np.median(sides))
            scale = min(base, video_scale(face_px / side, self.scale_steps))
        if scale >= base * self.contract.scale_cutoff:  # no face to fit, or no real saving
            for i, d in zip(others, self.detect([images[i] for i in others]), strict=True):
                out[i] = d
            return self._fallback(images, out)
        # At a coarse scale MTCNN can take a whole head-and-shoulders for a giant face; a face does not grow
        # max_face_growth x between frames of one video, so such boxes are dropped (and the frame re-detected if
        # emptied).
        limit = self.contract.max_face_growth * side
        for i, d in zip(others, self.detect([images[i] for i in others], scale=scale), strict=True):
            out[i] = within_size(d, limit)
        missing = [i for i in others if not self.found(out[i])]
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


def probe_positions(n: int, probes: int, spacing: str = CropContract.probe_spacing) -> list[int]:
    """The frames (of ``n`` sampled) whose faces set a video's detection scale: ``even`` = frame
    ``(k + 1) * n // (probes + 1)`` for k < probes (one probe: the middle frame)."""
    if spacing != "even":
        raise ValueError(f"probe spacing {spacing!r} is not one of ('even',)")
    return sorted({(k + 1) * n // (probes + 1) for k in range(probes)})


def video_scale(scale: float, steps: int) -> float:
    """``scale`` rounded to the nearest power of two in steps of 1/``steps`` octave (``steps=0``: as it is).

    The probe box that sets a video's scale carries float noise (CUDA against CPU kernels, batch composition);
    unrounded, a 0.2 % change of scale moves the frames' size by a pixel and MTCNN's boxes by up to 17 % IoU.
    """
    if steps <= 0 or scale <= 0:
        return scale
    return float(2.0 ** (round(np.log2(scale) * steps) / steps))


def _rescale(img: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return img
    h, w = img.shape[:2]
    return cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def _as_detections(boxes, probs, points, scale: float) -> Detections:
    # MTCNN returns None / [None] for an image without faces and object-dtype arrays otherwise.
    if boxes is None or len(boxes) == 0:
        return empty_detections(scale)
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / scale
    p = np.asarray(probs, dtype=np.float32).reshape(-1)
    lm = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2) / scale
    return Detections(b, p, lm, scale)


