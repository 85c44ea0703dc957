"""Which GPU models dfd's face detection is verified on: the PASS records of ``gpu_checks.sh extract``.

Training caches are extracted on CPUs. MTCNN on a GPU gives boxes that can differ from the CPU's (float noise
through its cascade: dfd.faces.detect.mtcnn_detect), and a crop framed otherwise is another model input. So
``dfd-predict`` detects on the CPU unless told (``--detect-device cuda``), and then warns in one line unless
this GPU model has passed ``tests/benchmarks/gpu_checks.sh extract``: the batched GPU pipeline against the CPU on
the same frames, every frame's box within IoU 0.95 and no frame kept by one side only
(``bench_extract.py --gpu``).

How a PASS is recorded: ``bench_extract.py --gpu`` appends a record (GPU name, torch and CUDA versions, dfd
version, crop-contract id, frames compared, IoU) to the JSON list it is given (``--pass-file``; gpu_checks.sh
passes ``dfd/faces/gpu_passes.json`` of the checkout it runs from, and a copy in its output folder). Committing
that file ships the record with dfd: it is package data, read here. Machines that ran the check themselves can
point ``DFD_GPU_PASSES`` at their own files (``os.pathsep``-separated). ``dfd-export`` lists the models with a
record in the bundle's README.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dfd import atomic

PASSES_FILE = Path(__file__).with_name("gpu_passes.json")
ENV = "DFD_GPU_PASSES"
CHECK = "tests/benchmarks/gpu_checks.sh extract"


def read_passes(paths: Iterable[str | Path] | None = None) -> list[dict[str, Any]]:
    """Every PASS record: dfd's own file, then those ``DFD_GPU_PASSES`` names (or ``paths``). Unreadable files
    count as none (a broken record never stops predict; it only keeps the warning on)."""
    if paths is None:
        paths = [PASSES_FILE, *[p for p in os.environ.get(ENV, "").split(os.pathsep) if p]]
    out: list[dict[str, Any]] = []
    for p in paths:
        try:
            data = json.loads(Path(p).read_text())
        except (OSError, ValueError):
            continue
        out += [r for r in data if isinstance(r, dict) and r.get("gpu")] if isinstance(data, list) else []
    return out


def pass_for(gpu: str, passes: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The newest PASS record of a GPU model (its name as torch reports it, compared case-insensitively)."""
    key = gpu.strip().lower()
    found = [r for r in (read_passes() if passes is None else passes) if str(r["gpu"]).strip().lower() == key]
    return max(found, key=lambda r: str(r.get("date", ""))) if found else None


def passed_models(passes: list[dict[str, Any]] | None = None) -> list[str]:
    """The GPU models with a PASS record, sorted."""
    return sorted({str(r["gpu"]) for r in (read_passes() if passes is None else passes)})


def record_pass(path: str | Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Add ``entry`` to the JSON list at ``path`` (replacing an earlier record of the same GPU, torch and
    contract), written atomically; returns the list."""
    path = Path(path)
    records = read_passes([path]) if path.is_file() else []
    same = ("gpu", "torch", "contract_id")
    records = [r for r in records if any(r.get(k) != entry.get(k) for k in same)] + [entry]
    records.sort(key=lambda r: (str(r["gpu"]), str(r.get("date", ""))))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(records, indent=2) + "\n")
    return records


def gpu_name(device: str) -> str:
    """The model name of a CUDA device (``NVIDIA H100 80GB HBM3``)."""
    import torch

    return torch.cuda.get_device_name(torch.device(device))


def detection_warning(device: str, name: str | None = None, passes: list[dict[str, Any]] | None = None) -> str | None:
    """One line when faces are detected on a GPU model without a PASS record; None on the CPU or a passed GPU."""
    if not str(device).startswith("cuda"):
        return None
    name = name or gpu_name(device)
    if pass_for(name, passes) is not None:
        return None
    return (f"faces are detected on {name}, where `{CHECK}` has not passed yet: its boxes may differ from the "
            "CPU-extracted training crops (leave out --detect-device to detect on the CPU, the default)")
