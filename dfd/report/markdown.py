"""``report.md``: the tables and figures of a report as one Markdown page (renders on GitHub)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from dfd.report.collect import Collection
from dfd.report.figures import find_figures
from dfd.report.matrix import Matrix, build_matrix, level_rows, parse_metric


def _cell(mean: float, std: float, bold: bool = False, lo: float = np.nan, hi: float = np.nan) -> str:
    if not np.isfinite(mean):
        return "–"
    text = f"{mean:.3f}" if not np.isfinite(std) else f"{mean:.3f} ± {std:.3f}"
    if np.isfinite(lo) and np.isfinite(hi):
        text += f" [{lo:.3f}, {hi:.3f}]"
    return f"**{text}**" if bold else text


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    esc = [[str(c).replace("|", "\\|") for c in r] for r in [list(header), *rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return "\n".join(lines)


def matrix_table(m: Matrix) -> str:
    """The matrix as Markdown: mean ± std [bootstrap interval] per cell, in-domain cells bold."""
    rows = []
    for config in m.mean.index:
        cells = []
        for t in m.mean.columns:
            lo = m.ci_lo.at[config, t] if m.ci_lo is not None else np.nan
            hi = m.ci_hi.at[config, t] if m.ci_hi is not None else np.nan
            cells.append(_cell(m.mean.at[config, t], m.std.at[config, t], bool(m.in_domain.at[config, t]), lo, hi))
        runs = int(m.n_runs[config]) if m.n_runs is not None else int(m.n_seeds[config])
        seeds = str(int(m.n_seeds[config])) + (f" ({runs} runs)" if runs != int(m.n_seeds[config]) else "")
        rows.append([config, seeds, *cells])
    return table(["training configuration", "seeds", *m.mean.columns], rows)


def worst_table(worst: pd.DataFrame) -> str:
    """The worst-scored videos per configuration and test set."""
    rows = [[r.config, r.test_set, str(r.rank), f"`{r.video_id}`", "fake" if r.label else "real", str(r.method),
             f"{r.prob_fake:.4f}", str(r.n_runs)] for r in worst.itertuples()]
    return table(["training configuration", "test set", "rank", "video", "label", "method", "P(fake)", "runs"], rows)


def gap_table(m: Matrix, long: pd.DataFrame) -> str:
    """Validation, in-domain, mean cross-domain and their difference per configuration."""
    level, name = parse_metric(m.metric)
    val, _ = level_rows(long, "val", level, name)
    val = val.groupby("config")["value"].agg(["mean", "std"])
    rows = [[c, str(int(m.n_seeds[c])), _cell(*val.loc[c]) if c in val.index else "–",
             _cell(g.in_domain, g.in_domain_std), _cell(g.cross_domain, g.cross_domain_std), _cell(g.gap, g.gap_std)]
            for c, g in m.gap.iterrows()]
    return table(["training configuration", "seeds", "validation", "in-domain test", "cross-domain (mean)", "gap"],
                 rows)


def per_method_tables(long: pd.DataFrame, metric: str) -> list[tuple[str, str]]:
    """One table per test set that reports per-method results: configurations × manipulation methods."""
    level, name = parse_metric(metric)
    sel, _ = level_rows(long, "per_method", level, name)
    out = []
    for test_set in dict.fromkeys(sel["test_set"]):
        s = sel[sel["test_set"] == test_set].groupby(["config", "method"])["value"].agg(["mean", "std"])
        methods = sorted(s.index.get_level_values("method").unique())
        rows = []
        for config in sorted(s.index.get_level_values("config").unique()):
            rows.append([config, *[_cell(*s.loc[(config, mth)]) if (config, mth) in s.index else "–"
                                   for mth in methods]])
        out.append((test_set, table(["training configuration", *methods], rows)))
    return out


def per_kind_tables(long: pd.DataFrame, level: str) -> list[tuple[str, str]]:
    """One table per test set whose runs break results down by kind of fake (the index's ``method_type``):
    configurations × kinds, each cell AUC and TPR at 1 % FPR on the reals plus that kind's fakes."""
    sel = long[(long["section"] == "per_method_type") & (long["level"] == level)
               & long["metric"].isin(["auc", "tpr@fpr1"])]
    out = []
    for test_set in dict.fromkeys(sel["test_set"]):
        s = sel[sel["test_set"] == test_set].groupby(["config", "method", "metric"])["value"].agg(["mean", "std"])
        kinds = sorted(s.index.get_level_values("method").unique())
        rows = []
        for config in sorted(s.index.get_level_values("config").unique()):
            cells = []
            for kind in kinds:
                for metric in ("auc", "tpr@fpr1"):
                    key = (config, kind, metric)
                    cells.append(_cell(*s.loc[key]) if key in s.index else "–")
            rows.append([config, *cells])
        header = [h for kind in kinds for h in (f"{kind} AUC", f"{kind} TPR@1%")]
        out.append((test_set, table(["training configuration", *header], rows)))
    return out


def faces_table(long: pd.DataFrame) -> str | None:
    """Per configuration and test set: the no-face rule and how many videos and frames had no face, per label."""
    sel = long[long["section"] == "no_face"]
    if sel.empty:
        return None
    s = sel.groupby(["config", "test_set", "level", "metric"], sort=False)["value"].mean()

    def get(config: str, test_set: str, level: str, metric: str) -> str:
        v = s.get((config, test_set, level, metric), np.nan)
        return "n/a" if not np.isfinite(v) else f"{v:g}"

    rows = []
    for config, test_set in dict.fromkeys(zip(sel["config"], sel["test_set"], strict=True)):
        scored = s.get((config, test_set, "video", "no_face_scored"), 0.0)
        rule = (f"score ({get(config, test_set, 'video', 'no_face_score')})" if scored >= 0.5 else "drop")
        rows.append([config, test_set, rule,
                     *[get(config, test_set, lvl, f"{what}_{lab}") for lvl, what in
                       (("video", "no_face"), ("frame", "no_face"), ("video", "unreadable")) for lab in ("real", "fake")]])
    return table(["training configuration", "test set", "eval.no_face", "videos real", "videos fake",
                  "frames real", "frames fake", "unreadable real", "unreadable fake"], rows)


def other_metrics(long: pd.DataFrame, metric: str) -> list[str]:
    """The test metrics besides ``metric`` that runs report (sample counts and interval bounds excluded)."""
    counts = {"n", "n_real", "n_fake"}  # sample counts, not scores
    return sorted({f"{lv}_{mt}" for lv, mt in long.loc[long["section"] == "test", ["level", "metric"]]
                   .drop_duplicates().itertuples(index=False)
                   if mt not in counts and not mt.endswith(("_lo", "_hi"))} - {metric})


def gallery_markdown(gallery: pd.DataFrame) -> list[str]:
    """The failure galleries as Markdown: per configuration and test set, a table of entries with thumbnails."""
    lines = []
    for (config, test_set), grp in gallery.groupby(["config", "test_set"], sort=False):
        lines += [f"### {config} on {test_set}", ""]
        rows = [["false positive" if r.kind == "false_positive" else "false negative", str(r.rank),
                 f"`{r.video_id}`", str(r.method), f"{r.prob_fake:.4f}",
                 f"![crops]({r.thumbnail})" if r.thumbnail else "(crops not on this machine)",
                 f"![heatmaps]({r.heatmap})" if r.heatmap else ""] for r in grp.itertuples(index=False)]
        lines += [table(["kind", "rank", "video", "method", "P(fake)", "crops", "heatmaps"], rows), ""]
    return lines


def _rel(path: Path, out: Path) -> str:
    return Path(os.path.relpath(path, out)).as_posix()


def distortion_table(grid: pd.DataFrame) -> str:
    """DeeperForensics' distortions of one test set and configuration: a row per type, clean then levels 1-5."""
    levels = [c for c in grid.columns if c.isdigit()]
    rows = [[f"{r['type']}", _cell(r["clean"], r["clean_std"]), *[_cell(r[lv], r[f"{lv}_std"]) for lv in levels]]
            for _, r in grid.iterrows()]
    return table(["type", "clean", *[f"level {lv}" for lv in levels]], rows)


def write_report(coll: Collection, m: Matrix, figures: dict[str, dict[str, Path]], out: Path,
                 title: str = "Cross-dataset generalization report", worst: pd.DataFrame | None = None,
                 distortions: pd.DataFrame | None = None, gallery: pd.DataFrame | None = None) -> Path:
    """Write ``report.md`` into ``out`` and return its path."""
    long = coll.long
    runs = long.drop_duplicates(["config", "seed", "source"])[["config", "seed", "kind", "source"]]
    lines = [
        f"# {title}", "",
        f"Generated {datetime.now().isoformat(timespec='seconds')} by `dfd-report` from {runs['source'].nunique()} "
        f"result file(s): {m.mean.shape[0]} training configuration(s), {m.mean.shape[1]} test set(s).",
        f"Metric: **{m.metric}** ({'higher' if m.higher_is_better else 'lower'} is better); cells are the mean "
        "± sample standard deviation over seeds (no ± with a single seed). **Bold**: in-domain test set "
        "(the training dataset's own test split). –: undefined (no run reported it, or the split held one "
        "class only, where AUC/AP/EER do not exist).", "",
    ]
    if m.ci_lo is not None:
        lines += [
            "[lo, hi]: 95 % percentile-bootstrap interval of the AUC over the test set's videos (1,000 resamples of "
            "the videos, drawn within each class so real/fake counts stay fixed; seeded, so reruns agree). It is "
            "the uncertainty from the *test sample*; ± is the spread over *training seeds*. With several seeds the "
            "per-seed bounds are averaged.", "",
        ]
    lines += [f"## Cross-dataset matrix ({m.metric})", "", matrix_table(m), ""]
    if m.shown_levels:
        lines += ["Test sets without this level show their own (" + ", ".join(
            f"{t}: {lv}_{parse_metric(m.metric)[1]}, over its {lv}s" for t, lv in m.shown_levels.items())
                  + "): a set of still images has no video level.", ""]
    if "heatmap" in figures:
        lines += [f"![{m.metric} heatmap]({_rel(figures['heatmap']['main'], out)})", ""]
    reading = (" A large gap means the model learned its training set's artefacts." if m.higher_is_better
               else " For EER a negative gap means the model is worse off-domain.")
    lines += [
        "## Generalization gap", "",
        f"Gap = in-domain {m.metric} − mean cross-domain {m.metric}, computed per run and then averaged over "
        "seeds; validation is the split that selected the checkpoint." + reading, "",
        gap_table(m, long), "",
    ]
    if "gap" in figures:
        lines += [f"![generalization gap]({_rel(figures['gap']['main'], out)})", ""]
    if figures.get("roc"):
        lines += ["## ROC curves", "", "One curve per training configuration, averaged over seeds (shaded: ± std).", ""]
        lines += [f"### {t}\n\n![ROC on {t}]({_rel(p, out)})\n" for t, p in figures["roc"].items()]
    if figures.get("reliability"):
        lines += ["## Calibration", "",
                  "Reliability diagrams: per bin of P(fake) (15 equal-width bins), the fraction of fakes against the "
                  "mean P(fake); on the diagonal a score is a probability. One curve per training configuration, "
                  "its seeds' bins pooled; marker area is the bin's share of the items. ECE (the count-weighted "
                  "mean gap) and Brier score are under Other metrics.", ""]
        lines += [f"### {t}\n\n![reliability on {t}]({_rel(p, out)})\n" for t, p in figures["reliability"].items()]
    methods = per_method_tables(long, m.metric)
    if methods:
        lines += ["## Per manipulation method", "",
                  f"{m.metric} on the test set's real videos plus one method's fakes.", ""]
        for test_set, tab in methods:
            lines += [f"### {test_set}", "", tab, ""]
    level = parse_metric(m.metric)[0]
    kinds = per_kind_tables(long, level)
    if kinds:
        lines += ["## Per kind of fake", "",
                  f"{level}-level AUC and TPR at 1 % FPR on the test set's real videos plus the fakes of one kind "
                  "(the index's `method_type`, where the dataset says what kind of manipulation a fake is).", ""]
        for test_set, tab in kinds:
            lines += [f"### {test_set}", "", tab, ""]
    faces = faces_table(long)
    if faces is not None:
        lines += ["## Faces not found", "",
                  "Per test set, the videos where no sampled frame had a face and the frames without one "
                  "(those videos' frames included), per label, and the rule the numbers above follow "
                  "(`eval.no_face`: drop = not scored; score (s) = each counted at P(fake) s). Unreadable videos "
                  "are never scored. n/a: the crop cache does not record it.", "", faces, ""]
    # DeeperForensics' kinds are shown as their type x level grid below, not as seven curves.
    curves = {p: f for p, f in (figures.get("robustness") or {}).items() if not str(p).startswith("df_")}
    if curves:
        lines += ["## Robustness", "", f"{m.metric} under test-time perturbations (mean ± std over seeds).", ""]
        lines += [f"### {p}\n\n![robustness to {p}]({_rel(f, out)})\n" for p, f in curves.items()]
    if distortions is not None and not distortions.empty:
        from dfd.store.distort import DF_NAMES

        lines += ["## DeeperForensics-1.0 distortions", "",
                  f"{m.metric} per distortion type (rows) and level (columns), mean ± std over seeds; the clean test "
                  "set first. Types: " + ", ".join(f"{t} = {n}" for t, n in DF_NAMES.items()) + ".", ""]
        for (test_set, at), by_at in distortions.groupby(["test_set", "at"], sort=True):
            key = str(test_set) if at == "crop" else f"{test_set}@{at}"
            where = "source frames, before face detection" if at == "frame" else "stored crops"
            for config, g in by_at.groupby("config", sort=True):
                lines += [f"### {test_set}, {where}: {config}", "", distortion_table(g), ""]
            if key in figures.get("distortions", {}):
                lines += [f"![distortions on {key}]({_rel(figures['distortions'][key], out)})", ""]
    others = other_metrics(long, m.metric)
    if others:
        lines += ["## Other metrics", ""]
        for name in others:
            lines += [f"### {name}", "", matrix_table(build_matrix(long, name, m.n_runs)), ""]
    if worst is not None and not worst.empty:
        lines += ["## Worst videos", "",
                  "Per configuration and test set, the videos whose score is furthest from their label (P(fake) "
                  "averaged over the configuration's runs): confident mistakes first. All of them are in "
                  "`worst_videos.csv`; every run's per-video scores are in its `predictions.parquet`.", "",
                  worst_table(worst), ""]
    if gallery is not None and not gallery.empty:
        lines += ["## Failure galleries", "",
                  "Per configuration and test set, the worst false positives (real videos scored most fake) and "
                  "false negatives (fake videos scored most real), P(fake) averaged over the configuration's runs: "
                  "crops from the cache, Grad-CAM heatmaps of the fake score where `dfd-eval ... explain=N` ran. "
                  "All entries: `gallery.csv`.", "", *gallery_markdown(gallery)]
    rendered = ("heatmap", "gap", "roc", "reliability", "robustness", "distortions")  # drawn in their sections above
    shown = {p.resolve() for kind in rendered for p in figures.get(kind, {}).values()}
    extra = {s: [p for p in paths if p.resolve() not in shown] for s, paths in find_figures(out).items()}
    extra = {s: paths for s, paths in extra.items() if paths}
    if extra:
        lines += ["## More figures", "", "Every other figure the runs and this folder hold, by kind "
                  "(`dfd.report.figures`).", ""]
        for section, paths in extra.items():
            lines += [f"### {section}", "", *[f"![{p.stem}]({_rel(p, out)})" for p in paths], ""]
    of = {r["source"]: r.get("attached_to") for r in coll.runs}
    kinds = [r.kind if not of.get(r.source) else f"eval of `{of[r.source]}`" for r in runs.itertuples()]
    listed = runs.assign(kind=kinds).sort_values(["config", "seed", "source"])
    lines += ["## Runs", "", "An evaluation (`dfd-eval`) of a training run's checkpoint belongs to that run: its "
              "extra test sets and robustness curves join the run's row; it is no repeat of it.", "",
              table(["training configuration", "seed", "kind", "results"],
                    [[r.config, str(r.seed), r.kind, f"`{r.source}`"] for r in listed.itertuples()]), ""]
    if coll.duplicates:
        lines += ["## Exact repeats", "", "Runs with the same configuration and seed, and test sets evaluated more "
                  "than once: the newest is reported.", "", *[f"- {d}" for d in coll.duplicates], ""]
    if coll.skipped:
        lines += ["## Skipped (unreadable) results", "", *[f"- {s}" for s in coll.skipped], ""]
    lines += ["## Files", "", "- `matrix.csv` / `matrix_std.csv`: the matrix above (means / std), one row per "
              "configuration", "- `gap.csv`: the generalization gap", "- `results_long.csv`: every metric of every "
              "run, seed, level, test set, method and perturbation", ""]
    if m.ci_lo is not None:
        lines.insert(-1, "- `matrix_ci.csv`: the matrix with its bootstrap intervals (`<test set>_lo`, `_hi`)")
    if distortions is not None and not distortions.empty:
        lines.insert(-1, "- `distortions.csv`: DeeperForensics' type x level grid per configuration and test set")
    if worst is not None and not worst.empty:
        lines.insert(-1, "- `worst_videos.csv`: the worst-scored videos per configuration and test set")
    if gallery is not None and not gallery.empty:
        lines.insert(-1, "- `gallery.csv` and `gallery/`: the failure galleries (thumbnails, heatmaps)")
    lines.insert(-1, "- `report.html`: this report as one self-contained page (images inlined, sortable tables)")
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
