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
from dfd.faces.windowed import detect_in_windows

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
        #: Frames of videos with a per-video scale: ``near`` = found by the search near a neighbour's face,
        #: ``whole`` = searched whole at the video's scale (summary figures; tests check which search ran).
        self.searched = {"near": 0, "whole": 0}

    def found(self, det: Detections) -> bool:
        """Whether a face the contract would keep is among the detections."""
        return choose_face(det, self.contract.choice, self.contract.min_score) is not None

    def _base_scale(self, shape: tuple[int, ...]) -> float:
        if self.detect_size and max(shape[:2]) > self.detect_size:
            return self.detect_size / max(shape[:2])
        return 1.0

    def detect(self, images: Sequence[np.ndarray], scale: float | None = None,
               shrunk: dict[int, np.ndarray] | None = None) -> list[Detections]:
        """Detect every face in each RGB uint8 image, once, at one scale; one ``Detections`` per image.

        ``scale`` fixes the detection scale (else frames are fitted into ``detect_size``). No fallback: see
        :meth:`detect_frames` and :meth:`detect_video`. ``shrunk``: frames already resized to ``scale``, by
        ``id`` of the image (reused, and filled with the frames this call shrinks).
        """
        out: list[Detections] = [empty_detections() for _ in images]
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, img in enumerate(images):
            by_shape[img.shape].append(i)
        for shape, idx in by_shape.items():
            fixed = self._base_scale(shape) if scale is None else scale
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                batch = np.stack([_shrunk(images[i], fixed, shrunk) for i in chunk])
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
        small: dict[int, np.ndarray] = {}  # frames at the video's scale, shrunk once for both searches
        if self.contract.search_roi:
            self._search_near(images, out, small, scale, limit)
        whole = [i for i in others if out[i] is None]
        self.searched["near"] += len(others) - len(whole)
        self.searched["whole"] += len(whole)
        for i, d in zip(whole, self.detect([images[i] for i in whole], scale=scale, shrunk=small), strict=True):
            out[i] = within_size(d, limit)
        missing = [i for i in others if not self.found(out[i])]
        if missing:
            for i, d in zip(missing, self.detect([images[i] for i in missing]), strict=True):
                if len(d) or not len(out[i]):
                    out[i] = d
        return self._fallback(images, out)

    def _search_near(self, images: Sequence[np.ndarray], out: list[Detections | None], small: dict[int, np.ndarray],
                     scale: float, limit: float) -> None:
        """Fill ``out`` for the frames whose face is found near the face of a neighbouring sampled frame.

        Round one searches every frame in a ``search_roi`` x face-side square around the face of the nearest
        probe with a face (the earlier on a tie); round two searches the frames round one missed around the
        nearest frame found by then. A round's regions go to MTCNN together (one region size per contract, so a
        GPU batches them across videos too). A frame whose region yields no face the contract keeps (or only
        faces that reach past its edge) in both rounds is left to the whole-frame search (``out[i]`` stays
        None); so are scene cuts and, with ``choice=all``, every ``roi_recheck``-th frame (a newcomer's face
        must be seen).
        """
        c = self.contract
        n = len(images)
        side = roi_side(c)
        h, w = (round(images[0].shape[0] * scale), round(images[0].shape[1] * scale))
        if side >= min(h, w):
            return  # the region would be the whole frame: no saving
        whole: set[int] = set()  # frames searched whole whatever their neighbours hold
        if c.choice == "all":
            whole.update(i for i in range(n) if i % c.roi_recheck == 0 and out[i] is None)
        thumbs: dict[int, np.ndarray] = {}
        for _ in range(2):  # seeded by the probes, then by the nearest frame the first round found a face in
            seeds = [j for j in range(n) if out[j] is not None and self.found(out[j])]
            todo: list[tuple[int, int]] = []  # (frame, nearest frame with a face: its face seeds the region)
            for i in range(n):
                if out[i] is not None or i in whole or not seeds:
                    continue
                j = min(seeds, key=lambda s: (abs(s - i), s > i))  # the nearest, the earlier on a tie
                seed = _seed_box(out[j], c) * scale
                # Faces spread wider than the window leaves a face side of room around them (several people,
                # choice=all) cannot all be searched in it.
                wide = max(seed[2] - seed[0], seed[3] - seed[1]) > side - 2 * c.face_px
                if wide or _cut(images, i, j, thumbs, c.scene_cut):
                    whole.add(i)
                else:
                    todo.append((i, j))
            if not todo:
                return
            frames = [_shrunk(images[i], scale, small) for i, _ in todo]
            windows = [_region(_seed_box(out[j], c) * scale, side, frames[0].shape) for _, j in todo]
            for start in range(0, len(todo), self.batch_size):
                chunk = range(start, min(start + self.batch_size, len(todo)))
                boxes, probs, points = windows_detect(self.mtcnn, np.stack([frames[k] for k in chunk]),
                                                      [windows[k] for k in chunk], side)
                for b, p, lm, k in zip(boxes, probs, points, chunk, strict=True):
                    i = todo[k][0]
                    d = within_size(_in_window(b, p, lm, windows[k], side, frames[k].shape, scale), limit)
                    if self.found(d):
                        d.near = True
                        out[i] = d
                    elif abs(todo[k][1] - i) == 1:
                        whole.add(i)  # its neighbour's face did not find it: no nearer seed will

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


