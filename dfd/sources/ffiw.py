"""FFIW-10K (Zhou et al., CVPR 2021): face forgery in the wild, several faces per frame, video-level labels.

Layout (the release and its separate test release)::

    FFIW10K-v1-release/{source,target,target_mask}/{train,val}/<split>_<8 digits>.mp4
    FFIW10K-v1-release-test/{source,target,target_mask}/test/...

``source/`` holds the real videos, ``target/`` the fakes; a fake and the real it was made from share a file
name, and ``target_mask/<split>/<stem>_mask.mp4`` marks the manipulated faces (frame-aligned). Only some faces
of a fake are manipulated: the mask path is kept in the index (column ``mask``) so a face-choice rule can use
it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources import kinds
from dfd.sources.base import VIDEO_EXTS, DatasetSource, index_frame
from dfd.sources.protocols import carve_identities, resolve_source_videos, split_counts
from dfd.store.schema import SPLITS

FOLDERS = {"source": 0, "target": 1}


class FFIW(DatasetSource):
    """FFIW-10K with its official train/val (and, from the test release, test) folders.

    Args:
        test_root: the separate test release (``FFIW10K-v1-release-test``); optional.
        val_as_test: use the ``val`` folder as the test split and carve val from train by pair (for users
            without the test release: the usual cross-dataset protocol tests on FFIW's val videos).
        val_fraction: share of train pairs carved for val when ``val_as_test``.

    Test-release paths are relative to ``test_root`` (``path_root``); a fake's ``mask`` to its video's root.
    """

    other_roots = ("test_root",)

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        test_root: str | Path | None = None,
        val_as_test: bool = False,
        val_fraction: float = 0.1,
    ) -> None:
        super().__init__(name, root, cache_dir)
        self.test_root = Path(test_root) if test_root else None
        self.val_as_test = bool(val_as_test)
        self.val_fraction = val_fraction
        self.notes: list[str] = []

    def _bases(self) -> list[Path]:
        bases = [self.root]
        if self.test_root is not None and self.test_root.is_dir() and self.test_root.resolve() != self.root.resolve():
            bases.append(self.test_root)
        return bases

    def _index_rows(self) -> pd.DataFrame:
        self.notes = []  # per build: a second build_index must not repeat them
        rows = []
        for base in self._bases():
            for folder, label in FOLDERS.items():
                for split in SPLITS:
                    d = base / folder / split
                    if not d.is_dir():
                        continue
                    for p in sorted(q for q in d.iterdir() if q.is_file() and q.suffix.lower() in VIDEO_EXTS):
                        mask = base / "target_mask" / split / f"{p.stem}_mask{p.suffix}"
                        rows.append({
                            "video_id": f"{folder}/{split}/{p.stem}", "label": label, "split": split,
                            "method": folder, "identity": f"{split}/{p.stem}", **self.locate(p),
                            "kind": "video", "_ids": (f"{split}/{p.stem}",),
                            "source_video": f"source/{split}/{p.stem}" if label else "", "_source_name": p.name,
                            "mask": self.locate(mask)["path"] if label and mask.is_file() else "",
                        })
        if not rows:
            raise DatasetError(
                f"{self.name}: no videos in {self.root}/{{source,target}}/{{train,val,test}}; set dataset.root to "
                "the FFIW10K-v1-release folder (and dataset.test_root to FFIW10K-v1-release-test)"
            )
        have = {r["split"] for r in rows}
        if self.val_as_test:
            if "test" in have:
                raise DatasetError(f"{self.name}: dataset.val_as_test=true but a test/ folder was found; "
                                   "set val_as_test=false to use it")
            for r in rows:
                r["split"] = {"val": "test"}.get(r["split"], r["split"])
            carve_identities(rows, self.val_fraction, salt="ffiw-val")
            self.notes.append("val/ used as the test split; val carved from train by pair")
        elif "test" not in have:
            self.notes.append(
                f"no test/ folder under {[str(b) for b in self._bases()]}: set dataset.test_root to the "
                "FFIW10K-v1-release-test folder, or dataset.val_as_test=true to test on val/"
            )
        ids = {r["video_id"] for r in rows}
        unpaired = sum(1 for r in rows if r["label"] and r["source_video"] not in ids)
        if unpaired:
            self.notes.append(f"{unpaired} fakes without a same-named real video")
        resolve_source_videos(rows)
        self.notes.append(f"splits: {split_counts(rows)}")
        kinds.fill(rows, "face_swap")  # FFIW's fakes are face swaps (DeepFaceLab, FSGAN, FaceSwap)
        return index_frame(rows, extra=("source_video", "mask", "method_type"))

