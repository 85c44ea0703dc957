"""Quiet, honest console output for dfd-train / dfd-eval: dependencies' known noise is silenced at its source.

What is silenced, and why it is safe:

* Lightning's advertising tips (``💡 Tip: ... litlogger / litmodels``) and the ``TPU/HPU available: False``
  lines: nothing a dfd user can act on. ``GPU available: ..., used: ...`` stays: it says what ran.
* ``Loading `train_dataloader` to estimate number of stepping batches``: an internal step of the LR schedule.
* pytorch_lightning's own deprecation warning about torch's ``LeafSpec`` (raised inside Lightning, fixed by
  Lightning, not by users), and the "fewer training batches than the logging interval" tip of tiny runs.
* albumentations' "Got processor for keypoints, but no transform to process it": raised for each nested
  ``OneOf``/``Sequential`` of pixel-level transforms (blur, noise, colour: ``augment=strong``) inside dfd's
  keypoint-aware ``Compose`` (``dfd.data.transforms.Pipeline``). Pixel-level transforms leave keypoints where
  they are, which is right: the landmarks still go through every geometric transform of the outer Compose.
* W&B's "The anonymous setting has no effect" warning: Lightning's WandbLogger passes ``anonymous=None``; dfd
  drops the key before the run starts (see ``dfd.engine.build_trainer``).

Everything else (dfd's own warnings, real user warnings from Lightning, errors) still shows.
"""

from __future__ import annotations

import logging
import warnings

#: Substrings of Lightning info lines that are dropped.
LIGHTNING_NOISE = (
    "💡 Tip:",
    "TPU available:",
    "HPU available:",
    "to estimate number of stepping batches",
)
#: Regexes of dependency warnings that are dropped (message start).
WARNING_NOISE = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"Got processor for keypoints, but no transform to process it",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(s in msg for s in LIGHTNING_NOISE)


_installed = False


def quiet_dependencies() -> None:
    """Install the filters (idempotent; called at the start of every train / evaluate run)."""
    global _installed
    for pattern in WARNING_NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    if _installed:
        return
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                 "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropNoise())
    _installed = True
