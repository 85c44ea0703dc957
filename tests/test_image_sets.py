"""Still images are items of their own: a set of images reports the image level (no video level), a set holding
both reports frame/video over its videos, image over its images and item over all; results.json, W&B, the console
table, predictions.parquet, dfd-report and dfd-predict's thresholds agree. Training on a mix whose reals and fakes
differ in resolution warns (the shortcut audit).

One real run, built once: a ``folder`` set of face JPEGs (reals 1280x720, fakes 640x480, two methods) extracted
with MTCNN and trained on (tiny model, two steps) with a mix of look-alike images, tested on itself and on a set of
face videos and images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from dfd.engine.metrics import rank_auc
from dfd.extract.config import ExtractConfig
from dfd.extract.run import extract_faces
from tests.conftest import compose
from tests.layouts_images import make_alike_images, make_mixed_media, make_shortcut_splits


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    from dfd.engine.train import train

    base = tmp_path_factory.mktemp("images")
    shots = make_shortcut_splits(base / "shots")
    mixed = make_mixed_media(base / "mixed", videos=1, images=2, split="test")
    alike = make_alike_images(base / "alike", n=2, seed=3)
    run_dir = base / "run"
    cfg = compose("train", runtime=True, overrides=[
        f"paths.run_dir={run_dir}", f"paths.cache_dir={base / 'cache'}", "dataset=folder", f"dataset.root={shots}",
        "dataset.name=shots", "model=tiny", "data.num_workers=0", "data.batch_size=8", "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2", "logger=wandb",
        "+dataset@test_sets.mixed=folder", f"test_sets.mixed.root={mixed}", "test_sets.mixed.name=mixed",
        "+dataset@train_mix.alike=folder", f"train_mix.alike.root={alike}", "train_mix.alike.name=alike",
    ])
    contract = ExtractConfig.create(frames=2, size=64, workers=1)
    sources = {}
    for node in (cfg.dataset, cfg.test_sets.mixed, cfg.train_mix.alike):
        src = instantiate({k: v for k, v in node.items() if k != "weight"})
        index = src.write_index(Path(src.cache_dir) / "index.parquet")  # what dfd-index writes
        summary = extract_faces(index, src.root, src.cache_dir, contract, progress=False, dataset=src.name)
        assert summary.videos_failed == 0, summary
        sources[src.name] = src
    results = train(cfg)
    return {"results": results, "run_dir": run_dir, "sources": sources, "cfg": cfg}


def test_an_image_set_reports_the_image_level_only(run) -> None:
    res = run["results"]
    shots = res["test"]["shots"]
    assert (shots["unit"], shots["headline"]) == ("image", "image")
    assert not {"frame", "video", "item"} & set(shots) and set(shots["roc"]) == {"image"}
    img = shots["image"]
    assert (img["n"], img["n_real"], img["n_fake"]) == (3, 1, 2)  # test split: 1 real, m1 + m2 fakes, one image each
    assert 0.0 <= img["auc_lo"] <= img["auc"] <= img["auc_hi"] <= 1.0  # the bootstrap interval, over images
    assert set(shots["per_method"]) == {"m1", "m2"}
    assert all(set(m) == {"image"} and m["image"]["n"] == 2 for m in shots["per_method"].values())
    # Validation is an image set too: the checkpoint was selected on image AUC.
    assert res["val"]["unit"] == "image" and "video" not in res["val"] and res["val"]["image"]["n"] == 2
    assert "val/image_auc" in res["selection"]["criterion"]
    assert any("fake images" in n for n in res["notes"])  # the small-sample note counts images


def test_a_mixed_set_reports_videos_images_and_every_item(run) -> None:
    mixed = run["results"]["test"]["mixed"]
    assert (mixed["unit"], mixed["headline"]) == ("mixed", "item")
    n = {lv: (mixed[lv]["n_real"], mixed[lv]["n_fake"]) for lv in ("video", "image", "item")}
    assert n["image"][0] + n["video"][0] == n["item"][0] and n["image"][1] + n["video"][1] == n["item"][1]
    assert n["video"] == (1, 1) and n["image"] == (2, 2) and mixed["frame"]["n"] == 2 * 2  # 2 frames per video
    assert {"auc_lo", "auc_hi"} <= set(mixed["item"]) and set(mixed["roc"]) == {"frame", "video", "image", "item"}


def test_predictions_name_the_kind_and_reproduce_each_level(run) -> None:
    res, df = run["results"], pd.read_parquet(run["run_dir"] / "predictions.parquet")
    assert df.columns[-1] == "kind"
    shots, mixed = df[df["test_set"] == "shots"], df[df["test_set"] == "mixed"]
    assert set(shots["kind"]) == {"image"} and (shots["frames"] == 1).all()
    assert sorted(mixed["kind"]) == ["image"] * 4 + ["video"] * 2

    def auc(rows: pd.DataFrame) -> float:
        return rank_auc(torch.tensor(rows["prob_fake"].to_numpy()), torch.tensor(rows["label"].to_numpy()))

    assert auc(shots) == res["test"]["shots"]["image"]["auc"]
    assert auc(mixed) == res["test"]["mixed"]["item"]["auc"]
    assert auc(mixed[mixed["kind"] == "image"]) == res["test"]["mixed"]["image"]["auc"]
    assert auc(mixed[mixed["kind"] == "video"]) == res["test"]["mixed"]["video"]["auc"]


def test_wandb_and_the_console_table_use_the_same_levels(run, capsys) -> None:
    from dfd.engine.summary import print_table
    from dfd.report.wandb_runs import read_offline_run

    res = run["results"]
    logs = sorted((run["run_dir"] / "wandb").rglob("run-*.wandb"))
    assert len(logs) == 1
    _, summary, _ = read_offline_run(logs[0])
    assert summary["test/shots/image_auc"] == pytest.approx(res["test"]["shots"]["image"]["auc"])
    assert summary["test/mixed/item_auc_hi"] == pytest.approx(res["test"]["mixed"]["item"]["auc_hi"])
    assert not any(k.startswith(("test/shots/video_", "test/shots/frame_")) for k in summary)
    print_table(res["test"], "t")
    rows = {ln.split("│")[1].strip(): [c.strip() for c in ln.split("│")[2:]] for ln in capsys.readouterr().out.splitlines()
            if ln.count("│") > 5}
    assert rows["shots"][:4] == ["image", "1/2", "-", "-"] and rows["mixed"][:3] == ["item", "3/3", "4"]


def test_the_training_mix_audit_warns_of_the_resolution_shortcut(run) -> None:
    audit = run["results"]["audit"]
    assert audit["pairs"]["shots"]["shots"] >= 0.95  # shots' own reals (1280x720) vs its fakes (640x480)
    assert audit["mix"]["n_real"] == 3 + 1 and audit["mix"]["n_fake"] == 3 + 1  # the train splits of both sets
    warned = [n for n in run["results"]["notes"] if "shortcut audit" in n]
    assert warned and any("shots reals / shots fakes" in n for n in warned)


def test_dfd_report_shows_image_sets_in_the_default_matrix(run, tmp_path) -> None:
    from dfd.report.build import build_report
    from dfd.report.collect import collect
    from dfd.report.matrix import build_matrix

    out = build_report([run["run_dir"]], tmp_path / "report")
    matrix = pd.read_csv(tmp_path / "report" / "matrix.csv")
    res = run["results"]["test"]
    # video_auc: the mixed set's videos; the image set, which has no video level, its image AUC (said in report.md).
    assert matrix.loc[0, "shots"] == pytest.approx(res["shots"]["image"]["auc"])
    assert matrix.loc[0, "mixed"] == pytest.approx(res["mixed"]["video"]["auc"])
    assert "shots: image_auc, over its images" in out.report.read_text()
    # item_auc: every test set over all its items (the mixed set's item level, the image set's images).
    item = build_matrix(collect([run["run_dir"]]).long, "item_auc")
    assert item.mean.loc[:, "mixed"].iloc[0] == pytest.approx(res["mixed"]["item"]["auc"])
    assert item.mean.loc[:, "shots"].iloc[0] == pytest.approx(res["shots"]["image"]["auc"])
    assert item.shown_levels == {"shots": "image"}


def test_image_thresholds_come_from_validation_images(run) -> None:
    from dfd.inference.bundle import Bundle
    from dfd.inference.export import describe, load_for_export
    from dfd.inference.predict import Predictor

    ckpt = run["results"]["checkpoint"]
    model, hparams = load_for_export(ckpt)
    config = describe(ckpt, model, hparams, "eer")
    thr = config["thresholds"]
    assert (thr["image"]["on"], thr["image"]["n"], thr["image"]["applies_to"]) == ("images", 2, "single images")
    assert "note" not in thr["image"]
    for level in ("video", "frame"):  # a validation split of images only: said, and calibrated on the images
        assert thr[level]["on"] == "images" and "no videos in the validation split" in thr[level]["note"]
    image = next((run["sources"]["shots"].root / "test" / "fake" / "m1").glob("*.jpg"))
    thr["image"]["value"] = 1 - 1e-9  # every image real: the image threshold is the one applied
    (row,) = Predictor(Bundle(model, config), frames=2).predict([str(image)], progress=False)
    assert (row.status, row.threshold_level, row.threshold, row.label) == ("ok", "image", 1 - 1e-9, 0)
    assert 0 < row.prob_fake < 1 - 1e-9


def test_manifest_carries_the_kind_and_old_manifests_tell_images_by_extension(run, tmp_path) -> None:
    from dfd.data.datasets import ManifestArrays

    src = run["sources"]["mixed"]
    manifest = pd.read_parquet(src.manifest_path)
    assert set(manifest.groupby("video_id")["kind"].first()) == {"video", "image"}
    arrays = ManifestArrays(src.manifest_path)
    kinds = dict(zip((v.decode() for v in arrays.video_names), arrays.video_is_image, strict=True))
    assert kinds == {v: v.split("/")[-1].split("_")[1].startswith("i") for v in kinds}
    old = tmp_path / "manifest.parquet"  # written before the column: the source file's extension says it
    manifest.drop(columns=["kind"]).to_parquet(old)
    assert np.array_equal(ManifestArrays(old).video_is_image, arrays.video_is_image)
    json.dumps(run["results"]["audit"])  # the audit record is plain JSON
