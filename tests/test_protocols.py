"""The protocol presets: experiment=standard_protocol tests on every dataset present and skips the others with
one line each; experiment=deepfakebench_protocol reads DeepfakeBench's downloads with validation selection."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import tests.layouts_more as M
from tests.conftest import compose

STANDARD_SETS = ["celebdf_v2", "dfd", "dfdc", "dfdcp", "deeperforensics", "wilddeepfake", "ffiw", "df40", "redface"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A data folder holding DeepfakeBench's downloads (FF++ and six test sets) and DF40, nothing else."""
    base = tmp_path_factory.mktemp("data")
    M.make_deepfakebench(base / "DeepfakeBench")
    M.make_df40(base)
    return base


def test_standard_protocol_runs_on_the_datasets_present_and_skips_the_rest(data: Path, tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """FF++ (here DeepfakeBench's FF++ crops, which need no face extraction) + DF40 present; the seven other test
    sets and RedFace are absent: the run tests what is there and says, once per set, what it skipped."""
    from dfd.engine.train import train

    run = tmp_path / "run"
    cfg = compose("train", runtime=True, overrides=[
        "experiment=standard_protocol", "trainer=cpu", "dataset=deepfakebench", f"paths.data_dir={data}",
        f"paths.cache_dir={tmp_path / 'cache'}", f"paths.run_dir={run}", "model=tiny", "logger=none",
        "trainer.max_epochs=1", "data.num_workers=0", "data.batch_size=8", "callbacks.progress_bar=null",
        f"test_sets.df40.real_roots.ff={data / 'rgb/FaceForensics++'}",
        f"test_sets.df40.real_roots.cdf={data / 'rgb/Celeb-DF-v2'}"])
    assert list(cfg.test_sets) == STANDARD_SETS and all(cfg.test_sets[k].optional for k in STANDARD_SETS)
    with caplog.at_level(logging.WARNING, logger="dfd.engine"):
        res = train(cfg)
    assert set(res["test"]) == {"deepfakebench_FaceForensics++", "df40"}
    assert res["test"]["df40"]["video"]["n_fake"] > 0 and res["test"]["df40"]["video"]["n_real"] > 0
    missing = [s for s in STANDARD_SETS if s != "df40"]
    skipped = [r.getMessage() for r in caplog.records if " skipped: " in r.getMessage()]
    assert [m.split("'")[1] for m in skipped] == missing  # one line per missing set, in the preset's order
    for line, name in zip(skipped, missing, strict=True):
        assert "\n" not in line and f"set test_sets.{name}.root=<folder>" in line and "dfd-extract" in line
    assert any(str(data / "Celeb-DF-v2") in m for m in skipped)
    assert any(str(data / "FaceForensics++" / "manipulated_sequences" / "DeepFakeDetection") in m for m in skipped)
    on_disk = json.loads((run / "results.json").read_text())
    assert [n for n in on_disk["notes"] if " skipped: " in n] == skipped  # recorded with the numbers
    assert on_disk["video_score"]["rule"] == "max_face_mean" and on_disk["train"]["experiment"] == "standard_protocol"


def test_a_present_but_unextracted_optional_set_is_still_an_error(data: Path, tmp_path: Path) -> None:
    from dfd.engine.build import build_sources
    from dfd.errors import DatasetError

    (tmp_path / "Celeb-DF-v2").mkdir()  # the data is here, its crops are not: skipping would hide a mistake
    cfg = compose("train", overrides=["experiment=standard_protocol", "dataset=deepfakebench",
                                      f"paths.data_dir={data}", f"paths.cache_dir={tmp_path / 'cache'}",
                                      f"test_sets.celebdf_v2.root={tmp_path / 'Celeb-DF-v2'}"])
    skipped: list[str] = []
    _, tests, _ = build_sources(cfg, skipped)
    assert "celebdf_v2" in tests and len(skipped) == 7
    with pytest.raises(DatasetError, match="no face-crop manifest .* run `dfd-extract dataset=celebdf_v2"):
        tests["celebdf_v2"].prepare()
    # Without optional (a hand-made list), a missing set stops the run as before; skip_missing_test_sets opts in.
    plain = compose("train", overrides=["+dataset@test_sets.cdf=celebdf_v2", f"paths.data_dir={tmp_path / 'none'}"])
    assert build_sources(plain)[1]["cdf"].missing() is not None
    kept: list[str] = []
    assert build_sources(compose("train", overrides=[
        "+dataset@test_sets.cdf=celebdf_v2", f"paths.data_dir={tmp_path / 'none'}",
        "data.skip_missing_test_sets=true"]), kept)[1] == {} and len(kept) == 1
    # `optional` (and display_name) are dfd's own test-set keys: strict configs accept them as additions.
    from tests.test_config import _addition_error

    assert _addition_error("+dataset@test_sets.cdf=celebdf_v2", "+test_sets.cdf.optional=true",
                           "+test_sets.cdf.display_name=cdf2") is None


def test_deepfakebench_protocol_reads_its_downloads_and_skips_missing_jsons(data: Path, tmp_path: Path) -> None:
    from dfd.engine.build import build_sources

    cfg = compose("train", overrides=["experiment=deepfakebench_protocol", f"paths.data_dir={data}",
                                      f"paths.cache_dir={tmp_path / 'cache'}"])
    assert cfg.data.video_score == "mean" and cfg.selection.monitor == "val/select"
    skipped: list[str] = []
    train, tests, _ = build_sources(cfg, skipped)
    # The fixture has no Celeb-DF-v1 and no FaceShifter JSON.
    assert sorted(tests) == ["celebdf_v2", "deeperforensics", "dfd", "dfdc", "dfdcp", "uadfv"]
    assert [s.split("'")[1] for s in skipped] == ["celebdf_v1", "faceshifter"]
    assert "Celeb-DF-v1.json" in skipped[0]
    # Validation selection needs a real validation split: FF++'s official val, both classes.
    from dfd.data.datasets import ManifestArrays

    val = ManifestArrays(train.prepare(), splits="val")
    assert set(val.video_labels.tolist()) == {0, 1}
    assert len(ManifestArrays(tests["dfd"].prepare(), splits="test").video_names) == 10  # all of DFD
