"""DDP over gloo with 2 CPU processes gives exactly the single-process metrics on the same checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

DATA = ["dataset.videos={train: 12, val: 6, test: 7}", "dataset.frames_per_video=3"]  # 21 test frames: odd


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_ddp_eval_equals_single_process(tmp_path, shared_cache):
    train_dir = tmp_path / "train"
    _run(["dfd.cli.train", "model=tiny", "logger=none", "trainer.max_epochs=1", "data.num_workers=0",
          f"hydra.run.dir={train_dir}", f"paths.cache_dir={shared_cache}", *DATA])
    ckpt = json.loads((train_dir / "results.json").read_text())["checkpoint"]
    common = [f"ckpt_path={ckpt}", "logger=none", "data.num_workers=0", "data.batch_size=4",
              f"paths.cache_dir={shared_cache}", "+dataset@test_sets.synthetic_b=synthetic",
              "test_sets.synthetic_b.domain=b", "test_sets.synthetic_b.videos={train: 0, val: 0, test: 5}",
              "test_sets.synthetic_b.frames_per_video=3"]
    one, two = tmp_path / "one", tmp_path / "two"
    _run(["dfd.cli.evaluate", *common, f"hydra.run.dir={one}", "robustness={jpeg: [30], blur: [1.5, 3]}"])
    ddp = _run(["dfd.cli.evaluate", *common, f"hydra.run.dir={two}", "trainer=ddp", "trainer.accelerator=cpu",
                "trainer.devices=2", "trainer.precision=32-true"])
    assert "MEMBER: 2/2" in ddp.stdout + ddp.stderr  # really two gloo processes
    r1 = json.loads((one / "results.json").read_text())["test"]
    r2 = json.loads((two / "results.json").read_text())["test"]
    assert set(r1) == set(r2) == {"synthetic_a", "synthetic_b"}
    assert r1["synthetic_a"]["frame"]["n"] == 21 and r1["synthetic_b"]["frame"]["n"] == 15
    for name in r1:
        for level in ("frame", "video"):
            a, b = r1[name][level], r2[name][level]
            # The rank-based metrics and counts are exactly equal; log loss averages floats computed in
            # batches of another shape, so it may differ in the last bits.
            for k in ("auc", "acc", "ap", "eer", "tpr@fpr1", "tpr@fpr5", "n", "n_real", "n_fake"):
                assert b[k] == a[k], (name, level, k)
            for k in ("logloss", "ece", "brier"):
                assert b[k] == pytest.approx(a[k], rel=1e-6, abs=1e-9), (name, level, k)
        assert r2[name]["video"]["auc_lo"] == pytest.approx(r1[name]["video"]["auc_lo"], abs=1e-9)
    # Per-video scores: rank 0 writes every video once, from all ranks' gathered predictions.
    p1, p2 = (pd.read_parquet(d / "predictions.parquet") for d in (one, two))
    assert len(p2) == 7 + 5 and p2["frames"].sum() == 21 + 15
    assert p1[["test_set", "video_id", "label", "frames"]].equals(p2[["test_set", "video_id", "label", "frames"]])
    np.testing.assert_allclose(p2["prob_fake"], p1["prob_fake"], rtol=1e-5)
    # The same single-process eval also swept perturbations: one entry per level, every test set.
    rob = json.loads((one / "results.json").read_text())["robustness"]
    assert set(rob) == {"synthetic_a", "synthetic_b"}
    assert [e["level"] for e in rob["synthetic_b"]["blur"]] == [1.5, 3.0]
    assert rob["synthetic_a"]["jpeg"][0]["frame"]["n"] == 21


def test_ddp_training_runs_on_two_gloo_processes(tmp_path, shared_cache):
    """Training under DDP exactly as conf/trainer/ddp.yaml documents the CPU form (accelerator + devices only),
    with a BatchNorm model (SyncBatchNorm exists on GPUs only): each rank gets its shard, rank 0 writes the ckpt."""
    run = tmp_path / "ddp_train"
    proc = _run(["dfd.cli.train", "model=small_cnn", "logger=csv", "trainer=ddp", "trainer.accelerator=cpu",
                 "trainer.devices=2", "trainer.max_epochs=2", "data.num_workers=0", "data.batch_size=8",
                 f"hydra.run.dir={run}", f"paths.cache_dir={shared_cache}", *DATA])
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr
    config = (run / "config.yaml").read_text()
    assert "sync_batchnorm: false" in config and "strategy: ddp" in config
    res = json.loads((run / "results.json").read_text())
    # 36 training frames, 18 per rank, batches of 8 (last dropped): 2 steps per epoch, not 4.
    assert res["global_step"] == 4
    assert res["checkpoint"] and (run / "checkpoints" / "last.ckpt").is_file()
    assert res["test"]["synthetic_a"]["frame"]["n"] == 21
