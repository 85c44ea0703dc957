"""Frame- and video-level AUC, accuracy, AP and EER with torchmetrics, exact under DDP.

Exactness: every prediction carries its dataset row index. The metric state is gathered from all processes and
de-duplicated on that index before anything is computed, so a sample repeated by a distributed sampler's
padding is counted once, and a 2-process run gives the numbers of a 1-process run on the same data.

Frame and video level follow the video-score rule (``data.video_score``, one home: dfd.engine.video_score): a
frame's score aggregates its faces (max by default; several faces per frame with ``extract.choice=all``), a
video's is the mean of its frames' (video ids are unique across a dataset, never a bare folder name). With one
face per frame the frame score is the crop's probability and the video score the mean of them. Per method:
reals + that method's fakes (the FF++ per-manipulation protocol).

Precision: probabilities are always computed from float32 logits (``probabilities``), whatever the training
precision: a sigmoid evaluated in bf16 rounds every logit above ~6 to exactly 1.0, and ties destroy AUC.

Uncertainty: video-level AUC carries a 95 % percentile-bootstrap interval over videos (``bootstrap_auc_ci``),
resampled within each class; the settings and the small-sample thresholds live here, once.

Images are items of their own (index kind ``image``), never one-frame videos. A set of still images reports the
``image`` level only (an image's score: its faces by the frame step of the video-score rule; the interval over
images); a set holding both reports ``frame``/``video`` over its videos, ``image`` over its images and ``item``
over every item (each video's and each image's score: the set as a whole). Every report names its ``unit``
(video | image | mixed) and its ``headline`` level (video | image | item), the one a single number stands for:
selection, the console table, the report's matrix where a set lacks the asked level (:data:`UNIT_HEADLINE`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_average_precision,
    binary_roc,
)
from torchmetrics.utilities import dim_zero_cat

from dfd.engine.video_score import DEFAULT_VIDEO_SCORE, check_video_score, score

ROC_POINTS = 201
#: ACC is reported at this fixed threshold (an uncalibrated model's; ``dfd-export --calibrate`` picks one).
ACC_THRESHOLD = 0.5
#: Bootstrap of the video-level AUC: resamples, interval level, seed (identical intervals run to run).
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_LEVEL = 0.95
BOOTSTRAP_SEED = 0
#: Fewer videos than this in a class of an evaluation split gets a warning: AUC swings by several points.
MIN_VIDEOS_PER_CLASS = 20
#: Every level a report can hold, and the headline level of each unit of evaluation (see the module docstring).
LEVELS = ("frame", "video", "image", "item")
UNIT_HEADLINE = {"video": "video", "image": "image", "mixed": "item"}
#: What one scored item of a level is, in words (console table, notes).
ITEM_WORDS = {"frame": "frames", "video": "videos", "image": "images", "item": "items"}


def headline(report: dict) -> str:
    """The level a report's one number stands for (reports written before units: ``video``)."""
    return str(report.get("headline") or "video")


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """P(fake) from logits, computed in float32 whatever the autocast precision (bf16 saturates at ~6)."""
    return torch.sigmoid(logits.detach().float())


def equal_error_rate(fpr: torch.Tensor, tpr: torch.Tensor) -> float:
    """The error rate where false-positive and false-negative rates are equal (linear interpolation).

    Not torchmetrics' ``binary_eer``: that one reports (FPR + FNR) / 2 at the ROC vertex where they are closest,
    which on a small test set sits up to a few points off the crossing (10 videos: 0.381 against the crossing's
    0.429); the crossing of the two rates on the ROC segment is the EER's definition and what dfd has reported.
    """
    fnr = 1.0 - tpr
    diff = (fpr - fnr).double()
    idx = int(torch.nonzero(diff >= 0)[0]) if bool((diff >= 0).any()) else len(diff) - 1
    if idx == 0 or diff[idx] == 0:
        return float((fpr[idx] + fnr[idx]) / 2)
    d0, d1 = float(diff[idx - 1]), float(diff[idx])
    w = d0 / (d0 - d1)  # where the segment crosses fpr == fnr
    return float(fpr[idx - 1] + w * (fpr[idx] - fpr[idx - 1]))


