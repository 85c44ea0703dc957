"""SBI as the paper trains it: one augmentation draw per (real, self-blend) pair, per-process augmentation seeds,
SAM (SGD inside, two gradient evaluations per step) and the paper's LR schedule."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from dfd.data.datasets import FrameDataset, ManifestArrays
from dfd.data.sbi import SelfBlend, SelfBlendedPairs
from dfd.data.transforms import Pipeline, Spec

ROOT = Path(__file__).resolve().parents[1]
SIZE = 160  # crops stored at the model's size: the resize is the identity, augmentation alone acts


def augment(preset: str) -> list:
    return [instantiate(t) for t in OmegaConf.load(ROOT / f"conf/augment/{preset}.yaml").train]


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> ManifestArrays:
    """Real faces (the astronaut, MTCNN landmarks) in wide crops, 8 frames, as a frame manifest on disk."""
    import pandas as pd
    from skimage.data import astronaut

    from dfd.cli.sbi_grid import _astronaut_face
    from dfd.data.schema import validate_manifest, write_parquet

    out = tmp_path_factory.mktemp("sbi_aug")
    img = astronaut()
    (x1, y1, x2, y2), points = _astronaut_face()
    rows = []
    for f in range(8):
        side = (2.4 + 0.1 * f) * max(x2 - x1, y2 - y1)  # the face fills about a third of the crop
        sx, sy = (x1 + x2) / 2 - side / 2 + 3 * f, (y1 + y2) / 2 - side / 2 - 2 * f
        mat = np.float32([[SIZE / side, 0, -sx * SIZE / side], [0, SIZE / side, -sy * SIZE / side]])
        crop = cv2.warpAffine(img, mat, (SIZE, SIZE), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT_101)
        lm = (points - (sx, sy)) * (SIZE / side)
        cv2.imwrite(str(out / f"{f}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        rows.append({"video_id": "astronaut", "frame": f, "crop_path": f"{f}.png", "label": 0, "split": "train",
                     "method": "real", "identity": "astronaut", "bbox": [0.0, 0.0, 1.0, 1.0],
                     "landmarks": lm.reshape(-1).astype(float).tolist(), "score": 1.0})
    write_parquet(validate_manifest(pd.DataFrame(rows)), out / "manifest.parquet")
    return ManifestArrays(out / "manifest.parquet", splits="train")


def _outside(mask: np.ndarray, block: int = 16, spread: int = 6) -> np.ndarray:
    """Pixels that no augmentation can couple to the mask: the mask's pixels, grown to whole JPEG MCUs (16 px
    at 4:2:0, the grid of the augmented image) and by a few pixels for resampling and blur kernels, excluded."""
    inside = (mask > 0).astype(np.uint8)
    h, w = inside.shape
    grid = inside.reshape(h // block, block, w // block, block).max(axis=(1, 3))
    blocks = np.kron(grid, np.ones((block, block), np.uint8))
    grown = cv2.dilate(np.maximum(inside, blocks), np.ones((2 * spread + 1, 2 * spread + 1), np.uint8))
    return grown == 0


@pytest.mark.parametrize("preset", ["light", "strong"])
def test_sbi_pair_differs_only_inside_the_blend_mask_after_augmentation(frames, preset):
    spec = Spec(SIZE, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    base = FrameDataset(frames, Pipeline(spec, augment(preset)))
    pairs = SelfBlendedPairs(base, SelfBlend(), mode="sbi", seed=3, masks=True)
    torch.manual_seed(0)
    flips, checked = 0, 0
    for epoch in range(3):
        for i in range(len(pairs)):
            real, fake = pairs[(epoch, i)]
            mask = real["mask"].numpy()
            assert torch.equal(fake["mask"], real["mask"]) and mask.shape == (SIZE, SIZE)
            out = torch.from_numpy(_outside(mask))
            assert out.float().mean() > 0.1, "too little outside the mask to check anything"
            diff = (real["image"] != fake["image"]).any(0)
            assert not diff[out].any(), f"pair {i} epoch {epoch} differs outside its blend mask"
            assert diff.any(), "a self-blend must differ from its real frame somewhere"
            checked += 1
            # Count draws with a flip: the mask's centroid moves to the other side of the vertical axis.
            raw = pairs.blend.pair(base.load(int(pairs.items[i]))["image"], base.load(int(pairs.items[i]))["landmarks"],
                                   np.random.default_rng([3, epoch, int(pairs.items[i])]))[2]
            cx = lambda m: (m * np.arange(SIZE)[None, :]).sum() / max(m.sum(), 1e-6)  # noqa: E731
            flips += (cx(raw) - SIZE / 2) * (cx(mask) - SIZE / 2) < 0
    assert checked == 24 and 0 < flips < checked  # flips happened, and not always


def test_independent_draws_would_break_the_pair(frames):
    """The check above has teeth: augmenting the pair's two images with two draws changes pixels outside."""
    spec = Spec(SIZE, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    base = FrameDataset(frames, Pipeline(spec, augment("light")))
    sample = base.load(0)
    real, fake, mask = SelfBlend().pair(sample["image"], sample["landmarks"], np.random.default_rng(0))
    torch.manual_seed(0)
    outside = torch.from_numpy(_outside(mask))
    broken = 0
    for _ in range(10):
        a = base.apply_transform({**sample, "image": real})["image"]
        b = base.apply_transform({**sample, "image": fake})["image"]
        broken += bool((a != b).any(0)[outside].any())
    assert broken >= 3


# ---------------------------------------------------------------------------------------------- seeding
class Constant(Dataset):
    """One image, augmented anew on every access: what differs between items is the augmentation draw."""

    def __init__(self, preset: str = "strong") -> None:
        rng = np.random.default_rng(0)
        self.img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        self.pipe = Pipeline(Spec(32, (0.5,) * 3, (0.5,) * 3), augment(preset))

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.pipe(self.img)[0]


def _epoch(ds: Dataset, seed: int, workers: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)  # what Lightning's seed_everything does first
    loader = DataLoader(ds, batch_size=1, num_workers=workers, multiprocessing_context="fork" if workers else None)
    return [b[0] for b in loader]


def test_augmentation_differs_between_workers_and_repeats_with_the_seed():
    ds = Constant()
    run1 = _epoch(ds, 7, workers=2)
    run2 = _epoch(Constant(), 7, workers=2)
    # Two runs with one seed: the same sequence, item for item.
    assert all(torch.equal(a, b) for a, b in zip(run1, run2, strict=True))
    # With 2 workers, items 0, 2, 4... come from worker 0 and 1, 3, 5... from worker 1: their k-th draws differ.
    w0, w1 = run1[0::2], run1[1::2]
    assert sum(not torch.equal(a, b) for a, b in zip(w0, w1, strict=True)) >= 6
    # Another seed, another sequence; the main process (no workers) is seeded from the run's seed too.
    assert not all(torch.equal(a, b) for a, b in zip(run1, _epoch(Constant(), 8, workers=2), strict=True))
    main1, main2 = _epoch(Constant(), 7, workers=0), _epoch(Constant(), 7, workers=0)
    assert all(torch.equal(a, b) for a, b in zip(main1, main2, strict=True))
