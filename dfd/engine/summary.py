"""How a finished run reports itself: the console table, the ROC figure, the selection record, the notes, and
writing results.json, predictions.parquet and their W&B counterparts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pytorch_lightning as pl
import torch

from dfd.engine.figures import figure, finish_roc_axes, plot_roc
from dfd.engine.metrics import (
    ACC_THRESHOLD,
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    small_sample_notes,
)
from dfd.engine.module import SELECT_KEY, DetectorModule
from dfd.engine.predictions import PREDICTIONS_FILE, write_predictions
from dfd.engine.results import write_results
from dfd.engine.video_score import DESCRIPTIONS as VIDEO_SCORE_DESCRIPTIONS

log = logging.getLogger(__name__)
def wandb_loggers(trainer: pl.Trainer) -> list:
    from pytorch_lightning.loggers import WandbLogger

    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def save_roc_figure(reports: Mapping[str, dict], path: Path) -> Path | None:
    """One figure: frame- and video-level ROC curves of every test set (None when no test set has a curve)."""
    fig = figure(11, 4.8)
    drawn = False
    for ax, level in zip(fig.subplots(1, 2), ("frame", "video"), strict=True):
        for name, rep in reports.items():
            roc = rep.get("roc", {}).get(level)
            if roc:
                plot_roc(ax, roc["fpr"], roc["tpr"], f"{name} (AUC {rep[level]['auc']:.3f})")
                drawn = True
        finish_roc_axes(ax, f"{level}-level ROC")
    if drawn:
        fig.savefig(path)
    return path if drawn else None


def video_score_record(rule: str) -> dict:
    """How results.json's frame and video scores were made from the crops (dfd.engine.video_score)."""
    return {"rule": rule, "description": VIDEO_SCORE_DESCRIPTIONS[rule]}


def _fmt(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None or v != v else f"{v:.{digits}f}"


def auc_with_ci(video: Mapping) -> str:
    """``0.9412 [0.901, 0.972]``: the video AUC and its bootstrap interval (n/a where undefined)."""
    text = _fmt(video.get("auc"))
    lo, hi = video.get("auc_lo"), video.get("auc_hi")
    if text != "n/a" and lo is not None and lo == lo:
        text += f" [{lo:.3f}, {hi:.3f}]"
    return text


def print_table(reports: Mapping[str, dict], title: str) -> None:
    """A rich table of test metrics, one row per test set (video AUC with its 95 % bootstrap interval)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=f"[ ]: {BOOTSTRAP_LEVEL:.0%} bootstrap interval over videos; "
                  f"ACC at threshold {ACC_THRESHOLD}", caption_justify="left")
    for col in ("test set", "real/fake videos", "frames", "frame AUC", "video AUC [95% CI]", "video ACC",
                "video AP", "video EER"):
        table.add_column(col, justify="right" if col != "test set" else "left")
    for name, r in reports.items():
        v = r["video"]
        table.add_row(name, f"{v['n_real']}/{v['n_fake']}", str(r["frame"]["n"]), _fmt(r["frame"]["auc"]),
                      auc_with_ci(v), _fmt(v["acc"]), _fmt(v["ap"]), _fmt(v["eer"]))
    Console(width=max(Console().width, 120)).print(table)


def run_notes(reports: Mapping[str, dict], calibrated: bool = False) -> list[str]:
    """One-line cautions about the numbers of a run (small test sets, uncalibrated accuracy)."""
    notes = [n for name, rep in reports.items() for n in small_sample_notes(name, rep)]
    if not calibrated and any(r["video"].get("acc") is not None for r in reports.values()):
        notes.append(f"ACC is measured at the fixed threshold {ACC_THRESHOLD} of an uncalibrated model, so it can be "
                     "low while AUC is high; compare AUC, or calibrate a threshold on validation "
                     "(dfd-export <ckpt> <bundle> --calibrate eer)")
    return notes


def bootstrap_method() -> dict:
    """How results.json's ``video.auc_lo`` / ``auc_hi`` were computed."""
    return {"metric": "video auc", "method": "percentile bootstrap", "resamples": BOOTSTRAP_RESAMPLES,
            "level": BOOTSTRAP_LEVEL, "resample": "videos, within each class (class counts fixed)",
            "seed": BOOTSTRAP_SEED}


def finish_run(trainer: pl.Trainer, results: dict, run_dir: Path, title: str, tables: list | None = None,
               gallery: list[dict] | None = None) -> None:
    """Write results.json (+ predictions.parquet, roc.png) and log them; ``gallery``: the worst videos per test
    set (:func:`dfd.engine.gallery.gallery_rows`), logged to W&B as a table with their crops and heatmaps."""
    if not trainer.is_global_zero:
        return
    results["bootstrap"] = bootstrap_method()
    notes = run_notes(results["test"])
    results["notes"] = [*(results.get("notes") or []), *notes]
    if tables is not None:
        write_predictions(tables, run_dir)
        results["predictions"] = PREDICTIONS_FILE
    path = write_results(results, run_dir)
    roc = save_roc_figure(results["test"], run_dir / "roc.png")
    for lg in wandb_loggers(trainer):
        if roc is not None:
            lg.log_image(key="test/roc", images=[str(roc)])
        if tables:
            import pandas as pd

            videos = pd.concat(tables, ignore_index=True).drop(columns=["frame_probs", "frame_index", "frame_track"])
            lg.log_table(key="test/predictions", dataframe=videos)
        lg.experiment.summary["results_json"] = str(path)
    from dfd.engine.gallery import log_wandb

    log_wandb(wandb_loggers(trainer), gallery or [], results["test"])
    print_table(results["test"], title)
    for note in notes:
        log.warning(note)
    log.info("results: %s", path)
    for lg in wandb_loggers(trainer):
        lg.experiment.finish()  # flush the offline log now: multiruns start the next run in this process


def selection_record(module: DetectorModule, trainer: pl.Trainer, split: str) -> dict:
    """How the tested checkpoint was chosen: the criterion, its value at every epoch, the epoch it picked.

    Read from the checkpoint callback itself (what actually chose), not from the config.
    """
    cb = trainer.checkpoint_callback
    monitor = cb.monitor if cb is not None else None
    mode = cb.mode if cb is not None else None
    history = [{"epoch": e["epoch"], "step": e["step"], "value": e.get(monitor),
                **{k.removeprefix("val/"): v for k, v in e.items() if k.startswith("val/")}}
               for e in module.val_history]
    best = cb.best_model_path if cb is not None and cb.best_model_path else None
    record = {"split": split, "monitor": monitor, "mode": mode, "checkpoint": best, "epoch": None, "step": None,
              "value": None, "history": history}
    if monitor == SELECT_KEY:
        record["criterion"] = ("video AUC on the validation split; ties broken by the lower frame log loss "
                               "(val/select = val/video_auc - 0.001 * min(val/frame_logloss, 10))")
    if best:
        ckpt = torch.load(best, map_location="cpu", weights_only=True, mmap=True)
        record.update(epoch=int(ckpt["epoch"]), step=int(ckpt["global_step"]))
        score = cb.best_model_score
        at = [h["value"] for h in history if (h["epoch"], h["step"]) == (record["epoch"], record["step"])
              and h["value"] is not None]
        record["value"] = at[-1] if at else (float(score) if score is not None else None)
    else:
        record["note"] = "no checkpoint callback: the weights of the last epoch were tested"
    if cb is not None and monitor is None:
        record["note"] = "no monitor: the latest checkpoint was tested (no selection on validation)"
    return record
