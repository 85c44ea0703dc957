"""Self-blended images (SBI): pseudo-fakes made from real faces alone.

After Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images" (CVPR 2022). A real face crop is
turned into a pseudo *source* and *target* that differ only in low-level statistics (colour, sharpness,
compression, a small shift/scale of the source); the source is pasted back onto the target through a soft,
randomly deformed face-shaped mask. The detector then has to find blending boundaries and statistical
mismatches, the artefacts most face swaps share, instead of the fingerprints of one generator.

This is an independent implementation (numpy + OpenCV, vectorised, no per-pixel Python) written from the
paper's description; it runs inside DataLoader workers on every real frame.

* :class:`SelfBlend` — one face + landmarks -> (fake, mask); ``pair`` gives the paper's (real, fake) pair.
* :class:`SelfBlendedPairs` — wraps a frame dataset so every real frame comes with its self-blended twin,
  both augmented with one random draw (``apply_transform_pair``), as the paper's code does.
* :func:`pair_collate` — flattens those pairs into one balanced batch.
* :class:`EpochSampler` — a shuffling sampler that tells each item its epoch, so blends are reproducible
  regardless of worker scheduling and persistent workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from dfd.data.bad_crops import KEY, is_dropped
from dfd.faces.landmarks import ellipse_polygon, face_outline
from dfd.store.media import jpeg_roundtrip

_FREQ_OPS = ("downscale", "sharpen", "jpeg")
_MASK_GRID = 128  # the mask is computed at most this many pixels wide, then upsampled


def face_region(landmarks: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """Polygon (N, 2) in pixels covering the face: hull of rich landmarks, a 5-point extrapolation, or an ellipse.

    Exists so every manifest works: MTCNN's 5 points are extrapolated to cheeks and chin, 68/81-point sets
    are used as is, and missing (NaN) landmarks fall back to a centred ellipse.
    """
    pts = None if landmarks is None else np.asarray(landmarks, dtype=np.float32).reshape(-1, 2)
    if pts is None or len(pts) < 5 or not np.isfinite(pts).all():
        return ellipse_polygon(shape)
    if len(pts) == 5:  # the outline shared with ADDNet's masks (dfd.faces.landmarks)
        pts = np.concatenate([pts, face_outline(pts)])
    return cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2)


class SelfBlend:
    """Make a self-blended pseudo-fake from one real face crop; every random draw comes from the given rng.

    Defaults follow the paper where it says (colour shift, hue/saturation/value, brightness/contrast on one
    of source/target; downscale or sharpen; source translated by up to 3 % and rescaled 0.95–1.05; mask
    from the landmark hull, deformed, eroded/dilated, blurred; blend ratio drawn from
    {0.25, 0.5, 0.75, 1, 1, 1}). Sizes (erosion, blur, jitter) scale with the face, so the same config works
    at 64 px and at 380 px.
    """

    def __init__(
        self,
        rgb_shift: float = 20.0,
        hue: float = 0.02,
        saturation: float = 0.1,
        value: float = 0.1,
        brightness: float = 0.1,
        contrast: float = 0.1,
        freq_ops: Sequence[str] = _FREQ_OPS,
        downscale: tuple[float, float] = (2.0, 4.0),
        sharpen: tuple[float, float] = (0.2, 0.5),
        jpeg_quality: tuple[int, int] = (40, 90),
        shift: float = 0.03,
        scale: tuple[float, float] = (0.95, 1.05),
        hull_scale: tuple[float, float] = (0.9, 1.1),
        hull_jitter: float = 0.04,
        elastic: float = 0.04,
        erode_dilate: float = 0.08,
        blur: tuple[float, float] = (0.02, 0.08),
        blend_ratios: Sequence[float] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0),
        p_transform_source: float = 0.5,
    ) -> None:
        bad = sorted(set(freq_ops) - set(_FREQ_OPS))
        if bad:
            raise ValueError(f"SelfBlend: unknown freq_ops {bad}; choose from {list(_FREQ_OPS)}")
        if not blend_ratios or min(blend_ratios) <= 0 or max(blend_ratios) > 1:
            raise ValueError(
                f"SelfBlend: blend_ratios must be non-empty and in (0, 1]; got {list(blend_ratios)}"
            )
        self.rgb_shift, self.hue, self.saturation, self.value = rgb_shift, hue, saturation, value
        self.brightness, self.contrast = brightness, contrast
        self.freq_ops = tuple(freq_ops)
        self.downscale, self.sharpen, self.jpeg_quality = (
            tuple(downscale),
            tuple(sharpen),
            tuple(jpeg_quality),
        )
        self.shift, self.scale = shift, tuple(scale)
        self.hull_scale, self.hull_jitter, self.elastic = tuple(hull_scale), hull_jitter, elastic
        self.erode_dilate, self.blur = erode_dilate, tuple(blur)
        self.blend_ratios = np.asarray(blend_ratios, dtype=np.float32)
        self.p_transform_source = p_transform_source

    # -- public API -------------------------------------------------------------------------------------

    def __call__(
        self, image: np.ndarray, landmarks: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Blend a transformed copy of ``image`` into ``image`` itself: (fake uint8 HxWx3, mask float32 HxW).

        Outside the mask the fake is byte-identical to ``image`` (the statistics change is applied to the
        source here); :meth:`pair` is the paper's variant that may alter the target instead.
        """
        image = _check_image(image)
        source = self._geometric(self._statistics(image, rng), rng)
        mask = self.mask(landmarks, image.shape[:2], rng)
        return _blend(source, image, mask), mask

    def pair(
        self, image: np.ndarray, landmarks: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The paper's training pair (real, fake, mask): real and fake differ only inside the mask.

        With probability ``1 - p_transform_source`` the colour/frequency change goes to the *target*, and
        the transformed target is also returned as the real image, so the pair never differs by a global
        colour shift the classifier could use as a shortcut.
        """
        image = _check_image(image)
        source, target = image, image
        if rng.random() < self.p_transform_source:
            source = self._statistics(image, rng)
        else:
            target = self._statistics(image, rng)
        source = self._geometric(source, rng)
        mask = self.mask(landmarks, image.shape[:2], rng)
        return target, _blend(source, target, mask), mask

    def mask(
        self, landmarks: np.ndarray | None, shape: tuple[int, int], rng: np.random.Generator
    ) -> np.ndarray:
        """Soft blending mask (float32 HxW in [0, 1]) from the face region, randomly deformed and blurred."""
        h, w = shape
        # The mask ends up blurred, so it is drawn, warped, eroded and blurred on a grid of at most
        # _MASK_GRID px and upsampled once: the cost no longer grows with the crop size.
        f = min(1.0, _MASK_GRID / max(h, w))
        gh, gw = max(1, round(h * f)), max(1, round(w * f))
        poly = face_region(landmarks, shape) * np.float32(f)
        centre = poly.mean(axis=0)
        size = float(np.sqrt(max(cv2.contourArea(poly), 1.0)))  # face scale in grid pixels
        # Random affine of the hull around its centre, then per-vertex jitter: mask shape diversity.
        angle = rng.uniform(-0.1, 0.1)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
        poly = (poly - centre) @ (rot * rng.uniform(*self.hull_scale, size=2).astype(np.float32)).T + centre
        poly = poly + rng.normal(0, self.hull_jitter * size, poly.shape).astype(np.float32)
        hull = cv2.convexHull(poly.astype(np.float32)).reshape(-1, 2)
        canvas = np.zeros((gh, gw), np.uint8)
        # Sub-pixel vertices and an anti-aliased edge keep the small grid from snapping the outline.
        cv2.fillPoly(canvas, [np.round(hull * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
        m = canvas.astype(np.float32) * np.float32(1 / 255)
        if self.elastic > 0:
            m = self._elastic(m, size, rng)
        k = int(round(rng.uniform(0, self.erode_dilate) * size))
        if k >= 1:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
            m = cv2.erode(m, kernel) if rng.random() < 0.5 else cv2.dilate(m, kernel)
        sigma = rng.uniform(*self.blur) * size
        if sigma > 0.3:
            m = cv2.GaussianBlur(m, (0, 0), sigma)
        if (gh, gw) != (h, w):
            m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
        peak = float(m.max())
        if peak <= 0:  # the face region fell outside the crop: blend nothing rather than crash
            return m
        # Tiny blur tails would change pixels by < 1 grey level anywhere in the crop; cut them so the
        # support of the mask is exactly where the fake differs.
        m *= 1.0 / peak
        m[m < 1e-3] = 0.0
        m *= float(rng.choice(self.blend_ratios))
        return m

    # -- source-target generator ------------------------------------------------------------------------

    def _statistics(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Colour then frequency change: the source/target mismatch a face swap leaves."""
        out = image
        levels = np.arange(256, dtype=np.float32)[:, None]
        if self.hue > 0 or self.saturation > 0 or self.value > 0:
            # Hue shift (cyclic) and saturation/value gains as one 3-channel lookup table in HSV.
            dh = rng.uniform(-self.hue, self.hue) * 256.0
            gs, gv = 1.0 + rng.uniform(-1, 1, 2) * (self.saturation, self.value)
            lut = np.concatenate([(levels + dh) % 256.0, levels * gs, levels * gv], axis=1)
            hsv = cv2.LUT(cv2.cvtColor(out, cv2.COLOR_RGB2HSV_FULL), _lut(lut))
            out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
        # Contrast around the image mean, brightness and a per-channel shift: one per-channel table.
        gain = 1.0 + rng.uniform(-self.contrast, self.contrast)
        offset = rng.uniform(-self.brightness, self.brightness) * 255.0
        shift = rng.uniform(-self.rgb_shift, self.rgb_shift, 3)
        mean = np.asarray(cv2.mean(out)[:3], np.float32)
        out = cv2.LUT(out, _lut((levels - mean) * gain + (mean + offset + shift)))
        if self.freq_ops:
            out = self._frequency(out, self.freq_ops[rng.integers(len(self.freq_ops))], rng)
        return out

    def _frequency(self, image: np.ndarray, op: str, rng: np.random.Generator) -> np.ndarray:
        h, w = image.shape[:2]
        if op == "downscale":
            f = rng.uniform(*self.downscale)
            small = cv2.resize(
                image, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA
            )
            return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        if op == "sharpen":
            alpha = rng.uniform(*self.sharpen)
            blurred = cv2.GaussianBlur(image, (0, 0), 1.0)
            return cv2.addWeighted(image, 1 + alpha, blurred, -alpha, 0)
        quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
        return jpeg_roundtrip(image, quality)

    def _geometric(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Small shift and rescale of the source, so its edges do not line up with the target's."""
        h, w = image.shape[:2]
        s = rng.uniform(*self.scale)
        tx, ty = rng.uniform(-self.shift, self.shift, 2) * (w, h)
        mat = np.array([[s, 0, (1 - s) * w / 2 + tx], [0, s, (1 - s) * h / 2 + ty]], np.float32)
        return cv2.warpAffine(image, mat, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    def _elastic(self, m: np.ndarray, size: float, rng: np.random.Generator) -> np.ndarray:
        """Smooth random warp of the mask: a coarse 4x4 displacement grid upsampled bicubically."""
        h, w = m.shape
        amp = self.elastic * size
        field = rng.uniform(-amp, amp, (2, 4, 4)).astype(np.float32)
        dx = cv2.resize(field[0], (w, h), interpolation=cv2.INTER_CUBIC)
        dy = cv2.resize(field[1], (w, h), interpolation=cv2.INTER_CUBIC)
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        return cv2.remap(m, gx + dx, gy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _lut(table: np.ndarray) -> np.ndarray:
    """A (256, 3) float table as the (1, 256, 3) uint8 lookup table cv2.LUT applies per channel."""
    return np.clip(np.rint(table), 0, 255).astype(np.uint8).reshape(1, 256, 3)


def _check_image(image: np.ndarray) -> np.ndarray:
    if not (
        isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    ):
        got = f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}"
        raise ValueError(f"SelfBlend expects an RGB uint8 HxWx3 array; got {got}")
    return np.ascontiguousarray(image)


def _blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    t = target.astype(np.float32)
    out = t + mask[..., None] * (source.astype(np.float32) - t)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# -- pairing ------------------------------------------------------------------------------------------------


class SelfBlendedPairs(torch.utils.data.Dataset):
    """A frame dataset whose items are balanced pairs: each real frame with its self-blended twin.

    ``base`` needs ``load(i) -> dict`` (uint8 ``image``, ``landmarks``, ``label``, ...), ``apply_transform``
    (augmentation + normalisation of one sample), ``labels`` and, for the paper's joint augmentation of a real
    frame and its blend, ``apply_transform_pair(real, fake)`` (:class:`dfd.data.datasets.FrameDataset` has it). Every item is a list of two transformed
    samples with labels [0, 1], so any batch :func:`pair_collate` builds is exactly 1:1.

    * ``mode="sbi"``: items are the base's real frames; fake frames are not used (the paper's setting).
    * ``mode="both"``: items are all frames. A real frame yields (real, its SBI); a real *fake* frame yields
      (a real frame, that fake), the real drawn reproducibly at random. Balance is kept 1:1 per item, so the
      reals are oversampled when fakes outnumber them (FF++: each real seen ~5x per epoch, once with its SBI)
      and SBIs make up n_real / n_frames of the fakes.

    ``masks=True`` adds the blend mask (after the pair's augmentation, at the model's size) to both items as
    ``mask``: where the pair may differ (Face X-ray-style supervision, inspection).

    Item keys may be an int ``i`` (uses the epoch from :meth:`set_epoch`) or ``(epoch, i)`` from
    :class:`EpochSampler`; either way the randomness depends only on (seed, epoch, base index).
    """

    def __init__(self, base: Any, blend: SelfBlend, mode: str = "sbi", seed: int = 0, masks: bool = False) -> None:
        if mode not in ("sbi", "both"):
            raise ValueError(f"SelfBlendedPairs: mode must be 'sbi' or 'both'; got {mode!r}")
        labels = np.asarray(base.labels)
        self.real = np.flatnonzero(labels == 0)
        if len(self.real) == 0:
            raise ValueError(
                "SelfBlendedPairs: the dataset has no real (label 0) frames to self-blend; "
                "check the split/method filters or use data.fakes=real"
            )
        self.base, self.blend, self.mode, self.seed = base, blend, mode, int(seed)
        self.masks = bool(masks)
        if self.masks and not hasattr(base, "apply_transform_pair"):
            raise ValueError("SelfBlendedPairs(masks=True) needs a base with apply_transform_pair (FrameDataset)")
        self.items = self.real if mode == "sbi" else np.arange(len(labels))
        # Per item: the label of the frame it is built around (every item itself is a balanced pair).
        # Samplers that weight by label (data.balance, dataset mixes) need one entry per item.
        self.labels = labels[self.items]
        # Shared memory, so persistent DataLoader workers see set_epoch() without being restarted.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        """Draw new blends each epoch, reproducibly; call it from ``on_train_epoch_start``.

        Lightning only calls ``set_epoch`` on samplers, so the training loop must call this (or use
        :class:`EpochSampler`); without it every epoch repeats epoch 0's blends. The value lives in shared
        memory, so persistent workers see it; Lightning creates each later epoch's iterator (and so starts
        prefetching) after ``on_train_epoch_start``.
        """
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> list[dict]:
        epoch, i = (
            (int(key[0]), int(key[1])) if isinstance(key, tuple | list) else (int(self._epoch), int(key))
        )
        j = int(self.items[i])
        # Keyed by the base index (not the item position) so 'sbi' and 'both' blend a frame the same way.
        rng = np.random.default_rng([self.seed, epoch, j])
        sample = self.base.load(j)
        if is_dropped(sample):  # its video has no readable crop (dfd.data.bad_crops): the pair is dropped
            return [sample]
        if int(sample["label"]) != 0:
            real = self.base.load(int(self.real[rng.integers(len(self.real))]))
            if is_dropped(real):
                return [real, sample]
            out = [self._out(real, sbi=0), self._out(sample, sbi=0)]
            if self.masks:  # two different frames: they may differ anywhere
                for d in out:
                    d["mask"] = torch.ones(d["image"].shape[-2:], dtype=torch.float32)
            return out
        lm = sample.get("landmarks")
        real_img, fake_img, mask = self.blend.pair(sample["image"], lm, rng)
        # The self-blend is made from the real crop: an unreadable crop it replaced is counted once, with the real.
        real, fake = {**sample, "image": real_img}, {**sample, "image": fake_img, "label": 1, KEY: 0}
        shared = getattr(self.base, "apply_transform_pair", None)
        if shared is None:  # a base without joint augmentation (deterministic transforms): one call each
            return [self._out(real, sbi=0), self._out(fake, sbi=1)]
        # The paper transforms both together: one flip, one JPEG quality, one colour draw for the pair, so
        # the two differ only where the blend did (never by an augmentation the classifier could key on).
        out = [dict(d) for d in (shared(real, fake, mask=mask) if self.masks else shared(real, fake))]
        out[0]["sbi"], out[1]["sbi"] = 0, 1
        return out

    def _out(self, sample: dict, sbi: int) -> dict:
        out = dict(self.base.apply_transform(sample))
        out["sbi"] = sbi  # lets metrics separate self-blends from real fakes
        return out


def pair_collate(batch: list[list[dict]]) -> dict[str, torch.Tensor]:
    """Flatten a batch of pairs into one dict of stacked tensors (image, label, video, index, landmarks, sbi).

    Dtypes are the base dataset's (e.g. float labels for BCE); pairs stay adjacent: rows 2k, 2k+1.
    """
    flat = [s for pair in batch for s in pair]
    out: dict[str, torch.Tensor] = {}
    for k in flat[0]:
        values = [s[k] for s in flat]
        if isinstance(values[0], torch.Tensor):
            out[k] = torch.stack(values)
        elif isinstance(values[0], np.ndarray):
            out[k] = torch.from_numpy(np.stack(values))
        else:
            out[k] = torch.as_tensor(values)
    return out


class EpochSampler(torch.utils.data.Sampler):
    """Shuffles item positions per epoch and yields ``(epoch, i)``, so each item knows its epoch.

    Lightning calls ``set_epoch`` on a loader's sampler before every epoch; passing the epoch inside the key
    makes blends independent of when workers prefetch, unlike a dataset-level epoch set from a hook.
    """

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0) -> None:
        self.n, self.shuffle, self.seed, self.epoch = int(n), shuffle, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning (and by hand in plain loops) at the start of each epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            if self.shuffle
            else range(self.n)
        )
        return iter([(self.epoch, int(i)) for i in order])
