"""Cutting a face out of a frame: the square box crop (margin, black padding past the frame), the resize of
images that already are crops, and the ArcFace-aligned crop of DeepfakeBench and GenD.
"""

from __future__ import annotations

import cv2
import numpy as np

from dfd.faces.contract import CropContract
from dfd.faces.landmarks import apply_transform, arcface_template, similarity_transform

#: OpenCV resize filters by name: the crop contract's (``extract.interpolation``) and timm's input-spec names
#: (``bilinear``, ``bicubic``) both, the one table dfd resizes with (crops, training inputs, bundles).
RESIZE_FLAGS = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "bilinear": cv2.INTER_LINEAR,
                "cubic": cv2.INTER_CUBIC, "bicubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA,
                "lanczos": cv2.INTER_LANCZOS4}


def resize_flag(interpolation: str, shrinking: bool) -> int:
    """The OpenCV flag of a filter name; ``auto``: area averaging when shrinking, bilinear when enlarging."""
    if interpolation == "auto":
        return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return RESIZE_FLAGS[interpolation]


def crop_box(box: np.ndarray, margin: float = CropContract.margin) -> tuple[int, int, int]:
    """The square crop region around a face box: ``(x0, y0, side)`` in source pixels, enlarged by margin."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(int(round(max(x2 - x1, y2 - y1) * margin)), 1)
    x0 = int(round((x1 + x2) / 2 - side / 2))
    y0 = int(round((y1 + y2) / 2 - side / 2))
    return x0, y0, side


def crop_face(
    image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None = None, margin: float = CropContract.margin,
    size: int = CropContract.size, interpolation: str = CropContract.interpolation,
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
    crop = cv2.resize(region, (size, size), interpolation=resize_flag(interpolation, side > size))
    if landmarks is None:
        lm = np.full((5, 2), np.nan, np.float32)
    else:
        lm = ((np.asarray(landmarks, np.float32) - np.array([x0, y0], np.float32)) * (size / side)).astype(
            np.float32
        )
    return crop, lm


def frame_to_crop(box: np.ndarray | None, landmarks: np.ndarray | None, contract: CropContract,
                  frame_size: tuple[int, int] | None = None) -> np.ndarray:
    """The 2 x 3 affine that maps a frame's pixels into its face crop as :func:`crop_face` / :func:`align_face`
    cut it (``inputs=crops``: the resize of the whole image, ``frame_size`` = (w, h)); used to lay anything
    computed on a crop (a heatmap) back onto the frame."""
    size = contract.size
    if contract.inputs == "crops":
        w, h = frame_size or (size, size)
        return np.array([[size / w, 0, 0], [0, size / h, 0]], np.float64)
    if contract.align == "arcface":
        return similarity_transform(np.asarray(landmarks, np.float32).reshape(5, 2),
                                    arcface_template(size, contract.margin))
    x0, y0, side = crop_box(box, contract.margin)
    s = size / side
    return np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float64)


def resize_crop(image: np.ndarray, size: int, interpolation: str = CropContract.interpolation) -> np.ndarray:
    """Resize an already-cropped face to the cache's ``size`` (datasets distributed as crops)."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=resize_flag(interpolation, max(h, w) > size))


def align_face(image: np.ndarray, landmarks: np.ndarray, scale: float = CropContract.margin,
               size: int = CropContract.size, interpolation: str = CropContract.interpolation
               ) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` px crop in which the 5 landmarks sit on the ArcFace template shrunk by ``scale``.

    The similarity transform is the least-squares fit of the landmarks onto the template (DeepfakeBench and
    GenD: scale 1.3, 256 px); pixels beyond the frame are black. Returns the crop and the landmarks mapped
    into it (float32, (5, 2)). ``auto`` interpolation samples bilinearly, after an area pre-shrink when the face
    shrinks by more than 2x; another filter warps with that filter directly.
    """
    lm = np.asarray(landmarks, np.float32).reshape(5, 2)
    m = fit = similarity_transform(lm, arcface_template(size, scale))
    src = image
    zoom = float(np.hypot(m[0, 0], m[1, 0]))
    if zoom < 0.5 and interpolation == "auto":
        # warpAffine samples bilinearly: shrinking by more than 2x would alias. Pre-shrink with area averaging
        # to about twice the output scale, and fold that resize into the transform.
        f = min(1.0, 2.0 * zoom)
        h, w = image.shape[:2]
        src = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        fx, fy = src.shape[1] / w, src.shape[0] / h
        m = m @ np.diag([1.0 / fx, 1.0 / fy, 1.0])
    crop = cv2.warpAffine(src, m, (size, size), flags=resize_flag(interpolation, False),
                          borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))
    return crop, apply_transform(fit, lm)
