"""How far float noise moves dfd's face boxes: the CPU's stand-in for "do GPU and CPU extraction agree?".

MTCNN is a cascade of thresholds, NMS and boxes rounded to pixels; small float differences can change which
candidate wins, and the per-video detection scale (``extract.face_px``) is set from one probe detection, so a
changed probe box can move a whole video to another detection size. This benchmark runs ``FaceDetector``'s
per-video detection on the same decoded frames three ways and compares each frame's chosen box with the reference
(fp32 on the CPU, oneDNN, 16 frames per MTCNN call):

* **summation order**: oneDNN off (PyTorch's own CPU convolutions) — what another CPU or thread count changes;
* **GPU-sized noise**: every convolution and linear layer's input and weights rounded to TF32 (10-bit mantissa,
  what cuDNN does to fp32 convolutions by default on Ampere and later GPUs), torchvision's GPU NMS path
  (coordinate-offset batched NMS) and 128 frames per MTCNN call, as ``extract.device=cuda`` runs them;

each under three rules for the per-video scale: version 1's (one probe, the scale as computed), rounded to 1/8
octave (``extract.scale_steps=8``), and the defaults (rounded, median of ``extract.probes=3`` probes).
Printed per setting: IoU mean / min / share of frames >= 0.95 (the GPU goal), how many videos were detected at
another size than the reference's, and how many distinct detection sizes the videos used (fewer sizes let the
batched pipeline put frames of several videos into one MTCNN call).

Videos: the astronaut (a real face) moving across 960 x 960 px H.264 frames, faces from about 110 to 190 px
tall (``--videos`` of them, 32 frames sampled each).

    .venv/bin/python tests/benchmarks/bench_detect_noise.py [--videos 16 --frames 32]
    python tests/benchmarks/bench_detect_noise.py --device cuda   # + the real GPU: dfd's path, and with cuDNN
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dfd.faces.detect import FaceDetector
from dfd.faces.track import choose_face
from dfd.store.media import read_video
from tests.media import box_iou, write_face_video  # noqa: E402

CANVAS = 960


def tf32(t: torch.Tensor) -> torch.Tensor:
    """``t`` rounded to TF32 (nearest, 10 mantissa bits), kept in float32."""
    bits = t.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def gpu_like(det: FaceDetector) -> FaceDetector:
    """Round the inputs and weights of MTCNN's convolutions and linear layers to TF32, as cuDNN's default does."""
    for m in det.mtcnn.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.weight.data = tf32(m.weight.data)
            m.register_forward_pre_hook(lambda mod, args: (tf32(args[0]), *args[1:]))
    return det


@contextlib.contextmanager
def gpu_nms() -> Iterator[None]:
    """torchvision's batched NMS as it runs on CUDA (coordinate offsets) instead of the CPU's per-image loop."""
    import facenet_pytorch.models.utils.detect_face as mtcnn_code
    from torchvision.ops.boxes import _batched_nms_coordinate_trick

    original = mtcnn_code.batched_nms
    mtcnn_code.batched_nms = _batched_nms_coordinate_trick
    try:
        yield
    finally:
        mtcnn_code.batched_nms = original


@contextlib.contextmanager
def onednn(enabled: bool) -> Iterator[None]:
    was = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = was


@contextlib.contextmanager
def cudnn_tf32_off() -> Iterator[None]:
    """MTCNN on CUDA through cuDNN with TF32 off, instead of dfd's cuDNN bypass (for the comparison), in the
    per-video path and in the batched pipeline's detection loop."""
    import dfd.extract.pipeline as pipeline
    import dfd.faces as faces

    def with_cudnn(mtcnn, batch):
        cudnn = torch.backends.cudnn
        with cudnn.flags(enabled=True, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                         allow_tf32=False):
            return mtcnn.detect(batch, landmarks=True)

    original = faces.mtcnn_detect
    faces.mtcnn_detect = pipeline.mtcnn_detect = with_cudnn
    try:
        yield
    finally:
        faces.mtcnn_detect = pipeline.mtcnn_detect = original


