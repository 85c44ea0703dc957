"""Counting unreadable crops during a run (dfd.data.bad_crops replaces or drops them): per split and label,
capped by ``data.max_bad_fraction``, reported in one line and in results.json (``bad_crops``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl

from dfd.data.bad_crops import KEY, BadCropError
from dfd.errors import ConfigError


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
