"""Read dfd runs back from Weights & Biases, as results dictionaries (schema v1) for :mod:`dfd.report.collect`.

Two paths:

* **Offline run folders** (``wandb/offline-run-*/run-*.wandb``). wandb 0.31 writes no readable summary file
  offline; config and summary live only in the binary transaction log. Its format: a 7-byte file header
  (``:W&B``, magic 0xBEE1, version 0) followed by LevelDB-log-style 32 KiB blocks of chunks (crc32 4 bytes,
  length 2 bytes, type 1 byte: full/first/middle/last) whose payloads are ``wandb_internal_pb2.Record``
  protobufs. wandb's Python package no longer ships a reader (the Go core writes it), so this module has a
  small one.
* **Online projects** via ``wandb.Api()`` (needs a key; not exercised by the tests here). Offline
  (``WANDB_MODE=offline``/``disabled``) a project is not read: :func:`offline_mode` says so.

:func:`log_report` goes the other way: it logs a finished report's matrix and gap as W&B Tables to a run of
the project (``job_type=report``), offline unless W&B is online, to sync later.

Metric keys follow dfd's logging: ``test/<set>/<level>_<metric>``, ``test/<set>/in_domain``,
``test/<set>@<perturbation><level>/...`` (dfd-eval robustness; ``@frame_<perturbation><level>`` at frame level), ``val/<level>_<metric>``. When the summary
names the run's own ``results_json`` and that file exists, it is read instead (it also has ROC points). The training configuration is read from the run config's ``train`` dict
(``dataset``, ``model``, ``finetune``, ``seed``, ``experiment``), else from the Hydra groups' ``name`` fields.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dfd.report.results import LEVELS, SCHEMA_VERSION, ResultsError, load_results, validate_results

_HEADER = b":W&B"
_HEADER_LEN = 7
_BLOCK = 32768
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
FRAME_PREFIX = "frame_"
_PERTURBED = re.compile(r"^(?P<set>.+)@(?P<kind>[A-Za-z_]+?)(?P<level>-?\d+(?:\.\d+)?(?:e-?\d+)?)$")

# Where each training-configuration field may sit in a run's config, first match wins.
_CONFIG_PATHS: dict[str, list[tuple[str, ...]]] = {
    "dataset": [("train", "dataset"), ("dataset", "name"), ("dataset",)],
    "model": [("train", "model"), ("model", "name"), ("model",)],
    "finetune": [("train", "finetune"), ("finetune", "name"), ("finetune", "strategy"), ("finetune",)],
    "seed": [("train", "seed"), ("seed",), ("trainer", "seed")],
    "experiment": [("train", "experiment"), ("experiment",)],
}


def find_offline_runs(dirs: Iterable[str | Path]) -> list[Path]:
    """Every ``run-*.wandb`` log under the given folders (a ``wandb/`` dir, one run folder, or the file)."""
    found: set[Path] = set()
    for d in map(Path, dirs):
        if d.is_file() and d.suffix == ".wandb":
            found.add(d)
        elif d.is_dir():
            found.update(d.rglob("run-*.wandb"))
        else:
            raise ResultsError(f"error: W&B folder {d} does not exist (expected a wandb/ dir or an offline-run-* dir)")
    return sorted(found)


def iter_records(path: str | Path) -> Iterator[Any]:
    """Yield the ``Record`` protobufs of a W&B transaction log; a truncated tail (crashed run) ends the scan."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != _HEADER:
        raise ResultsError(f"{path}: not a W&B run log (missing the ':W&B' header)")
    pos, payload = _HEADER_LEN, b""
    while pos + _CHUNK_HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK_HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _CHUNK_HEADER])
        pos += _CHUNK_HEADER
        if kind == 0 and length == 0:  # zero padding (preallocated tail)
            pos += left - _CHUNK_HEADER
            continue
        chunk = data[pos:pos + length]
        pos += length
        if len(chunk) < length:
            return
        if kind in (_FULL, _FIRST):
            payload = chunk
        elif kind in (_MIDDLE, _LAST):
            payload += chunk
        else:
            raise ResultsError(f"{path}: corrupt W&B log (chunk type {kind} at byte {pos - length})")
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(payload)
            yield record


def _set(tree: dict[str, Any], keys: Sequence[str], value: Any) -> None:
    for k in keys[:-1]:
        node = tree.get(k)
        if not isinstance(node, dict):
            node = tree[k] = {}
        tree = node
    tree[keys[-1]] = value


