"""Decision thresholds chosen on a validation split: the EER point or the best accuracy.

Why: a detector's 0.5 is rarely the right cut-off on another dataset's score distribution, and an organiser
scoring hard labels needs one number fixed before the hidden test set is seen.
"""

from __future__ import annotations

import math

import numpy as np

METHODS = ("eer", "accuracy", "none")


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


def choose_threshold(scores: np.ndarray, labels: np.ndarray, method: str) -> dict:
    """The threshold by ``method`` plus the validation numbers it gives (for preprocess.json)."""
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
            gap = np.abs(fpr - fnr)
            # Among equally balanced points, the one with the fewest errors; then the one nearest 0.5.
            key = np.lexsort((np.abs(cand - 0.5), fpr + fnr, gap))
        else:
            errors = fpr * (len(y) - n_fake) + fnr * n_fake
            key = np.lexsort((np.abs(cand - 0.5), errors))
        best = int(key[0])
        out.update(value=float(cand[best]), val_fpr=float(fpr[best]), val_fnr=float(fnr[best]))
    t = out["value"]
    pred = s >= t
    out["val_accuracy"] = float((pred == y.astype(bool)).mean()) if len(y) else math.nan
    out["val_accuracy_at_0.5"] = float(((s >= 0.5) == y.astype(bool)).mean()) if len(y) else math.nan
    return out
