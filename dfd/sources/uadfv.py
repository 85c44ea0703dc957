"""UADFV (Yang, Li and Lyu 2019): ``real/<n>.mp4`` and ``fake/<n>_fake.mp4``, 49 + 49 videos, no official split."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources import kinds
from dfd.sources.base import VIDEO_EXTS, DatasetSource, index_frame
from dfd.sources.protocols import carve_identities, resolve_source_videos, split_counts

log = logging.getLogger(__name__)

FAKE_SUFFIX = "_fake"


class UADFV(DatasetSource):
    """UADFV's two folders; a fake ``<n>_fake`` is made from the real ``<n>`` (they form one pair).

    There is no official split (DeepfakeBench uses every video for train, val and test alike). Val and test are
    carved by whole pairs, so a real video and its fake always share a split; ``all_test=true`` puts every
    video in test instead (the usual cross-dataset use: UADFV as an unseen test set).

    Args:
        val_fraction, test_fraction: share of pairs held out for val / test.
        all_test: every video in test (no training use).
    """

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        val_fraction: float = 0.15,
        test_fraction: float = 0.3,
        all_test: bool = False,
    ) -> None:
        super().__init__(name, root, cache_dir)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.all_test = bool(all_test)
        self.notes: list[str] = []

    def _index_rows(self) -> pd.DataFrame:
        self.notes = []  # per build: a second build_index must not repeat them
        rows = []
        for folder, label in (("real", 0), ("fake", 1)):
            base = self.root / folder
            if not base.is_dir():
                raise DatasetError(
                    f"{self.name}: expected {base}/ (UADFV ships real/ and fake/ folders of .mp4); set "
                    "dataset.root to the unpacked UADFV folder"
                )
            for p in sorted(q for q in base.iterdir() if q.is_file() and q.suffix.lower() in VIDEO_EXTS):
                pair = p.stem[: -len(FAKE_SUFFIX)] if label and p.stem.endswith(FAKE_SUFFIX) else p.stem
                rows.append({
                    "video_id": f"{folder}/{p.stem}", "label": label, "split": "test" if self.all_test else "train",
                    "method": folder, "identity": pair, "path": p.relative_to(self.root).as_posix(),
                    "kind": "video", "_ids": (pair,),
                    "source_video": f"real/{pair}" if label else "", "_source_name": f"{pair}{p.suffix}",
                })
        if not rows:
            raise DatasetError(f"{self.name}: no videos in {self.root}/real or {self.root}/fake")
        unpaired = sorted({r["identity"] for r in rows if r["label"]} - {r["identity"] for r in rows if not r["label"]})
        if unpaired:
            self.notes.append(f"{len(unpaired)} fakes without their real video, e.g. {unpaired[:3]}")
        if not self.all_test:
            carve_identities(rows, self.val_fraction, self.test_fraction, salt="uadfv-pairs")
        resolve_source_videos(rows)
        self.notes.append(f"no official split: {'all videos in test' if self.all_test else 'carved by pair'}: "
                          f"{split_counts(rows)}")
        kinds.fill(rows, "face_swap")  # UADFV's fakes were made with FakeApp (a face swap)
        return index_frame(rows, extra=("source_video", "method_type"))
