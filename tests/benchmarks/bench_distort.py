"""DeeperForensics-1.0's distortions (dfd.store.distort): how strong each type x level is, what it does to face
detection, and what it costs.

* **PSNR** (dB) of each type x level against the clean frame, mean over scikit-image's real colour photos
  (astronaut, chelsea, coffee) at their own sizes; ``VC`` both as a whole 480p video re-encoded at the level's CRF
  (the astronaut moving across 60 frames, dfd-extract's frame-level path) and as one still I-frame (crop level).
* **Detection**: MTCNN (dfd's contract, real) on the astronaut's face (about 90 px wide, a 300 x 300 frame): IoU
  of the box on the distorted frame with the clean frame's, or "lost" when no face passes min_score.
* **Cost**: milliseconds per 1920 x 1080 frame per type, against a JPEG round trip (quality 95) of the same frame
  measured in the same run (the baseline: what extraction already does per stored crop, at frame size).

    .venv/bin/python tests/benchmarks/bench_distort.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dfd.store.distort import DF_LEVELS, DF_TYPES, Distortion, parse_chain, psnr, read_distorted  # noqa: E402
from dfd.store.media import jpeg_roundtrip, read_video  # noqa: E402
from tests.media import box_iou, face_image, write_face_video  # noqa: E402


def photos() -> dict[str, np.ndarray]:
    from skimage import data

    return {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee()}


def psnr_table() -> dict[str, list[float]]:
    out = {}
    imgs = photos()
    for t in DF_TYPES:
        out[t] = [float(np.mean([psnr(img, Distortion(f"df_{t.lower()}", lv).apply(img, name))
                                 for name, img in imgs.items()])) for lv in DF_LEVELS]
    return out


def vc_video_psnr() -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = write_face_video(Path(tmp) / "v.mp4", n_frames=60, size=400, canvas=480)
        clean = read_video(path, 8)
        out = []
        for lv in DF_LEVELS:
            dist = read_distorted("video", path, 8, parse_chain(f"VC:{lv}"), "v")
            out.append(float(np.mean([psnr(a, b) for a, b in zip(clean.images, dist.images, strict=True)])))
    return out


def detection_table() -> dict[str, list[str]]:
    from dfd.faces.detect import FaceDetector
    from dfd.faces.track import choose_face

    frame = np.ascontiguousarray(face_image(512)[0:300, 80:380])
    det = FaceDetector()
    frames = [frame] + [Distortion(f"df_{t.lower()}", lv).apply(frame, "v") for t in DF_TYPES for lv in DF_LEVELS]
    dets = det.detect_frames(frames)
    picks = [choose_face(d, "largest", det.contract.min_score) for d in dets]
    clean = dets[0].boxes[picks[0]]
    cells = ["lost" if k is None else f"{box_iou(clean, d.boxes[k]):.3f}" for d, k in zip(dets[1:], picks[1:], strict=True)]
    return {t: cells[i * len(DF_LEVELS):(i + 1) * len(DF_LEVELS)] for i, t in enumerate(DF_TYPES)}


def cost_table(repeats: int) -> tuple[float, dict[str, list[float]]]:
    import cv2

    frame = cv2.resize(face_image(512), (1920, 1080), interpolation=cv2.INTER_LINEAR)

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return 1000 * min(times)

    base = best(lambda: jpeg_roundtrip(frame, 95))
    out: dict[str, list[float]] = {}
    for t in DF_TYPES:
        out[t] = []
        for lv in DF_LEVELS:
            d = Distortion(f"df_{t.lower()}", lv)
            out[t].append(best(lambda d=d: d.apply(frame, "v")))
    return base, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    head = "| type | " + " | ".join(f"level {lv}" for lv in DF_LEVELS) + " |"
    rule = "|---|" + "---|" * len(DF_LEVELS)
    print("PSNR (dB) vs the clean frame, mean over astronaut, chelsea, coffee:")
    print(head, rule, sep="\n")
    for t, row in psnr_table().items():
        print(f"| {t} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
    print("| VC, whole 480p video (8 sampled frames of 60) | " + " | ".join(f"{v:.1f}" for v in vc_video_psnr()) + " |")
    print("\nMTCNN box IoU with the clean frame's (astronaut face ~90 px, 300 x 300 frame):")
    print(head, rule, sep="\n")
    for t, row in detection_table().items():
        print(f"| {t} | " + " | ".join(row) + " |")
    base, cost = cost_table(args.repeats)
    print(f"\nms per 1920 x 1080 frame (best of {args.repeats}); baseline JPEG round trip q95: {base:.1f} ms")
    print(head, rule, sep="\n")
    for t, row in cost.items():
        print(f"| {t} | " + " | ".join(f"{v:.1f} ({v / base:.2f}x)" for v in row) + " |")


if __name__ == "__main__":
    main()
