"""torch Datasets over a frame manifest: frames for image models, clips for video models.

Memory stays flat in dataset size: the manifest is held as a few NumPy arrays (fixed-width bytes for paths,
ints for labels/videos, floats for landmarks), not a list of Python dicts or a DataFrame of Python strings. With
fork-started DataLoader workers, touching a Python object bumps its refcount and copies its memory page into
every worker; flat arrays are never copied. Images are read from the crop cache on demand, so a 72.8 GB dataset
trains on a small machine.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from dfd.data.transforms import Pipeline

_COLUMNS = ["video_id", "frame", "crop_path", "label", "split", "method", "landmarks"]


def _bytes_array(col: pa.ChunkedArray) -> np.ndarray:
    """A string column as a fixed-width bytes array, built chunk by chunk to keep the peak low."""
    parts = [np.array(chunk.cast(pa.string()).to_numpy(zero_copy_only=False), dtype="S") for chunk in col.chunks]
    if not parts:
        return np.zeros(0, dtype="S1")
    width = max(p.dtype.itemsize for p in parts)
    return np.concatenate([p.astype(f"S{width}") for p in parts])


class ManifestArrays:
    """The columns of one split of a manifest, as flat arrays, sorted by (video, frame)."""

    def __init__(self, manifest: str | Path, splits: str | list[str] | None = None) -> None:
        self.manifest = Path(manifest)
        self.root = self.manifest.parent
        table = pq.read_table(self.manifest, columns=_COLUMNS)
        if splits is not None:
            wanted = [splits] if isinstance(splits, str) else list(splits)
            table = table.filter(pc.is_in(table["split"], value_set=pa.array(wanted)))
        vid_codes = pc.dictionary_encode(table["video_id"]).combine_chunks()
        video = vid_codes.indices.to_numpy().astype(np.int64)
        frame = table["frame"].to_numpy().astype(np.int64)
        order = np.lexsort((frame, video))
        self.video_names = np.array(vid_codes.dictionary.to_numpy(zero_copy_only=False), dtype="S")
        self.video = video[order].astype(np.int32)
        self.frame = frame[order].astype(np.int32)
        self.label = table["label"].to_numpy().astype(np.int8)[order]
        meth = pc.dictionary_encode(table["method"]).combine_chunks()
        self.method_names = [str(m) for m in meth.dictionary.to_pylist()]
        self.method = meth.indices.to_numpy().astype(np.int16)[order]
        self.paths = _bytes_array(table["crop_path"])[order]
        lm = table["landmarks"].combine_chunks()
        if len(lm) and lm.null_count < len(lm):
            flat = pc.list_flatten(lm.fill_null(pa.scalar([float("nan")] * 10, type=lm.type)))
            self.landmarks = flat.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, 5, 2)[order]
        else:
            self.landmarks = np.full((len(order), 5, 2), np.nan, np.float32)
        del table
        # CSR offsets: frames of video v are rows starts[v]:starts[v+1].
        self.starts = np.searchsorted(self.video, np.arange(len(self.video_names) + 1)).astype(np.int64)

    def __len__(self) -> int:
        return len(self.label)

    @property
    def video_labels(self) -> np.ndarray:
        """Label of each video (the label of its first frame)."""
        return self.label[self.starts[:-1]] if len(self.label) else np.zeros(0, np.int8)


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as RGB uint8, with an error that names the file."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read face crop {path}: missing or corrupt (re-run dfd-extract for this dataset)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class FrameDataset(Dataset):
    """One item per face crop: ``{image, label, video, index, method, landmarks}``.

    ``index`` is the row number within this dataset: metrics use it to drop samples a distributed sampler
    repeated. ``video`` indexes ``arrays.video_names`` (ids unique across the dataset).
    """

    def __init__(self, arrays: ManifestArrays, pipeline: Pipeline, name: str = "") -> None:
        self.arrays = arrays
        self.pipeline = pipeline
        self.name = name

    def __len__(self) -> int:
        return len(self.arrays)

    @property
    def labels(self) -> np.ndarray:
        return self.arrays.label

    def load(self, i: int) -> dict:
        """The raw sample before augmentation (uint8 RGB crop, landmarks in crop pixels)."""
        a = self.arrays
        return {
            "image": read_rgb(a.root / a.paths[i].decode()),
            "landmarks": a.landmarks[i],
            "label": int(a.label[i]),
            "video": int(a.video[i]),
            "index": int(i),
            "method": int(a.method[i]),
        }

    def apply_transform(self, sample: dict) -> dict:
        """Augment + normalise a raw sample into tensors."""
        image, lm = self.pipeline(sample["image"], sample["landmarks"])
        return {
            "image": image,
            "landmarks": lm,
            "label": torch.tensor(sample["label"], dtype=torch.float32),
            "video": torch.tensor(sample["video"], dtype=torch.int64),
            "index": torch.tensor(sample["index"], dtype=torch.int64),
            "method": torch.tensor(sample["method"], dtype=torch.int64),
        }

    def __getitem__(self, i: int) -> dict:
        return self.apply_transform(self.load(int(i)))


def uniform_positions(n_available: int, n_wanted: int) -> np.ndarray:
    """``n_wanted`` uniformly spaced positions in ``range(n_available)`` (centres of equal segments)."""
    if n_available <= 0:
        raise ValueError("cannot sample frames from an empty video")
    edges = np.linspace(0, n_available, n_wanted + 1)
    return np.minimum(((edges[:-1] + edges[1:]) / 2).astype(np.int64), n_available - 1)


class ClipDataset(Dataset):
    """One item per video: L uniformly spaced frames, augmented consistently: ``image`` is (L, C, H, W).

    Videos with fewer than L frames repeat frames (still in temporal order).
    """

    def __init__(self, arrays: ManifestArrays, pipeline: Pipeline, clip_len: int, name: str = "") -> None:
        self.arrays = arrays
        self.pipeline = pipeline
        self.clip_len = int(clip_len)
        self.name = name

    def __len__(self) -> int:
        return len(self.arrays.video_names)

    @property
    def labels(self) -> np.ndarray:
        return self.arrays.video_labels

    def frame_rows(self, v: int) -> np.ndarray:
        """Manifest rows of the clip sampled from video ``v``."""
        s, e = self.arrays.starts[v], self.arrays.starts[v + 1]
        return s + uniform_positions(int(e - s), self.clip_len)

    def __getitem__(self, v: int) -> dict:
        a = self.arrays
        rows = self.frame_rows(int(v))
        images = [read_rgb(a.root / a.paths[r].decode()) for r in rows]
        x, lm = self.pipeline.clip(images, [a.landmarks[r] for r in rows])
        return {
            "image": x,
            "landmarks": lm,
            "label": torch.tensor(float(a.label[rows[0]])),
            "video": torch.tensor(int(v), dtype=torch.int64),
            "index": torch.tensor(int(v), dtype=torch.int64),
            "method": torch.tensor(int(a.method[rows[0]]), dtype=torch.int64),
        }
