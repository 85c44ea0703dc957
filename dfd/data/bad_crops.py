"""Unreadable face crops during training and evaluation: replaced or dropped, counted, capped, reported.

A 0-byte, truncated or not-an-image crop must not end a long run mid-epoch. With ``data.bad_crops=skip``
(default) the dataset replaces the sample by another readable frame of the same video (its next readable row;
the video's label, the requested row's index), or drops it when the video has none; ``fail`` stops at the first
one. Either way the crop is counted where it was requested (each row is requested once per pass, so a pass
counts each unreadable crop once), per split and label: the collate function below removes dropped samples and
puts the batch's count in ``batch["bad_crops"]`` (real, fake), and :class:`dfd.engine.bad_crops.BadCropCounter`
(a Lightning callback) adds them up, stops the run in one line above ``data.max_bad_fraction`` of a split's
crops, and reports them (one line at the end, ``bad_crops`` in results.json).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from dfd.errors import ConfigError, UserError

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
