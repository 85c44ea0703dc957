"""The cross-dataset matrix (training configuration × test set) and the generalization gap, over seeds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dfd.report.results import LEVELS

META_COLUMNS = ["config", "dataset", "model", "finetune", "variant", "n_seeds", "n_runs"]
# Metrics where a smaller number is the better detector (colour maps and "best" marks flip for them).
LOWER_IS_BETTER = {"eer", "loss", "logloss", "brier", "ece"}


#: Levels that stand for a test set's items (videos, images, every item of a mixed set). Where a set lacks the
#: asked ``video`` or ``item`` level (``video_auc`` on a set of still images), its headline level stands in and
#: the report says so; ``image_*`` matrices hold image levels only.
ITEM_LEVELS = ("video", "image", "item")
STAND_IN_FOR = ("video", "item")


def parse_metric(name: str) -> tuple[str, str]:
    """Split ``video_auc`` into (``video``, ``auc``) so a CLI metric name addresses the long table."""
    level, _, metric = name.partition("_")
    if level not in LEVELS or not metric:
        raise ValueError(f"metric '{name}' must look like <{'|'.join(LEVELS)}>_<metric>, e.g. video_auc, "
                         "image_auc or frame_eer")
    return level, metric


def level_rows(long: pd.DataFrame, section: str, level: str, metric: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """Rows of ``section`` reporting ``metric`` at ``level``; for ``video``/``item``, test sets without it add
    their headline level's rows (a set of still images in a ``video_auc`` matrix shows its image AUC). Returns the
    rows and ``{test set: level shown}`` for the sets shown at another level."""
    base = long[(long["section"] == section) & (long["metric"] == metric)]
    sel = base[base["level"] == level]
    if level not in STAND_IN_FOR or "headline" not in base.columns:
        return sel, {}
    top = base["headline"].fillna(False).astype(bool)
    have = pd.MultiIndex.from_frame(sel[["config", "test_set"]])  # (configuration, test set) pairs at the level
    lacking = ~pd.MultiIndex.from_frame(base[["config", "test_set"]]).isin(have)
    extra = base[top & base["level"].isin(ITEM_LEVELS) & (base["level"] != level) & lacking]
    if extra.empty:
        return sel, {}
    shown = dict(extra[["test_set", "level"]].drop_duplicates("test_set").itertuples(index=False))
    return pd.concat([sel, extra]), shown


@dataclass
class Matrix:
    """One metric's cross-dataset matrix: means, sample std over seeds, in-domain mask and gap."""

    metric: str
    per_seed: pd.DataFrame  # index (config, seed), one column per test set
    mean: pd.DataFrame  # index config
    std: pd.DataFrame  # sample std (ddof=1); NaN with a single seed
    n_seeds: pd.Series
    in_domain: pd.DataFrame  # bool, same shape as mean
    gap: pd.DataFrame  # in_domain, cross_domain, gap and their std, per config
    meta: pd.DataFrame  # dataset, model, finetune, variant per config
    n_runs: pd.Series | None = None  # training runs per config (exact repeats included, evaluations not)
    # Bootstrap interval bounds (metrics that have them: video AUC): one seed's interval, or with several
    # seeds the per-seed bounds averaged (the test-sampling uncertainty of one run); None otherwise.
    ci_lo: pd.DataFrame | None = None
    ci_hi: pd.DataFrame | None = None
    # Test sets shown at their own headline level because they lack the metric's (image sets in video_auc).
    shown_levels: dict[str, str] = field(default_factory=dict)

    @property
    def higher_is_better(self) -> bool:
        """Whether larger values mean a better detector (False for EER)."""
        return parse_metric(self.metric)[1] not in LOWER_IS_BETTER

    @property
    def empty(self) -> bool:
        """True when no run reported this metric on any test set."""
        return self.mean.empty


def _ordered_unique(values: pd.Series) -> list[str]:
    return list(dict.fromkeys(values.tolist()))


def _bounds(long: pd.DataFrame, level: str, name: str, configs: list[str], test_sets: list[str]
            ) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    out = []
    for suffix in ("lo", "hi"):
        sel, _ = level_rows(long, "test", level, f"{name}_{suffix}")
        if sel.empty:
            return None, None
        per_seed = (sel.drop_duplicates(["config", "seed", "test_set"], keep="last")
                    .set_index(["config", "seed", "test_set"])["value"].unstack("test_set"))
        out.append(per_seed.groupby(level="config").mean().reindex(index=configs, columns=test_sets))
    for frame in out:
        frame.columns.name = None
    return out[0], out[1]


