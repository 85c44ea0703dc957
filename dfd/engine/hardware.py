"""What a run's trainer settings mean for this machine's hardware (kept light: no Lightning import)."""

from __future__ import annotations


def on_gpu(accelerator: object = "auto") -> bool:
    """Whether a Trainer with this accelerator runs on GPUs (``auto``: whether CUDA is there)."""
    acc = str(accelerator).lower()
    if acc in ("gpu", "cuda"):
        return True
    if acc == "auto":
        import torch

        return torch.cuda.is_available()
    return False
