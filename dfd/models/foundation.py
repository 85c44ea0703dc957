"""Foundation-model backbones of the generalisation recipes (GenD, Effort): CLIP, DINOv2, DINOv3, PE-Core.

Each preset is a timm model with the pooling and input size its recipe uses; mean/std come from the weights'
pretrained config through the InputSpec, as for every backbone. All are `TimmDetector`s, so every
fine-tuning strategy, head (`model.head`) and feature loss applies. Sources: `shared/recipes.md` §1.2, §2.

- CLIP: timm's *quickgelu* variants hold OpenAI's weights with their original activation (the plain
  `vit_*_clip_224.openai` names run them with GELU). The feature is the post-LayerNorm CLS token before CLIP's
  projection (HF `pooler_output`): timm's `global_pool="token"` with `fc_norm` off, the projection replaced by
  the one-logit head (timm drops it when loading because the class count differs).
- DINOv2 / DINOv3: the CLS token (`global_pool="token"`; timm's DINOv3 default is the patch mean), at 224 px
  (timm's configs say 518 and 256, their last training stage; GenD feeds 224-px crops).
- PE-Core-L: built at 224 px with `dynamic_img_size` like GenD (the weights are for 336 px; timm resamples
  the position embedding); the feature is PE's attention pool (`global_pool="map"`).
"""

from __future__ import annotations

from typing import Any

from dfd.models.base import Detector
from dfd.models.factory import register_model
from dfd.models.timm_backbones import TimmDetector


@register_model("clip_vit_b16")
def clip_vit_b16(arch: str = "vit_base_patch16_clip_quickgelu_224.openai", global_pool: str = "token",
                 **kwargs: Any) -> Detector:
    """OpenAI CLIP ViT-B/16 image tower (QuickGELU), post-LN CLS token, 224 px, CLIP mean/std."""
    return TimmDetector(arch, global_pool=global_pool, **kwargs)


@register_model("clip_vit_l14")
def clip_vit_l14(arch: str = "vit_large_patch14_clip_quickgelu_224.openai", global_pool: str = "token",
                 **kwargs: Any) -> Detector:
    """OpenAI CLIP ViT-L/14 image tower (QuickGELU), post-LN CLS token, 224 px: GenD's and Effort's backbone."""
    return TimmDetector(arch, global_pool=global_pool, **kwargs)


@register_model("dinov2_vit_l14")
def dinov2_vit_l14(arch: str = "vit_large_patch14_dinov2.lvd142m", img_size: int | None = 224,
                   global_pool: str = "token", **kwargs: Any) -> Detector:
    """DINOv2 ViT-L/14 (LVD-142M), CLS token, 224 px, ImageNet mean/std."""
    return TimmDetector(arch, img_size=img_size, global_pool=global_pool, **kwargs)


@register_model("dinov3_vit_l16")
def dinov3_vit_l16(arch: str = "vit_large_patch16_dinov3.lvd1689m", img_size: int | None = 224,
                   global_pool: str = "token", **kwargs: Any) -> Detector:
    """DINOv3 ViT-L/16 (LVD-1689M), CLS token (GenD's feature), 224 px, ImageNet mean/std."""
    return TimmDetector(arch, img_size=img_size, global_pool=global_pool, **kwargs)


@register_model("pe_core_l14")
def pe_core_l14(arch: str = "vit_pe_core_large_patch14_336.fb", img_size: int | None = 224,
                dynamic_img_size: bool = True, global_pool: str = "map", **kwargs: Any) -> Detector:
    """Perception Encoder Core-L/14, attention-pool feature, built at 224 px as GenD does; mean = std = 0.5."""
    return TimmDetector(arch, img_size=img_size, dynamic_img_size=dynamic_img_size, global_pool=global_pool,
                        **kwargs)
