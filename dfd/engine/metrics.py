"""Frame- and video-level AUC, accuracy, AP and EER with torchmetrics, exact under DDP.

Exactness: every prediction carries its dataset row index. The metric state is gathered from all processes and
de-duplicated on that index before anything is computed, so a sample repeated by a distributed sampler's
padding is counted once, and a 2-process run gives the numbers of a 1-process run on the same data.

Video level: the mean of a video's frame probabilities (video ids are unique across a dataset, never a bare
folder name). Per method: reals + that method's fakes (the FF++ per-manipulation protocol).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_average_precision,
    binary_roc,
)
from torchmetrics.utilities import dim_zero_cat

ROC_POINTS = 201


def equal_error_rate(fpr: torch.Tensor, tpr: torch.Tensor) -> float:
    """The error rate where false-positive and false-negative rates are equal (linear interpolation)."""
    fnr = 1.0 - tpr
    diff = (fpr - fnr).double()
    idx = int(torch.nonzero(diff >= 0)[0]) if bool((diff >= 0).any()) else len(diff) - 1
    if idx == 0 or diff[idx] == 0:
        return float((fpr[idx] + fnr[idx]) / 2)
    d0, d1 = float(diff[idx - 1]), float(diff[idx])
    w = d0 / (d0 - d1)  # where the segment crosses fpr == fnr
    return float(fpr[idx - 1] + w * (fpr[idx] - fpr[idx - 1]))


def binary_scores(prob: torch.Tensor, target: torch.Tensor, roc: bool = False) -> dict:
    """AUC, ACC@0.5, AP, EER (+ ROC points) for probabilities of the fake class; NaN where undefined."""
    target = target.long()
    n_fake = int(target.sum())
    n = int(target.numel())
    out: dict = {"n": n, "n_real": n - n_fake, "n_fake": n_fake}
    out["acc"] = float(binary_accuracy(prob, target, threshold=0.5)) if n else math.nan
    # Log loss (the DFDC competition metric): also what breaks ties between epochs with equal AUC.
    p = prob.double().clamp(1e-7, 1 - 1e-7)
    out["logloss"] = float(-(target * p.log() + (1 - target) * (1 - p).log()).mean()) if n else math.nan
    if 0 < n_fake < n:
        out["auc"] = float(binary_auroc(prob, target))
        out["ap"] = float(binary_average_precision(prob, target))
        fpr, tpr, _ = binary_roc(prob, target)
        out["eer"] = equal_error_rate(fpr, tpr)
        if roc:
            grid = np.linspace(0.0, 1.0, ROC_POINTS)
            # ROC is a step curve: take the best TPR reached at each FPR on the grid.
            f, t = fpr.double().numpy(), tpr.double().numpy()
            tg = np.maximum.accumulate(np.interp(grid, f, t, left=0.0, right=1.0))
            out["roc"] = {"fpr": grid.round(5).tolist(), "tpr": tg.round(5).tolist()}
    else:
        out.update(auc=math.nan, ap=math.nan, eer=math.nan)
    return out


def video_aggregate(prob: torch.Tensor, target: torch.Tensor, video: torch.Tensor, method: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean frame probability per video, with each video's label and method."""
    vids, inv = torch.unique(video, return_inverse=True)
    counts = torch.zeros(len(vids), dtype=torch.float64).index_add_(0, inv, torch.ones_like(prob, dtype=torch.float64))
    sums = torch.zeros(len(vids), dtype=torch.float64).index_add_(0, inv, prob.double())
    first = torch.full((len(vids),), len(prob), dtype=torch.long).scatter_reduce_(
        0, inv, torch.arange(len(prob)), reduce="amin"
    )
    return (sums / counts).float(), target[first], method[first]


def detection_report(prob: torch.Tensor, target: torch.Tensor, video: torch.Tensor, method: torch.Tensor,
                     method_names: Sequence[str] | None = None) -> dict:
    """Frame and video metrics, ROC curves and the per-method breakdown of one evaluation set."""
    vprob, vtarget, vmethod = video_aggregate(prob, target, video, method)
    frame = binary_scores(prob, target, roc=True)
    vid = binary_scores(vprob, vtarget, roc=True)
    out = {
        "frame": {k: v for k, v in frame.items() if k != "roc"},
        "video": {k: v for k, v in vid.items() if k != "roc"},
        "roc": {k: s["roc"] for k, s in (("frame", frame), ("video", vid)) if "roc" in s},
        "per_method": {},
    }
    fake_methods = torch.unique(method[target == 1]).tolist()
    if len(fake_methods) > 1 or method_names is not None:
        for m in fake_methods:
            name = method_names[m] if method_names is not None else str(m)
            fm = (target == 0) | (method == m)
            vm = (vtarget == 0) | (vmethod == m)
            out["per_method"][name] = {
                "frame": binary_scores(prob[fm], target[fm]),
                "video": binary_scores(vprob[vm], vtarget[vm]),
            }
    return out


class DetectionMetrics(Metric):
    """Accumulates (row index, probability, label, video, method) and computes ``detection_report``."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("index", "prob", "target", "video", "method"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.method_names: Sequence[str] | None = None

    def update(self, prob: torch.Tensor, target: torch.Tensor, video: torch.Tensor, index: torch.Tensor,
               method: torch.Tensor) -> None:
        self.index.append(index.detach().long().flatten())
        self.prob.append(prob.detach().float().flatten())
        self.target.append(target.detach().long().flatten())
        self.video.append(video.detach().long().flatten())
        self.method.append(method.detach().long().flatten())

    def gathered(self) -> dict[str, torch.Tensor]:
        """All processes' predictions, each dataset row once, in row order (on CPU)."""
        if (len(self.index) == 0) if isinstance(self.index, list) else self.index.numel() == 0:
            empty = torch.zeros(0)
            return {"index": empty.long(), "prob": empty, "target": empty.long(), "video": empty.long(),
                    "method": empty.long()}
        idx = dim_zero_cat(self.index).cpu()
        order = torch.argsort(idx, stable=True)
        idx = idx[order]
        keep = torch.ones_like(idx, dtype=torch.bool)
        keep[1:] = idx[1:] != idx[:-1]  # drop repeats introduced by distributed padding
        sel = order[keep]
        return {
            "index": idx[keep],
            "prob": dim_zero_cat(self.prob).cpu()[sel],
            "target": dim_zero_cat(self.target).cpu()[sel],
            "video": dim_zero_cat(self.video).cpu()[sel],
            "method": dim_zero_cat(self.method).cpu()[sel],
        }

    def compute(self) -> dict:
        g = self.gathered()
        return detection_report(g["prob"], g["target"], g["video"], g["method"], self.method_names)


def flat_metrics(report: dict, prefix: str) -> dict[str, float]:
    """``{prefix}/frame_auc``-style scalars for loggers (counts and curves left out)."""
    out = {}
    for level in ("frame", "video"):
        for k in ("auc", "acc", "ap", "eer", "logloss"):
            out[f"{prefix}/{level}_{k}"] = float(report[level][k])
    return out
