"""DeepSpeak v1.1 and v2 (Farid lab, arXiv 2408.05366): webcam recordings of consenting people, and fakes of
them made with face-swap, lip-sync and (v2) avatar tools.

Read from the release's annotation table (``annotations-v11.csv`` / ``annotations-v2.csv``, or an export of the
Hugging Face dataset with the same fields) next to the videos. Fields, found whatever their spelling:

* ``type``: ``real`` | ``fake`` (the label: every fake is visually manipulated; v1.1's ElevenLabs flag is about
  audio only);
* ``video-file``: the video, relative to the root or absolute (an HF cache path); its folder and name locate it;
* ``split``: ``train`` | ``test`` (the official split assigns whole identities), else ``annotations-split-def.csv``
  (``identity,split``), else a ``train``/``test`` folder in the path;
* identities: ``identity`` (reals), ``identity-source`` / ``identity-target`` (fakes), as columns or inside the
  ``metadata-real`` / ``metadata-fake`` dicts (JSON or Python literals, as an HF export writes them);
* ``kind`` (``face-swap`` | ``lip-sync`` | v2's avatar kinds) and ``engine``, as columns or in ``metadata-fake``;
  without an engine, the file name's first ``-``-separated word (``facefusion--118-119--...``, ``diff2lip-6868-...``).

``method`` = the engine; ``method_type`` from ``kind`` (face-swap -> face_swap, lip-sync -> lip_sync, avatar ->
talking_face; other kinds stay "" and are listed). There is no val split: val is carved from train by identity.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources import tables
from dfd.sources.base import DatasetSource, index_frame
from dfd.sources.protocols import carve_identities, drop_blank_splits, split_counts

VERSIONS = {"1.1": "v1_1", "v1_1": "v1_1", "v1.1": "v1_1", "2": "v2", "v2": "v2"}
TABLES = {"v1_1": "annotations-v11.csv", "v2": "annotations-v2.csv"}
SPLIT_DEF = "annotations-split-def.csv"
KINDS = {"face swap": "face_swap", "faceswap": "face_swap", "lip sync": "lip_sync", "lipsync": "lip_sync",
         "avatar": "talking_face"}
SPLITS = {"train": "train", "test": "test"}


def _mapping(value: object) -> dict:
    """A metadata cell as a dict: JSON, a Python literal (an exported HF dataset), or {} when empty."""
    if isinstance(value, dict):
        return value
    text = str(value or "").strip()
    if not text:
        return {}
    for parse in (json.loads, ast.literal_eval):
        try:
            out = parse(text)
            return out if isinstance(out, dict) else {}
        except (ValueError, SyntaxError):
            continue
    return {}


class DeepSpeak(DatasetSource):
    """DeepSpeak (``version`` 1.1 or 2) from its annotation table, official train/test, val carved by identity.

    Args:
        version: ``1.1`` or ``2`` (which annotation file is looked for first).
        annotations: the table (relative to the root or absolute); null: ``annotations-v11.csv`` /
            ``annotations-v2.csv``, else the only ``annotations*.csv`` with a ``type`` column.
        val_fraction: share of training identities carved into val.
    """

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        version: str = "1.1",
        annotations: str | Path | None = None,
        val_fraction: float = 0.1,
    ) -> None:
        super().__init__(name, root, cache_dir)
        v = VERSIONS.get(str(version).lower())
        if v is None:
            raise DatasetError(f"{name}: dataset.version must be 1.1 or 2, got {version!r}")
        self.version = v
        self.annotations = annotations
        self.val_fraction = val_fraction
        self.notes: list[str] = []
        self.skipped: list[str] = []
        self.dropped: list[str] = []

    def _table(self) -> Path:
        if self.annotations:
            p = Path(self.annotations)
            p = p if p.is_absolute() else self.root / p
            if not p.is_file():
                raise DatasetError(f"{self.name}: dataset.annotations={self.annotations} is not a file")
            return p
        if (self.root / TABLES[self.version]).is_file():
            return self.root / TABLES[self.version]
        cands = [p for p in sorted(self.root.glob("annotations*.csv")) if p.name != SPLIT_DEF
                 and tables.column(tables.read_csv(p, self.name), ("type",))]
        if len(cands) != 1:
            raise DatasetError(
                f"{self.name}: expected DeepSpeak's annotation table {TABLES[self.version]} in {self.root} "
                f"(found {[p.name for p in cands] or 'none'}); set dataset.annotations=<file> (an export of the HF "
                "dataset with columns type, video-file, ... works)")
        return cands[0]

    def _locate(self, value: str) -> str | None:
        p = Path(value.replace("\\", "/"))
        for cand in ([p] if p.is_absolute() else [self.root / p]) + [self.root / p.parent.name / p.name,
                                                                     self.root / p.name]:
            if cand.is_file():
                return self.locate(cand)["path"]
        return None

    def _index_rows(self) -> pd.DataFrame:
        self.notes, self.skipped, self.dropped = [], [], []
        table = self._table()
        where = f"{self.name} ({table.name})"
        df = tables.read_csv(table, where)
        tcol = tables.need(df, ("type", "label"), table, where)
        vcol = tables.need(df, ("video-file", "video file", "video", "path", "file"), table, where)
        scol = tables.column(df, ("split",))
        col = {k: tables.column(df, (k,)) for k in ("identity", "identity-source", "identity-target", "kind", "engine")}
        mreal, mfake = tables.column(df, ("metadata-real",)), tables.column(df, ("metadata-fake",))
        split_of: dict[str, str] = {}
        if scol is None and (self.root / SPLIT_DEF).is_file():
            sd = tables.read_csv(self.root / SPLIT_DEF, where)
            i, s = tables.need(sd, ("identity",), self.root / SPLIT_DEF, where), tables.need(
                sd, ("split",), self.root / SPLIT_DEF, where)
            split_of = {str(a).strip(): str(b).strip().lower() for a, b in zip(sd[i], sd[s], strict=True)}
        rows, bad, missing, unmapped = [], [], [], set()
        for n, rec in enumerate(df.to_dict("records"), 2):
            label = {"real": 0, "fake": 1}.get(tables.key(rec[tcol]))
            rel = self._locate(str(rec[vcol]).strip()) if str(rec[vcol]).strip() else None
            if label is None:
                bad.append(f"{table.name}:{n} type {rec[tcol]!r}")
                continue
            if rel is None:
                missing.append(f"{table.name}:{n} {rec[vcol]}")
                continue
            meta = _mapping(rec[mfake] if label and mfake else rec[mreal] if mreal else "")

            def field(k: str, rec=rec, meta=meta) -> str:
                return str((rec[col[k]] if col[k] else "") or meta.get(k, "") or "").strip()

            ids = ((field("identity-target"), field("identity-source")) if label else (field("identity"),))
            ids = tuple(i for i in ids if i)
            split = SPLITS.get(tables.key(rec[scol])) if scol else None
            if split is None and ids and split_of:
                split = SPLITS.get(split_of.get(ids[0], ""))
            if split is None:
                split = next((SPLITS[p.lower()] for p in Path(rel).parts if p.lower() in SPLITS), None)
            if split is None:
                bad.append(f"{table.name}:{n} no train/test split")
                continue
            kind = field("kind")
            engine = field("engine") or (Path(rel).stem.split("-")[0] if label else "")
            if label and kind and tables.key(kind) not in KINDS:
                unmapped.add(kind)
            rows.append({
                "video_id": Path(rel).with_suffix("").as_posix(), "label": label, "split": split,
                "method": engine if label else "real", "identity": ids[0] if ids else "", "path": rel,
                "kind": "video", "fake_kind": kind, "source_identity": ids[1] if len(ids) > 1 else "",
                "method_type": KINDS.get(tables.key(kind), "") if label else "", "_ids": ids,
            })
        for what, items in (("rows without a real/fake type or a split", bad), ("videos not found", missing)):
            if items:
                self.notes.append(f"{len(items)} {what} (dropped), e.g. {items[:3]}")
                self.skipped += items
        if unmapped:
            self.notes.append(f"fake kinds without a method_type (left empty): {sorted(unmapped)}")
        if not rows:
            raise DatasetError(f"{self.name}: no usable row in {table}")
        self.dropped = carve_identities(rows, self.val_fraction, salt="deepspeak-val", within="train")
        rows = drop_blank_splits(rows)
        self.notes.append(f"DeepSpeak {self.version.replace('_', '.')} from {table.name}: official train/test by "
                          f"identity, val carved from train by identity ({len(self.dropped)} fake(s) showing a val and a "
                          f"train identity dropped); {split_counts(rows)}")
        return index_frame(rows, extra=("fake_kind", "source_identity", "method_type"))
