"""Frame- and video-level AUC, accuracy, AP, EER, TPR at a fixed FPR, calibration (ECE, Brier) with
torchmetrics, exact under DDP.

Exactness: every prediction carries its dataset row index. The metric state is gathered from all processes and
de-duplicated on that index before anything is computed, so a sample repeated by a distributed sampler's
padding is counted once, and a 2-process run gives the numbers of a 1-process run on the same data.

Frame and video level follow the video-score rule (``data.video_score``, one home: dfd.engine.video_score): a
frame's score aggregates its faces (max by default; several faces per frame with ``extract.choice=all``), a
video's is the mean of its frames' (video ids are unique across a dataset, never a bare folder name). With one
face per frame the frame score is the crop's probability and the video score the mean of them. Per method:
reals + that method's fakes (the FF++ per-manipulation protocol); per kind of fake (the index's ``method_type``):
reals + the fakes of every method of that kind.

Faces not found (``eval.no_face``): by default (``drop``) a video or frame without a face is not scored, as it
has no crop. ``score`` counts each at a fixed score (``eval.no_face_score``, 0.5: SBI's protocol), so a
detector is not rewarded for test items its face detector missed: :class:`Unscored` holds them.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_average_precision,
    binary_roc,
    binary_sensitivity_at_specificity,
)
from torchmetrics.utilities import dim_zero_cat

from dfd.engine.video_score import DEFAULT_VIDEO_SCORE, check_video_score, score

ROC_POINTS = 201
#: ACC is reported at this fixed threshold (an uncalibrated model's; ``dfd-export --calibrate`` picks one).
ACC_THRESHOLD = 0.5
#: When the run says ACC is off (dfd.engine.summary.run_notes): video ACC at ACC_THRESHOLD more than this below
#: 1 - video EER, the accuracy the EER threshold reaches on the same videos (there FPR = FNR = EER, whatever the
#: class ratio). Below that line the ranking (AUC) is fine and the threshold is what is off: calibrate it.
ACC_NOTE_MARGIN = 0.05
#: Bootstrap of the video-level AUC: resamples, interval level, seed (identical intervals run to run).
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_LEVEL = 0.95
BOOTSTRAP_SEED = 0
#: Fewer videos than this in a class of an evaluation split gets a warning: AUC swings by several points.
MIN_VIDEOS_PER_CLASS = 20
#: TPR at a fixed false-positive rate: the key and the FPR. What a forensic lab acting on a detector gets at a
#: false-alarm budget: the highest TPR of any threshold whose FPR is at most that (no interpolation).
TPR_AT_FPR = {"tpr@fpr1": 0.01, "tpr@fpr5": 0.05}
#: Expected calibration error: equal-width bins of P(fake) over [0, 1].
ECE_BINS = 15
#: Every scalar a level (frame, video) reports, in the order loggers and tables list them.
SCALARS = ("auc", "acc", "ap", "eer", *TPR_AT_FPR, "ece", "brier", "logloss")
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


def tpr_at_fpr(prob: torch.Tensor, target: torch.Tensor, fpr: float) -> float:
    """The highest TPR of any threshold whose FPR is at most ``fpr`` (torchmetrics' sensitivity at specificity
    ``1 - fpr``: the ROC's vertices, no interpolation, so the rate is one a threshold actually achieves)."""
    tpr, _ = binary_sensitivity_at_specificity(prob, target.long(), min_specificity=1.0 - fpr)
    return float(tpr)


def calibration_bins(prob: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray,
                     n_bins: int = ECE_BINS) -> dict[str, list]:
    """Reliability-diagram bins of P(fake): per equal-width bin, the count, the mean P(fake) and the fraction of
    fakes (None for an empty bin). Bin k holds k/n < p <= (k+1)/n (bin 0 also p = 0), as Guo et al. (2017) and
    scikit-learn's ``calibration_curve`` bin."""
    p = np.asarray(prob, np.float64).ravel()
    y = np.asarray(target, np.float64).ravel()
    idx = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], p, side="left")
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p, frac = sum_p / count, sum_y / count
    return {"count": count.tolist(),
            "mean_prob": [float(v) if c else None for v, c in zip(mean_p, count, strict=True)],
            "frac_fake": [float(v) if c else None for v, c in zip(frac, count, strict=True)]}


