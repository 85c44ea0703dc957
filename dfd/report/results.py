"""Reading results.json files back (schema v1): find them, validate them, one-line errors naming the file.

Shared by :mod:`dfd.report.collect` (run folders) and :mod:`dfd.report.wandb_runs` (W&B runs turned into the
same dictionaries).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dfd.errors import UserError

SCHEMA_VERSION = 1


# frame/video: sets of videos; image: sets of still images; item: every item of a set holding both (results.json
# names the set's ``unit`` and its ``headline`` level, see dfd.engine.results).
LEVELS = ("frame", "video", "image", "item")


def headline_level(entry: dict) -> str:
    """The level a test entry's one number stands for: its ``headline`` (results written before units, and W&B
    runs: ``item`` when there is one, else ``video``, else ``image``)."""
    named = entry.get("headline")
    if named in LEVELS and entry.get(named) is not None:
        return str(named)
    return next((lv for lv in ("item", "video", "image", "frame") if entry.get(lv) is not None), "video")


RESULTS_FILE = "results.json"


class ResultsError(UserError, ValueError):
    """A results file (or W&B run) cannot be read as dfd results; the message is one line naming it."""


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    """Every ``results.json`` under the given run / multirun directories (or the files themselves), sorted."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if p.is_file():
            found.add(p)
        elif p.is_dir():
            # Skip W&B's and Hydra's own folders: they never hold dfd results and can be large.
            found.update(f for f in p.rglob(RESULTS_FILE) if "wandb" not in f.parts and ".submitit" not in f.parts)
        else:
            raise ResultsError(f"error: runs directory {p} does not exist")
    return sorted(found)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _check_metrics(block: Any, where: str) -> dict[str, float]:
    if not isinstance(block, dict):
        raise ResultsError(f"{where}: expected a dict of metrics, got {type(block).__name__}")
    bad = [k for k, v in block.items() if v is not None and not _is_number(v)]
    if bad:
        raise ResultsError(f"{where}: metric(s) {bad} are not numbers")
    return {k: (math.nan if v is None else float(v)) for k, v in block.items()}


def _levels(entry: Any, where: str) -> dict[str, dict[str, float]]:
    if not isinstance(entry, dict):
        raise ResultsError(f"{where}: expected a dict with 'frame'/'video'/'image' metrics, got {type(entry).__name__}")
    out = {lvl: _check_metrics(entry[lvl], f"{where}.{lvl}") for lvl in LEVELS if entry.get(lvl) is not None}
    if not out:
        raise ResultsError(f"{where}: has no 'frame', 'video', 'image' or 'item' metrics")
    return out


def validate_results(data: Any, where: str) -> dict[str, Any]:
    """Check a parsed results dictionary against schema v1; raise a one-line :class:`ResultsError` if not."""
    if not isinstance(data, dict):
        raise ResultsError(f"{where}: top level must be a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(
            f"{where}: schema_version {version!r} is not supported (this dfd reads {SCHEMA_VERSION}); "
            "re-run dfd-eval on the checkpoint with this version"
        )
    train = data.get("train")
    if not isinstance(train, dict):
        raise ResultsError(f"{where}: missing the 'train' section (dataset, model, finetune, seed)")
    missing = [k for k in ("dataset", "model", "finetune") if train.get(k) in (None, "", [])]
    if missing:
        raise ResultsError(f"{where}: 'train' lacks {missing}; the report groups runs by dataset/model/finetune")
    tests = data.get("test", {})
    if not isinstance(tests, dict):
        raise ResultsError(f"{where}: 'test' must map test-set names to metrics, got {type(tests).__name__}")
    for name, entry in tests.items():
        _levels(entry, f"{where}: test.{name}")
    return data


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate one ``results.json``; any problem becomes a one-line error naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: cannot be read ({e})") from None
    return validate_results(data, str(path))


# The fields that name a training configuration (dataset/model/finetune); overrides that select them are
# already in the name through train.dataset etc.
CORE_FIELDS = ("dataset", "model", "finetune")
_CORE_OVERRIDES = set(CORE_FIELDS)


def run_value(data: dict[str, Any], key: str) -> Any:
    """A run's value of ``key``: a ``train`` field, else a recorded override, else the recorded config (dotted)."""
    train = data.get("train") or {}
    if key in train and not isinstance(train[key], dict):
        return train[key]
    overrides = train.get("overrides") or {}
    if key in overrides:
        return overrides[key]
    node: Any = data.get("config")
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, dict) else node


def identity_keys(data: dict[str, Any]) -> list[str]:
    """The keys that define a run's training configuration: the core fields and its recorded overrides."""
    overrides = (data.get("train") or {}).get("overrides") or {}
    return [*CORE_FIELDS, *(k for k in overrides if k not in _CORE_OVERRIDES)]
