"""Benchmark the crop-cache loaders: throughput against bare decoding, and memory against manifest size.

1. Images/s from PNG crops to augmented, normalised batches (``conf/augment/light.yaml``), N workers, as a ratio
   of a DataLoader over bare decoding (``cv2.imread`` + RGB, nothing else) with the same N workers and batch:
   files (FrameDataset), shards read at random and shards streamed (``dfd-pack`` of the same crops), with the
   RSS of the main process and of the workers at 25/50/100% of the epoch (flat = no growth with data read).
   Goal: files >= 0.6x.
2. Main-process RSS after building ManifestArrays + FrameDataset and iterating a worker DataLoader for a few
   batches, with a 1,000,000-frame manifest against a 10,000-frame one, each in a fresh subprocess.
   Goal: <= 1.5x.

3. ``--gpu`` (CUDA only; stops with a one-line error without one): an EfficientNet-B4 bf16 + channels_last
   training step at batch 64 fed by the loader from files / shards (random, stream), against the same step on
   GPU-resident batches: images/s, ratio to that ceiling, mean GPU utilisation (nvidia-smi every 0.1 s).

Run: ``.venv/bin/python tests/benchmarks/bench_loader.py [--images 2000] [--size 320] [--workers 2]``
     ``.venv/bin/python tests/benchmarks/bench_loader.py --gpu --workers 8 [--images 6400] [--model vit_b16]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
FRAMES_PER_VIDEO = 32
METHODS = ("youtube", "Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
N_BATCHES, BATCH = 4, 16


def _proc_kib(pid: str | int, key: str, name: str = "status") -> int:
    """A kB figure from /proc/<pid>/status or smaps_rollup (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _light_augment() -> list:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    return list(instantiate(OmegaConf.load(REPO / "conf/augment/light.yaml").train))


def _face_images(n_unique: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Photo-like face crops (BGR): the astronaut's face, shifted, scaled and noised per image."""
    import cv2
    from skimage.data import astronaut

    face = cv2.cvtColor(astronaut()[20:240, 130:320], cv2.COLOR_RGB2BGR)
    out = []
    for _ in range(n_unique):
        s = rng.uniform(0.9, 1.1)
        mat = cv2.getRotationMatrix2D((95, 110), rng.uniform(-10, 10), s * size / 220)
        mat[:, 2] += rng.uniform(-8, 8, 2) + (size / 2 - 95, size / 2 - 110)
        img = cv2.warpAffine(face, mat, (size, size), borderMode=cv2.BORDER_REFLECT).astype(np.float32)
        out.append(np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8))
    return out


# ------------------------------------------------------------------------------------------------ manifests
def write_manifest(path: Path, n_frames: int, size: int = 320, seed: int = 0) -> None:
    """An FF++-like manifest as ``dfd-extract`` writes it: 32 frames per video, realistic paths and landmarks.

    Videos are assigned to train/val/test round-robin (8:1:1).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_videos = -(-n_frames // FRAMES_PER_VIDEO)
    vids = [f"{METHODS[k % 6]}/{k // 6:03d}_{(k * 7) % 1000:03d}" if k % 6 else f"youtube/{k // 6:03d}"
            for k in range(n_videos)]
    video = np.repeat(np.arange(n_videos), FRAMES_PER_VIDEO)[:n_frames]
    frame = (np.tile(np.arange(FRAMES_PER_VIDEO), n_videos)[:n_frames] * 10 + video % 7).astype(np.int32)
    vid_col = [vids[v] for v in video]
    splits = np.array(["train"] * 8 + ["val", "test"])[video % 10]
    lm = (rng.uniform(0.3, 0.7, (n_frames, 10)) * size).astype(np.float32)
    bbox = (rng.uniform(0, 1, (n_frames, 4)) * 600).astype(np.float32)
    table = pa.table({
        "video_id": pa.array(vid_col, pa.string()),
        "frame": pa.array(frame),
        "crop_path": pa.array([f"crops/{v}/{f:06d}.png" for v, f in zip(vid_col, frame.tolist(), strict=True)]),
        "label": pa.array((video % 6 != 0).astype(np.int8)),
        "split": pa.array(splits, pa.string()),
        "method": pa.array([vids[v].split("/")[0] if v % 6 else "real" for v in video], pa.string()),
        "identity": pa.array([f"{v // 6:03d}" for v in video], pa.string()),
        "bbox": pa.FixedSizeListArray.from_arrays(pa.array(bbox.reshape(-1)), 4),
        "landmarks": pa.FixedSizeListArray.from_arrays(pa.array(lm.reshape(-1)), 10),
        "score": pa.array(np.ones(n_frames, np.float32)),
        "source_path": pa.array([f"{v}.mp4" for v in vid_col], pa.string()),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def write_first_crops(manifest: Path, n: int, size: int) -> None:
    """Crop files for the first ``n`` rows in (video, frame) order, of the train split and of the whole manifest.

    Those are the rows a non-shuffled loader reads; the other crops need not exist.
    """
    import cv2
    import pandas as pd

    df = pd.read_parquet(manifest, columns=["video_id", "frame", "crop_path", "split"]).sort_values(["video_id", "frame"])
    paths = set(df["crop_path"][:n]) | set(df["crop_path"][df["split"] == "train"][:n])
    imgs = _face_images(8, size, np.random.default_rng(1))
    for i, rel in enumerate(sorted(paths)):
        p = manifest.parent / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), imgs[i % len(imgs)])


def rss_child(manifest: str, split: str | None, size: int) -> dict:
    """In a fresh process: RSS after imports, after building the arrays, and after iterating a loader."""
    from torch.utils.data import DataLoader

    from dfd.data.datasets import FrameDataset, ManifestArrays
    from dfd.data.transforms import Pipeline, Spec

    aug = _light_augment()
    base = _proc_kib("self", "VmRSS")
    t = time.perf_counter()
    arrays = ManifestArrays(manifest, splits=split)
    build_s = time.perf_counter() - t
    built = _proc_kib("self", "VmRSS")
    ds = FrameDataset(arrays, Pipeline(Spec(size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), aug), "bench")
    loader = DataLoader(ds, batch_size=BATCH, num_workers=2)
    it = iter(loader)
    for _ in range(N_BATCHES):
        batch = next(it)
        assert batch["image"].shape == (BATCH, 3, size, size)
    # Pages a worker had to copy from the parent (refcount touches on Python objects show up here).
    workers = [w.pid for w in it._workers]
    worker_priv = [_proc_kib(p, "Private_Dirty", "smaps_rollup") for p in workers]
    worker_rss = [_proc_kib(p, "VmRSS") for p in workers]
    del it
    return {
        "rows": len(arrays),
        "build_s": build_s,
        "base_kib": base,
        "built_kib": built,
        "final_kib": _proc_kib("self", "VmRSS"),
        "peak_kib": _proc_kib("self", "VmHWM"),
        "worker_private_dirty_kib": worker_priv,
        "worker_rss_kib": worker_rss,
        "array_bytes": int(sum(v.nbytes for v in vars(arrays).values() if isinstance(v, np.ndarray))),
    }


def measure_rss(manifest: Path, split: str | None, size: int) -> dict:
    """Run :func:`rss_child` in a fresh interpreter so earlier allocations cannot hide or inflate the figure."""
    cmd = [sys.executable, __file__, "--rss-child", str(manifest), "--split", split or "all", "--size", str(size)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_memory(work: Path, size: int) -> None:
    print("\n== memory: main-process RSS, fresh subprocess per manifest ==")
    small, large = work / "m10k" / "manifest.parquet", work / "m1m" / "manifest.parquet"
    for path, n in ((small, 10_000), (large, 1_000_000)):
        t = time.perf_counter()
        write_manifest(path, n, size)
        write_first_crops(path, N_BATCHES * BATCH, size)
        print(f"wrote {n:,}-frame manifest ({path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t:.1f} s")
    for split in ("train", None):
        r_small, r_large = measure_rss(small, split, size), measure_rss(large, split, size)
        print(f"-- split={split or 'all'}: {r_small['rows']:,} vs {r_large['rows']:,} rows")
        for name, r in (("10k", r_small), ("1M", r_large)):
            print(
                f"  {name:>3}: import baseline {r['base_kib'] / 1024:7.1f} MiB, after arrays {r['built_kib'] / 1024:7.1f},"
                f" after loader {r['final_kib'] / 1024:7.1f} (delta {(r['final_kib'] - r['base_kib']) / 1024:6.1f}),"
                f" peak {r['peak_kib'] / 1024:7.1f}; arrays hold {r['array_bytes'] / 2**20:5.1f} MiB;"
                f" build {r['build_s']:.2f} s; worker private dirty"
                f" {[round(k / 1024, 1) for k in r['worker_private_dirty_kib']]} MiB"
            )
        ratio = r_large["final_kib"] / r_small["final_kib"]
        peak = r_large["peak_kib"] / r_small["peak_kib"]
        d_small = (r_small["final_kib"] - r_small["base_kib"]) / 1024
        d_large = (r_large["final_kib"] - r_large["base_kib"]) / 1024
        print(f"  RSS 1M / 10k: {ratio:.2f}x (goal <= 1.5x) {'OK' if ratio <= 1.5 else 'MISSED'}; peak {peak:.2f}x;"
              f" delta over import {d_large:.1f} vs {d_small:.1f} MiB ({d_large / max(r_large['rows'], 1) * 2**20:.0f}"
              f" bytes/row at 1M)")


# ------------------------------------------------------------------------------------------------ throughput
def make_crop_cache(work: Path, n_images: int, size: int, shard_size: str = "64MB") -> tuple[Path, Path]:
    """``n_images`` photo-like PNG crops + manifest (one train split), and the same cache packed into shards."""
    import cv2
    import pandas as pd

    from dfd.store.packed.writer import pack_cache
    from dfd.store.schema import write_parquet

    t = time.perf_counter()
    rng = np.random.default_rng(0)
    imgs = _face_images(64, size, rng)
    rows = []
    for i in range(n_images):
        vid, f = f"Deepfakes/{i // 32:03d}_{i // 32 + 500:03d}", i % 32
        rel = f"crops/{vid}/{f:06d}.png"
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        # Per-file noise so no two files are identical (PNG size and decode time as with real crops).
        noisy = np.clip(imgs[i % 64].astype(np.int16) + rng.integers(-2, 3, (size, size, 3)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(work / rel), noisy)
        lm = rng.uniform(0.3, 0.7, 10) * size
        rows.append({"video_id": vid, "frame": f, "crop_path": rel, "label": i % 2, "split": "train",
                     "method": "Deepfakes", "landmarks": lm.tolist()})
    manifest = write_parquet(pd.DataFrame(rows), work / "manifest.parquet")
    mb = sum((work / r["crop_path"]).stat().st_size for r in rows) / 2**20
    t_pack = time.perf_counter()
    packed = pack_cache(manifest, shard_size=shard_size)
    print(f"wrote {n_images} crops ({mb:.0f} MiB) in {t_pack - t:.1f} s; packed into {packed.shards} shards in "
          f"{time.perf_counter() - t_pack:.1f} s")
    return manifest, packed.out


class BareDecode:
    """The baseline dataset: read + decode a crop file (cv2.imread, BGR->RGB), nothing else."""

    def __init__(self, files: list[str]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Any:
        import cv2
        import torch

        img = cv2.imread(self.files[i], cv2.IMREAD_COLOR)
        assert img is not None
        return torch.from_numpy(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def _tree_rss_kib(loader_iter: Any) -> tuple[int, int]:
    """(main-process RSS, summed RSS of the loader's worker processes) in KiB."""
    workers = [w.pid for w in getattr(loader_iter, "_workers", [])]
    return _proc_kib("self", "VmRSS"), sum(_proc_kib(p, "VmRSS") for p in workers)


def loader_pass(dataset: Any, batch_size: int, workers: int, shuffle: bool, on_batch: Any = None) -> dict:
    """One epoch through a DataLoader: images/s (all, and after the first batch) and RSS at 3 points."""
    from torch.utils.data import DataLoader, IterableDataset

    iterable = isinstance(dataset, IterableDataset)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and not iterable, num_workers=workers,
                        pin_memory=on_batch is not None)
    n, t_first, n_first, rss = 0, None, 0, []
    n_batches = len(loader)
    t0 = time.perf_counter()
    it = iter(loader)
    for k, batch in enumerate(it):
        images = batch["image"] if isinstance(batch, dict) else batch
        if on_batch is not None:
            on_batch(batch)
        n += len(images)
        if t_first is None:
            t_first, n_first = time.perf_counter(), n
        if k in (n_batches // 4, n_batches // 2, n_batches - 1):
            rss.append(_tree_rss_kib(it))
    end = time.perf_counter()
    del it
    return {"n": n, "ips": n / (end - t0), "steady": (n - n_first) / max(end - t_first, 1e-9), "rss": rss}


def loader_sets(manifest: Path, shards: Path, spec: Any, batch_size: int, seed: int = 0) -> dict[str, Any]:
    """The datasets compared: bare decoding, files, shards read at random, shards streamed."""
    from dfd.data.datasets import FrameDataset, ManifestArrays
    from dfd.data.packed import ShardStreamDataset, shard_dataset
    from dfd.data.transforms import Pipeline
    from dfd.store.packed.format import ShardSettings
    from dfd.store.packed.reader import open_store

    pipe = Pipeline(spec, _light_augment())
    arrays = ManifestArrays(manifest, "train")
    store = open_store(str(shards))
    s_arrays = ManifestArrays(store.manifest_path, "train")
    random_ds = shard_dataset(ShardSettings(mode="random"), store, s_arrays, "train", pipe, "bench", None,
                              batch_size, True, seed)
    stream_ds = shard_dataset(ShardSettings(mode="stream", shuffle_buffer=256), store, s_arrays, "train", pipe,
                              "bench", None, batch_size, True, seed)
    assert isinstance(stream_ds, ShardStreamDataset)
    files = [str(arrays.path(i)) for i in range(len(arrays))]
    return {"bare decode": BareDecode(files), "files": FrameDataset(arrays, pipe, "bench"),
            "shards (random)": random_ds, "shards (stream)": stream_ds,
            "files, uint8 out": Uint8Frames(arrays, pipe, "bench")}


def _uint8_frames_class() -> type:
    import torch

    from dfd.data.datasets import FrameDataset

    class Uint8Frames(FrameDataset):
        """What-if: workers ship augmented uint8 crops and normalisation runs on the device (4x less IPC)."""

        def __getitem__(self, i: int) -> dict:
            s = self.load(int(i))
            out = self.pipeline.spatial(image=s["image"], keypoints=s["landmarks"])
            return {"image": torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1))),
                    "label": torch.tensor(s["label"], dtype=torch.float32)}

    return Uint8Frames


