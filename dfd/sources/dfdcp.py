"""DFDC Preview (DFDCP): ``dataset.json`` plus ``original_videos/``, ``method_A/``, ``method_B/``.

``dataset.json`` is keyed by the video's path relative to the root and gives ``label`` (``real``/``fake``,
lower case), ``set`` (``train``/``test``: the official split; there is no val), and, depending on the copy,
``target_id``, ``swapped_id`` and ``source_video``. Fakes are named
``method_B/<target>/<target>_<scene>/<swapped>_<target>_<scene>_<clip>.mp4`` and are made from
``original_videos/<target>/<target>_<scene>_<clip>.mp4``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources.base import DatasetSource, index_frame
from dfd.sources.protocols import carve_identities, drop_blank_splits, resolve_source_videos, split_counts

LABELS = {"real": 0, "fake": 1}
SETS = ("train", "test")
_NUM = re.compile(r"^\d+$")


def parse_name(stem: str) -> tuple[str, str, str]:
    """(target id, swapped id, scene+clip suffix) from a DFDCP file stem; '' where the name does not say.

    ``643049_A_001`` -> ('643049', '', 'A_001'); ``1255229_1260311_C_001`` -> ('1260311', '1255229', 'C_001').
    """
    tokens = stem.split("_")
    ids = []
    for t in tokens:
        if not _NUM.match(t):
            break
        ids.append(t)
    rest = "_".join(tokens[len(ids):])
    if len(ids) == 1:
        return ids[0], "", rest
    if len(ids) == 2:
        return ids[1], ids[0], rest
    return "", "", rest


class DFDCP(DatasetSource):
    """DFDC Preview with its official test split and an identity-disjoint validation set carved from train.

    Identities come from ``dataset.json`` (``target_id``, ``swapped_id``) when it has them, else from the path
    (``<method>/<target_id>/...``) and file name. Val draws whole target identities; a fake pasting a val
    identity onto a train identity (or the reverse) is dropped (``val_straddlers=drop``) or sent to val
    (``held_out``). Entries whose video is missing on disk are skipped and listed (the DFDCP archive is known to
    be incomplete).

    Args:
        val_fraction: share of train identities held out for validation.
        val_straddlers: ``drop`` | ``held_out``.
        metadata: the JSON file name (``dataset.json``).
    """

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        val_fraction: float = 0.1,
        val_straddlers: str = "drop",
        metadata: str = "dataset.json",
    ) -> None:
        super().__init__(name, root, cache_dir)
        self.val_fraction = val_fraction
        self.val_straddlers = val_straddlers
        self.metadata = metadata
        self.skipped: list[tuple[str, str]] = []
        self.dropped: list[str] = []
        self.notes: list[str] = []

    def _entries(self) -> dict:
        path = self.root / self.metadata
        if not path.is_file():
            raise DatasetError(
                f"{self.name}: {path} not found; DFDCP ships dataset.json in its root (dfdc_preview_set/); set "
                "dataset.root to that folder"
            )
        try:
            data = json.loads(path.read_text())
        except ValueError as e:
            raise DatasetError(f"{self.name}: {path} is not valid JSON ({e})") from e
        if not isinstance(data, dict):
            raise DatasetError(f"{self.name}: {path} must map video paths to their metadata")
        return data

    def _index_rows(self) -> pd.DataFrame:
        self.skipped, self.dropped, self.notes = [], [], []
        rows = []
        for key, entry in sorted(self._entries().items()):
            rel = PurePosixPath(key.replace("\\", "/").lstrip("./"))
            label = LABELS.get(str(entry.get("label", "")).strip().lower())
            split = str(entry.get("set", "")).strip().lower()
            if label is None or split not in SETS:
                raise DatasetError(
                    f"{self.name}: {self.metadata}: {key}: expected label real|fake and set train|test, got "
                    f"{entry.get('label')!r}, {entry.get('set')!r}"
                )
            if not (self.root / rel).is_file():
                self.skipped.append((rel.as_posix(), "listed in dataset.json, missing on disk"))
                continue
            target, swapped, rest = parse_name(rel.stem)
            target = str(entry.get("target_id") or target or (rel.parts[1] if len(rel.parts) > 2 else ""))
            swapped = str(entry.get("swapped_id") or swapped) if label else ""
            source_name = _name(entry.get("source_video")) if label else ""
            # From the names: <swapped>_<target>_<scene>_<clip> comes from original_videos/<target>/<target>_<scene>_<clip>.
            derived = f"original_videos/{target}/{target}_{rest}" if label and target and rest else ""
            rows.append({
                "video_id": rel.with_suffix("").as_posix(), "label": label, "split": split,
                "method": rel.parts[0], "identity": target, "path": rel.as_posix(), "kind": "video",
                "source_identity": swapped, "_ids": tuple(i for i in (target, swapped) if i),
                "source_video": _video_id(source_name) if source_name else derived, "_source_name": source_name,
            })
        if not rows:
            raise DatasetError(f"{self.name}: none of the videos in {self.root / self.metadata} is on disk")
        self.dropped = carve_identities(rows, self.val_fraction, salt="dfdcp-val", straddlers=self.val_straddlers)
        rows = drop_blank_splits(rows)
        # source_video's format is not documented: a path, or a bare file name matched by stem.
        ids = {r["video_id"] for r in rows}
        real_by_stem = {PurePosixPath(r["video_id"]).name: r["video_id"] for r in rows if r["label"] == 0}
        for r in rows:
            given = r["_source_name"]
            if given and r["source_video"] not in ids:
                r["source_video"] = real_by_stem.get(PurePosixPath(_video_id(given)).name, r["source_video"])
        resolve_source_videos(rows)
        if self.skipped:
            self.notes.append(f"{len(self.skipped)} video(s) in {self.metadata} missing on disk, e.g. {self.skipped[0][0]}")
        if self.dropped:
            self.notes.append(f"{len(self.dropped)} train fakes mixing a val and a train identity dropped")
        self.notes.append(f"official test = set 'test'; val carved from train by identity: {split_counts(rows)}")
        return index_frame(rows, extra=("source_identity", "source_video"))


def _name(value: object) -> str:
    return "" if value is None or value != value else str(value).strip()  # None / NaN -> ''


def _video_id(name: str) -> str:
    """A ``source_video`` value as a video id: relative paths keep their folders, extensions go."""
    if not name:
        return ""
    p = PurePosixPath(name.replace("\\", "/").lstrip("./"))
    return p.with_suffix("").as_posix() if p.suffix else p.as_posix()