def rank_auc(prob: torch.Tensor, target: torch.Tensor) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half), exact in float64.

    torchmetrics returns AUC in float32, which differs from sklearn / a reader's own computation in the 8th
    digit; a file of per-video scores must reproduce the reported AUC exactly.
    """
    p = prob.double().flatten()
    y = target.flatten().bool()
    n1 = int(y.sum())
    n0 = len(y) - n1
    _, inverse, counts = torch.unique(p, sorted=True, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts  # 0-based rank of each distinct value's first occurrence
    midrank = (first.double() + (counts.double() + 1) / 2)[inverse]  # 1-based average rank of ties
    return float((midrank[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def binary_scores(prob: torch.Tensor, target: torch.Tensor, roc: bool = False) -> dict:
    """AUC, ACC@0.5, AP, EER (+ ROC points) for probabilities of the fake class; NaN where undefined."""
    target = target.long()
    n_fake = int(target.sum())
    n = int(target.numel())
    out: dict = {"n": n, "n_real": n - n_fake, "n_fake": n_fake}
    out["acc"] = float(binary_accuracy(prob, target, threshold=ACC_THRESHOLD)) if n else math.nan
    # Log loss (the DFDC competition metric): also what breaks ties between epochs with equal AUC.
    p = prob.double().clamp(1e-7, 1 - 1e-7)
    out["logloss"] = float(-(target * p.log() + (1 - target) * (1 - p).log()).mean()) if n else math.nan
    if 0 < n_fake < n:
        out["auc"] = rank_auc(prob, target)
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


def video_aggregate(prob: torch.Tensor, target: torch.Tensor, video: torch.Tensor, method: torch.Tensor,
                    frame: torch.Tensor | None = None, track: torch.Tensor | None = None,
                    rule: str = DEFAULT_VIDEO_SCORE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Video scores by the video-score rule (float64, videos in sorted id order), with label and method.

    ``frame``/``track``: each crop's frame number and face id (None: every crop its own frame, one face). The
    float64 scores are what every video-level metric and ``predictions.parquet`` use, so the file reproduces
    the reported AUC exactly.
    """
    s = score(prob, video, frame, track, rule)
    return s.video_prob, target[s.video_row], method[s.video_row]


