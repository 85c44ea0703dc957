"""Training objectives: BCE on the one logit, plus optional hyperspherical feature losses and latent slerp.

GenD (WACV 2026, arXiv 2508.06248; `shared/recipes.md` §1.5) adds to the classification loss, on the unit
features z_i = f_i / ||f_i|| of a mini-batch:

- label-aware **alignment**: mean over all same-label pairs i < j (real-real and fake-fake) of ||z_i - z_j||^α,
  α = 2 (not Wang & Isola's augmented-view alignment);
- **uniformity**: log( mean over all pairs i < j of exp(-t ||z_i - z_j||²) ), t = 2, the mean clamped to
  >= 1e-6 before the log;

L = BCE + w_un · L_un + w_al · L_al (GenD's CLIP recipe: w_un = 0.5, w_al = 0.1; `loss=gend`). dfd's one-logit
BCE is GenD's two-way softmax cross-entropy (see `dfd.models.heads`). The pairwise terms are computed in
float32 with autocast off: bf16 keeps ~3 significant digits, too coarse for distances on the unit sphere.

LNCLIP-DF's latent augmentation (§1.6) is `slerp`: each feature is interpolated along the great circle
towards a random same-class partner, z' = sin((1-t)θ)/sin θ · z_i + sin(tθ)/sin θ · z_j, t ~ U[0, 1], before
the head. `replace` swaps the batch's features for their slerps (the authors' code); `expand` appends
`slerp_ratio` slerps per feature (the paper's 128 -> 1024 batch is ratio 7). The feature norm is interpolated
linearly, so a plain linear head sees features of the usual scale; the l2norm head ignores it.

Pair information (each fake's source video, for paired data) slots in through `groups`: alignment then only
pairs samples that share a label *and* a group.

Under DDP the pairwise terms are computed on each process's own batch (GenD trains on one GPU, batch 128): keep
the per-GPU batch near the recipe's, or expect a different balance of the pairwise terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SLERP_MODES", "DetectionLoss", "alignment_loss", "slerp_features", "uniformity_loss"]

SLERP_MODES = ("none", "replace", "expand")


def _unit(features: torch.Tensor) -> torch.Tensor:
    if features.ndim != 2:
        raise ValueError(f"feature losses need (B, D) features, got shape {tuple(features.shape)}")
    return F.normalize(features.float(), dim=-1, eps=1e-12)


def _sq_dists(z: torch.Tensor) -> torch.Tensor:
    # ||zi - zj||² = 2 - 2 zi.zj for unit vectors: one (B, B) matmul instead of a (B, B, D) difference tensor.
    return (2.0 - 2.0 * (z @ z.T)).clamp_min(0.0)


def uniformity_loss(features: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """log(mean_{i<j} exp(-t ||z_i - z_j||²)), mean clamped >= 1e-6; float32 whatever the input dtype."""
    with torch.autocast(device_type=features.device.type, enabled=False):
        z = _unit(features)
        n = z.shape[0]
        if n < 2:
            return z.sum() * 0.0
        i, j = torch.triu_indices(n, n, 1, device=z.device)
        return torch.exp(-t * _sq_dists(z)[i, j]).mean().clamp_min(1e-6).log()


def alignment_loss(features: torch.Tensor, labels: torch.Tensor, alpha: float = 2.0,
                   groups: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over same-label pairs i<j (and same group, if given) of ||z_i - z_j||^alpha; 0 without pairs."""
    with torch.autocast(device_type=features.device.type, enabled=False):
        z = _unit(features)
        n = z.shape[0]
        i, j = torch.triu_indices(n, n, 1, device=z.device)
        same = labels[i] == labels[j]
        if groups is not None:
            same &= groups[i] == groups[j]
        if not bool(same.any()):
            return z.sum() * 0.0
        sq = _sq_dists(z)[i[same], j[same]]
        dist = sq if alpha == 2 else sq.clamp_min(1e-12).pow(alpha / 2)
        return dist.mean()


