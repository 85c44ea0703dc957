"""How a finished run reports itself: the console table, the ROC figure, the reliability diagrams, the selection
record, the notes, and writing results.json, predictions.parquet and their W&B counterparts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pytorch_lightning as pl
import torch

from dfd.engine.bad_crops import counter_of
from dfd.engine.figures import (
    figure,
    finish_reliability_axes,
    finish_roc_axes,
    plot_reliability,
    plot_roc,
    slug,
)
from dfd.engine.metrics import (
    ACC_NOTE_MARGIN,
    ACC_THRESHOLD,
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    ECE_BINS,
    ITEM_WORDS,
    headline,
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
    """One figure: frame-level ROC curves (sets of videos) and each test set's headline-level curve (video,
    image, or every item of a mixed set) of every test set (None when no test set has a curve)."""
    fig = figure(11, 4.8)
    drawn = False
    for ax, panel in zip(fig.subplots(1, 2), ("frame", "headline"), strict=True):
        levels = set()
        for name, rep in reports.items():
            level = headline(rep) if panel == "headline" else "frame"
            roc = rep.get("roc", {}).get(level)
            if roc:
                label = f"{name} (AUC {rep[level]['auc']:.3f})" if panel == "frame" or level == "video" else (
                    f"{name} ({level} AUC {rep[level]['auc']:.3f})")
                plot_roc(ax, roc["fpr"], roc["tpr"], label)
                drawn = True
                levels.add(level)
        finish_roc_axes(ax, f"{'/'.join(sorted(levels)) or ('frame' if panel == 'frame' else 'video')}-level ROC")
    if drawn:
        fig.savefig(path)
    return path if drawn else None


def save_reliability_figures(reports: Mapping[str, dict], run_dir: Path) -> dict[str, Path]:
    """One reliability diagram per test set (frame and video level side by side): ``reliability_<set>.png``."""
    paths = {}
    for name, rep in reports.items():
        bins = rep.get("calibration") or {}
        if not any(sum((bins.get(level) or {}).get("count") or []) for level in ("frame", "video")):
            continue
        fig = figure(10, 4.6)
        for ax, level in zip(fig.subplots(1, 2), ("frame", "video"), strict=True):
            b = bins.get(level)
            if b and sum(b["count"]):
                plot_reliability(ax, b["mean_prob"], b["frac_fake"], b["count"],
                                 f"{name} (ECE {rep[level]['ece']:.3f}, Brier {rep[level]['brier']:.3f})")
            finish_reliability_axes(ax, f"{level}-level reliability ({ECE_BINS} bins)")
        paths[name] = run_dir / f"reliability_{slug(name)}.png"
        fig.savefig(paths[name])
    return paths


def video_score_record(rule: str) -> dict:
    """How results.json's frame and video scores were made from the crops (dfd.engine.video_score)."""
    return {"rule": rule, "description": VIDEO_SCORE_DESCRIPTIONS[rule]}


