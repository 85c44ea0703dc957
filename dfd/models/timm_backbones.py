"""timm backbones with a one-logit head, and the registered presets (vit_b16, convnextv2, efficientnet_b4, ...)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import timm
import torch
from timm.models import group_parameters

from dfd.models.base import Detector, InputSpec, set_weights_source
from dfd.models.factory import register_model
from dfd.models.heads import install_head
from dfd.models.weights import check_timm_name, resolve_pretrained

log = logging.getLogger(__name__)


def build_timm(
    arch: str,
    pretrained: bool = False,
    weights: str | None = None,
    weights_dir: str | None = None,
    img_size: int | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """Create a timm model with one output; pretrained weights come from `resolve_pretrained`'s order.

    The one entry point for every timm-based backbone (any arch, ``.tag`` suffixes included): the returned
    module carries the provenance of its weights, which `Detector.weights_source` reports (None: random init).
    """
    kwargs = {"num_classes": 1, **kwargs}
    check_timm_name(arch)
    source = None
    if pretrained or weights:
        # Resolve (or fetch) the file before building anything: a missing one fails at once, with the fix.
        source = resolve_pretrained(arch, weights=weights, weights_dir=weights_dir)
        log.info("pretrained weights for %s: %s", arch, source.describe())
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": source.path})
    model = None
    if img_size is not None:
        # CNNs take any input size and have no img_size argument; only the InputSpec changes.
        with contextlib.suppress(TypeError):
            model = timm.create_model(arch, img_size=img_size, **kwargs)
    if model is None:
        model = timm.create_model(arch, **kwargs)
    set_weights_source(model, source.to_dict() if source is not None else None)
    return model


def spec_from_timm(model: torch.nn.Module, img_size: int | None = None, clip_len: int | None = None) -> InputSpec:
    """InputSpec from timm's pretrained config, so normalisation always matches the weights."""
    cfg = model.pretrained_cfg
    size = int(img_size if img_size is not None else cfg["input_size"][-1])
    return InputSpec(
        size=size,
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bicubic")),
        clip_len=clip_len,
    )


def timm_layer_groups(model: torch.nn.Module, prefix: str) -> list[list[str]]:
    """timm's fine-grained parameter groups (stem, blocks..., head), named as in the enclosing module."""
    groups = group_parameters(model, model.group_matcher(coarse=False))
    out = [[f"{prefix}{n}" for n in names] for _, names in sorted(groups.items())]
    classifier = model.pretrained_cfg.get("classifier", "head")
    # The head is the classifier's parent when it is nested (ConvNeXt: head.norm + head.fc), else the
    # classifier alone; it gets a group of its own so "head" means the same thing for every backbone.
    parent = classifier.rpartition(".")[0]
    head_prefix = f"{prefix}{parent or classifier}."
    head = {n for g in out for n in g if n.startswith(head_prefix)}
    out = [[n for n in g if n not in head] for g in out]
    return [g for g in out if g] + [sorted(head)]