def Uint8Frames(*args: Any) -> Any:  # noqa: N802 - a class made on demand (keeps torch out of module import)
    return _uint8_frames_class()(*args)


def bench_throughput(work: Path, n_images: int, size: int, workers: int, batch_size: int = 32) -> None:
    import cv2

    print(f"\n== throughput: {n_images} PNG crops at {size} px, light augmentation, batch {batch_size}, "
          f"{workers} loader workers on every side ==")
    from dfd.data.transforms import Spec

    manifest, shards = make_crop_cache(work, n_images, size)
    sets = loader_sets(manifest, shards, Spec(size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), batch_size)
    files = sets["bare decode"].files

    def bare_loop() -> float:
        t0 = time.perf_counter()
        for f in files:
            img = cv2.imread(f, cv2.IMREAD_COLOR)
            assert img is not None
        return n_images / (time.perf_counter() - t0)

    bare_loop()  # warm the page cache: every side then reads from memory
    # Interleaved, best of two: other processes on a shared machine slow any single run.
    results: dict[str, list[dict]] = {k: [] for k in sets}
    loop = []
    for _ in range(2):
        loop.append(bare_loop())
        for name, ds in sets.items():
            results[name].append(loader_pass(ds, batch_size, workers, shuffle=True))
    base = max(r["ips"] for r in results["bare decode"])
    print(f"one-process cv2.imread loop (for reference): {max(loop):7.1f} images/s")
    print(f"{'side':<18}{'images/s':>10}{'x bare':>8}{'steady':>9}{'x bare':>8}   RSS main / workers at 25/50/100% (MiB)")
    for name, runs in results.items():
        best = max(runs, key=lambda r: r["ips"])
        steady = max(r["steady"] for r in runs)
        rss = "  ".join(f"{m / 1024:.0f}/{w / 1024:.0f}" for m, w in best["rss"])
        print(f"{name:<18}{best['ips']:>10.1f}{best['ips'] / base:>7.2f}x{steady:>9.1f}"
              f"{steady / max(r['steady'] for r in results['bare decode']):>7.2f}x   {rss}")
    files_ratio = max(r["ips"] for r in results["files"]) / base
    print(f"baseline: DataLoader over bare decoding (cv2.imread + RGB, no augmentation/normalisation) with the same "
          f"{workers} workers and batch. files/bare {files_ratio:.2f}x (goal >= 0.6x) "
          f"{'OK' if files_ratio >= 0.6 else 'MISSED'}")
    print(f"(cores available to this process: {len(os.sched_getaffinity(0))}; load average {os.getloadavg()[0]:.1f})")