def bootstrap_auc_ci(prob: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor,
                     resamples: int = BOOTSTRAP_RESAMPLES, level: float = BOOTSTRAP_LEVEL,
                     seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile-bootstrap interval of the AUC, resampling reals and fakes separately (class sizes fixed).

    Stratified, as pROC does by default: every resample keeps the evaluated split's real/fake counts, so AUC is
    defined in each one (an unstratified resample of a small split can draw one class only). Vectorised: each
    resample is a vector of multiplicities, and its AUC (ties count half) is read off cumulative counts of the
    sorted reals, so 1,000 resamples of thousands of videos take milliseconds. NaN when a class is absent.
    """
    s = np.asarray(prob, np.float64).ravel()
    y = np.asarray(target).ravel().astype(bool)
    pos, neg = s[y], np.sort(s[~y])
    n1, n0 = len(pos), len(neg)
    if n1 == 0 or n0 == 0 or resamples < 1:
        return math.nan, math.nan
    below = np.searchsorted(neg, pos, "left")  # reals strictly below each fake
    upto = np.searchsorted(neg, pos, "right")  # reals at or below
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 4_000_000 // max(n0, n1)))  # bound memory: chunk x videos int64
    aucs = np.empty(resamples, np.float64)
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        rows = np.arange(b)[:, None]
        c0 = np.bincount((rng.integers(0, n0, (b, n0)) + rows * n0).ravel(), minlength=b * n0).reshape(b, n0)
        c1 = np.bincount((rng.integers(0, n1, (b, n1)) + rows * n1).ravel(), minlength=b * n1).reshape(b, n1)
        cum = np.zeros((b, n0 + 1), np.float64)
        np.cumsum(c0, axis=1, out=cum[:, 1:])
        lo = cum[:, below]
        wins = lo + 0.5 * (cum[:, upto] - lo)  # per fake: resampled reals it beats (+ half the ties)
        aucs[start:start + b] = np.einsum("ij,ij->i", c1, wins) / (n1 * n0)
    alpha = (1.0 - level) / 2
    lo_q, hi_q = np.quantile(aucs, [alpha, 1.0 - alpha])
    return float(lo_q), float(hi_q)


def detection_report(prob: torch.Tensor, target: torch.Tensor, video: torch.Tensor, method: torch.Tensor,
                     method_names: Sequence[str] | None = None, ci: bool = False, frame: torch.Tensor | None = None,
                     track: torch.Tensor | None = None, video_score: str = DEFAULT_VIDEO_SCORE,
                     image_videos: np.ndarray | torch.Tensor | None = None) -> dict:
    """Metrics, ROC curves and breakdowns of one evaluation set, at the levels its items have.

    ``image_videos``: per video code, whether that item is a still image (None: all videos). Videos only: the
    ``frame`` and ``video`` levels (unit ``video``); images only: the ``image`` level (unit ``image``); both:
    ``frame``/``video`` over the videos, ``image`` over the images, ``item`` over all (unit ``mixed``). Other
    arguments as :func:`_video_report`, which computes each part.
    """
    args = (method_names, ci)
    kw = {"video_score": video_score}
    is_img = (torch.as_tensor(np.asarray(image_videos, bool))[video.long()] if image_videos is not None and len(video)
              else torch.zeros(len(video), dtype=torch.bool))
    if not bool(is_img.any()):
        return {"unit": "video", "headline": "video",
                **_video_report(prob, target, video, method, *args, frame=frame, track=track, **kw)}

    def part(rows: torch.Tensor) -> dict:
        return _video_report(prob[rows], target[rows], video[rows], method[rows], *args,
                             frame=None if frame is None else frame[rows], track=None if track is None else track[rows],
                             **kw)

    # An image is a one-frame item: its "video" score is the image's score (its faces by the rule's frame step).
    images = _relevel(part(is_img), "image")
    if bool(is_img.all()):
        return {"unit": "image", "headline": "image", **images}
    videos = part(~is_img)
    items = _relevel(_video_report(prob, target, video, method, *args, frame=frame, track=track, **kw), "item")
    out: dict = {"unit": "mixed", "headline": "item", "frame": videos["frame"], "video": videos["video"],
                 "image": images["image"], "item": items["item"],
                 "roc": {**videos.get("roc", {}), **images.get("roc", {}), **items.get("roc", {})}}
    for rep in (videos, images, items):
        for key, section in rep.items():
            if key in LEVELS or key == "roc" or not isinstance(section, dict):
                continue
            merged = out.setdefault(key, {})
            for name, levels in section.items():
                merged.setdefault(name, {}).update(levels)
    return out


def _relevel(report: dict, level: str) -> dict:
    """A report of one-frame items (``_video_report``'s ``video`` level) as the ``level`` level alone: its
    ``frame`` level would repeat the same scores (plus the crop count when items have several faces)."""
    out: dict = {level: dict(report["video"])}
    if "crops" in report["frame"]:
        out[level]["crops"] = report["frame"]["crops"]
    if "video" in report.get("roc", {}):
        out["roc"] = {level: report["roc"]["video"]}
    for key, section in report.items():
        if key in LEVELS or key == "roc" or not isinstance(section, dict):
            continue
        out[key] = {name: {level: levels["video"]} for name, levels in section.items() if "video" in levels}
    return out


def _video_report(prob: torch.Tensor, target: torch.Tensor, video: torch.Tensor, method: torch.Tensor,
                  method_names: Sequence[str] | None = None, ci: bool = False, frame: torch.Tensor | None = None,
                  track: torch.Tensor | None = None, video_score: str = DEFAULT_VIDEO_SCORE) -> dict:
    """Frame and video metrics, ROC curves and the per-method breakdown of one evaluation set.

    ``frame``/``track`` (per crop) and ``video_score`` (the rule) decide the frame and video scores (see
    dfd.engine.video_score); without them every crop is a frame. ``ci``: add the video AUC's bootstrap interval
    as ``video.auc_lo`` / ``video.auc_hi``.
    """
    s = score(prob, video, frame, track, video_score)
    fprob, ftarget, fmethod = s.frame_prob, target[s.frame_row], method[s.frame_row]
    vprob, vtarget, vmethod = s.video_prob, target[s.video_row], method[s.video_row]
    frame_scores = binary_scores(fprob, ftarget, roc=True)
    vid = binary_scores(vprob, vtarget, roc=True)
    if ci:
        vid["auc_lo"], vid["auc_hi"] = bootstrap_auc_ci(vprob.numpy(), vtarget.numpy())
    out = {
        "frame": {k: v for k, v in frame_scores.items() if k != "roc"},
        "video": {k: v for k, v in vid.items() if k != "roc"},
        "roc": {k: r["roc"] for k, r in (("frame", frame_scores), ("video", vid)) if "roc" in r},
        "per_method": {},
    }
    if len(prob) and len(fprob) != len(prob):
        out["frame"]["crops"] = int(len(prob))  # several faces per frame: the frame level counts frames
    fake_methods = torch.unique(fmethod[ftarget == 1]).tolist()
    if len(fake_methods) > 1 or method_names is not None:
        for m in fake_methods:
            name = method_names[m] if method_names is not None else str(m)
            fm = (ftarget == 0) | (fmethod == m)
            vm = (vtarget == 0) | (vmethod == m)
            out["per_method"][name] = {
                "frame": binary_scores(fprob[fm], ftarget[fm]),
                "video": binary_scores(vprob[vm], vtarget[vm]),
            }
    return out


_STATES = ("index", "prob", "target", "video", "method", "frame", "track")


class DetectionMetrics(Metric):
    """Accumulates (row index, probability, label, video, method, frame, track) and computes ``detection_report``.

    Args:
        ci: add bootstrap intervals of the video AUC (test sets; validation skips it every epoch).
        video_score: the video-score rule (``data.video_score``; dfd.engine.video_score).

    After ``compute()``, ``predictions`` holds the gathered, de-duplicated rows it was computed from (every rank
    has them under DDP), which is what per-video prediction files are written from.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, ci: bool = False, video_score: str = DEFAULT_VIDEO_SCORE, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in _STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.method_names: Sequence[str] | None = None
        self.image_videos: np.ndarray | None = None  # per video code: a still image (image-level metrics)
        self.ci = bool(ci)
        self.video_score = check_video_score(video_score)
        self.predictions: dict[str, torch.Tensor] | None = None

    def update(self, prob: torch.Tensor, target: torch.Tensor, video: torch.Tensor, index: torch.Tensor,
               method: torch.Tensor, frame: torch.Tensor | None = None, track: torch.Tensor | None = None) -> None:
        """Add a batch; ``frame``/``track`` are each sample's frame number and face id (None: the row index as
        the frame, track 0: every sample its own frame)."""
        index = index.detach().long().flatten()
        self.index.append(index)
        self.prob.append(prob.detach().float().flatten())
        self.target.append(target.detach().long().flatten())
        self.video.append(video.detach().long().flatten())
        self.method.append(method.detach().long().flatten())
        self.frame.append(index if frame is None else frame.detach().long().flatten())
        self.track.append(torch.zeros_like(index) if track is None else track.detach().long().flatten())

    def gathered(self) -> dict[str, torch.Tensor]:
        """All processes' predictions, each dataset row once, in row order (on CPU)."""
        if (len(self.index) == 0) if isinstance(self.index, list) else self.index.numel() == 0:
            empty = torch.zeros(0)
            return {name: empty if name == "prob" else empty.long() for name in _STATES}
        idx = dim_zero_cat(self.index).cpu()
        order = torch.argsort(idx, stable=True)
        idx = idx[order]
        keep = torch.ones_like(idx, dtype=torch.bool)
        keep[1:] = idx[1:] != idx[:-1]  # drop repeats introduced by distributed padding
        sel = order[keep]
        out = {name: dim_zero_cat(getattr(self, name)).cpu()[sel] for name in _STATES if name != "index"}
        return {"index": idx[keep], **out}

    def compute(self) -> dict:
        # Inside compute() the states are synced across processes; gathered() outside it sees one rank only.
        g = self.gathered()
        self.predictions = g
        return detection_report(g["prob"], g["target"], g["video"], g["method"], self.method_names, ci=self.ci,
                                frame=g["frame"], track=g["track"], video_score=self.video_score,
                                image_videos=self.image_videos)


def flat_metrics(report: dict, prefix: str) -> dict[str, float]:
    """``{prefix}/frame_auc``-style scalars for loggers (counts and curves left out; CI bounds when present)."""
    out = {}
    for level in (lv for lv in LEVELS if lv in report):
        for k in ("auc", "acc", "ap", "eer", "logloss", "auc_lo", "auc_hi"):
            if k in report[level]:
                out[f"{prefix}/{level}_{k}"] = float(report[level][k])
    return out


def small_sample_notes(name: str, report: dict) -> list[str]:
    """One-line warnings for an evaluation set too small for its numbers to be trusted to the second decimal
    (counted at its headline level: videos, images, or every item of a mixed set)."""
    level = headline(report)
    v = report.get(level) or {}
    what = ITEM_WORDS.get(level, "videos")
    n_real, n_fake = int(v.get("n_real") or 0), int(v.get("n_fake") or 0)
    if min(n_real, n_fake) >= MIN_VIDEOS_PER_CLASS:
        return []
    if min(n_real, n_fake) == 0:
        missing = "real" if n_real == 0 else "fake"
        return [f"test set '{name}' has {n_real} real / {n_fake} fake {what} (no {missing}): AUC, AP and EER are "
                "undefined (n/a) and only ACC is reported; test on a split holding both classes"]
    ci = ""
    if v.get("auc_lo") is not None and v.get("auc_lo") == v.get("auc_lo"):
        ci = f" ({level} AUC 95% CI [{v['auc_lo']:.3f}, {v['auc_hi']:.3f}])"
    return [f"test set '{name}' has {n_real} real / {n_fake} fake {what}, fewer than {MIN_VIDEOS_PER_CLASS} per "
            f"class: its metrics are noisy{ci}; test on more {what} (the dataset's test split) for numbers to "
            "compare (threshold: dfd.engine.metrics.MIN_VIDEOS_PER_CLASS)"]
