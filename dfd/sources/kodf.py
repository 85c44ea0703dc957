"""KoDF (DeepBrain AI, ICCV 2021): Korean faces, 403 subjects; the AI Hub release's metadata tables.

Layout (AI Hub; the research release's layout is not documented)::

    원본영상_training_메타데이터.csv     (originals)      변조영상_training_메타데이터.csv     (manipulated)
    원본영상_validation_메타데이터.csv                     변조영상_validation_메타데이터.csv
    **/<video id>.mp4                    (anywhere below the root; ids are unique across the dataset)

A table's name says its label (원본 = original, 변조 = manipulated) and its part (training / validation).
Columns: ``영상ID`` (the video id, sometimes with ``.mp4``), and for fakes ``타겟영상`` (the original the fake was
made from: ``source_video``) and ``변조모델`` (the model: ``method``). Tables are read as UTF-8 or CP949.

Splits: ``training`` -> train, ``validation`` -> test (AI Hub publishes no test labels; the validation part is
what others test on). Val is carved from training by *family*: an original and every fake made from it go to
the same split, so val never shows a video whose source trained the model. (KoDF's subject column is not
known here; one person's other recordings can straddle train and val: the summary says so.)

``method_type``: ``dfl``, ``dffs``, ``fsgan`` (DeepFaceLab, FaceSwap, FSGAN) are face swaps and ``fo`` (FOMM)
reenactment; ``audio-driven`` mixes ATFHP talking faces with Wav2Lip lip sync without telling them apart, so it
stays "" (unknown).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources import tables
from dfd.sources.base import DatasetSource, index_frame
from dfd.sources.protocols import carve_identities, split_counts

REAL_WORDS = ("원본", "original")
FAKE_WORDS = ("변조", "manipulated", "fake")
PARTS = {"training": "train", "validation": "test"}
KINDS = {"dfl": "face_swap", "dffs": "face_swap", "fsgan": "face_swap", "fo": "reenactment"}


def _video_id(value: object) -> str:
    name = str(value).strip()
    return name[:-4] if name.lower().endswith(".mp4") else name


class KoDF(DatasetSource):
    """KoDF from its AI Hub metadata tables; videos found anywhere below the root by id.

    Args:
        val_fraction: share of the training families (an original + its fakes) carved into val.
    """

    def __init__(self, name: str, root: str | Path | None, cache_dir: str | Path, val_fraction: float = 0.1) -> None:
        super().__init__(name, root, cache_dir)
        self.val_fraction = val_fraction
        self.notes: list[str] = []
        self.skipped: list[str] = []

    def _tables(self) -> list[tuple[Path, int, str]]:
        out = []
        for p in sorted(self.root.glob("*.csv")):
            low = p.name.lower()
            label = 0 if any(w in low for w in REAL_WORDS) else 1 if any(w in low for w in FAKE_WORDS) else None
            part = next((s for w, s in PARTS.items() if w in low), None)
            if label is not None and part is not None:
                out.append((p, label, part))
        if not any(lab == 0 for _, lab, _ in out) or not any(lab == 1 for _, lab, _ in out):
            raise DatasetError(
                f"{self.name}: expected KoDF's metadata tables in {self.root} (원본영상_training_메타데이터.csv, "
                f"변조영상_training_메타데이터.csv and their validation twins); found {[p.name for p, _, _ in out]}")
        return out

    def _videos(self) -> dict[str, str]:
        found: dict[str, str] = {}
        repeated = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for f in sorted(filenames):
                if f.lower().endswith(".mp4"):
                    rel = (Path(dirpath) / f).relative_to(self.root).as_posix()
                    if f[:-4] in found:
                        repeated.append(rel)
                    found.setdefault(f[:-4], rel)
        if repeated:
            self.notes.append(f"{len(repeated)} video file name(s) repeat below the root (first one kept), e.g. "
                              f"{repeated[:3]}")
        return found

    def _index_rows(self) -> pd.DataFrame:
        self.notes, self.skipped = [], []
        videos = self._videos()
        rows, missing, repeated = [], [], []
        seen: set[str] = set()
        for table, label, split in self._tables():
            where = f"{self.name} ({table.name})"
            df = tables.read_csv(table, where)
            icol = tables.need(df, ("영상ID", "video id", "id"), table, where)
            tcol = tables.column(df, ("타겟영상", "target video", "target")) if label else None
            mcol = tables.need(df, ("변조모델", "model", "method"), table, where) if label else None
            for rec in df.to_dict("records"):
                vid = _video_id(rec[icol])
                if not vid:
                    continue
                if vid in seen:
                    repeated.append(vid)
                    continue
                seen.add(vid)
                if vid not in videos:
                    missing.append(f"{table.name}: {vid}")
                    continue
                method = str(rec[mcol]).strip() if label else "real"
                target = _video_id(rec[tcol]) if tcol else ""
                rows.append({
                    "video_id": vid, "label": label, "split": split, "method": method, "identity": "",
                    "path": videos[vid], "kind": "video", "source_video": target,
                    "method_type": KINDS.get(method.lower(), "") if label else "",
                    "_family": target or vid,
                })
        ids = {r["video_id"] for r in rows}
        for r in rows:
            if r["source_video"] not in ids:
                r["_family"] = r["video_id"]  # its original is not indexed: a family of its own
        if missing:
            self.notes.append(f"{len(missing)} listed video(s) not found below the root (dropped), e.g. {missing[:3]}")
            self.skipped += missing
        if repeated:
            self.notes.append(f"{len(repeated)} id(s) listed twice (first kept), e.g. {repeated[:3]}")
        unlisted = len(set(videos) - seen)
        if unlisted:
            self.notes.append(f"{unlisted} .mp4 file(s) below the root are in no metadata table (not indexed)")
        for r in rows:
            r["_ids"] = (r["_family"],)
        carve_identities(rows, self.val_fraction, salt="kodf-val", within="train")
        self.notes.append("splits: AI Hub's training part -> train (val carved by family: an original with the "
                          "fakes made from it), its validation part -> test; KoDF's subject column is not read, so "
                          f"a person's other videos may straddle train and val. {split_counts(rows)}")
        return index_frame(rows, extra=("source_video", "method_type"))
