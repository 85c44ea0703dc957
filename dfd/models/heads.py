"""Classification heads: the plain one-logit linear head and GenD's L2-normalised linear head (`model.head`).

dfd scores a face with **one logit** (sigmoid = probability of fake, BCE in training). A two-way softmax head
(GenD, Effort) is the same model: softmax([l0, l1])[1] = sigmoid(l1 - l0), and the two-row linear layer
(W, b) is the one-row layer (w1 - w0, b1 - b0); its cross-entropy equals BCE on that logit. So GenD's
"LinearNorm" head (z = f / ||f||, logits = W z + b, no temperature) is here `w . z + b` with one row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HEADS", "NormLinear", "install_head"]

HEADS = ("linear", "l2norm")


class NormLinear(nn.Linear):
    """A linear layer on the L2-normalised input: logit = w . (f / ||f||) + b (GenD's "LinearNorm").

    No temperature or scale: ||w|| sets the logit scale and is learnt (GenD trains it without weight decay,
    and dfd's optimiser groups never decay 1-d parameters; this head's weight is 2-d and follows
    `optim.weight_decay`). The parameter names are nn.Linear's, so checkpoints, strategies and exports treat
    it as any head.
    """

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of the unit-normalised features (the norm is taken in float32, also under bf16 autocast)."""
        z = F.normalize(features.float(), dim=-1, eps=1e-12)
        return F.linear(z.to(features.dtype), self.weight, self.bias)


def install_head(backbone: nn.Module, kind: str, classifier: str) -> None:
    """Replace the timm classifier at `classifier` (a module path, e.g. "head" or "head.fc") by a `kind` head."""
    if kind not in HEADS:
        raise ValueError(f"model.head={kind!r} is not a head; valid heads: {', '.join(HEADS)}")
    if kind == "linear":
        return
    old = backbone.get_submodule(classifier)
    if not isinstance(old, nn.Linear):
        raise ValueError(
            f"model.head={kind} needs a Linear classifier, but {type(backbone).__name__}.{classifier} is "
            f"{type(old).__name__}; use model.head=linear for this backbone"
        )
    new = NormLinear(old.in_features, old.out_features, bias=old.bias is not None,
                     device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    parent, _, child = classifier.rpartition(".")
    setattr(backbone.get_submodule(parent) if parent else backbone, child, new)
