"""WildDeepfake: face-crop sequences in ``.tar.gz`` archives (or the same tree already extracted)."""

from __future__ import annotations

import logging
import os
import tarfile
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources.base import IMAGE_EXTS, DatasetSource, carve_rows, index_frame

log = logging.getLogger(__name__)

SPLIT_FOLDERS = ("real_train", "fake_train", "real_test", "fake_test")
ARCHIVE_SUFFIX = ".tar.gz"


class WildDeepfake(DatasetSource):
    """WildDeepfake from ``<root>/deepfake_in_the_wild/{real,fake}_{train,test}/<N>.tar.gz``.

    Archives are listed, never extracted: one streaming pass over each ``.tar.gz`` (no seeking, constant
    memory), in ``workers`` threads because zlib releases the GIL. Each face sequence
    ``./<N>/<real|fake>/<seq>/`` becomes one row (kind ``archive``, ``member`` = that prefix as stored);
    already-extracted folders ``<N>/<real|fake>/<seq>/`` become kind ``frames``. A sequence is identified by
    (split folder, archive, sequence). Validation is carved from train by whole archive, per label, so
    sequences of one source video never straddle train and val. Unreadable archives are skipped and listed
    in ``self.skipped``.
    """

    faces_are_cropped = True

    def __init__(
        self, name: str, root: str | Path | None, cache_dir: str | Path, val_fraction: float = 0.1, workers: int = 4
    ) -> None:
        super().__init__(name, root, cache_dir)
        self.val_fraction = val_fraction
        self.workers = max(1, int(workers))
        self.skipped: list[tuple[str, str]] = []  # (path relative to root, reason)

    def _split_folders(self) -> dict[str, Path]:
        """Canonical split folder (``real_train``) -> folder on disk (underscores or spaces)."""
        base = self.root / "deepfake_in_the_wild"
        base = base if base.is_dir() else self.root
        found = {}
        for canon in SPLIT_FOLDERS:
            for spelling in (canon, canon.replace("_", " ")):
                if (base / spelling).is_dir():
                    found[canon] = base / spelling
        if not found:
            raise DatasetError(
                f"{self.name}: no {'/'.join(SPLIT_FOLDERS)} folders (underscores or spaces) in {base}; set "
                "dataset.root to the folder holding deepfake_in_the_wild/"
            )
        return found

    def _index_rows(self) -> pd.DataFrame:
        jobs = []  # (canonical folder, archive name N, path)
        for canon, folder in self._split_folders().items():
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
            extracted = {e.name for e in entries if e.is_dir()}
            for entry in entries:
                if entry.is_dir():
                    jobs.append((canon, entry.name, Path(entry.path)))
                elif entry.name.endswith(ARCHIVE_SUFFIX) and entry.name[: -len(ARCHIVE_SUFFIX)] not in extracted:
                    jobs.append((canon, entry.name[: -len(ARCHIVE_SUFFIX)], Path(entry.path)))
        with ThreadPoolExecutor(self.workers) as pool:
            listings = list(pool.map(lambda job: self._list(job[2]), jobs))
        rows = []
        for (canon, archive, path), listing in zip(jobs, listings, strict=True):
            if isinstance(listing, str):
                self.skipped.append((path.relative_to(self.root).as_posix(), listing))
                continue
            label = 0 if canon.startswith("real") else 1
            for (prefix, seq), n_frames in sorted(listing.items()):
                rows.append({
                    "video_id": f"{canon}/{archive}/{seq}", "label": label, "split": canon.split("_")[1],
                    "method": canon.split("_")[0], "identity": f"{canon}/{archive}",
                    "path": path.relative_to(self.root).as_posix(),
                    "kind": "frames" if path.is_dir() else "archive",
                    "member": prefix if not path.is_dir() else "", "archive": archive, "n_frames": n_frames,
                })
                if path.is_dir():
                    rows[-1]["path"] = f"{rows[-1]['path']}/{prefix}"
        for rel, reason in self.skipped:
            log.warning("%s: skipped unreadable %s (%s)", self.name, rel, reason)
        if not rows:
            raise DatasetError(f"{self.name}: no face sequences found under {self.root} (skipped: {self.skipped[:3]})")
        # By whole archive (one source video), per label: sequences of a video never straddle train and val.
        carve_rows(rows, self.val_fraction, 0.0, salt="wilddeepfake-val", within="train", key="identity")
        return index_frame(rows, extra=("member", "archive", "n_frames"))

    @staticmethod
    def _list(path: Path) -> dict[tuple[str, str], int] | str:
        """(sequence prefix as stored, sequence id) -> frame count, or the reason the source is unreadable."""
        counts: Counter = Counter()
        try:
            if path.is_dir():
                # Extracted: <N>/<real|fake>/<seq>/<frame>.png under this folder.
                for kind_dir in os.scandir(path):
                    if not kind_dir.is_dir() or kind_dir.name not in ("real", "fake"):
                        continue
                    for seq in os.scandir(kind_dir.path):
                        if seq.is_dir():
                            n = sum(1 for f in os.scandir(seq.path) if Path(f.name).suffix.lower() in IMAGE_EXTS)
                            if n:
                                counts[(f"{kind_dir.name}/{seq.name}", seq.name)] = n
                return dict(counts)
            with tarfile.open(path, mode="r|gz") as tar:
                for m in tar:
                    if not m.isfile() or Path(m.name).suffix.lower() not in IMAGE_EXTS:
                        continue
                    prefix, _, _ = m.name.rpartition("/")
                    parts = prefix.removeprefix("./").split("/")
                    if len(parts) == 3 and parts[1] in ("real", "fake"):  # <N>/<real|fake>/<seq>
                        counts[(prefix, parts[2])] += 1
            return dict(counts)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            return f"{type(e).__name__}: {e}"
