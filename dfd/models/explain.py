"""Where a detector looks: Grad-CAM heatmaps of its "fake" logit on face crops, and overlays to look at.

The maps come from pytorch-grad-cam (PyPI ``grad-cam`` 1.5.7, MIT): its ``GradCAM`` on one target layer.
Why this library and not captum or a hook of dfd's own: measured on 2026-12-07, grad-cam 1.5.7 declares
``opencv-python-headless`` (the build dfd pins, so no second ``cv2`` is installed over it; ``pip install
--dry-run`` adds only grad-cam and ttach to dfd's stack), and it takes token outputs through a
``reshape_transform``, so one code path serves CNNs and ViTs. captum's ``LayerGradCam`` treats dim 1 as the
channels, which is the token axis of a ViT block: it would need a permuting shim inside the network.

Which layer (:func:`target_layer`):

* convolutional backbones (timm CNNs, Xception, ADDNet-2D): the last feature stage (timm's ``feature_info``),
  the classic Grad-CAM layer, or the deepest one still ``MIN_CAM_SIDE`` cells wide at small inputs;
* ViT-style backbones (timm ViT, CLIP, DINOv2/v3, PE, ``tiny``): a token-level Grad-CAM at the attention input
  of the *second-to-last* block (``blocks[-2].norm1``), patch tokens laid back on their grid (prefix tokens
  dropped). With CLS-token pooling the last block's *output* patch tokens never reach the logit (zero
  gradient); its attention input only carries what the CLS query reads in one step. Measured on the `tiny` ViT
  trained on synthetic domain b (AUC 1.0): fake crops' heatmap mass inside the blend region (28.5 % of the
  crop) is 0.17 at ``blocks[-1].norm1`` (reals 0.28), 0.69 at ``blocks[-2].norm1`` (reals: empty maps, no
  evidence for "fake" anywhere), 0.74 at ``blocks[-3].norm1``;
* clip models (ADDNet-3D): the per-frame entry-flow output, so every frame of a clip gets its own map.

A map is the ReLU of the gradient-weighted activation sum, resized to the model's input and scaled to 0-1 per
crop by the library (so maps show *where*, not *how strongly*; the score says how strongly). The explained
output is always the logit of "fake" (label 1), for real and fake crops alike. LoRA, SVD-residual and norm-only
models work unchanged (hooks see the adapted layers' outputs); frozen weights do not matter because the input
is made to require gradients. TorchScript bundles have no hooks: :mod:`dfd.inference` rebuilds their eager
network from the bundle's safetensors weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from dfd.errors import UserError

#: How the overlays blend: this share of the heatmap colour over the image.
HEAT_ALPHA = 0.45
#: Convolutional maps coarser than this many cells a side cannot place anything in a face crop: at a 64 px
#: input a ResNet's last stage is 2x2 (measured on the synthetic set: its fake crops' heatmap mass inside the
#: blend region 0.19 vs 0.22 on reals, region share 0.17), the stage before it 4x4 (0.31 vs 0.08).
MIN_CAM_SIDE = 4
#: The file of raw maps an explain folder holds per video or input file (numpy .npz, no pickles).
MAPS_FILE = "cam.npz"


class ExplainError(UserError, ValueError):
    """A model dfd cannot explain (no layer to take Grad-CAM at); the message says what to do."""


def target_layer(detector: nn.Module) -> tuple[nn.Module, int | None]:
    """(the module whose output Grad-CAM weighs, the number of prefix tokens for token outputs; None: maps).

    A detector may name its own with a ``cam_layer()`` method returning the same pair.
    """
    if hasattr(detector, "cam_layer"):
        return detector.cam_layer()
    backbone = getattr(detector, "backbone", detector)
    blocks = getattr(backbone, "blocks", None)
    if blocks is not None and hasattr(backbone, "num_prefix_tokens") and hasattr(blocks[-1], "norm1"):
        return blocks[-2 if len(blocks) > 1 else -1].norm1, int(backbone.num_prefix_tokens)
    info = getattr(backbone, "feature_info", None)
    if info:
        size = getattr(getattr(detector, "input_spec", None), "size", None) or 224
        # The deepest stage whose map still has MIN_CAM_SIDE cells a side (the last stage at 224 px: 7x7).
        deep_enough = [f for f in info if size // int(f.get("reduction", 1)) >= MIN_CAM_SIDE]
        return backbone.get_submodule((deep_enough or info)[-1]["module"]), None
    raise ExplainError(f"{type(detector).__name__}: no layer to take Grad-CAM at (no ViT blocks, no timm "
                       "feature_info); give the detector a cam_layer() method returning (module, None)")


def _tokens_to_map(prefix: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, N, D) tokens -> (B, D, h, w) maps, prefix (class, register) tokens dropped."""

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, prefix:]
        n = patches.shape[1]
        side = math.isqrt(n)
        if side * side != n:
            raise ExplainError(f"{n} patch tokens do not form a square grid; explain needs square inputs")
        return patches.reshape(patches.shape[0], side, side, patches.shape[2]).permute(0, 3, 1, 2)

    return reshape


