"""Datasets shipped as aligned face crops (DeepfakeBench's ``frames/`` + ``landmarks/`` folders, DF40).

Such a dataset needs no detection and no re-encoding: ``prepare()`` lists its crops and writes the frame
manifest directly, pointing at the crops where they are: ``crop_path`` is relative to the dataset folder the
crop lives under, named in ``crop_root`` (``root``, or e.g. ``real_roots.ff``; see :mod:`dfd.store.roots`), and
resolved against the config when read, so the dataset and the cache may each sit behind a link or move. Nothing
is copied, so preparing DeepfakeBench's FF++ takes seconds, and the crops training reads are byte for byte
DeepfakeBench's.

Why not ``dfd-extract``'s crop path: it re-encodes every crop at ``extract.size`` and finds landmarks again
with MTCNN, which would both cost hours and change the images DeepfakeBench's numbers were measured on.

DeepfakeBench's on-disk rules (``preprocessing/preprocess.py``): ``<D>/frames/<video>/<NNN>.png`` where NNN is
the original frame index (``000``, ``012``, 4+ digits past 999: sort numerically); 256 px BGR crops aligned on
5 landmarks to the ArcFace template with a 1.3 margin; ``<D>/landmarks/<video>/<NNN>.npy`` holds dlib's 81
points found again on the crop (crop pixels). A frame dlib missed is absent, so a video may have fewer than 32.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dfd import atomic
from dfd.faces.contract import CropContract, sample_indices
from dfd.sources.base import IMAGE_EXTS, DatasetSource
from dfd.store import cache
from dfd.store.media import frame_number, sort_frame_names
from dfd.store.roots import CROP_ROOT_COLUMN, DATASET_ROOT, PATH_ROOT_COLUMN, Roots
from dfd.store.schema import INDEX_COLUMNS, MANIFEST_COLUMNS, manifest_table, write_parquet

# How DeepfakeBench made its crops, as dfd's one crop contract: dlib faces aligned by a 5-point similarity to the
# ArcFace template at scale 1.3, 256 px, 32 uniformly spaced frames. A model trained on them is served crops
# made the same way: dfd-predict feeds such crops as they are, and on raw frames aligns (MTCNN's 5 points) alike.
DEEPFAKEBENCH_CROPS = CropContract(align="arcface", margin=1.3, size=256, frames=32, inputs="crops")
PREPARED_META_KEY = b"dfd.prepared_from"
LANDMARKS81_FILE = "landmarks81.npy"
# 2: crop paths relative to a named dataset root (crop_root); 1 (absent): relative to the manifest's folder, with
# ``..`` that links broke. A manifest of another layout is rewritten (it is derived, and cheap to redo).
MANIFEST_LAYOUT = 2

# dlib's 68-point layout (the first 68 of the 81): eyes 36-41 / 42-47, nose tip 30, mouth corners 48 / 54.
_LEFT_EYE, _RIGHT_EYE, _NOSE, _MOUTH_L, _MOUTH_R = slice(36, 42), slice(42, 48), 30, 48, 54


def five_point_landmarks(points: np.ndarray) -> np.ndarray:
    """dlib 68/81 points (k, 2) -> the 5 points dfd's manifest holds, in MTCNN's order: image-left eye
    centre, image-right eye centre, nose tip, left mouth corner, right mouth corner (float32, (5, 2))."""
    p = np.asarray(points, np.float32).reshape(-1, 2)
    if len(p) < 68:
        return np.full((5, 2), np.nan, np.float32)
    return np.stack([p[_LEFT_EYE].mean(0), p[_RIGHT_EYE].mean(0), p[_NOSE], p[_MOUTH_L], p[_MOUTH_R]])


def landmark_file(frame_rel: str) -> str:
    """A frame's landmark file by DeepfakeBench's rule: the last ``frames`` folder -> ``landmarks``, ``.npy``."""
    parts = list(PurePosixPath(frame_rel).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "frames":
            parts[i] = "landmarks"
            break
    return PurePosixPath(*parts).with_suffix(".npy").as_posix()


def list_frame_files(folder: Path) -> list[str]:
    """Image file names in ``folder`` in numeric order (``2.png`` < ``10.png`` < ``1000.png``); [] if none."""
    try:
        with os.scandir(folder) as it:
            names = [e.name for e in it if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sort_frame_names(names)


def _frame_numbers(names: Sequence[str]) -> list[int]:
    # The original frame index when the names give unique numbers (DeepfakeBench's do), else positions.
    nums = [frame_number(n) for n in names]
    return nums if None not in nums and len(set(nums)) == len(nums) else list(range(len(names)))


def _load_points(path: Path) -> np.ndarray | None:
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    a = np.asarray(a, np.float32)
    return a.reshape(-1, 2) if a.size % 2 == 0 and a.size >= 136 else None


def write_crop_manifest(
    index: pd.DataFrame,
    frame_files: Mapping[str, Sequence[str]],
    root: str | Path | Roots,
    cache_dir: str | Path,
    contract: CropContract,
    prepared_from: Mapping[str, Any],
    dataset: str = "",
    frames: int = 0,
    landmarks: bool = True,
    workers: int = 8,
) -> dict[str, int]:
    """THE writer of a crop dataset's frame manifest (and its 81-landmark sidecar); returns counts.

    ``frame_files[video_id]`` lists a video's crops (paths relative to the root its index row names in
    ``path_root``, ``root`` by default; ``root`` may be those :class:`~dfd.store.roots.Roots`), in frame order; ``frames`` > 0
    keeps that many, uniformly spaced (DeepfakeBench's linspace rule), else all. Each manifest row points at the
    crop in place and holds the 5 points derived from DeepfakeBench's 81 (NaN where no landmark file);
    ``landmarks81.npy`` (float32, (rows, 81, 2), NaN-filled) keeps all of them, row ``landmarks81_row`` of the
    manifest (-1 when none). The cache record (``dataset``, ``root`` and ``contract``: what the crops are, see
    :mod:`dfd.store.cache`) and ``prepared_from`` (what was read, for staleness checks) go into the Parquet
    metadata. Written atomically, the manifest last.
    """
    roots, cache_dir = Roots.of(root), Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    extras = [c for c in index.columns if c not in INDEX_COLUMNS and c not in MANIFEST_COLUMNS and not c.startswith("_")
              and c != PATH_ROOT_COLUMN]
    cols: dict[str, list] = {c: [] for c in (*MANIFEST_COLUMNS, "source_path", CROP_ROOT_COLUMN, *extras)}
    chosen: list[Path] = []
    for row in index.to_dict("records"):
        names = list(frame_files.get(row["video_id"], ()))
        if not names:
            continue
        where = row.get(PATH_ROOT_COLUMN)
        where = where if isinstance(where, str) and where else DATASET_ROOT
        numbers = _frame_numbers([PurePosixPath(n).name for n in names])
        for i in sample_indices(len(names), frames if frames > 0 else None):
            chosen.append(roots.resolve(landmark_file(names[i]), where))
            cols["frame"].append(numbers[i])
            cols["crop_path"].append(names[i])
            cols[CROP_ROOT_COLUMN].append(where)
            for c in ("video_id", "label", "split", "method", "identity"):
                cols[c].append(row[c])
            cols["source_path"].append(row["path"])
            for c in extras:
                cols[c].append(row[c])
    n = len(chosen)
    lm5 = np.full((n, 5, 2), np.nan, np.float32)
    lm81 = np.full((n, 81, 2), np.nan, np.float32)
    found = np.zeros(n, bool)
    if landmarks and n:
        with ThreadPoolExecutor(max(1, workers)) as pool:  # many small files: I/O-bound, threads suffice
            for i, pts in enumerate(pool.map(_load_points, chosen, chunksize=256)):
                if pts is not None:
                    found[i] = True
                    lm5[i] = five_point_landmarks(pts)
                    lm81[i, : min(81, len(pts))] = pts[:81]
    sidecar = cache_dir / LANDMARKS81_FILE
    with atomic.atomic_path(sidecar) as tmp, open(tmp, "wb") as f:
        np.save(f, lm81)

    table = manifest_table({
        **{c: cols[c] for c in ("video_id", "frame", "crop_path", "label", "split", "method", "identity",
                                "source_path")},
        # The box in the source frame is unknown: the dataset ships only the aligned crop.
        "bbox": np.full((n, 4), np.nan, np.float32),
        "landmarks": lm5.reshape(n, 10),
        "score": np.ones(n, np.float32),
    })
    for c in extras:
        table = table.append_column(c, pa.array(pd.Series(cols[c], dtype=index[c].dtype)))
    table = table.append_column("landmarks81_row", pa.array(np.where(found, np.arange(n), -1).astype(np.int32)))
    table = table.append_column(CROP_ROOT_COLUMN, pa.array(cols[CROP_ROOT_COLUMN], pa.string()))
    record = cache.make_record(dataset, roots.get(DATASET_ROOT), contract, {"format": "in place", "landmarks": "dlib81"},
                               roots=roots.record())
    meta = {cache.METADATA_KEY: json.dumps(record, sort_keys=True).encode(),
            PREPARED_META_KEY: json.dumps(dict(prepared_from), sort_keys=True).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    path = cache_dir / "manifest.parquet"
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return {"videos": len(set(cols["video_id"])), "frames": n,
            "frames_without_landmarks": int(n - found.sum()) if landmarks else n}


def read_prepared_from(manifest: str | Path) -> dict | None:
    """The ``prepared_from`` record a crop manifest was written with (None: none, or not such a manifest)."""
    try:
        meta = pq.read_schema(manifest).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    raw = meta.get(PREPARED_META_KEY)
    return json.loads(raw) if raw else None


class CropFolderSource(DatasetSource):
    """A dataset of ready-made face crops: ``prepare()`` writes the manifest itself (``dfd-extract`` not needed).

    Subclasses build the index in ``_index_rows`` and fill ``self._frame_files[video_id]`` with each video's
    crop files (relative to ``root``, in frame order); they say what invalidates a prepared manifest in
    ``_params`` (settings) and ``_stamp`` (cheap facts about the files read, e.g. a JSON's size and mtime).

    Args:
        frames: crops kept per video, uniformly spaced (0 = all the dataset has; DeepfakeBench ships <= 32).
        landmarks: read the 81-point landmark files (derive the manifest's 5 points, keep all 81 in a sidecar).
        workers: threads listing folders and reading landmark files.
    """

    faces_are_cropped = True
    #: prepare() writes the manifest from the dataset's own crops; dfd-extract defers to it.
    writes_manifest = True
    #: how the dataset's crops were made (recorded in the manifest; training copies it into the checkpoint)
    made_with: CropContract = DEEPFAKEBENCH_CROPS

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        frames: int = 0,
        landmarks: bool = True,
        workers: int = 8,
    ) -> None:
        super().__init__(name, root, cache_dir)
        self.frames = int(frames or 0)
        self.landmarks = bool(landmarks)
        self.workers = max(1, int(workers))
        self._frame_files: dict[str, list[str]] = {}
        self.notes: list[str] = []

    @abc.abstractmethod
    def _params(self) -> dict[str, Any]:
        """Settings that change the index or manifest."""

    def _stamp(self) -> dict[str, Any]:
        """Cheap facts about the files read (sizes, mtimes): a change makes a prepared manifest stale."""
        return {}

    def prepared_from(self) -> dict[str, Any]:
        return {
            "source": f"{type(self).__module__}.{type(self).__qualname__}",
            "layout": MANIFEST_LAYOUT,
            "root": str(self.root.resolve()) if self.root is not None else None,
            "params": self._params(),
            "frames": self.frames,
            "landmarks": self.landmarks,
            "stamp": self._stamp(),
        }

    @property
    def prepared_dir(self) -> Path:
        """This selection's own folder in the cache: two subsets of one dataset (DF40 FS and FR, a JSON at c23
        and c40) never overwrite each other's manifest. Changed files (``_stamp``) rewrite it in place."""
        key = {k: v for k, v in self.prepared_from().items() if k != "stamp"}
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]
        return self.cache_dir / f"prepared-{digest}"

    @property
    def manifest_path(self) -> Path:
        return self.prepared_dir / "manifest.parquet"

    def prepare(self) -> Path:
        """Write ``index.parquet`` and the manifest unless an up-to-date one exists; return the manifest path."""
        want = json.loads(json.dumps(self.prepared_from(), sort_keys=True, default=str))
        if self.manifest_path.is_file() and read_prepared_from(self.manifest_path) == want:
            return self.manifest_path
        index = self.build_index()
        out = self.manifest_path.parent
        with cache.writing(self.cache_dir):
            write_parquet(index, out / "index.parquet")
            counts = write_crop_manifest(
                index, self._frame_files, self.roots(), out,
                self.made_with.replace(frames=self.frames) if self.frames else self.made_with, want, dataset=self.name,
                frames=self.frames, landmarks=self.landmarks, workers=self.workers,
            )
        self.notes.append(
            f"manifest: {counts['frames']} crops of {counts['videos']} videos, read in place from {self.root} "
            f"({counts['frames_without_landmarks']} without a landmark file)"
        )
        return self.manifest_path
