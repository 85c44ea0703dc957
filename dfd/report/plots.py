"""Figures for a report: matrix heatmap, gap bars, ROC curves and reliability diagrams per test set, robustness
curves.

Figures are built on :class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot state), so reports can be
generated on headless machines and inside other programs without touching the global backend.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from dfd.engine.figures import (
    figure,
    finish_reliability_axes,
    finish_roc_axes,
    plot_reliability,
    plot_roc,
    slug,
)
from dfd.report.matrix import LOWER_IS_BETTER, Matrix, level_rows, parse_metric

GRID = np.linspace(0.0, 1.0, 201)  # common FPR grid for averaging ROC curves over seeds


def _fmt(mean: float, std: float) -> str:
    if np.isnan(mean):
        return "–"
    return f"{mean:.3f}" if np.isnan(std) else f"{mean:.3f}\n±{std:.3f}"


def heatmap(m: Matrix, path: Path) -> Path:
    """Annotated heatmap of the matrix (mean ± std per cell, in-domain cells outlined)."""
    mean = m.mean.to_numpy(dtype=float)
    std = m.std.to_numpy(dtype=float)
    rows, cols = mean.shape
    fig = figure(2.8 + 1.25 * cols, 1.4 + 0.55 * rows)
    ax = fig.add_subplot()
    finite = mean[np.isfinite(mean)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi - lo < 1e-6:
        lo, hi = lo - 0.05, hi + 0.05
    cmap = "viridis" if m.higher_is_better else "viridis_r"
    im = ax.imshow(np.ma.masked_invalid(mean), cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
    norm = im.norm
    for i in range(rows):
        for j in range(cols):
            v = mean[i, j]
            # Dark text on the bright end of the colour map, light text on the dark end.
            bright = np.isfinite(v) and (norm(v) > 0.55 if m.higher_is_better else norm(v) < 0.45)
            ax.text(j, i, _fmt(v, std[i, j]), ha="center", va="center", fontsize=8,
                    color="black" if bright or not np.isfinite(v) else "white")
            if m.in_domain.iat[i, j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.0, ec="red"))
    ax.set_xticks(range(cols), list(m.mean.columns), rotation=30, ha="right")
    ax.set_yticks(range(rows), [f"{c} (n={int(m.n_seeds[c])})" for c in m.mean.index])
    ax.set_xlabel("test set (red box: in-domain)")
    ax.set_title(f"cross-dataset {m.metric} (mean ± std over seeds)")
    fig.colorbar(im, ax=ax, shrink=0.8, label=m.metric)
    fig.savefig(path)
    return path


def gap_bars(m: Matrix, path: Path) -> Path:
    """Horizontal bars of the generalization gap per configuration (error bars: std over seeds)."""
    gap = m.gap.dropna(subset=["gap"])
    fig = figure(6.5, 1.2 + 0.45 * max(len(gap), 1))
    ax = fig.add_subplot()
    y = np.arange(len(gap))
    ax.barh(y, gap["gap"], xerr=gap["gap_std"].fillna(0.0), color="tab:orange", capsize=3)
    ax.set_yticks(y, list(gap.index))
    ax.axvline(0.0, color="black", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel(f"in-domain − mean cross-domain {m.metric}")
    ax.set_title("generalization gap")
    fig.savefig(path)
    return path


def _mean_curve(curves: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Vertical averaging: interpolate each seed's TPR on a common FPR grid, return mean and std."""
    tprs = []
    for c in curves:
        fpr, tpr = np.asarray(c["fpr"], float), np.asarray(c["tpr"], float)
        order = np.lexsort((tpr, fpr))
        tprs.append(np.interp(GRID, fpr[order], tpr[order]))
    t = np.vstack(tprs)
    return t.mean(0), (t.std(0, ddof=1) if len(t) > 1 else np.zeros_like(GRID))


