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
