"""torch Datasets over a frame manifest: frames for image models, clips for video models.

Memory stays flat in dataset size: the manifest is held as a few NumPy arrays (fixed-width bytes for paths,
ints for labels/videos, floats for landmarks), not a list of Python dicts or a DataFrame of Python strings. With
fork-started DataLoader workers, touching a Python object bumps its refcount and copies its memory page into
every worker; flat arrays are never copied. Images are read from the crop cache on demand, so a 72.8 GB dataset
trains on a small machine.

One concern: a manifest's rows as samples (flat arrays read once, crops read on demand, unreadable ones replaced).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from dfd.data.bad_crops import KEY, BadCropError, dropped, first_readable, is_dropped, others_of
from dfd.data.transforms import Pipeline
from dfd.errors import DatasetError
from dfd.faces.contract import sample_indices, uniform_positions
from dfd.store import cache
from dfd.store.media import IMAGE_EXTENSIONS, MediaError, read_image
from dfd.store.roots import CROP_ROOT_COLUMN, Roots, crop_roots, join
from dfd.store.schema import SchemaError

__all__ = ["ClipDataset", "FrameDataset", "ManifestArrays", "concat_arrays", "read_rgb"]

_COLUMNS = ["video_id", "frame", "crop_path", "label", "split", "method", "landmarks"]
# Rows decoded at a time: bounds the transient Arrow/NumPy memory whatever the manifest's size.
_BATCH_ROWS = 1 << 15


def _as_fixed_bytes(arr: pa.Array) -> np.ndarray:
    """A string array as fixed-width NumPy bytes, straight from Arrow's buffers (no Python str per row)."""
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.string())
    if arr.null_count:
        arr = arr.fill_null("")
    n = len(arr)
    _, off_buf, data_buf = arr.buffers()
    off_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offs = np.frombuffer(off_buf, off_type, count=n + 1, offset=arr.offset * np.dtype(off_type).itemsize)
    offs = offs.astype(np.int64)
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    lens = np.diff(offs)
    width = max(int(lens.max(initial=0)), 1)
    if n and (lens == width).all():  # the usual case for crop paths: one reshape, no index arrays
        return data[offs[0] : offs[-1]].copy().view(f"S{width}")
    out = np.zeros((n, width), np.uint8)
    rows = np.repeat(np.arange(n, dtype=np.int32), lens)
    cols = np.arange(offs[0], offs[-1], dtype=np.int64) - np.repeat(offs[:-1], lens)
    out[rows, cols] = data[offs[0] : offs[-1]]
    return out.view(f"S{width}").reshape(n)


def _concat_bytes(parts: list[np.ndarray]) -> np.ndarray:
    width = max((p.dtype.itemsize for p in parts), default=1)
    return np.concatenate([p.astype(f"S{width}", copy=False) for p in parts]) if parts else np.zeros(0, "S1")


class _Codes:
    """Dictionary-encodes a string column batch by batch; codes become global (sorted names) at the end."""

    def __init__(self) -> None:
        self.local: list[np.ndarray] = []
        self.names: list[np.ndarray] = []

    def add(self, col: pa.Array) -> None:
        enc = col if pa.types.is_dictionary(col.type) else pc.dictionary_encode(col)
        self.local.append(enc.indices.to_numpy(zero_copy_only=False).astype(np.int32))
        self.names.append(_as_fixed_bytes(enc.dictionary))

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted unique names, per-row int32 codes into them)."""
        names, inverse = np.unique(_concat_bytes(self.names), return_inverse=True)
        shift = np.cumsum([0] + [len(n) for n in self.names])[:-1]
        codes = [inverse[s + loc] for s, loc in zip(shift, self.local, strict=True)]
        codes = np.concatenate(codes).astype(np.int32) if codes else np.zeros(0, np.int32)
        return names, codes


def _trim_heap() -> None:
    """Return freed C-heap pages to the OS (glibc only): the per-batch pieces leave holes malloc keeps."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def _landmarks(col: pa.Array, where: Path) -> np.ndarray:
    """(n, 5, 2) float32 landmarks of a batch; NaN where a row has none."""
    if col.null_count:
        col = col.fill_null(pa.scalar([float("nan")] * 10, type=col.type))
    # A copy NumPy owns: a view would pin Arrow allocator pages that release_unused() then cannot free.
    flat = np.array(pc.list_flatten(col).to_numpy(zero_copy_only=False), dtype=np.float32)
    if flat.size != 10 * len(col):
        raise SchemaError(f"{where}: column 'landmarks' must hold 10 numbers (5 x, y points) per row; "
                          f"re-run dfd-extract to rewrite the manifest")
    return flat.reshape(-1, 5, 2)


