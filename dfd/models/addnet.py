"""ADDNet-2D and ADDNet-3D (WildDeepfake, ACM MM 2020): Xception entry flow gated by a landmark face mask."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dfd.errors import ConfigError
from dfd.models.base import Detector
from dfd.models.factory import register_model
from dfd.models.masks import FaceMask
from dfd.models.timm_backbones import build_timm, spec_from_timm, timm_layer_groups

_ENTRY_BLOCKS = ("block1", "block2", "block3")
_REST = tuple(f"block{i}" for i in range(4, 13)) + ("conv3", "bn3", "act3", "conv4", "bn4", "act4")


def _xception(arch: str, **kwargs: Any) -> nn.Module:
    # The ADD block needs the entry-flow layout of timm's Xception (conv1/conv2 stem, block1..block3).
    if arch != "legacy_xception":
        raise ConfigError(f"ADDNet is built on timm's legacy_xception, got arch={arch!r}")
    return build_timm(arch, **kwargs)


def _gate(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x ⊙ pool(M): the mask average-pooled to x's size, broadcast over channels."""
    if mask.shape[-2:] != x.shape[-2:]:
        mask = F.adaptive_avg_pool2d(mask, x.shape[-2:])
    return x * mask


def add_block(xception: nn.Module, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ADDNet's entry flow: the mask multiplies the image, the stem output and each of block1..3's outputs."""
    x = _gate(images, mask)
    m = xception
    x = m.act2(m.bn2(m.conv2(m.act1(m.bn1(m.conv1(x))))))
    for name in _ENTRY_BLOCKS:
        x = getattr(m, name)(_gate(x, mask))
    return _gate(x, mask)


class _ADDNetBase(Detector):
    """Shared parts: a timm legacy_xception (so Xception weights initialise it) and the mask generator."""

    needs_landmarks = True

    def _masks(self, images: torch.Tensor, landmarks: torch.Tensor | None) -> torch.Tensor:
        h, w = images.shape[-2:]
        return self.mask(landmarks, h, w, batch=images.shape[0]).to(images.dtype)


class ADDNet2D(_ADDNetBase):
    """ADDNet-2D: the gated entry flow, then Xception's middle and exit flows and a one-logit head."""

    def __init__(
        self, arch: str = "legacy_xception", img_size: int | None = None, mask_blur: float = 0.04, **kwargs: Any
    ) -> None:
        backbone = _xception(arch, **kwargs)
        super().__init__(spec_from_timm(backbone, img_size))
        self.backbone = backbone
        self.mask = FaceMask(mask_blur)

    def forward(
        self, images: torch.Tensor, landmarks: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B,) logits from (B,C,H,W) images and (B,5,2) landmarks (or an explicit (B,1,H,W) `mask`).

        Clips (B,L,C,H,W) with (B,L,5,2) landmarks get the mean of their frames' logits, like frame models.
        """
        if images.ndim == 5:
            b, n = images.shape[:2]
            flat = [t.flatten(0, 1) if t is not None else None for t in (landmarks, mask)]
            return self(images.flatten(0, 1), flat[0], flat[1]).view(b, n).mean(1)
        if mask is None:
            mask = self._masks(images, landmarks)
        x = add_block(self.backbone, images, mask)
        for name in _REST:
            x = getattr(self.backbone, name)(x)
        return self.backbone.forward_head(x).squeeze(-1)

    def layer_groups(self) -> list[list[str]]:
        """Xception's groups: stem, block1..block12, exit convs, head."""
        return timm_layer_groups(self.backbone, "backbone.")


class ADDNet3D(_ADDNetBase):
    """ADDNet-3D: a shared ADD block per frame, the stacked (B,C,T,H,W) features classified by a small 3D CNN."""

    def __init__(
        self,
        clip_len: int = 8,
        arch: str = "legacy_xception",
        img_size: int | None = None,
        mask_blur: float = 0.04,
        head_channels: Sequence[int] = (128, 128),
        drop_rate: float = 0.2,
        **kwargs: Any,
    ) -> None:
        backbone = _xception(arch, **kwargs)
        super().__init__(spec_from_timm(backbone, img_size, clip_len=clip_len))
        # Only the entry flow is used: drop the rest so DDP sees no unused parameters (weights still load first).
        for name in _REST:
            setattr(backbone, name, nn.Identity())
        backbone.reset_classifier(0, "")
        self.backbone = backbone
        self.mask = FaceMask(mask_blur)
        stages: list[nn.Module] = []
        in_ch = 728  # block3's output channels
        for i, ch in enumerate(head_channels):
            # Stage 0 is a pointwise channel reduction (728 -> ch keeps the head small); later stages mix
            # space and time with 3x3x3 kernels, halving space but not time (clips are short).
            kernel, stride = (1, (1, 1, 1)) if i == 0 else (3, (1, 2, 2))
            stages.append(nn.Sequential(
                nn.Conv3d(in_ch, ch, kernel, stride=stride, padding=kernel // 2, bias=False),
                nn.BatchNorm3d(ch),
                nn.ReLU(inplace=True),
            ))
            in_ch = ch
        self.head3d = nn.Sequential(*stages)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_ch, 1)

    def forward(
        self, images: torch.Tensor, landmarks: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B,) logits from (B,L,C,H,W) clips and (B,L,5,2) landmarks; a (B,C,H,W) batch is a 1-frame clip."""
        if images.ndim == 4:
            images = images[:, None]
            landmarks = landmarks[:, None] if landmarks is not None else None
            mask = mask[:, None] if mask is not None else None
        b, n = images.shape[:2]
        frames = images.flatten(0, 1)
        if mask is None:
            mask = self._masks(frames, landmarks.flatten(0, 1) if landmarks is not None else None)
        else:
            mask = mask.flatten(0, 1)
        feats = add_block(self.backbone, frames, mask)                    # (B*L, C, h, w), shared weights
        vol = feats.view(b, n, *feats.shape[1:]).transpose(1, 2)          # (B, C, T, h, w)
        x = self.head3d(vol).mean(dim=(2, 3, 4))
        return self.fc(self.drop(x)).squeeze(-1)

    def cam_layer(self) -> tuple[nn.Module, None]:
        """Grad-CAM's layer (dfd.models.explain): the shared entry flow's last block, one map per frame."""
        return self.backbone.block3, None

    def layer_groups(self) -> list[list[str]]:
        """Stem, block1..3, each 3D stage, head."""
        groups = [g for g in timm_layer_groups(self.backbone, "backbone.") if g]
        groups += [[f"head3d.{i}.{n}" for n, _ in s.named_parameters()] for i, s in enumerate(self.head3d)]
        return groups + [[f"fc.{n}" for n, _ in self.fc.named_parameters()]]


@register_model("addnet2d")
def addnet2d(**kwargs: Any) -> Detector:
    """ADDNet-2D on timm's legacy_xception (299 px)."""
    return ADDNet2D(**kwargs)


@register_model("addnet3d")
def addnet3d(**kwargs: Any) -> Detector:
    """ADDNet-3D over clips of `clip_len` frames."""
    return ADDNet3D(**kwargs)