def roc_curves(rocs: list[dict[str, Any]], long: pd.DataFrame, level: str, out: Path) -> dict[str, Path]:
    """One PNG per test set with one ROC per training configuration (averaged over seeds)."""
    by_set: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    levels_per_set: dict[str, set[str]] = defaultdict(set)
    for c in rocs:
        levels_per_set[c["test_set"]].add(c["level"])
    for c in rocs:
        # Fall back to the other level only where a test set has no curve at the requested one.
        if c["level"] == level or level not in levels_per_set[c["test_set"]]:
            by_set[c["test_set"]][c["config"]].append(c)
    auc = long[(long["section"] == "test") & (long["metric"] == "auc")].groupby(
        ["config", "test_set", "level"])["value"].mean()
    paths: dict[str, Path] = {}
    for test_set, configs in by_set.items():
        fig = figure(5.6, 5.0)
        ax = fig.add_subplot()
        for config in sorted(configs):
            curves = configs[config]
            lvl = curves[0]["level"]
            mean, std = _mean_curve(curves)
            value = auc.get((config, test_set, lvl), np.nan)
            label = f"{config} (AUC {value:.3f}, n={len(curves)})" if np.isfinite(value) else config
            plot_roc(ax, GRID, mean, label, std if len(curves) > 1 else None)
        finish_roc_axes(ax, f"ROC on {test_set} ({'/'.join(sorted({c[0]['level'] for c in configs.values()}))} level)")
        path = out / f"roc_{slug(test_set)}.png"
        fig.savefig(path)
        paths[test_set] = path
    return paths


def pool_bins(entries: list[dict[str, Any]]) -> dict[str, list]:
    """Reliability bins of several runs (seeds) pooled: counts add up, means are count-weighted."""
    count = np.sum([e["count"] for e in entries], axis=0)
    out: dict[str, list] = {"count": count.astype(int).tolist()}
    for key in ("mean_prob", "frac_fake"):
        total = np.sum([[(v or 0.0) * c for v, c in zip(e[key], e["count"], strict=True)] for e in entries], axis=0)
        out[key] = [float(t / c) if c else None for t, c in zip(total, count, strict=True)]
    return out


def reliability_diagrams(bins: list[dict[str, Any]], long: pd.DataFrame, level: str, out: Path) -> dict[str, Path]:
    """One PNG per test set with one reliability curve per training configuration (its seeds' bins pooled), at
    ``level`` (the other level where a test set has only that), labelled with the mean ECE over seeds."""
    by_set: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    levels_per_set: dict[str, set[str]] = defaultdict(set)
    for b in bins:
        levels_per_set[b["test_set"]].add(b["level"])
    for b in bins:
        if b["level"] == level or level not in levels_per_set[b["test_set"]]:
            by_set[b["test_set"]][b["config"]].append(b)
    ece = long[(long["section"] == "test") & (long["metric"] == "ece")].groupby(
        ["config", "test_set", "level"])["value"].mean()
    paths: dict[str, Path] = {}
    for test_set, configs in by_set.items():
        if not any(sum(e["count"]) for entries in configs.values() for e in entries):
            continue
        fig = figure(5.6, 5.0)
        ax = fig.add_subplot()
        for config in sorted(configs):
            entries = configs[config]
            pooled = pool_bins(entries)
            value = ece.get((config, test_set, entries[0]["level"]), np.nan)
            label = f"{config} (ECE {value:.3f}, n={len(entries)})" if np.isfinite(value) else config
            plot_reliability(ax, pooled["mean_prob"], pooled["frac_fake"], pooled["count"], label)
        lvl = "/".join(sorted({e[0]["level"] for e in configs.values()}))
        finish_reliability_axes(ax, f"reliability on {test_set} ({lvl} level)")
        path = out / f"reliability_{slug(test_set)}.png"
        fig.savefig(path)
        paths[test_set] = path
    return paths


