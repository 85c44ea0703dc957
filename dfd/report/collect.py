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

from dfd.report.results import (
    CORE_FIELDS,
    LEVELS,
    ResultsError,
    _is_number,
    _levels,
    find_results,
    headline_level,
    identity_keys,
    load_results,
    run_value,
)

# The fields that name a training configuration's row (several seeds of it are averaged). Runs that share them
# but differ in any other recorded override (results.json train.overrides, e.g. optim.lr in a sweep) are still
# different configurations: the differing keys are appended to the row name, never merged.
DEFAULT_GROUP_BY = ("dataset", "model", "finetune")

LONG_COLUMNS = [
    "config", "dataset", "model", "finetune", "variant", "experiment", "seed", "kind", "created", "source",
    "section",  # val | test | per_method | per_method_type | no_face | robustness
    "test_set", "in_domain", "method",  # method: the method (per_method) or kind of fake (per_method_type)
    "perturbation", "severity",
    "level",  # frame | video (videos), image (still images), item (every item of a set holding both)
    "metric", "value",
    "headline",  # the row's level is its test set's headline level (video, image or item: results.json)
]


@dataclass
class Collection:
    """Everything a report is built from: the long metric table, ROC points, reliability bins and what was
    skipped."""

    long: pd.DataFrame
    roc: list[dict[str, Any]] = field(default_factory=list)
    calibration: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one-line reasons, each naming its file
    sources: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    # One entry per loaded results file: source, config (row name), seed, created, predictions (path or None),
    # kind (train | eval), attached_to (the training run's source an evaluation belongs to, else None) and run_key
    # (what counts as one run: evaluations of one checkpoint are one).
    runs: list[dict[str, Any]] = field(default_factory=list)
    # --select-on-val: one line per configuration naming the sweep value chosen on validation.
    choices: list[str] = field(default_factory=list)


def _name(value: Any) -> str:
    # A training mix (leave-one-out) may be written as a list of dataset names.
    return "+".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _text(value: Any) -> str:
    return "?" if value is None else json.dumps(value, sort_keys=True) if isinstance(value, dict) else _name(value)


def _render(key: str, value: Any) -> str:
    """A row-name part: the bare value for dataset/model/finetune, ``key=value`` for anything else."""
    return _text(value) if key in CORE_FIELDS else f"{key}={_text(value)}"


def config_label(train: dict[str, Any], group_by: Sequence[str] = DEFAULT_GROUP_BY) -> str:
    """The row label of a training configuration, e.g. ``ffpp/vit_b16/lora`` (``optim.lr=0.001`` for others)."""
    return "/".join(_render(k, run_value({"train": train}, k)) for k in group_by)


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


def _no_face_levels(block: Any) -> dict[str, dict[str, float]]:
    """results.json's ``no_face`` counts as long-table metrics: per level, ``no_face_real``/``no_face_fake``
    (and, at video level, ``unreadable_real``/``unreadable_fake`` and ``no_face_scored``: 1 when they counted
    at ``no_face_score``, 0 when dropped); NaN where the cache did not record them."""
    if not isinstance(block, dict):
        return {}
    out: dict[str, dict[str, float]] = {}
    for level, key, prefix in (("video", "videos", "no_face"), ("frame", "frames", "no_face"),
                               ("video", "unreadable_videos", "unreadable")):
        counts = block.get(key)
        for label in ("real", "fake"):
            value = counts.get(label) if isinstance(counts, dict) else None
            out.setdefault(level, {})[f"{prefix}_{label}"] = float(value) if _is_number(value) else math.nan
    scored = block.get("rule") == "score"
    out["video"]["no_face_scored"] = 1.0 if scored else 0.0
    out["video"]["no_face_score"] = float(block["score"]) if scored and _is_number(block.get("score")) else math.nan
    return out


def _bins(entry: Any) -> dict[str, list] | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("count"), list):
        return None
    n = len(entry["count"])
    if any(not isinstance(entry.get(k), list) or len(entry[k]) != n for k in ("mean_prob", "frac_fake")):
        return None
    return {"count": [int(c) for c in entry["count"]], "mean_prob": entry["mean_prob"], "frac_fake": entry["frac_fake"]}


