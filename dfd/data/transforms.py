"""albumentations pipelines: augmentation from ``conf/augment``, resize + normalise from the backbone's own spec.

The eval pipeline takes the input size, mean and std from the model's pretrained config (``InputSpec``), never
from hard-coded ImageNet numbers: EfficientNet-B4 at 380, Xception at 299 with 0.5 mean/std, ViT at 224.
Landmarks travel with the image as keypoints so ADDNet's masks and SBI's blends follow flips and crops.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import albumentations as A
import cv2
import numpy as np
import torch

_INTERP = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST,
           "area": cv2.INTER_AREA}


@dataclass(frozen=True)
class InputSpec:
    """What a detector expects as input, read from the backbone's pretrained config (never hard-coded).

    Defined on the data side (models import it from here) because the transforms are what consume it.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    # Frames per clip for clip models (ADDNet-3D); None for frame models.
    clip_len: int | None = None

    @classmethod
    def of(cls, spec: object) -> InputSpec:
        """Accept an InputSpec, any object with size/mean/std attributes, or a dict (e.g. from JSON)."""
        if isinstance(spec, cls):
            return spec
        get = spec.get if isinstance(spec, dict) else lambda k, d=None: getattr(spec, k, d)
        return cls(int(get("size")), tuple(get("mean")), tuple(get("std")),
                   get("interpolation", "bicubic") or "bicubic", get("clip_len", None))

    def to_dict(self) -> dict:
        """Plain dict for checkpoints, bundles and JSON."""
        return asdict(self)


Spec = InputSpec  # short alias used by the data pipeline


class Pipeline:
    """image uint8 HxWx3 (+ landmarks (5,2), NaN if unknown) -> normalised float tensor (+ landmarks tensor)."""

    def __init__(self, spec: Spec, augment: Sequence[A.BasicTransform] = (), extra: Sequence = ()) -> None:
        self.spec = spec
        interp = _INTERP.get(spec.interpolation, cv2.INTER_LINEAR)
        # Resize first: augmenting at the model's size is cheaper and matches what the model sees.
        ops = [A.Resize(spec.size, spec.size, interpolation=interp), *extra, *augment]
        self.spatial = A.Compose(ops, keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
        # ReplayCompose marks its transforms for recording: give it its own copies.
        self.replay = A.ReplayCompose(copy.deepcopy(ops),
                                      keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
        # Normalisation as (x - mean) * (1 / std) on a CHW float copy: ~10x faster than NumPy broadcasting on HWC.
        self.mean = torch.tensor(spec.mean, dtype=torch.float32).view(3, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(spec.std, dtype=torch.float32).view(3, 1, 1) * 255.0)

    def _finish(self, image: np.ndarray, kps: np.ndarray | None, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        t = t.to(torch.float32, memory_format=torch.contiguous_format).sub_(self.mean).mul_(self.inv_std)
        lm = torch.full((n, 2), float("nan")) if kps is None else torch.as_tensor(np.asarray(kps, np.float32))
        return t, lm

    def __call__(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform one frame."""
        known = landmarks is not None and np.isfinite(landmarks).all()
        out = self.spatial(image=image, keypoints=landmarks if known else np.zeros((0, 2), np.float32))
        return self._finish(out["image"], out["keypoints"] if known else None, 5 if landmarks is None else len(landmarks))

    def clip(self, images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform the frames of a clip with one random draw, so augmentation is consistent across time."""
        xs, lms, params = [], [], None
        for img, lm in zip(images, landmarks, strict=True):
            known = np.isfinite(lm).all()
            kps = lm if known else np.zeros((0, 2), np.float32)
            if params is None:
                out = self.replay(image=img, keypoints=kps)
                params = out["replay"]
            else:
                out = A.ReplayCompose.replay(params, image=img, keypoints=kps)
            x, l_ = self._finish(out["image"], out["keypoints"] if known else None, len(lm))
            xs.append(x)
            lms.append(l_)
        return torch.stack(xs), torch.stack(lms)


def build_pipelines(spec: object, train_augment: Sequence[A.BasicTransform]) -> tuple[Pipeline, Pipeline]:
    """(train, eval) pipelines for a model spec and a list of instantiated augmentations."""
    s = Spec.of(spec)
    return Pipeline(s, train_augment), Pipeline(s)


def perturbation(kind: str, level: float) -> A.BasicTransform:
    """A deterministic corruption for robustness evaluation (applied to every test image)."""
    if kind == "jpeg":
        return A.ImageCompression(quality_range=(int(level), int(level)), p=1.0)
    if kind == "blur":
        k = int(2 * round(3 * level) + 1)
        return A.GaussianBlur(blur_limit=(k, k), sigma_limit=(level, level), p=1.0)
    if kind == "downscale":
        return A.Downscale(scale_range=(level, level), p=1.0)
    if kind == "noise":
        # level = std in 0-255 units; albumentations takes it relative to the max value.
        return A.GaussNoise(std_range=(level / 255.0, level / 255.0), p=1.0)
    raise ValueError(f"unknown perturbation {kind!r}; valid: jpeg, blur, downscale, noise")
