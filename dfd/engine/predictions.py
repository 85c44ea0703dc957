"""``predictions.parquet``: every test video's score, what a researcher opens first when a number surprises them.

One row per (test set, video)::

    test_set      str        the test set's name (as in results.json)
    video_id      str        the manifest's video id (unique within the dataset)
    label         int8       0 real, 1 fake
    method        str        manipulation method (``real`` for reals, as the manifest names it)
    frames        int32      crops (or clips) scored
    prob_fake     float64    the video score every video-level metric uses (results.json ``video_score``: by
                             default the mean over frames of the max over each frame's faces); with
                             ``eval.no_face=score`` a video without a face has a row too: frames 0, the rule's score
    frame_probs   list<f32>  the crop (clip) probabilities, in (frame, track) order
    frame_index   list<i32>  the crops' frame numbers in the video (empty for clip models)
    frame_track   list<i16>  the crops' face ids (track, 0 = main face; all 0 with one face per frame)
    kind          str        ``video`` or ``image`` (a still image: ``prob_fake`` is the image's score, the one
                             results.json's image level uses; a mixed set's item level uses every row)

The rows come from the metric's gathered state (every process's predictions, each dataset row once), so the
file is the same on 1 or N GPUs, and ``dfd.engine.video_score.score`` on its lists gives ``prob_fake``, which
reproduces results.json's video AUC exactly (image AUC on the ``image`` rows; a mixed set's item AUC on all).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from dfd import atomic
from dfd.engine.metrics import video_aggregate
from dfd.engine.video_score import DEFAULT_VIDEO_SCORE

PREDICTIONS_FILE = "predictions.parquet"
COLUMNS = ["test_set", "video_id", "label", "method", "frames", "prob_fake", "frame_probs", "frame_index",
           "frame_track", "kind"]


def video_table(name: str, rows: Mapping[str, torch.Tensor], video_names: np.ndarray, method_names: list[str],
                frame_numbers: np.ndarray | None = None, video_score: str = DEFAULT_VIDEO_SCORE,
                image_videos: np.ndarray | None = None) -> pd.DataFrame:
    """Per-video rows of one test set from its gathered predictions (see the module docstring).

    ``rows``: the metric's gathered ``index, prob, target, video, method`` (+ ``frame, track``), in row order;
    ``video_names`` and ``method_names``: the dataset's code tables; ``frame_numbers``: the manifest frame number
    of each dataset row (frame models), None for clip models (a row is a whole video there); ``video_score``:
    the rule the metrics used; ``image_videos``: per video code, whether the item is a still image.
    """
    prob, target, video, method = rows["prob"], rows["target"], rows["video"], rows["method"]
    if len(prob) == 0:
        return pd.DataFrame(columns=COLUMNS)
    vprob, vlabel, vmethod = video_aggregate(prob, target, video, method, rows.get("frame"), rows.get("track"),
                                             video_score)
    vids = torch.unique(video)  # the order video_aggregate uses (sorted codes)
    v = video.numpy()
    order = np.argsort(v, kind="stable")  # rows are in dataset order: frames of a video stay in frame order
    bounds = np.searchsorted(v[order], vids.numpy(), side="left").tolist() + [len(v)]
    probs = prob.float().numpy()[order]
    frames_of = (frame_numbers[rows["index"].numpy()][order].astype(np.int32) if frame_numbers is not None
                 else np.zeros(0, np.int32))
    tracks_of = (rows["track"].numpy()[order].astype(np.int16) if rows.get("track") is not None
                 else np.zeros(len(v), np.int16))
    frame_probs, frame_index, frame_track = [], [], []
    for i in range(len(vids)):
        s, e = bounds[i], bounds[i + 1]
        frame_probs.append(probs[s:e])
        frame_index.append(frames_of[s:e] if frame_numbers is not None else np.zeros(0, np.int32))
        frame_track.append(tracks_of[s:e] if frame_numbers is not None else np.zeros(0, np.int16))
    names = np.asarray(video_names)[vids.numpy()]
    return pd.DataFrame({
        "test_set": name,
        "video_id": [n.decode() if isinstance(n, bytes) else str(n) for n in names],
        "label": vlabel.numpy().astype(np.int8),
        "method": [method_names[int(m)] if int(m) < len(method_names) else str(int(m)) for m in vmethod],
        "frames": np.diff(bounds).astype(np.int32),
        "prob_fake": vprob.numpy().astype(np.float64),
        "frame_probs": frame_probs,
        "frame_index": frame_index,
        "frame_track": frame_track,
        "kind": np.where(np.asarray(image_videos, bool)[vids.numpy()], "image", "video")
        if image_videos is not None else "video",
    }, columns=COLUMNS)


_SCHEMA = pa.schema([
    ("test_set", pa.string()), ("video_id", pa.string()), ("label", pa.int8()), ("method", pa.string()),
    ("frames", pa.int32()), ("prob_fake", pa.float64()), ("frame_probs", pa.list_(pa.float32())),
    ("frame_index", pa.list_(pa.int32())), ("frame_track", pa.list_(pa.int16())), ("kind", pa.string()),
])


def no_face_table(name: str, videos: Sequence[tuple[str, int, str]], score: float) -> pd.DataFrame:
    """Rows of the test videos without a face that ``eval.no_face=score`` counts: ``frames`` 0, empty lists,
    ``prob_fake`` the rule's score, so the file still reproduces results.json's video AUC exactly."""
    return pd.DataFrame({
        "test_set": name,
        "video_id": [v for v, _, _ in videos],
        "label": np.array([y for _, y, _ in videos], np.int8),
        "method": [m for _, _, m in videos],
        "frames": np.zeros(len(videos), np.int32),
        "prob_fake": np.full(len(videos), float(score)),
        "frame_probs": [np.zeros(0, np.float32) for _ in videos],
        "frame_index": [np.zeros(0, np.int32) for _ in videos],
        "frame_track": [np.zeros(0, np.int16) for _ in videos],
    }, columns=COLUMNS)


def write_predictions(tables: list[pd.DataFrame], run_dir: str | Path) -> Path:
    """Write the per-video tables of all test sets to ``<run_dir>/predictions.parquet`` (atomically)."""
    path = Path(run_dir) / PREDICTIONS_FILE
    df = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=COLUMNS)
    table = pa.Table.from_pandas(df[COLUMNS], schema=_SCHEMA, preserve_index=False)
    return atomic.write_table(table, path)


def worst_videos(videos: pd.DataFrame, n: int, by: list[str]) -> pd.DataFrame:
    """The ``n`` videos per ``by`` group (e.g. test set) whose ``prob_fake`` is furthest from their ``label``:
    confident mistakes first (ties by video id), with ``error`` and ``rank`` (1 = worst) added. The one ranking
    rule of run galleries, explain=N and ``dfd-report --worst``."""
    v = videos.copy()
    v["error"] = np.where(v["label"] == 1, 1.0 - v["prob_fake"], v["prob_fake"])
    v = v.sort_values([*by, "error", "video_id"], ascending=[*([True] * len(by)), False, True], kind="stable")
    worst = v.groupby(by, sort=False).head(n).copy()
    worst["rank"] = worst.groupby(by, sort=False).cumcount() + 1
    return worst.reset_index(drop=True)


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a run's predictions (the file, or the run directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / PREDICTIONS_FILE
    return pd.read_parquet(path)