# A source file with one of these extensions is a still image (manifests written before the ``kind`` column).
_IMAGE_PATH = "(" + "|".join(e.replace(".", r"\.") for e in IMAGE_EXTENSIONS) + ")$"


def _image_rows(batch: pa.RecordBatch) -> np.ndarray:
    """Per row: the item is a single still image (``kind == "image"``; without a kind, by the source file's
    extension, as :func:`dfd.store.schema.item_is_image` decides)."""
    n = batch.num_rows
    names = batch.schema.names
    image, known = np.zeros(n, bool), np.zeros(n, bool)
    if "kind" in names:
        kind = batch.column("kind").cast(pa.string())
        image = pc.fill_null(pc.equal(kind, "image"), False).to_numpy(zero_copy_only=False)
        known = pc.fill_null(pc.not_equal(kind, ""), False).to_numpy(zero_copy_only=False)
    if "source_path" in names and not known.all():
        src = batch.column("source_path").cast(pa.string())
        by_ext = pc.fill_null(pc.match_substring_regex(src, _IMAGE_PATH, ignore_case=True), False)
        image = np.where(known, image, by_ext.to_numpy(zero_copy_only=False))
    return np.asarray(image, bool)


def _read_columns(manifest: Path, splits: str | list[str] | None) -> dict:
    """The manifest columns ManifestArrays keeps, as NumPy arrays sorted by (video, frame, track)."""
    pf = pq.ParquetFile(manifest)
    missing = [c for c in _COLUMNS if c not in pf.schema_arrow.names]
    if missing:
        raise SchemaError(f"{manifest}: missing columns {missing}; a manifest needs {_COLUMNS}")
    has_track = "track" in pf.schema_arrow.names  # optional: manifests with one face per frame may lack it
    # optional: only manifests of partial fakes (index column fake_segments) have per-frame labels
    has_frame_label = "frame_label" in pf.schema_arrow.names
    has_root = CROP_ROOT_COLUMN in pf.schema_arrow.names  # crops read in place: the dataset folder of each crop
    wanted = None if splits is None else pa.array([splits] if isinstance(splits, str) else list(splits),
                                                 pa.string())
    videos, methods, crop_roots = _Codes(), _Codes(), _Codes()
    frame, track, label, frame_label, paths, lms, image = [], [], [], [], [], [], []
    columns = [*_COLUMNS, *(["track"] if has_track else []), *(["frame_label"] if has_frame_label else []),
               *([CROP_ROOT_COLUMN] if has_root else [])]
    columns += [c for c in ("kind", "source_path") if c in pf.schema_arrow.names]  # which items are images
    # Threads and the dataset API cost tens of MB of arena memory for no gain on a 7-column read.
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=columns, use_threads=False):
        if wanted is not None:
            batch = batch.filter(pc.is_in(batch.column("split").cast(pa.string()), value_set=wanted))
        if batch.num_rows == 0:
            continue
        videos.add(batch.column("video_id"))
        methods.add(batch.column("method"))
        if has_root:
            crop_roots.add(batch.column(CROP_ROOT_COLUMN).fill_null(""))
        frame.append(batch.column("frame").to_numpy(zero_copy_only=False).astype(np.int32))
        if has_track:
            track.append(batch.column("track").fill_null(0).to_numpy(zero_copy_only=False).astype(np.int16))
        label.append(batch.column("label").to_numpy(zero_copy_only=False).astype(np.int8))
        if has_frame_label:
            frame_label.append(batch.column("frame_label").fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int8))
        paths.append(_as_fixed_bytes(batch.column("crop_path")))
        lms.append(_landmarks(batch.column("landmarks"), manifest))
        image.append(_image_rows(batch))
        del batch
    del pf
    # Arrow keeps freed batch memory in its allocator; hand it back so RSS is the arrays alone.
    pa.default_memory_pool().release_unused()

    video_names, video = videos.finish()
    names, method = methods.finish()
    root_names, root_code = crop_roots.finish() if has_root else (np.zeros(0, "S1"), None)
    frame_all = np.concatenate(frame) if frame else np.zeros(0, np.int32)
    track_all = np.concatenate(track) if track else np.zeros(len(frame_all), np.int16)
    order = np.lexsort((track_all, frame_all, video))
    # Manifests are usually written in this order already: skip the copies then.
    ident = bool((order == np.arange(len(order))).all())

    def take(parts: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
        arr = np.concatenate(parts) if parts else empty
        return arr if ident else arr[order]

    return {
        "video_names": video_names,
        "method_names": [m.decode() for m in names],
        "video": video if ident else video[order],
        "frame": frame_all if ident else frame_all[order],
        "track": track_all if ident else track_all[order],
        "label": take(label, np.zeros(0, np.int8)),
        "frame_label": take(frame_label, np.zeros(0, np.int8)) if has_frame_label else None,
        "method": (method if ident else method[order]).astype(np.int16),
        "paths": _concat_bytes(paths) if ident else _concat_bytes(paths)[order],
        "landmarks": take(lms, np.zeros((0, 5, 2), np.float32)),
        "root_names": [r.decode() for r in root_names],
        "root": None if root_code is None else (root_code if ident else root_code[order]).astype(np.int8),
        "image": take(image, np.zeros(0, bool)),
    }


class ManifestArrays:
    """The columns of one split of a manifest, as flat arrays, sorted by (video, frame, track).

    ``track`` tells the faces of one frame apart (``extract.choice=all``); all 0 with one face per frame.
    ``image`` marks the rows of items that are single still images (index kind ``image``): evaluation reports
    them at the image level (:attr:`video_is_image` per item).

    ``video_names`` are sorted; ``video`` indexes them. The manifest is decoded in batches straight into
    NumPy (no Python object per row), so the memory held is about the arrays themselves: ~90 bytes/frame.
    """

    def __init__(self, manifest: str | Path, splits: str | list[str] | None = None,
                 roots: Mapping[str, str | Path | None] | None = None) -> None:
        self.manifest = Path(manifest)
        self.root = self.manifest.parent
        if not self.manifest.is_file():
            raise FileNotFoundError(
                f"frame manifest not found: {self.manifest} (extract faces first with `dfd-extract dataset=<name>`)"
            )
        cols = _read_columns(self.manifest, splits)
        # After the reader's locals are gone: the heap holes they leave are returned to the OS only now.
        _trim_heap()
        self.video_names: np.ndarray = cols["video_names"]  # sorted, unique across the dataset (bytes)
        self.method_names: list[str] = cols["method_names"]
        self.video: np.ndarray = cols["video"]  # int32 index into video_names
        self.frame: np.ndarray = cols["frame"]  # int32
        self.track: np.ndarray = cols["track"]  # int16 face id within the video (0: main face)
        self.label: np.ndarray = cols["label"]  # int8, 0 real / 1 fake
        # int8 per row where the manifest has per-frame labels (partial fakes: fake only inside a fake segment;
        # -1 where unknown), else None. ``label`` stays the video's (validation and test score videos by it).
        self.frame_label: np.ndarray | None = cols["frame_label"]
        self.method: np.ndarray = cols["method"]  # int16 index into method_names
        self.paths: np.ndarray = cols["paths"]  # fixed-width bytes, relative to root
        self.landmarks: np.ndarray = cols["landmarks"]  # (n, 5, 2) float32 crop pixels, NaN when unknown
        # Each row's number in the split as read (kept through keep_rows): rows of a feature store's arrays.
        self.rows: np.ndarray = np.arange(len(self.label), dtype=np.int64)
        # Where each crop path starts (dfd.store.roots): the manifest's folder, or for crops read in place the
        # dataset folder named by ``crop_root``, as configured today (``roots``), else as the manifest recorded.
        self.crop_root: np.ndarray | None = cols["root"]  # int8 index into crop_dirs (None: all the manifest's)
        self.crop_dirs: list[Path | str] = [self.root]
        if self.crop_root is not None:
            recorded = (cache.manifest_record(self.manifest) or {}).get("roots")
            where = crop_roots(self.manifest, roots, recorded)
            self.crop_dirs = [_root_dir(where, name) for name in cols["root_names"]]
        self.image: np.ndarray = cols["image"]  # bool: the row's item is a still image, not a video
        # CSR offsets: frames of video v are rows starts[v]:starts[v+1].
        self.starts = np.searchsorted(self.video, np.arange(len(self.video_names) + 1)).astype(np.int64)

    def __len__(self) -> int:
        return len(self.label)

    def keep_frames_per_video(self, n: int) -> ManifestArrays:
        """Keep at most ``n`` uniformly spaced frames of every video, in place (e.g. 8 of 32 for training);
        every face of a kept frame stays."""
        counts = np.diff(self.starts)
        if n <= 0 or counts.max(initial=0) <= n:
            return self
        if not self.track.any():  # one row per frame
            rows = np.concatenate([
                s + sample_indices(int(c), n)
                for s, c in zip(self.starts[:-1], counts, strict=True) if c > 0
            ])
        else:
            parts = []
            for s, c in zip(self.starts[:-1], counts, strict=True):
                if c == 0:
                    continue
                frames = np.unique(self.frame[s : s + c])
                frames = frames[sample_indices(len(frames), n)]
                parts.append(s + np.flatnonzero(np.isin(self.frame[s : s + c], frames)))
            rows = np.concatenate(parts)
        return self.keep_rows(rows)

    def keep_rows(self, rows: np.ndarray) -> ManifestArrays:
        """Keep these rows (sorted row numbers, or a boolean mask), in place; videos left without a row are
        dropped from ``video_names`` (the codes are renumbered, the order stays sorted)."""
        rows = np.flatnonzero(rows) if rows.dtype == bool else np.asarray(rows, np.int64)
        for name in ("video", "frame", "track", "label", "method", "paths", "landmarks", "rows", "image"):
            setattr(self, name, getattr(self, name)[rows])
        for name in ("frame_label", "_video_label_rows"):
            if getattr(self, name, None) is not None:
                setattr(self, name, getattr(self, name)[rows])
        if self.crop_root is not None:
            self.crop_root = self.crop_root[rows]
        used = np.unique(self.video)
        if len(used) < len(self.video_names):
            self.video_names = self.video_names[used]
            self.video = np.searchsorted(used, self.video).astype(np.int32)
        self.starts = np.searchsorted(self.video, np.arange(len(self.video_names) + 1)).astype(np.int64)
        return self

    def train_on_frame_labels(self) -> int:
        """Use each row's own frame label as its training target where the manifest has one (partial fakes);
        returns how many rows of fake videos are real frames. Video labels (``video_labels``) are kept."""
        if self.frame_label is None:
            return 0
        known = self.frame_label >= 0
        video = self.video_labels[self.video] if len(self.video) else self.label
        self._video_label_rows = video.copy()
        self.label = np.where(known, self.frame_label, self.label).astype(np.int8)
        return int(((video == 1) & (self.label == 0)).sum())

    def row_keys(self) -> np.ndarray:
        """One sortable int64 per row, unique per (video, frame, track) and ascending in row order (joins)."""
        return row_keys(self.video, self.frame, self.track)

    def main_track_rows(self, v: int) -> np.ndarray:
        """Rows of video ``v``'s main face (its lowest track id: 0), in frame order."""
        s, e = int(self.starts[v]), int(self.starts[v + 1])
        tracks = self.track[s:e]
        if not len(tracks) or not tracks.any():
            return np.arange(s, e)
        return s + np.flatnonzero(tracks == tracks.min())

    def path(self, i: int) -> Path:
        """The crop file of row ``i``."""
        base = self.crop_dirs[self.crop_root[i]] if self.crop_root is not None else self.root
        if isinstance(base, str):  # a root this config does not set: its one-line error
            raise DatasetError(base)
        return join(base, self.paths[i].decode())

    @property
    def video_is_image(self) -> np.ndarray:
        """Per item (``video_names`` order): True for a still image, False for a video (or frame sequence)."""
        return self.image[self.starts[:-1]] if len(self.image) else np.zeros(0, bool)

    @property
    def video_labels(self) -> np.ndarray:
        """Label of each video (the label of its first frame; the video's own label also after
        :meth:`train_on_frame_labels`)."""
        labels = getattr(self, "_video_label_rows", None)
        labels = self.label if labels is None or len(labels) != len(self.label) else labels
        return labels[self.starts[:-1]] if len(labels) else np.zeros(0, np.int8)


def concat_arrays(parts: list[tuple[str, ManifestArrays]]) -> ManifestArrays:
    """Several datasets' arrays as one (a pooled validation set): videos named ``<dataset>/<video_id>``, method
    names merged, crop paths made absolute (each dataset's crops stay in its own cache)."""
    out = ManifestArrays.__new__(ManifestArrays)
    out.manifest = parts[0][1].manifest
    out.root = Path("/")
    names = _concat_bytes([np.char.add(f"{n}/".encode(), a.video_names) for n, a in parts])
    order = np.argsort(names, kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    out.video_names = names[order]
    out.method_names = sorted({m for _, a in parts for m in a.method_names})
    where = {m: i for i, m in enumerate(out.method_names)}
    offsets = np.cumsum([0] + [len(a.video_names) for _, a in parts])
    video = np.concatenate([rank[off + a.video] for off, (_, a) in zip(offsets, parts, strict=False)])
    method = np.concatenate([np.asarray([where[m] for m in a.method_names], np.int16)[a.method] if len(a.method)
                             else np.zeros(0, np.int16) for _, a in parts])
    paths = _concat_bytes([_absolute_paths(a) for _, a in parts])
    frame = np.concatenate([a.frame for _, a in parts])
    track = np.concatenate([a.track for _, a in parts])
    rows = np.lexsort((track, frame, video))
    out.video, out.frame, out.track = video[rows].astype(np.int32), frame[rows], track[rows]
    out.method, out.paths = method[rows].astype(np.int16), paths[rows]
    out.label = np.concatenate([a.label for _, a in parts])[rows]
    out.landmarks = np.concatenate([a.landmarks for _, a in parts])[rows]
    out.frame_label = None
    out.image = np.concatenate([a.image for _, a in parts])[rows]
    out.crop_root, out.crop_dirs = None, [out.root]
    out.rows = np.arange(len(out.label), dtype=np.int64)
    out.starts = np.searchsorted(out.video, np.arange(len(out.video_names) + 1)).astype(np.int64)
    return out


def _absolute_paths(arrays: ManifestArrays) -> np.ndarray:
    """Every crop path of ``arrays`` made absolute (its manifest's folder, or its row's crop root)."""
    if arrays.crop_root is None:
        return np.char.add(f"{Path(arrays.root).resolve()}/".encode(), arrays.paths)
    out = np.empty(len(arrays.paths), dtype=object)
    for code, base in enumerate(arrays.crop_dirs):
        sel = arrays.crop_root == code
        if sel.any():
            if isinstance(base, str):  # a root this config does not set: its one-line error
                raise DatasetError(base)
            out[sel] = list(np.char.add(f"{Path(base).resolve()}/".encode(), arrays.paths[sel]))
    return np.asarray(out.tolist(), dtype=bytes) if len(out) else np.zeros(0, "S1")


def _root_dir(roots: Roots, name: str) -> Path | str:
    """A crop root's folder, or the error that names the setting it needs (raised only if a crop needs it:
    a packed store reads its crops by offset and never does)."""
    try:
        return roots.resolve(".", name)
    except DatasetError as e:
        return str(e)


def row_keys(video: np.ndarray, frame: np.ndarray, track: np.ndarray | None = None) -> np.ndarray:
    """An int64 per row ordering (video, frame, track) lexicographically (for joins of manifest rows).

    Without tracks (all 0) it is ``video << 32 | frame``, as before tracks existed.
    """
    v, f = np.asarray(video, np.int64), np.asarray(frame, np.int64)
    if track is None or not np.any(track):
        return (v << 32) | f
    t = np.asarray(track, np.int64)
    if (v.max(initial=0) >= 1 << 23 or f.max(initial=0) >= 1 << 24 or t.max(initial=0) >= 1 << 16
            or min(v.min(initial=0), f.min(initial=0), t.min(initial=0)) < 0):
        raise SchemaError("manifest keys out of range for a multi-face join: more than 8 M videos, frame numbers "
                          "above 16 M or more than 65 k face tracks per video")
    return (v << 40) | (f << 16) | t


def read_rgb(path: Path) -> np.ndarray:
    """A cached face crop as RGB uint8 (dfd.store.media.read_image), with an error that names the fix."""
    try:
        return read_image(path)
    except MediaError as e:
        raise OSError(f"cannot read face crop {path}: {e.reason} (re-run dfd-extract for this dataset)") from e


class _BadCrops:
    """What a dataset does with an unreadable crop (dfd.data.bad_crops): ``skip`` replaces it by the next readable
    frame of its video (or drops the sample), ``fail`` stops with one line naming ``verify_hint``."""

    bad_crops: str = "skip"
    verify_hint: str = ""  # the command that lists every unreadable crop of this dataset

    def _known_bad(self) -> set[int]:
        # Per process (each loader worker learns on its own): rows found unreadable are not read again.
        if getattr(self, "_bad_pid", None) != os.getpid():
            self._bad_rows, self._bad_pid = set(), os.getpid()
        return self._bad_rows

    def _unreadable(self, row: int, err: OSError) -> BadCropError:
        where = f"{self.name}: " if getattr(self, "name", "") else ""
        hint = self.verify_hint or "dfd-extract dataset=<name> ... --verify"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return BadCropError(f"{where}unreadable face crop (data.bad_crops=fail): {first}; `{hint}` lists every "
                            "unreadable crop; re-extract or restore them, or set data.bad_crops=skip")

    def _read_row(self, i: int, read: Callable[[int], np.ndarray], rows: np.ndarray
                  ) -> tuple[int, np.ndarray | None, int]:
        """(row read, its image or None when the whole video is unreadable, unreadable crops counted: 0 or 1).

        ``rows``: the rows that may stand in for ``i`` (its video's, in order); the ones after ``i`` come first."""
        bad = self._known_bad()
        if i not in bad:
            try:
                return i, read(i), 0
            except OSError as e:
                if self.bad_crops == "fail":
                    raise self._unreadable(i, e) from None
                bad.add(i)
        found = first_readable(read, others_of(rows, i), bad)
        return (found[0], found[1], 1) if found is not None else (i, None, 1)


class FrameDataset(_BadCrops, Dataset):
    """One item per face crop: ``{image, label, video, index, method, landmarks, frame, track}``.

    ``index`` is the row number within this dataset: metrics use it to drop samples a distributed sampler
    repeated. ``video`` indexes ``arrays.video_names`` (ids unique across the dataset). ``frame`` (the frame
    number in the video) and ``track`` (the face within it) let the video-score rule group a frame's faces.
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

    def read_image(self, i: int) -> np.ndarray:
        """The RGB crop of row ``i`` (OSError when it cannot be read)."""
        return read_rgb(self.arrays.path(i))

    def load(self, i: int) -> dict:
        """The raw sample before augmentation (uint8 RGB crop, landmarks in crop pixels).

        An unreadable crop is replaced by the next readable frame of its video (its image and landmarks; the
        sample keeps row ``i``'s index), or the sample is dropped (:func:`dfd.data.bad_crops.dropped`) when its
        video has none (``data.bad_crops=skip``; ``fail`` raises). ``bad_crops`` counts row ``i``'s own crop.
        """
        a = self.arrays
        v = int(a.video[i])
        row, image, bad = self._read_row(int(i), self.read_image, np.arange(a.starts[v], a.starts[v + 1]))
        if image is None:
            return dropped(int(a.label[i]), int(i))
        return {
            "image": image,
            "landmarks": a.landmarks[row],
            "label": int(a.label[i]),
            "video": v,
            "index": int(i),
            "method": int(a.method[i]),
            KEY: bad,
        }

    def apply_transform(self, sample: dict) -> dict:
        """Augment + normalise a raw sample into tensors (a dropped sample passes as it is)."""
        if is_dropped(sample):
            return sample
        image, lm = self.pipeline(sample["image"], sample["landmarks"])
        return self._tensors(sample, image, lm)

    def apply_transform_pair(self, first: dict, second: dict, mask: np.ndarray | None = None) -> list[dict]:
        """Augment + normalise two samples of one frame (a real face and its self-blend) with ONE random draw.

        ``mask`` (HxW float, e.g. the blend mask) follows the same geometry and is added to both as ``mask``.
        """
        if mask is None:
            x1, x2, lm = self.pipeline.pair(first["image"], second["image"], first["landmarks"])
            return [self._tensors(first, x1, lm), self._tensors(second, x2, lm)]
        x1, x2, lm, m = self.pipeline.pair(first["image"], second["image"], first["landmarks"], mask=mask)
        m = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))
        return [{**self._tensors(first, x1, lm), "mask": m}, {**self._tensors(second, x2, lm), "mask": m}]

    def _tensors(self, sample: dict, image: torch.Tensor, lm: torch.Tensor) -> dict:
        i = int(sample["index"])  # the row: frame and track come from it (shard streams build samples too)
        return {
            "image": image,
            "landmarks": lm,
            "label": torch.tensor(sample["label"], dtype=torch.float32),
            "video": torch.tensor(sample["video"], dtype=torch.int64),
            "index": torch.tensor(i, dtype=torch.int64),
            "method": torch.tensor(sample["method"], dtype=torch.int64),
            "frame": torch.tensor(int(self.arrays.frame[i]), dtype=torch.int64),
            "track": torch.tensor(int(self.arrays.track[i]), dtype=torch.int64),
            KEY: int(sample.get(KEY, 0)),
        }

    def __getitem__(self, i: int) -> dict:
        return self.apply_transform(self.load(int(i)))


class ClipDataset(_BadCrops, Dataset):
    """One item per video: L uniformly spaced frames, augmented consistently: ``image`` is (L, C, H, W).

    Videos with fewer than L frames repeat frames (still in temporal order). With several faces per frame
    (``extract.choice=all``) the clip follows the video's main face (track 0, the largest over the video):
    one clip, one face, as dfd-predict builds it.
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
        """Manifest rows of the clip sampled from video ``v`` (its main face's rows)."""
        rows = self.arrays.main_track_rows(int(v))
        return rows[uniform_positions(len(rows), self.clip_len)]

    def read_image(self, i: int) -> np.ndarray:
        """The RGB crop of row ``i`` (OSError when it cannot be read)."""
        return read_rgb(self.arrays.path(i))

    def __getitem__(self, v: int) -> dict:
        v = int(v)
        rows = self.frame_rows(v)
        face = self.arrays.main_track_rows(v)
        images, used, counted = [], [], set()
        for r in rows:  # an unreadable frame: the next readable frame of the clip's face (data.bad_crops=skip)
            row, image, miss = self._read_row(int(r), self.read_image, face)
            if miss:
                counted.add(int(r))  # a row repeated in a short clip counts once
            if image is None:
                return dropped(int(self.arrays.label[rows[0]]), v, len(counted))
            images.append(image)
            used.append(row)
        return self.clip_item(v, np.asarray(used), images, len(counted))

    def clip_item(self, v: int, rows: np.ndarray, images: list[np.ndarray], bad: int = 0) -> dict:
        """The item of video ``v`` from its clip's rows and their decoded crops (file or shard readers)."""
        a = self.arrays
        x, lm = self.pipeline.clip(images, [a.landmarks[r] for r in rows])
        return {
            "image": x,
            "landmarks": lm,
            "label": torch.tensor(float(a.label[rows[0]])),
            "video": torch.tensor(int(v), dtype=torch.int64),
            "index": torch.tensor(int(v), dtype=torch.int64),
            "method": torch.tensor(int(a.method[rows[0]]), dtype=torch.int64),
            # One clip per video: it is the video's only "frame" for the video-score rule.
            "frame": torch.tensor(int(a.frame[rows[0]]), dtype=torch.int64),
            "track": torch.tensor(int(a.track[rows[0]]), dtype=torch.int64),
            KEY: int(bad),
        }
