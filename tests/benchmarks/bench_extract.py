"""Face extraction throughput: dfd-extract vs two baselines, same videos, cores and threads, one run.

Videos: the astronaut (a real face) moving across 960 x 960 px H.264 frames, ``--length`` frames at 30 fps;
``--frames`` (32) sampled per video with dfd's rule (``linspace``), every pipeline the same ones.

* **DeepfakeBench-style loop** (its ``preprocessing/preprocess.py``, with MTCNN in place of dlib): cv2 reads
  *every* frame of a video in order, the sampled ones are detected one frame at a time at full resolution, the
  largest face is cropped (same crop code) and written as PNG; videos run on a ``ThreadPoolExecutor`` with
  ``os.cpu_count()`` threads; torch keeps its default intra-op threads, as the script does.
* **Tuned per-frame loop**: what a careful script does without dfd's batching and per-video scale: decord seeks
  only the sampled frames, MTCNN runs one frame at a time at the same detection resolution as dfd
  (``detect_size``), same crop and PNG; the same worker processes as dfd (spawned, 1 torch thread each).
* **dfd**: ``extract_faces`` with its defaults (batched MTCNN per video, frames shrunk to each video's face size
  with a full-resolution fallback, resumable part files), ``--workers`` workers (threads: ``extract.parallel=auto``);
  and **dfd-near**, dfd searching each frame first near the face of a neighbouring frame (``search_roi=3``, opt-in,
  contract version 4);
  **dfd-processes**, dfd with spawned worker processes (``extract.parallel=processes``: each imports torch and
  torchvision); **dfd-640**, dfd at the tuned loop's detection resolution (``face_px=0``), which separates what
  batching and the pipeline gain from what the per-video detection scale gains (and costs in box agreement); and
  **dfd-v1**, dfd with version 1's per-video scale (one probe, not rounded), the cost of the three probes.

Every pipeline's time includes starting its workers. Printed: crops/s (wall), CPU s per crop (this process and
its workers), dfd's ratio to each baseline, and box agreement (IoU of dfd's box with each baseline's on the
same frame). Note ``uptime`` before and after: on a shared machine, rerun when the load is low.

    .venv/bin/python tests/benchmarks/bench_extract.py --videos 4 --length 450 --workers 2   # issue 28's command
    .venv/bin/python tests/benchmarks/bench_extract.py [--videos 16 --length 300 --frames 32 --workers 2]
    .venv/bin/python tests/benchmarks/bench_extract.py --gpu [--videos 32 --workers 16]   # needs CUDA

``--gpu``: dfd with ``extract.device=cuda`` (the batched pipeline: workers decode — on the GPU's NVDEC when
PyNvVideoCodec is installed, ``pip install "dfd[gpu]"``, else on the CPU — and crop; one detection loop batches
frames and near-the-face regions of several videos on the GPU) against dfd's CPU path on the same videos:
crops/s, box IoU per frame (goal: every frame >= 0.95), how full the GPU's MTCNN calls were, how busy the
detector was, and the decoder used; with NVDEC also the largest pixel difference of its frames from decord's.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dfd.extract.config import ExtractConfig
from dfd.extract.run import default_workers, extract_faces
from dfd.faces.boxes import Detections
from dfd.faces.contract import CropContract, sample_indices
from dfd.faces.geometry import crop_face
from dfd.faces.track import choose_face
from tests.media import box_iou, write_face_video  # noqa: E402

Boxes = dict[tuple[str, int], np.ndarray]


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and its reaped children (worker processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _mtcnn(c: CropContract, device: str = "cpu"):
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, min_face_size=c.min_face_size, thresholds=list(c.thresholds), select_largest=False,
                 post_process=False, device=device)


def _keep(rgb: np.ndarray, b, p, lm, scale: float, c: CropContract, out: Path, vid: str, number: int) -> np.ndarray | None:
    """Choose the face like dfd, crop it with dfd's crop code, write the PNG; the box in frame pixels."""
    if b is None:
        return None
    det = Detections(np.asarray(b, np.float32) / scale, np.asarray(p, np.float32),
                     np.asarray(lm, np.float32) / scale)
    k = choose_face(det, c.choice, c.min_score)
    if k is None:
        return None
    crop, _ = crop_face(rgb, det.boxes[k], det.landmarks[k], c.margin, c.size)
    (out / vid).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / vid / f"{number:06d}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    return det.boxes[k]


