"""Benchmark training steps per backbone: CPU images/s at each preset's native size, and GPU precision modes.

1. CPU (default): one AdamW training step (full fine-tuning, BCE loss) per backbone at its native input size,
   batch 2, a few timed steps after a warm-up; images/s (ADDNet-3D: clips/s and frames/s), as a ratio of plain
   Xception measured in the same run (so ADDNet-2D's row is the cost of the masks).
2. ``--gpu`` (CUDA only: stops with a one-line error without a GPU): EfficientNet-B4, ViT-B/16 and CLIP
   ViT-L/14 (timm ``vit_large_patch14_clip_224``, random weights: speed only), fp32 with PyTorch's default TF32
   settings (matmul TF32 off, cuDNN convolutions TF32 on, as a user gets them) against bf16 autocast +
   channels_last, and + torch.compile, in one run; images/s and the ratio to fp32.

Run: ``.venv/bin/python tests/benchmarks/bench_models.py [--steps 3] [--batch 2]``
     ``.venv/bin/python tests/benchmarks/bench_models.py --gpu [--batch 32] [--steps 20]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import torch

from dfd.models import Detector, create_model
from dfd.models.finetune import Full

CPU_MODELS = ["xception", "addnet2d", "efficientnet_b4", "convnextv2", "vit_b16", "addnet3d"]
# (label, create_model name, kwargs): the backbones the GPU comparison covers.
GPU_MODELS = [
    ("efficientnet_b4", "efficientnet_b4", {}),
    ("vit_b16", "vit_b16", {}),
    ("clip_vit_l14", "timm", {"arch": "vit_large_patch14_clip_224", "img_size": 224, "pretrained": False}),
]


def inputs(model: Detector, batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random normalised images (or clips) at the model's input size, with face landmarks when it needs them."""
    spec = model.input_spec
    shape = (batch, spec.clip_len, 3, spec.size, spec.size) if spec.clip_len else (batch, 3, spec.size, spec.size)
    images = torch.randn(shape, device=device)
    if not model.needs_landmarks:
        return images, None
    face = torch.tensor([[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.38, 0.72], [0.62, 0.72]], device=device)
    return images, (face * spec.size).expand(*shape[:-3], 5, 2).contiguous()


def steps_per_second(
    model: Detector, batch: int, steps: int, warmup: int, device: str,
    amp: torch.dtype | None = None, channels_last: bool = False, compile_: bool = False,
) -> float:
    """Timed AdamW training steps per second (after `warmup` untimed ones)."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(Full().apply(model, lr=1e-4, weight_decay=0.05))
    forward = torch.compile(model) if compile_ else model
    images, landmarks = inputs(model, batch, device)
    if channels_last and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    target = torch.arange(batch, device=device).remainder(2).float()
    model.train()

    def step() -> None:
        ctx = torch.autocast(device_type=device.split(":")[0], dtype=amp) if amp else contextlib.nullcontext()
        with ctx:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(forward(images, landmarks).float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def cpu_table(batch: int, steps: int, names: list[str]) -> None:
    """Images/s per backbone at its native size, relative to Xception."""
    print(f"CPU training step, batch {batch}, {steps} timed steps after 1 warm-up; torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':<16}{'size':>6}{'params (M)':>12}{'images/s':>10}{'x xception':>12}{'s/step':>8}")
    base = None
    for name in names:
        torch.manual_seed(0)
        model = create_model(name)
        sps = steps_per_second(model, batch, steps, 1, "cpu")
        frames = model.input_spec.clip_len or 1
        ips = sps * batch * frames
        base = base or (ips if name == "xception" else None)
        ratio = f"{ips / base:.2f}x" if base else "-"
        extra = f"  ({sps * batch:.2f} clips/s of {frames} frames)" if frames > 1 else ""
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:<16}{model.input_spec.size:>6}{params:>12.1f}{ips:>10.2f}{ratio:>12}{1 / sps:>8.2f}{extra}")


def gpu_table(batch: int, steps: int, device: str, compile_: bool, only: list[str] | None = None) -> None:
    """fp32 (default TF32 settings) against bf16 + channels_last (+ torch.compile) per GPU backbone."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit("error: --gpu needs a CUDA GPU (torch.cuda.is_available() is False); run it on a GPU "
                             "machine, or pass --device cpu to run the same code slowly on the CPU")
        # PyTorch's defaults, stated rather than changed: what a user's fp32 run gets.
        print(f"GPU: {torch.cuda.get_device_name(device)}; batch {batch}, {steps} timed steps; fp32 with PyTorch's "
              f"default TF32 settings (matmul {torch.backends.cuda.matmul.allow_tf32}, "
              f"cuDNN {torch.backends.cudnn.allow_tf32}); torch {torch.__version__}")
    modes = [("fp32", None, False, False), ("bf16 + channels_last", torch.bfloat16, True, False)]
    if compile_:
        modes.append(("bf16 + channels_last + compile", torch.bfloat16, True, True))
    print(f"{'model':<16}{'size':>6}{'mode':<34}{'images/s':>10}{'x fp32':>8}")
    for label, name, kwargs in GPU_MODELS:
        if only and label not in only:
            continue
        base = None
        for mode, amp, cl, comp in modes:
            torch.manual_seed(0)
            model = create_model(name, **kwargs)
            ips = steps_per_second(model, batch, steps, 10 if comp else 3, device, amp, cl, comp) * batch
            base = base or ips
            print(f"{label:<16}{model.input_spec.size:>6}  {mode:<32}{ips:>10.1f}{ips / base:>7.2f}x", flush=True)
            del model
            if device.startswith("cuda"):
                torch.cuda.empty_cache()


def main() -> None:
    """Parse flags and print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="precision/layout/compile comparison on the GPU")
    ap.add_argument("--device", default="cuda", help="with --gpu: the device (cpu runs the same code slowly)")
    ap.add_argument("--no-compile", action="store_true", help="with --gpu: skip the torch.compile row")
    ap.add_argument("--batch", type=int, default=None, help="batch size (CPU 2, GPU 32)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (CPU 3, GPU 20)")
    ap.add_argument("--models", nargs="*", default=None,
                    help=f"CPU: registered model names (default {CPU_MODELS}); --gpu: a subset of "
                         f"{[m[0] for m in GPU_MODELS]}")
    args = ap.parse_args()
    if args.gpu:
        gpu_table(args.batch or 32, args.steps or 20, args.device, not args.no_compile, args.models)
    else:
        cpu_table(args.batch or 2, args.steps or 3, args.models or CPU_MODELS)


if __name__ == "__main__":
    main()
