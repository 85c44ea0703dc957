"""Landmark → soft face mask for ADDNet: the region face-swap software blends, computed in torch, batched."""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from dfd.faces.landmarks import FACE_ELLIPSE, FACE_OUTLINE

log = logging.getLogger(__name__)

_fallback_logged = False
_WORK_SIZE = 64

def _face_points(landmarks: torch.Tensor) -> torch.Tensor:
    """(B,5,2) landmarks -> (B,20,2) hull points: the landmarks and the face outline around them (brows,
    temples, cheeks, jaw, chin) from dfd.faces.landmarks.FACE_OUTLINE, the outline SBI's masks use too."""
    le, re, _, lm, rm = landmarks.unbind(1)
    eyes, mouth = (le + re) / 2, (lm + rm) / 2
    ex, ey = re - le, mouth - eyes
    t = landmarks.new_tensor(FACE_OUTLINE)  # (15, 2) in the eye/mouth frame
    outline = eyes[:, None] + t[None, :, :1] * ex[:, None] + t[None, :, 1:] * ey[:, None]
    return torch.cat([landmarks, outline], dim=1)


def _convex_fill(points: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary masks (B,H,W) of the convex hulls of (B,K,2) points, and whether each hull is usable."""
    b, k, _ = points.shape
    # Edge i→j is a hull edge when no point lies to its right: the hull is the intersection of those half-planes.
    edge = points[:, None, :, :] - points[:, :, None, :]                      # (B,K,K,2): p_j - p_i
    rel = points[:, None, :, :] - points[:, :, None, :]                       # (B,K,K',2): p_k - p_i
    cross = edge[:, :, :, None, 0] * rel[:, :, None, :, 1] - edge[:, :, :, None, 1] * rel[:, :, None, :, 0]
    scale = (points.amax(1) - points.amin(1)).amax(-1).clamp_min(1e-6)      # (B,)
    valid = (cross >= -1e-4 * scale[:, None, None, None] ** 2).all(-1)
    length = edge.norm(dim=-1)
    valid = valid & (length > 1e-3 * scale[:, None, None])  # not in place: ONNX export has no __iand_
    # One outgoing hull edge per point (points inside the hull reuse another edge), K edges per face.
    has = valid.any(-1)                                                       # (B,K)
    nxt = valid.float().argmax(-1)                                            # (B,K)
    first = has.float().argmax(-1)                                            # (B,)
    src = torch.where(has, torch.arange(k, device=points.device)[None], first[:, None])
    dst = torch.where(has, nxt, nxt.gather(1, first[:, None]).expand(-1, k))
    p0 = points.gather(1, src[..., None].expand(-1, -1, 2))                   # (B,K,2)
    p1 = points.gather(1, dst[..., None].expand(-1, -1, 2))
    ys = torch.arange(height, device=points.device, dtype=points.dtype)
    xs = torch.arange(width, device=points.device, dtype=points.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    e = (p1 - p0)[:, :, None, None, :]                                        # (B,K,1,1,2)
    qx = gx[None, None] - p0[:, :, None, None, 0]
    qy = gy[None, None] - p0[:, :, None, None, 1]
    inside = (e[..., 0] * qy - e[..., 1] * qx >= 0).all(1)                    # (B,H,W)
    usable = has.sum(-1) >= 3
    return inside, usable


def ellipse_mask(batch: int, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Hard centred ellipse (B,H,W): where a face crop's face is when no landmarks say otherwise."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    cx, cy, ax, ay = FACE_ELLIPSE
    inside = ((gx - cx) / ax) ** 2 + ((gy - cy) / ay) ** 2 <= 1.0
    return inside[None].expand(batch, -1, -1)


def _gaussian_blur(masks: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B,1,H,W), edges replicated so the border does not darken."""
    if sigma <= 0:
        return masks
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=masks.device, dtype=masks.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(masks, (radius, radius, 0, 0), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(x, kernel.view(1, 1, -1, 1))


def face_mask(
    landmarks: torch.Tensor | None,
    height: int,
    width: int,
    batch: int | None = None,
    blur: float = 0.04,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Soft attention masks (B,1,H,W) in [0,1]: the convex face region from 5 landmarks (pixel x,y), blurred.

    Samples whose landmarks are missing (None or any NaN) or degenerate get a centred ellipse instead;
    that is logged once per process. `blur` is the Gaussian sigma as a fraction of min(H, W).
    """
    global _fallback_logged
    # The mask is smooth, so build it on a grid of at most _WORK_SIZE px and upsample: ~20x faster at 299 px.
    f = min(1.0, _WORK_SIZE / max(height, width))
    h, w = max(1, round(height * f)), max(1, round(width * f))
    if landmarks is None:
        if batch is None:
            raise ValueError("face_mask needs `batch` when landmarks is None")
        hard = ellipse_mask(batch, h, w, device or "cpu")
        missing = batch
    else:
        if landmarks.ndim != 3 or landmarks.shape[1:] != (5, 2):
            raise ValueError(f"landmarks must be (B,5,2) pixel (x,y) coordinates, got {tuple(landmarks.shape)}")
        lm = landmarks.float()
        known = torch.isfinite(lm).flatten(1).all(1)
        # Pixel centres: landmark x in [0, W) maps to grid index x*w/W - 0.5 on the small grid.
        scale = lm.new_tensor([w / width, h / height])
        hull, usable = _convex_fill(_face_points(torch.nan_to_num(lm) * scale - 0.5), h, w)
        ok = known & usable & hull.flatten(1).any(1)
        hard = torch.where(ok[:, None, None], hull, ellipse_mask(lm.shape[0], h, w, lm.device))
        missing = int((~ok).sum())
    if missing and not _fallback_logged:
        log.warning("ADDNet masks: %d face(s) without usable landmarks use a centred ellipse "
                    "(logged once per process)", missing)
        _fallback_logged = True
    soft = _gaussian_blur(hard[:, None].float(), blur * min(h, w))
    if (h, w) != (height, width):
        soft = F.interpolate(soft, size=(height, width), mode="bilinear", align_corners=False)
    return soft / soft.flatten(1).amax(1).clamp_min(1e-6)[:, None, None, None]


class FaceMask(nn.Module):
    """The mask generator as a module (no parameters), so ADDNet's config carries its blur."""

    def __init__(self, blur: float = 0.04) -> None:
        super().__init__()
        self.blur = blur

    def forward(self, landmarks: torch.Tensor | None, height: int, width: int, batch: int) -> torch.Tensor:
        """(B,1,H,W) masks for (B,5,2) landmarks or None."""
        device = landmarks.device if landmarks is not None else None
        return face_mask(landmarks, height, width, batch=batch, blur=self.blur, device=device)
