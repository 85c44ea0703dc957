"""Loaders over the crop cache: manifest arrays, frame and clip datasets, worker DataLoaders."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

import dfd.data.datasets as datasets
from dfd.data.datasets import ClipDataset, FrameDataset, ManifestArrays, uniform_positions
from dfd.data.transforms import Pipeline, Spec
from dfd.store.schema import SchemaError, write_parquet
from dfd.synthetic.source import SyntheticSource

HALF = Spec(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), interpolation="bilinear")
RAW = Spec(32, (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255), interpolation="bilinear")  # value == pixel value


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    src = SyntheticSource(name="syn", videos={"train": 8, "val": 4, "test": 4}, frames_per_video=3,
                          cache_dir=tmp_path_factory.mktemp("syn"))
    return src.prepare()


@pytest.fixture(scope="module")
def shuffled(synth: Path) -> Path:
    """The synthetic manifest with rows shuffled, a few equivalent longer paths and one row without landmarks."""
    df = pd.read_parquet(synth).sample(frac=1.0, random_state=0).reset_index(drop=True)
    df.loc[df.index[:5], "crop_path"] = "./" + df.loc[df.index[:5], "crop_path"]
    lm = df["landmarks"].tolist()
    lm[7] = None
    df["landmarks"] = lm
    return write_parquet(df, synth.parent / "shuffled.parquet")


def coded_manifest(root: Path, frames: dict[str, int], size: int = 32) -> Path:
    """Videos whose frame f is a crop with its left half at grey level 20*f+10 (right half black).

    The pixels say which frame a loader picked and whether it was flipped; landmark 0 sits in the left half.
    """
    rows = []
    for k, (vid, n) in enumerate(frames.items()):
        for f in range(n):
            img = np.zeros((size, size, 3), np.uint8)
            img[:, : size // 2] = 20 * f + 10
            rel = f"crops/{vid}/{f:06d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / rel), img)
            lm = [4.0, 10.0, 27.0, 10.0, 16.0, 16.0, 10.0, 24.0, 22.0, 24.0]
            rows.append({"video_id": vid, "frame": f * 10, "crop_path": rel, "label": k % 2, "split": "train",
                         "method": "m" if k % 2 else "real", "identity": vid, "bbox": [0.0, 0.0, 1.0, 1.0],
                         "landmarks": lm, "score": 1.0})
    return write_parquet(pd.DataFrame(rows), root / "manifest.parquet")


# ------------------------------------------------------------------------------------------------ arrays
@pytest.mark.parametrize("batch_rows", [5, 1 << 15])  # 5: video codes and path widths merged across batches
def test_manifest_arrays_hold_the_split_sorted(shuffled: Path, monkeypatch, batch_rows: int) -> None:
    monkeypatch.setattr(datasets, "_BATCH_ROWS", batch_rows)
    df = pd.read_parquet(shuffled)
    a = ManifestArrays(shuffled, "train")
    want = df[df["split"] == "train"].sort_values(["video_id", "frame"]).reset_index(drop=True)
    assert len(a) == len(want) == 24
    assert [n.decode() for n in a.video_names[a.video]] == want["video_id"].tolist()
    assert a.frame.tolist() == want["frame"].tolist()
    assert [p.decode() for p in a.paths] == want["crop_path"].tolist()
    assert a.label.dtype == np.int8 and a.label.tolist() == want["label"].tolist()
    assert [a.method_names[m] for m in a.method] == want["method"].tolist()
    for i, lm in enumerate(want["landmarks"]):
        if lm is None:
            assert np.isnan(a.landmarks[i]).all()
        else:
            np.testing.assert_allclose(a.landmarks[i], np.asarray(lm, np.float32).reshape(5, 2))
    assert a.landmarks.dtype == np.float32 and np.isnan(a.landmarks).any(axis=(1, 2)).sum() == (
        want["landmarks"].isna().sum())
    # Video ids unique across the dataset: one name per video, CSR offsets cover every row once.
    assert len(a.video_names) == len(set(a.video_names)) == want["video_id"].nunique() == 8
    assert a.starts[0] == 0 and a.starts[-1] == len(a) and (np.diff(a.starts) == 3).all()
    assert a.video_labels.tolist() == want.groupby("video_id")["label"].first().tolist()
    assert a.path(0).is_file()


def test_manifest_arrays_split_lists_and_all(shuffled: Path) -> None:
    assert len(ManifestArrays(shuffled, ["val", "test"])) == 24
    assert len(ManifestArrays(shuffled)) == 48
    empty = ManifestArrays(shuffled, "nothing")
    assert len(empty) == 0 and len(empty.video_names) == 0 and empty.starts.tolist() == [0]


def test_manifest_arrays_clear_errors(synth: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dfd-extract"):
        ManifestArrays(tmp_path / "none.parquet")
    write_parquet(pd.read_parquet(synth).drop(columns=["landmarks"]), tmp_path / "m.parquet")
    with pytest.raises(SchemaError, match="landmarks"):
        ManifestArrays(tmp_path / "m.parquet")


# ------------------------------------------------------------------------------------------------ frames
def test_frame_items_shapes_and_normalisation(synth: Path) -> None:
    a = ManifestArrays(synth, "val")
    ds = FrameDataset(a, Pipeline(HALF), name="syn")
    assert len(ds) == 12 and ds.labels is a.label
    for i in (0, 5, 11):
        item = ds[i]
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
        raw = cv2.resize(cv2.cvtColor(cv2.imread(str(a.path(i))), cv2.COLOR_BGR2RGB), (32, 32),
                         interpolation=cv2.INTER_LINEAR)
        want = (raw.astype(np.float32) / 255 - 0.5) / 0.5
        np.testing.assert_allclose(item["image"].permute(1, 2, 0).numpy(), want, atol=1e-5)
        assert item["image"].min() >= -1.0 and item["image"].max() <= 1.0
        assert item["label"].dtype == torch.float32 and item["label"].item() == a.label[i]
        assert item["index"].item() == i and item["video"].item() == a.video[i]
        assert item["method"].item() == a.method[i]
        # 64 px crops resized to 32: landmarks scale with the image.
        np.testing.assert_allclose(item["landmarks"].numpy(), a.landmarks[i] * 0.5, atol=0.3)
    imagenet = FrameDataset(a, Pipeline(Spec(32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")))
    x = imagenet[0]["image"]
    y = (ds[0]["image"] * 0.5 + 0.5 - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor(
        [0.229, 0.224, 0.225])[:, None, None]
    torch.testing.assert_close(x, y, atol=1e-4, rtol=0)


def test_landmarks_follow_horizontal_flip(tmp_path: Path) -> None:
    m = coded_manifest(tmp_path, {"v0": 1})
    ds = FrameDataset(ManifestArrays(m), Pipeline(RAW, [A.HorizontalFlip(p=1.0)]))
    sample = ds.load(0)
    marker = np.zeros((32, 32, 3), np.uint8)
    for x, y in sample["landmarks"].astype(int):
        marker[y, x] = 255
    sample["image"] = marker
    out = ds.apply_transform(sample)
    lit = np.argwhere(out["image"][0].numpy() > 127)[:, ::-1]  # (x, y) of the marked pixels after the flip
    lm = out["landmarks"].numpy()
    assert sorted(map(tuple, lit.tolist())) == sorted(map(tuple, np.rint(lm).astype(int).tolist()))
    np.testing.assert_allclose(lm[:, 0], 31 - sample["landmarks"][:, 0])
    np.testing.assert_allclose(lm[:, 1], sample["landmarks"][:, 1])
    # No landmarks in the manifest: NaN out, not a crash.
    sample["landmarks"] = np.full((5, 2), np.nan, np.float32)
    assert torch.isnan(ds.apply_transform(sample)["landmarks"]).all()


# ------------------------------------------------------------------------------------------------ clips
def test_uniform_positions() -> None:
    # The one "uniformly spaced" rule (extraction's frame sampling too): linspace over the whole span.
    from dfd.faces.contract import sample_indices

    assert uniform_positions(10, 4).tolist() == [0, 3, 6, 9] == sample_indices(10, 4).tolist()
    assert uniform_positions(3, 5).tolist() == [0, 0, 1, 1, 2]  # clips repeat frames when fewer; extraction not
    assert sample_indices(3, 5).tolist() == [0, 1, 2]
    assert uniform_positions(4, 4).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="empty"):
        uniform_positions(0, 4)


def _frames_of(clip: torch.Tensor) -> tuple[list[int], list[bool]]:
    """Frame numbers coded in a clip's pixels, and whether each frame came out flipped."""
    left, right = clip[:, 0, :, :16].mean(dim=(1, 2)), clip[:, 0, :, 16:].mean(dim=(1, 2))
    flipped = (right > left).tolist()
    return [round((max(float(a), float(b)) - 10) / 20) for a, b in zip(left, right, strict=True)], flipped