def _apply(tree: dict[str, Any], items: Iterable[Any], remove: Iterable[Any] = ()) -> None:
    for item in items:
        keys = list(item.nested_key) or [item.key]
        try:
            value = json.loads(item.value_json)
        except json.JSONDecodeError:
            value = item.value_json
        _set(tree, keys, value)
    for item in remove:
        keys = list(item.nested_key) or [item.key]
        node = tree
        for k in keys[:-1]:
            node = node.get(k, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(keys[-1], None)


def read_offline_run(path: str | Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Config, final summary and start time of an offline run, replayed from its transaction log."""
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    created = ""
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            _apply(config, record.run.config.update)
            if record.run.HasField("start_time"):
                created = datetime.fromtimestamp(record.run.start_time.seconds, UTC).isoformat(timespec="seconds")
        elif kind == "config":
            _apply(config, record.config.update, record.config.remove)
        elif kind == "summary":
            _apply(summary, record.summary.update, record.summary.remove)
        elif kind == "history":
            # Summary mirrors the last history row, but a crash can lose the final summary record.
            _apply(summary, [i for i in record.history.item if not (i.nested_key or [i.key])[0].startswith("_")])
    config.pop("_wandb", None)
    return config, summary, created


def offline_tables(path: str | Path) -> dict[str, dict[str, Any]]:
    """The W&B Tables an offline run logged, by key: ``{"columns", "data", "files"}``.

    wandb 0.31 logs a table as a run artifact: the ``.wandb`` log holds its manifest (the table's JSON and every
    image it shows, each with the staged file that holds its bytes until ``wandb sync``, in W&B's artifact
    staging folder); ``files`` maps each entry's path (``media/images/...png``, as the table cells name them) to
    that file.
    """
    tables: dict[str, dict[str, Any]] = {}
    for record in iter_records(path):
        if record.WhichOneof("record_type") != "artifact" or record.artifact.type != "run_table":
            continue
        files = {e.path: e.local_path for e in record.artifact.manifest.contents}
        for entry, local in files.items():
            if entry.endswith(".table.json") and Path(local).is_file():
                table = json.loads(Path(local).read_text())
                tables[entry.removesuffix(".table.json")] = {"columns": table["columns"], "data": table["data"],
                                                             "files": files}
    return tables


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def _lookup(config: dict[str, Any], field: str) -> Any:
    for path in _CONFIG_PATHS[field]:
        node: Any = config
        for k in path:
            node = node.get(k) if isinstance(node, dict) else None
            if node is None:
                # Some loggers flatten nested config into "a/b" or "a.b" keys.
                node = config.get("/".join(path), config.get(".".join(path)))
                break
        if node is not None and not isinstance(node, dict):
            return node
    return None


def _train_fields(config: dict[str, Any]) -> dict[str, Any]:
    train = {f: _lookup(config, f) for f in _CONFIG_PATHS}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    if train["model"] == "timm" and model.get("arch"):
        train["model"] = f"timm/{model['arch']}"  # same label dfd-train writes into results.json
    ft = config.get("finetune") if isinstance(config.get("finetune"), dict) else {}
    if train["finetune"] is None and isinstance(ft.get("_target_"), str):
        train["finetune"] = ft["_target_"].rsplit(".", 1)[-1].lower()
    return train


def _robustness_key(name: str) -> tuple[str, str, float] | None:
    """``celebdf_v2@jpeg50`` (dfd-eval's key for a perturbed test) -> (``celebdf_v2``, ``jpeg``, 50.0)."""
    m = _PERTURBED.match(name)
    return (m["set"], m["kind"], float(m["level"])) if m else None


def summary_to_results(config: dict[str, Any], summary: dict[str, Any], source: str, created: str = ""
                       ) -> dict[str, Any]:
    """Turn a W&B run's config and summary into a schema-v1 results dictionary (validated)."""
    train = _train_fields(config)
    missing = [f for f in ("dataset", "model", "finetune") if train[f] in (None, "")]
    if missing:
        raise ResultsError(
            f"{source}: W&B config has no {missing}; log a 'train' dict (dataset, model, finetune, seed) in the "
            "run config, as dfd-train does"
        )
    train_sets = set(train["dataset"]) if isinstance(train["dataset"], list) else {str(train["dataset"])}
    tests: dict[str, dict[str, Any]] = {}
    val: dict[str, dict[str, float]] = {}
    for key, value in _flatten(summary).items():
        parts = key.split("/")
        if parts[0] == "test" and len(parts) == 3:
            name, leaf = parts[1], parts[2]
            entry = tests.setdefault(name, {"in_domain": name in train_sets})
            if leaf == "in_domain":
                entry["in_domain"] = bool(value)
                continue
            level, _, metric = leaf.partition("_")
            if level in LEVELS and metric and isinstance(value, int | float) and not isinstance(value, bool):
                entry.setdefault(level, {})[metric] = float(value)
        elif parts[0] == "val" and len(parts) == 2:
            level, _, metric = parts[1].partition("_")
            if level in LEVELS and metric and isinstance(value, int | float) and not isinstance(value, bool):
                val.setdefault(level, {})[metric] = float(value)
    tests = {k: v for k, v in tests.items() if any(lvl in v for lvl in LEVELS)}
    robustness: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for key in [k for k in tests if _robustness_key(k)]:
        name, kind, level = _robustness_key(key)  # type: ignore[misc]
        entry = tests.pop(key)
        # dfd-eval names frame-level points @frame_<kind><level> (robustness.at=frame), crop-level @<kind><level>.
        at = "frame" if kind.startswith(FRAME_PREFIX) else "crop"
        robustness.setdefault(name, {}).setdefault(kind.removeprefix(FRAME_PREFIX), []).append(
            {"level": level, "at": at, **{lvl: entry[lvl] for lvl in LEVELS if lvl in entry}})
    for per_set in robustness.values():
        for points in per_set.values():
            points.sort(key=lambda p: p["level"])
    if not tests:
        raise ResultsError(f"{source}: W&B run has no test/<set>/<level>_<metric> values in its summary")
    recorded = config.get("train") if isinstance(config.get("train"), dict) else {}
    if isinstance(recorded.get("overrides"), dict):
        train["overrides"] = recorded["overrides"]  # what tells a sweep's runs apart (dfd-train logs it)
    data = {"schema_version": SCHEMA_VERSION, "kind": "train", "run_dir": source, "created": created,
            "train": train, "val": val, "test": tests,
            "config": {k: v for k, v in config.items() if k not in ("train", "params")}}
    if robustness:
        data["robustness"] = robustness
    return validate_results(data, source)


def results_file_of(summary: dict[str, Any]) -> Path | None:
    """The run's own results.json (dfd-train logs its path as ``results_json``), when it still exists."""
    p = summary.get("results_json")
    return Path(p) if isinstance(p, str) and Path(p).is_file() else None


def offline_results(path: str | Path) -> tuple[str, dict[str, Any]]:
    """(source, results) of one offline run log: its results.json when present, else rebuilt from the summary."""
    config, summary, created = read_offline_run(path)
    own = results_file_of(summary)
    if own is not None:
        # Full fidelity (ROC points, per-method, robustness) instead of the summary's scalars.
        return str(own), load_results(own)
    return str(path), summary_to_results(config, summary, str(path), created)


# --- online (needs a W&B account; kept minimal and separate) --------------------------------------------------

def online_runs(project: str) -> list[tuple[str, Callable[[], tuple[str, dict[str, Any]]]]]:
    """(source, loader) per finished run of ``entity/project`` through ``wandb.Api()``."""
    import wandb

    try:
        runs = wandb.Api().runs(project, filters={"state": "finished"})
    except Exception as e:  # the API raises assorted auth / network errors
        raise ResultsError(f"error: cannot list W&B runs of '{project}' ({e}); run `wandb login` or set WANDB_API_KEY") from None
    out = []
    for run in runs:
        source = f"wandb:{project}/{run.id}"
        summary = getattr(run.summary, "_json_dict", None) or dict(run.summary)
        out.append((source, lambda r=run, s=source, m=summary: (s, summary_to_results(
            dict(r.config), m, s, str(r.created_at or "")))))
    return out


def offline_mode() -> bool:
    """Whether W&B is set to run without the network (``WANDB_MODE=offline|disabled``, or ``wandb offline``)."""
    import os

    return os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun")


def log_report(project: str | None, m: Any, out: Path, title: str) -> str:
    """Log the matrix (mean, std, CI bounds per cell) and the gap as W&B Tables, and report.html, to a new run of
    ``entity/project`` (``job_type=report``); returns the run's folder (offline) or URL."""
    import pandas as pd
    import wandb

    entity, _, name = (project or "dfd").rpartition("/")
    matrix = pd.read_csv(out / "matrix.csv")
    gap = pd.read_csv(out / "gap.csv")
    run = wandb.init(project=name or "dfd", entity=entity or None, job_type="report", name=title[:120],
                     dir=str(out), config={"metric": m.metric, "report": str(out.resolve())}, reinit="create_new")
    try:
        tables = {"report/matrix": wandb.Table(dataframe=matrix), "report/gap": wandb.Table(dataframe=gap)}
        if (out / "matrix_ci.csv").is_file():
            tables["report/matrix_ci"] = wandb.Table(dataframe=pd.read_csv(out / "matrix_ci.csv"))
        if (out / "report.html").is_file():
            tables["report/html"] = wandb.Html(str(out / "report.html"))
        run.log(tables)
        where = run.url if run.settings.mode == "online" and run.url else str(Path(run.dir).parent)
    finally:
        run.finish()
    return where
