"""DiFF (Diffusion Facial Forgery, ACM MM 2024): >500k diffusion-made face images in four subsets.

Layout (as its users lay it out; the authors' repo describes none)::

    DiFF_real/{train,val,test}/**/*.png|jpg          pristine images (by request form); also read as real/
    {train,val,test}/{T2I,I2I,FS,FE}/<sub-folders>/*  fakes (public Google Drive)

Labels come from the folder a file sits in, never from folder order (a loader that sorted class folders
alphabetically once took ``DiFF_real`` for class 1). ``method`` is the subset (``T2I`` text-to-image, ``I2I``
image-to-image, ``FS`` face swap, ``FE`` face editing); the first sub-folder below it (probably the generator;
its names are not documented) is kept as ``generator``. Splits are the folders; a split with reals but no fakes
(or the reverse) is indexed as it is and ``dfd-index`` warns. Images are whole pictures, not face crops:
``dfd-extract`` detects the face. ``method_type``: T2I and I2I are diffusion images, FS face swaps, FE face edits.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources import kinds
from dfd.sources.base import DatasetSource, index_frame, media_kind
from dfd.sources.protocols import split_counts
from dfd.store.schema import SPLITS

REAL_DIRS = ("diff_real", "real")
_SUBSETS = {k.lower(): k for k in kinds.DIFF}
_SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


class DiFF(DatasetSource):
    """DiFF's real and fake images with their folder splits; subsets as methods."""

    def __init__(self, name: str, root: str | Path | None, cache_dir: str | Path) -> None:
        super().__init__(name, root, cache_dir)
        self.notes: list[str] = []

    def _images(self, top: Path) -> list[Path]:
        out = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            out += [Path(dirpath) / f for f in sorted(filenames) if media_kind(f) == "image"]
        return out

    def _row(self, path: Path, label: int, split: str, method: str, generator: str) -> dict:
        rel = path.relative_to(self.root).as_posix()
        return {"video_id": Path(rel).with_suffix("").as_posix(), "label": label, "split": split, "method": method,
                "identity": "", "path": rel, "kind": "image", "generator": generator,
                "method_type": kinds.DIFF.get(method, "") if label else ""}

    def _index_rows(self) -> pd.DataFrame:
        self.notes = []
        rows = []
        for top in sorted(p for p in self.root.iterdir() if p.is_dir()):
            low = top.name.lower()
            if low in REAL_DIRS:  # DiFF_real/<split>/...
                for sp in sorted(p for p in top.iterdir() if p.is_dir() and p.name.lower() in _SPLITS):
                    rows += [self._row(p, 0, _SPLITS[sp.name.lower()], "real", "") for p in self._images(sp)]
            elif low in _SPLITS:  # <split>/<subset>/...
                for sub in sorted(p for p in top.iterdir() if p.is_dir()):
                    if sub.name.lower() in REAL_DIRS:
                        rows += [self._row(p, 0, _SPLITS[low], "real", "") for p in self._images(sub)]
                        continue
                    method = _SUBSETS.get(sub.name.lower())
                    if method is None:
                        self.notes.append(f"{sub.relative_to(self.root)}: not a DiFF subset ({', '.join(kinds.DIFF)}); "
                                          "not indexed")
                        continue
                    for p in self._images(sub):
                        below = p.relative_to(sub).parts
                        rows.append(self._row(p, 1, _SPLITS[low], method, below[0] if len(below) > 1 else ""))
        if not rows:
            raise DatasetError(f"{self.name}: no DiFF images in {self.root} (expected DiFF_real/<split>/ and "
                               "<split>/{T2I,I2I,FS,FE}/); set dataset.root to the DiFF folder")
        if not any(r["label"] == 0 for r in rows):
            self.notes.append("no real images (DiFF_real/ comes by request form): the fakes are indexed alone")
        df = pd.DataFrame(rows)
        fakes = df[df.label == 1]
        if len(fakes):
            per = fakes.groupby(["method", "generator"]).size()
            self.notes.append("fakes per subset / sub-folder: " + ", ".join(
                f"{m}/{g or '-'} {n}" for (m, g), n in per.items()))
        self.notes.append(f"splits (folders): {split_counts(rows)}")
        order = {s: i for i, s in enumerate(SPLITS)}
        rows.sort(key=lambda r: (order[r["split"]], r["label"], r["video_id"]))
        return index_frame(rows, extra=("generator", "method_type"))
