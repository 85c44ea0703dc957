"""Frames -> face crops: the one path ``dfd-extract`` and ``dfd-predict`` share.

:func:`crop_faces` is detection (:class:`~dfd.faces.detect.FaceDetector`) followed by
:func:`faces_from_detections` (face choice, tracking, crop), which a scheduler that detects elsewhere (batched
across videos on a GPU, :mod:`dfd.extract.pipeline`) calls on its own detections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dfd.faces.boxes import Detections
from dfd.faces.contract import CropContract
from dfd.faces.detect import FaceDetector
from dfd.faces.geometry import align_face, crop_face, frame_to_crop, resize_crop
from dfd.faces.track import choose_face, choose_faces, track_faces


@dataclass
class FaceCrops:
    """The faces :func:`crop_faces` kept from a list of frames, one entry per crop, in (frame, track) order.

    ``keep`` indexes the input frame of each crop (repeated when a frame gave several faces, ``choice=all``);
    ``tracks`` is each crop's face id within the video (always 0 with one face per frame); ``crops``,
    ``landmarks`` (5 points in crop pixels, NaN unknown), ``boxes`` (source pixels), ``scores`` and
    ``matrices`` (each crop's 2 x 3 frame -> crop affine, :func:`~dfd.faces.geometry.frame_to_crop`) follow it.
    ``full_res`` counts kept frames whose faces only the full-resolution fallback found; ``near`` the kept frames
    whose faces the search near a neighbouring frame's face found (the rest were searched whole).
    """

    keep: list[int] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    tracks: list[int] = field(default_factory=list)
    matrices: list[np.ndarray] = field(default_factory=list)
    full_res: int = 0
    near: int = 0

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
            out.crops.append(resize_crop(img, contract.size, contract.interpolation))
            out.boxes.append(np.array([0, 0, img.shape[1], img.shape[0]], np.float32))
            out.scores.append(1.0)
            out.tracks.append(0)
            out.landmarks.append(nan)
            out.matrices.append(frame_to_crop(None, None, contract, (img.shape[1], img.shape[0])))
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
        tracks = (track_faces(boxes, contract.track_max_shift, contract.track_max_scale) if video
                  else [np.arange(len(ks)) for ks in chosen])
    else:
        tracks = [np.zeros(len(ks), np.int64) for ks in chosen]
    for i, (det, ks, ts) in enumerate(zip(dets, chosen, tracks, strict=True)):
        for k, t in sorted(zip(ks, ts, strict=True), key=lambda kt: kt[1]):
            if contract.align == "arcface":
                crop, lm = align_face(images[i], det.landmarks[k], contract.margin, contract.size,
                                     contract.interpolation)
            else:
                crop, lm = crop_face(images[i], det.boxes[k], det.landmarks[k], contract.margin, contract.size,
                                    contract.interpolation)
            out.keep.append(i)
            out.crops.append(crop)
            out.landmarks.append(lm)
            out.boxes.append(det.boxes[k])
            out.scores.append(float(det.probs[k]))
            out.tracks.append(int(t))
            out.matrices.append(frame_to_crop(det.boxes[k], det.landmarks[k], contract))
        out.full_res += int(det.fallback and len(ks) > 0)
        out.near += int(det.near and len(ks) > 0)
    return out
