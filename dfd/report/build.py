"""One call from runs to a finished report folder (what ``dfd-report`` runs; usable from notebooks too)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dfd.report import mixes, plots
from dfd.report.collect import DEFAULT_GROUP_BY, collect, run_counts
from dfd.report.figures import copy_run_figures
from dfd.report.html import write_html
from dfd.report.markdown import other_metrics, write_report
from dfd.report.matrix import build_matrix, parse_metric, write_csvs
from dfd.report.results import ResultsError


@dataclass
class ReportResult:
    """Where the report went and what it covered."""

    report: Path
    files: dict[str, Path]
    n_files: int
    n_configs: int
    n_test_sets: int
    skipped: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    worst: pd.DataFrame | None = None  # --worst N: the worst-scored videos (also in worst_videos.csv)
    # Training mixes ranked by mean held-out score (dfd.report.mixes), when runs differ in training data.
    mix_ranking: pd.DataFrame | None = None
    choices: list[str] = field(default_factory=list)  # --select-on-val: the value chosen per configuration
    gallery: pd.DataFrame | None = None  # failure galleries (also in gallery.csv)
    html: Path | None = None
    wandb_run: str | None = None  # the W&B run the matrix and gap were logged to (--wandb-project)


def build_report(runs: Sequence[str | Path], out: str | Path, metric: str = "video_auc",
                 wandb_offline: Sequence[str | Path] = (), wandb_project: str | None = None,
                 group_by: Sequence[str] = DEFAULT_GROUP_BY, skip_invalid: bool = False,
                 title: str = "Cross-dataset generalization report", worst: int = 0, gallery: int = 4,
                 log_wandb: bool | None = None, feature_maps: bool = True,
                 select_on_val: Sequence[str] = ()) -> ReportResult:
    """Collect runs, then write CSVs, figures, ``report.md`` and ``report.html`` into ``out``.

    ``worst``: also list the N worst-scored videos per configuration and test set (from the runs'
    ``predictions.parquet``) in ``worst_videos.csv`` and report.md. ``gallery``: the N worst false positives
    and false negatives per configuration and test set, with crop thumbnails and heatmaps
    (:mod:`dfd.report.gallery`; 0: none). ``log_wandb`` (default: when ``wandb_project`` is given): log the
    matrix and gap as W&B Tables to a report run of that project (offline unless W&B is online).
    ``feature_maps``: runs trained on stored features (``data.features=cached``) get 2-D maps of those features
    per backbone, ``figures/feature_map_<backbone>_<label|dataset|method>.png`` (:mod:`dfd.report.feature_maps`).
    """
    level, _ = parse_metric(metric)
    coll = collect(runs, wandb_offline, wandb_project, group_by=group_by, skip_invalid=skip_invalid,
                   select_on_val=select_on_val)
    if coll.long.empty:
        raise ResultsError("error: no results found (looked for results.json under "
                           f"{[str(r) for r in runs]}{' and W&B runs' if wandb_offline or wandb_project else ''})")
    n_runs = run_counts(coll.runs) if coll.runs else None
    m = build_matrix(coll.long, metric, n_runs)
    if m.empty:
        available = sorted({f"{lv}_{mt}" for lv, mt in coll.long[["level", "metric"]].drop_duplicates()
                            .itertuples(index=False)})
        raise ResultsError(f"error: no run reports test metric '{metric}'; available: {', '.join(available)}")
    out = Path(out)
    files = write_csvs(m, coll.long, out)
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    figures: dict[str, dict[str, Path]] = {
        "heatmap": {"main": plots.heatmap(m, fig_dir / f"heatmap_{metric}.png")},
        "roc": plots.roc_curves(coll.roc, coll.long, level, fig_dir),
        "reliability": plots.reliability_diagrams(coll.calibration, coll.long, level, fig_dir),
        "robustness": plots.robustness_curves(coll.long, metric, fig_dir),
        "distortions": plots.distortion_heatmaps(coll.long, metric, fig_dir),
    }
    if m.gap["gap"].notna().any():
        figures["gap"] = {"main": plots.gap_bars(m, fig_dir / f"gap_{metric}.png")}
    if feature_maps:
        from dfd.report.feature_maps import draw_feature_maps, run_feature_stores

        for backbone, stores in run_feature_stores(coll.runs).items():
            for path in draw_feature_maps(stores, fig_dir, backbone=backbone):
                files[f"feature_map:{path.stem.removeprefix('feature_map_')}"] = path
    figures["roc_all"] = plots.roc_all_sets(coll.roc, coll.long, level, fig_dir)
    figures["per_method"] = plots.per_method_bars(coll.long, metric, fig_dir)
    copy_run_figures(coll.runs, out)
    for kind, paths in figures.items():
        files.update({f"{kind}:{k}": p for k, p in paths.items()})
    grid = plots.distortion_grid(coll.long, metric)
    if not grid.empty:
        files["distortions"] = out / "distortions.csv"
        grid.to_csv(files["distortions"], index=False, float_format="%.6g")
    worst_df = None
    if worst:
        from dfd.report.videos import worst_videos

        worst_df = worst_videos(coll.runs, worst)
        files["worst"] = out / "worst_videos.csv"
        worst_df.to_csv(files["worst"], index=False, float_format="%.6g")
    gallery_df = None
    if gallery:
        from dfd.report.gallery import failure_gallery

        gallery_df = failure_gallery(coll.runs, gallery, out)
        files["gallery"] = out / "gallery.csv"
        gallery_df.to_csv(files["gallery"], index=False, float_format="%.6g")
    report = write_report(coll, m, figures, out, title=title, worst=worst_df, distortions=grid, gallery=gallery_df)
    files["report"] = report
    ranking = mixes.rank_mixes(m)
    if not ranking.empty:
        files["mix_ranking"] = mixes.write(ranking, out, report, metric)
    others = [build_matrix(coll.long, name, n_runs) for name in other_metrics(coll.long, metric)]
    files["html"] = write_html(out, m, m.gap, others, title, gallery_df, worst_df, n_files=len(coll.sources))
    run = None
    if log_wandb if log_wandb is not None else bool(wandb_project):
        from dfd.report.wandb_runs import log_report

        run = log_report(wandb_project, m, out, title)
    return ReportResult(report=report, files=files, n_files=len(coll.sources), n_configs=len(m.mean),
                        n_test_sets=m.mean.shape[1], skipped=coll.skipped, duplicates=coll.duplicates,
                        worst=worst_df, gallery=gallery_df, html=files["html"], wandb_run=run,
                        mix_ranking=None if ranking.empty else ranking, choices=coll.choices)
