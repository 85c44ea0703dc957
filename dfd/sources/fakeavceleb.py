"""FakeAVCeleb (DASH-Lab, NeurIPS 2021 D&B): audio-video deepfakes of 500 celebrities; ``meta_data.csv``.

Layout (v1.2; the authors' repo does not document it, loaders agree on it)::

    meta_data.csv
    RealVideo-RealAudio/<race>/<gender>/<source id>/<file>.mp4      A: real
    RealVideo-FakeAudio/...                                         B: real pixels, cloned voice (rtvc)
    FakeVideo-RealAudio/...                                         C: faceswap, fsgan, wav2lip
    FakeVideo-FakeAudio/...                                         D: faceswap-wav2lip, fsgan-wav2lip, wav2lip

``meta_data.csv``'s header (``source,target1,target2,method,category,type,race,gender,path,``) names nine
columns and ends in a comma, while rows hold ten fields: the column called ``path`` holds the *file name* and
the unnamed tenth its folder, prefixed ``FakeAVCeleb/``. Rows are resolved against the files on disk whatever
the race folders are called (``Asian (East)`` or a renamed ``Asian_East``).

Labels for a face detector: C and D are fake, A real. **B has real pixels** (only the voice is cloned):
``audio_only=real`` (default) keeps it as real, ``exclude`` leaves it out; counted either way. File names repeat
across folders (2,243 in v1.2), so every item is keyed by its relative path. No official split: val and test
are carved by identity (the ``source`` celebrity and any ``id<N>`` target) with ``all_test=false``; by default
everything is test (``all_test``), its common use being an unseen test set (GenD tests on it). ``method`` is GenD's naming: ``FV-RA-wav2lip``, ``FV-FA-faceswap-wav2lip``,
``RV-RA``, ``RV-FA``; ``method_type``: faceswap and fsgan are face swaps, wav2lip lip sync, and
``<swap>-wav2lip`` a face swap whose mouth was then lip-synced (``face_swap``: the identity changed).
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources.base import DatasetSource, index_frame
from dfd.sources.protocols import carve_identities, drop_blank_splits, split_counts

META = "meta_data.csv"
# category letter -> (folder, short name, label; None = audio-only fake: real pixels)
CATEGORIES = {
    "A": ("RealVideo-RealAudio", "RV-RA", 0),
    "B": ("RealVideo-FakeAudio", "RV-FA", None),
    "C": ("FakeVideo-RealAudio", "FV-RA", 1),
    "D": ("FakeVideo-FakeAudio", "FV-FA", 1),
}
_BY_FOLDER = {folder.lower(): letter for letter, (folder, _, _) in CATEGORIES.items()}
KINDS = {"faceswap": "face_swap", "fsgan": "face_swap", "wav2lip": "lip_sync",
         "faceswap-wav2lip": "face_swap", "fsgan-wav2lip": "face_swap"}
AUDIO_ONLY = ("real", "exclude")
_ID = re.compile(r"^id\d+$")


def _norm(rel: str) -> str:
    # "Asian (East)/men" and "Asian_East/men" are one folder: case, spaces, brackets and underscores ignored.
    return re.sub(r"[\s()_\-]+", "", rel.lower())


class FakeAVCeleb(DatasetSource):
    """FakeAVCeleb's visual fakes (C, D) against its real videos (A, and B unless excluded).

    Args:
        audio_only: what the real-video/fake-audio category B is: ``real`` (its pixels are) or ``exclude``.
        all_test: every video in ``test`` (default: a cross-dataset test set).
        val_fraction, test_fraction: share of identities carved into val / test otherwise.
    """

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        audio_only: str = "real",
        all_test: bool = True,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
    ) -> None:
        super().__init__(name, root, cache_dir)
        if audio_only not in AUDIO_ONLY:
            raise DatasetError(f"{name}: dataset.audio_only must be {'|'.join(AUDIO_ONLY)}, got {audio_only!r}")
        self.audio_only = audio_only
        self.all_test = bool(all_test)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.notes: list[str] = []
        self.skipped: list[str] = []
        self.dropped: list[str] = []

    def _on_disk(self) -> dict[str, str]:
        """Normalised relative path -> relative path, for every .mp4 under the four category folders."""
        out = {}
        for top in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.lower() in _BY_FOLDER):
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames.sort()
                for f in filenames:
                    if f.lower().endswith(".mp4"):
                        rel = (Path(dirpath) / f).relative_to(self.root).as_posix()
                        out[_norm(rel)] = rel
        if not out:
            raise DatasetError(f"{self.name}: no videos under {self.root}/{{{','.join(f for f, _, _ in CATEGORIES.values())}}}"
                               "; set dataset.root to the FakeAVCeleb_v1.2 folder")
        return out

    def _meta_rows(self, disk: dict[str, str]) -> list[dict]:
        path = self.root / META
        text = path.read_text(encoding="utf-8-sig", errors="replace")
        lines = list(csv.reader(io.StringIO(text)))
        header = [h.strip().lower() for h in lines[0]] if lines else []
        need = ("source", "method", "type", "path")
        if any(h not in header for h in need):
            raise DatasetError(f"{self.name}: {path} lacks columns {[h for h in need if h not in header]} "
                               f"(header: {lines[0] if lines else []})")
        col = {h: header.index(h) for h in header if h}
        out, missing = [], []
        for n, fields in enumerate(lines[1:], 2):
            if not any(f.strip() for f in fields):
                continue
            get = {h: (fields[i].strip() if i < len(fields) else "") for h, i in col.items()}
            name = get["path"]
            # Rows have one field more than the header: the unnamed last one is the folder ("FakeAVCeleb/<type>/...").
            if len(fields) > len(header):  # a header repaired to nine names, rows still ten fields
                folder = fields[len(header)].strip()
            else:
                folder = fields[len(header) - 1].strip() if len(fields) == len(header) and not header[-1] else ""
            rel = f"{folder}/{name}" if folder and "/" not in name else name
            parts = rel.replace("\\", "/").split("/")
            top = next((i for i, p in enumerate(parts) if p.lower() in _BY_FOLDER), None)
            found = disk.get(_norm("/".join(parts[top:]))) if top is not None else None
            if found is None:
                missing.append(f"{META}:{n} {rel}")
                continue
            out.append({"rel": found, "letter": self._letter(get.get("category", ""), get["type"], found),
                        "method": get["method"], "source": get["source"], "targets": (get.get("target1", ""),
                        get.get("target2", "")), "race": get.get("race", ""), "gender": get.get("gender", "")})
        if missing:
            self.notes.append(f"{len(missing)} {META} row(s) whose file is not on disk (dropped), e.g. {missing[:3]}")
            self.skipped += missing
        return out

    @staticmethod
    def _letter(category: str, type_: str, rel: str) -> str:
        if category.strip().upper() in CATEGORIES:
            return category.strip().upper()
        return _BY_FOLDER.get(type_.strip().lower()) or _BY_FOLDER[rel.split("/")[0].lower()]

    def _folder_rows(self, disk: dict[str, str]) -> list[dict]:
        # No meta_data.csv: labels from the category folders, the celebrity from the id<N> folder; methods unknown.
        out = []
        for rel in disk.values():
            parts = rel.split("/")
            ident = next((p for p in reversed(parts[:-1]) if _ID.match(p)), "")
            out.append({"rel": rel, "letter": _BY_FOLDER[parts[0].lower()], "method": "", "source": ident,
                        "targets": ("", ""), "race": parts[1] if len(parts) > 3 else "",
                        "gender": parts[2] if len(parts) > 4 else ""})
        self.notes.append(f"no {META} in {self.root}: labels from the category folders, methods unknown")
        return out

    def _index_rows(self) -> pd.DataFrame:
        self.notes, self.skipped, self.dropped = [], [], []
        disk = self._on_disk()
        items = self._meta_rows(disk) if (self.root / META).is_file() else self._folder_rows(disk)
        rows, audio_only, seen = [], 0, set()
        for it in items:
            if it["rel"] in seen:
                continue
            seen.add(it["rel"])
            _, short, label = CATEGORIES[it["letter"]]
            if label is None:
                audio_only += 1
                if self.audio_only == "exclude":
                    continue
                label = 0
            method = f"{short}-{it['method']}" if label and it["method"] else short
            ids = (it["source"], *(t for t in it["targets"] if _ID.match(t)))
            rows.append({
                "video_id": it["rel"][:-4], "label": label, "split": "test" if self.all_test else "train",
                "method": method, "identity": it["source"], "path": it["rel"], "kind": "video",
                "category": it["letter"], "target1": it["targets"][0], "target2": it["targets"][1],
                "race": it["race"], "gender": it["gender"],
                "method_type": KINDS.get(it["method"].lower(), "") if label else "", "_ids": ids,
            })
        unlisted = len(disk) - len(seen)
        if unlisted and (self.root / META).is_file():
            self.notes.append(f"{unlisted} video(s) on disk are not in {META} (not indexed)")
        self.notes.append(f"RealVideo-FakeAudio (real pixels, cloned voice): {audio_only} video(s) "
                          f"{'kept as real' if self.audio_only == 'real' else 'excluded'} (dataset.audio_only="
                          f"{self.audio_only})")
        names = pd.Series([Path(r["path"]).name for r in rows])
        self.notes.append(f"{int(names.duplicated(keep=False).sum())} videos share a file name with another: "
                          "keyed by relative path")
        if not self.all_test:
            self.dropped = carve_identities(rows, self.val_fraction, self.test_fraction, salt="fakeavceleb")
            rows = drop_blank_splits(rows)
            self.notes.append(f"no official split: val and test carved by identity (the source celebrity and any "
                              f"id<N> target); {len(self.dropped)} fake(s) showing two splits' people dropped")
        self.notes.append(f"splits: {split_counts(rows)}")
        return index_frame(rows, extra=("category", "target1", "target2", "race", "gender", "method_type"))
