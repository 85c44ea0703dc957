"""Decision thresholds chosen on a validation split: the EER point or the best accuracy.

Why: a detector's 0.5 is rarely the right cut-off on another dataset's score distribution, and an organiser
scoring hard labels needs one number fixed before the hidden test set is seen. Three are chosen: one on per-video
scores (applied to videos), one on the validation split's still images (applied to single images) and one on
per-frame probabilities of its videos (what single images got before image thresholds: frames spread wider than a
32-frame mean); see :func:`dfd.inference.export.calibrate_thresholds` for splits holding one kind only.

The EER is the engine's (:func:`dfd.engine.metrics.equal_error_rate`, the number results.json reports); this
module only picks the threshold that realises it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dfd.engine.metrics import MIN_VIDEOS_PER_CLASS, equal_error_rate

METHODS = ("eer", "accuracy", "none")
LEVELS = ("video", "frame", "image")
# A threshold calibrated on fewer validation videos than this per class gets a one-line warning. Same figure as
# the test-set warning of the evaluation engine (dfd.engine.metrics.MIN_VIDEOS_PER_CLASS once merged).


def _candidates(scores: np.ndarray) -> np.ndarray:
    """Thresholds between consecutive distinct scores (and below/above all): every distinct labelling."""
    u = np.unique(scores.astype(np.float64))
    mids = (u[:-1] + u[1:]) / 2
    return np.concatenate([[max(u[0] - 1e-6, 0.0)], mids, [min(u[-1] + 1e-6, 1.0)]])


def rates(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False-positive and false-negative rates at each threshold (label 1 predicted when score >= t)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    real, fake = np.sort(s[~y]), np.sort(s[y])
    # searchsorted over the sorted scores counts, for every threshold at once, how many fall below it.
    fpr = 1.0 - np.searchsorted(real, thresholds, side="left") / max(len(real), 1)
    fnr = np.searchsorted(fake, thresholds, side="left") / max(len(fake), 1)
    return fpr, fnr


def engine_eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """The equal error rate exactly as dfd's evaluation computes it (torchmetrics ROC + the engine's EER)."""
    from torchmetrics.functional.classification import binary_roc

    fpr, tpr, _ = binary_roc(torch.as_tensor(np.asarray(scores, np.float32)),
                             torch.as_tensor(np.asarray(labels, np.int64)))
    return equal_error_rate(fpr, tpr)


def choose_threshold(scores: np.ndarray, labels: np.ndarray, method: str, videos: int | None = None) -> dict:
    """The threshold by ``method`` plus the validation numbers it gives (for preprocess.json).

    ``videos``: how many validation videos the scores come from (frame-level calibration); the small-sample
    note counts videos, since the frames of one video are not independent.
    """
    if method not in METHODS:
        raise ValueError(f"calibration {method!r} is not one of {METHODS}")
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(np.int64)
    n_fake = int(y.sum())
    out: dict = {"method": method, "n": int(len(y)), "n_real": int(len(y) - n_fake), "n_fake": n_fake}
    if method == "none" or len(y) == 0:
        out.update(value=0.5, method="none" if method == "none" else "default")
    elif n_fake in (0, len(y)):
        # One class only: neither criterion is defined; keep 0.5 and say why.
        out.update(value=0.5, method="default", note=f"validation split has one class only; {method} undefined")
    else:
        cand = _candidates(s)
        fpr, fnr = rates(s, y, cand)
        if method == "eer":
            eer = engine_eer(s, y)
            # The labelling that realises the engine's EER best: smallest |FPR - FNR|, then the balanced error
            # nearest that EER, then the threshold nearest 0.5.
            key = np.lexsort((np.abs(cand - 0.5), np.abs((fpr + fnr) / 2 - eer), np.abs(fpr - fnr)))
            out["val_eer"] = float(eer)
        else:
            errors = fpr * (len(y) - n_fake) + fnr * n_fake
            key = np.lexsort((np.abs(cand - 0.5), errors))
        best = int(key[0])
        out.update(value=float(cand[best]), val_fpr=float(fpr[best]), val_fnr=float(fnr[best]))
    if videos is not None:
        out["videos"] = int(videos)
    t = out["value"]
    pred = s >= t
    out["val_accuracy"] = float((pred == y.astype(bool)).mean()) if len(y) else math.nan
    out["val_accuracy_at_0.5"] = float(((s >= 0.5) == y.astype(bool)).mean()) if len(y) else math.nan
    return out


def small_sample_warning(level: str, n_real_videos: int, n_fake_videos: int, method: str,
                         items: str = "videos") -> str | None:
    """One line when a threshold rests on fewer than ``MIN_VIDEOS_PER_CLASS`` validation videos (``items``:
    or images) per class."""
    if method == "none" or min(n_real_videos, n_fake_videos) >= MIN_VIDEOS_PER_CLASS:
        return None
    return (f"the {level}-level threshold is calibrated on {n_real_videos} real / {n_fake_videos} fake validation "
            f"{items} (fewer than {MIN_VIDEOS_PER_CLASS} per class): it may not carry over to new data; extract "
            "a larger val split, or export with --calibrate none (threshold 0.5) "
            "(limit: dfd.engine.metrics.MIN_VIDEOS_PER_CLASS)")