def build_matrix(long: pd.DataFrame, metric: str = "video_auc", n_runs: pd.Series | None = None) -> Matrix:
    """Pivot the long table into the cross-dataset matrix of ``metric`` with mean ± std over seeds.

    ``n_runs``: training runs per configuration (exact repeats included; an evaluation of a run's checkpoint
    belongs to that run), for matrix.csv's ``n_runs``.
    """
    level, name = parse_metric(metric)
    sel, shown = level_rows(long, "test", level, name)
    # Test sets keep the order runs listed them (the experiment's order); configurations sort by name.
    test_sets = _ordered_unique(sel.sort_values("source", kind="stable")["test_set"])
    clash = set(test_sets) & set(META_COLUMNS)
    if clash:
        raise ValueError(f"test set name(s) {sorted(clash)} clash with matrix.csv's own columns; rename them")
    # Not pivot_table: it drops undefined (NaN) cells, and with them runs whose AUC is undefined on every set.
    per_seed = (sel.drop_duplicates(["config", "seed", "test_set"], keep="last")
                .set_index(["config", "seed", "test_set"])["value"].unstack("test_set").reindex(columns=test_sets))
    per_seed.columns.name = None
    configs = sorted(sel["config"].unique())
    grouped = per_seed.groupby(level="config")
    mean = grouped.mean().reindex(configs)
    std = grouped.std(ddof=1).reindex(configs)
    n_seeds = per_seed.reset_index().groupby("config")["seed"].nunique().reindex(configs).rename("n_seeds")

    dom = sel.groupby(["config", "test_set"])["in_domain"].any().unstack()
    in_domain = dom.reindex(index=configs, columns=test_sets).fillna(False).astype(bool)

    # Gap per run first, then mean ± std over seeds: the spread of the gap is what a reader compares.
    mask = in_domain.reindex(per_seed.index.get_level_values("config")).to_numpy()
    values = per_seed.to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        ind = np.where(mask, values, np.nan)
        cross = np.where(~mask, values, np.nan)
        cnt_in, cnt_cross = (~np.isnan(ind)).sum(1), (~np.isnan(cross)).sum(1)
        ind_mean = np.where(cnt_in > 0, np.nansum(ind, 1) / np.maximum(cnt_in, 1), np.nan)
        cross_mean = np.where(cnt_cross > 0, np.nansum(cross, 1) / np.maximum(cnt_cross, 1), np.nan)
    run_gap = pd.DataFrame({"in_domain": ind_mean, "cross_domain": cross_mean, "gap": ind_mean - cross_mean},
                           index=per_seed.index)
    g = run_gap.groupby(level="config")
    gap = g.mean().join(g.std(ddof=1), rsuffix="_std").reindex(configs)
    gap = gap[["in_domain", "in_domain_std", "cross_domain", "cross_domain_std", "gap", "gap_std"]]

    meta = (sel.drop_duplicates("config").set_index("config")[["dataset", "model", "finetune", "variant"]]
            .reindex(configs))
    runs = (n_runs.reindex(configs).fillna(n_seeds) if n_runs is not None else n_seeds).astype(int).rename("n_runs")
    ci_lo, ci_hi = _bounds(long, level, name, configs, test_sets)
    return Matrix(metric=metric, per_seed=per_seed, mean=mean, std=std, n_seeds=n_seeds, in_domain=in_domain,
                  gap=gap, meta=meta, n_runs=runs, ci_lo=ci_lo, ci_hi=ci_hi, shown_levels=shown)


def write_csvs(m: Matrix, long: pd.DataFrame, out: Path) -> dict[str, Path]:
    """Write ``matrix.csv``, ``matrix_std.csv``, ``gap.csv``, ``results_long.csv`` and, when the metric has
    bootstrap intervals, ``matrix_ci.csv`` (``<test set>``, ``<test set>_lo``, ``<test set>_hi`` per row)."""
    out.mkdir(parents=True, exist_ok=True)
    front = m.meta.join(m.n_seeds).join(m.n_runs if m.n_runs is not None else m.n_seeds.rename("n_runs"))
    paths = {
        "matrix": out / "matrix.csv",
        "matrix_std": out / "matrix_std.csv",
        "gap": out / "gap.csv",
        "long": out / "results_long.csv",
    }
    front.join(m.mean).rename_axis("config").to_csv(paths["matrix"], float_format="%.10g")
    front.join(m.std).rename_axis("config").to_csv(paths["matrix_std"], float_format="%.10g")
    if m.ci_lo is not None and m.ci_hi is not None:
        paths["matrix_ci"] = out / "matrix_ci.csv"
        cols = {}
        for t in m.mean.columns:
            cols[t], cols[f"{t}_lo"], cols[f"{t}_hi"] = m.mean[t], m.ci_lo[t], m.ci_hi[t]
        front.join(pd.DataFrame(cols)).rename_axis("config").to_csv(paths["matrix_ci"], float_format="%.10g")
    m.n_seeds.to_frame().join(m.gap).rename_axis("config").to_csv(paths["gap"], float_format="%.10g")
    long.sort_values(["config", "seed", "section", "test_set", "method", "perturbation", "severity", "level",
                      "metric"], kind="stable").to_csv(paths["long"], index=False, float_format="%.10g")
    return paths
