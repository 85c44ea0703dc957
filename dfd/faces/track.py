"""Which faces of a frame become crops (``largest``, ``confident`` or ``all``), and how the faces of a video's
sampled frames are linked into tracks (track 0 = the video's main face).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dfd.faces.boxes import Detections, box_area
from dfd.faces.contract import CHOICES, CropContract


def choose_face(det: Detections, choice: str = CropContract.choice,
                min_score: float = CropContract.min_score) -> int | None:
    """Index of the face to keep (``largest`` area or most ``confident``) among those scoring >= min_score.

    ``all`` answers with the largest face (whether a frame has a face to keep at all: the detection fallbacks).
    """
    if choice not in CHOICES:
        raise ValueError(f"face choice {choice!r} is not one of {CHOICES}; set extract.choice accordingly")
    ok = np.flatnonzero(det.probs >= min_score)
    if ok.size == 0:
        return None
    key = det.probs[ok] if choice == "confident" else box_area(det.boxes[ok])
    return int(ok[np.argmax(key)])


def choose_faces(det: Detections, contract: CropContract) -> list[int]:
    """Indices of the faces a frame's crops come from: the one face of ``largest``/``confident``, or with
    ``all`` every face scoring >= min_score whose area is >= ``min_face_ratio`` x the largest's, largest first."""
    if contract.choice != "all":
        k = choose_face(det, contract.choice, contract.min_score)
        return [] if k is None else [k]
    ok = np.flatnonzero(det.probs >= contract.min_score)
    if ok.size == 0:
        return []
    area = box_area(det.boxes[ok])
    order = np.argsort(-area, kind="stable")
    keep = order[area[order] >= contract.min_face_ratio * area[order[0]]]
    return [int(k) for k in ok[keep]]


def track_faces(boxes: Sequence[np.ndarray], max_shift: float = CropContract.track_max_shift,
                max_scale: float = CropContract.track_max_scale) -> list[np.ndarray]:
    """Track ids for the faces of a video's sampled frames (``boxes[i]``: (k_i, 4) boxes of frame i, in order).

    Greedy association, frame by frame, of each face with the track whose last box is nearest (cost: centre
    shift in face sides + 1 - IoU), within the gates ``max_shift`` (face sides the centre may move) and
    ``max_scale`` (factor the face side may change; the contract's ``track_max_shift/scale``). Sampled frames are
    ~0.3 s apart (32 of a 10 s clip), so the defaults are wide: people talk and turn; they do not swap places
    within a third of a second, and two faces of one frame are never merged (one face per track per frame). A
    track left
    unmatched in a frame (occlusion, a missed detection, a face leaving) stays open and takes a face near its
    last box later; a face matching no track starts a new one. Ids are then renumbered by summed box area,
    largest first (ties: first seen), so track 0 is the video's main face and ids are dense.

    Why not a tracking library (SORT/ByteTrack via norfair, motpy, boxmot): they predict motion with Kalman
    filters tuned for consecutive frames, which frames a third of a second apart defeat, and they would add a
    dependency to dfd-predict's torch-only install. A handful of faces needs no optimal assignment solver.
    """
    last: list[np.ndarray] = []  # per track: its latest box
    ids: list[np.ndarray] = []
    for frame in boxes:
        frame = np.asarray(frame, np.float64).reshape(-1, 4)
        assigned = np.full(len(frame), -1, np.int64)
        if len(frame) and last:
            prev = np.stack(last)
            cost = _track_cost(prev, frame, max_shift, max_scale)
            for flat in np.argsort(cost, axis=None, kind="stable"):
                t, d = divmod(int(flat), len(frame))
                if not np.isfinite(cost[t, d]):
                    break
                if assigned[d] < 0 and t not in assigned:
                    assigned[d] = t
        for d in range(len(frame)):
            if assigned[d] < 0:
                assigned[d] = len(last)
                last.append(frame[d])
            else:
                last[assigned[d]] = frame[d]
        ids.append(assigned)
    if not last:
        return ids
    area = np.zeros(len(last))
    first = np.full(len(last), len(boxes))
    for i, (frame, a) in enumerate(zip(boxes, ids, strict=True)):
        np.add.at(area, a, box_area(frame))
        first[a] = np.minimum(first[a], i)
    rank = np.lexsort((first, -area))  # largest summed area first, then first seen
    new = np.empty(len(last), np.int64)
    new[rank] = np.arange(len(last))
    return [new[a] for a in ids]


def _track_cost(prev: np.ndarray, cur: np.ndarray, max_shift: float, max_scale: float) -> np.ndarray:
    """(tracks, faces) association cost; inf where the gates forbid the pair."""
    side_p = np.sqrt(box_area(prev))[:, None]
    side_c = np.sqrt(box_area(cur))[None, :]
    cp = (prev[:, :2] + prev[:, 2:]) / 2
    cc = (cur[:, :2] + cur[:, 2:]) / 2
    shift = np.linalg.norm(cp[:, None, :] - cc[None, :, :], axis=-1) / np.maximum((side_p + side_c) / 2, 1e-6)
    scale = np.maximum(side_p, side_c) / np.maximum(np.minimum(side_p, side_c), 1e-6)
    lo = np.maximum(prev[:, None, :2], cur[None, :, :2])
    hi = np.minimum(prev[:, None, 2:], cur[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    iou = inter / np.maximum(box_area(prev)[:, None] + box_area(cur)[None, :] - inter, 1e-6)
    cost = shift + (1.0 - iou)
    cost[(shift > max_shift) | (scale > max_scale)] = np.inf
    return cost
