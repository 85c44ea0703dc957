"""What a run's trainer settings mean for this machine's hardware (kept light: no Lightning import)."""

from __future__ import annotations

import logging
import os

import torch
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def on_gpu(accelerator: object = "auto") -> bool:
    """Whether a Trainer with this accelerator runs on GPUs (``auto``: whether CUDA is there)."""
    acc = str(accelerator).lower()
    if acc in ("gpu", "cuda"):
        return True
    if acc == "auto":
        import torch

        return torch.cuda.is_available()
    return False


def cpu_threads(cfg: DictConfig) -> int | None:
    """torch's intra-op threads for this run's main process, or None to leave torch's default.

    ``threads`` in the config wins. Else, for CPU DDP (several processes on one machine, as torchrun does) and
    unless the user set ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``: the cores divided among the processes, which
    would otherwise each start one thread per core and spin-wait against each other. One process keeps torch's
    default, one thread per core: on 2 idle cores with 2 loader workers it made 5.99 steps/s against 3.76 with
    1 thread (bench_overhead.py). On a machine busy with other work, ``threads=1`` avoids spin-waiting
    (measured there under load ~6: 2.28 steps/s with 1 thread, 0.57 with 2).
    """
    if cfg.get("threads"):
        return int(cfg.threads)
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return None
    trainer = cfg.get("trainer") or {}
    if on_gpu(trainer.get("accelerator", "auto")):
        return None  # the GPU computes; the main process mostly waits
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    devices = trainer.get("devices", 1)
    processes = int(devices) if str(devices).isdigit() and int(devices) > 0 else 1  # CPU DDP: one per device
    return max(1, cores // processes) if processes > 1 else None


def set_threads(cfg: DictConfig) -> None:
    """Apply :func:`cpu_threads` (logged, so a run says how it used the CPU)."""
    n = cpu_threads(cfg)
    if n is not None and n != torch.get_num_threads():
        torch.set_num_threads(n)
        log.info("torch threads: %d (set threads=N or OMP_NUM_THREADS to choose)", n)
