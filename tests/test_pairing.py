"""Paired training data (GenD): synthetic fakes made from real videos, the source-paired batch sampler (also per
DDP rank), GenD's paired/unpaired subsets, and the DataModule's refusals."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from dfd.data.datamodule import DeepfakeDataModule
from dfd.data.datasets import ManifestArrays
from dfd.data.pairing import SourcePairedSampler, select_subset, video_sources
from dfd.errors import ConfigError
from dfd.synthetic.source import SyntheticSource

SPEC = {"size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> SyntheticSource:
    """12 training videos, 3 fakes per real (FF++'s shape: a real with several fakes made from it)."""
    src = SyntheticSource("pairs", "a", videos={"train": 16, "val": 4, "test": 4}, frames_per_video=3,
                          fake_ratio=0.75, cache_dir=tmp_path_factory.mktemp("pairs"))
    src.prepare()
    return src


def _check_batch(videos: np.ndarray, labels: np.ndarray, source: np.ndarray) -> int:
    """Every fake in the batch has a real frame of its source video beside it; returns the fakes checked."""
    present_reals = set(videos[labels == 0].tolist())
    fakes = videos[labels == 1]
    for v in fakes.tolist():
        assert source[v] >= 0 and source[v] in present_reals, f"fake video {v} without its source {source[v]}"
    return len(fakes)


def test_synthetic_fakes_are_made_from_a_real_video_of_their_split(source):
    m = pd.read_parquet(source.manifest_path)
    videos = m.drop_duplicates("video_id").set_index("video_id")
    fakes, reals = videos[videos.label == 1], videos[videos.label == 0]
    assert len(fakes) and (fakes.source_video != "").all() and (reals.source_video == "").all()
    assert fakes.source_video.isin(reals.index).all()
    assert (videos.loc[fakes.source_video, "split"].to_numpy() == fakes.split.to_numpy()).all()
    assert (videos.loc[fakes.source_video, "identity"].to_numpy() == fakes.identity.to_numpy()).all()
    assert fakes[fakes.split == "train"].groupby("source_video").size().tolist() == [3, 3, 3, 3]
    # A fake is its source video's frame with the face swapped: the background far from the face is the same.
    fake = fakes.index[0]
    for f in range(3):
        a, b = (cv2.imread(str(source.data_dir / m[(m.video_id == v) & (m.frame == f)].crop_path.iloc[0])).astype(int)
                for v in (fake, fakes.source_video.iloc[0]))
        assert np.abs(a - b)[:6, :6].mean() < 4 < np.abs(a - b)[24:40, 24:40].mean()


def test_every_fake_frame_has_a_frame_of_its_source_video_in_its_batch(source):
    dm = DeepfakeDataModule(source, SPEC, batch_size=6, num_workers=0, pairing="source", seed=3)
    dm.setup("fit")
    arrays = dm.train_ds.arrays
    src = video_sources(arrays).source
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, SourcePairedSampler)
    orders = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        seen, n = [], 0
        for batch in loader:
            assert len(batch["label"]) == 6  # batches are always full
            n += _check_batch(batch["video"].numpy(), batch["label"].numpy().astype(int), src)
            seen += batch["index"].tolist()
        fake_rows = np.flatnonzero(arrays.label == 1)
        assert sorted(i for i in seen if arrays.label[i] == 1) == fake_rows.tolist()  # each fake once an epoch
        assert n == len(fake_rows) == 36
        orders.append(seen)
    assert orders[0] != orders[1]  # reshuffled per epoch
    # Deterministic per (seed, epoch).
    again = DeepfakeDataModule(source, SPEC, batch_size=6, num_workers=0, pairing="source", seed=3)
    again.setup("fit")
    assert [i for b in again.train_dataloader() for i in b["index"].tolist()] == orders[0]


