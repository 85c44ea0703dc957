"""Self-blended images: the blend, its mask, reproducibility, balanced pairs and the grid command."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from dfd.cli import sbi_grid
from dfd.data.sbi import EpochSampler, SelfBlend, SelfBlendedPairs, face_region, pair_collate
from dfd.store.schema import write_parquet


@pytest.fixture(scope="module")
def face() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's face cropped like dfd's extractor, with real MTCNN landmarks, at 128 px."""
    img, lm = sbi_grid.demo_face(size=128)
    assert lm.shape == (5, 2) and np.isfinite(lm).all()
    return img, lm


def _support(mask: np.ndarray) -> np.ndarray:
    # One pixel of dilation tolerates the linear interpolation at the mask's edge.
    return cv2.dilate((mask > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


@pytest.mark.parametrize("seed", range(6))
def test_blend_changes_pixels_only_inside_mask(face, seed):
    img, lm = face
    fake, mask = SelfBlend()(img, lm, np.random.default_rng(seed))
    assert fake.dtype == np.uint8 and fake.shape == img.shape
    assert mask.dtype == np.float32 and mask.shape == img.shape[:2]
    assert mask.min() >= 0.0 and mask.max() <= 1.0 and mask.max() >= 0.25
    changed = (fake != img).any(axis=2)
    assert changed.sum() > 50, "the blend changed (almost) nothing"
    assert not (changed & ~_support(mask)).any(), "pixels changed outside the mask"
    assert (mask == 0).mean() > 0.2, "the mask should not cover the whole crop"


@pytest.mark.parametrize("seed", range(6))
def test_pair_real_and_fake_differ_only_inside_mask(face, seed):
    # The paper's pair may colour-shift the target: the returned real carries that shift too.
    img, lm = face
    real, fake, mask = SelfBlend().pair(img, lm, np.random.default_rng(seed))
    changed = (fake != real).any(axis=2)
    assert changed.sum() > 50
    assert not (changed & ~_support(mask)).any()


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[: mask.shape[0], : mask.shape[1]]
    return np.array([(xs * mask).sum(), (ys * mask).sum()]) / mask.sum()


def test_mask_follows_landmarks(face):
    img, lm = face
    blend, h = SelfBlend(), img.shape[0]
    big = np.zeros((256, 256, 3), np.uint8)  # room to move the face without leaving the frame
    big[64:192, 64:192] = img
    lm0 = lm + 64
    m0 = blend.mask(lm0, big.shape[:2], np.random.default_rng(3))
    # Face-shaped region from 5 points: its centre sits near the eye-nose-mouth centre (chin vs forehead).
    assert np.linalg.norm(_centroid(m0) - lm0.mean(axis=0)) < 0.12 * h
    # Cheeks and chin are covered: the mask reaches well beyond the 5 points' bounding box.
    on = m0 > 0.5
    ys, xs = np.nonzero(on)
    assert (
        xs.min() < lm0[:, 0].min() - 5 and xs.max() > lm0[:, 0].max() + 5 and ys.max() > lm0[:, 1].max() + 8
    )
    shift = np.array([40.0, -25.0], np.float32)
    m1 = blend.mask(lm0 + shift, big.shape[:2], np.random.default_rng(3))
    np.testing.assert_allclose(_centroid(m1) - _centroid(m0), shift, atol=1.5)
    # Landmarks as the manifest stores them (10 floats) give the same mask.
    m2 = blend.mask(lm0.reshape(-1), big.shape[:2], np.random.default_rng(3))
    np.testing.assert_array_equal(m0, m2)


def test_rich_landmarks_use_their_hull_and_missing_ones_an_ellipse():
    blend, shape = (
        SelfBlend(elastic=0, hull_jitter=0, hull_scale=(1, 1), erode_dilate=0, blur=(0, 0)),
        (96, 96),
    )
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    ring = np.stack([30 + 12 * np.cos(t), 60 + 15 * np.sin(t)], 1).astype(np.float32)  # off-centre "face"
    m = blend.mask(ring, shape, np.random.default_rng(0))
    np.testing.assert_allclose(_centroid(m), [30, 60], atol=1.5)
    assert abs((m >= 0.5).sum() - np.pi * 12 * 15) < 0.1 * np.pi * 12 * 15
    assert len(face_region(ring, shape)) <= 68
    for missing in (None, np.full((5, 2), np.nan, np.float32)):
        m = blend.mask(missing, shape, np.random.default_rng(0))
        np.testing.assert_allclose(_centroid(m), [48, 50], atol=2.0)
        assert 0.2 < (m > 0).mean() < 0.6


def test_seed_reproduces_blend_and_different_seeds_differ(face):
    img, lm = face
    blend = SelfBlend()
    a = blend(img, lm, np.random.default_rng(7))
    b = blend(img, lm, np.random.default_rng(7))
    c = blend(img, lm, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_bad_inputs_raise_clear_errors(face):
    img, lm = face
    with pytest.raises(ValueError, match="RGB uint8"):
        SelfBlend()(img.astype(np.float32), lm, np.random.default_rng(0))
    with pytest.raises(ValueError, match="freq_ops"):
        SelfBlend(freq_ops=["blur"])
    with pytest.raises(ValueError, match="mode"):
        SelfBlendedPairs(StandIn(img, lm, [0, 1]), SelfBlend(), mode="fake")
    with pytest.raises(ValueError, match="no real"):
        SelfBlendedPairs(StandIn(img, lm, [1, 1]), SelfBlend())


class StandIn:
    """The frame dataset's API (load / apply_transform / labels) over copies of one face."""

    def __init__(self, img: np.ndarray, lm: np.ndarray, labels: list[int], size: int = 32) -> None:
        scale = size / img.shape[0]
        self.img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        self.lm = (lm * scale).astype(np.float32)
        self.labels = np.asarray(labels, np.int8)

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int) -> dict:
        # Each frame a little different, so items are distinguishable.
        img = np.roll(self.img, i, axis=1)
        lm = self.lm + np.float32([i, 0])
        return {"image": img, "landmarks": lm, "label": int(self.labels[i]), "video": i // 2, "index": i}

    def apply_transform(self, s: dict) -> dict:
        x = torch.from_numpy(s["image"].transpose(2, 0, 1).astype(np.float32) / 255.0)
        return {
            "image": x,
            "landmarks": torch.as_tensor(s["landmarks"]),
            "label": torch.tensor(s["label"], dtype=torch.float32),
            "video": torch.tensor(s["video"]),
            "index": torch.tensor(s["index"]),
        }


LABELS = [0, 1, 1, 0, 1, 0, 1, 1, 0, 1]  # 4 reals, 6 fakes


@pytest.mark.parametrize("mode", ["sbi", "both"])
def test_pairs_are_balanced_in_every_batch(face, mode):
    base = StandIn(*face, LABELS)
    ds = SelfBlendedPairs(base, SelfBlend(), mode=mode, seed=0)
    assert len(ds) == (4 if mode == "sbi" else 10)
    batches = list(DataLoader(ds, batch_size=3, collate_fn=pair_collate))
    for b in batches:
        assert set(b) >= {"image", "label", "video", "index", "landmarks", "sbi"}
        n = len(b["label"])
        assert b["image"].shape == (n, 3, 32, 32) and b["landmarks"].shape == (n, 5, 2)
        assert b["label"].dtype == torch.float32  # the base's dtype is kept
        assert b["label"].tolist() == [0.0, 1.0] * (n // 2)
    allb = pair_collate([ds[i] for i in range(len(ds))])
    if mode == "sbi":
        # Only real frames are used; every fake is a self-blend of the real frame next to it.
        assert set(allb["index"].tolist()) == set(np.flatnonzero(np.asarray(LABELS) == 0).tolist())
        assert allb["sbi"].tolist() == [0, 1] * 4
        assert torch.equal(allb["index"][0::2], allb["index"][1::2])
    else:
        assert allb["sbi"].sum().item() == 4  # one self-blend per real frame; the 6 real fakes kept
        fakes = allb["index"][1::2][allb["sbi"][1::2] == 0]
        assert sorted(fakes.tolist()) == [1, 2, 4, 6, 7, 9]
        assert (allb["label"][0::2] == 0).all()


def test_pairs_reproducible_across_workers_and_epochs(face):
    base = StandIn(*face, LABELS)
    ds = SelfBlendedPairs(base, SelfBlend(), mode="sbi", seed=5)
    ref = pair_collate([ds[i] for i in range(len(ds))])["image"]
    par = torch.cat(
        [b["image"] for b in DataLoader(ds, batch_size=1, num_workers=2, collate_fn=pair_collate)]
    )
    torch.testing.assert_close(par, ref, rtol=0, atol=0)
    ds.set_epoch(1)
    ep1 = pair_collate([ds[i] for i in range(len(ds))])["image"]
    assert not torch.equal(ep1[1::2], ref[1::2]), "a new epoch should draw new blends"
    # A sampler-provided epoch gives the same blends as set_epoch, whatever the order.
    sampler = EpochSampler(len(ds), shuffle=True, seed=0)
    sampler.set_epoch(1)
    keys = list(sampler)
    assert sorted(i for _, i in keys) == list(range(len(ds))) and {e for e, _ in keys} == {1}
    ds.set_epoch(0)
    for e, i in keys:
        torch.testing.assert_close(ds[(e, i)][1]["image"], ep1[2 * i + 1], rtol=0, atol=0)


def test_set_epoch_reaches_persistent_workers(face):
    ds = SelfBlendedPairs(StandIn(*face, LABELS), SelfBlend(), mode="both", seed=1)
    assert len(ds.labels) == len(ds)  # one label per item, for label-weighted samplers
    loader = DataLoader(ds, batch_size=5, num_workers=1, persistent_workers=True, collate_fn=pair_collate)
    epochs = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        epochs.append(torch.cat([b["image"] for b in loader]))
    ds.set_epoch(1)
    expected = pair_collate([ds[i] for i in range(len(ds))])["image"]
    torch.testing.assert_close(epochs[1], expected, rtol=0, atol=0)
    assert not torch.equal(epochs[0], epochs[1])


def test_grid_command_writes_png_of_expected_size(tmp_path, face):
    out = tmp_path / "grid.png"
    assert sbi_grid.main(["--out", str(out), "--n", "3", "--tile", "40", "--seed", "1"]) == 0
    grid = cv2.imread(str(out))
    assert grid.shape == (3 * 40, 3 * 40, 3)
    # Middle row is the mask: dark corners, bright centre.
    assert grid[45, 2].max() < 10 and grid[60, 20].min() > 60


def test_grid_command_reads_a_frame_manifest(tmp_path, face):
    img, lm = face
    rows = []
    for k in range(3):
        name = f"crops/v{k}/000.png"
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / name), np.roll(img, 3 * k, axis=0)[..., ::-1])
        rows.append(
            dict(video_id=f"v{k}", frame=0, crop_path=name, label=k % 2, split="train", method="real",
                 identity="", bbox=[0.0, 0, 128, 128], landmarks=lm.reshape(-1).tolist(), score=1.0)
        )  # fmt: skip
    rows.append({**rows[0], "video_id": "gone", "crop_path": "crops/missing.png"})
    write_parquet(pd.DataFrame(rows), tmp_path / "manifest.parquet")
    out = tmp_path / "g.png"
    code = sbi_grid.main(["--images", str(tmp_path / "manifest.parquet"), "--out", str(out), "--n", "8"])
    assert code == 0
    # The 3 reals (label 0), one of them unreadable and skipped: 2 columns of 128 px tiles.
    assert cv2.imread(str(out)).shape == (3 * 128, 2 * 128, 3)


def test_grid_command_logs_to_wandb_offline(tmp_path, face, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default without WANDB_MODE=online
    import wandb

    # W&B keeps the settings of the first run of this process (its folder too): a test that ran W&B before in
    # this pytest worker would send this run to that test's folder.
    wandb.teardown()
    assert sbi_grid.main(["--out", str(tmp_path / "g.png"), "--n", "2", "--tile", "32", "--wandb"]) == 0
    logged = list(tmp_path.glob("wandb/offline-run-*/files/media/images/sbi/grid_*.png"))
    assert len(logged) == 1 and cv2.imread(str(logged[0])).shape == (96, 64, 3)