# ----------------------------------------------------------------------------------------------- baseline 1


def deepfakebench_video(args: tuple) -> Boxes:
    """One video as DeepfakeBench's loop does it: read every frame with cv2, detect the sampled ones."""
    mtcnn, root, name, out, c = args
    cap = cv2.VideoCapture(str(root / name))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    boxes = {}
    for i in sample_indices(len(frames), c.frames):
        rgb = cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB)
        b, p, lm = mtcnn.detect(rgb, landmarks=True)
        box = _keep(rgb, b, p, lm, 1.0, c, out, name[:-4], int(i))
        if box is not None:
            boxes[(name[:-4], int(i))] = box
    return boxes


def deepfakebench(root: Path, names: list[str], out: Path, c: CropContract) -> Boxes:
    mtcnn = _mtcnn(c)  # one detector shared by the threads, as in the original script
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        parts = pool.map(deepfakebench_video, [(mtcnn, root, n, out, c) for n in names])
        return {k: v for part in parts for k, v in part.items()}


# ----------------------------------------------------------------------------------------------- baseline 2

_TUNED = {}


def _tuned_init(c: CropContract) -> None:
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _TUNED["mtcnn"] = _mtcnn(c)


def tuned_video(args: tuple) -> Boxes:
    """One video: decord seeks the sampled frames; MTCNN per frame at ``detect_size``."""
    import decord

    root, name, out, c = args
    mtcnn = _TUNED["mtcnn"]
    vr = decord.VideoReader(str(root / name), ctx=decord.cpu(0), num_threads=1)
    idx = sample_indices(len(vr), c.frames)
    frames = vr.get_batch(idx.tolist()).asnumpy()
    boxes = {}
    for i, rgb in zip(idx, frames, strict=True):
        scale = min(1.0, c.detect_size / max(rgb.shape[:2])) if c.detect_size else 1.0
        small = rgb if scale == 1.0 else cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)),
                                                     interpolation=cv2.INTER_AREA)
        b, p, lm = mtcnn.detect(small, landmarks=True)
        box = _keep(rgb, b, p, lm, scale, c, out, name[:-4], int(i))
        if box is not None:
            boxes[(name[:-4], int(i))] = box
    return boxes


def tuned(root: Path, names: list[str], out: Path, c: CropContract, workers: int) -> Boxes:
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_tuned_init,
                             initargs=(c,)) as pool:
        parts = pool.map(tuned_video, [(root, n, out, c) for n in names])
        return {k: v for part in parts for k, v in part.items()}


# ----------------------------------------------------------------------------------------------- dfd


def dfd(index: pd.DataFrame, root: Path, cache: Path, cfg: ExtractConfig) -> tuple[Boxes, object]:
    s = extract_faces(index, root, cache, cfg, progress=False)
    m = pd.read_parquet(s.manifest_path)
    boxes = {(v, int(f)): np.asarray(b, np.float32) for v, f, b in zip(m.video_id, m.frame, m.bbox, strict=True)}
    return boxes, s


def agreement(a: Boxes, b: Boxes, names: tuple[str, str] = ("dfd", "baseline")) -> str:
    ious = np.array([box_iou(a[k], b[k]) for k in a if k in b])
    if not len(ious):
        return "no common frames"
    return (f"mean {ious.mean():.3f}, min {ious.min():.3f}, >= 0.95 on {np.mean(ious >= 0.95) * 100:.0f} % of "
            f"{len(ious)} common frames ({names[0]} {len(a)} crops, {names[1]} {len(b)})")


def timed(fn, *args):
    t, c = time.perf_counter(), cpu_seconds()
    out = fn(*args)
    return out, time.perf_counter() - t, cpu_seconds() - c


