"""dfd-eval robustness with DeeperForensics-1.0's distortions: the 35-cell grid end to end on the synthetic set
(crop level: it has no source frames) with dfd-report's type x level heatmap, and frame level on raw videos
(distorted before face detection by dfd-extract's code, cached per contract and distortion)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dfd.errors import ConfigError
from dfd.store.distort import DF_LEVELS, DF_TYPES
from dfd.store.media import read_image
from tests.conftest import compose
from tests.media import write_face_video
from tests.test_export import checkpoints  # noqa: F401  (session fixture: trained once)

pytestmark = pytest.mark.slow
EVAL = ["logger=none", "data.num_workers=0", "data.batch_size=16", "threads=1"]


def test_deeperforensics_grid_on_the_synthetic_set_and_its_heatmap(checkpoints, tmp_path):  # noqa: F811
    from dfd.engine.evaluate import evaluate
    from dfd.report.build import build_report

    ckpt = checkpoints["plain"]
    run = tmp_path / "eval"
    # The preset distorts source frames; the synthetic set has none: one line, before any evaluation.
    with pytest.raises(ConfigError, match="^robustness.at=frame .* test set 'synthetic_a' cannot be: it has no source "
                                          "frames .*use robustness.at=crop"):
        evaluate(compose("eval", [f"ckpt_path={ckpt}", "robustness=deeperforensics", f"paths.run_dir={run}", *EVAL]))
    res = evaluate(compose("eval", [f"ckpt_path={ckpt}", "robustness=deeperforensics", "robustness.at=crop",
                                    f"paths.run_dir={run}", *EVAL]))
    grid = res["robustness"]["synthetic_a"]
    assert list(grid) == [f"df_{t.lower()}" for t in DF_TYPES]
    assert all([p["level"] for p in grid[k]] == list(DF_LEVELS) and {p["at"] for p in grid[k]} == {"crop"}
               for k in grid)
    aucs = np.array([[p["video"]["auc"] for p in grid[k]] for k in grid])
    assert aucs.shape == (7, 5) and np.isfinite(aucs).all()
    clean = res["test"]["synthetic_a"]["video"]["auc"]
    assert (np.abs(aucs - clean) > 1e-9).any()  # the distortions reached the model
    assert json.loads((run / "results.json").read_text())["robustness"] == json.loads(json.dumps(res["robustness"]))

    out = build_report([run], tmp_path / "report")
    png = out.files["distortions:synthetic_a"]
    assert png.name == "distortions_synthetic_a.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(out.files["distortions"]).set_index("type")
    assert list(table.index) == list(DF_TYPES)
    assert table[[str(lv) for lv in DF_LEVELS]].to_numpy() == pytest.approx(aucs, abs=1e-6)
    assert table["clean"].to_numpy() == pytest.approx([clean] * 7, abs=1e-6)
    md = out.report.read_text()
    assert "## DeeperForensics-1.0 distortions" in md and "figures/distortions_synthetic_a.png" in md
    assert f"| GB | {clean:.3f} |" in md


def _csv_set(root: Path) -> Path:
    """Four face videos, all in the test split (labels arbitrary: the mechanics are under test)."""
    rows = ["path,label,split"]
    for i, (size, canvas) in enumerate([(192, 224), (176, 224), (192, 240), (160, 208)]):
        write_face_video(root / f"v{i}.mp4", n_frames=6, size=size, canvas=canvas)
        rows.append(f"v{i}.mp4,{i % 2},test")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_frame_level_distortions_reextract_the_test_set_once(checkpoints, tmp_path):  # noqa: F811
    from hydra.utils import instantiate

    from dfd.engine.evaluate import evaluate
    from dfd.extract.config import ExtractConfig
    from dfd.extract.distorted import DistortedTestSet
    from dfd.extract.run import extract_faces
    from dfd.store.distort import Distortion

    root = _csv_set(tmp_path / "data")
    common = [f"paths.cache_dir={tmp_path / 'cache'}"]
    src = instantiate(compose("extract", ["dataset=csv", f"dataset.root={root}", *common]).dataset)
    cfg = ExtractConfig.create(frames=2, size=64, workers=1)  # framed as the checkpoint's synthetic crops
    extract_faces(src.write_index(src.cache_dir / "index.parquet"), root, src.cache_dir, cfg, progress=False)

    res = evaluate(compose("eval", [
        f"ckpt_path={checkpoints['plain']}", "+dataset@test_sets.mine=csv", f"test_sets.mine.root={root}", *common,
        "data.include_train_test=false", "robustness={df_gb: [1], df_vc: [2], at: frame, workers: 1}",
        f"paths.run_dir={tmp_path / 'eval'}", *EVAL]))
    rob = res["robustness"]["mine"]
    assert [(k, p["level"], p["at"], p["video"]["n"]) for k in rob for p in rob[k]] == [
        ("df_gb", 1.0, "frame", 4), ("df_vc", 2.0, "frame", 4)]
    assert res["test"]["mine"]["video"]["n"] == 4
    from dfd.report.build import build_report

    report = build_report([tmp_path / "eval"], tmp_path / "report")  # frame-level cells are their own grid
    assert report.files["distortions:mine@frame"].name == "distortions_mine_frame.png"
    assert "### mine, source frames, before face detection:" in report.report.read_text()

    contract = src.crop_contract()
    clean = pd.read_parquet(src.manifest_path).set_index("crop_path")
    for d in (Distortion("df_gb", 1), Distortion("df_vc", 2)):
        again = DistortedTestSet(src, contract, d, workers=1)
        again.prepare()  # what a rerun of the sweep does: every video reused, nothing detected again
        assert again.summary.videos_resumed == 4 and again.summary.processed == []
        assert again.cache_dir == src.cache_dir / "distorted" / contract.fingerprint()[:12] / f"{d.kind}_{d.level:g}"
        man = pd.read_parquet(again.manifest_path)
        assert set(man.distortion) == {str(d)} and len(man) == len(clean)
        changed = [not np.array_equal(read_image(again.cache_dir / p), read_image(src.cache_dir / p))
                   for p in man.crop_path]
        assert all(changed), d  # every crop comes from a distorted frame