def _fmt(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None or v != v else f"{v:.{digits}f}"


def auc_with_ci(video: Mapping) -> str:
    """``0.9412 [0.901, 0.972]``: an AUC (video, image or item level) and its bootstrap interval (n/a where
    undefined)."""
    text = _fmt(video.get("auc"))
    lo, hi = video.get("auc_lo"), video.get("auc_hi")
    if text != "n/a" and lo is not None and lo == lo:
        text += f" [{lo:.3f}, {hi:.3f}]"
    return text


def print_table(reports: Mapping[str, dict], title: str) -> None:
    """A rich table of test metrics, one row per test set at its headline level (``level``: video for videos,
    image for still images, item for sets holding both): AUC with its 95 % bootstrap interval, TPR at 1 % and
    5 % FPR, ECE and Brier; frames and frame AUC are those of the set's videos."""
    from rich.console import Console
    from rich.table import Table

    levels = [headline(r) for r in reports.values()]
    over = " / ".join(ITEM_WORDS[lv] for lv in dict.fromkeys(levels)) or "videos"
    table = Table(title=title, caption=f"[ ]: {BOOTSTRAP_LEVEL:.0%} bootstrap interval over {over}; "
                  f"ACC at threshold {ACC_THRESHOLD}; TPR@FPR, ECE ({ECE_BINS} bins), Brier: at the row's level",
                  caption_justify="left")
    for col in ("test set", "level", "real/fake", "frames", "frame AUC", "AUC [95% CI]", "ACC", "AP", "EER",
                "TPR@FPR 1%", "TPR@FPR 5%", "ECE", "Brier"):
        table.add_column(col, justify="right" if col not in ("test set", "level") else "left")
    for (name, r), level in zip(reports.items(), levels, strict=True):
        v, f = r[level], r.get("frame") or {}
        table.add_row(name, level, f"{v['n_real']}/{v['n_fake']}", str(f["n"]) if f else "-",
                      _fmt(f.get("auc")) if f else "-", auc_with_ci(v), _fmt(v["acc"]), _fmt(v["ap"]), _fmt(v["eer"]),
                      _fmt(v.get("tpr@fpr1")), _fmt(v.get("tpr@fpr5")), _fmt(v.get("ece")), _fmt(v.get("brier")))
    Console(width=max(Console().width, 150)).print(table)
    blocks = {name: r["no_face"] for name, r in reports.items() if r.get("no_face")}
    faceless = [f"{name}: {_faces(b)}" for name, b in blocks.items()
                if any(c is None or c["real"] or c["fake"] for k, c in b.items() if k in _COUNTS)]
    if faceless:
        rule = next(iter(blocks.values()))
        how = (f"counted at P(fake) {rule['score']:g}" if rule["rule"] == "score" else "not scored")
        Console(width=max(Console().width, 150)).print(f"no face found ({how}; eval.no_face={rule['rule']}): "
                                                       + "; ".join(faceless))


_COUNTS = ("videos", "frames", "unreadable_videos")


def _faces(block: Mapping) -> str:
    """``videos 1 real / 2 fake, frames 3 real / 5 fake`` (n/a where the cache does not record it)."""
    parts = []
    for key, what in zip(_COUNTS, ("videos", "frames", "unreadable videos"), strict=True):
        c = block.get(key)
        if c is None:
            parts.append(f"{what} n/a")
        elif key != "unreadable_videos" or c["real"] or c["fake"]:
            parts.append(f"{what} {c['real']} real / {c['fake']} fake")
    return ", ".join(parts)


def print_robustness(reports: Mapping[str, dict], robustness: Mapping[str, dict]) -> None:
    """The robustness sweep of ``dfd-eval``: per test set, video and frame AUC (and video ACC) per perturbation
    kind and level, with the change of video AUC against the clean crops."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="robustness (the stored crops perturbed before the model's resize)",
                  caption="change: video AUC minus the clean crops'", caption_justify="left")
    for col in ("test set", "perturbation", "level", "video AUC", "change", "video ACC", "frame AUC"):
        table.add_column(col, justify="left" if col in ("test set", "perturbation") else "right")
    for name, kinds in robustness.items():
        rep = reports.get(name) or {}
        top = headline(rep) if rep else "video"  # a set of still images: its image level
        clean = rep.get(top, {}).get("auc")
        table.add_row(name, "none (clean)", "", _fmt(clean), "", _fmt(rep.get(top, {}).get("acc")),
                      _fmt(rep.get("frame", {}).get("auc")))
        for kind, points in kinds.items():
            for point in points:
                auc = point.get(top, {}).get("auc")
                change = f"{auc - clean:+.4f}" if _defined(auc) and _defined(clean) else "n/a"
                table.add_row("", kind, f"{point['level']:g}", _fmt(auc), change, _fmt(point.get(top, {}).get("acc")),
                              _fmt(point.get("frame", {}).get("auc")))
        table.add_section()
    Console(width=max(Console().width, 120)).print(table)


def _defined(x: object) -> bool:
    return isinstance(x, int | float) and x == x


def acc_note(reports: Mapping[str, dict]) -> str | None:
    """The note that ACC is off, only where it is: ACC at the fixed threshold (the set's headline level) more than
    ``ACC_NOTE_MARGIN`` below 1 - EER (what the EER threshold reaches on the same items; dfd.engine.metrics)."""
    heads = {name: r[headline(r)] for name, r in reports.items()}  # video, image or item level
    low = [f"{name} {v['acc']:.3f} vs {1 - v['eer']:.3f}" for name, v in heads.items()
           if _defined(v.get("acc")) and _defined(v.get("eer")) and v["acc"] < 1 - v["eer"] - ACC_NOTE_MARGIN]
    if not low:
        return None
    return (f"ACC at the fixed threshold {ACC_THRESHOLD} is well below the 1 - EER its EER threshold reaches "
            f"({'; '.join(low)}): the ranking (AUC) is better than ACC says, the threshold is off; compare AUC, or "
            "choose the thresholds on validation with `dfd-export <ckpt> <bundle> --calibrate eer`")


def run_notes(reports: Mapping[str, dict], calibrated: bool = False) -> list[str]:
    """One-line cautions about the numbers of a run (small test sets; ACC well below what the EER implies)."""
    notes = [n for name, rep in reports.items() for n in small_sample_notes(name, rep)]
    note = None if calibrated else acc_note(reports)
    return [*notes, note] if note else notes


def bootstrap_method() -> dict:
    """How results.json's ``video.auc_lo`` / ``auc_hi`` were computed."""
    return {"metric": "video auc", "method": "percentile bootstrap", "resamples": BOOTSTRAP_RESAMPLES,
            "level": BOOTSTRAP_LEVEL, "resample": "videos, within each class (class counts fixed)",
            "seed": BOOTSTRAP_SEED,
            # Sets of still images: the same interval of the image AUC over images; sets of both: of the item
            # AUC over every item, and of the video and image AUCs over their own items.
            "levels": {"video": "videos", "image": "images", "item": "every video and image of a mixed set"}}


def finish_run(trainer: pl.Trainer, results: dict, run_dir: Path, title: str, tables: list | None = None,
               gallery: list[dict] | None = None) -> None:
    """Write results.json (+ predictions.parquet, roc.png) and log them; ``gallery``: the worst videos per test
    set (:func:`dfd.engine.gallery.gallery_rows`), logged to W&B as a table with their crops and heatmaps."""
    if not trainer.is_global_zero:
        return
    results["bootstrap"] = bootstrap_method()
    notes = run_notes(results["test"])
    counter = counter_of(trainer)
    if counter is not None:  # unreadable crops, per split and label: recorded always, said when there were any
        results["bad_crops"] = counter.record()
        line = counter.summary(getattr(getattr(trainer, "datamodule", None), "verify_hint", None))
        if line:
            notes.append(line)
    results["notes"] = [*(results.get("notes") or []), *notes]
    if tables is not None:
        write_predictions(tables, run_dir)
        results["predictions"] = PREDICTIONS_FILE
    path = write_results(results, run_dir)
    roc = save_roc_figure(results["test"], run_dir / "roc.png")
    reliability = save_reliability_figures(results["test"], run_dir)
    for lg in wandb_loggers(trainer):
        if roc is not None:
            lg.log_image(key="test/roc", images=[str(roc)])
        for name, fig in reliability.items():
            lg.log_image(key=f"test/{name}/reliability", images=[str(fig)])
        if tables:
            import pandas as pd

            videos = pd.concat(tables, ignore_index=True).drop(columns=["frame_probs", "frame_index", "frame_track"])
            lg.log_table(key="test/predictions", dataframe=videos)
        lg.experiment.summary["results_json"] = str(path)
    from dfd.engine.gallery import log_wandb

    log_wandb(wandb_loggers(trainer), gallery or [], results["test"])
    print_table(results["test"], title)
    if results.get("robustness"):
        print_robustness(results["test"], results["robustness"])
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
        level = headline(module.val_report or {})
        loss = "frame" if level == "video" else level
        record["criterion"] = (f"{level} AUC on the validation split; ties broken by the lower {loss} log loss "
                               f"(val/select = val/{level}_auc - 0.001 * min(val/{loss}_logloss, 10))")
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
