"""Packed crops: dfd-pack writes tar shards atomically and resumably; files and shards feed training the same."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

from dfd.data.datamodule import DeepfakeDataModule, UnpaddedDistributedSampler
from dfd.data.packed import ShardClipDataset, ShardFrameDataset, ShardStreamDataset
from dfd.store.packed.format import ShardError, parse_size, sample_key
from dfd.store.packed.writer import PackWriter, pack_cache
from dfd.synthetic.source import SyntheticSource

SPEC = {"size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
SHARD = "24KB"  # 2-3 crops of ~9 KB per shard: many shards, partial ones at every boundary


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> SyntheticSource:
    """23 train / 5 val / 7 test videos of 3 frames: odd counts, so ranks and workers split unevenly."""
    src = SyntheticSource("syn", "a", videos={"train": 23, "val": 5, "test": 7}, frames_per_video=3,
                          cache_dir=tmp_path_factory.mktemp("shards_src"))
    src.prepare()
    return src


@pytest.fixture(scope="module")
def packed(source) -> Path:
    summary = pack_cache(source.manifest_path, shard_size=SHARD)
    assert summary.samples == 105 and not summary.missing
    return summary.out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dm(source, store: str, **kw) -> DeepfakeDataModule:
    shards = kw.pop("shards", {})
    dm = DeepfakeDataModule(source, SPEC, batch_size=kw.pop("batch_size", 4), num_workers=kw.pop("num_workers", 0),
                            store=store, shards=shards, seed=3, **kw)
    dm.setup("fit")
    dm.setup("test")
    return dm


# ------------------------------------------------------------------------------------------------ writing
def test_pack_writes_indexed_webdataset_shards(source, packed) -> None:
    meta = json.loads((packed / "shards.json").read_text())
    assert meta["format"] == "dfd-shards/1" and meta["samples"] == 105 and meta["missing"] == 0
    assert meta["source"]["sha256"] == _sha(source.manifest_path) and meta["source"]["rows"] == 105
    assert meta["source"]["params"]["seed"] == 0  # the synthetic set's generator parameters travel along
    assert meta["splits"] == {"train": 69, "val": 15, "test": 21}
    assert all(s["bytes"] <= parse_size(SHARD) + 10240 for s in meta["shards"])  # + tar's end-of-archive record
    assert len(meta["shards"]) > 20
    for s in meta["shards"]:
        assert _sha(packed / s["path"]) == s["sha256"]
    index = pd.read_parquet(packed / "manifest.parquet")
    source_rows = pd.read_parquet(source.manifest_path)
    assert len(index) == 105 and set(source_rows.columns) < set(index.columns)
    # Every crop's bytes sit at the recorded offset, byte for byte the cache's file.
    for row in index.itertuples():
        with open(packed / meta["shards"][row.shard]["path"], "rb") as f:
            f.seek(row.offset)
            assert f.read(row.nbytes) == (source.manifest_path.parent / row.crop_path).read_bytes()
    # The shards are plain WebDataset tars: webdataset reads them with their metadata.
    import webdataset as wds

    first = next(iter(wds.WebDataset(str(packed / "val" / "shard-000000.tar"), shardshuffle=False)))
    info = json.loads(first["json"])
    assert first["__key__"] == sample_key(info["video_id"], info["frame"]) and info["split"] == "val"
    assert len(info["landmarks"]) == 10 and info["label"] in (0, 1)


def test_pack_resumes_after_a_kill_to_identical_shards(source, tmp_path, monkeypatch) -> None:
    ref = pack_cache(source.manifest_path, tmp_path / "ref", shard_size=SHARD)
    calls = {"n": 0}
    record = PackWriter._record

    def dying(self, info, rows):
        record(self, info, rows)
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt  # killed after 7 finished shards, in the middle of the train split

    monkeypatch.setattr(PackWriter, "_record", dying)
    with pytest.raises(KeyboardInterrupt):
        pack_cache(source.manifest_path, tmp_path / "run", shard_size=SHARD)
    monkeypatch.setattr(PackWriter, "_record", record)
    assert not (tmp_path / "run" / "shards.json").exists()  # not a store until it is complete
    again = pack_cache(source.manifest_path, tmp_path / "run", shard_size=SHARD)
    assert again.resumed_shards == 7 and again.shards == ref.shards
    ref_meta = json.loads((tmp_path / "ref" / "shards.json").read_text())
    run_meta = json.loads((tmp_path / "run" / "shards.json").read_text())
    assert run_meta["shards"] == ref_meta["shards"]  # same paths, counts, sizes and sha256: identical bytes
    assert pq.read_table(tmp_path / "run" / "manifest.parquet").equals(pq.read_table(tmp_path / "ref" / "manifest.parquet"))
    assert not (tmp_path / "run" / ".pack").exists()
    # A rerun of a finished pack does nothing; another shard size must be asked for explicitly.
    assert pack_cache(source.manifest_path, tmp_path / "run", shard_size=SHARD).up_to_date
    with pytest.raises(ShardError, match="overwrite"):
        pack_cache(source.manifest_path, tmp_path / "run", shard_size="1MB")


def test_missing_crops_are_skipped_and_listed(source, tmp_path) -> None:
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(source.manifest_path.parent, cache, ignore=shutil.ignore_patterns("shards"))
    victim = pd.read_parquet(cache / "manifest.parquet")["crop_path"].iloc[5]
    (cache / victim).unlink()
    summary = pack_cache(cache / "manifest.parquet", shard_size="1MB")
    assert summary.samples == 104 and summary.missing == [victim]
    assert pd.read_csv(cache / "shards" / "missing.csv")["crop_path"].tolist() == [victim]
    assert victim not in set(pd.read_parquet(cache / "shards" / "manifest.parquet")["crop_path"])


def test_writer_takes_videos_in_any_order(tmp_path) -> None:
    """The incremental writer (for extraction feeding finished videos): locations joined at the end."""
    rows = [{"video_id": f"v.{v}", "frame": f, "split": "train", "label": v % 2, "method": "m",
             "crop_path": f"crops/{v}/{f}.png", "landmarks": [float("nan")] * 10} for v in range(3) for f in range(2)]
    manifest = tmp_path / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(manifest)
    w = PackWriter(tmp_path / "shards", 1 << 20)
    for r in reversed(rows):
        w.add(r, f"{r['video_id']}:{r['frame']}".encode(), "png")
    _, missing = w.finish(manifest)
    index = pd.read_parquet(tmp_path / "shards" / "manifest.parquet")
    assert missing.num_rows == 0 and index["video_id"].tolist() == [r["video_id"] for r in rows]
    tar = (tmp_path / "shards" / "train" / "shard-000000.tar").read_bytes()
    for r in index.itertuples():
        assert tar[r.offset:r.offset + r.nbytes] == f"{r.video_id}:{r.frame}".encode()
    assert sample_key("v.0", 1) != sample_key("v_0", 1) and "." not in sample_key("v.0", 1)


# ------------------------------------------------------------------------------------------------ random access
def _batches(loader) -> list[tuple[list[int], list[float], torch.Tensor]]:
    return [(b["index"].tolist(), b["label"].tolist(), b["image"]) for b in loader]


def test_files_and_shards_identical_under_2_ranks_x_2_workers(source, packed) -> None:
    files, shards = _dm(source, "files"), _dm(source, "shards")
    assert isinstance(shards.train_ds, ShardFrameDataset) and len(shards.train_ds) == len(files.train_ds) == 69
    # The same (frame, label) stream for a fixed seed, per DDP rank, with 2 loader workers per rank.
    for rank in (0, 1):
        seqs = []
        for dm in (files, shards):
            ds = dm.train_ds
            ds.pipeline = dm.eval_pipe  # deterministic pixels, so images compare too
            sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=3)
            sampler.set_epoch(1)
            seqs.append(_batches(DataLoader(ds, batch_size=4, sampler=sampler, num_workers=2)))
        (a, b) = seqs
        assert [x[:2] for x in a] == [x[:2] for x in b] and len(a) == 9
        assert all(torch.equal(x[2], y[2]) for x, y in zip(a, b, strict=True))
    # Evaluation: the unpadded sampler's rows, with the file store's indices (metric de-duplication).
    for rank in (0, 1):
        got = [_batches(DataLoader(dm.test_ds["syn"], batch_size=4, num_workers=2,
                                   sampler=UnpaddedDistributedSampler(dm.test_ds["syn"], 2, rank)))
               for dm in (files, shards)]
        assert [x[:2] for x in got[0]] == [x[:2] for x in got[1]]
        assert all(torch.equal(x[2], y[2]) for x, y in zip(*got, strict=True))
    assert shards.eval_info("syn")["video_names"].tolist() == files.eval_info("syn")["video_names"].tolist()


def test_clip_models_read_shards_at_random_but_not_streamed(source, packed) -> None:
    clip = {**SPEC, "clip_len": 2}
    files = DeepfakeDataModule(source, clip, store="files", eval_batch_size=3)
    shards = DeepfakeDataModule(source, clip, store="shards", eval_batch_size=3)
    for dm in (files, shards):
        dm.setup("test")
    assert isinstance(shards.test_ds["syn"], ShardClipDataset)
    for v in range(len(files.test_ds["syn"])):
        a, b = files.test_ds["syn"][v], shards.test_ds["syn"][v]
        assert torch.equal(a["image"], b["image"]) and a["label"] == b["label"] and a["index"] == b["index"]
    streamed = DeepfakeDataModule(source, clip, store="shards", shards={"mode": "stream"})
    with pytest.raises(ShardError, match="data.shards.mode=random"):
        streamed.setup("test")


def test_bad_store_settings_fail_with_the_fix(source, tmp_path) -> None:
    with pytest.raises(ValueError, match="files, shards"):
        DeepfakeDataModule(source, SPEC, store="tar")
    with pytest.raises(ShardError, match="auto, random, stream"):
        DeepfakeDataModule(source, SPEC, store="shards", shards={"mode": "fast"})
    dm = DeepfakeDataModule(source, SPEC, store="shards", shards={"root": str(tmp_path / "none")})
    with pytest.raises(ShardError, match="dfd-pack dataset="):
        dm.setup("test")


# ------------------------------------------------------------------------------------------------ streaming
def _stream_run(ds: ShardStreamDataset, rank: int, world: int, workers: int, batch: int) -> list[list[int]]:
    ds.set_distributed(rank, world)
    loader = DataLoader(ds, batch_size=batch, num_workers=workers)
    out = [b["index"].tolist() for b in loader]
    assert len(out) == len(loader)  # whole batches per worker: the loader's length is exact
    return out


@pytest.mark.parametrize("root", ["local", "url"])
def test_stream_eval_reads_every_frame_once_over_ranks_and_workers(source, packed, root, tmp_path) -> None:
    # A file:// root takes the object-storage path (fsspec, metadata fetched into a local cache).
    url = {"root": packed.as_uri(), "cache_dir": str(tmp_path / "meta")}
    shards = {"mode": "stream"} if root == "local" else {**url, "mode": "auto"}
    dm, files = _dm(source, "shards", shards=shards, eval_batch_size=4), _dm(source, "files")
    ds = dm.test_ds["syn"]
    assert isinstance(ds, ShardStreamDataset)
    seen = []
    for rank in (0, 1):
        batches = _stream_run(ds, rank, 2, 2, 4)
        assert sum(map(len, batches)) == len(ds) in (10, 11)
        seen += [i for b in batches for i in b]
    assert sorted(seen) == list(range(21))  # each frame once: exact metrics without de-duplication
    ds.set_distributed(0, 1)
    one = [s for s in iter(ds)]
    assert [int(s["index"]) for s in one] == list(range(21))  # unshuffled: the file store's order
    ref = files.test_ds["syn"]
    for s in one:
        r = ref[int(s["index"])]
        assert torch.equal(s["image"], r["image"]) and s["label"] == r["label"] and s["video"] == r["video"]
    if root == "url":  # random access over a URL root: byte-range reads
        ds = _dm(source, "shards", shards={**url, "mode": "random"}).test_ds["syn"]
        assert isinstance(ds, ShardFrameDataset) and ds.reader.remote
        assert all(torch.equal(ds[i]["image"], ref[i]["image"]) for i in (0, 20))
        assert (tmp_path / "meta").is_dir()


def test_stream_training_is_deterministic_balanced_and_covers_the_split(source, packed) -> None:
    dm = _dm(source, "shards", shards={"mode": "stream", "shuffle_buffer": 8}, batch_size=4)
    ds = dm.train_ds
    assert isinstance(ds, ShardStreamDataset)
    epochs = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        per_rank = [_stream_run(ds, r, 2, 2, 4) for r in (0, 1)]
        assert len(per_rank[0]) == len(per_rank[1]) == 8  # 34 per rank, last partial batch dropped: 8 each
        flat = [i for r in per_rank for b in r for i in b]
        assert len(flat) == len(set(flat)) == 64  # no frame twice; 69 - 64 left out this epoch
        assert all(len(b) == 4 for r in per_rank for b in r)
        again = [_stream_run(ds, r, 2, 2, 4) for r in (0, 1)]
        assert again == per_rank  # a fixed (seed, epoch) gives the same sequence
        epochs.append(flat)
    assert epochs[0] != epochs[1]  # a new permutation every epoch
    labels = np.asarray(ds.labels)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["label"].tolist() == labels[batch["index"].numpy()].astype(float).tolist()


def test_stream_mode_rejects_weighted_sampling(source, packed) -> None:
    dm = _dm(source, "shards", shards={"mode": "stream"}, balance=True)
    with pytest.raises(ValueError, match="data.shards.mode=random"):
        dm.train_dataloader()


# ------------------------------------------------------------------------------------------------ real training
CAPTURE = "tests.test_shards.CaptureBatches"


class CaptureBatches(pl.Callback):
    """Writes every training batch's (index, label), per epoch, to ``<path>.rank<r>.json`` when training ends."""

    def __init__(self, path: str) -> None:
        self.path, self.seen = path, {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.seen.setdefault(str(trainer.current_epoch), []).append([batch["index"].tolist(), batch["label"].tolist()])

    def on_train_end(self, trainer, module) -> None:
        Path(f"{self.path}.rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))


def _train_overrides(cache: Path, run: Path, *extra: str) -> list[str]:
    return [f"paths.cache_dir={cache}", f"paths.run_dir={run}", "model=tiny", "logger=none", "trainer.max_epochs=2",
            "data.batch_size=8", "dataset.videos={train: 12, val: 4, test: 4}", "dataset.frames_per_video=3",
            "callbacks.progress_bar=null", f"+callbacks.capture._target_={CAPTURE}",
            f"+callbacks.capture.path={run}/seen", *extra]


@pytest.mark.slow
def test_lightning_training_sees_the_same_frames_and_labels(tmp_path, shared_cache) -> None:
    from dfd.cli._hydra import register_resolvers
    from dfd.engine.train import train
    from tests.conftest import compose

    register_resolvers()
    cfg = compose("train", runtime=True, overrides=_train_overrides(shared_cache, tmp_path / "p"))
    from hydra.utils import instantiate

    pack_cache(instantiate(cfg.dataset).prepare(), shard_size="40KB")
    results, seen = {}, {}
    for store in ("files", "shards"):
        run = tmp_path / store
        cfg = compose("train", runtime=True, overrides=_train_overrides(
            shared_cache, run, f"data.store={store}", "data.num_workers=2",
            # albumentations 2 draws from OS entropy (Compose(seed=None)): no run repeats its augmentations, on
            # either store; without them the two runs must train the very same model.
            "augment=none"))
        results[store] = train(cfg)
        seen[store] = json.loads(Path(f"{run}/seen.rank0.json").read_text())
    assert seen["files"] == seen["shards"] and len(seen["files"]["0"]) == 4  # 36 frames, batches of 8, last dropped
    assert seen["files"]["0"] != seen["files"]["1"]
    # The same data in the same order with the same seed: the same model, so the same test predictions.
    for level in ("frame", "video"):
        assert results["files"]["test"]["synthetic_a"][level] == results["shards"]["test"]["synthetic_a"][level]


@pytest.mark.slow
def test_streamed_shards_under_real_ddp_two_gloo_processes(tmp_path, shared_cache) -> None:
    """2 processes x 2 workers: equal step counts per rank, no frame twice, exact test metrics vs one process."""
    base = _train_overrides(shared_cache, tmp_path / "ddp", "data.store=shards", "data.shards.mode=stream",
                            "data.num_workers=2", "data.shards.shuffle_buffer=4")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    from hydra.utils import instantiate

    from tests.conftest import compose

    pack_cache(instantiate(compose("train", overrides=base).dataset).prepare(), shard_size="40KB")
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
           "trainer.sync_batchnorm=false", f"hydra.run.dir={tmp_path / 'ddp'}"]
    proc = subprocess.run([sys.executable, "-m", "dfd.cli.train", *base, *ddp], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr
    r0 = json.loads((tmp_path / "ddp" / "seen.rank0.json").read_text())
    r1 = json.loads((tmp_path / "ddp" / "seen.rank1.json").read_text())
    for epoch in ("0", "1"):
        assert len(r0[epoch]) == len(r1[epoch]) == 2  # 18 frames per rank, batches of 8, last dropped
        idx = [i for r in (r0, r1) for b in r[epoch] for i in b[0]]
        assert len(idx) == len(set(idx)) == 32
    assert r0["0"] != r0["1"]
    res = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert res["test"]["synthetic_a"]["frame"]["n"] == 12 and res["global_step"] == 4


def test_a_shard_store_elsewhere_needs_no_crop_cache(source, packed, tmp_path) -> None:
    """A node that only has the shards (copied, mounted or in a bucket) trains without the extracted cache."""
    import shutil

    moved = tmp_path / "bucket" / "syn"
    shutil.copytree(packed, moved)
    bare = SyntheticSource("syn", "a", videos={"train": 23, "val": 5, "test": 7}, frames_per_video=3,
                           cache_dir=tmp_path / "empty_cache")
    dm = DeepfakeDataModule(bare, SPEC, store="shards", shards={"root": str(tmp_path / "bucket" / "{name}")})
    dm.prepare_data()
    dm.setup("fit")
    assert isinstance(dm.train_ds, ShardFrameDataset) and len(dm.train_ds) == 69
    assert not bare.manifest_path.exists()  # nothing was generated or extracted locally
    assert dm.train_ds[0]["image"].shape == (3, 32, 32)