def make_videos(root: Path, n: int, length: int, canvas: int) -> tuple[list[str], pd.DataFrame]:
    names = [f"{i}.mp4" for i in range(n)]
    for i, name in enumerate(names):
        # Face about 120 px tall in 960 px frames, as in FF++ c23 at 1080p scaled; lengths differ a little.
        write_face_video(root / name, n_frames=length + 7 * i, size=canvas * 5 // 7, canvas=canvas, fps=30)
    index = pd.DataFrame({"video_id": [n[:-4] for n in names], "label": [i % 2 for i in range(n)], "split": "test",
                          "method": "m", "identity": "", "path": names, "kind": "video"})
    return names, index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--length", type=int, default=300, help="frames per video (30 fps); video i has 7*i more")
    ap.add_argument("--frames", type=int, default=32, help="frames sampled per video")
    ap.add_argument("--canvas", type=int, default=960, help="frame side in pixels")
    ap.add_argument("--workers", type=int, default=default_workers(), help="dfd's and the tuned loop's processes")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["deepfakebench", "tuned", "dfd-near", "dfd-processes", "dfd-640", "dfd-v1"],
                    help="runs to skip (dfd-640: dfd at the tuned loop's detection resolution, face_px=0)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extract settings of dfd's run (e.g. scale_steps=0 probes=1)")
    ap.add_argument("--gpu", action="store_true", help="dfd on CUDA (batched pipeline) vs dfd on the CPU")
    ap.add_argument("--gpu-batch", type=int, default=128, help="frames per MTCNN call on the GPU")
    ap.add_argument("--gpu-device", default="cuda", help="device of --gpu's batched run (cpu: a dry run of the script)")
    ap.add_argument("--pass-file", nargs="*", default=[], metavar="JSON",
                    help="--gpu: on PASS, record this GPU model in these JSON lists (dfd.faces.gpu_passes; gpu_checks.sh "
                         "gives dfd/faces/gpu_passes.json, which dfd-predict and dfd-export read once committed)")
    args = ap.parse_args()
    if args.gpu and args.gpu_device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("error: --gpu needs CUDA (torch.cuda.is_available() is False); run on a GPU machine")

    print(f"before: {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = tmp / "videos"
        names, index = make_videos(root, args.videos, args.length, args.canvas)
        extra = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
        cfg = ExtractConfig.create(frames=args.frames, workers=args.workers, **extra)
        c = cfg.contract
        import torch

        print(f"{args.videos} videos of {args.length}-{args.length + 7 * (args.videos - 1)} frames, "
              f"{args.canvas}x{args.canvas} px H.264, {args.frames} sampled per video; {os.cpu_count()} CPUs "
              f"(affinity {len(os.sched_getaffinity(0))}); torch {torch.__version__}, {torch.get_num_threads()} "
              f"intra-op threads by default")
        if args.gpu:
            return gpu(args, tmp, root, index, cfg)

        _mtcnn(c)  # import and load weights once outside every timing
        runs: dict[str, tuple[Boxes, float, float]] = {}
        (boxes, s), wall, cpu = timed(dfd, index, root, tmp / "dfd", cfg)
        runs["dfd"] = (boxes, wall, cpu)
        print(f"dfd ({args.workers} {'threads' if cfg.threads(args.workers) else 'processes'} x 1 torch thread, "
              f"detect_size={c.detect_size}, face_px={c.face_px}, search_roi={c.search_roi:g}): "
              f"{len(boxes)} crops in {wall:.1f} s = {len(boxes) / wall:.2f} crops/s, {cpu / len(boxes):.3f} CPU s/crop")
        if "dfd-near" not in args.skip:
            near = ExtractConfig.create(frames=args.frames, workers=args.workers, **{**extra, "search_roi": 3.0})
            (boxes, _), wall, cpu = timed(dfd, index, root, tmp / "dfdnear", near)
            runs["dfd-near"] = (boxes, wall, cpu)
            print(f"dfd searching each frame near its neighbour's face first (search_roi=3, opt-in): {len(boxes)} "
                  f"crops in {wall:.1f} s = {len(boxes) / wall:.2f} crops/s, {cpu / len(boxes):.3f} CPU s/crop")
        if "dfd-processes" not in args.skip:
            procs = ExtractConfig.create(frames=args.frames, workers=args.workers, parallel="processes", **extra)
            (boxes, _), wall, cpu = timed(dfd, index, root, tmp / "dfdprocs", procs)
            runs["dfd-processes"] = (boxes, wall, cpu)
            print(f"dfd with {args.workers} spawned worker processes (extract.parallel=processes): {len(boxes)} crops "
                  f"in {wall:.1f} s = {len(boxes) / wall:.2f} crops/s, {cpu / len(boxes):.3f} CPU s/crop")
        if "dfd-640" not in args.skip:
            same = ExtractConfig.create(frames=args.frames, workers=args.workers, face_px=0)
            (boxes, _), wall, cpu = timed(dfd, index, root, tmp / "dfd640", same)
            runs["dfd-640"] = (boxes, wall, cpu)
            print(f"dfd at {c.detect_size} px (face_px=0: the tuned loop's detection resolution): {len(boxes)} crops in "
                  f"{wall:.1f} s = {len(boxes) / wall:.2f} crops/s, {cpu / len(boxes):.3f} CPU s/crop")
        if "dfd-v1" not in args.skip:
            v1 = ExtractConfig.create(frames=args.frames, workers=args.workers, scale_steps=0, probes=1)
            (boxes, _), wall, cpu = timed(dfd, index, root, tmp / "dfdv1", v1)
            runs["dfd-v1"] = (boxes, wall, cpu)
            print(f"dfd with version 1's per-video scale (one probe, not rounded: scale_steps=0 probes=1): "
                  f"{len(boxes)} crops in {wall:.1f} s = {len(boxes) / wall:.2f} crops/s, {cpu / len(boxes):.3f} CPU s/crop")
        if "tuned" not in args.skip:
            boxes, wall, cpu = timed(tuned, root, names, tmp / "tuned", c, args.workers)
            runs["tuned"] = (boxes, wall, cpu)
            print(f"tuned per-frame loop ({args.workers} processes x 1 thread, decord seeks, MTCNN per frame at "
                  f"{c.detect_size} px): {len(boxes)} crops in {wall:.1f} s = {len(boxes) / wall:.2f} crops/s, "
                  f"{cpu / len(boxes):.3f} CPU s/crop")
        if "deepfakebench" not in args.skip:
            boxes, wall, cpu = timed(deepfakebench, root, names, tmp / "dfb", c)
            runs["deepfakebench"] = (boxes, wall, cpu)
            print(f"DeepfakeBench-style loop ({os.cpu_count()} threads, cv2 reads every frame, MTCNN per frame at "
                  f"full resolution): {len(boxes)} crops in {wall:.1f} s = {len(boxes) / wall:.2f} crops/s, "
                  f"{cpu / len(boxes):.3f} CPU s/crop")
        for mine, base in (("dfd", "deepfakebench"), ("dfd", "tuned"), ("dfd-near", "dfd"), ("dfd", "dfd-processes"),
                           ("dfd-near", "deepfakebench"), ("dfd-near", "tuned"), ("dfd", "dfd-v1"),
                           ("dfd-640", "tuned"), ("dfd-640", "deepfakebench"), ("tuned", "deepfakebench")):
            if mine not in runs or base not in runs:
                continue
            (d_boxes, d_wall, d_cpu), (b_boxes, b_wall, b_cpu) = runs[mine], runs[base]
            print(f"{mine} / {base}: crops/s {(len(d_boxes) / d_wall) / (len(b_boxes) / b_wall):.2f}x, CPU per crop "
                  f"{(b_cpu / len(b_boxes)) / (d_cpu / len(d_boxes)):.2f}x less; box IoU "
                  f"{agreement(d_boxes, b_boxes, (mine, base))}")
    print(f"after: {load()}")


def gpu(args, tmp: Path, root: Path, index: pd.DataFrame, cfg: ExtractConfig) -> None:
    from dataclasses import replace

    cpu_cfg = replace(cfg, pipeline="video")
    gpu_cfg = replace(cfg, device=args.gpu_device, pipeline="batched", batch_size=args.gpu_batch)
    (c_boxes, _), c_wall, _ = timed(dfd, index, root, tmp / "cpu", cpu_cfg)
    print(f"dfd CPU ({args.workers} workers, per-video MTCNN): {len(c_boxes)} crops in {c_wall:.1f} s = "
          f"{len(c_boxes) / c_wall:.2f} crops/s")
    (g_boxes, s), g_wall, _ = timed(dfd, index, root, tmp / "gpu", gpu_cfg)
    decoder = gpu_cfg.resolve(False).decoder
    print(f"dfd GPU ({args.workers} CPU workers, decoding on {decoder}, batched MTCNN on {args.gpu_device}, "
          f"<= {args.gpu_batch} frames per call): {len(g_boxes)} crops in {g_wall:.1f} s = "
          f"{len(g_boxes) / g_wall:.2f} crops/s")
    if decoder == "nvdec":
        from dfd.store.media import read_video

        first = root / index["path"].iloc[0]
        a, b = read_video(first, args.frames), read_video(first, args.frames, decoder="nvdec", device=args.gpu_device)
        diff = max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a.images, b.images, strict=True))
        print(f"  NVDEC frames vs decord's on {first.name}: largest pixel difference {diff} grey levels")
    else:
        from dfd.store.media import nvdec_problem

        print(f"  decoded on the CPU: {nvdec_problem(args.gpu_device)}")
    from dfd.extract.pipeline import describe_stats

    print(f"  {describe_stats(s.pipeline)}")
    print(f"dfd GPU / dfd CPU: crops/s {(len(g_boxes) / g_wall) / (len(c_boxes) / c_wall):.2f}x")
    if _verdict("GPU", g_boxes, c_boxes):
        _record(args, cfg, g_boxes, c_boxes)
    if args.gpu_device.startswith("cuda"):
        # dfd bypasses cuDNN for MTCNN (dfd.faces.detect.mtcnn_detect); the same run with cuDNN (TF32 off) shows
        # what that costs and what it buys in agreement.
        from tests.benchmarks.bench_detect_noise import cudnn_tf32_off

        with cudnn_tf32_off():
            (n_boxes, s), n_wall, _ = timed(dfd, index, root, tmp / "gpu-cudnn", gpu_cfg)
        print(f"dfd GPU with cuDNN (TF32 off) for MTCNN: {len(n_boxes) / n_wall:.2f} crops/s "
              f"({(len(n_boxes) / n_wall) / (len(g_boxes) / g_wall):.2f}x dfd's GPU path); {describe_stats(s.pipeline)}")
        _verdict("GPU with cuDNN", n_boxes, c_boxes)
    print(f"after: {load()}")


