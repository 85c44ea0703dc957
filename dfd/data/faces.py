"""Batched MTCNN face detection, choosing faces per frame (one, or all of them tracked), square or aligned crops.

:func:`crop_faces` is the one path from a video's sampled frames to its face crops: ``dfd-extract`` writes what
it returns into the cache and ``dfd-predict`` scores what it returns, with the same :class:`CropContract`. It is
detection (:class:`FaceDetector`) followed by :func:`faces_from_detections` (choice, tracking, crops), which a
scheduler that detects elsewhere (batched across videos on a GPU) calls on its detections.

Many faces per frame (``choice=all``): :func:`choose_faces` keeps every face the contract allows in a frame and
:func:`track_faces` links them across the video's sampled frames into tracks (track 0 = the main face).
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
        out: list[Detections] = [_empty() for _ in images]
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
        picks = sorted({(k + 1) * n // (self.probes + 1) for k in range(self.probes)})  # 1 probe: n // 2
        out: list[Detections | None] = [None] * n
        for i, d in zip(picks, self.detect([images[i] for i in picks]), strict=True):
            out[i] = d
        others = [i for i in range(n) if out[i] is None]
        sides = [_largest_side(out[i]) for i in picks if self.found(out[i])]
        base = scale = self._base_scale(images[0].shape)
        if sides:
            side = float(np.median(sides))
            scale = min(base, video_scale(face_px / side, self.scale_steps))
        if scale >= base * 0.9:  # no face to fit, or no real saving
            for i, d in zip(others, self.detect([images[i] for i in others]), strict=True):
                out[i] = d
            return self._fallback(images, out)
        # At a coarse scale MTCNN can take a whole head-and-shoulders for a giant face; a face does not grow
        # 2.5x between frames of one video, so such boxes are dropped (and the frame re-detected if emptied).
        limit = 2.5 * side
        for i, d in zip(others, self.detect([images[i] for i in others], scale=scale), strict=True):
            out[i] = _within_size(d, limit)
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


@dataclass
class FaceCrops:
    """The faces :func:`crop_faces` kept from a list of frames, one entry per crop, in (frame, track) order.

    ``keep`` indexes the input frame of each crop (repeated when a frame gave several faces, ``choice=all``);
    ``tracks`` is each crop's face id within the video (always 0 with one face per frame); ``crops``,
    ``landmarks`` (5 points in crop pixels, NaN unknown), ``boxes`` (source pixels) and ``scores`` follow it.
    ``full_res`` counts kept frames whose faces only the full-resolution fallback found.
    """

    keep: list[int] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    tracks: list[int] = field(default_factory=list)
    full_res: int = 0

    def __len__(self) -> int:
        return len(self.keep)

    @property
    def frames(self) -> int:
        """How many input frames gave at least one face."""
        return len(set(self.keep))


def crop_stem(frame: int, track: int = 0) -> str:
    """The file stem of one crop: ``<frame:06d>``, with ``_<track>`` for the extra faces of a frame (unique per
    (video, frame, track); single-face caches keep their plain frame names)."""
    return f"{int(frame):06d}" if not track else f"{int(frame):06d}_{int(track)}"


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
            out.tracks.append(0)
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
    return faces_from_detections(images, dets, contract, video=video)


def faces_from_detections(images: Sequence[np.ndarray], dets: Sequence[Detections], contract: CropContract,
                          video: bool = True) -> FaceCrops:
    """Detections of frames -> the crops the contract keeps: face choice, tracking (``choice=all``), crop.

    ``video``: the frames are one video's sampled frames, in temporal order (faces are tracked across them);
    False for unrelated images (each image's faces are numbered by area, 0 = the largest).
    """
    out = FaceCrops()
    chosen = [choose_faces(det, contract) for det in dets]
    if contract.choice == "all":
        boxes = [det.boxes[ks] for det, ks in zip(dets, chosen, strict=True)]
        tracks = track_faces(boxes) if video else [np.arange(len(ks)) for ks in chosen]
    else:
        tracks = [np.zeros(len(ks), np.int64) for ks in chosen]
    for i, (det, ks, ts) in enumerate(zip(dets, chosen, tracks, strict=True)):
        for k, t in sorted(zip(ks, ts, strict=True), key=lambda kt: kt[1]):
            if contract.align == "arcface":
                crop, lm = align_face(images[i], det.landmarks[k], contract.margin, contract.size)
            else:
                crop, lm = crop_face(images[i], det.boxes[k], det.landmarks[k], contract.margin, contract.size)
            out.keep.append(i)
            out.crops.append(crop)
            out.landmarks.append(lm)
            out.boxes.append(det.boxes[k])
            out.scores.append(float(det.probs[k]))
            out.tracks.append(int(t))
        out.full_res += int(det.fallback and len(ks) > 0)
    return out


def _largest_side(det: Detections) -> float:
    """The longer side of the largest box among the detections."""
    return float(np.maximum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1]).max())


def _within_size(det: Detections, max_side: float) -> Detections:
    """The detections whose box side is at most ``max_side``."""
    if len(det) == 0:
        return det
    side = np.maximum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])
    keep = side <= max_side
    return det if keep.all() else Detections(det.boxes[keep], det.probs[keep], det.landmarks[keep], det.scale)


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
        return _empty(scale)
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / scale
    p = np.asarray(probs, dtype=np.float32).reshape(-1)
    lm = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2) / scale
    return Detections(b, p, lm, scale)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of (k, 4) x1 y1 x2 y2 boxes."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def choose_face(det: Detections, choice: str = CropContract.choice,
                min_score: float = CropContract.min_score) -> int | None:
    """Index of the face to keep (``largest`` area or most ``confident``) among those scoring >= min_score.

    ``all`` answers with the largest face (whether a frame has a face to keep at all: the detection fallbacks).
    """
    if choice not in CHOICES:
        raise ValueError(f"face choice {choice!r} is not one of {CHOICES}; set extract.choice accordingly")
    ok = np.flatnonzero(det.probs >= min_score)
    if ok.size == 0:
        return None
    key = det.probs[ok] if choice == "confident" else box_area(det.boxes[ok])
    return int(ok[np.argmax(key)])


def choose_faces(det: Detections, contract: CropContract) -> list[int]:
    """Indices of the faces a frame's crops come from: the one face of ``largest``/``confident``, or with
    ``all`` every face scoring >= min_score whose area is >= ``min_face_ratio`` x the largest's, largest first."""
    if contract.choice != "all":
        k = choose_face(det, contract.choice, contract.min_score)
        return [] if k is None else [k]
    ok = np.flatnonzero(det.probs >= contract.min_score)
    if ok.size == 0:
        return []
    area = box_area(det.boxes[ok])
    order = np.argsort(-area, kind="stable")
    keep = order[area[order] >= contract.min_face_ratio * area[order[0]]]
    return [int(k) for k in ok[keep]]


#: Tracking gates between a track's last box and a face in a later sampled frame: the centre may move at most
#: this many face sides, and the face side may change by at most this factor. Sampled frames are ~0.3 s apart
#: (32 of a 10 s clip), so these are wide: people talk and turn; they do not swap places within a third of a
#: second, and two faces of one frame are never merged (one face per track per frame).
TRACK_MAX_SHIFT = 1.0
TRACK_MAX_SCALE = 1.6


def track_faces(boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Track ids for the faces of a video's sampled frames (``boxes[i]``: (k_i, 4) boxes of frame i, in order).

    Greedy association, frame by frame, of each face with the track whose last box is nearest (cost: centre
    shift in face sides + 1 - IoU), within :data:`TRACK_MAX_SHIFT` and :data:`TRACK_MAX_SCALE`. A track left
    unmatched in a frame (occlusion, a missed detection, a face leaving) stays open and takes a face near its
    last box later; a face matching no track starts a new one. Ids are then renumbered by summed box area,
    largest first (ties: first seen), so track 0 is the video's main face and ids are dense.

    Why not a tracking library (SORT/ByteTrack via norfair, motpy, boxmot): they predict motion with Kalman
    filters tuned for consecutive frames, which frames a third of a second apart defeat, and they would add a
    dependency to dfd-predict's torch-only install. A handful of faces needs no optimal assignment solver.
    """
    last: list[np.ndarray] = []  # per track: its latest box
    ids: list[np.ndarray] = []
    for frame in boxes:
        frame = np.asarray(frame, np.float64).reshape(-1, 4)
        assigned = np.full(len(frame), -1, np.int64)
        if len(frame) and last:
            prev = np.stack(last)
            cost = _track_cost(prev, frame)
            for flat in np.argsort(cost, axis=None, kind="stable"):
                t, d = divmod(int(flat), len(frame))
                if not np.isfinite(cost[t, d]):
                    break
                if assigned[d] < 0 and t not in assigned:
                    assigned[d] = t
        for d in range(len(frame)):
            if assigned[d] < 0:
                assigned[d] = len(last)
                last.append(frame[d])
            else:
                last[assigned[d]] = frame[d]
        ids.append(assigned)
    if not last:
        return ids
    area = np.zeros(len(last))
    first = np.full(len(last), len(boxes))
    for i, (frame, a) in enumerate(zip(boxes, ids, strict=True)):
        np.add.at(area, a, box_area(frame))
        first[a] = np.minimum(first[a], i)
    rank = np.lexsort((first, -area))  # largest summed area first, then first seen
    new = np.empty(len(last), np.int64)
    new[rank] = np.arange(len(last))
    return [new[a] for a in ids]


def _track_cost(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """(tracks, faces) association cost; inf where the gates forbid the pair."""
    side_p = np.sqrt(box_area(prev))[:, None]
    side_c = np.sqrt(box_area(cur))[None, :]
    cp = (prev[:, :2] + prev[:, 2:]) / 2
    cc = (cur[:, :2] + cur[:, 2:]) / 2
    shift = np.linalg.norm(cp[:, None, :] - cc[None, :, :], axis=-1) / np.maximum((side_p + side_c) / 2, 1e-6)
    scale = np.maximum(side_p, side_c) / np.maximum(np.minimum(side_p, side_c), 1e-6)
    lo = np.maximum(prev[:, None, :2], cur[None, :, :2])
    hi = np.minimum(prev[:, None, 2:], cur[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    iou = inter / np.maximum(box_area(prev)[:, None] + box_area(cur)[None, :] - inter, 1e-6)
    cost = shift + (1.0 - iou)
    cost[(shift > TRACK_MAX_SHIFT) | (scale > TRACK_MAX_SCALE)] = np.inf
    return cost


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
