"""Choosing a sweep's hyper-parameter on validation: among runs that differ only in some keys (a learning-rate
grid), keep the value with the best validation score, as the checkpoint itself was chosen (never on a test set).

``dfd-report --select-on-val optim.lr`` turns a backbone × lr × test-set sweep (``experiment=probe_all``) into
the backbone × test-set matrix, naming the chosen value of each row in report notes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from dfd.report.results import identity_keys, run_value

__all__ = ["best_on_validation"]


def _val(data: dict[str, Any], metric: str) -> float:
    level, _, name = metric.partition("_")
    value = ((data.get("val") or {}).get(level) or {}).get(name)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else -math.inf


def best_on_validation(loaded: Sequence[tuple[str, dict[str, Any]]], keys: Sequence[str],
                       metric: str = "video_auc", lower_is_better: bool = False
                       ) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """Keep, per configuration that differs only in ``keys`` (and the seed), the runs of the ``keys`` values whose
    mean validation ``metric`` over seeds is best; returns (kept runs, one note per choice)."""
    keys = list(keys)
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for source, data in loaded:
        rest = {k: run_value(data, k) for k in identity_keys(data) if k not in keys}
        groups.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append((source, data))
    kept: list[tuple[str, dict[str, Any]]] = []
    notes: list[str] = []
    sign = -1.0 if lower_is_better else 1.0
    for peers in groups.values():
        by_value: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for run in peers:
            value = json.dumps({k: run_value(run[1], k) for k in keys}, sort_keys=True, default=str)
            by_value.setdefault(value, []).append(run)
        if len(by_value) == 1:
            kept += peers
            continue
        scores = {v: sum(_val(d, metric) for _, d in runs) / len(runs) for v, runs in by_value.items()}
        best = max(sorted(scores), key=lambda v: sign * scores[v])
        kept += by_value[best]
        train = by_value[best][0][1].get("train") or {}
        name = "/".join(str(train.get(k, "?")) for k in ("dataset", "model", "finetune"))
        chosen = " ".join(f"{k}={v}" for k, v in json.loads(best).items())
        others = ", ".join(f"{' '.join(str(x) for x in json.loads(v).values())}: {s:.4f}"
                           for v, s in sorted(scores.items()) if v != best)
        notes.append(f"{name}: {chosen} chosen on validation {metric} ({scores[best]:.4f}; others {others})")
    return kept, notes