def _verdict(name: str, boxes: Boxes, cpu: Boxes) -> bool:
    ious = [box_iou(boxes[k], cpu[k]) for k in cpu if k in boxes]
    missing = len(set(cpu) ^ set(boxes))
    ok = bool(ious) and min(ious) >= 0.95 and not missing
    print(f"box IoU {name} vs CPU on the same frames: {agreement(boxes, cpu, (name, 'CPU'))}; frames kept by "
          f"only one: {missing} -> {'PASS' if ok else 'FAIL'} (goal: every frame >= 0.95)")
    return ok


def _record(args, cfg: ExtractConfig, boxes: Boxes, cpu: Boxes) -> None:
    """A PASS of dfd's GPU path (cuDNN bypassed) for this GPU model, into each --pass-file (dfd.faces.gpu_passes)."""
    import datetime

    import torch

    import dfd
    from dfd.faces.gpu_passes import CHECK, record_pass

    if not args.gpu_device.startswith("cuda"):
        print("dry run on the CPU: no PASS recorded")
        return
    ious = [box_iou(boxes[k], cpu[k]) for k in cpu if k in boxes]
    entry = {"gpu": torch.cuda.get_device_name(torch.device(args.gpu_device)), "check": CHECK,
             "date": datetime.date.today().isoformat(), "torch": torch.__version__, "cuda": torch.version.cuda,
             "dfd": dfd.__version__, "contract_id": cfg.contract.fingerprint(), "videos": args.videos,
             "frames": len(ious), "min_iou": round(float(min(ious)), 4), "mean_iou": round(float(np.mean(ious)), 4)}
    for path in args.pass_file:
        record_pass(path, entry)
        print(f"PASS recorded for {entry['gpu']} in {path}")


if __name__ == "__main__":
    main()
