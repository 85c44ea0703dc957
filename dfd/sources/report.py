"""What ``dfd-index`` says about a partial dataset: found vs listed per label and method, empty methods, skips.

Downloads are often partial (a method's folder gone, frames missing). Sources record what they skipped in
``self.skipped``: :class:`Skip` (path, reason, method, label), or the older ``(path, reason)`` pairs; DeepfakeBench
also counts frames its JSON lists that are not on disk (``self.frames_missing``). :func:`index_report` turns
them into lines: the found/listed counts, one warning per method or label with nothing found (naming the folder
it looked in), and each skip reason once, with an example that names method, label and path.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from typing import NamedTuple

import pandas as pd


class Skip(NamedTuple):
    """A listed (or found) video that is not in the index, and why."""

    path: str  # where it was looked for (relative to the dataset's root, or absolute)
    reason: str
    method: str = ""
    label: int | None = None


def as_skips(items: Iterable) -> list[Skip]:
    """``self.skipped`` entries as :class:`Skip` (older sources record ``(path, reason)`` pairs)."""
    out = []
    for s in items or ():
        if isinstance(s, str):  # sources that record a line per skip (their notes say why)
            out.append(Skip(s, "not indexed"))
        else:
            out.append(s if isinstance(s, Skip) else Skip(str(s[0]), str(s[1])) if len(s) == 2 else Skip(*s))
    return out


def _label(label: int | None) -> str:
    return "" if label is None else "fake" if int(label) else "real"


def _example(s: Skip) -> str:
    who = " ".join(x for x in (s.method, f"({_label(s.label)})" if s.label is not None else "") if x)
    return f"{who} {s.path}" if who else s.path


def index_report(df: pd.DataFrame, skipped: Iterable = (), frames_missing: Iterable = (), root: str | None = None
                 ) -> tuple[list[str], list[str]]:
    """(lines, warnings) for ``dfd-index``: found vs listed per label and method when anything was skipped, a
    warning per method or label with nothing found (the folder it looked in, under ``root``), each skip reason
    once, frames listed but missing."""
    skips = as_skips(skipped)
    lines: list[str] = []
    warnings: list[str] = []
    named = [s for s in skips if s.label is not None]
    if named:
        found = df.groupby(["label", "method"], observed=True).size().to_dict()
        lost = Counter((int(s.label), s.method) for s in named)
        groups = sorted(set(found) | set(lost))
        parts = [f"{m} ({_label(lab)}) {found.get((lab, m), 0)}/{found.get((lab, m), 0) + lost.get((lab, m), 0)}"
                 for lab, m in groups]
        lines.append(f"found/listed videos: {', '.join(parts)}")
        for lab in (0, 1):
            n_found = sum(v for (la, _), v in found.items() if la == lab)
            n_lost = sum(v for (la, _), v in lost.items() if la == lab)
            if n_lost and not n_found:
                warnings.append(f"no {_label(lab)} video found of {n_lost} listed: looked in "
                                f"{_folder((s for s in named if s.label == lab), root)}")
                continue
            for (la, m), n in sorted(lost.items()):
                if la == lab and not found.get((la, m)):
                    warnings.append(f"no {m} ({_label(la)}) video found of {n} listed: looked in "
                                    f"{_folder((s for s in named if s.label == la and s.method == m), root)}")
    by_reason: dict[str, list[Skip]] = {}
    for s in skips:
        by_reason.setdefault(s.reason, []).append(s)
    for reason, group in by_reason.items():
        lines.append(f"skipped {len(group)} ({reason}), e.g. {_example(group[0])}")
    frames = list(frames_missing or ())
    if frames:
        total = sum(int(n) for _, n in frames)
        lines.append(f"frames listed but missing on disk: {total} in {len(frames)} video(s), e.g. {frames[0][1]} of "
                     f"{frames[0][0]} (those videos are indexed with the frames that exist)")
    return lines, warnings


def _folder(skips: Iterable[Skip], root: str | None = None) -> str:
    """The folder the skipped videos were looked for in (their common folder), under ``root``."""
    paths = [s.path for s in skips]
    try:
        common = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    except ValueError:  # absolute and relative mixed
        common = os.path.dirname(paths[0])
    return os.path.join(root, common) if root else common