def roi_side(contract: CropContract) -> int:
    """The side, in detection pixels, of the region searched near the last face: ``search_roi`` face sides at
    the per-video scale, which makes faces about ``face_px`` (+4 %, the rounding of the scale) tall; a multiple
    of 8 and the same for every video of a contract, so regions of different videos batch together."""
    return int(np.ceil(contract.search_roi * contract.face_px * 1.04 / 8) * 8)


def _seed_box(det: Detections, contract: CropContract) -> np.ndarray:
    """The box a neighbour's detections centre the region on: its chosen face, or with ``choice=all`` the box
    around every face it keeps."""
    if contract.choice != "all":
        return det.boxes[choose_face(det, contract.choice, contract.min_score)]
    keep = det.boxes[det.probs >= contract.min_score]
    return np.array([keep[:, 0].min(), keep[:, 1].min(), keep[:, 2].max(), keep[:, 3].max()], np.float32)


def _region(box: np.ndarray, side: int, shape: tuple[int, ...]) -> tuple[int, int]:
    """Top-left corner of the ``side`` x ``side`` region centred on ``box``, moved inside the frame."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    return min(max(x0, 0), shape[1] - side), min(max(y0, 0), shape[0] - side)


def _in_window(boxes, probs, points, window: tuple[int, int], side: int, shape: tuple[int, ...],
               scale: float) -> Detections:
    """Detections of a window search in full-frame pixels, without the faces that reach past the window's edge
    (where it is not the frame's): their candidates may have been cut off, so the frame is searched whole."""
    d = _as_detections(boxes, probs, points, 1.0)
    if not len(d):
        return empty_detections(scale)
    x0, y0 = window
    b = d.boxes
    inside = np.ones(len(b), bool)
    if x0 > 0:
        inside &= b[:, 0] >= x0
    if y0 > 0:
        inside &= b[:, 1] >= y0
    if x0 + side < shape[1]:
        inside &= b[:, 2] <= x0 + side
    if y0 + side < shape[0]:
        inside &= b[:, 3] <= y0 + side
    return Detections(d.boxes[inside] / scale, d.probs[inside], d.landmarks[inside] / scale, scale)


def _cut(images: Sequence[np.ndarray], i: int, j: int, thumbs: dict[int, np.ndarray], threshold: float) -> bool:
    """Whether frames ``i`` and ``j`` differ like a scene cut: mean absolute difference of 32 x 32 grey
    thumbnails (0-1) above ``threshold``. A moving face over a steady background stays far below it."""
    for k in (i, j):
        if k not in thumbs:
            grey = cv2.cvtColor(images[k], cv2.COLOR_RGB2GRAY)
            thumbs[k] = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return float(np.abs(thumbs[i] - thumbs[j]).mean()) > threshold


def _shrunk(img: np.ndarray, scale: float, cache: dict[int, np.ndarray] | None) -> np.ndarray:
    """``img`` at ``scale``, shrunk once per call site's cache (keyed by the image's id)."""
    if cache is None:
        return _rescale(img, scale)
    key = id(img)
    if key not in cache:
        cache[key] = _rescale(img, scale)
    return cache[key]


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




def windows_detect(mtcnn, batch: np.ndarray, windows: list[tuple[int, int]], side: int) -> tuple:
    """:func:`dfd.faces.windowed.detect_in_windows` with :func:`mtcnn_detect`'s arithmetic on CUDA; a detector
    served elsewhere (the batched pipeline's proxy) is asked to do the same."""
    import torch

    if not hasattr(mtcnn, "pnet"):
        return mtcnn.detect_windows(batch, windows, side)
    if torch.device(getattr(mtcnn, "device", "cpu")).type != "cuda":
        return detect_in_windows(mtcnn, batch, windows, side)
    matmul = torch.backends.cuda.matmul
    tf32 = matmul.allow_tf32
    matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=False):
            return detect_in_windows(mtcnn, batch, windows, side)
    finally:
        matmul.allow_tf32 = tf32
