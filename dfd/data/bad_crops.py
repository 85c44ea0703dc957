"""Unreadable face crops during training and evaluation: replaced or dropped, counted, capped, reported.

A 0-byte, truncated or not-an-image crop must not end a long run mid-epoch. With ``data.bad_crops=skip``
(default) the dataset replaces the sample by another readable frame of the same video (its next readable row;
the video's label, the requested row's index), or drops it when the video has none; ``fail`` stops at the first
one. Either way the crop is counted where it was requested (each row is requested once per pass, so a pass
counts each unreadable crop once), per split and label: the collate function below removes dropped samples and
puts the batch's count in ``batch["bad_crops"]`` (real, fake), and :class:`BadCropCounter` (a Lightning
callback) adds them up, stops the run in one line above ``data.max_bad_fraction`` of a split's crops, and
reports them (one line at the end, ``bad_crops`` in results.json).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import default_collate

from dfd.errors import ConfigError, UserError

log = logging.getLogger(__name__)

POLICIES = ("skip", "fail")
#: Key of a sample that stands for a dropped one (its video had no readable crop).
DROPPED = "dropped"
#: Per-sample count of the sample's own unreadable crop(s); per-batch (real, fake) counts after collation.
KEY = "bad_crops"


class BadCropError(UserError, OSError):
    """An unreadable crop with ``data.bad_crops=fail``, or more of them than ``data.max_bad_fraction`` allows."""


def check_policy(policy: str) -> str:
    policy = str(policy or "skip")
    if policy not in POLICIES:
        raise ConfigError(f"data.bad_crops={policy!r} is not valid; choose one of {', '.join(POLICIES)}")
    return policy


def dropped(label: int, index: int, bad: int = 1) -> dict:
    """The stand-in for a sample whose video has no readable crop (removed by :func:`collate`)."""
    return {DROPPED: True, "label": int(label), "index": int(index), KEY: int(bad)}


def is_dropped(sample: Any) -> bool:
    return isinstance(sample, Mapping) and bool(sample.get(DROPPED))


def first_readable(read: Callable[[int], np.ndarray], rows: Sequence[int], known_bad: set[int]
                   ) -> tuple[int, np.ndarray] | None:
    """The first of ``rows`` whose crop decodes, and its image (rows already found unreadable are skipped)."""
    for r in rows:
        r = int(r)
        if r in known_bad:
            continue
        try:
            return r, read(r)
        except OSError:
            known_bad.add(r)
    return None


def others_of(rows: np.ndarray, i: int) -> np.ndarray:
    """``rows`` (a video's, in order) without ``i``: those after it, then those before (the replacement order)."""
    rows = np.asarray(rows, np.int64)
    return np.concatenate([rows[rows > i], rows[rows < i]])


def _label(sample: Mapping) -> int:
    v = sample.get("label", 0)
    return int(v.item() if isinstance(v, torch.Tensor) else v)


def collate(batch: list, inner: Callable[[list], Any] | None = None) -> Any:
    """``inner`` (torch's default collate, or the self-blend pair collate) over the samples that were not dropped,
    with ``bad_crops`` = tensor([real, fake]) counting the batch's unreadable crops."""
    counts = [0, 0]

    def keep(sample: Any) -> bool:
        if isinstance(sample, list):  # a self-blend pair: dropped whole when one half is
            return all(keep(s) for s in sample)
        if isinstance(sample, Mapping):
            bad = sample.get(KEY, 0)
            bad = int(bad.item() if isinstance(bad, torch.Tensor) else bad)
            counts[min(max(_label(sample), 0), 1)] += bad
            return not is_dropped(sample)
        return True

    def strip(sample: Any) -> Any:
        if isinstance(sample, list):
            return [strip(s) for s in sample]
        return {k: v for k, v in sample.items() if k != KEY} if isinstance(sample, Mapping) else sample

    kept = [strip(s) for s in batch if keep(s)]
    bad = torch.tensor(counts, dtype=torch.int64)
    if not kept:  # every sample of the batch dropped: an empty batch the steps skip
        return {"image": torch.zeros(0), "label": torch.zeros(0), KEY: bad}
    out = (inner or default_collate)(kept)
    if isinstance(out, dict):
        out[KEY] = bad
    return out


def empty(batch: Mapping) -> bool:
    """A batch whose samples were all dropped (steps skip it)."""
    label = batch.get("label") if isinstance(batch, Mapping) else None
    return isinstance(label, torch.Tensor) and label.numel() == 0


class BadCropCounter(pl.Callback):
    """Counts unreadable crops per split and label from the batches, stops above the cap, reports them.

    Args:
        max_fraction: a split whose unreadable crops exceed this share of its crops stops the run in one line
            (naming the command that lists them).
    """

    def __init__(self, max_fraction: float = 0.001) -> None:
        if not 0 <= float(max_fraction) <= 1:
            raise ConfigError(f"data.max_bad_fraction={max_fraction} must be between 0 and 1")
        self.max_fraction = float(max_fraction)
        self.passes: dict[str, list[int]] = {}  # the running pass of each split: [real, fake]
        self.totals: dict[str, list[int]] = {}  # the largest pass of each split (a pass counts each crop once)

    # -- hooks ----------------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start("train")

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start("val")

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for name in self._test_names(trainer):
            self._start(f"test/{name}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self._add(trainer, "train", batch, "train")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        self._add(trainer, "val", batch, "val")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        names = self._test_names(trainer)
        name = names[dataloader_idx] if dataloader_idx < len(names) else str(dataloader_idx)
        self._add(trainer, f"test/{name}", batch, name)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end("train")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end("val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for name in self._test_names(trainer):
            self._end(f"test/{name}")

    # -- counting -------------------------------------------------------------------------------------
    def _start(self, split: str) -> None:
        self.passes[split] = [0, 0]

    def _end(self, split: str) -> None:
        run = self.passes.pop(split, None)
        if run is not None:
            best = self.totals.setdefault(split, [0, 0])
            if sum(run) >= sum(best):
                self.totals[split] = run

    @staticmethod
    def _test_names(trainer: pl.Trainer) -> list[str]:
        dm = getattr(trainer, "datamodule", None)
        return list(getattr(dm, "test_names", []) or [])

    def _add(self, trainer: pl.Trainer, split: str, batch: Any, which: str) -> None:
        bad = batch.get(KEY) if isinstance(batch, Mapping) else None
        if bad is None:
            return
        run = self.passes.setdefault(split, [0, 0])
        run[0] += int(bad[0])
        run[1] += int(bad[1])
        if sum(run) and self.max_fraction < 1:
            self._check(trainer, split, run, which)

    def _check(self, trainer: pl.Trainer, split: str, run: list[int], which: str) -> None:
        dm = getattr(trainer, "datamodule", None)
        ds = (getattr(dm, "train_ds", None) if which == "train" else getattr(dm, "val_ds", None) if which == "val"
              else (getattr(dm, "test_ds", None) or {}).get(which))
        n = len(ds) if ds is not None and hasattr(ds, "__len__") else 0
        if n and sum(run) > self.max_fraction * n:
            hint = getattr(dm, "verify_hint", lambda _w: "")(which) if dm is not None else ""
            raise BadCropError(
                f"{sum(run)} of {n} {split} crops are unreadable so far ({run[0]} real / {run[1]} fake; above "
                f"data.max_bad_fraction={self.max_fraction:g}): list them with `{hint or 'dfd-extract ... --verify'}`, "
                "re-extract or restore them, or raise data.max_bad_fraction"
            )

    # -- report ---------------------------------------------------------------------------------------
    def record(self) -> dict[str, dict[str, int]]:
        """``{split: {"real": n, "fake": m}}`` (``test/<name>`` for test sets): what results.json holds."""
        out = {s: {"real": c[0], "fake": c[1]} for s, c in {**self.totals, **self.passes}.items()}
        return dict(sorted(out.items(), key=lambda kv: ({"train": 0, "val": 1}.get(kv[0], 2), kv[0])))

    def summary(self, hint: Callable[[str], str] | None = None) -> str | None:
        """One line when any crop was unreadable, else None. ``hint(split or test-set name)``: the command that
        lists them (the DataModule's ``verify_hint``)."""
        rec = {s: c for s, c in self.record().items() if c["real"] or c["fake"]}
        if not rec:
            return None
        parts = ", ".join(f"{s} {c['real'] + c['fake']} ({c['real']} real / {c['fake']} fake)" for s, c in rec.items())
        first = next(iter(rec)).removeprefix("test/")
        command = (hint(first) if hint is not None else "") or "dfd-extract dataset=<name> ... --verify"
        return (f"unreadable face crops: {parts}; each was replaced by another frame of its video, or dropped when "
                f"its video had none (data.bad_crops=skip); `{command}` lists them")


def counter_of(trainer: pl.Trainer) -> BadCropCounter | None:
    """The trainer's unreadable-crop counter (dfd.engine.build.build_trainer adds one)."""
    return next((c for c in getattr(trainer, "callbacks", []) if isinstance(c, BadCropCounter)), None)
