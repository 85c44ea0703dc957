"""Does self-blending starve the DataLoader? Throughput of load + augment with and without SBI.

Runs single-threaded (like one DataLoader worker) over real face crops (PNG) written to a temp folder, with a
frame dataset of the same API and work as dfd's FrameDataset (read PNG, albumentations resize + augment with
landmarks as keypoints, normalise to a tensor), kept here so the figure does not move with that module:

* baseline: ``ds[i]`` — read the crop, augment, normalise (one image per read);
* SBI: ``SelfBlendedPairs(ds)[i]`` — read the crop, self-blend it, augment + normalise both (two images
  per read: the real and its self-blend).

    .venv/bin/python tests/benchmarks/bench_sbi.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch

from dfd.cli.sbi_grid import demo_face
from dfd.data.sbi import SelfBlend, SelfBlendedPairs

N_CROPS = 64
AUGMENT = [
    A.HorizontalFlip(p=0.5),
    A.RandomBrightnessContrast(p=0.5),
    A.ImageCompression(quality_range=(60, 100), p=0.5),
]


class CropFrames:
    """Real face crops on disk behind the frame-dataset API (load / apply_transform / labels)."""

    def __init__(self, root: Path, size: int) -> None:
        face, lm = demo_face(size=size)
        self.paths, self.landmarks = [], []
        for k in range(N_CROPS):
            path = root / f"{k:03d}.png"
            cv2.imwrite(str(path), np.roll(face, k % 7, axis=1)[..., ::-1])
            self.paths.append(path)
            self.landmarks.append((lm + [k % 7, 0]).astype(np.float32))
        self.labels = np.zeros(N_CROPS, np.int8)
        kp = A.KeypointParams(format="xy", remove_invisible=False)
        self.augment = A.Compose([A.Resize(size, size), *AUGMENT], keypoint_params=kp)
        self.mean = np.float32([0.485, 0.456, 0.406]) * 255
        self.inv_std = 1 / (np.float32([0.229, 0.224, 0.225]) * 255)

    def __len__(self) -> int:
        return N_CROPS

    def load(self, i: int) -> dict:
        img = cv2.cvtColor(cv2.imread(str(self.paths[i])), cv2.COLOR_BGR2RGB)
        return {"image": img, "landmarks": self.landmarks[i], "label": 0, "video": i // 8, "index": i}

    def apply_transform(self, s: dict) -> dict:
        out = self.augment(image=s["image"], keypoints=s["landmarks"])
        x = (out["image"].astype(np.float32) - self.mean) * self.inv_std
        return {
            "image": torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))),
            "landmarks": torch.as_tensor(np.asarray(out["keypoints"], np.float32)),
            "label": torch.tensor(float(s["label"])),
            "video": torch.tensor(s["video"]),
            "index": torch.tensor(s["index"]),
        }

    def __getitem__(self, i: int) -> dict:
        return self.apply_transform(self.load(i))


def rates(fns: dict, n_items: int, images_per_item: dict, rounds: int = 7) -> dict:
    """Median images/s of each ``fn(i)`` over passes interleaved round by round.

    Interleaving keeps the comparison fair on a shared machine: a burst of load hits both sides.
    """
    for fn in fns.values():
        fn(0)  # warm-up: file cache, lazy imports
    samples: dict = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for i in range(n_items):
                fn(i)
            samples[k].append(n_items * images_per_item[k] / (time.perf_counter() - t0))
    return {k: float(np.median(v)) for k, v in samples.items()}


def main() -> None:
    """Print images/s without and with SBI at 320 px and 64 px, and their ratio."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    print(f"single thread (one DataLoader worker), {N_CROPS} crops, augment: flip, brightness/contrast, JPEG")
    print(f"{'size':>5} {'baseline img/s':>15} {'SBI img/s':>10} {'SBI/base':>9} {'SBI real-frames/s':>18} "
          f"{'blend ms (median)':>18}")  # fmt: skip
    for size in (320, 64):
        with tempfile.TemporaryDirectory() as tmp:
            ds = CropFrames(Path(tmp), size)
            pairs = SelfBlendedPairs(ds, SelfBlend(), mode="sbi", seed=0)
            r = rates({"base": ds.__getitem__, "sbi": pairs.__getitem__}, N_CROPS, {"base": 1, "sbi": 2})
            base, sbi = r["base"], r["sbi"]
            blend, sample = SelfBlend(), ds.load(0)
            rng = np.random.default_rng(0)
            times = []
            for _ in range(200):
                t0 = time.perf_counter()
                blend.pair(sample["image"], sample["landmarks"], rng)
                times.append(time.perf_counter() - t0)
            blend_ms = float(np.median(times)) * 1e3
        print(f"{size:>5} {base:>15.0f} {sbi:>10.0f} {sbi / base:>9.2f} {sbi / 2:>18.0f} {blend_ms:>18.2f}")


if __name__ == "__main__":
    main()
