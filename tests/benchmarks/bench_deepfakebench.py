"""DeepfakeBench crops read in place (``dataset=deepfakebench``'s prepare) vs re-cropping them with dfd-extract.

Builds a DeepfakeBench-format FF++ (``--videos`` videos x 32 crops + 81-point landmark files + its JSON with
Windows-style prefixes), then times, on the same files in one run: (a) ``prepare()``: JSON -> leak-free index ->
manifest pointing at the crops, 5 points derived from the 81; (b) ``extract_faces`` on the same index through
its crop path (decode + re-encode every crop, no detection: ``landmarks_for_crops=false``), what a user would
otherwise run. Prints seconds, crops/s and the ratio.

    .venv/bin/python tests/benchmarks/bench_deepfakebench.py [--videos 200 --size 64 --workers 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dfd.extract.config import ExtractConfig
from dfd.extract.run import extract_faces
from dfd.sources.deepfakebench import DeepfakeBench
from tests.layouts_more import LM81  # noqa: E402
from tests.media import face_image  # noqa: E402


def build(base: Path, videos: int, size: int) -> tuple[Path, Path]:
    rgb, json_dir = base / "rgb", base / "dataset_json"
    ok, png = cv2.imencode(".png", cv2.cvtColor(face_image(size), cv2.COLOR_RGB2BGR))
    frames = [f"{i:03d}.png" for i in np.linspace(0, 299, 32).astype(int)]
    tree: dict = {"FF-real": {"train": {"c23": {}}, "val": {"c23": {}}, "test": {"c23": {}}}}
    for v in range(videos):
        vid = f"{v:03d}" if v < 1000 else str(v)
        split = ("train", "train", "train", "val", "test")[v % 5]
        folder = f"FaceForensics++/original_sequences/youtube/c23/frames/{vid}"
        (rgb / folder).mkdir(parents=True, exist_ok=True)
        lm_dir = rgb / folder.replace("/frames/", "/landmarks/")
        lm_dir.mkdir(parents=True, exist_ok=True)
        for f in frames:
            (rgb / folder / f).write_bytes(png.tobytes())
            np.save(lm_dir / f.replace(".png", ".npy"), LM81)
        tree["FF-real"][split]["c23"][vid] = {
            "label": "FF-real", "frames": [f"D:\\DeepfakeBench\\datasets\\rgb\\{folder.replace('/', chr(92))}\\{f}" for f in frames]}
    json_dir.mkdir(parents=True)
    (json_dir / "FaceForensics++.json").write_text(json.dumps({"FaceForensics++": tree}))
    return rgb, json_dir


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--size", type=int, default=64, help="crop side of the fixture PNGs (DeepfakeBench: 256)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        t0 = time.perf_counter()
        rgb, json_dir = build(base, args.videos, args.size)
        print(f"built {args.videos} videos x 32 crops ({args.size} px) in {time.perf_counter() - t0:.1f} s")

        src = DeepfakeBench("db", rgb, base / "cache", json_name="FaceForensics++", json_dir=json_dir,
                            workers=8)
        t0 = time.perf_counter()
        manifest = src.prepare()
        t_prepare = time.perf_counter() - t0
        n = args.videos * 32

        index = src.build_index()
        cfg = ExtractConfig(frames=32, size=args.size, workers=args.workers, landmarks_for_crops=False)
        t0 = time.perf_counter()
        summary = extract_faces(index, rgb, base / "recrop", cfg, faces_are_cropped=True, progress=False)
        t_extract = time.perf_counter() - t0
        assert summary.frames_saved == n and manifest.is_file()
        print(f"prepare (in place, 5 of 81 landmarks): {t_prepare:7.2f} s  {n / t_prepare:9.0f} crops/s")
        print(f"dfd-extract crop path (re-encode):     {t_extract:7.2f} s  {n / t_extract:9.0f} crops/s "
              f"({args.workers} workers, no landmarks)")
        print(f"ratio: {t_extract / t_prepare:.1f}x faster in place; extra disk in place: 0 bytes of crops")


if __name__ == "__main__":
    main()
