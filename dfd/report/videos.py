"""Per-video views of a report: the worst-scored videos per configuration and test set.

Read from each run's ``predictions.parquet`` (written by dfd-train / dfd-eval beside results.json). A
configuration's video score is its P(fake) averaged over the configuration's runs (seeds; of exact repeats
only the newest run counts, as in the matrix).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

WORST_COLUMNS = ["config", "test_set", "rank", "video_id", "label", "method", "prob_fake", "error", "n_runs"]


def worst_videos(runs: Sequence[dict[str, Any]], n: int) -> pd.DataFrame:
    """The ``n`` videos per (configuration, test set) furthest from their label; empty without predictions."""
    from dfd.engine.predictions import read_predictions
    from dfd.engine.predictions import worst_videos as worst_videos_of

    # Per (configuration, seed, test set) one run's scores: the training run's for its own test sets (an
    # evaluation of its checkpoint adds the others), else the newest file's.
    chosen: dict[tuple[str, Any, str], tuple[tuple, pd.DataFrame]] = {}
    for run in runs:
        if not run.get("predictions"):
            continue
        df = read_predictions(run["predictions"])[["test_set", "video_id", "label", "method", "prob_fake"]]
        rank = (run.get("kind", "train") == "train", run["created"], run["source"])
        for test_set, part in df.groupby("test_set", sort=False):
            key = (run["config"], run["seed"], str(test_set))
            if key not in chosen or rank > chosen[key][0]:
                chosen[key] = (rank, part.assign(config=run["config"]))
    frames = [part for _, part in chosen.values()]
    if not frames or n <= 0:
        return pd.DataFrame(columns=WORST_COLUMNS)
    videos = (pd.concat(frames, ignore_index=True)
              .groupby(["config", "test_set", "video_id"], sort=False)
              .agg(label=("label", "first"), method=("method", "first"), prob_fake=("prob_fake", "mean"),
                   n_runs=("prob_fake", "size")).reset_index())
    return worst_videos_of(videos, n, by=["config", "test_set"])[WORST_COLUMNS]