def robustness_curves(long: pd.DataFrame, metric: str, out: Path) -> dict[str, Path]:
    """One PNG per perturbation: metric vs perturbation level, a panel per test set, a line per config."""
    level, name = parse_metric(metric)
    sel, _ = level_rows(long, "robustness", level, name)
    paths: dict[str, Path] = {}
    for pert, psel in sel.groupby("perturbation", sort=True):
        test_sets = list(dict.fromkeys(psel["test_set"]))
        fig = figure(4.2 * len(test_sets) + 0.6, 3.8)
        axes = fig.subplots(1, len(test_sets), squeeze=False)[0]
        for ax, test_set in zip(axes, test_sets, strict=True):
            stats = psel[psel["test_set"] == test_set].groupby(["config", "severity"])["value"].agg(["mean", "std"])
            for config, s in stats.groupby(level="config"):
                x = s.index.get_level_values("severity").to_numpy()
                ax.errorbar(x, s["mean"], yerr=s["std"].fillna(0.0), marker="o", ms=3, capsize=2, label=config)
            if pert == "jpeg":
                ax.invert_xaxis()  # lower JPEG quality = stronger perturbation, read left to right
            ax.set_title(test_set)
            ax.set_xlabel(f"{pert} level")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"robustness to {pert} ({'lower' if name in LOWER_IS_BETTER else 'higher'} is better)")
        path = out / f"robustness_{slug(str(pert))}.png"
        fig.savefig(path)
        paths[str(pert)] = path
    return paths


def distortion_grid(long: pd.DataFrame, metric: str) -> pd.DataFrame:
    """DeeperForensics' distortions as a grid: one row per (config, test set, where, type), columns ``clean`` and the
    levels 1-5, each the metric's mean over seeds (``<column>_std``: its std); ``at`` is where the sweep acted
    (``crop`` or ``frame``). Empty when no run swept them."""
    from dfd.store.distort import DF_KINDS, DF_LEVELS, DF_TYPES

    level, name = parse_metric(metric)
    sel = long[(long["level"] == level) & (long["metric"] == name)]
    rob = sel[sel["section"] == "robustness"].copy()
    if rob.empty:  # str.partition on an empty column gives a frame without columns 0-2
        return pd.DataFrame()
    split = rob["perturbation"].astype(str).str.partition("@")
    rob["kind"], rob["at"] = split[0], split[2].replace("", "crop")
    rob = rob[rob["kind"].isin(list(DF_KINDS))]
    if rob.empty:
        return pd.DataFrame()
    clean = sel[sel["section"] == "test"].groupby(["config", "test_set"])["value"].agg(["mean", "std"])
    cells = rob.groupby(["config", "test_set", "at", "kind", "severity"])["value"].agg(["mean", "std"])
    rows = []
    for (config, test_set, at), _ in rob.groupby(["config", "test_set", "at"], sort=True):
        base = clean.loc[(config, test_set)] if (config, test_set) in clean.index else None
        for t in DF_TYPES:
            kind = f"df_{t.lower()}"
            row = {"config": config, "test_set": test_set, "at": at, "type": t,
                   "clean": float(base["mean"]) if base is not None else np.nan,
                   "clean_std": float(base["std"]) if base is not None else np.nan}
            for lv in DF_LEVELS:
                key = (config, test_set, at, kind, float(lv))
                row[str(lv)] = float(cells.loc[key, "mean"]) if key in cells.index else np.nan
                row[f"{lv}_std"] = float(cells.loc[key, "std"]) if key in cells.index else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def distortion_heatmaps(long: pd.DataFrame, metric: str, out: Path) -> dict[str, Path]:
    """One PNG per test set and place (crop / frame): DeeperForensics type x level heatmap of the metric (a panel
    per configuration), the clean value as the first column. Keys: the test set, ``<test set>@frame`` at frame level."""
    from dfd.store.distort import DF_LEVELS, DF_NAMES

    grid = distortion_grid(long, metric)
    paths: dict[str, Path] = {}
    if grid.empty:
        return paths
    _, name = parse_metric(metric)
    cols = ["clean", *map(str, DF_LEVELS)]
    for (test_set, at), tsel in grid.groupby(["test_set", "at"], sort=True):
        configs = list(dict.fromkeys(tsel["config"]))
        fig = figure(1.6 + 5.2 * len(configs), 4.2)
        axes = fig.subplots(1, len(configs), squeeze=False)[0]
        for ax, config in zip(axes, configs, strict=True):
            g = tsel[tsel["config"] == config]
            values = g[cols].to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            if hi - lo < 1e-6:
                lo, hi = lo - 0.05, hi + 0.05
            lower = name in LOWER_IS_BETTER
            im = ax.imshow(np.ma.masked_invalid(values), cmap="viridis_r" if lower else "viridis", vmin=lo, vmax=hi,
                           aspect="auto")
            for i in range(values.shape[0]):
                for j in range(values.shape[1]):
                    v = values[i, j]
                    bright = np.isfinite(v) and (im.norm(v) < 0.45 if lower else im.norm(v) > 0.55)
                    ax.text(j, i, "–" if not np.isfinite(v) else f"{v:.3f}", ha="center", va="center", fontsize=8,
                            color="black" if bright or not np.isfinite(v) else "white")
            ax.set_xticks(range(len(cols)), ["clean", *[f"level {lv}" for lv in DF_LEVELS]], rotation=30, ha="right")
            ax.set_yticks(range(len(g)), [f"{t} {DF_NAMES[t]}" for t in g["type"]])
            ax.set_title(config, fontsize=9)
            fig.colorbar(im, ax=ax, shrink=0.8, label=metric)
        where = "source frames" if at == "frame" else "stored crops"
        fig.suptitle(f"{metric} on {test_set} under DeeperForensics-1.0's distortions of the {where} (type x level)")
        key = str(test_set) if at == "crop" else f"{test_set}@{at}"
        path = out / f"distortions_{slug(key)}.png"
        fig.savefig(path)
        paths[key] = path
    return paths