def _same_class_partners(labels: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # For each sample a uniformly drawn *other* sample of its class (itself when it is alone in its class).
    partner = torch.arange(len(labels), device=labels.device)
    for value in labels.unique():
        idx = (labels == value).nonzero().squeeze(1)
        n = len(idx)
        if n < 2:
            continue
        shift = torch.randint(1, n, (n,), generator=generator, device="cpu").to(labels.device)
        partner[idx] = idx[(torch.arange(n, device=labels.device) + shift) % n]
    return partner


def slerp_features(features: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None,
                   t: torch.Tensor | None = None, partner: torch.Tensor | None = None) -> torch.Tensor:
    """Spherical interpolation of each feature towards a random same-class partner (float32 maths).

    Directions follow the great circle; the norm is interpolated linearly. `t` (B,) and `partner` (B,) may be
    given (tests); by default t ~ U[0, 1] and the partner is a random other sample of the same class.
    """
    with torch.autocast(device_type=features.device.type, enabled=False):
        f = features.float()
        if partner is None:
            partner = _same_class_partners(labels, generator)
        if t is None:
            t = torch.rand(len(f), generator=generator).to(f.device)
        t = t.float().unsqueeze(1)
        norm = f.norm(dim=1, keepdim=True)
        zi, zj = F.normalize(f, dim=1), F.normalize(f[partner], dim=1)
        cos = (zi * zj).sum(1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7)
        theta = torch.acos(cos)
        sin = torch.sin(theta)
        near = sin < 1e-4  # (almost) the same direction: the linear blend is the limit and stays finite
        safe = torch.where(near, torch.ones_like(sin), sin)
        a = torch.where(near, 1 - t, torch.sin((1 - t) * theta) / safe)
        b = torch.where(near, t, torch.sin(t * theta) / safe)
        z = F.normalize(a * zi + b * zj, dim=1)
        out = z * ((1 - t) * norm + t * norm[partner])
    return out.to(features.dtype)


class DetectionLoss(nn.Module):
    """BCE on the logit + weighted uniformity/alignment on the features; optional slerp latent augmentation.

    Args:
        uniformity: weight of the uniformity loss (GenD: 0.5).
        alignment: weight of the label-aware alignment loss (GenD: 0.1).
        uniformity_t: the uniformity temperature t (GenD: 2).
        alignment_alpha: the alignment exponent α (GenD: 2).
        slerp: latent augmentation, "none" | "replace" | "expand" (training only).
        slerp_ratio: with "expand", slerped copies appended per feature.
    """

    def __init__(self, uniformity: float = 0.0, alignment: float = 0.0, uniformity_t: float = 2.0,
                 alignment_alpha: float = 2.0, slerp: str = "none", slerp_ratio: int = 1) -> None:
        super().__init__()
        if uniformity < 0 or alignment < 0:
            raise ValueError(f"loss.uniformity and loss.alignment must be >= 0, got {uniformity}, {alignment}")
        if slerp not in SLERP_MODES:
            raise ValueError(f"loss.slerp={slerp!r} is not one of {', '.join(SLERP_MODES)}")
        if int(slerp_ratio) < 1:
            raise ValueError(f"loss.slerp_ratio must be >= 1, got {slerp_ratio}")
        self.uniformity, self.alignment = float(uniformity), float(alignment)
        self.uniformity_t, self.alignment_alpha = float(uniformity_t), float(alignment_alpha)
        self.slerp, self.slerp_ratio = slerp, int(slerp_ratio)

    @property
    def needs_features(self) -> bool:
        """Whether training must split the model into features and head (feature losses or slerp)."""
        return bool(self.uniformity or self.alignment or self.slerp != "none")

    def augment(self, features: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Slerp latent augmentation of a training batch: (features, labels, groups) the head and losses see."""
        if self.slerp == "none":
            return features, labels, groups
        if self.slerp == "replace":
            return slerp_features(features, labels), labels, groups
        draws = [slerp_features(features, labels) for _ in range(self.slerp_ratio)]
        rep = self.slerp_ratio + 1
        return (torch.cat([features, *draws]), labels.repeat(rep),
                None if groups is None else groups.repeat(rep))

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, features: torch.Tensor | None = None,
                groups: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total loss, {term: unweighted value}) for logits (B,), labels (B,) in {0, 1}, features (B, D)."""
        target = labels.float()
        bce = F.binary_cross_entropy_with_logits(logits.float(), target)
        terms = {"bce": bce}
        total = bce
        if self.uniformity or self.alignment:
            if features is None:
                raise ValueError("uniformity/alignment losses need the features (Detector.forward_features)")
            if self.uniformity:
                terms["uniformity"] = uniformity_loss(features, self.uniformity_t)
                total = total + self.uniformity * terms["uniformity"]
            if self.alignment:
                terms["alignment"] = alignment_loss(features, labels, self.alignment_alpha, groups)
                total = total + self.alignment * terms["alignment"]
        return total, terms
