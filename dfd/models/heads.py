"""Classification heads on a backbone's pooled feature (`model.head`, or the `head=` config group): the plain
one-logit linear head, GenD's L2-normalised linear head, a small MLP, and a cosine k-nearest-neighbour vote.

dfd scores a face with **one logit** (sigmoid = probability of fake, BCE in training). A two-way softmax head
(GenD, Effort) is the same model: softmax([l0, l1])[1] = sigmoid(l1 - l0), and the two-row linear layer
(W, b) is the one-row layer (w1 - w0, b1 - b0); its cross-entropy equals BCE on that logit. So GenD's
"LinearNorm" head (z = f / ||f||, logits = W z + b, no temperature) is here `w . z + b` with one row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HEADS", "KNNHead", "MLPHead", "NormLinear", "install_head"]

HEADS = ("linear", "l2norm", "mlp", "knn")


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


class MLPHead(nn.Module):
    """Linear -> GELU -> dropout -> Linear(1): a one-hidden-layer head (``head=mlp``, ``model.head_args.hidden``)."""

    def __init__(self, in_features: int, hidden: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, int(hidden))
        self.act = nn.GELU()
        self.drop = nn.Dropout(float(dropout))
        self.fc2 = nn.Linear(int(hidden), 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(features))))


class KNNHead(nn.Module):
    """Cosine k-nearest-neighbour vote over the training set's features (``head=knn``): no gradient training.

    The bank (unit training features, fp16, and their labels) is filled by :meth:`fit` from the feature store
    before training starts, and travels in the checkpoint and the exported bundle like any buffer. A face's
    probability of fake is the similarity-weighted vote of its ``k`` most similar training faces, weights
    ``exp(cos / temperature)`` (the weighted k-NN of the self-supervised papers' evaluations), shrunk towards
    0.5 by one pseudo-vote so that a unanimous vote stays a finite logit: ``p = (k * vote + 0.5) / (k + 1)``.
    """

    def __init__(self, in_features: int, k: int = 20, temperature: float = 0.07, chunk: int = 8192) -> None:
        super().__init__()
        if int(k) < 1 or float(temperature) <= 0:
            raise ValueError(f"head=knn needs model.head_args.k >= 1 and temperature > 0, got k={k}, "
                             f"temperature={temperature}")
        self.in_features, self.k, self.temperature, self.chunk = int(in_features), int(k), float(temperature), int(chunk)
        self.register_buffer("bank", torch.zeros(0, self.in_features, dtype=torch.float16))
        self.register_buffer("bank_labels", torch.zeros(0, dtype=torch.float32))

    @torch.no_grad()
    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep the training features (L2-normalised, fp16) and their labels (0 real, 1 fake) as the bank."""
        device = self.bank.device
        self.bank = F.normalize(features.float(), dim=-1).to(device=device, dtype=torch.float16)
        self.bank_labels = labels.float().to(device)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 1) logits of the weighted vote (the bank is read in chunks: memory stays ~B x chunk)."""
        if self.bank.shape[0] == 0:
            raise RuntimeError("head=knn has an empty bank: it is filled from the training features before fitting")
        z = F.normalize(features.float(), dim=-1)
        k = min(self.k, int(self.bank.shape[0]))
        best_s: torch.Tensor | None = None
        best_y: torch.Tensor | None = None
        for start in range(0, int(self.bank.shape[0]), self.chunk):
            sims = z @ self.bank[start:start + self.chunk].float().T
            labels = self.bank_labels[start:start + self.chunk].unsqueeze(0).expand_as(sims)  # traces per batch
            if best_s is not None and best_y is not None:
                sims, labels = torch.cat([best_s, sims], 1), torch.cat([best_y, labels], 1)
            best_s, idx = sims.topk(min(k, sims.shape[1]), dim=1)
            best_y = labels.gather(1, idx)
        assert best_s is not None and best_y is not None
        w = torch.softmax(best_s / self.temperature, dim=1)  # exp(s/T) normalised: the weighted vote
        vote = (w * best_y).sum(1, keepdim=True)
        p = (k * vote + 0.5) / (k + 1)
        return (torch.log(p) - torch.log1p(-p)).to(features.dtype)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # The bank's size is the training set's: take it from the checkpoint instead of the empty one built here.
        for name in ("bank", "bank_labels"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def install_head(backbone: nn.Module, kind: str, classifier: str, args: dict | None = None) -> None:
    """Replace the timm classifier at `classifier` (a module path, e.g. "head" or "head.fc") by a `kind` head.

    ``args``: the head's own settings (``model.head_args``): ``hidden``, ``dropout`` (mlp); ``k``,
    ``temperature`` (knn).
    """
    if kind not in HEADS:
        raise ValueError(f"model.head={kind!r} is not a head; valid heads: {', '.join(HEADS)}")
    args = dict(args or {})
    if kind == "linear":
        return
    old = backbone.get_submodule(classifier)
    if not isinstance(old, nn.Linear):
        raise ValueError(
            f"model.head={kind} needs a Linear classifier, but {type(backbone).__name__}.{classifier} is "
            f"{type(old).__name__}; use model.head=linear for this backbone"
        )
    try:
        if kind == "l2norm":
            new: nn.Module = NormLinear(old.in_features, old.out_features, bias=old.bias is not None,
                                        device=old.weight.device, dtype=old.weight.dtype)
            with torch.no_grad():
                new.weight.copy_(old.weight)
                if old.bias is not None:
                    new.bias.copy_(old.bias)
        elif kind == "mlp":
            new = MLPHead(old.in_features, **args).to(device=old.weight.device, dtype=old.weight.dtype)
        else:
            new = KNNHead(old.in_features, **args).to(device=old.weight.device)
    except TypeError as e:
        raise ValueError(f"model.head_args {args} do not fit head={kind} ({e})") from e
    parent, _, child = classifier.rpartition(".")
    setattr(backbone.get_submodule(parent) if parent else backbone, child, new)
