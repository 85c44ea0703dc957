"""Evaluation you can trust: exact probabilities under bf16, every test set and every sweep run kept apart,
checkpoints chosen on validation, per-video scores, bootstrap intervals, and honest warnings — on real runs
(Lightning on the CPU, Hydra multirun, W&B offline) over the embedded synthetic data."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dfd.data.sources.base import DatasetError
from dfd.data.synthetic import SyntheticSource
from dfd.engine.metrics import binary_scores, bootstrap_auc_ci, video_aggregate
from tests.conftest import REPO, compose

pytestmark = pytest.mark.slow

TINY = ["model=tiny", "data.num_workers=0", "dataset.frames_per_video=2", "data.batch_size=8"]
# Third-party noise a normal dfd-train run must not print (issue 13): W&B, Lightning tips, dependency
# deprecations.
NOISE = ("anonymous setting", "💡", "Tip:", "litlogger", "LitLogger", "litmodels", "LeafSpec", "_pytree",
         "TPU available", "HPU available", "FutureWarning", "DeprecationWarning", "smaller than the logging interval")


def _cli(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def mann_whitney(prob: np.ndarray, label: np.ndarray) -> float:
    pos, neg = prob[label == 1], prob[label == 0]
    d = pos[:, None] - neg[None, :]
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)


# ----------------------------------------------------------------------------------------------- 1. bf16
def test_bf16_validation_scores_in_float32(tmp_path, shared_cache):
    """Confident logits from a bf16-mixed run: probabilities stay below 1 and val AUC equals fp32 scoring."""
    import pytorch_lightning as pl

    from dfd.engine.run import build_datamodule, build_sources
    from dfd.engine.module import DetectorModule

    cfg = compose("train", overrides=[f"paths.run_dir={tmp_path}", f"paths.cache_dir={shared_cache}", *TINY,
                                      "dataset.videos={train: 8, val: 16, test: 4}"])
    from omegaconf import OmegaConf

    r = OmegaConf.to_container(cfg, resolve=True)
    torch.manual_seed(0)
    module = DetectorModule(model=r["model"], finetune=r["finetune"], optim=r["optim"])
    head = module.model.backbone.get_classifier()
    with torch.no_grad():  # a confident detector: logits between bf16's saturation (~6) and float32's (~16.6)
        head.weight.mul_(20.0)
        head.bias.fill_(8.0)
    logits: list[torch.Tensor] = []
    module.model.register_forward_hook(lambda m, i, out: logits.append(out.detach().clone()))
    train_src, tests, mix = build_sources(cfg)
    dm = build_datamodule(cfg, module.model.input_spec, train_src, tests, mix)
    trainer = pl.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.validate(module, datamodule=dm, verbose=False)

    out = torch.cat(logits)
    assert out.dtype == torch.bfloat16  # autocast was on
    assert 6.0 < float(out.min()) and float(out.max()) < 16.0, out  # confident, yet distinct in float32
    assert torch.sigmoid(out).max() == 1.0  # what a bf16 sigmoid does to them (the bug)
    batches = list(dm.val_dataloader())
    label = torch.cat([b["label"] for b in batches]).long()
    video = torch.cat([b["video"] for b in batches])
    prob = torch.sigmoid(out.float())  # fp32 scoring of the same logits
    assert float(prob.max()) < 1.0
    vprob, vlabel, _ = video_aggregate(prob, label, video, torch.zeros_like(video))
    ref_video, ref_frame = binary_scores(vprob, vlabel), binary_scores(prob, label)
    rep = module.val_report
    assert rep["frame"]["n"] == len(prob) == 32 and rep["video"]["n"] == 16
    assert rep["video"]["auc"] == ref_video["auc"] and rep["frame"]["auc"] == ref_frame["auc"]
    assert rep["frame"]["logloss"] == pytest.approx(ref_frame["logloss"], rel=1e-12)
    assert rep["video"]["auc"] != 0.5  # saturated probabilities would all tie at 1.0: AUC exactly 0.5


# ----------------------------------------------------------------------------------------------- 7. bootstrap
def test_bootstrap_interval_contains_narrows_and_repeats():
    rng = np.random.default_rng(3)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        return np.clip(0.25 * y + rng.normal(0.4, 0.2, n), 0, 1), y

    s, y = sample(120)
    auc = mann_whitney(s, y)
    lo, hi = bootstrap_auc_ci(s, y)
    assert lo < auc < hi and 0.0 <= lo and hi <= 1.0
    assert bootstrap_auc_ci(s, y) == (lo, hi)  # fixed seed: identical
    assert bootstrap_auc_ci(s, y, seed=1) != (lo, hi)
    big_s, big_y = sample(4000)
    big_lo, big_hi = bootstrap_auc_ci(big_s, big_y)
    assert big_lo < mann_whitney(big_s, big_y) < big_hi
    assert (big_hi - big_lo) < 0.4 * (hi - lo)  # width shrinks ~ 1/sqrt(n): 120 -> 4000 videos
    # The resampling is right: the vectorised AUCs match a plain loop of stratified resamples in distribution.
    pos, neg = np.where(y == 1)[0], np.where(y == 0)[0]
    loop_rng = np.random.default_rng(7)
    loop = [mann_whitney(np.r_[s[loop_rng.choice(pos, len(pos))], s[loop_rng.choice(neg, len(neg))]],
                         np.r_[np.ones(len(pos)), np.zeros(len(neg))]) for _ in range(1000)]
    assert np.quantile(loop, [0.025, 0.975]) == pytest.approx([lo, hi], abs=0.025)
    # One class: undefined, not a crash.
    assert all(np.isnan(bootstrap_auc_ci(s[y == 1], y[y == 1])))
    # Speed (reported, loosely bounded: shared CI machines): 1,000 resamples of 5,000 videos.
    s5, y5 = sample(5000)
    t = time.perf_counter()
    bootstrap_auc_ci(s5, y5)
    assert time.perf_counter() - t < 5.0
