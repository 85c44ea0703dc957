"""A Hydra multirun of the synthetic-domains study, then dfd-report over its sweep directory."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def test_multirun_study_then_report(tmp_path, shared_cache):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "dfd.cli.train", "-m", "experiment=synthetic_domains", "model=tiny", "logger=none",
         "trainer.max_epochs=1", "data.num_workers=0", "dataset.videos={train: 16, val: 8, test: 8}",
         "dataset.frames_per_video=2", f"paths.cache_dir={shared_cache}", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = {}
    for job in ("0", "1"):
        res = json.loads((sweep / job / "results.json").read_text())
        runs[res["train"]["dataset"]] = res
    assert set(runs) == {"synthetic_a", "synthetic_b"}
    for name, res in runs.items():
        assert set(res["test"]) == {"synthetic_a", "synthetic_b", "synthetic_c", "synthetic_d"}
        assert [t for t, r in res["test"].items() if r["in_domain"]] == [name]
        assert res["train"]["experiment"] == "synthetic_domains"

    out = tmp_path / "report"
    rep = subprocess.run([sys.executable, "-m", "dfd.cli.report", str(sweep), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-3000:]
    matrix = pd.read_csv(out / "matrix.csv").set_index("dataset")
    for name, res in runs.items():
        for test_set, r in res["test"].items():
            assert matrix.loc[name, test_set] == pytest.approx(r["video"]["auc"], abs=1e-9)
        cross = [r["video"]["auc"] for t, r in res["test"].items() if t != name]
        gap = pd.read_csv(out / "gap.csv").set_index("config")
        row = gap.loc[matrix.loc[name, "config"]]
        assert row["gap"] == pytest.approx(res["test"][name]["video"]["auc"] - sum(cross) / len(cross), abs=1e-9)
    pngs = list(out.rglob("*heatmap*.png"))
    assert pngs and all(p.stat().st_size > 5000 for p in pngs)
    assert "synthetic_a" in (out / "report.md").read_text()