# ------------------------------------------------------------------------------------------------ GPU
def _gpu_util_sampler(device_index: int) -> tuple[Any, Any]:
    """A background thread sampling GPU utilisation (%) every 0.1 s (nvidia-smi, else torch.cuda.utilization)."""
    import shutil
    import threading

    import torch

    samples: list[float] = []
    stop = threading.Event()
    smi = shutil.which("nvidia-smi")

    def poll() -> None:
        while not stop.is_set():
            try:
                if smi:
                    out = subprocess.run([smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-i", str(device_index)], capture_output=True, text=True, timeout=5).stdout
                    samples.append(float(out.strip().splitlines()[0]))
                else:
                    samples.append(float(torch.cuda.utilization(device_index)))
            except Exception:  # noqa: BLE001 - a missing sample only shortens the average
                pass
            stop.wait(0.1)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    return samples, (stop, thread)


def bench_gpu(work: Path, n_images: int, workers: int, batch_size: int, model_name: str, steps_synthetic: int) -> None:
    """Does the loader keep the GPU busy? A bf16 + channels_last training step fed from files / shards."""
    import torch

    from dfd.models import create_model
    from dfd.models.finetune import Full

    if not torch.cuda.is_available():
        raise SystemExit("error: --gpu needs a CUDA GPU (torch.cuda.is_available() is False); run it on a GPU "
                         "machine, or drop --gpu for the CPU loader benchmark")
    dev = torch.device("cuda")
    model = create_model(model_name).to(dev).to(memory_format=torch.channels_last)
    spec = model.input_spec
    opt = torch.optim.AdamW(Full().apply(model, lr=1e-4, weight_decay=0.05))
    model.train()

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        images = images.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(images, None).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(dev, non_blocking=True).float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    print(f"\n== GPU: {torch.cuda.get_device_name(dev)}; {model_name} at {spec.size} px, bf16 + channels_last, batch "
          f"{batch_size}; {workers} loader workers; {n_images} PNG crops at 320 px ==")
    manifest, shards = make_crop_cache(work, n_images, 320, shard_size="256MB")
    # GPU-bound ceiling: the same step on batches already on the GPU.
    x = torch.randn(batch_size, 3, spec.size, spec.size, device=dev)
    y = torch.arange(batch_size, device=dev).remainder(2)
    for _ in range(5):
        step(x, y)
    torch.cuda.synchronize()
    samples, (stop, thread) = _gpu_util_sampler(dev.index or 0)
    t0 = time.perf_counter()
    for _ in range(steps_synthetic):
        step(x, y)
    torch.cuda.synchronize()
    ceiling = steps_synthetic * batch_size / (time.perf_counter() - t0)
    stop.set()
    thread.join()
    util = sum(samples) / max(len(samples), 1)
    print(f"{'side':<22}{'images/s':>10}{'x ceiling':>11}{'GPU util %':>12}")
    print(f"{'GPU-resident batches':<22}{ceiling:>10.1f}{1.0:>10.2f}x{util:>12.0f}")
    sets = loader_sets(manifest, shards, spec, batch_size)
    sets.pop("bare decode")
    sets.pop("files, uint8 out")  # the training step below normalises nothing
    for name, ds in sets.items():
        loader_pass(ds, batch_size, workers, shuffle=True, on_batch=lambda b: step(b["image"], b["label"]))  # warm
        torch.cuda.synchronize()
        samples, (stop, thread) = _gpu_util_sampler(dev.index or 0)
        r = loader_pass(ds, batch_size, workers, shuffle=True, on_batch=lambda b: step(b["image"], b["label"]))
        torch.cuda.synchronize()
        stop.set()
        thread.join()
        util = sum(samples) / max(len(samples), 1)
        print(f"{name:<22}{r['steady']:>10.1f}{r['steady'] / ceiling:>10.2f}x{util:>12.0f}")
    print(f"(cores available: {len(os.sched_getaffinity(0))}; load average {os.getloadavg()[0]:.1f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers, the same on every side")
    ap.add_argument("--batch", type=int, default=None, help="batch size (CPU 32, --gpu 64)")
    ap.add_argument("--skip", choices=["memory", "throughput"], default=None)
    ap.add_argument("--gpu", action="store_true", help="does the loader keep a GPU busy (files vs shards)?")
    ap.add_argument("--model", default="efficientnet_b4", help="with --gpu: the registered model trained")
    ap.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--split", default="train", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        print(json.dumps(rss_child(args.rss_child, None if args.split == "all" else args.split, args.size)))
        return
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        if args.gpu:
            bench_gpu(Path(tmp) / "gpu", args.images, args.workers, args.batch or 64, args.model, 30)
            return
        if args.skip != "throughput":
            bench_throughput(Path(tmp) / "tp", args.images, args.size, args.workers, args.batch or 32)
        if args.skip != "memory":
            bench_memory(Path(tmp) / "mem", args.size)


if __name__ == "__main__":
    main()
