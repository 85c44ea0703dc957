"""The one interface every detector in dfd exposes to the engine, export and inference."""

from __future__ import annotations

import torch
from torch import nn

from dfd.data.transforms import InputSpec

__all__ = ["Detector", "InputSpec", "default_lora_targets", "set_weights_source"]

_WEIGHTS_ATTR = "_dfd_weights_source"


def set_weights_source(module: nn.Module, source: dict | None) -> None:
    """Record where ``module``'s initial weights came from (`dfd.models.weights.WeightsSource.to_dict()`)."""
    object.__setattr__(module, _WEIGHTS_ATTR, source)


class Detector(nn.Module):
    """A face-crop classifier: normalised images (B,C,H,W) or clips (B,L,C,H,W) in, one logit per sample out.

    Subclasses implement `forward_logits` and `layer_groups`; fine-tuning strategies only use the methods here,
    so a new backbone works with every strategy once it says how its parameters group from input to head.
    """

    needs_landmarks: bool = False

    def __init__(self, input_spec: InputSpec) -> None:
        super().__init__()
        self.input_spec = input_spec
        # Norm layers a fine-tuning strategy froze: they stay in eval mode through `train()` so their
        # running statistics do not drift (Lightning calls `model.train()` every epoch).
        self.frozen_norms: list[str] = []

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """Return (B,) logits; 1 = fake."""
        raise NotImplementedError

    @property
    def weights_source(self) -> dict | None:
        """Provenance of the initial weights: None = random init, else ``{"arch", "source", "path", "hub_id",
        "revision", ...}``. Set by `build_timm` on the backbone it builds (or with `set_weights_source`)."""
        for module in self.modules():
            if _WEIGHTS_ATTR in module.__dict__:
                return module.__dict__[_WEIGHTS_ATTR]
        return None

    def forward_features(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """Return the pooled features the head classifies: (B, D) for images, (B, L, D) for clips.

        `forward_head(forward_features(x))` equals `forward(x)`; the split lets feature-space losses and
        latent augmentations (`dfd.engine.losses`) act between the two.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not expose its features (forward_features/forward_head): feature losses "
            f"and latent augmentation need a backbone that does, e.g. any timm model; use loss=bce with this one"
        )

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Return (B,) logits from `forward_features`' output; clip features get the mean of their frames' logits."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its head (forward_head)")

    def has_features(self) -> bool:
        """Whether `forward_features`/`forward_head` are implemented (feature losses need them)."""
        return type(self).forward_features is not Detector.forward_features

    def layer_groups(self) -> list[list[str]]:
        """Parameter names grouped from input (stem) to output; the last group is the classification head."""
        raise NotImplementedError

    def lora_targets(self) -> list[str]:
        """Default module names LoRA adapts for this architecture (Linear or 1x1/grouped-free Conv layers)."""
        return default_lora_targets(self, exclude=set(self.head_param_names()))

    def classifier_names(self) -> list[str]:
        """Parameter and buffer names of what `forward_head` applies to `forward_features`' output: what a head
        trained on stored features (``data.features=cached``) trains, and what a feature store's key leaves out
        of the backbone's weights. Defaults to the head's parameters."""
        return self.head_param_names()

    def head_param_names(self) -> list[str]:
        """Names of the head's parameters (trainable under every strategy)."""
        return self.layer_groups()[-1]

    def train(self, mode: bool = True) -> Detector:
        """Switch modes, keeping the norms a strategy froze in eval mode."""
        super().train(mode)
        for name in self.frozen_norms:
            self.get_submodule(name).train(False)
        return self


def default_lora_targets(model: nn.Module, exclude: set[str]) -> list[str]:
    """Every Linear and every ungrouped 1x1 Conv2d outside the head: the layers peft's LoRA adapts cleanly."""
    names = []
    for name, module in model.named_modules():
        if f"{name}.weight" in exclude:
            continue
        if isinstance(module, nn.Linear) or (
            isinstance(module, nn.Conv2d) and module.groups == 1 and module.kernel_size == (1, 1)
        ):
            names.append(name)
    return names
