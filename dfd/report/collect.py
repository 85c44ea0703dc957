"""Collect finished runs' results into one long table that every report view is cut from.

Sources are ``results.json`` files (written by ``dfd-train`` / ``dfd-eval`` into each run directory, found
recursively so Hydra multirun trees work) and, on request, W&B runs (see :mod:`dfd.report.wandb_runs`), which
are converted into the same results dictionary first so there is one code path after loading.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dfd.report.results import ResultsError, _is_number, _levels, find_results, load_results

# The fields that name a training configuration's row (several seeds of it are averaged). Runs that share them
# but differ in any other recorded override (results.json train.overrides, e.g. optim.lr in a sweep) are still
# different configurations: the differing keys are appended to the row name, never merged.
DEFAULT_GROUP_BY = ("dataset", "model", "finetune")
CORE_FIELDS = ("dataset", "model", "finetune")
# Overrides that select the core fields themselves (already in the row name through train.dataset etc.).
_CORE_OVERRIDES = {"dataset", "model", "finetune"}

LONG_COLUMNS = [
    "config", "dataset", "model", "finetune", "variant", "experiment", "seed", "kind", "created", "source",
    "section",  # val | test | per_method | robustness
    "test_set", "in_domain", "method", "perturbation", "severity",
    "level",  # frame | video
    "metric", "value",
]


@dataclass
class Collection:
    """Everything a report is built from: the long metric table, ROC points and what was skipped."""

    long: pd.DataFrame
    roc: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one-line reasons, each naming its file
    sources: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    # One entry per loaded run: source, config (row name), seed, created, predictions (path or None).
    runs: list[dict[str, Any]] = field(default_factory=list)


def _name(value: Any) -> str:
    # A training mix (leave-one-out) may be written as a list of dataset names.
    return "+".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


_MISSING = object()


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


def _text(value: Any) -> str:
    return "?" if value is None else json.dumps(value, sort_keys=True) if isinstance(value, dict) else _name(value)


def _render(key: str, value: Any) -> str:
    """A row-name part: the bare value for dataset/model/finetune, ``key=value`` for anything else."""
    return _text(value) if key in CORE_FIELDS else f"{key}={_text(value)}"


def config_label(train: dict[str, Any], group_by: Sequence[str] = DEFAULT_GROUP_BY) -> str:
    """The row label of a training configuration, e.g. ``ffpp/vit_b16/lora`` (``optim.lr=0.001`` for others)."""
    return "/".join(_render(k, run_value({"train": train}, k)) for k in group_by)


def identity_keys(data: dict[str, Any]) -> list[str]:
    """The keys that define a run's training configuration: the core fields and its recorded overrides."""
    overrides = (data.get("train") or {}).get("overrides") or {}
    return [*CORE_FIELDS, *(k for k in overrides if k not in _CORE_OVERRIDES)]


def config_labels(runs: Sequence[dict[str, Any]], group_by: Sequence[str] = DEFAULT_GROUP_BY
                  ) -> list[tuple[str, str]]:
    """(row label, variant) per run: ``group_by`` names the row, and any other configuration key whose value
    differs between runs that share that name is appended (``variant``, e.g. ``optim.lr=0.001``), so distinct
    configurations are never merged into one row."""
    bases = ["/".join(_render(k, run_value(r, k)) for k in group_by) for r in runs]
    groups: dict[str, list[dict[str, Any]]] = {}
    for run, base in zip(runs, bases, strict=True):
        groups.setdefault(base, []).append(run)
    varying: dict[str, list[str]] = {}
    for base, peers in groups.items():
        keys = dict.fromkeys(k for r in peers for k in identity_keys(r) if k not in group_by)
        varying[base] = [k for k in keys
                         if len({json.dumps(run_value(r, k), sort_keys=True, default=str) for r in peers}) > 1]
    variants = [" ".join(f"{k}={_text(run_value(run, k))}" for k in varying[base])
                for run, base in zip(runs, bases, strict=True)]
    return [(f"{b} {v}" if v else b, v) for b, v in zip(bases, variants, strict=True)]