def test_clips_are_uniform_consistent_and_ordered(tmp_path: Path) -> None:
    m = coded_manifest(tmp_path, {"long": 10, "short": 3})
    a = ManifestArrays(m)
    ds = ClipDataset(a, Pipeline(RAW, [A.HorizontalFlip(p=0.5)]), clip_len=4, name="clips")
    assert len(ds) == 2 and ds.labels.tolist() == [0, 1]
    flips = set()
    for _ in range(12):
        long = ds[0]
        assert long["image"].shape == (4, 3, 32, 32) and long["landmarks"].shape == (4, 5, 2)
        frames, flipped = _frames_of(long["image"])
        assert frames == [0, 3, 6, 9]  # spread over the whole video, never the first four
        assert len(set(flipped)) == 1  # one augmentation draw for the whole clip
        flips.add(flipped[0])
        lm_x = long["landmarks"][:, 0, 0]
        assert torch.allclose(lm_x, lm_x[0].expand(4)) and float(lm_x[0]) == (27.0 if flipped[0] else 4.0)
    assert flips == {True, False}
    short = ds[1]
    frames, _ = _frames_of(short["image"])
    assert frames == [0, 0, 1, 2]  # repeats, in temporal order
    assert short["label"].item() == 1.0 and short["video"].item() == 1 and short["index"].item() == 1


