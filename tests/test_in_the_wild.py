"""experiment=in_the_wild and experiment=mix_search: a training mix selected on its sets' validation splits, the
in-the-wild test bed with absent sets skipped in one line each, the mixes swept, and dfd-report's ranking."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

import tests.layouts as L
import tests.layouts_wild as W
from tests.conftest import compose

TESTBED = ["deepfake_eval_2024_images", "deepfake_eval_2024_videos", "redface", "wilddeepfake", "df40_efs_fe",
           "celebdf_pp", "diff", "kodf", "fakeavceleb", "deepspeak_v1_1", "deepspeak_v2"]
MIXES = {"ffpp": ("ffpp", []), "celebdf_v2": ("celebdf_v2", []), "wilddeepfake": ("wilddeepfake", []),
         "no_ffpp": ("celebdf_v2", ["wilddeepfake"]), "no_celebdf_v2": ("ffpp", ["wilddeepfake"]),
         "no_wilddeepfake": ("ffpp", ["celebdf_v2"]), "all": ("ffpp", ["celebdf_v2", "wilddeepfake"])}


def test_in_the_wild_trains_on_a_mix_tests_the_sets_present_and_skips_the_rest(tmp_path: Path,
                                                                               caplog: pytest.LogCaptureFixture):
    """Celeb-DF v2 + WildDeepfake train (mix=no_ffpp), selected on both validation splits; three test-bed sets are
    present (WildDeepfake, DiFF, FakeAVCeleb) and tested; the eight others are skipped, one line each."""
    from dfd.data.datasets import ManifestArrays
    from dfd.engine.build import build_sources
    from dfd.engine.train import train
    from dfd.extract.config import ExtractConfig
    from dfd.extract.run import extract_faces

    data = tmp_path / "data"
    L.make_celebdf(data / "Celeb-DF-v2")
    L.make_wilddeepfake(data / "WildDeepfake")
    W.make_diff(data / "DiFF")
    W.make_fakeavceleb(data / "FakeAVCeleb_v1.2")
    run = tmp_path / "run"
    cfg = compose("train", runtime=True, overrides=[
        "experiment=in_the_wild", "mix=no_ffpp", "trainer=cpu", f"paths.data_dir={data}",
        f"paths.cache_dir={tmp_path / 'cache'}", f"paths.run_dir={run}", "model=tiny", "logger=none",
        "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "data.num_workers=0", "data.batch_size=16",
        "callbacks.progress_bar=null"])
    assert list(cfg.test_sets) == TESTBED and all(cfg.test_sets[k].optional for k in TESTBED)
    # What dfd-index + dfd-extract do for each set present (the fixtures' tiny frames are used as face crops).
    extract = ExtractConfig.create(frames=2, size=16, inputs="crops", landmarks_for_crops=False, workers=1)
    train_src, tests, mix = build_sources(cfg, [])
    for src in {s.cache_dir: s for s in [train_src, *tests.values(), *(m for m, _ in mix.values())]}.values():
        summary = extract_faces(src.build_index(), src.root, src.cache_dir, extract, progress=False, dataset=src.name)
        assert summary.videos_ok > 0, src.name
    caplog.clear()  # build_sources above said the skips too
    with caplog.at_level(logging.WARNING, logger="dfd.engine"):
        res = train(cfg)

    present = ["wilddeepfake", "diff", "fakeavceleb"]
    assert list(res["test"]) == ["celebdf_v2", *present]  # in-domain first, then the test bed's order
    assert {t for t, r in res["test"].items() if r["in_domain"]} == {"celebdf_v2", "wilddeepfake"}
    for name in present:  # DiFF's stills are reported at the image level, the others' videos at the video level
        top = res["test"][name]["headline"]
        assert top == ("image" if name == "diff" else "video"), name
        assert res["test"][name][top]["n_real"] > 0 and res["test"][name][top]["n_fake"] > 0, name
    skipped = [r.getMessage() for r in caplog.records if " skipped: " in r.getMessage()]
    assert [m.split("'")[1] for m in skipped] == [s for s in TESTBED if s not in present]
    assert all("\n" not in m and "dfd-extract" in m for m in skipped)
    assert [n for n in res["notes"] if " skipped: " in n] == skipped
    # Selected on both training sets' validation splits, pooled.
    assert res["train"]["dataset"] == "celebdf_v2+wilddeepfake" and res["train"]["experiment"] == "in_the_wild"
    assert res["selection"]["split"] == "celebdf_v2 + wilddeepfake val"
    n_val = sum(len(ManifestArrays(s.prepare(), splits="val").video_names) for s in (train_src, mix["wilddeepfake"][0]))
    assert res["val"]["video"]["n"] == n_val > len(ManifestArrays(train_src.prepare(), splits="val").video_names)


def test_train_mix_entries_can_be_optional(tmp_path: Path):
    from dfd.engine.build import build_sources, describe_run

    cfg = compose("train", overrides=["experiment=in_the_wild", f"paths.data_dir={tmp_path}",
                                      f"paths.cache_dir={tmp_path / 'cache'}"])
    skipped: list[str] = []
    train, _, mix = build_sources(cfg, skipped)
    assert train.name == "ffpp" and mix == {}  # FF++ is the run's dataset: never optional
    lines = [s for s in skipped if s.startswith("training set")]
    assert [s.split("'")[1] for s in lines] == ["celebdf_v2", "wilddeepfake"]
    assert "train_mix.celebdf_v2.root=<folder>" in lines[0]
    assert describe_run(cfg, train.name, list(mix))["dataset"] == "ffpp"
    from tests.test_config import _addition_error

    assert _addition_error("+dataset@train_mix.x=diff", "+train_mix.x.optional=true",
                           "+train_mix.x.validate=true") is None


@pytest.mark.parametrize("mix", list(MIXES))
def test_mix_search_sweeps_every_mix(mix: str):
    cfg = compose("train", overrides=["experiment=mix_search", f"mix={mix}"])
    primary, rest = MIXES[mix]
    assert cfg.dataset.name == primary and list(cfg.train_mix) == rest
    assert all(cfg.train_mix[m].validate and cfg.train_mix[m].optional for m in rest)
    assert list(cfg.test_sets) == TESTBED and cfg.experiment_name == "mix_search"
    if primary == "ffpp" or "ffpp" in rest:
        assert (cfg.dataset if primary == "ffpp" else cfg.train_mix.ffpp).compression == "c23"
    if mix == "all":
        swept = compose("train", overrides=["experiment=mix_search"], runtime=False)
        assert swept.dataset.name == "ffpp"
        import yaml

        from dfd.cli._hydra import config_dir

        params = yaml.safe_load((config_dir() / "experiment" / "mix_search.yaml").read_text())["hydra"]["sweeper"]
        assert params["params"]["mix"].split(",") == list(MIXES)


def test_report_ranks_mixes_by_mean_held_out_auc(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Three mixes; WildDeepfake is in two of them, so only the sets none trains on rank them."""
    from tests.test_report import make_results, report_main

    wild = ["diff", "kodf", "fakeavceleb"]
    truth = {  # (training sets) -> AUC per test set
        ("ffpp",): {"ffpp": 0.99, "wilddeepfake": 0.60, "diff": 0.55, "kodf": 0.60, "fakeavceleb": 0.65},
        ("ffpp", "wilddeepfake"): {"ffpp": 0.98, "wilddeepfake": 0.90, "diff": 0.70, "kodf": 0.62, "fakeavceleb": 0.70},
        ("wilddeepfake",): {"wilddeepfake": 0.95, "diff": 0.50, "kodf": 0.80, "fakeavceleb": 0.66},
    }
    for i, (sets, values) in enumerate(truth.items()):
        res = make_results(sets[0], "tiny", "full", 1, values)
        res["train"]["dataset"] = "+".join(sets)
        for name, entry in res["test"].items():
            entry["in_domain"] = name in sets
        res["robustness"] = {}
        (tmp_path / "runs" / str(i)).mkdir(parents=True)
        (tmp_path / "runs" / str(i) / "results.json").write_text(json.dumps(res))
    rc, out, err = report_main(capsys, tmp_path / "runs", "--out", tmp_path / "report")
    assert rc == 0, err
    ranking = pd.read_csv(tmp_path / "report" / "mix_ranking.csv")
    means = {d: sum(v[t] for t in wild) / 3 for d, v in zip(("ffpp", "ffpp+wilddeepfake", "wilddeepfake"),
                                                             truth.values(), strict=True)}
    assert list(ranking.dataset) == sorted(means, key=means.get, reverse=True)
    assert ranking["mean"].tolist() == pytest.approx(sorted(means.values(), reverse=True))
    assert list(ranking["rank"]) == [1, 2, 3] and set(ranking.test_sets) == {"diff, kodf, fakeavceleb"}
    held = ranking.set_index("dataset").mean_held_out
    assert held["ffpp"] == pytest.approx((0.60 + 0.55 + 0.60 + 0.65) / 4)  # its own held-out sets include WDF
    assert "## Training mixes ranked by mean held-out video_auc" in (tmp_path / "report" / "report.md").read_text()
    assert f"mix rank 1 (tiny full): {ranking.dataset[0]}" in out
