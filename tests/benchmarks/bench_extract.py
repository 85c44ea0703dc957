"""Face extraction throughput: dfd-extract's pipeline vs a naive loop, same videos, same cores, one run.

Naive loop (what many research repos do): cv2 reads every frame of each video in order, keeps the sampled
ones, runs MTCNN on one frame at a time at full resolution, crops and saves. dfd: decord decodes only the
sampled frames, MTCNN runs on batches (downscaled to ``detect_size`` for detection), videos run in parallel
worker processes. Both use the same crop code and settings, and the printed box IoU between the two shows
they find the same faces.

    .venv/bin/python tests/benchmarks/bench_extract.py [--videos 8 --length 90 --frames 16 --canvas 480]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dfd.data.extract import ExtractConfig, default_workers, extract_faces  # noqa: E402
from dfd.data.faces import Detections, FaceDetector, choose_face, crop_face  # noqa: E402
from dfd.data.video import sample_indices  # noqa: E402
from tests.media import box_iou, write_face_video  # noqa: E402


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (dfd's workers): load on a shared machine inflates
    wall-clock figures, CPU seconds per crop do not."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def naive(root: Path, names: list[str], out: Path, cfg: ExtractConfig) -> dict[tuple[str, int], np.ndarray]:
    """The baseline: sequential cv2 decode of every frame, per-frame MTCNN, one process."""
    from facenet_pytorch import MTCNN

    c = cfg.contract
    mtcnn = MTCNN(keep_all=True, min_face_size=c.min_face_size, select_largest=False, post_process=False)
    boxes = {}
    for name in names:
        cap = cv2.VideoCapture(str(root / name))
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        cap.release()
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in sample_indices(len(frames), c.frames):
            rgb = cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB)
            b, p, lm = mtcnn.detect(rgb, landmarks=True)
            if b is None:
                continue
            det = Detections(np.asarray(b, np.float32), np.asarray(p, np.float32), np.asarray(lm, np.float32))
            k = choose_face(det, c.choice, c.min_score)
            if k is None:
                continue
            crop, _ = crop_face(rgb, det.boxes[k], det.landmarks[k], c.margin, c.size)
            cv2.imwrite(str(out / name / f"{i:06d}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            boxes[(name, int(i))] = det.boxes[k]
    return boxes


def main() -> None:
    """Print crops/s of both pipelines and their ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--length", type=int, default=90, help="frames per video (30 fps)")
    ap.add_argument("--frames", type=int, default=16, help="frames sampled per video")
    ap.add_argument("--canvas", type=int, default=480, help="frame side in pixels")
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--detect-size", type=int, default=ExtractConfig().contract.detect_size)
    ap.add_argument("--naive-threads", type=int, default=None,
                    help="torch threads for the naive loop (default: torch's own choice, as a naive script has)")
    ap.add_argument("--full-res", action="store_true", help="also time dfd without detection downscaling")
    ap.add_argument("--min-face-size", type=int, nargs="*", default=[],
                    help="also time dfd with these MTCNN min_face_size values (shorter pyramid, faster)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = tmp / "videos"
        names = [f"{i}.mp4" for i in range(args.videos)]
        for i, name in enumerate(names):
            write_face_video(root / name, n_frames=args.length + 4 * i, size=args.canvas * 5 // 7,
                             canvas=args.canvas, fps=30)
        index = pd.DataFrame({"video_id": [n[:-4] for n in names], "label": 0, "split": "test", "method": "m",
                              "identity": "", "path": names, "kind": "video"})
        print(f"{args.videos} videos, {args.length}+ frames of {args.canvas}x{args.canvas}, {args.frames} sampled "
              f"per video; {os.cpu_count()} CPUs, dfd workers={args.workers}, detect_size={args.detect_size}")

        cfg = ExtractConfig.create(frames=args.frames, workers=args.workers, detect_size=args.detect_size)
        FaceDetector()  # warm imports for the naive loop outside its timing (in its favour)
        if args.naive_threads:
            import torch

            torch.set_num_threads(args.naive_threads)
        print(f"naive loop torch threads: {__import__('torch').get_num_threads()}")
        t, c = time.perf_counter(), cpu_seconds()
        base_boxes = naive(root, names, tmp / "naive", cfg)
        t_naive, c_naive = time.perf_counter() - t, cpu_seconds() - c
        n_naive = len(base_boxes)
        print(f"naive: {n_naive} crops in {t_naive:.1f} s wall = {n_naive / t_naive:.2f} crops/s; "
              f"{c_naive / n_naive:.3f} CPU s/crop")

        runs = [("dfd", cfg)]
        if args.full_res:
            runs.append(("dfd full-res", replace(cfg, contract=cfg.contract.replace(detect_size=None, face_px=0))))
        for mfs in args.min_face_size:
            runs.append((f"dfd min_face_size={mfs}", replace(cfg, contract=cfg.contract.replace(min_face_size=mfs))))
        for label, run_cfg in runs:
            t, c = time.perf_counter(), cpu_seconds()  # includes starting the workers and their MTCNNs
            s = extract_faces(index, root, tmp / label.replace(" ", "_"), run_cfg, progress=False)
            t_dfd, c_dfd = time.perf_counter() - t, cpu_seconds() - c
            m = pd.read_parquet(s.manifest_path)
            ious = [box_iou(b, base_boxes[(f"{v}.mp4", f)])
                    for v, f, b in zip(m.video_id, m.frame, m.bbox, strict=True) if (f"{v}.mp4", f) in base_boxes]
            n = s.frames_saved
            print(f"{label}: {n} crops in {t_dfd:.1f} s wall = {n / t_dfd:.2f} crops/s; {c_dfd / n:.3f} CPU s/crop; "
                  f"box IoU vs naive: mean {np.mean(ious):.3f}, min {np.min(ious):.3f}")
            print(f"  speed-up {label} / naive: wall {(n / t_dfd) / (n_naive / t_naive):.2f}x, "
                  f"CPU per crop {(c_naive / n_naive) / (c_dfd / n):.2f}x")


if __name__ == "__main__":
    main()