def results_to_rows(data: dict[str, Any], source: str, group_by: Sequence[str] = DEFAULT_GROUP_BY,
                    label: tuple[str, str] | None = None, calibration: list[dict[str, Any]] | None = None
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Flatten one validated results dictionary into long-table rows and ROC entries (and, into
    ``calibration`` when given, the reliability bins of every test set and level).

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

    def add(section: str, levels: dict[str, dict[str, float]], top: str = "video", **extra: Any) -> None:
        for level, metrics in levels.items():
            for metric, value in metrics.items():
                rows.append({**base, "section": section, "test_set": "", "in_domain": False, "method": "",
                             "perturbation": "", "severity": math.nan, **extra, "level": level,
                             "metric": metric, "value": value, "headline": level == top})

    if isinstance(data.get("val"), dict) and data["val"]:
        add("val", _levels(data["val"], f"{where}: val"), headline_level(data["val"]))
    roc: list[dict[str, Any]] = []
    for name, entry in data.get("test", {}).items():
        in_domain = bool(entry.get("in_domain", False))
        top = headline_level(entry) if isinstance(entry, dict) else "video"
        add("test", _levels(entry, f"{where}: test.{name}"), top, test_set=name, in_domain=in_domain)
        for method, m_entry in (entry.get("per_method") or {}).items():
            add("per_method", _levels(m_entry, f"{where}: test.{name}.per_method.{method}"), top,
                test_set=name, in_domain=in_domain, method=str(method))
        for kind, k_entry in (entry.get("per_method_type") or {}).items():
            add("per_method_type", _levels(k_entry, f"{where}: test.{name}.per_method_type.{kind}"), top,
                test_set=name, in_domain=in_domain, method=str(kind))
        if entry.get("no_face"):
            add("no_face", _no_face_levels(entry["no_face"]), test_set=name, in_domain=in_domain)
        for level, b in (entry.get("calibration") or {}).items():
            bins = _bins(b)
            if calibration is not None and bins is not None and level in LEVELS:
                calibration.append({**base, "test_set": name, "level": level, **bins})
        for level, curve in (entry.get("roc") or {}).items():
            if isinstance(curve, dict) and curve.get("fpr") and curve.get("tpr"):
                if len(curve["fpr"]) != len(curve["tpr"]):
                    raise ResultsError(f"{where}: test.{name}.roc.{level}: fpr and tpr differ in length")
                roc.append({**base, "test_set": name, "level": level,
                            "fpr": [float(x) for x in curve["fpr"]], "tpr": [float(x) for x in curve["tpr"]]})
    for name, perturbations in (data.get("robustness") or {}).items():
        in_domain = bool(data.get("test", {}).get(name, {}).get("in_domain", False))
        top = headline_level(data.get("test", {}).get(name) or {})
        for pert, points in (perturbations or {}).items():
            if not isinstance(points, list):
                raise ResultsError(f"{where}: robustness.{name}.{pert} must be a list of levels")
            for i, point in enumerate(points):
                if not isinstance(point, dict) or not _is_number(point.get("level")):
                    raise ResultsError(f"{where}: robustness.{name}.{pert}[{i}] needs a numeric 'level'")
                # A frame-level sweep (robustness.at=frame) is another perturbation than the crop-level one.
                at = point.get("at") or "crop"
                add("robustness", _levels(point, f"{where}: robustness.{name}.{pert}[{i}]"), top, test_set=name,
                    in_domain=in_domain, perturbation=str(pert) if at == "crop" else f"{pert}@{at}",
                    severity=float(point["level"]))
    return rows, roc


def _dedupe(long: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Exact repeats (same configuration, same seed: a re-run) report the newest file's value per metric; each
    repeat is named in a note. Evaluations attached to their training run (:func:`attach_evaluations`) hold no
    test set of that run by now: what they still share is a test set evaluated twice, named as such."""
    if long.empty:
        return long, []
    key = ["config", "seed", "section", "test_set", "method", "perturbation", "severity", "level", "metric"]
    long = long.sort_values(["created", "source"], kind="stable")
    dup = long.duplicated(key, keep="last")
    notes: list[str] = []
    if dup.any():
        pairs = long.loc[dup, ["config", "seed", "source", "kind"]].drop_duplicates()
        for (config, seed), grp in pairs.groupby(["config", "seed"], sort=True):
            mine = long[(long["config"] == config) & (long["seed"] == seed)]
            newest = mine["source"].iloc[-1]
            trained = mine.loc[mine["kind"] == "train", "source"].nunique()
            if trained > 1:
                notes.append(f"{config} seed {seed}: exact repeat — {trained} training runs with the same "
                             f"configuration and seed; the newest ({newest}) is reported, {len(grp)} older superseded "
                             f"({', '.join(grp['source'])})")
            else:
                sets = sorted(set(long.loc[dup & (long["config"] == config) & (long["seed"] == seed), "test_set"]))
                notes.append(f"{config} seed {seed}: {', '.join(s or 'val' for s in sets)} evaluated "
                             f"{len(grp) + 1} times (dfd-eval of one checkpoint, or a run and an evaluation not "
                             f"linked to it); the newest ({newest}) is reported, older superseded "
                             f"({', '.join(grp['source'])})")
    return long.loc[~dup].reset_index(drop=True), notes


def _absolute(path: Any) -> Path | None:
    """An absolute path from a results field (relative ones name the folder of whoever ran it: unknown here)."""
    if not isinstance(path, str) or not path or path.startswith("wandb:"):
        return None
    p = Path(path)
    return p.resolve() if p.is_absolute() else None


def _checkpoint_runs(data: dict[str, Any], source: str) -> list[Path]:
    """The training-run folders an evaluation's checkpoint may lie in (``<run>/checkpoints/<file>.ckpt``): the
    path as recorded, made absolute against the folders the evaluation could have been run from."""
    ckpt = data.get("checkpoint")
    if not isinstance(ckpt, str) or not ckpt:
        return []
    p = Path(ckpt)
    if p.is_absolute():
        return [p.resolve().parent.parent]
    bases = [Path.cwd()]
    for where in (_absolute(data.get("run_dir")), Path(source).resolve() if not source.startswith("wandb:") else None):
        bases += list(where.parents) if where is not None else []
    return [(b / p).resolve().parent.parent for b in dict.fromkeys(bases)]


def attach_evaluations(loaded: Sequence[tuple[str, dict[str, Any]]]) -> dict[int, int]:
    """Which training run each ``dfd-eval`` result evaluated: ``{eval index: training-run index}``.

    An evaluation belongs to the training run whose checkpoint it tested: the same ``run_id`` (recorded by both
    since it existed), else the checkpoint's path inside that run's folder. It is no repeat of that run (not a
    second seed): its extra test sets and robustness curves join the run's row, and the run's own numbers stay.
    """
    run_ids: dict[str, int] = {}
    folders: dict[Path, int] = {}
    for i, (source, data) in enumerate(loaded):
        if data.get("kind", "train") != "train":
            continue
        if data.get("run_id"):
            run_ids.setdefault(str(data["run_id"]), i)
        for folder in (_absolute(data.get("run_dir")),
                       Path(source).resolve().parent if source.endswith(".json") else None):
            if folder is not None:
                folders.setdefault(folder, i)
    attached: dict[int, int] = {}
    for j, (source, data) in enumerate(loaded):
        if data.get("kind") != "eval":
            continue
        i = run_ids.get(str(data.get("run_id"))) if data.get("run_id") else None
        if i is None:
            i = next((folders[f] for f in _checkpoint_runs(data, source) if f in folders), None)
        if i is not None:
            attached[j] = i
    return attached


def collect(run_dirs: Sequence[str | Path] = (), wandb_offline: Sequence[str | Path] = (),
            wandb_project: str | None = None, group_by: Sequence[str] = DEFAULT_GROUP_BY,
            skip_invalid: bool = False, select_on_val: Sequence[str] = ()) -> Collection:
    """Load every run from directories and W&B into a :class:`Collection` (strict unless ``skip_invalid``).

    ``select_on_val``: keys of a sweep (``optim.lr``) chosen per configuration on validation video AUC
    (:mod:`dfd.report.select`); the other values' runs are left out, each choice is a note.
    """
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

    chosen: list[str] = []
    if select_on_val:
        from dfd.report.select import best_on_validation

        loaded, chosen = best_on_validation(loaded, select_on_val)
    rows: list[dict[str, Any]] = []
    rocs: list[dict[str, Any]] = []
    bins: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    attached = attach_evaluations(loaded)
    labels = config_labels([data for _, data in loaded], group_by)
    for j, i in attached.items():
        labels[j] = labels[i]  # the row of the run it evaluated, whatever its own record says
    notes: list[str] = []
    for k, ((source, data), label) in enumerate(zip(loaded, labels, strict=True)):
        owner = loaded[attached[k]] if k in attached else None
        try:
            own: list[dict[str, Any]] = []
            r, c = results_to_rows(data, source, group_by, label, own)
        except ResultsError as e:
            if not skip_invalid:
                raise
            skipped.append(str(e))
            continue
        if owner is not None:
            r, c, note = _join_run(r, c, source, data, owner)
            notes += [note] if note else []
        rows += r
        rocs += c
        bins += own
        runs.append({"source": source, "config": label[0], "seed": (data["train"].get("seed")),
                     "created": str(data.get("created", "")), "experiment": data["train"].get("experiment") or "",
                     "predictions": _predictions_path(source, data), "kind": data.get("kind", "train"),
                     "attached_to": owner[0] if owner is not None else None,
                     # the training run a file stands for: evaluations of one checkpoint count as one run
                     "run_key": (f"run_id:{data['run_id']}" if data.get("kind") == "eval" and data.get("run_id")
                                 else source)})
    long = pd.DataFrame(rows, columns=LONG_COLUMNS)
    studies = set(long["experiment"]) - {""}  # runs that name no study do not split anything
    if "experiment" not in group_by and len(studies) > 1:
        # Runs from several studies: the same (dataset, model, finetune) can mean different training recipes
        # (e.g. FF++ alone vs FF++ in a leave-one-out mix), so keep studies apart in the row labels.
        prefix = {s: (f"{s}:" if s else "") for s in long["experiment"].unique()}
        long["config"] = long["experiment"].map(prefix) + long["config"]
        for c in (*rocs, *bins):
            c["config"] = prefix[c["experiment"]] + c["config"]
        for r in runs:
            r["config"] = prefix.get(r["experiment"], "") + r["config"]
    long, repeats = _dedupe(long)
    notes += repeats
    # Same rule for curves: the newest file wins for one (config, seed, test set, level).
    rocs = list({(c["config"], c["seed"], c["test_set"], c["level"]): c
                 for c in sorted(rocs, key=lambda c: (c["created"], c["source"]))}.values())
    bins = list({(c["config"], c["seed"], c["test_set"], c["level"]): c
                 for c in sorted(bins, key=lambda c: (c["created"], c["source"]))}.values())
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return Collection(long=long, roc=rocs, calibration=bins, skipped=skipped, sources=[s for s, _ in loaded],
                      duplicates=notes, runs=runs, choices=chosen)


def run_counts(runs: Sequence[dict[str, Any]]) -> pd.Series:
    """Training runs per row (``n_runs``): repeats included, evaluations never (they belong to a run)."""
    keys = {(r["config"], r.get("run_key") or r["source"]) for r in runs if not r.get("attached_to")}
    return pd.Series([config for config, _ in keys], dtype=object).value_counts()


def _join_run(rows: list[dict[str, Any]], rocs: list[dict[str, Any]], source: str, data: dict[str, Any],
              owner: tuple[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str | None]:
    """An attached evaluation's rows, less the test sets its training run reports itself (the run's numbers
    stay), with a note when it measured one of those differently (other settings, e.g. ``data.video_score``)."""
    own = owner[1].get("test") or {}
    differ = []
    for name in sorted(set(own) & set(data.get("test") or {})):
        mine, theirs = (data["test"][name].get("video") or {}).get("auc"), (own[name].get("video") or {}).get("auc")
        if _is_number(mine) and _is_number(theirs) and abs(mine - theirs) > 1e-6:
            differ.append(f"{name} {mine:.4f} vs the run's {theirs:.4f}")
    keep = [r for r in rows if not (r["section"] in ("test", "per_method") and r["test_set"] in own)]
    note = (f"{source}: evaluation of {owner[0]}'s checkpoint measured video AUC on {', '.join(differ)}; the "
            "training run's numbers are reported for its own test sets") if differ else None
    return keep, [c for c in rocs if c["test_set"] not in own], note


def _predictions_path(source: str, data: dict[str, Any]) -> str | None:
    """The run's predictions.parquet (named in results.json, beside it), when it exists."""
    name = data.get("predictions")
    if not name or source.startswith("wandb:") or not source.endswith(".json"):
        return None
    path = Path(source).parent / str(name)
    return str(path) if path.is_file() else None
