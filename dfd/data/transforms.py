"""albumentations pipelines: augmentation from ``conf/augment``, resize + normalise from the backbone's own spec.

The eval pipeline takes the input size, mean and std from the model's pretrained config (``InputSpec``), never
from hard-coded ImageNet numbers: EfficientNet-B4 at 380, Xception at 299 with 0.5 mean/std, ViT at 224.
Landmarks travel with the image as keypoints so ADDNet's masks and SBI's blends follow flips and crops.

Random draws: albumentations 2 seeds a ``Compose(seed=None)`` from OS entropy once, when it is built, so
forked DataLoader workers would inherit one state (worker 0 and worker 1 augmenting alike) and two runs with
one seed would differ. Each process therefore re-seeds its pipelines on first use from torch's seed for that
process (``torch.initial_seed()``: the run's seed in the main process, distinct and reproducible per loader
worker; Lightning's ``seed_everything(workers=True)`` also mixes in the DDP rank) and the DDP rank.

Robustness perturbations (:func:`perturbation`) act on the *stored* crop, before the model's resize, with levels
in source pixels: "blur 2" is a sigma of 2 crop pixels whether the backbone reads 224 or 380 px, so robustness
curves of different backbones are comparable.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import albumentations as A
import cv2
import numpy as np
import torch

from dfd.faces.geometry import RESIZE_FLAGS
from dfd.store.distort import DF_KINDS, Distortion, DistortionError, h264_roundtrip, resize_to

__all__ = ["H264", "PERTURBATIONS", "FrameDistortion", "InputSpec", "Pipeline", "build_pipelines", "h264_roundtrip",
           "perturbation"]


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
    """image uint8 HxWx3 (+ landmarks (5,2), NaN if unknown) -> normalised float tensor (+ landmarks tensor).

    Args:
        spec: the model's input spec (size, mean, std, interpolation).
        augment: training augmentations, applied after the resize (cheaper at the model's size).
        extra: operations on the stored crop *before* the resize (robustness perturbations: levels in source
            pixels, the same operation for every backbone).
    """

    def __init__(self, spec: Spec, augment: Sequence[A.BasicTransform] = (), extra: Sequence = ()) -> None:
        self.spec = spec
        interp = RESIZE_FLAGS.get(spec.interpolation, cv2.INTER_LINEAR)
        augment, extra = [_plain(t) for t in augment], [_plain(t) for t in extra]
        # ``extra`` (perturbations) degrade the stored crop itself; augmentation runs at the model's size.
        ops = [*extra, A.Resize(spec.size, spec.size, interpolation=interp), *augment]
        self.spatial = A.Compose(ops, keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
        # ReplayCompose marks its transforms for recording: give it its own copies.
        self.replay = A.ReplayCompose(copy.deepcopy(ops),
                                      keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
        # Two images through one random draw (a real face and its self-blend): albumentations applies one set
        # of parameters to every image target; the mask target carries a blend mask through the same geometry.
        self.paired = A.Compose(copy.deepcopy(ops), additional_targets={"image2": "image"},
                                keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
        self._seeded_pid: int | None = None
        # Normalisation as (x - mean) * (1 / std) on a CHW float copy: ~10x faster than NumPy broadcasting on HWC.
        self.mean = torch.tensor(spec.mean, dtype=torch.float32).view(3, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(spec.std, dtype=torch.float32).view(3, 1, 1) * 255.0)

    def _seed_process(self) -> None:
        """Seed this pipeline's random draws once per process (see the module docstring)."""
        pid = os.getpid()
        if self._seeded_pid == pid:
            return
        dist = torch.distributed
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        seeds = np.random.SeedSequence([torch.initial_seed() % 2**64, rank]).generate_state(3, np.uint64)
        for compose, seed in zip((self.spatial, self.replay, self.paired), seeds, strict=True):
            compose.set_random_seed(int(seed) % 2**63)
        self._seeded_pid = pid

    def reseed(self, seed: int) -> None:
        """Make the next random draws a function of ``seed`` alone (not of the process): dfd-embed's augmented
        views are drawn per (seed, view, row), so any rank, worker or resumed run draws the same view."""
        seeds = np.random.SeedSequence(int(seed)).generate_state(3, np.uint64)
        for compose, s in zip((self.spatial, self.replay, self.paired), seeds, strict=True):
            compose.set_random_seed(int(s) % 2**63)
        self._seeded_pid = os.getpid()

    def _finish(self, image: np.ndarray, kps: np.ndarray | None, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        t = t.to(torch.float32, memory_format=torch.contiguous_format).sub_(self.mean).mul_(self.inv_std)
        lm = torch.full((n, 2), float("nan")) if kps is None else torch.as_tensor(np.asarray(kps, np.float32))
        return t, lm

    def __call__(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform one frame."""
        self._seed_process()
        known = landmarks is not None and np.isfinite(landmarks).all()
        out = self.spatial(image=image, keypoints=landmarks if known else np.zeros((0, 2), np.float32))
        return self._finish(out["image"], out["keypoints"] if known else None, 5 if landmarks is None else len(landmarks))

    def clip(self, images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform the frames of a clip with one random draw, so augmentation is consistent across time."""
        self._seed_process()
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


    def pair(self, first: np.ndarray, second: np.ndarray, landmarks: np.ndarray | None = None,
             mask: np.ndarray | None = None) -> tuple:
        """Transform two same-sized images of one face with ONE random draw (flip, crop, colour, JPEG quality...).

        Returns ``(x1, x2, landmarks)`` as tensors (the landmarks are shared); with ``mask`` (HxW) also the mask
        after the same geometric operations (numpy, at the model's size). A self-blended pair then differs
        only where the blend did, never by an augmentation the classifier could use as a shortcut.
        """
        self._seed_process()
        if first.shape != second.shape:
            raise ValueError(f"Pipeline.pair needs two images of one size; got {first.shape} and {second.shape}")
        n = 5 if landmarks is None else len(landmarks)
        known = landmarks is not None and np.isfinite(landmarks).all()
        data = {"image": first, "image2": second, "keypoints": landmarks if known else np.zeros((0, 2), np.float32)}
        if mask is not None:
            data["mask"] = mask
        out = self.paired(**data)
        kps = out["keypoints"] if known else None
        x1, lm = self._finish(out["image"], kps, n)
        x2, _ = self._finish(out["image2"], kps, n)
        return (x1, x2, lm) if mask is None else (x1, x2, lm, out["mask"])


def _plain(op: A.BasicTransform) -> A.BasicTransform:
    """``op`` with nested transform lists as plain lists, so ``copy.deepcopy`` really copies them.

    Hydra hands a ``OneOf``/``SomeOf`` its children as an OmegaConf ListConfig, whose deepcopy shares the
    objects inside: the ReplayCompose copy would then mark the training pipeline's own children for replay
    (``KeyError: 'replay'`` whenever the OneOf fires).
    """
    children = getattr(op, "transforms", None)
    if children is not None:
        op.transforms = [_plain(t) for t in children]
    return op


def build_pipelines(spec: object, train_augment: Sequence[A.BasicTransform]) -> tuple[Pipeline, Pipeline]:
    """(train, eval) pipelines for a model spec and a list of instantiated augmentations."""
    s = Spec.of(spec)
    return Pipeline(s, train_augment), Pipeline(s)


#: Kinds of robustness perturbation: today's crop-level five, then ``resize`` (GenD's grid) and DeeperForensics-1.0's
#: seven types (``df_cs`` ... ``df_vc``, levels 1-5; dfd.store.distort).
PERTURBATIONS = ("jpeg", "blur", "downscale", "noise", "h264", "resize", *DF_KINDS)


class H264(A.ImageOnlyTransform):
    """Deterministic H.264 re-encoding at a CRF (0 best, 51 worst; platforms upload around 23-35)."""

    def __init__(self, crf: int = 28, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.crf = int(crf)

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        return h264_roundtrip(img, self.crf)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("crf",)


class FrameDistortion(A.ImageOnlyTransform):
    """A :class:`dfd.store.distort.Distortion` on the stored crop (``resize`` and the DeeperForensics kinds).

    Random draws (DeeperForensics' blocks and noise) are seeded by the crop's own pixels with the kind and level:
    deterministic per crop, and so per (video, frame), whatever the process or worker. ``resize`` shrinks the
    crop to N px and leaves the way back to the model's resize (GenD's chain: crop -> N -> model input).
    """

    def __init__(self, kind: str, level: float, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.distortion = Distortion(kind, level)

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        d = self.distortion
        if d.kind == "resize":
            return resize_to(img, int(d.level))
        key = hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest()[:16] if d.random else ""
        return d.apply(img, key)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("kind", "level")

    @property
    def kind(self) -> str:
        return self.distortion.kind

    @property
    def level(self) -> float:
        return self.distortion.level


def perturbation(kind: str, level: float) -> A.BasicTransform:
    """A deterministic corruption for robustness evaluation, applied to every stored test crop before the
    model's resize; levels are in source (stored-crop) pixels, so a level means the same for every backbone.

    ``jpeg``: JPEG quality (100 best); ``blur``: Gaussian sigma in crop pixels; ``downscale``: shrink the crop
    by this factor and back (0.5 = half resolution); ``noise``: Gaussian std in 0-255 units; ``h264``: H.264
    re-encoding at this CRF (each frame as its own I-frame); ``resize``: the crop resized to this many pixels
    (then to the model's input, GenD's grid); ``df_cs`` ... ``df_vc``: DeeperForensics-1.0's types at levels 1-5
    (dfd.store.distort; ``df_vc`` on a crop is an I-frame at its CRF). The first five are albumentations' own
    operations (unchanged since earlier results); the rest are dfd.store.distort's, the code frame-level
    robustness (``robustness.at=frame``) runs on source frames.
    """
    from dfd.errors import ConfigError

    if kind not in PERTURBATIONS:
        raise ConfigError(f"robustness: unknown perturbation {kind!r}; valid kinds: {', '.join(PERTURBATIONS)}")
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
    if kind == "h264":
        return H264(crf=int(level), p=1.0)
    try:
        return FrameDistortion(kind, level)
    except DistortionError as e:
        raise ConfigError(f"robustness.{kind}: {e}") from None
