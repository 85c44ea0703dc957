"""``dfd-report``: cross-dataset matrix, generalization gap, heatmaps, ROC curves, reliability diagrams, per-kind
and no-face tables and robustness curves from runs.

Usage: ``dfd-report RUNS_DIR... --out DIR [--metric video_auc] [--group-by KEY...] [--worst N] [--gallery N]
[--wandb-offline DIR...] [--wandb-project entity/project]``. Writes report.md and report.html (one
self-contained page). Plain argparse (not Hydra): it reads finished runs, it configures nothing.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from dfd.cli._args import ArgumentParser, user_errors
from dfd.report import collect as collect_mod


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (exposed for docs and tests)."""
    p = ArgumentParser(
        prog="dfd-report",
        description="Collect results.json files (recursively; Hydra multirun trees work) and W&B runs into a "
        "cross-dataset report: matrix.csv, gap.csv, results_long.csv, report.md, report.html (self-contained: "
        "images inlined, sortable tables), failure galleries and PNG figures.",
    )
    p.add_argument("runs", nargs="*", type=Path, metavar="RUNS_DIR",
                   help="run or multirun directories (or results.json files)")
    p.add_argument("--out", type=Path, required=True, help="folder to write the report into (created)")
    p.add_argument("--metric", default="video_auc",
                   help="matrix metric, <frame|video|image|item>_<auc|acc|ap|eer|tpr@fpr1|tpr@fpr5|ece|brier|logloss> "
                   "(default: video_auc; a test set of still images shows its image level there); every metric is "
                   "in results_long.csv")
    p.add_argument("--wandb-offline", nargs="+", type=Path, default=[], metavar="DIR",
                   help="W&B folders holding offline-run-*/run-*.wandb logs")
    p.add_argument("--wandb-project", metavar="ENTITY/PROJECT",
                   help="read finished runs of a W&B project online (needs `wandb login`; skipped when W&B is "
                   "offline), and log the matrix and gap as W&B Tables to a report run of it (offline: kept "
                   "under OUT/wandb/ for `wandb sync`)")
    p.add_argument("--group-by", nargs="+", default=list(collect_mod.DEFAULT_GROUP_BY), metavar="KEY",
                   help="what names a row: fields of results.json's 'train' section (dataset model finetune seed "
                   "experiment) or any config key a run recorded (e.g. optim.lr, finetune.rank) (default: dataset "
                   "model finetune). Runs that differ in any other recorded override stay separate rows, with the "
                   "differing keys appended to the row name; exact repeats (same config and seed) are counted "
                   "and listed")
    p.add_argument("--worst", type=int, default=0, metavar="N",
                   help="list the N worst-scored videos per configuration and test set (from each run's "
                   "predictions.parquet) in worst_videos.csv, report.md and here")
    p.add_argument("--gallery", type=int, default=4, metavar="N",
                   help="failure galleries: the N worst false positives and false negatives per configuration and "
                   "test set, with crop thumbnails from the cache and Grad-CAM heatmaps where dfd-eval explain=N "
                   "ran (default 4; 0: none)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="skip unreadable results files (listed in report.md) instead of stopping")
    p.add_argument("--title", default="Cross-dataset generalization report", help="report.md title")
    p.add_argument("--select-on-val", nargs="+", default=[], metavar="KEY",
                   help="a sweep's keys (e.g. optim.lr) to choose per configuration on validation video AUC: only "
                   "the best value's runs enter the matrix (one row per configuration), the choices are listed")
    p.add_argument("--no-feature-maps", action="store_true",
                   help="skip the t-SNE maps of stored features that runs trained with data.features=cached get "
                   "(figures/feature_map_<backbone>_<label|dataset|method>.png)")
    return p


def _print_worst(worst, n: int) -> None:
    if worst.empty:
        print("no predictions.parquet next to the collected results: no per-video scores to rank")
        return
    for (config, test_set), grp in worst.groupby(["config", "test_set"], sort=False):
        print(f"worst {n} videos of {test_set} for {config}:")
        for r in grp.itertuples():
            print(f"  {r.rank:>3}. {r.video_id}  {'fake' if r.label else 'real'} ({r.method})  P(fake)={r.prob_fake:.4f}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dfd-report`` console script."""
    args = build_parser().parse_args(argv)
    if not args.runs and not args.wandb_offline and not args.wandb_project:
        print("error: give at least one RUNS_DIR, --wandb-offline DIR or --wandb-project", file=sys.stderr)
        return 2
    for flag in ("worst", "gallery"):
        if getattr(args, flag) < 0:
            print(f"error: --{flag} {getattr(args, flag)}: give a number of videos >= 1", file=sys.stderr)
            return 2
    from dfd.report.build import build_report
    from dfd.report.matrix import parse_metric

    try:
        parse_metric(args.metric)
        # Unreadable results get their own hint below; any other user error (an unwritable --out): one line.
        with warnings.catch_warnings(), user_errors(but=collect_mod.ResultsError):
            warnings.simplefilter("ignore")  # superseded runs are listed in report.md and below
            result = build_report(args.runs, args.out, metric=args.metric, wandb_offline=args.wandb_offline,
                                  wandb_project=args.wandb_project, group_by=args.group_by,
                                  skip_invalid=args.skip_invalid, title=args.title, worst=args.worst,
                                  feature_maps=not args.no_feature_maps, select_on_val=args.select_on_val,
                                  gallery=args.gallery)
    except collect_mod.ResultsError as e:
        msg = str(e)
        hint = "" if msg.startswith("error:") or args.skip_invalid else " (fix or remove it, or pass --skip-invalid)"
        print(msg if msg.startswith("error:") else f"error: {msg}{hint}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in result.skipped:
        print(f"warning: skipped {line}", file=sys.stderr)
    for line in result.duplicates:
        print(f"warning: {line}", file=sys.stderr)
    for line in result.choices:
        print(f"chosen on validation: {line}")
    if result.worst is not None:
        _print_worst(result.worst, args.worst)
    if result.mix_ranking is not None:
        for r in result.mix_ranking.itertuples():
            mean = "n/a" if r.mean != r.mean else f"{r.mean:.4f}"
            print(f"mix rank {r.rank} ({r.model} {r.finetune}): {r.dataset}  mean held-out {args.metric} {mean} "
                  f"over {r.n_sets} set(s)")
    print(f"{result.n_files} result file(s), {result.n_configs} configuration(s), {result.n_test_sets} test set(s) "
          f"-> {result.report}, {result.html}")
    if result.wandb_run:
        print(f"matrix and gap logged to W&B: {result.wandb_run}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