def expected_calibration_error(bins: Mapping[str, list]) -> float:
    """ECE from :func:`calibration_bins`: the count-weighted mean |fraction of fakes - mean P(fake)| over bins.

    Not torchmetrics' ``binary_calibration_error``: it bins [k/n, (k+1)/n) and puts p = 1.0 exactly in a bin of
    its own past the last, and a float32 sigmoid returns exactly 1.0 for every logit above ~17, so a confident
    model gets a 16th bin and a different ECE; elsewhere the two agree (tested).
    """
    n = sum(bins["count"])
    if not n:
        return math.nan
    return float(sum(c * abs(f - m) for c, m, f in zip(bins["count"], bins["mean_prob"], bins["frac_fake"],
                                                        strict=True) if c) / n)


def brier_score(prob: torch.Tensor, target: torch.Tensor) -> float:
    """Mean squared difference between P(fake) and the label (0 real, 1 fake), in float64."""
    if not target.numel():
        return math.nan
    return float(((prob.double() - target.double()) ** 2).mean())


def binary_scores(prob: torch.Tensor, target: torch.Tensor, roc: bool = False, calibration: bool = False) -> dict:
    """AUC, ACC@0.5, AP, EER, TPR at 1 % / 5 % FPR, ECE, Brier, log loss (+ ROC points, + reliability bins) for
    probabilities of the fake class; NaN where undefined (one class: AUC, AP, EER and TPR@FPR)."""
    target = target.long()
    n_fake = int(target.sum())
    n = int(target.numel())
    out: dict = {"n": n, "n_real": n - n_fake, "n_fake": n_fake}
    out["acc"] = float(binary_accuracy(prob, target, threshold=ACC_THRESHOLD)) if n else math.nan
    # Log loss (the DFDC competition metric): also what breaks ties between epochs with equal AUC.
    p = prob.double().clamp(1e-7, 1 - 1e-7)
    out["logloss"] = float(-(target * p.log() + (1 - target) * (1 - p).log()).mean()) if n else math.nan
    bins = calibration_bins(prob, target)
    out["ece"] = expected_calibration_error(bins)
    out["brier"] = brier_score(prob, target)
    if calibration:
        out["calibration"] = {"bins": ECE_BINS, **bins}
    if 0 < n_fake < n:
        out["auc"] = rank_auc(prob, target)
        out["ap"] = float(binary_average_precision(prob, target))
        fpr, tpr, _ = binary_roc(prob, target)
        out["eer"] = equal_error_rate(fpr, tpr)
        for key, rate in TPR_AT_FPR.items():
            out[key] = tpr_at_fpr(prob, target, rate)
        if roc:
            grid = np.linspace(0.0, 1.0, ROC_POINTS)
            # ROC is a step curve: take the best TPR reached at each FPR on the grid.
            f, t = fpr.double().numpy(), tpr.double().numpy()
            tg = np.maximum.accumulate(np.interp(grid, f, t, left=0.0, right=1.0))
            out["roc"] = {"fpr": grid.round(5).tolist(), "tpr": tg.round(5).tolist()}
    else:
        out.update(auc=math.nan, ap=math.nan, eer=math.nan, **dict.fromkeys(TPR_AT_FPR, math.nan))
    return out


@dataclass(frozen=True)
class Unscored:
    """Test items without a face, counted at a fixed score (``eval.no_face=score``).

    ``frames``/``videos``: how many, per (label, method name). Frames include every sampled frame of a video
    without a face; videos are those where no sampled frame had one.
    """

    score: float = 0.5
    frames: Mapping[tuple[int, str], int] = field(default_factory=dict)
    videos: Mapping[tuple[int, str], int] = field(default_factory=dict)


