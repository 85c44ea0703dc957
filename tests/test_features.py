"""Feature stores (dfd-embed) and heads trained on them (data.features=cached): parity with end-to-end training,
refusal of stale stores, DDP and resumed builds byte for byte, k-NN and MLP heads, export to raw-video predictions.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from dfd.engine.embed import embed
from dfd.engine.train import train
from dfd.errors import one_line, user_error
from dfd.store.features import FeatureStore, FeatureStoreError
from tests.conftest import compose

pytestmark = pytest.mark.slow

DATA = ["dataset.videos={train: 16, val: 8, test: 8}", "dataset.frames_per_video=2"]
TINY = ["model=tiny", "logger=none", "data.num_workers=0", *DATA]
PROBE = ["finetune=linear_probe", "augment=none", "trainer.max_epochs=3", "data.batch_size=8", "optim.lr=0.05"]


def _train(run_dir: Path, cache: Path, *extra: str) -> dict:
    return train(compose("train", runtime=True, overrides=[f"paths.run_dir={run_dir}", f"paths.cache_dir={cache}",
                                                           *TINY, *extra]))


def _embed_cfg(cache: Path, *extra: str):
    return compose("embed", overrides=[f"paths.cache_dir={cache}", "model=tiny", "embed.num_workers=0",
                                       "progress=false", *DATA, *extra])


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feature_cache")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache) -> dict[str, dict]:
    """The same linear probe trained end to end on the crops and on stored features (the store built on first
    use). The end-to-end model rounds its pooled feature to fp16 as the store does (model.feature_dtype), so both
    runs compute one function; the default fp32 end-to-end probe is compared in the benchmark (bench_features)."""
    base = tmp_path_factory.mktemp("feature_runs")
    return {
        "crops": _train(base / "crops", cache, *PROBE, "+model.feature_dtype=float16"),
        "cached": _train(base / "cached", cache, *PROBE, "data.features=cached"),
    }


def test_head_on_stored_features_equals_the_frozen_model_end_to_end(runs, cache):
    crops, cached = runs["crops"], runs["cached"]
    # Same selected epoch, same per-epoch validation record, same test metrics.
    assert cached["selection"]["epoch"] == crops["selection"]["epoch"]
    for a, b in zip(crops["selection"]["history"], cached["selection"]["history"], strict=True):
        assert a["epoch"] == b["epoch"] and a["video_auc"] == b["video_auc"]
        assert b["frame_logloss"] == pytest.approx(a["frame_logloss"], abs=1e-5)
    for level in ("frame", "video"):
        a, b = crops["test"]["synthetic_a"][level], cached["test"]["synthetic_a"][level]
        assert a["auc"] == b["auc"] and a["n"] == b["n"] == (16 if level == "frame" else 8)
        assert b["logloss"] == pytest.approx(a["logloss"], abs=1e-5)
    # Logits of the two trained models, end to end on the same test crops: equal within 1e-4.
    from dfd.data.datasets import FrameDataset, ManifestArrays
    from dfd.data.transforms import Pipeline, Spec
    from dfd.engine.evaluate import load_module

    m_crops, m_cached = load_module(crops["checkpoint"]).eval(), load_module(cached["checkpoint"]).eval()
    store = FeatureStore(cached["features"]["stores"]["synthetic_a"])
    arrays = ManifestArrays(Path(store.record()["manifest"]), splits="test")
    ds = FrameDataset(arrays, Pipeline(Spec.of(m_cached.model.input_spec)))
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    with torch.no_grad():
        l_crops, l_cached = m_crops(x), m_cached(x)
        l_store = m_cached.model.forward_head(torch.from_numpy(np.asarray(store.array("test"), np.float32)))
    assert float(l_crops.abs().max()) > 0.05  # the head did learn something to compare
    assert float((l_crops - l_cached).abs().max()) <= 1e-4
    # The checkpoint (backbone + head, dfd-eval's path) gives on crops what training computed from the store.
    assert float((l_store - l_cached).abs().max()) <= 1e-5
    # Only the classifier trained; the store says what made it.
    assert cached["params"]["trainable"] == crops["params"]["trainable"] == 65
    rec = store.record()
    assert rec["dim"] == 64 and rec["dtype"] == "float16" and set(rec["splits"]) == {"train", "val", "test"}
    assert rec["splits"]["train"]["rows"] == 32 and store.array("val").dtype == np.float16


def test_stale_store_is_refused_in_one_line_and_rebuilt_on_request(tmp_path, cache):
    # A private copy of the synthetic set, so its manifest can be changed as a re-extraction would.
    src = next(p for p in cache.glob("synthetic/a-*") if (p / "manifest.parquet").is_file())
    mine = tmp_path / "cache"
    shutil.copytree(src, mine / "synthetic" / src.name, ignore=shutil.ignore_patterns("features"))
    out = embed(_embed_cfg(mine))
    folder = Path(out["store"])
    assert out["chunks"] > 0 and (folder / "features.json").is_file() and not (folder / "parts").exists()

    def refused(*extra: str) -> str:
        with pytest.raises(FeatureStoreError) as exc:
            embed(_embed_cfg(mine, *extra))
        line = one_line(user_error(exc.value))
        assert "\n" not in line and line.startswith("error: the feature store ") and "embed.rebuild=true" in line
        return line

    assert "other backbone weights" in refused("seed=7")  # a random-init backbone of another seed
    manifest = mine / "synthetic" / src.name / "manifest.parquet"
    table = pq.read_table(manifest)
    meta = dict(table.schema.metadata)
    record = json.loads(meta[b"dfd.cache"])
    record["contract"]["margin"], record["contract_id"] = 1.5, "another-contract"
    pq.write_table(table.replace_schema_metadata({**meta, b"dfd.cache": json.dumps(record).encode()}), manifest)
    line = refused()
    assert "another crop contract" in line and "re-extracted crop cache" in line
    pq.write_table(table.slice(1), manifest)  # same contract, another manifest: re-extracted
    line = refused()
    assert "re-extracted crop cache" in line and "crop contract" not in line
    rebuilt = embed(_embed_cfg(mine, "embed.rebuild=true"))
    assert rebuilt["record"]["splits"]["train"]["rows"] == 31 and rebuilt["reused"] == 0


def _embed_cmd(cache: Path, folder: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dfd.cli.embed", f"paths.cache_dir={cache}", "model=tiny", "embed.num_workers=0",
            "progress=false", f"embed.dir={folder}", "embed.views=1", "embed.chunk_rows=4", "embed.batch_size=3",
            f"hydra.run.dir={folder.parent / 'logs'}", *DATA, *extra]


def test_ddp_and_resumed_builds_are_byte_identical_to_one_process(tmp_path, cache):
    one = tmp_path / "one"
    ref = embed(_embed_cfg(cache, f"embed.dir={one}", "embed.views=1", "embed.chunk_rows=4", "embed.batch_size=3"))
    reference = _files(Path(ref["store"]))
    assert set(reference) == {"features.json", "train.npy", "train.view1.npy", "val.npy", "test.npy"}
    views = np.load(Path(ref["store"]) / "train.view1.npy")
    assert not np.array_equal(views, np.load(Path(ref["store"]) / "train.npy"))  # light augmentation applied

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ddp = subprocess.run(_embed_cmd(cache, tmp_path / "ddp", "trainer=ddp", "trainer.accelerator=cpu",
                                    "trainer.devices=2", "trainer.precision=32-true"), capture_output=True, text=True, timeout=300, env=env)
    assert ddp.returncode == 0, ddp.stdout[-2000:] + ddp.stderr[-3000:]
    assert "MEMBER: 2/2" in ddp.stdout + ddp.stderr  # really two gloo processes
    assert _files(tmp_path / "ddp" / "synthetic_a" / "timm-test_vit") == reference

    killed = tmp_path / "killed"
    parts = killed / "synthetic_a" / "timm-test_vit" / "parts"
    proc = subprocess.Popen(_embed_cmd(cache, killed, "threads=1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and len(list(parts.glob("*.npy"))) < 3:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    kept = len(list(parts.glob("*.npy")))
    assert proc.returncode == -signal.SIGKILL and kept >= 3
    assert not (parts.parent / "features.json").exists()
    resumed = embed(_embed_cfg(cache, f"embed.dir={killed}", "embed.views=1", "embed.chunk_rows=4",
                               "embed.batch_size=3"))
    assert resumed["reused"] >= 3 and resumed["reused"] < resumed["chunks"]
    assert _files(parts.parent) == reference


def test_knn_head_votes_over_the_stored_training_features(tmp_path, cache, runs):
    res = _train(tmp_path / "knn", cache, "finetune=linear_probe", "data.features=cached", "head=knn",
                 "model.head_args.k=5")
    assert res["params"]["trainable"] == 0 and res["selection"]["epoch"] == 0
    # No new store: the one built by the linear probe run serves every head.
    assert res["features"]["stores"] == runs["cached"]["features"]["stores"]
    assert not any("feature stores built" in n for n in res["notes"])
    store = FeatureStore(res["features"]["stores"]["synthetic_a"])
    bank, query = (np.asarray(store.array(s), np.float64) for s in ("train", "test"))
    labels = np.asarray(pd.read_parquet(Path(store.record()["manifest"])).query("split == 'train'")
                        .sort_values(["video_id", "frame"])["label"], np.float64)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    sims = unit(query) @ unit(bank).astype(np.float16).astype(np.float64).T  # the bank is kept as fp16 unit vectors
    top = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    s = np.take_along_axis(sims, top, 1)
    w = np.exp((s - s.max(1, keepdims=True)) / 0.07)
    vote = (w * labels[top]).sum(1) / w.sum(1)
    want = (5 * vote + 0.5) / 6
    pred = pd.read_parquet(tmp_path / "knn" / "predictions.parquet")
    got = np.concatenate([np.asarray(p, np.float64) for p in pred.sort_values("video_id")["frame_probs"]])
    np.testing.assert_allclose(got, want, atol=2e-5)
    # The bank travels in the checkpoint and in the traced bundle model (traced at batch 2, run at 3).
    from dfd.engine.evaluate import load_module
    from dfd.inference.export import load_for_export, write_torchscript

    head = load_module(res["checkpoint"]).model.backbone.get_classifier()
    assert tuple(head.bank.shape) == (32, 64) and float(head.bank_labels.sum()) == labels.sum()
    model, _ = load_for_export(res["checkpoint"])
    write_torchscript(model, model.detector.input_spec.to_dict(), tmp_path / "knn.pt")
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's notice that TorchScript is deprecated
        torch.testing.assert_close(torch.jit.load(str(tmp_path / "knn.pt"))(x), model(x))


def test_feature_settings_that_cannot_work_fail_in_one_line(tmp_path, cache):
    for extra, words in ((["head=knn"], "add finetune=linear_probe data.features=cached"),
                         (["data.features=cached"], "use finetune=linear_probe")):
        with pytest.raises(Exception) as exc:
            _train(tmp_path / "bad", cache, *extra)
        line = one_line(user_error(exc.value))
        assert words in line and "\n" not in line


def test_bundle_of_a_feature_trained_mlp_predicts_raw_videos_with_the_run_test_scores(tmp_path):
    """Face videos in a folder dataset -> dfd-extract (real MTCNN) -> an MLP head on stored features -> dfd-export
    -> dfd-predict on the raw test videos: the run's test scores, within 1e-5."""
    from hydra.utils import instantiate

    from dfd.extract.config import ExtractConfig
    from dfd.extract.run import extract_faces
    from dfd.faces.contract import CropContract
    from dfd.inference.bundle import load_bundle
    from dfd.inference.export import export_bundle
    from dfd.inference.predict import Predictor
    from tests.media import write_face_video

    root = tmp_path / "data"
    for label in ("real", "fake"):
        for i in range(3):
            write_face_video(root / label / f"{label}{i}.mp4", n_frames=6, size=176 + 16 * i, canvas=240)
    data = ["dataset=folder", f"dataset.root={root}", f"paths.cache_dir={tmp_path / 'cache'}",
            "dataset.val_fraction=0.34", "dataset.test_fraction=0.34"]
    src = instantiate(compose("train", overrides=data).dataset)
    index = src.write_index(src.cache_dir / "index.parquet")
    extract_faces(index, root, src.cache_dir, ExtractConfig(CropContract(frames=3), workers=1), progress=False,
                  dataset=src.name)
    res = train(compose("train", runtime=True, overrides=[
        *data, f"paths.run_dir={tmp_path / 'run'}", "model=tiny", "logger=none", "data.num_workers=0",
        "finetune=linear_probe", "data.features=cached", "head=mlp", "model.head_args.hidden=16",
        "trainer.max_epochs=2", "optim.lr=0.05"]))
    export_bundle(res["checkpoint"], tmp_path / "bundle", calibrate="none")
    scores = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    assert len(scores) == 2 and set(scores["frames"]) == {3}
    out = Predictor(load_bundle(tmp_path / "bundle"), frames=3).predict(
        [str(root / f"{v}.mp4") for v in scores["video_id"]], progress=False)
    for r, want in zip(out, scores["prob_fake"], strict=True):
        assert r.status == "ok" and r.frames == 3 and abs(r.prob_fake - want) <= 1e-5, (r.path, r.prob_fake, want)


def test_report_draws_feature_maps_of_the_runs_stores(runs, tmp_path):
    from dfd.report.build import build_report

    run_dir = Path(runs["cached"]["run_dir"])
    result = build_report([run_dir], tmp_path / "report")
    maps = {k: v for k, v in result.files.items() if k.startswith("feature_map:")}
    # One training set: maps by label and by method (a map by dataset needs several).
    assert set(maps) == {"feature_map:timm-test_vit_label", "feature_map:timm-test_vit_method"}
    for path in maps.values():
        assert path.parent == tmp_path / "report" / "figures" and path.stat().st_size > 5000
