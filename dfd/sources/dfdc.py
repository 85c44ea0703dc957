"""DFDC, the full Deepfake Detection Challenge set: 50 train parts with ``metadata.json``, and the labelled test set.

Layout as downloaded (part numbers are not zero-padded: ``dfdc_train_part_0`` ... ``_49``)::

    <root>/train/dfdc_train_part_<k>/metadata.json   {"<id>.mp4": {"label": "REAL"|"FAKE", "original": "<id>.mp4"|null}}
    <root>/train/dfdc_train_part_<k>/<id>.mp4
    <root>/test/labels.csv                           filename,label   (0 real, 1 fake)
    <root>/test/metadata.json                        {"<id>.mp4": {"is_fake": 0|1, ...}}  (either or both)
    <root>/validation/labels.csv                     optional; the public-leaderboard videos

A fake's ``original`` names the real video it was made from (about five fakes per real), so a validation set
carved per video would put a real in train and its fakes in val: val is carved by whole part (default, as the
winning solutions did) or by ``original`` cluster, never per video.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources.base import DatasetSource, assign_splits, index_frame
from dfd.sources.protocols import carve_identities, resolve_source_videos, split_counts

log = logging.getLogger(__name__)

PART = re.compile(r"^dfdc_train_part_(\d+)$")
LABELS = {"REAL": 0, "FAKE": 1}
VAL_BY = ("part", "original")


class DFDC(DatasetSource):
    """DFDC's train parts (``metadata.json``) and labelled test set.

    Parts without ``metadata.json`` are not indexed (their videos have no label) and are listed in the index
    summary; videos the metadata names but the disk lacks are skipped and listed.

    Args:
        val_fraction: share of train parts (or ``original`` clusters) held out for validation.
        val_by: ``part`` (whole ``dfdc_train_part_<k>`` folders) or ``original`` (a real and all its fakes).
            With fewer than two labelled parts, ``part`` falls back to ``original``.
        official_val: use ``validation/labels.csv`` as the val split instead of carving one.
    """

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        val_fraction: float = 0.1,
        val_by: str = "part",
        official_val: bool = False,
    ) -> None:
        super().__init__(name, root, cache_dir)
        if val_by not in VAL_BY:
            raise DatasetError(f"{name}: dataset.val_by must be one of {VAL_BY}, got {val_by!r}")
        self.val_fraction = val_fraction
        self.val_by = val_by
        self.official_val = bool(official_val)
        self.skipped: list[tuple[str, str]] = []
        self.notes: list[str] = []

    # -- train parts ----------------------------------------------------------------------------------
    def _part_dirs(self) -> dict[int, Path]:
        base = self.root / "train" if (self.root / "train").is_dir() else self.root
        parts = {}
        for d in base.iterdir():
            m = PART.match(d.name)
            if m and d.is_dir():
                k = int(m.group(1))  # "dfdc_train_part_7" and "dfdc_train_part_07" are both part 7
                if k in parts:
                    raise DatasetError(f"{self.name}: part {k} found twice: {parts[k]} and {d}; keep one")
                parts[k] = d
        return dict(sorted(parts.items()))

    def _train_rows(self) -> list[dict]:
        rows, no_meta = [], []
        for k, d in self._part_dirs().items():
            meta_path = d / "metadata.json"
            if not meta_path.is_file():
                n = sum(1 for p in d.glob("*.mp4"))
                no_meta.append(d.name)
                self.skipped.append((self._rel(d), f"no metadata.json: {n} videos not indexed"))
                continue
            try:
                meta = json.loads(meta_path.read_text())
            except ValueError as e:
                raise DatasetError(f"{self.name}: {meta_path} is not valid JSON ({e}); re-download the part") from e
            listed = set()
            for fname, entry in sorted(meta.items()):
                label = LABELS.get(str((entry or {}).get("label", "")).strip().upper())
                if label is None:
                    raise DatasetError(
                        f"{self.name}: {meta_path}: {fname} has label {entry.get('label')!r}; expected REAL or FAKE"
                    )
                listed.add(fname)
                path = d / fname
                if not path.is_file():
                    self.skipped.append((self._rel(path), "listed in metadata.json, missing on disk"))
                    continue
                stem = Path(fname).stem
                original = _name(entry.get("original")) if label else ""
                cluster = Path(original).stem if original else stem
                rows.append({
                    "video_id": f"{d.name}/{stem}", "label": label, "split": "train",
                    "method": "fake" if label else "real", "identity": cluster, "path": self._rel(path),
                    "kind": "video", "part": k, "original": original, "_ids": (cluster,),
                    "_source_name": original,
                })
            unlisted = sorted(p.name for p in d.glob("*.mp4") if p.name not in listed)
            if unlisted:
                self.skipped += [(self._rel(d / n), "not in metadata.json (no label)") for n in unlisted]
        if no_meta:
            self.notes.append(f"{len(no_meta)} train part(s) without metadata.json not indexed: {', '.join(no_meta)}")
        return rows

    # -- labelled test / validation sets --------------------------------------------------------------
    def _labelled_rows(self, folder: str, split: str) -> list[dict]:
        d = self.root / folder
        labels = self._read_labels(d)
        rows = []
        for fname, label in sorted(labels.items()):
            path = d / fname
            if not path.is_file():
                self.skipped.append((self._rel(path), f"listed in {folder}/ labels, missing on disk"))
                continue
            stem = Path(fname).stem
            rows.append({
                "video_id": f"{folder}/{stem}", "label": label, "split": split, "method": "fake" if label else "real",
                "identity": stem, "path": self._rel(path), "kind": "video", "part": -1, "original": "",
                "_ids": (stem,), "_source_name": "",
            })
        return rows

    def _read_labels(self, d: Path) -> dict[str, int]:
        """file name -> label from ``labels.csv`` (``filename,label``) and/or ``metadata.json`` (``is_fake``)."""
        found: dict[str, dict[str, int]] = {}
        csv = d / "labels.csv"
        if csv.is_file():
            table = pd.read_csv(csv, dtype=str)
            if not {"filename", "label"} <= set(table.columns):
                raise DatasetError(f"{self.name}: {csv} needs columns filename,label; found {list(table.columns)}")
            try:
                found["labels.csv"] = {f: int(float(v)) for f, v in zip(table["filename"], table["label"], strict=True)}
            except (TypeError, ValueError) as e:
                raise DatasetError(f"{self.name}: {csv}: labels must be 0 (real) or 1 (fake) ({e})") from e
        meta = d / "metadata.json"
        if meta.is_file():
            data = json.loads(meta.read_text())
            if all(isinstance(v, dict) and "is_fake" in v for v in data.values()):
                found["metadata.json"] = {f: int(v["is_fake"]) for f, v in data.items()}
        if not found:
            return {}
        merged: dict[str, int] = {}
        for source, labels in found.items():
            bad = sorted({v for v in labels.values()} - {0, 1})
            if bad:
                raise DatasetError(f"{self.name}: {d / source}: labels must be 0 or 1, found {bad}")
            for f, v in labels.items():
                if merged.setdefault(f, v) != v:
                    raise DatasetError(f"{self.name}: {d}: labels.csv and metadata.json disagree on {f}")
        return merged

    # -- index ----------------------------------------------------------------------------------------
    def _index_rows(self) -> pd.DataFrame:
        self.skipped, self.notes = [], []
        rows = self._train_rows() + self._labelled_rows("test", "test")
        val_rows = self._labelled_rows("validation", "val") if (self.root / "validation").is_dir() else []
        if val_rows and self.official_val:
            rows += val_rows
        elif val_rows:
            self.notes.append(f"validation/ ({len(val_rows)} videos) not used; dataset.official_val=true uses it as val")
        if not rows:
            raise DatasetError(
                f"{self.name}: no labelled videos under {self.root} (train/dfdc_train_part_<k>/metadata.json or "
                f"test/labels.csv); set dataset.root to the DFDC folder"
            )
        if not self.official_val and self.val_fraction > 0:
            self._carve_val(rows)
        # A fake's original may sit in another part: point at it wherever it is.
        real_ids = {r["video_id"].rsplit("/", 1)[1]: r["video_id"] for r in rows if r["label"] == 0 and r["part"] >= 0}
        crossing = 0
        split_of = {r["video_id"]: r["split"] for r in rows}
        for r in rows:
            stem = Path(r["original"]).stem if r["original"] else ""
            r["source_video"] = real_ids.get(stem, "")
            if r["source_video"] and split_of[r["source_video"]] != r["split"]:
                crossing += 1
        if crossing:
            self.notes.append(f"{crossing} fakes sit in another split than their original (val carved by part)")
        resolve_source_videos(rows)
        self.notes.append(f"splits: {split_counts(rows)}")
        return index_frame(rows, extra=("part", "original", "source_video"))

    def _carve_val(self, rows: list[dict]) -> None:
        parts = sorted({r["part"] for r in rows if r["split"] == "train"})
        if self.val_by == "part" and len(parts) >= 2:
            draw = assign_splits([str(p) for p in parts], self.val_fraction, salt="dfdc-val-parts")
            val_parts = sorted(int(p) for p, s in draw.items() if s == "val")
            for r in rows:
                if r["split"] == "train" and str(r["part"]) in draw:
                    r["split"] = draw[str(r["part"])]
            self.notes.append(f"val = whole train parts {val_parts}")
            return
        if self.val_by == "part" and parts:
            self.notes.append(f"only {len(parts)} labelled train part(s): val carved by original cluster instead")
        carve_identities(rows, self.val_fraction, salt="dfdc-val-original")

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def _name(value: object) -> str:
    """A metadata ``original`` value as a file name; null/NaN/empty (reals) -> ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()