# ------------------------------------------------------------------------------------------------ workers
def test_dataloader_workers_read_the_arrays(synth: Path) -> None:
    a = ManifestArrays(synth, "train")
    ds = FrameDataset(a, Pipeline(HALF, [A.HorizontalFlip(p=0.5)]))
    loader = DataLoader(ds, batch_size=5, num_workers=2, shuffle=True, generator=torch.Generator().manual_seed(0))
    idx, labels, videos = [], [], []
    for batch in loader:
        assert batch["image"].shape[1:] == (3, 32, 32)
        idx += batch["index"].tolist()
        labels += batch["label"].tolist()
        videos += batch["video"].tolist()
    assert sorted(idx) == list(range(len(a)))
    assert labels == a.label[idx].astype(float).tolist() and videos == a.video[idx].tolist()


def test_string_columns_to_fixed_bytes_without_python_objects() -> None:
    import pyarrow as pa

    arr = pa.array(["skip", "crops/a/000001.png", None, "crops/Célèbre/7.png", ""], pa.string()).slice(1)
    got = datasets._as_fixed_bytes(arr)
    assert got.dtype == np.dtype(f"S{len('crops/Célèbre/7.png'.encode())}")
    assert [b.decode() for b in got] == ["crops/a/000001.png", "", "crops/Célèbre/7.png", ""]
    same = datasets._as_fixed_bytes(pa.array(["ab", "cd"], pa.large_string()))
    assert same.tolist() == [b"ab", b"cd"]
