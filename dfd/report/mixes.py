"""Training sets ranked by how well they generalise: mean held-out score per training mix (experiment=mix_search).

Runs that share a model, fine-tuning and variant but differ in their training data (a mix such as
``ffpp+celebdf_v2``, or one set alone) are ranked by their mean over the **common held-out** test sets: those
every compared mix tested and none trained on (a set in a mix is in-domain for it and would favour that mix).
With the in-the-wild test bed these are its in-the-wild sets. Each mix's mean over all of its own held-out sets
is listed beside it, not ranked on (mixes would then be scored on different sets).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dfd.report.matrix import Matrix

COLUMNS = ["model", "finetune", "variant", "rank", "dataset", "config", "mean", "n_sets", "test_sets",
           "mean_held_out", "n_held_out", "n_seeds"]


def rank_mixes(m: Matrix) -> pd.DataFrame:
    """One row per configuration of every (model, finetune, variant) group holding two or more training sets,
    ranked by the mean over the group's common held-out test sets (1 = best); empty when no group compares."""
    rows = []
    meta = m.meta.fillna("")
    for key, group in meta.groupby(["model", "finetune", "variant"], sort=True):
        configs = list(group.index)
        if group["dataset"].nunique() < 2:
            continue
        values = m.mean.loc[configs]
        cross = ~m.in_domain.loc[configs]
        common = [t for t in values.columns if values[t].notna().all() and cross[t].all()]
        for config in configs:
            own = [t for t in values.columns if pd.notna(values.at[config, t]) and cross.at[config, t]]
            rows.append({
                "model": key[0], "finetune": key[1], "variant": key[2], "dataset": meta.at[config, "dataset"],
                "config": config,
                "mean": float(values.loc[config, common].mean()) if common else np.nan,
                "n_sets": len(common), "test_sets": ", ".join(common),
                "mean_held_out": float(values.loc[config, own].mean()) if own else np.nan,
                "n_held_out": len(own), "n_seeds": int(m.n_seeds.get(config, 0)),
            })
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.DataFrame(rows)
    df["rank"] = df.groupby(["model", "finetune", "variant"])["mean"].rank(
        ascending=not m.higher_is_better, method="min").astype("Int64")
    return df.sort_values(["model", "finetune", "variant", "rank"], na_position="last")[COLUMNS].reset_index(drop=True)


def markdown(ranking: pd.DataFrame, metric: str) -> str:
    """The report.md section: one table per compared (model, fine-tuning) group."""
    lines = [f"## Training mixes ranked by mean held-out {metric}", "",
             "Mean over the test sets every compared mix tested and none trained on (its in-domain sets would favour "
             "it); `all held-out` is each mix's mean over all of its own held-out sets (not ranked on).", ""]
    for (model, finetune, variant), g in ranking.groupby(["model", "finetune", "variant"], sort=False):
        name = " ".join(x for x in (model, finetune, variant) if x)
        lines += [f"**{name}** — ranked on: {g['test_sets'].iloc[0] or '(no common held-out set)'}", "",
                  "| rank | training data | mean | all held-out (sets) | seeds |", "|---|---|---|---|---|"]
        for r in g.itertuples():
            mean = "n/a" if pd.isna(r.mean) else f"{r.mean:.4f}"
            held = "n/a" if pd.isna(r.mean_held_out) else f"{r.mean_held_out:.4f}"
            rank = "-" if pd.isna(r.rank) else str(r.rank)
            lines.append(f"| {rank} | {r.dataset} | {mean} | {held} ({r.n_held_out}) | {r.n_seeds} |")
        lines.append("")
    return "\n".join(lines)


def write(ranking: pd.DataFrame, out: Path, report: Path, metric: str) -> Path:
    """``mix_ranking.csv`` in ``out`` and the section appended to ``report`` (report.md)."""
    path = out / "mix_ranking.csv"
    ranking.to_csv(path, index=False, float_format="%.10g")
    with report.open("a") as f:
        f.write("\n" + markdown(ranking, metric) + "\n")
    return path