def roc_all_sets(rocs: list[dict[str, Any]], long: pd.DataFrame, level: str, out: Path) -> dict[str, Path]:
    """One PNG per training configuration with the ROC of every test set it was tested on (seeds averaged)."""
    by_config: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for c in rocs:
        if c["level"] == level:
            by_config[c["config"]][c["test_set"]].append(c)
    auc = long[(long["section"] == "test") & (long["metric"] == "auc") & (long["level"] == level)].groupby(
        ["config", "test_set"])["value"].mean()
    paths: dict[str, Path] = {}
    for config, sets in sorted(by_config.items()):
        fig = figure(5.6, 5.0)
        ax = fig.add_subplot()
        for test_set, curves in sets.items():
            mean, std = _mean_curve(curves)
            value = auc.get((config, test_set), np.nan)
            label = f"{test_set} (AUC {value:.3f})" if np.isfinite(value) else test_set
            plot_roc(ax, GRID, mean, label, std if len(curves) > 1 else None)
        finish_roc_axes(ax, f"{config}: every test set ({level} level)")
        paths[config] = out / f"roc_all_{slug(config)}.png"
        fig.savefig(paths[config])
    return paths


def per_method_bars(long: pd.DataFrame, metric: str, out: Path) -> dict[str, Path]:
    """One PNG per test set with per-method results: grouped bars, one group per method, a bar per configuration
    (error bars: std over seeds)."""
    level, name = parse_metric(metric)
    sel = long[(long["section"] == "per_method") & (long["level"] == level) & (long["metric"] == name)]
    paths: dict[str, Path] = {}
    for test_set in dict.fromkeys(sel["test_set"]):
        stats = sel[sel["test_set"] == test_set].groupby(["method", "config"])["value"].agg(["mean", "std"])
        methods = sorted(stats.index.get_level_values("method").unique())
        configs = sorted(stats.index.get_level_values("config").unique())
        fig = figure(1.2 + 0.9 * len(methods) * max(1, len(configs)) ** 0.5, 3.8)
        ax = fig.add_subplot()
        width = 0.8 / max(len(configs), 1)
        for k, config in enumerate(configs):
            x = np.arange(len(methods)) + (k - (len(configs) - 1) / 2) * width
            rows = [stats.loc[(m, config)] if (m, config) in stats.index else None for m in methods]
            ax.bar(x, [r["mean"] if r is not None else np.nan for r in rows], width,
                   yerr=[0.0 if r is None or np.isnan(r["std"]) else r["std"] for r in rows], capsize=2,
                   label=config)
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per method on {test_set}")
        if name == "auc":
            ax.axhline(0.5, color="grey", ls="--", lw=0.8)
            ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
        paths[test_set] = out / f"per_method_{slug(test_set)}.png"
        fig.savefig(paths[test_set])
    return paths
