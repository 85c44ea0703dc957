"""DeepfakeDataModule: dataset mix and class balance, val/test wiring, distributed evaluation sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DistributedSampler

from dfd.data.datamodule import DeepfakeDataModule, UnpaddedDistributedSampler
from dfd.data.datasets import ClipDataset, FrameDataset
from dfd.errors import DatasetError
from dfd.synthetic.source import SyntheticSource

SPEC = {"size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, SyntheticSource]:
    """Three small domains of different sizes; ``b`` is 3 fake : 1 real."""
    cache = tmp_path_factory.mktemp("dm")
    out = {
        "syn_a": SyntheticSource("syn_a", "a", videos={"train": 8, "val": 4, "test": 4}, frames_per_video=3,
                                 cache_dir=cache),
        "syn_b": SyntheticSource("syn_b", "b", videos={"train": 4, "val": 2, "test": 3}, frames_per_video=3,
                                 fake_ratio=0.75, cache_dir=cache),
        "syn_c": SyntheticSource("syn_c", "c", videos={"train": 2, "val": 2, "test": 2}, frames_per_video=2,
                                 cache_dir=cache),
    }
    for s in out.values():
        s.prepare()
    return out


def _draws(dm: DeepfakeDataModule, epochs: int) -> np.ndarray:
    """Indices the training sampler yields over several epochs (no image is loaded)."""
    sampler = dm.train_dataloader().sampler
    return np.concatenate([np.fromiter(iter(sampler), np.int64) for _ in range(epochs)])


def test_weighted_mix_realises_dataset_weights(sources) -> None:
    # 24 frames of a against 12 of b: weights are per dataset whatever its size.
    dm = DeepfakeDataModule(sources["syn_a"], SPEC, extra_train={"b": (sources["syn_b"], 1.0)}, train_weight=3.0,
                            batch_size=4, num_workers=0)
    dm.setup("fit")
    n_a = len(dm.train_ds.datasets[0])
    assert (n_a, len(dm.train_ds)) == (24, 36)
    draws = _draws(dm, 400)
    assert len(draws) == 400 * 36
    assert abs(np.mean(draws < n_a) - 0.75) < 0.02  # 3:1
    assert np.bincount(draws[draws >= n_a] - n_a, minlength=12).min() > 0  # every frame of b gets drawn


def test_balance_equalises_classes(sources) -> None:
    src = sources["syn_b"]  # 3 fake : 1 real
    plain = DeepfakeDataModule(src, SPEC, batch_size=4, num_workers=0)
    plain.setup("fit")
    assert plain._sample_weights() is None  # one dataset, no balance: plain shuffling
    labels = plain.train_ds.labels
    assert labels.mean() == 0.75
    dm = DeepfakeDataModule(src, SPEC, batch_size=4, num_workers=0, balance=True)
    dm.setup("fit")
    draws = _draws(dm, 800)
    assert abs(labels[draws].mean() - 0.5) < 0.02
    # Balance and mix together: each dataset keeps its weight and is balanced inside.
    mix = DeepfakeDataModule(sources["syn_a"], SPEC, extra_train={"b": (src, 1.0)}, train_weight=1.0,
                             batch_size=4, num_workers=0, balance=True)
    mix.setup("fit")
    draws = _draws(mix, 400)
    n_a = len(mix.train_ds.datasets[0])
    all_labels = np.concatenate([d.labels for d in mix.train_ds.datasets])
    assert abs(np.mean(draws < n_a) - 0.5) < 0.02
    assert abs(all_labels[draws[draws >= n_a]].mean() - 0.5) < 0.03


def test_val_and_test_wiring(sources) -> None:
    a, b, c = sources["syn_a"], sources["syn_b"], sources["syn_c"]
    dm = DeepfakeDataModule(a, SPEC, test_sources={"syn_c": c, "syn_b": b}, batch_size=4, num_workers=0)
    dm.setup("fit")
    dm.setup("test")
    # Checkpoints are chosen on the training source's own val split.
    assert dm.val_ds.name == "syn_a"
    assert {n.decode().split("/")[:2] == ["a", "val"] for n in dm.val_ds.arrays.video_names} == {True}
    assert len(dm.val_ds) == 12
    # In-domain test first, then the cross-dataset ones in the configured order.
    assert dm.test_names == ["syn_a", "syn_c", "syn_b"]
    loaders = dm.test_dataloader()
    assert [ld.dataset.name for ld in loaders] == dm.test_names
    assert [len(ld.dataset) for ld in loaders] == [12, 4, 9]
    for ld, dom in zip(loaders, "acb", strict=True):
        assert {tuple(n.decode().split("/")[:2]) for n in ld.dataset.arrays.video_names} == {(dom, "test")}
        assert ld.drop_last is False and isinstance(ld.sampler, torch.utils.data.SequentialSampler)
    batch = next(iter(loaders[2]))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["index"].tolist() == [0, 1, 2, 3]
    info = dm.eval_info("syn_b")
    test_b = pd.read_parquet(b.manifest_path).query("split == 'test'")
    assert len(info["video_names"]) == 3 and set(info["method_names"]) == set(test_b["method"])
    no_in_domain = DeepfakeDataModule(a, SPEC, test_sources={"syn_b": b}, include_train_test=False)
    assert no_in_domain.test_names == ["syn_b"]


def test_unpadded_sampler_covers_odd_dataset_once() -> None:
    data = list(range(13))
    parts = [list(UnpaddedDistributedSampler(data, num_replicas=2, rank=r)) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == data
    assert [len(UnpaddedDistributedSampler(data, num_replicas=2, rank=r)) for r in range(2)] == [7, 6]
    # What it replaces: torch's sampler pads with a repeat, which would count a sample twice in metrics.
    padded = [list(DistributedSampler(data, num_replicas=2, rank=r, shuffle=False)) for r in range(2)]
    assert len(padded[0] + padded[1]) == 14


def test_clip_models_get_clip_datasets_and_workers_run(sources) -> None:
    dm = DeepfakeDataModule(sources["syn_a"], {**SPEC, "clip_len": 2}, batch_size=2, num_workers=2)
    dm.setup("fit")
    assert isinstance(dm.train_ds, ClipDataset) and len(dm.train_ds) == 8
    loader = dm.train_dataloader()
    assert loader.drop_last and loader.persistent_workers
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 2, 3, 32, 32) and batch["label"].shape == (2,)
    frames = DeepfakeDataModule(sources["syn_a"], SPEC, batch_size=2, num_workers=0)
    frames.setup("fit")
    assert isinstance(frames.train_ds, FrameDataset)


def test_bad_config_errors(sources, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data.fakes"):
        DeepfakeDataModule(sources["syn_a"], SPEC, fakes="gan")
    no_val = SyntheticSource("noval", "a", videos={"train": 2, "val": 0, "test": 1}, frames_per_video=1,
                             cache_dir=tmp_path)
    dm = DeepfakeDataModule(no_val, SPEC, num_workers=0)
    with pytest.raises(DatasetError, match="no 'val' frames"):
        dm.setup("fit")


def test_frames_per_video_keeps_uniformly_spaced_training_frames(tmp_path):
    from dfd.data.datasets import ManifestArrays
    from dfd.synthetic.source import SyntheticSource

    src = SyntheticSource(videos={"train": 4, "val": 2, "test": 2}, frames_per_video=10, cache_dir=tmp_path)
    arrays = ManifestArrays(src.prepare(), "train").keep_frames_per_video(4)
    assert len(arrays) == 16 and np.diff(arrays.starts).tolist() == [4, 4, 4, 4]
    assert arrays.frame[:4].tolist() == [0, 3, 6, 9]  # spread over all 10 frames (the one uniform rule), not 0..3
    assert len(ManifestArrays(src.prepare(), "val")) == 20  # evaluation keeps every frame
