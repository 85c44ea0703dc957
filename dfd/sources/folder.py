"""A competition's own data as folders: ``root/real/**`` and ``root/fake/**`` (optionally per split)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources.base import DatasetSource, carve_rows, find_media, index_frame
from dfd.store.schema import SPLITS

LABEL_DIRS = {"real": 0, "fake": 1}


class Folder(DatasetSource):
    """Images, videos or frame folders under ``real/`` and ``fake/``, or under ``<split>/{real,fake}/``.

    ``video_id`` is the path relative to the root without its extension. ``method`` is the first folder below
    ``real/`` or ``fake/`` (``fake/Deepfakes/x.mp4`` -> ``Deepfakes``, ``real/youtube/y.mp4`` -> ``youtube``),
    else ``real`` / ``fake``; ``methods_from_folders=false`` names every video just ``real`` or ``fake`` (when
    sub-folders are only a way to organise files). Without split folders, val and test are carved
    deterministically per video; with split folders but no ``val/``, val is carved from train.
    """

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        frame_folders: bool = True,
        methods_from_folders: bool = True,
    ) -> None:
        super().__init__(name, root, cache_dir)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.frame_folders = frame_folders
        self.methods_from_folders = methods_from_folders

    def index_notes(self) -> list[str]:
        notes = super().index_notes()
        if self.methods_from_folders:
            return ["methods: the first sub-folder under real/ and fake/ names a video's method (per-method "
                    "metrics); dataset.methods_from_folders=false names them just real/fake", *notes]
        return ["methods: real/fake only (dataset.methods_from_folders=false)", *notes]

    def _index_rows(self) -> pd.DataFrame:
        split_dirs = [s for s in SPLITS if any((self.root / s / d).is_dir() for d in LABEL_DIRS)]
        tops = [(s, self.root / s) for s in split_dirs] if split_dirs else [("", self.root)]
        rows = []
        for split, top in tops:
            for label_dir, label in LABEL_DIRS.items():
                base = top / label_dir
                if not base.is_dir():
                    continue
                for path, kind in find_media(base, self.frame_folders):
                    rel = path.relative_to(self.root)
                    below = path.relative_to(base).parts
                    method = below[0] if self.methods_from_folders and len(below) > 1 else label_dir
                    rows.append({
                        "video_id": rel.with_suffix("").as_posix() if kind != "frames" else rel.as_posix(),
                        "label": label, "split": split, "method": method, "identity": "",
                        "path": rel.as_posix(), "kind": kind,
                    })
        if not rows:
            raise DatasetError(
                f"{self.name}: no images or videos in {self.root}/real and {self.root}/fake (or "
                f"{self.root}/<train|val|test>/{{real,fake}}); put media there or set dataset.root"
            )
        self.notes = []
        if not split_dirs:
            carve_rows(rows, self.val_fraction, self.test_fraction, salt="folder", notes=self.notes)
        elif "val" not in split_dirs:
            carve_rows(rows, self.val_fraction, 0.0, salt="folder-val", within="train", notes=self.notes)
        if not split_dirs or "val" not in split_dirs:
            self.notes.append("splits carved per video and label by each video's own draw (val_fraction, "
                              "test_fraction): adding or removing a file moves no other video")
        return index_frame(rows)