def _pad(prob: torch.Tensor, target: torch.Tensor, method: torch.Tensor, counts: Mapping[tuple[int, str], int],
         score: float, code: Mapping[str, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The scored items plus ``counts`` items at ``score`` (label and method code as counted)."""
    items = [(y, code[m], n) for (y, m), n in sorted(counts.items()) if n > 0]
    if not items:
        return prob, target, method
    ys = torch.cat([torch.full((n,), y, dtype=target.dtype) for y, _, n in items])
    ms = torch.cat([torch.full((n,), c, dtype=method.dtype) for _, c, n in items])
    ps = torch.full((len(ys),), float(score), dtype=prob.dtype)
    return torch.cat([prob, ps]), torch.cat([target, ys]), torch.cat([method, ms])


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
                     method_types: Mapping[str, str] | None = None, unscored: Unscored | None = None,
                     image_videos: np.ndarray | torch.Tensor | None = None) -> dict:
    """Metrics, ROC curves and breakdowns of one evaluation set, at the levels its items have.

    ``image_videos``: per video code, whether that item is a still image (None: all videos). Videos only: the
    ``frame`` and ``video`` levels (unit ``video``); images only: the ``image`` level (unit ``image``); both:
    ``frame``/``video`` over the videos, ``image`` over the images, ``item`` over all (unit ``mixed``). Other
    arguments as :func:`_video_report`, which computes each part; in a mixed set the items without a face
    (``unscored``) count at the ``item`` level only (the counts do not say which were images).
    """
    args = (method_names, ci)
    kw = {"video_score": video_score, "method_types": method_types}
    is_img = (torch.as_tensor(np.asarray(image_videos, bool))[video.long()] if image_videos is not None and len(video)
              else torch.zeros(len(video), dtype=torch.bool))
    if not bool(is_img.any()):
        return {"unit": "video", "headline": "video",
                **_video_report(prob, target, video, method, *args, frame=frame, track=track, unscored=unscored,
                                **kw)}

    def part(rows: torch.Tensor, faceless: Unscored | None = None) -> dict:
        return _video_report(prob[rows], target[rows], video[rows], method[rows], *args,
                             frame=None if frame is None else frame[rows], track=None if track is None else track[rows],
                             unscored=faceless, **kw)

    # An image is a one-frame item: its "video" score is the image's score (its faces by the rule's frame step).
    images = _relevel(part(is_img, unscored if bool(is_img.all()) else None), "image")
    if bool(is_img.all()):
        return {"unit": "image", "headline": "image", **images}
    videos = part(~is_img)
    items = _relevel(_video_report(prob, target, video, method, *args, frame=frame, track=track, unscored=unscored,
                                   **kw), "item")
    out: dict = {"unit": "mixed", "headline": "item", "frame": videos["frame"], "video": videos["video"],
                 "image": images["image"], "item": items["item"],
                 **{curve: {**videos.get(curve, {}), **images.get(curve, {}), **items.get(curve, {})}
                    for curve in _CURVES}}
    for rep in (videos, images, items):
        for key, section in rep.items():
            if key in LEVELS or key in _CURVES or not isinstance(section, dict):
                continue
            merged = out.setdefault(key, {})
            for name, levels in section.items():
                merged.setdefault(name, {}).update(levels)
    return out


#: Per-level curves of a report (not breakdowns by method): ROC points and reliability bins.
_CURVES = ("roc", "calibration")


def _relevel(report: dict, level: str) -> dict:
    """A report of one-frame items (``_video_report``'s ``video`` level) as the ``level`` level alone: its
    ``frame`` level would repeat the same scores (plus the crop count when items have several faces)."""
    out: dict = {level: dict(report["video"])}
    if "crops" in report["frame"]:
        out[level]["crops"] = report["frame"]["crops"]
    for curve in _CURVES:
        if "video" in report.get(curve, {}):
            out[curve] = {level: report[curve]["video"]}
    for key, section in report.items():
        if key in LEVELS or key in _CURVES or not isinstance(section, dict):
            continue
        out[key] = {name: {level: levels["video"]} for name, levels in section.items() if "video" in levels}
    return out


def _video_report(prob: torch.Tensor, target: torch.Tensor, video: torch.Tensor, method: torch.Tensor,
                  method_names: Sequence[str] | None = None, ci: bool = False, frame: torch.Tensor | None = None,
                  track: torch.Tensor | None = None, video_score: str = DEFAULT_VIDEO_SCORE,
                  method_types: Mapping[str, str] | None = None, unscored: Unscored | None = None) -> dict:
    """Frame and video metrics, ROC curves, reliability bins and the per-method (and per kind of fake) breakdowns
    of one evaluation set (of videos, or of one-frame items).

    ``frame``/``track`` (per crop) and ``video_score`` (the rule) decide the frame and video scores (see
    dfd.engine.video_score); without them every crop is a frame. ``ci``: add the video AUC's bootstrap interval
    as ``video.auc_lo`` / ``video.auc_hi``. ``method_types``: method name -> kind of fake (the index's
    ``method_type``), for ``per_method_type``. ``unscored``: frames and videos without a face, counted at its
    score in every number (``eval.no_face=score``).
    """
    s = score(prob, video, frame, track, video_score)
    fprob, ftarget, fmethod = s.frame_prob, target[s.frame_row], method[s.frame_row]
    vprob, vtarget, vmethod = s.video_prob, target[s.video_row], method[s.video_row]
    names = list(method_names) if method_names is not None else [str(m) for m in range(int(method.max()) + 1
                                                                                       if len(method) else 0)]
    if unscored is not None:
        for _, m in (*unscored.frames, *unscored.videos):
            if m not in names:
                names.append(m)  # a method whose every test video lacked a face
        code = {m: i for i, m in enumerate(names)}
        fprob, ftarget, fmethod = _pad(fprob, ftarget, fmethod, unscored.frames, unscored.score, code)
        vprob, vtarget, vmethod = _pad(vprob.double(), vtarget, vmethod, unscored.videos, unscored.score, code)
    frame_scores = binary_scores(fprob, ftarget, roc=True, calibration=True)
    vid = binary_scores(vprob, vtarget, roc=True, calibration=True)
    if ci:
        vid["auc_lo"], vid["auc_hi"] = bootstrap_auc_ci(vprob.numpy(), vtarget.numpy())
    curves = ("roc", "calibration")
    out = {
        "frame": {k: v for k, v in frame_scores.items() if k not in curves},
        "video": {k: v for k, v in vid.items() if k not in curves},
        "roc": {k: r["roc"] for k, r in (("frame", frame_scores), ("video", vid)) if "roc" in r},
        "calibration": {k: r["calibration"] for k, r in (("frame", frame_scores), ("video", vid))},
        "per_method": {},
    }
    if len(prob) and len(s.frame_prob) != len(prob):
        out["frame"]["crops"] = int(len(prob))  # several faces per frame: the frame level counts frames

    def breakdown(codes: Sequence[int]) -> dict:
        fm = (ftarget == 0) | torch.isin(fmethod, torch.as_tensor(codes, dtype=fmethod.dtype))
        vm = (vtarget == 0) | torch.isin(vmethod, torch.as_tensor(codes, dtype=vmethod.dtype))
        return {"frame": binary_scores(fprob[fm], ftarget[fm]), "video": binary_scores(vprob[vm], vtarget[vm])}

    fake_methods = sorted(set(torch.unique(fmethod[ftarget == 1]).tolist())
                          | set(torch.unique(vmethod[vtarget == 1]).tolist()))
    if len(fake_methods) > 1 or method_names is not None:
        for m in fake_methods:
            out["per_method"][names[m]] = breakdown([m])
    kinds: dict[str, list[int]] = {}
    for m in fake_methods:
        kind = (method_types or {}).get(names[m]) or ""
        if kind:  # never guessed: a fake whose dataset does not say is in no kind's row
            kinds.setdefault(kind, []).append(m)
    if kinds:
        out["per_method_type"] = {kind: breakdown(codes) for kind, codes in sorted(kinds.items())}
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
        self.method_types: Mapping[str, str] | None = None  # method name -> kind of fake (per_method_type)
        self.unscored: Unscored | None = None  # test items without a face, counted at a score (eval.no_face)
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
                                method_types=self.method_types, unscored=self.unscored,
                                image_videos=self.image_videos)


def flat_metrics(report: dict, prefix: str) -> dict[str, float]:
    """``{prefix}/frame_auc``-style scalars for loggers (counts and curves left out; CI bounds when present)."""
    out = {}
    for level in (lv for lv in LEVELS if lv in report):
        for k in (*SCALARS, "auc_lo", "auc_hi"):
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
