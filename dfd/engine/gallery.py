"""The videos a run gets most wrong, looked at: their crops, Grad-CAM heatmaps (``dfd-eval ... explain=N``) and
the W&B table of them logged at test end.

Per test set, the worst videos are those whose score is furthest from their label
(:func:`dfd.engine.predictions.worst_videos`, the rule ``dfd-report --worst`` ranks by too). ``explain=N``
writes, for the N worst of each test set, ``<run dir>/explain/<test set>/<video id>/``: ``<stem>.png`` (each
scored crop with its heatmap, stems as in the crop cache) and ``cam.npz`` (``maps`` (N,S,S) in 0-1, clips
(1,L,S,S); ``frames``, ``tracks``, ``probs``), the very layout ``dfd-predict --explain`` writes per file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dfd.data.datasets import read_rgb
from dfd.engine.predictions import worst_videos
from dfd.faces.crops import crop_stem
from dfd.store.cache import safe_relpath

log = logging.getLogger(__name__)

EXPLAIN_DIR = "explain"
#: Worst videos per test set in the W&B table when explain does not ask for more.
TABLE_ROWS = 8
#: Crops shown per video (thumbnail strips).
STRIP_CROPS = 4


def _rows_of(ds: Any, video: int) -> np.ndarray:
    """The dataset rows (frame models) or clip frame rows (clip models) the model scored for one video."""
    if hasattr(ds, "frame_rows"):
        return np.asarray(ds.frame_rows(video))
    a = ds.arrays
    rows = np.flatnonzero(a.video == video)
    return rows[np.lexsort((a.track[rows], a.frame[rows]))]


def _video_codes(ds: Any) -> dict[str, int]:
    return {(n.decode() if isinstance(n, bytes) else str(n)): i for i, n in enumerate(ds.arrays.video_names)}


def crop_manifests(dm: Any) -> dict[str, str]:
    """``{test set: its crop manifest}`` (results.json ``crop_manifests``): where a report finds the crops of a
    test set's videos (``dfd-report``'s galleries)."""
    out = {}
    for name, ds in getattr(dm, "test_ds", {}).items():
        manifest = getattr(getattr(ds, "arrays", None), "manifest", None)
        if manifest is not None:
            out[name] = str(Path(manifest).resolve())
    return out


def gallery_rows(dm: Any, tables: list[pd.DataFrame], n: int) -> list[dict]:
    """The ``n`` worst videos of every test set, with the crop files they were scored on (when on disk)."""
    if not tables or n <= 0:
        return []
    worst = worst_videos(pd.concat(tables, ignore_index=True), n, by=["test_set"])
    codes = {name: _video_codes(ds) for name, ds in dm.test_ds.items() if hasattr(ds, "arrays")}
    out = []
    for r in worst.itertuples(index=False):
        ds = dm.test_ds.get(r.test_set)
        code = codes.get(r.test_set, {}).get(r.video_id)
        crops: list[str] = []
        rows = np.zeros(0, np.int64)
        if code is not None and hasattr(ds.arrays, "path"):
            rows = _rows_of(ds, code)
            crops = [str(ds.arrays.path(int(i))) for i in rows]
        out.append({"test_set": r.test_set, "rank": int(r.rank), "video_id": r.video_id, "label": int(r.label),
                    "method": r.method, "prob_fake": float(r.prob_fake), "crops": crops, "code": code,
                    "rows": rows, "heatmaps": []})
    return out


def explain_rows(module: torch.nn.Module, dm: Any, rows: list[dict], run_dir: Path, n: int) -> dict[str, list[str]]:
    """Grad-CAM heatmaps of the ``n`` worst videos per test set (see the module docstring); fills each row's
    ``heatmaps`` and returns ``{test set: [video ids explained]}``."""
    from dfd.models.explain import MAPS_FILE, Explainer, overlay, write_png

    explainer = Explainer(module.model)
    done: dict[str, list[str]] = {}
    for row in rows:
        if row["rank"] > n or row["code"] is None or not len(row["rows"]):
            continue
        ds = dm.test_ds[row["test_set"]]
        a = ds.arrays
        # A clip model scores the video's one clip; a frame model each crop.
        items = [ds[int(row["code"])]] if hasattr(ds, "frame_rows") else [ds[int(i)] for i in row["rows"]]
        x = torch.stack([it["image"] for it in items])
        lm = torch.stack([it["landmarks"] for it in items]) if explainer.needs_landmarks else None
        device = next(module.model.parameters()).device
        with torch.no_grad():
            logits = module.model.eval()(x.to(device), lm.to(device) if lm is not None else None)
            probs = torch.sigmoid(logits.float()).cpu().numpy()
        maps = explainer(x, lm)
        per_crop = maps[0] if maps.ndim == 4 else maps
        folder = run_dir / EXPLAIN_DIR / safe_relpath(row["test_set"]) / safe_relpath(row["video_id"])
        paths = []
        for i, heat in zip(row["rows"], per_crop, strict=True):
            image = read_rgb(a.path(int(i)))
            stem = crop_stem(int(a.frame[i]), int(a.track[i]))
            paths.append(str(write_png(folder / f"{stem}.png", overlay(image, heat))))
        np.savez(folder / MAPS_FILE, maps=maps, frames=a.frame[row["rows"]].astype(np.int64),
                 tracks=a.track[row["rows"]].astype(np.int64), probs=probs.astype(np.float32))
        row["heatmaps"] = paths
        done.setdefault(row["test_set"], []).append(row["video_id"])
    return done


def strip(paths: list[str], height: int = 96) -> np.ndarray | None:
    """Up to STRIP_CROPS images side by side (RGB uint8), each resized to ``height``; None without any."""
    import cv2

    images = []
    for p in paths[:STRIP_CROPS]:
        img = cv2.imread(p)
        if img is not None:
            images.append(cv2.resize(img, (height * img.shape[1] // img.shape[0], height))[..., ::-1])
    return np.concatenate(images, axis=1) if images else None


def log_wandb(loggers: list, rows: list[dict], reports: dict[str, dict]) -> None:
    """The worst videos per test set as a W&B Table (crop and heatmap strips, score, label) and every test
    set's video-level ROC on one W&B line plot; offline runs keep both until ``wandb sync``."""
    if not loggers:
        return
    import wandb

    columns = ["test_set", "rank", "video_id", "label", "method", "prob_fake", "crops", "heatmaps"]
    data = []
    for r in rows:
        crops, heat = strip(r["crops"]), strip(r["heatmaps"])
        data.append([r["test_set"], r["rank"], r["video_id"], "fake" if r["label"] else "real", r["method"],
                     r["prob_fake"], wandb.Image(crops) if crops is not None else None,
                     wandb.Image(heat) if heat is not None else None])
    curves = {n: rep["roc"]["video"] for n, rep in reports.items() if (rep.get("roc") or {}).get("video")}
    for lg in loggers:
        payload: dict[str, Any] = {}
        if data:
            payload["test/worst_videos"] = wandb.Table(columns=columns, data=data)
        if curves:
            payload["test/roc_curves"] = wandb.plot.line_series(
                xs=[c["fpr"] for c in curves.values()], ys=[c["tpr"] for c in curves.values()],
                keys=list(curves), title="video-level ROC per test set", xname="false positive rate")
        if payload:
            lg.experiment.log(payload)
