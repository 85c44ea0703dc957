"""Extraction progress: a bar on a terminal, a plain line a minute in batch logs (SLURM).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any


def track_progress(items: Iterable[Any], total: int, completed: int, enabled: bool,
                   what: str = "extracting faces", unit: str = "videos") -> Iterator[Any]:
    if not enabled:
        yield from items
        return
    import sys

    if not sys.stdout.isatty():
        # Batch jobs (SLURM logs): a plain line every minute instead of a bar redrawn into the log file.
        yield from _progress_lines(items, total, completed, what, unit)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("extract", total=total, completed=completed)
        for item in items:
            bar.advance(task, 1)
            yield item


PROGRESS_EVERY_S = 60.0


def _progress_lines(items: Iterable[Any], total: int, completed: int, what: str, unit: str = "videos"
                    ) -> Iterator[Any]:
    t0 = last = time.perf_counter()
    for done, item in enumerate(items, start=1):
        now = time.perf_counter()
        if now - last >= PROGRESS_EVERY_S:
            last = now
            rate = done / (now - t0)
            left = (total - completed - done) / rate if rate > 0 else float("nan")
            print(f"{what}: {completed + done}/{total} {unit}, {rate:.2f} {unit}/s, about {left / 60:.0f} min left",
                  flush=True)
        yield item