def results_to_rows(data: dict[str, Any], source: str, group_by: Sequence[str] = DEFAULT_GROUP_BY,
                    label: tuple[str, str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Flatten one validated results dictionary into long-table rows and ROC entries.

    ``label``: the (row label, variant) that :func:`config_labels` gave this run among all collected runs.
    """
    train = data["train"]
    seed = train.get("seed")
    config, variant = label or (config_label(train, group_by), "")
    base = {
        "config": config, "dataset": _name(train["dataset"]), "model": _name(train["model"]),
        "finetune": _name(train["finetune"]), "variant": variant, "experiment": train.get("experiment") or "",
        "seed": int(seed) if _is_number(seed) else -1, "kind": data.get("kind", "train"),
        "created": str(data.get("created", "")), "source": source,
    }
    rows: list[dict[str, Any]] = []
    where = source

    def add(section: str, levels: dict[str, dict[str, float]], **extra: Any) -> None:
        for level, metrics in levels.items():
            for metric, value in metrics.items():
                rows.append({**base, "section": section, "test_set": "", "in_domain": False, "method": "",
                             "perturbation": "", "severity": math.nan, **extra, "level": level,
                             "metric": metric, "value": value})

    if isinstance(data.get("val"), dict) and data["val"]:
        add("val", _levels(data["val"], f"{where}: val"))
    roc: list[dict[str, Any]] = []
    for name, entry in data.get("test", {}).items():
        in_domain = bool(entry.get("in_domain", False))
        add("test", _levels(entry, f"{where}: test.{name}"), test_set=name, in_domain=in_domain)
        for method, m_entry in (entry.get("per_method") or {}).items():
            add("per_method", _levels(m_entry, f"{where}: test.{name}.per_method.{method}"),
                test_set=name, in_domain=in_domain, method=str(method))
        for level, curve in (entry.get("roc") or {}).items():
            if isinstance(curve, dict) and curve.get("fpr") and curve.get("tpr"):
                if len(curve["fpr"]) != len(curve["tpr"]):
                    raise ResultsError(f"{where}: test.{name}.roc.{level}: fpr and tpr differ in length")
                roc.append({**base, "test_set": name, "level": level,
                            "fpr": [float(x) for x in curve["fpr"]], "tpr": [float(x) for x in curve["tpr"]]})
    for name, perturbations in (data.get("robustness") or {}).items():
        in_domain = bool(data.get("test", {}).get(name, {}).get("in_domain", False))
        for pert, points in (perturbations or {}).items():
            if not isinstance(points, list):
                raise ResultsError(f"{where}: robustness.{name}.{pert} must be a list of levels")
            for i, point in enumerate(points):
                if not isinstance(point, dict) or not _is_number(point.get("level")):
                    raise ResultsError(f"{where}: robustness.{name}.{pert}[{i}] needs a numeric 'level'")
                add("robustness", _levels(point, f"{where}: robustness.{name}.{pert}[{i}]"), test_set=name,
                    in_domain=in_domain, perturbation=str(pert), severity=float(point["level"]))
    return rows, roc


def _dedupe(long: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Exact repeats (same configuration, same seed: a re-run, a dfd-eval of the same checkpoint) report the
    newest file's value per metric; each repeat is named in a note, and ``n_runs`` counts the files."""
    if long.empty:
        return long, []
    key = ["config", "seed", "section", "test_set", "method", "perturbation", "severity", "level", "metric"]
    long = long.sort_values(["created", "source"], kind="stable")
    dup = long.duplicated(key, keep="last")
    notes: list[str] = []
    if dup.any():
        pairs = long.loc[dup, ["config", "seed", "source"]].drop_duplicates()
        for (config, seed), grp in pairs.groupby(["config", "seed"], sort=True):
            newest = long.loc[(long["config"] == config) & (long["seed"] == seed), "source"].iloc[-1]
            notes.append(f"{config} seed {seed}: exact repeat — {len(grp) + 1} runs with the same configuration and "
                         f"seed; the newest ({newest}) is reported, {len(grp)} older superseded "
                         f"({', '.join(grp['source'])})")
    return long.loc[~dup].reset_index(drop=True), notes


def collect(run_dirs: Sequence[str | Path] = (), wandb_offline: Sequence[str | Path] = (),
            wandb_project: str | None = None, group_by: Sequence[str] = DEFAULT_GROUP_BY,
            skip_invalid: bool = False) -> Collection:
    """Load every run from directories and W&B into a :class:`Collection` (strict unless ``skip_invalid``)."""
    loaded: list[tuple[str, dict[str, Any]]] = []
    skipped: list[str] = []
    seen: set[Path] = set()

    def attempt(loader: Any) -> None:
        try:
            source, data = loader()
        except ResultsError as e:
            if not skip_invalid:
                raise
            skipped.append(str(e))
            return
        key = Path(source).resolve() if not source.startswith("wandb:") else Path(source)
        if key not in seen:  # a W&B run pointing at a results.json already read from its run directory
            seen.add(key)
            loaded.append((source, data))

    for path in find_results(run_dirs):
        attempt(lambda path=path: (str(path), load_results(path)))
    if wandb_offline or wandb_project:
        from dfd.report import wandb_runs

        for run_file in wandb_runs.find_offline_runs(wandb_offline):
            attempt(lambda f=run_file: wandb_runs.offline_results(f))
        if wandb_project and wandb_runs.offline_mode():
            skipped.append(f"wandb:{wandb_project}: not read (W&B is offline: WANDB_MODE="
                           f"{os.environ.get('WANDB_MODE')}); the report run is logged offline")
        elif wandb_project:
            for _source, loader in wandb_runs.online_runs(wandb_project):
                attempt(loader)

    rows: list[dict[str, Any]] = []
    rocs: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    labels = config_labels([data for _, data in loaded], group_by)
    for (source, data), label in zip(loaded, labels, strict=True):
        try:
            r, c = results_to_rows(data, source, group_by, label)
        except ResultsError as e:
            if not skip_invalid:
                raise
            skipped.append(str(e))
            continue
        rows += r
        rocs += c
        runs.append({"source": source, "config": label[0], "seed": (data["train"].get("seed")),
                     "created": str(data.get("created", "")), "experiment": data["train"].get("experiment") or "",
                     "predictions": _predictions_path(source, data)})
    long = pd.DataFrame(rows, columns=LONG_COLUMNS)
    studies = set(long["experiment"]) - {""}  # runs that name no study do not split anything
    if "experiment" not in group_by and len(studies) > 1:
        # Runs from several studies: the same (dataset, model, finetune) can mean different training recipes
        # (e.g. FF++ alone vs FF++ in a leave-one-out mix), so keep studies apart in the row labels.
        prefix = {s: (f"{s}:" if s else "") for s in long["experiment"].unique()}
        long["config"] = long["experiment"].map(prefix) + long["config"]
        for c in rocs:
            c["config"] = prefix[c["experiment"]] + c["config"]
        for r in runs:
            r["config"] = prefix.get(r["experiment"], "") + r["config"]
    long, notes = _dedupe(long)
    # Same rule for curves: the newest file wins for one (config, seed, test set, level).
    rocs = list({(c["config"], c["seed"], c["test_set"], c["level"]): c
                 for c in sorted(rocs, key=lambda c: (c["created"], c["source"]))}.values())
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return Collection(long=long, roc=rocs, skipped=skipped, sources=[s for s, _ in loaded], duplicates=notes,
                      runs=runs)


def _predictions_path(source: str, data: dict[str, Any]) -> str | None:
    """The run's predictions.parquet (named in results.json, beside it), when it exists."""
    name = data.get("predictions")
    if not name or source.startswith("wandb:") or not source.endswith(".json"):
        return None
    path = Path(source).parent / str(name)
    return str(path) if path.is_file() else None