class _Call(nn.Module):
    """The detector as pytorch-grad-cam calls it: one input tensor, (B,) logits out.

    Landmarks are bound here; clips travel as (B, L*3, H, W) so the library sees 2-D images (it reads a 5-D
    input as one volume) and each frame's map comes back separately.
    """

    def __init__(self, detector: nn.Module, landmarks: torch.Tensor | None, clip_len: int | None) -> None:
        super().__init__()
        self.detector, self.landmarks, self.clip_len = detector, landmarks, clip_len

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.clip_len:
            x = x.unflatten(1, (self.clip_len, -1))
        if self.landmarks is not None:
            return self.detector(x, self.landmarks)
        return self.detector(x)


def _unwrap(model: nn.Module) -> nn.Module:
    # A bundle's ProbabilityModel: explain the logit, not its sigmoid (a confident sigmoid has no gradient).
    return getattr(model, "detector", model)


class Explainer:
    """Grad-CAM of one detector (a dfd ``Detector`` or a bundle's probability model around one).

    Call it on normalised inputs exactly as the model takes them: (N,3,S,S) crops -> (N,S,S) maps, (N,L,3,S,S)
    clips -> (N,L,S,S); float32 in 0-1.
    """

    def __init__(self, model: nn.Module) -> None:
        self.detector = _unwrap(model).eval()
        self.layer, self.prefix = target_layer(self.detector)
        self.needs_landmarks = bool(getattr(self.detector, "needs_landmarks", False))
        self.clip_len = getattr(getattr(self.detector, "input_spec", None), "clip_len", None)

    def __call__(self, images: torch.Tensor, landmarks: torch.Tensor | None = None, batch_size: int = 16
                 ) -> np.ndarray:
        from pytorch_grad_cam import GradCAM

        device = next(self.detector.parameters()).device
        out = []
        clips = images.ndim == 5
        for s in range(0, len(images), batch_size):
            x = images[s:s + batch_size].to(device, torch.float32)
            lm = None
            if self.needs_landmarks:
                lm = (landmarks[s:s + batch_size] if landmarks is not None
                      else torch.full((*x.shape[:-3], 5, 2), float("nan")))
                lm = lm.to(device, torch.float32)
            if clips:
                x = x.flatten(1, 2)
            # Gradients w.r.t. the input: frozen (linear-probe, norm-only, LoRA) weights still give a graph.
            x = x.detach().requires_grad_(True)
            call = _Call(self.detector, lm, x.shape[1] // 3 if clips else None)
            reshape = _tokens_to_map(self.prefix) if self.prefix is not None else None
            with torch.inference_mode(False), torch.enable_grad(), \
                    GradCAM(model=call, target_layers=[self.layer], reshape_transform=reshape) as cam:
                maps = cam(input_tensor=x, targets=[_logit] * len(x))
            if clips:
                maps = maps.reshape(len(x), -1, *maps.shape[-2:])
            out.append(maps.astype(np.float32))
        self.detector.zero_grad(set_to_none=True)
        if not out:
            return np.zeros((0, *images.shape[-2:]), np.float32)
        return np.concatenate(out)


def _logit(output: torch.Tensor) -> torch.Tensor:
    """The explained score: the sample's "fake" logit (dfd's detectors have one output)."""
    return output.reshape(-1)[0] if output.ndim else output


def explain(model: nn.Module, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> np.ndarray:
    """Grad-CAM maps of ``model`` on ``images`` (see :class:`Explainer`)."""
    return Explainer(model)(images, landmarks)


# ----------------------------------------------------------------------------------------------- pictures
def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = HEAT_ALPHA) -> np.ndarray:
    """An RGB uint8 image with a 0-1 heatmap blended over it (JET colours, resized to the image)."""
    h, w = image.shape[:2]
    if heat.shape != (h, w):
        heat = cv2.resize(heat.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.uint8(255 * np.clip(heat, 0, 1)), cv2.COLORMAP_JET)[..., ::-1]
    return np.clip((1 - alpha) * image.astype(np.float32) + alpha * colour, 0, 255).astype(np.uint8)


def frame_overlay(frame: np.ndarray, heat: np.ndarray, frame_to_crop: np.ndarray, crop_size: int,
                  alpha: float = HEAT_ALPHA) -> np.ndarray:
    """The crop's heatmap mapped back onto its source frame (the crop's 2x3 frame -> crop affine, inverted);
    pixels outside the crop keep the frame's colours."""
    h, w = frame.shape[:2]
    heat = cv2.resize(heat.astype(np.float32), (crop_size, crop_size), interpolation=cv2.INTER_LINEAR)
    inverse = cv2.invertAffineTransform(np.asarray(frame_to_crop, np.float64))
    back = cv2.warpAffine(heat, inverse, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    inside = cv2.warpAffine(np.ones((crop_size, crop_size), np.float32), inverse, (w, h), flags=cv2.INTER_NEAREST,
                            borderValue=0)[..., None] > 0
    return np.where(inside, overlay(frame, back, alpha), frame)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")
    return path


def mass_inside(heat: np.ndarray, region: np.ndarray) -> float:
    """Share of a heatmap's mass inside a soft region (both 2-D, region resized to the map); NaN for an empty map."""
    if region.shape != heat.shape:
        region = cv2.resize(region.astype(np.float32), heat.shape[::-1], interpolation=cv2.INTER_LINEAR)
    total = float(heat.sum())
    return float((heat * region).sum() / total) if total > 0 else math.nan