def test_pairing_holds_on_each_of_two_ranks(source):
    arrays = ManifestArrays(source.manifest_path, splits="train")
    src = video_sources(arrays)
    ranks = [SourcePairedSampler(arrays.video, arrays.label, src.source, batch_size=4, seed=1, num_replicas=2,
                                 rank=r) for r in (0, 1)]
    one = SourcePairedSampler(arrays.video, arrays.label, src.source, batch_size=4, seed=1)
    for epoch in (0, 1):
        per_rank = []
        for s in ranks:
            s.set_epoch(epoch)
            flat = list(s)
            assert len(flat) == len(s) and len(flat) % 4 == 0
            batches = [np.asarray(flat[i:i + 4]) for i in range(0, len(flat), 4)]
            for b in batches:  # what each rank's DataLoader (batch_size=4) forms from its indices
                _check_batch(arrays.video[b], arrays.label[b].astype(int), src.source)
            per_rank.append(batches)
        assert len(per_rank[0]) == len(per_rank[1])  # every rank the same number of steps
        # Together the ranks cover the single-process epoch, batch for batch (padding aside).
        glob = one.batches(epoch)
        assert [b.tolist() for b in glob] == [b.tolist() for pair in zip(*per_rank, strict=True) for b in pair][
            : len(glob)]


def test_fakes_without_their_source_are_counted_and_left_out(source, caplog):
    arrays = ManifestArrays(source.manifest_path, splits="train")
    first_real = arrays.video_names.tolist().index(b"a/train/real/0012")
    arrays.keep_rows(arrays.video != first_real)  # that real's 3 fakes lose their source
    src = video_sources(arrays)
    assert (src.source >= 0).sum() == 9 and src.named[arrays.video_labels == 1].all()
    s = SourcePairedSampler(arrays.video, arrays.label, src.source, batch_size=4, seed=0, named=src.named)
    assert s.stats["orphan_fake_videos"] == 3 and s.stats["orphan_fake_items"] == 9
    assert s.stats["orphans_without_source_name"] == 0 and s.stats["paired_fake_videos"] == 9
    drawn = set(np.concatenate(s.batches()).tolist())
    orphans = set(np.flatnonzero((arrays.label == 1) & (src.source[arrays.video] < 0)).tolist())
    assert len(orphans) == 9 and not drawn & orphans
    with caplog.at_level(logging.WARNING, logger="dfd.data.datamodule"):
        dm = DeepfakeDataModule(source, SPEC, batch_size=4, num_workers=0, pairing="source")
        dm.setup("fit")
        dm.train_ds.arrays.keep_rows(dm.train_ds.arrays.video != first_real)
        dm.train_dataloader()
    assert "3 training fake videos (9 frames) have no source real" in caplog.text


def test_self_blend_pairs_keep_the_property(source):
    """data.fakes=both: dataset fakes beside their source reals, each real beside its own self-blend."""
    dm = DeepfakeDataModule(source, SPEC, batch_size=8, num_workers=0, pairing="source", fakes="both")
    dm.setup("fit")
    src = video_sources(dm.train_ds.base.arrays).source
    batches = list(dm.train_dataloader())
    assert batches and all(len(b["label"]) == 8 for b in batches)
    for b in batches:
        dataset_fake = (b["label"] == 1) & (b["sbi"] == 0)
        labels = np.where(dataset_fake.numpy(), 1, 0)  # self-blends count as their real frame's pair
        _check_batch(b["video"].numpy(), labels, src)


