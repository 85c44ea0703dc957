"""Split and pairing rules shared by the sources of the cross-dataset test bed (DFDC, DFDCP, UADFV, DF40, ...).

Rows here are the plain dicts a source builds before ``index_frame``; private keys start with ``_``:

* ``_ids``: every identity a video shows (a face swap shows two). Held-out splits are carved over identities,
  and a video goes to a split only when all its identities were drawn for that split, so no face is seen in
  training and again in validation.
* ``source_video``: the real video a fake was made from, as a candidate ``video_id``; ``_source_name`` is the
  name the dataset gives for it (kept when that real is not in the index).
"""

from __future__ import annotations

from collections.abc import Iterable

from dfd.errors import DatasetError
from dfd.sources.base import assign_splits
from dfd.store.schema import SPLITS

STRADDLERS = ("drop", "held_out")


def carve_identities(
    rows: list[dict],
    val_fraction: float,
    test_fraction: float = 0.0,
    salt: str = "",
    within: str = "train",
    straddlers: str = "drop",
) -> list[str]:
    """Give rows whose split is ``within`` a train/val/test split, whole identities at a time.

    A row showing identities drawn for different splits (a swap of a val face onto a train video) is dropped
    (``straddlers="drop"``: its split becomes ``""``) or sent to the held-out split it touches
    (``"held_out"``: more held-out fakes; train stays clean, the held-out set shares a face with train).
    Returns the ids of the dropped rows; the caller removes rows whose split is ``""``.
    """
    if straddlers not in STRADDLERS:
        raise DatasetError(f"straddlers={straddlers!r}: choose one of {STRADDLERS}")
    pool = sorted({i for r in rows if r["split"] == within for i in _ids(r)})
    draw = assign_splits(pool, val_fraction, test_fraction, salt=salt)
    dropped = []
    for r in rows:
        if r["split"] != within:
            continue
        splits = {draw[i] for i in _ids(r)}
        if len(splits) == 1:
            r["split"] = splits.pop()
        elif straddlers == "held_out":
            r["split"] = "test" if "test" in splits else "val"
        else:
            r["split"] = ""
            dropped.append(r["video_id"])
    return dropped


def _ids(row: dict) -> tuple[str, ...]:
    # A video with no known identity is its own group (never split, never merged with another).
    return tuple(i for i in row.get("_ids", ()) if i) or (f"video:{row['video_id']}",)


def resolve_source_videos(rows: Iterable[dict]) -> None:
    """Keep a fake's ``source_video`` when that real is in the index; else the name the dataset gives for it
    (``_source_name``; '' when the dataset names none, so a guessed id never points at nothing)."""
    rows = list(rows)
    ids = {r["video_id"] for r in rows}
    for r in rows:
        cand = r.get("source_video") or ""
        if r["label"] == 0:
            r["source_video"] = ""
        elif cand not in ids:
            r["source_video"] = r.get("_source_name", cand)


def drop_blank_splits(rows: list[dict]) -> list[dict]:
    """The rows that kept a split (carving marks dropped rows with ``""``)."""
    return [r for r in rows if r["split"] in SPLITS]


def split_counts(rows: Iterable[dict]) -> str:
    """``train 10 (4 real / 6 fake), val ...`` for notes printed in the index summary."""
    out = []
    rows = list(rows)
    for s in SPLITS:
        part = [r for r in rows if r["split"] == s]
        if part:
            fakes = sum(r["label"] for r in part)
            out.append(f"{s} {len(part)} ({len(part) - fakes} real / {fakes} fake)")
    return ", ".join(out)