Result = list[tuple[int, list[np.ndarray | None]]]  # per video: detection size (px), chosen box per frame


def detect(det: FaceDetector, videos: list[list[np.ndarray]]) -> tuple[Result, float]:
    t = time.perf_counter()
    out = []
    for frames in videos:
        dets = det.detect_video(frames)
        scales = [d.scale for d in dets]
        size = round(CANVAS * max(set(scales), key=scales.count))  # most frames' (not the probe's, a fallback's)
        out.append((size, [None if (k := choose_face(d)) is None else d.boxes[k] for d in dets]))
    return out, time.perf_counter() - t


def compare(ref: Result, other: Result) -> str:
    ious = np.array([box_iou(a, b) for (_, ra), (_, rb) in zip(ref, other, strict=True)
                     for a, b in zip(ra, rb, strict=True) if a is not None and b is not None])
    moved = sum(sa != sb for (sa, _), (sb, _) in zip(ref, other, strict=True))
    lost = sum((a is None) != (b is None) for (_, ra), (_, rb) in zip(ref, other, strict=True)
               for a, b in zip(ra, rb, strict=True))
    return (f"IoU mean {ious.mean():.4f}, min {ious.min():.3f}, >= 0.95 on {np.mean(ious >= 0.95) * 100:.1f} % of "
            f"{len(ious)} frames; {moved}/{len(ref)} videos at another detection size; frames with a face in only "
            f"one: {lost}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--frames", type=int, default=32, help="frames sampled per video")
    ap.add_argument("--device", default="cpu", help="also detect on this CUDA device (cuda: the real GPU rows)")
    args = ap.parse_args()
    if args.device != "cpu" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device} needs CUDA (torch.cuda.is_available() is False)")
    with tempfile.TemporaryDirectory() as tmp:
        videos = []
        for i in range(args.videos):
            # Face side from about 110 to 190 px (photo side 520-760 px), lengths differing a little.
            size = 520 + (240 * i) // max(args.videos - 1, 1)
            path, _ = write_face_video(Path(tmp) / f"{i}.mp4", n_frames=120 + 5 * i, size=size, canvas=CANVAS, fps=30)
            videos.append(list(read_video(path, args.frames).images))
    print(f"{args.videos} videos, {CANVAS} px, {args.frames} frames each; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    rules = (("version 1 (scale_steps=0 probes=1)", {"scale_steps": 0, "probes": 1}),
             ("scale_steps=8 probes=1", {"scale_steps": 8, "probes": 1}),
             ("defaults (scale_steps=8 probes=3)", {}))
    for name, rule in rules:
        ref, secs = detect(FaceDetector(**rule), videos)
        sizes = sorted({s for s, _ in ref})
        print(f"{name}: reference {secs:.1f} s; {len(sizes)} distinct detection sizes {sizes}")
        with onednn(False):
            other, _ = detect(FaceDetector(**rule), videos)
        print(f"  summation order (oneDNN off):        {compare(ref, other)}")
        with gpu_nms():
            other, _ = detect(gpu_like(FaceDetector(batch_size=128, **rule)), videos)
        print(f"  GPU-sized noise (TF32, GPU NMS, 128): {compare(ref, other)}")
        if args.device != "cpu":
            other, secs = detect(FaceDetector(batch_size=128, device=args.device, **rule), videos)
            print(f"  {args.device}, as dfd runs it ({secs:.1f} s):   {compare(ref, other)}")
            with cudnn_tf32_off():
                other, secs = detect(FaceDetector(batch_size=128, device=args.device, **rule), videos)
            print(f"  {args.device}, cuDNN, TF32 off ({secs:.1f} s): {compare(ref, other)}")

if __name__ == "__main__":
    main()
