"""End to end: a detector trained only on real faces and their self-blends catches real (synthetic) fakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_sbi_only_training_detects_unseen_fakes(tmp_path: Path):
    run_dir = tmp_path / "run"
    cmd = [
        str(Path(sys.executable).with_name("dfd-train")),
        "data.fakes=sbi",
        "logger=none",
        # No checkpoint selection on the val split: its fakes are real fakes the method must not see.
        "callbacks=none",
        "dataset.videos={train: 40, val: 8, test: 24}",
        "trainer.max_epochs=6",
        "data.num_workers=0",
        "data.batch_size=16",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "DFD_ROOT": str(tmp_path), "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    test = results["test"]["synthetic_a"]
    # The test split holds the dataset's own fakes (face swaps), never seen in training.
    assert test["video"]["n_real"] > 0 and test["video"]["n_fake"] > 0
    assert results["train"]["dataset"].endswith("+sbi")
    assert test["video"]["auc"] > 0.75, test
