"""Failure galleries: per configuration and test set, the worst false positives (real videos scored most fake)
and false negatives (fake videos scored most real), with crop thumbnails from the cache and, where
``dfd-eval ... explain=N`` ran, their Grad-CAM heatmaps.

Scores are each video's P(fake) averaged over the configuration's runs (seeds; the newest of exact repeats), as
in the worst-video list. Thumbnails come from the crop cache a run recorded (results.json ``crop_manifests``);
heatmaps from the run's ``explain/<test set>/<video id>/``. Either may be absent (another machine, a cache
since deleted, no explain): the entry then keeps its text and says so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from dfd.report.plots import slug

GALLERY_DIR = "gallery"
GALLERY_COLUMNS = ["config", "test_set", "kind", "rank", "video_id", "label", "method", "prob_fake", "n_runs",
                   "thumbnail", "heatmap"]
KINDS = {"false_positive": "real videos scored most fake", "false_negative": "fake videos scored most real"}
THUMB = 96  # thumbnail height in pixels
THUMB_QUALITY = 85  # JPEG quality of the thumbnail strips
CROPS_PER_VIDEO = 4


def _newest(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    newest: dict[tuple[str, Any], dict[str, Any]] = {}
    for run in sorted(runs, key=lambda r: (r["created"], r["source"])):
        if run.get("predictions"):
            newest[(run["config"], run["seed"])] = run
    return list(newest.values())


def _manifest_crops(manifest: str, cache: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    if manifest not in cache:
        try:
            df = pd.read_parquet(manifest, columns=["video_id", "frame", "crop_path"])
        except Exception:  # a moved or deleted cache: the gallery keeps its text
            df = None
        cache[manifest] = df
    return cache[manifest]


def _strip(paths: Sequence[Path]) -> np.ndarray | None:
    images = []
    for p in list(paths)[:CROPS_PER_VIDEO]:
        img = cv2.imread(str(p))
        if img is not None:
            images.append(cv2.resize(img, (max(1, THUMB * img.shape[1] // img.shape[0]), THUMB),
                                     interpolation=cv2.INTER_AREA))
    return np.concatenate(images, axis=1) if images else None


def failure_gallery(runs: Sequence[dict[str, Any]], n: int, out: Path) -> pd.DataFrame:
    """Write the thumbnails of the ``n`` worst false positives and false negatives per (configuration, test
    set) under ``out/gallery/`` and return one row per entry (``GALLERY_COLUMNS``; image paths relative to
    ``out``, empty where none could be made)."""
    from dfd.engine.predictions import read_predictions, worst_videos

    frames = []
    for run in _newest(runs):
        df = read_predictions(run["predictions"])[["test_set", "video_id", "label", "method", "prob_fake"]]
        frames.append(df.assign(config=run["config"]))
    # Crops and heatmaps from any run of the configuration (a dfd-eval with explain=N beside its training run).
    sources: dict[tuple[str, str], list[tuple[str, Path]]] = {}
    for run in sorted(runs, key=lambda r: (r["created"], r["source"]), reverse=True):
        if str(run["source"]).endswith(".json") and Path(run["source"]).is_file():
            data = json.loads(Path(run["source"]).read_text())
            for test_set, manifest in (data.get("crop_manifests") or {}).items():
                sources.setdefault((run["config"], test_set), []).append((manifest, Path(run["source"]).parent))
    if not frames or n <= 0:
        return pd.DataFrame(columns=GALLERY_COLUMNS)
    videos = (pd.concat(frames, ignore_index=True)
              .groupby(["config", "test_set", "video_id"], sort=False)
              .agg(label=("label", "first"), method=("method", "first"), prob_fake=("prob_fake", "mean"),
                   n_runs=("prob_fake", "size")).reset_index())
    manifests: dict[str, pd.DataFrame] = {}
    rows = []
    for kind, label in (("false_positive", 0), ("false_negative", 1)):
        worst = worst_videos(videos[videos["label"] == label], n, by=["config", "test_set"])
        for r in worst.itertuples(index=False):
            thumb = heat = ""
            folder = out / GALLERY_DIR / slug(r.config) / slug(r.test_set)
            for manifest, run_dir in sources.get((r.config, r.test_set), []):
                df = _manifest_crops(manifest, manifests)
                if not thumb and df is not None:
                    crops = df[df["video_id"] == r.video_id].sort_values("frame")["crop_path"]
                    img = _strip([Path(manifest).parent / c for c in crops])
                    if img is not None:
                        thumb = _write(folder / f"{kind}_{r.rank}.png", img, out)
                explained = sorted((run_dir / "explain" / r.test_set / r.video_id).glob("*.png"))
                if not heat and explained:
                    img = _strip(explained)
                    if img is not None:
                        heat = _write(folder / f"{kind}_{r.rank}_heatmap.png", img, out)
            rows.append({"config": r.config, "test_set": r.test_set, "kind": kind, "rank": int(r.rank),
                         "video_id": r.video_id, "label": int(r.label), "method": r.method,
                         "prob_fake": float(r.prob_fake), "n_runs": int(r.n_runs), "thumbnail": thumb,
                         "heatmap": heat})
    return pd.DataFrame(rows, columns=GALLERY_COLUMNS).sort_values(
        ["config", "test_set", "kind", "rank"], kind="stable").reset_index(drop=True)


def _write(path: Path, bgr: np.ndarray, out: Path) -> str:
    # JPEG: a photo strip is ~8x smaller than as PNG, and report.html inlines every one of them.
    from dfd.store.media import encode_image

    path = path.with_suffix(".jpg")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_image(bgr, ".jpg", quality=THUMB_QUALITY, rgb=False))
    return path.relative_to(out).as_posix()
