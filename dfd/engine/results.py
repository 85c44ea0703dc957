"""``results.json``: the stable, human-readable record of a run that evaluation, reports and tests read.

W&B offline keeps no readable summary, so every run (training or ``dfd-eval``) writes this file in its run
directory. Schema (``schema_version`` 1)::

    {"schema_version": 1, "kind": "train" | "eval", "run_dir": ..., "created": ISO time,
     "run_id": the training run's id (its checkpoints' `dfd.run_id`; dfd-eval: the evaluated checkpoint's run),
     "train": {"dataset", "model", "finetune", "seed", "experiment",
               "overrides": {key: value}},          # what defines the trained model (dfd.engine.provenance)
     "checkpoint": path, "params": {"trainable", "total"},
     "selection": {"split", "monitor", "mode", "criterion", "checkpoint", "epoch", "step", "value",
                   "history": [{"epoch", "step", "value", <val metrics>}]},        # dfd-train
     "invocation": {"command", "overrides": [as typed], "multirun_job", "sweep": {"id", "run_id", "parameters"}},
     "config": {resolved config},                  # dfd-train; dfd-eval: its "eval" block (the no-face rule)
     "val": {"unit", "headline", "frame": {...}, "video": {...}},    # the levels of its unit, as a test entry
     "test": {<name>: {"in_domain": bool,
                       "unit": "video" | "image" | "mixed",       # what its items are (dfd.engine.metrics)
                       "headline": "video" | "image" | "item",    # the level one number stands for
                       "frame": {auc, acc, ap, eer, tpr@fpr1, tpr@fpr5, ece, brier, logloss, n, n_real, n_fake},
                       "video": {..., auc_lo, auc_hi},            # videos: the video score
                       "image": {..., auc_lo, auc_hi},            # still images (no frame/video level for them)
                       "item": {..., auc_lo, auc_hi},             # mixed sets only: every video and image
                       "per_method": {<method>: {<level>: {...}}},
                       "per_method_type": {<kind of fake>: {<level>: {...}}},  # reals + its fakes
                       "no_face": {"rule": "drop" | "score", "score", "videos": {"real", "fake"},
                                   "frames": {"real", "fake"}, "unreadable_videos": {"real", "fake"}},
                       "roc": {<level>: {"fpr": [...], "tpr": [...]}},
                       "calibration": {<level>: {"bins", "count": [...], "mean_prob": [...], "frac_fake": [...]}}}},
     "robustness": {<name>: {<perturbation>: [{"level": x, "at": "crop" | "frame", <level>: {...},
                                               "videos_lost": n}]}},   # videos_lost: at=frame, faces lost
     "bootstrap": {how auc_lo/auc_hi were computed}, "notes": [one-line warnings, skipped optional test sets],
     "video_score": {"rule", "description"},       # how crops made frame and video scores (dfd.engine.video_score)
     "predictions": "predictions.parquet"}

New keys are added without a version bump (readers ignore what they do not know); ``make_results`` accepts
any extra keyword as a top-level key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

SCHEMA_VERSION = 1
#: The metric levels of a test entry (dfd.engine.metrics: ``frame``/``video`` for videos, ``image`` for still
#: images, ``item`` for every item of a set holding both).
LEVELS = ("frame", "video", "image", "item")


def _clean(obj):
    """JSON has no NaN: write null (readers get None and treat it as undefined)."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def make_results(kind: str, run_dir: str | Path, train: dict, test: dict, val: dict | None = None,
                 checkpoint: str | None = None, in_domain: str | Iterable[str] | None = None, **extra) -> dict:
    """Assemble the results document; ``in_domain`` names the training set(s) (a mix has several)."""
    own = {in_domain} if isinstance(in_domain, str) else set(in_domain or ())
    tests = {}
    for name, rep in test.items():
        tests[name] = {"in_domain": name in own, **rep}
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "run_dir": str(run_dir),
        "created": datetime.now().isoformat(timespec="seconds"),
        "train": train,
        "checkpoint": checkpoint,
        "val": {k: v for k, v in val.items() if k in (*LEVELS, "unit", "headline")} if val else None,
        "test": tests,
        **extra,
    }


def write_results(results: dict, run_dir: str | Path) -> Path:
    """Write ``results.json`` atomically into the run directory."""
    from dfd import atomic

    return atomic.write_text(Path(run_dir) / "results.json", json.dumps(_clean(results), indent=2))


def read_results(path: str | Path) -> dict:
    """Read a results.json (or the one inside a run directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    return json.loads(path.read_text())