def test_paired_and_unpaired_subsets(source, caplog):
    kept = {}
    for subset in ("paired", "unpaired"):
        arrays = ManifestArrays(source.manifest_path, splits="train")
        with caplog.at_level(logging.INFO, logger="dfd.data.pairing"):
            stats = select_subset(arrays, subset, seed=7, dataset="pairs")
        src = video_sources(arrays)
        labels = arrays.video_labels
        reals, fakes = set(np.flatnonzero(labels == 0)), np.flatnonzero(labels == 1)
        names = arrays.video_names
        kept[subset] = ({names[v] for v in reals}, {names[v] for v in fakes})
        assert stats["real_videos"] == 2 and stats["fake_videos"] == 6 and stats["groups"] == 4
        if subset == "paired":  # every fake's source real is in the set
            assert all(src.source[v] in reals for v in fakes)
        else:  # no fake's source (nor its source's person) is
            m = pd.read_parquet(source.manifest_path).drop_duplicates("video_id").set_index("video_id")
            fake_sources = set(m.loc[[n.decode() for n in kept[subset][1]], "source_video"])
            assert not fake_sources & {n.decode() for n in kept[subset][0]}
            assert not set(m.loc[list(fake_sources), "identity"]) & set(
                m.loc[[n.decode() for n in kept[subset][0]], "identity"])
        assert f"data.pairing_subset={subset} (seed 7): 2 real videos (6 frames)" in caplog.text
    assert kept["paired"][0] == kept["unpaired"][0]  # the same reals; only the fakes' provenance differs
    assert len(kept["paired"][1]) == len(kept["unpaired"][1]) and not kept["paired"][1] & kept["unpaired"][1]
    # Deterministic per seed, and another seed draws another split of the sources.
    again = ManifestArrays(source.manifest_path, splits="train")
    select_subset(again, "unpaired", seed=7)
    assert set(again.video_names.tolist()) == kept["unpaired"][0] | kept["unpaired"][1]
    draws = set()
    for seed in range(8):
        a = ManifestArrays(source.manifest_path, splits="train")
        select_subset(a, "paired", seed=seed)
        draws.add(tuple(a.video_names.tolist()))
    assert len(draws) > 1


def test_refusals_name_the_fix(source, tmp_path):
    for kwargs, msg in [
        ({"pairing": "pairs"}, "data.pairing='pairs' is not valid; choose one of none, source"),
        ({"pairing_subset": "half"}, "choose one of all, paired, unpaired"),
        ({"pairing": "source", "balance": True}, "turn one of them off"),
        ({"pairing": "source", "extra_train": {"b": (source, 1.0)}}, "turn one of them off"),
        ({"pairing": "source", "fakes": "sbi"}, "use data.fakes=both"),
        ({"pairing": "source", "pairing_subset": "unpaired"}, "use data.pairing=none with it"),
    ]:
        with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            DeepfakeDataModule(source, SPEC, batch_size=4, num_workers=0, **kwargs)
    # A manifest without source_video (datasets that do not say where their fakes come from).
    m = pd.read_parquet(source.manifest_path).drop(columns=["source_video"])
    m.to_parquet(tmp_path / "manifest.parquet")
    with pytest.raises(ConfigError, match="records no source_video"):
        video_sources(ManifestArrays(tmp_path / "manifest.parquet", splits="train"))
    with pytest.raises(ConfigError, match="at least 2 items"):
        a = ManifestArrays(source.manifest_path, splits="train")
        SourcePairedSampler(a.video, a.label, video_sources(a).source, batch_size=1)


@pytest.mark.slow
def test_dfd_train_with_pairing_and_a_paired_subset(tmp_path: Path, shared_cache: Path) -> None:
    from dfd.engine.train import train
    from tests.conftest import compose

    cfg = compose("train", runtime=True, overrides=[
        f"paths.run_dir={tmp_path}", f"paths.cache_dir={shared_cache}", "data.num_workers=0", "logger=none",
        "model=tiny", "loss=gend", "data.pairing=source", "data.pairing_subset=paired",
        "trainer.max_epochs=1", "data.batch_size=8", "dataset.videos={train: 16, val: 4, test: 4}",
        "dataset.frames_per_video=2",
    ])
    results = train(cfg)
    assert results["global_step"] == 2  # 4 real + 4 fake videos x 2 frames = 16 frames, batches of 8
    assert results["train"]["overrides"]["data.pairing"] == "source"
    assert results["train"]["overrides"]["data.pairing_subset"] == "paired"
    assert torch.isfinite(torch.tensor(results["test"]["synthetic_a"]["frame"]["auc"]))
