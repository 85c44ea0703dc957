"""Metric maths against independent computations; de-duplication of distributed padding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dfd.engine.metrics import (
    DetectionMetrics,
    binary_scores,
    detection_report,
    equal_error_rate,
    video_aggregate,
)


def mann_whitney_auc(prob: np.ndarray, target: np.ndarray) -> float:
    """AUC as the probability that a random fake outscores a random real (ties count half)."""
    pos, neg = prob[target == 1], prob[target == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def brute_force_eer(prob: np.ndarray, target: np.ndarray) -> float:
    best = (2.0, None)
    for t in np.unique(np.concatenate([prob, [np.inf]])):
        pred = prob >= t
        fpr = (pred & (target == 0)).sum() / (target == 0).sum()
        fnr = (~pred & (target == 1)).sum() / (target == 1).sum()
        if abs(fpr - fnr) < best[0]:
            best = (abs(fpr - fnr), (fpr + fnr) / 2)
    return best[1]


def test_scores_match_independent_formulas():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 2, 400)
    prob = np.clip(0.35 * target + rng.normal(0.35, 0.2, 400), 0, 1).astype(np.float32)
    s = binary_scores(torch.from_numpy(prob), torch.from_numpy(target), roc=True)
    assert s["auc"] == pytest.approx(mann_whitney_auc(prob, target), abs=1e-6)
    assert s["acc"] == pytest.approx(float(((prob >= 0.5) == target).mean()), abs=1e-6)
    assert s["eer"] == pytest.approx(brute_force_eer(prob, target), abs=0.01)
    assert (s["n"], s["n_fake"]) == (400, int(target.sum()))
    assert len(s["roc"]["fpr"]) == 201 and s["roc"]["tpr"][-1] == pytest.approx(1.0)


def test_eer_of_perfect_and_inverted_scores():
    fpr = torch.tensor([0.0, 0.0, 1.0])
    tpr = torch.tensor([0.0, 1.0, 1.0])
    assert equal_error_rate(fpr, tpr) == 0.0
    assert equal_error_rate(torch.tensor([0.0, 1.0, 1.0]), torch.tensor([0.0, 0.0, 1.0])) == 1.0


def test_single_class_gives_nan_not_crash():
    s = binary_scores(torch.tensor([0.2, 0.9]), torch.tensor([1, 1]))
    assert math.isnan(s["auc"]) and s["acc"] == 0.5


def test_video_level_is_mean_of_frames():
    prob = torch.tensor([0.1, 0.3, 0.8, 0.9, 0.7])
    video = torch.tensor([5, 5, 2, 2, 2])
    vp, vt, _ = video_aggregate(prob, torch.tensor([0, 0, 1, 1, 1]), video, torch.zeros(5, dtype=torch.long))
    assert vp.dtype == torch.float64  # the exact video score predictions.parquet stores
    assert torch.allclose(vp, torch.tensor([0.8, 0.2], dtype=torch.float64))  # videos in sorted id order: 2, 5
    assert vt.tolist() == [1, 0]


def test_per_method_uses_reals_plus_that_method():
    prob = torch.tensor([0.1, 0.2, 0.9, 0.3])
    target = torch.tensor([0, 0, 1, 1])
    method = torch.tensor([0, 0, 1, 2])
    rep = detection_report(prob, target, torch.arange(4), method, ["real", "Deepfakes", "FaceSwap"])
    assert rep["per_method"]["Deepfakes"]["frame"]["auc"] == 1.0
    assert rep["per_method"]["FaceSwap"]["frame"]["auc"] == 1.0
    assert rep["per_method"]["FaceSwap"]["frame"]["n"] == 3
    assert rep["frame"]["auc"] == pytest.approx(1.0)


def test_repeated_rows_are_counted_once():
    """A distributed sampler pads by repeating rows: the metric must drop the repeats."""
    rng = np.random.default_rng(1)
    n = 21
    prob = torch.from_numpy(rng.random(n).astype(np.float32))
    target = torch.from_numpy(rng.integers(0, 2, n))
    video = torch.arange(n) // 3
    once, padded = DetectionMetrics(), DetectionMetrics()
    once.update(prob, target, video, torch.arange(n), torch.zeros(n, dtype=torch.long))
    # Two "ranks" of 11 rows each: rank 1 repeats row 0 as padding, in a different order.
    r0, r1 = torch.arange(0, n, 2), torch.cat([torch.arange(1, n, 2), torch.tensor([0])])
    for rows in (r1, r0):
        padded.update(prob[rows], target[rows], video[rows], rows, torch.zeros(len(rows), dtype=torch.long))
    a, b = once.compute(), padded.compute()
    assert a["frame"] == b["frame"] and a["video"] == b["video"]
    assert b["frame"]["n"] == n


# ----------------------------------------------------------------------------------------------- issue 25
def _fixed_scores() -> tuple[np.ndarray, np.ndarray]:
    """400 fixed scores with ties (2 decimals), 0 and 1 exactly, and values on bin edges (1/3 = 5/15)."""
    rng = np.random.default_rng(25)
    target = np.r_[np.zeros(230, int), np.ones(170, int)]
    prob = np.clip(np.r_[rng.beta(2, 5, 230), rng.beta(5, 2, 170)], 0, 1).round(2)
    prob[:4], prob[-4:] = [0.0, 1.0, 1 / 3, 0.2], [1.0, 1.0, 0.0, 2 / 3]
    return prob, target


def test_tpr_at_fpr_ece_and_brier_match_scikit_learn_and_numpy():
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss, roc_curve
    from torchmetrics.functional.classification import binary_calibration_error

    from dfd.engine.metrics import calibration_bins

    prob, target = _fixed_scores()
    s = binary_scores(torch.from_numpy(prob), torch.from_numpy(target))
    # TPR at FPR <= x: the best vertex of the full ROC (drop_intermediate=False keeps collinear vertices).
    fpr, tpr, _ = roc_curve(target, prob, drop_intermediate=False)
    for key, rate in (("tpr@fpr1", 0.01), ("tpr@fpr5", 0.05)):
        assert s[key] == pytest.approx(tpr[fpr <= rate].max(), abs=1e-6)
    # 100 reals: thresholds reach FPR 1 % and 5 % exactly (reals 0.99; 0.95-0.99), and those count (at most x).
    exact = binary_scores(torch.tensor([*np.arange(100) / 100, 0.985, 0.945, 0.5]),
                          torch.tensor([0] * 100 + [1] * 3))
    assert exact["tpr@fpr1"] == pytest.approx(1 / 3) and exact["tpr@fpr5"] == pytest.approx(2 / 3)
    # ECE: 15 equal-width bins (k/15, (k+1)/15], count-weighted |fraction of fakes - mean P(fake)|.
    edges = np.linspace(0, 1, 16)
    ece = 0.0
    for k in range(15):
        in_bin = (prob > edges[k]) & (prob <= edges[k + 1]) if k else prob <= edges[1]
        if in_bin.any():
            ece += in_bin.mean() * abs(target[in_bin].mean() - prob[in_bin].mean())
    assert s["ece"] == pytest.approx(ece, abs=1e-12)
    frac, mean = calibration_curve(target, prob, n_bins=15)  # scikit-learn's bins, non-empty ones
    bins = calibration_bins(prob, target)
    count = np.array(bins["count"])
    assert count.sum() == len(prob) and np.allclose([m for m in bins["mean_prob"] if m is not None], mean)
    assert np.allclose([f for f in bins["frac_fake"] if f is not None], frac)
    assert s["ece"] == pytest.approx(float((count[count > 0] / len(prob) * np.abs(frac - mean)).sum()), abs=1e-12)
    # torchmetrics bins p = 1.0 apart (a 16th bin): it agrees once no score is exactly 1.
    assert float(binary_calibration_error(torch.from_numpy(prob), torch.from_numpy(target), n_bins=15)) != \
        pytest.approx(s["ece"], abs=1e-4)
    inner = np.clip(prob + 0.001 * np.isin(np.round(prob * 15, 6), np.arange(16)), 0.001, 0.999)  # off the edges
    tm = binary_calibration_error(torch.from_numpy(inner), torch.from_numpy(target), n_bins=15)
    assert float(tm) == pytest.approx(binary_scores(torch.from_numpy(inner), torch.from_numpy(target))["ece"],
                                      abs=1e-6)
    assert s["brier"] == pytest.approx(brier_score_loss(target, prob), abs=1e-12)
    one_class = binary_scores(torch.tensor([0.2, 0.9]), torch.tensor([1, 1]))
    assert math.isnan(one_class["tpr@fpr1"]) and one_class["brier"] == pytest.approx((0.64 + 0.01) / 2)


def test_faces_not_found_count_at_their_score_exactly_as_appended_items():
    """eval.no_face=score: each video / frame without a face is one more item at the score, in every number."""
    from sklearn.metrics import roc_auc_score

    from dfd.engine.metrics import Unscored

    rng = np.random.default_rng(3)
    n = 24  # 8 videos x 3 frames: methods real (0), swap (1), reenact (2)
    video = torch.arange(n) // 3
    target = (video >= 4).long()
    method = torch.where(target == 1, 1 + (video % 2), 0)
    prob = torch.from_numpy(rng.random(n).astype(np.float32))
    names = ["real", "swap", "reenact"]
    unscored = Unscored(score=0.5, frames={(0, "real"): 3, (1, "swap"): 4, (1, "gone"): 2},
                        videos={(0, "real"): 1, (1, "swap"): 1, (1, "gone"): 1})
    kinds = {"swap": "face_swap", "gone": "face_swap", "reenact": "reenactment"}
    drop = detection_report(prob, target, video, method, names, method_types=kinds)
    rep = detection_report(prob, target, video, method, names, method_types=kinds, unscored=unscored)
    vprob = prob.double().reshape(8, 3).mean(1).numpy()
    vy = target.reshape(8, 3)[:, 0].numpy()
    assert drop["video"]["auc"] == pytest.approx(roc_auc_score(vy, vprob), abs=1e-12)
    assert rep["video"]["auc"] == pytest.approx(roc_auc_score([*vy, 0, 1, 1], [*vprob, 0.5, 0.5, 0.5]), abs=1e-12)
    fy, fp = target.numpy(), prob.numpy().astype(np.float64)
    assert rep["frame"]["auc"] == pytest.approx(roc_auc_score([*fy, 0, 0, 0, *[1] * 6], [*fp, *[0.5] * 9]), abs=1e-6)
    assert (rep["frame"]["n"], rep["video"]["n_real"], rep["video"]["n_fake"]) == (n + 9, 5, 6)
    # Per method and per kind: reals (with their unscored ones) + that method's / kind's fakes.
    gone = rep["per_method"]["gone"]["video"]
    assert (gone["n_real"], gone["n_fake"], gone["auc"]) == (5, 1, pytest.approx(roc_auc_score(
        [*vy[vy == 0], 0, 1], [*vprob[vy == 0], 0.5, 0.5])))
    swap = rep["per_method_type"]["face_swap"]["video"]
    m = (vy == 0) | (np.arange(8) % 2 == 0)  # swap videos are the even fakes
    assert swap["auc"] == pytest.approx(roc_auc_score([*vy[m], 0, 1, 1], [*vprob[m], 0.5, 0.5, 0.5]), abs=1e-12)
    assert set(rep["per_method_type"]) == {"face_swap", "reenactment"} and "face_swap" in drop["per_method_type"]
    assert "per_method_type" not in detection_report(prob, target, video, method, names)  # no kinds: no breakdown