class TimmDetector(Detector):
    """Any timm image model as a frame-level detector; clips are scored per frame and averaged.

    `head` picks the classifier on timm's pooled features: "linear" (timm's own one-logit Linear) or "l2norm"
    (the same Linear on L2-normalised features, GenD's head; see `dfd.models.heads`). Pooling is timm's
    `global_pool` (passed through with the other timm keyword arguments).
    """

    def __init__(self, arch: str, img_size: int | None = None, head: str = "linear", head_args: dict | None = None,
                 feature_dtype: str | None = None, **kwargs: Any) -> None:
        backbone = build_timm(arch, img_size=img_size, **kwargs)
        super().__init__(spec_from_timm(backbone, img_size))
        self.arch = arch
        self.backbone = backbone
        self.head_kind = head
        if head != "linear":  # the default keeps timm's model untouched, whatever its classifier looks like
            install_head(backbone, head, self._classifier_path(), head_args)
        # A head trained on stored features (data.features=cached) saw them rounded to the store's dtype: the
        # whole model rounds them the same way, so evaluation and export on raw media compute what was trained.
        if feature_dtype not in (None, "float16"):
            raise ValueError(f"model.feature_dtype={feature_dtype!r}: only null or float16 (the feature store's dtype)")
        self.feature_dtype = feature_dtype

    def _classifier_path(self) -> str:
        path = self.backbone.pretrained_cfg.get("classifier", "head")
        try:
            found = self.backbone.get_submodule(path) is self.backbone.get_classifier()
        except AttributeError:
            found = False
        if not found:
            raise ValueError(f"timm model {self.arch!r}: its classifier is not one module at {path!r}; "
                             "model.head and feature losses need one (use model.head=linear and loss=bce)")
        return path

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """Return (B,) logits; (B,L,C,H,W) clips get the mean of their frames' logits."""
        if self.feature_dtype is not None:
            return self.forward_head(self.forward_features(images))
        if images.ndim == 5:
            b, n = images.shape[:2]
            return self.backbone(images.flatten(0, 1)).view(b, n).mean(1)
        return self.backbone(images).squeeze(-1)

    def forward_features(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """timm's pooled pre-logits features: (B, D), or (B, L, D) for clips."""
        if images.ndim == 5:
            b, n = images.shape[:2]
            return self.forward_features(images.flatten(0, 1)).unflatten(0, (b, n))
        features = self.backbone.forward_head(self.backbone.forward_features(images), pre_logits=True)
        if self.feature_dtype is not None:
            features = features.to(torch.float16).to(features.dtype)
        return features

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """(B,) logits from `forward_features`; (B, L, D) clip features get the mean of their frames' logits."""
        classifier = self.backbone.get_classifier()
        if not isinstance(classifier, torch.nn.Module):
            self._classifier_path()  # raises the one-line explanation
        logits = classifier(features).squeeze(-1)
        return logits.mean(-1) if features.ndim == 3 else logits

    def layer_groups(self) -> list[list[str]]:
        """Stem, blocks, head as timm groups them (ViT blocks, ConvNeXt blocks, EfficientNet blocks, ...)."""
        return timm_layer_groups(self.backbone, "backbone.")

    def classifier_names(self) -> list[str]:
        """Parameters and buffers of the module `forward_head` applies (the classifier alone: ConvNeXt's head
        norm belongs to the features)."""
        prefix = f"backbone.{self._classifier_path()}."
        names = [n for n, _ in self.named_parameters()] + [n for n, _ in self.named_buffers()]
        return [n for n in names if n.startswith(prefix)]

    def no_weight_decay(self) -> set[str]:
        """timm's own no-decay list (position embeddings, class tokens)."""
        return {f"backbone.{n}" for n in getattr(self.backbone, "no_weight_decay", set)()}

    def lora_targets(self) -> list[str]:
        """ViT: attention qkv/proj and MLP fc1/fc2; CNNs: every Linear and ungrouped 1x1 conv outside the head."""
        names = super().lora_targets()
        if any(n.endswith(".attn.qkv") for n in names):
            keep = (".attn.qkv", ".attn.proj", ".mlp.fc1", ".mlp.fc2")
            names = [n for n in names if n.endswith(keep)]
        return names


@register_model("timm")
def timm_model(arch: str, **kwargs: Any) -> Detector:
    """Any timm model by name (`model.arch`)."""
    return TimmDetector(arch, **kwargs)


@register_model("vit_b16")
def vit_b16(arch: str = "vit_base_patch16_224", **kwargs: Any) -> Detector:
    """ViT-B/16 at 224 px."""
    return TimmDetector(arch, **kwargs)


@register_model("convnextv2")
def convnextv2(arch: str = "convnextv2_tiny", **kwargs: Any) -> Detector:
    """ConvNeXt V2 (tiny by default; arch=convnextv2_base for base)."""
    return TimmDetector(arch, **kwargs)


@register_model("efficientnet_b4")
def efficientnet_b4(arch: str = "efficientnet_b4", img_size: int | None = 380, **kwargs: Any) -> Detector:
    """EfficientNet-B4 at 380 px: the size the DFDC-era detectors trained at (timm's default is 320)."""
    return TimmDetector(arch, img_size=img_size, **kwargs)


@register_model("xception")
def xception(arch: str = "legacy_xception", **kwargs: Any) -> Detector:
    """Xception (timm legacy_xception, 299 px), the FaceForensics++ baseline."""
    return TimmDetector(arch, **kwargs)
