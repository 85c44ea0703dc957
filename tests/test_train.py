"""End-to-end training with a real Lightning Trainer on the CPU, on the embedded synthetic dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dfd.engine.train import train
from tests.conftest import compose

pytestmark = pytest.mark.slow


def _cfg(run_dir: Path, cache: Path, *extra: str):
    return compose("train", runtime=True, overrides=[
        f"paths.run_dir={run_dir}",
        f"paths.cache_dir={cache}",
        "data.num_workers=0",
        *extra,
    ])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_cache):
    """One short real training run with W&B offline: the small CNN on synthetic domain a."""
    run_dir = tmp_path_factory.mktemp("train_run")
    cfg = _cfg(run_dir, shared_cache, "logger=wandb", "trainer.max_epochs=2", "data.batch_size=16",
               "dataset.videos={train: 100, val: 30, test: 40}", "+dataset@test_sets.synthetic_d=synthetic",
               "test_sets.synthetic_d.domain=d", "test_sets.synthetic_d.videos={train: 0, val: 0, test: 20}")
    return run_dir, train(cfg)


def test_learns_synthetic_forgeries(trained):
    _, results = trained
    test = results["test"]["synthetic_a"]
    assert test["in_domain"] is True
    assert test["frame"]["auc"] >= 0.90, test["frame"]
    assert test["video"]["auc"] >= 0.90, test["video"]
    assert test["frame"]["n"] == 160 and test["video"]["n"] == 40
    assert test["video"]["n_real"] == 20 and test["video"]["n_fake"] == 20
    assert results["test"]["synthetic_d"]["in_domain"] is False
    assert results["test"]["synthetic_d"]["video"]["n"] == 20


def test_results_file_is_the_contract(trained):
    run_dir, results = trained
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk["schema_version"] == 1 and on_disk["kind"] == "train"
    # overrides: what defines the trained model (paths, workers, logger and added test sets are left out).
    assert on_disk["train"] == {"dataset": "synthetic_a", "model": "small_cnn", "finetune": "full", "seed": 42,
                                "experiment": None, "overrides": {
                                    "data.batch_size": 16, "dataset.videos": {"train": 100, "val": 30, "test": 40},
                                    "trainer.max_epochs": 2}}
    a = on_disk["test"]["synthetic_a"]
    assert a["video"]["auc"] == pytest.approx(results["test"]["synthetic_a"]["video"]["auc"])
    assert set(a["frame"]) >= {"auc", "acc", "ap", "eer", "n"}
    assert len(a["roc"]["video"]["fpr"]) == len(a["roc"]["video"]["tpr"]) == 201
    assert on_disk["val"]["video"]["n"] == 30
    # Selected on validation: the checkpoint is the best val epoch and it exists.
    assert Path(on_disk["checkpoint"]).is_file()
    assert (run_dir / "roc.png").stat().st_size > 5000
    resolved = (run_dir / "config.yaml").read_text()
    assert "${" not in resolved and "synthetic_a" in resolved


def test_wandb_offline_run_holds_test_auc(trained):
    from dfd.report.wandb_runs import read_offline_run

    run_dir, results = trained
    logs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    config, summary, _ = read_offline_run(logs[0])
    assert summary["test/synthetic_a/video_auc"] == pytest.approx(results["test"]["synthetic_a"]["video"]["auc"])
    assert summary["test/synthetic_d/frame_auc"] == pytest.approx(results["test"]["synthetic_d"]["frame"]["auc"])
    for key in ("tpr@fpr1", "tpr@fpr5", "ece", "brier"):  # issue 25's metrics, under their documented keys
        assert summary[f"test/synthetic_a/video_{key}"] == pytest.approx(results["test"]["synthetic_a"]["video"][key])
    assert config["model"]["arch"] == "resnet10t"


def test_checkpoint_loads_without_pickles(trained):
    _, results = trained
    ckpt = torch.load(results["checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["dfd"]["input_spec"]["size"] == 64
    assert ckpt["hyper_parameters"]["model"]["arch"] == "resnet10t"


def test_resume_continues_the_same_run(tmp_path, shared_cache):
    base = ["model=tiny", "logger=csv", "dataset.videos={train: 24, val: 8, test: 8}", "dataset.frames_per_video=2",
            "data.batch_size=8", "callbacks.model_checkpoint.save_top_k=-1"]
    first = tmp_path / "first"
    train(_cfg(first, shared_cache, *base, "trainer.max_epochs=1"))
    last = first / "checkpoints" / "last.ckpt"
    c1 = torch.load(last, map_location="cpu", weights_only=True)
    assert c1["global_step"] == 6 and c1["epoch"] == 0

    second = tmp_path / "second"
    res = train(_cfg(second, shared_cache, *base, "trainer.max_epochs=2", f"ckpt_path={last}"))
    c2 = torch.load(second / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert res["global_step"] == 12 and c2["global_step"] == 12 and c2["epoch"] == 1
    # The optimiser state continued (AdamW's per-parameter step counter), not restarted at 0.
    steps = {float(s["step"]) for s in c2["optimizer_states"][0]["state"].values()}
    assert steps == {12.0}
    assert c2["dfd"]["run_id"] == c1["dfd"]["run_id"]
    # The selection record spans the whole run: epoch 0 (first process) and epoch 1 (after resuming).
    assert [(h["epoch"], h["step"]) for h in res["selection"]["history"]] == [(0, 6), (1, 12)]


def test_fast_dev_run_cli(tmp_path, shared_cache):
    proc = subprocess.run(
        [sys.executable, "-m", "dfd.cli.train", "debug=fast_dev_run", "model=tiny", f"hydra.run.dir={tmp_path}",
         f"paths.cache_dir={shared_cache}", "dataset.videos={train: 8, val: 4, test: 4}"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "results.json").read_text())["test"]["synthetic_a"]["frame"]["n"] == 16
    assert (tmp_path / "config.yaml").is_file()


def test_precision_and_memory_format_switches(tmp_path, shared_cache):
    """bf16 autocast + channels_last + gradient accumulation run through the same loop (CPU here, GPU alike)."""
    res = train(_cfg(tmp_path, shared_cache, "model=small_cnn", "logger=none", "debug=fast_dev_run",
                     "trainer.precision=bf16-mixed", "channels_last=true", "trainer.accumulate_grad_batches=2",
                     "dataset.videos={train: 8, val: 4, test: 4}"))
    rep = res["test"]["synthetic_a"]
    assert rep["frame"]["n"] == 16 and 0.0 <= rep["frame"]["acc"] <= 1.0
