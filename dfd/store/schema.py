"""The two tables every dfd tool agrees on: the video index and the frame manifest.

* **Video index** (one row per video or face sequence), written by ``dfd-index``; built from a dataset's
  official layout without decoding anything.
* **Frame manifest** (one row per saved face crop), written by ``dfd-extract`` (and by the synthetic
  dataset); the crop cache that training, evaluation and reports read.

Both are Parquet files so users can inspect them with pandas. Paths inside them are relative (index: to the
dataset root; manifest: to the manifest's own folder) so a cache can be moved between machines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dfd import atomic
from dfd.errors import UserError

SPLITS = ("train", "val", "test")

# Video index: required columns and their dtypes. Sources may add more (e.g. ``archive``, ``member``).
INDEX_COLUMNS: dict[str, str] = {
    "video_id": "string",  # unique across the whole dataset, e.g. "Deepfakes/000_003"
    "label": "int8",  # 0 real, 1 fake
    "split": "string",  # train | val | test
    "method": "string",  # manipulation method or real source, e.g. "Deepfakes", "youtube", "real"
    "identity": "string",  # who is in it (for identity-disjoint splits); "" when unknown
    "path": "string",  # relative to the dataset root (a file, a folder of frames, or an archive)
    "kind": "string",  # video | frames | image | archive
}

# Optional index columns, carried into the manifest by dfd-extract like every extra index column.
# ``method_type``: what kind of manipulation a fake is, where its dataset says so (one of METHOD_TYPES); ""
# for reals and where the dataset does not say (never guessed). Reports break metrics down by it.
# ``fake_segments``: a partial fake's visually altered time spans, JSON ``[[start, end], ...]`` in seconds of
# the video ("" for a video whose label holds for every frame). dfd-extract then samples frames inside and
# outside them and labels each frame by them (``dfd.faces.contract.segment_indices`` / ``segment_labels``):
# manifest column ``frame_label``.
# ``distortion``: distortions applied to the row's source frames before face detection, in order (dfd.store.distort
# chain text, e.g. "df_cs:3 df_gb:2"; "" = none): DeeperForensics' reals matched to their fakes' distortions, and
# the test sets of frame-level robustness. Extraction applies it; a changed chain makes the video's crops stale.
INDEX_OPTIONAL_COLUMNS: dict[str, str] = {"method_type": "string", "fake_segments": "string",
                                          "distortion": "string"}
METHOD_TYPES = ("face_swap", "reenactment", "lip_sync", "talking_face", "entire_face_synthesis", "face_editing",
                "diffusion", "commercial_service")

# Frame manifest: required columns. bbox is in source-frame pixels (x1, y1, x2, y2); landmarks are 5 (x, y)
# points in *crop* pixels, flattened to 10 floats, NaN when unknown; score is the detector's confidence (1.0
# for datasets that are already crops).
MANIFEST_COLUMNS: dict[str, str] = {
    "video_id": "string",
    "frame": "int32",
    "crop_path": "string",  # relative to the manifest's folder
    "label": "int8",
    "split": "string",
    "method": "string",
    "identity": "string",
    "bbox": "list<float32>[4]",
    "landmarks": "list<float32>[10]",
    "score": "float32",
}

# Optional manifest columns, defaulted by readers when absent. ``track``: the face's id within its video when a
# frame can give several crops (``extract.choice=all``; 0 = the video's main face, and the only face otherwise).
# A manifest's rows are unique per (video_id, frame, track). ``frame_label``: the frame's own label where it
# can differ from its video's (``label``, the label the dataset publishes for the video): written when the
# index has ``fake_segments`` (partial fakes: a frame is fake only inside a fake segment); absent, it is
# ``label``. ``kind``: the index row's kind (video | frames | image | archive); an item of kind ``image`` is one
# still image, scored and reported at the image level (:func:`item_is_image`), never as a one-frame video.
MANIFEST_OPTIONAL_COLUMNS: dict[str, str] = {"track": "int16", "frame_label": "int8", "kind": "string"}

# Where each crop came from (dfd.store.cache binds a cache to its sources with them); in-place crop datasets
# know only the path.
MANIFEST_SOURCE_COLUMNS: dict[str, str] = {"source_path": "string", "source_size": "int64", "source_mtime_ns": "int64"}

# Videos extraction skipped: the split and label they held in the index (a skipped file takes its place nowhere:
# splits are drawn per video, dfd.sources.base.assign_splits).
FAILURE_COLUMNS = ("video_id", "path", "reason", "split", "label")


def manifest_table(cols: dict[str, Any]):
    """A ``pyarrow.Table`` of manifest columns typed as :data:`MANIFEST_COLUMNS` (and the optional and source
    columns) say, in that order; columns absent from ``cols`` are left out. ``list<float32>[N]`` columns take a
    list of N-lists or an (n, N) array."""
    import pyarrow as pa

    types = {**MANIFEST_COLUMNS, **MANIFEST_OPTIONAL_COLUMNS, **MANIFEST_SOURCE_COLUMNS}
    arrays = {}
    for name, kind in types.items():
        if name not in cols:
            continue
        values = cols[name]
        if kind.startswith("list<float32>["):
            width = int(kind[len("list<float32>["):-1])
            if isinstance(values, np.ndarray):
                flat = pa.array(np.ascontiguousarray(values, np.float32).reshape(-1))
                arrays[name] = pa.FixedSizeListArray.from_arrays(flat, width)
            else:
                arrays[name] = pa.array(values, pa.list_(pa.float32(), width))
        else:
            arrays[name] = pa.array(values, pa.string() if kind == "string" else pa.from_numpy_dtype(np.dtype(kind)))
    return pa.table(arrays)


def item_is_image(kind: Any, source_path: Any = None) -> bool:
    """Whether a manifest item is a single still image: its ``kind`` says so; manifests written before the
    column existed tell by the source file's extension (every source indexes loose images as kind ``image``,
    frame folders and archives have no image extension)."""
    if kind is not None and kind == kind and str(kind):
        return str(kind) == "image"
    if source_path is None or source_path != source_path:
        return False
    from dfd.store.media import media_kind

    return media_kind(str(source_path)) == "image"


class SchemaError(UserError, ValueError):
    """A table does not have the columns or values dfd's tools rely on."""


def validate_index(df: pd.DataFrame, where: str = "index") -> pd.DataFrame:
    """Check an index has the required columns, valid labels/splits and unique ids; return it typed."""
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise SchemaError(f"{where}: missing columns {missing}; an index needs {list(INDEX_COLUMNS)}")
    df = df.astype({c: t for c, t in INDEX_COLUMNS.items()})
    _check_common(df, where)
    _check_method_types(df, where)
    _check_segments(df, where)
    _check_distortions(df, where)
    dup = df["video_id"][df["video_id"].duplicated()]
    if len(dup):
        raise SchemaError(f"{where}: video_id must be unique across the dataset; duplicated: {list(dup[:5])}")
    return df.reset_index(drop=True)


def validate_manifest(df: pd.DataFrame, where: str = "manifest") -> pd.DataFrame:
    """Check a frame manifest has the required columns and valid labels/splits."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise SchemaError(f"{where}: missing columns {missing}; a manifest needs {list(MANIFEST_COLUMNS)}")
    _check_common(df, where)
    return df


def _check_method_types(df: pd.DataFrame, where: str) -> None:
    if "method_type" not in df.columns:
        return
    values = set(df["method_type"].fillna("").astype(str).unique()) - {"", *METHOD_TYPES}
    if values:
        raise SchemaError(f"{where}: method_type must be one of {METHOD_TYPES} or empty (unknown); found "
                          f"{sorted(values)}")


def _check_segments(df: pd.DataFrame, where: str) -> None:
    if "fake_segments" not in df.columns:
        return
    for vid, text in zip(df["video_id"], df["fake_segments"].fillna(""), strict=True):
        try:
            parse_segments(text)
        except ValueError as e:
            raise SchemaError(f"{where}: video {vid!r}: fake_segments {text!r} {e}") from None


def parse_segments(text: str | None) -> list[tuple[float, float]]:
    """``fake_segments`` text -> [(start, end), ...] in seconds ([] for ""); ValueError when malformed."""
    if text is None or not str(text).strip():
        return []
    try:
        spans = json.loads(text)
    except ValueError:
        raise ValueError("is not JSON; write [[start, end], ...] in seconds") from None
    if not isinstance(spans, list) or not all(isinstance(s, list | tuple) and len(s) == 2 for s in spans):
        raise ValueError("must be a list of [start, end] pairs in seconds")
    out = [(float(a), float(b)) for a, b in spans]
    if any(not 0 <= a <= b for a, b in out):
        raise ValueError("holds a span with start > end or a negative time")
    return out


def _check_distortions(df: pd.DataFrame, where: str) -> None:
    if "distortion" not in df.columns:
        return
    from dfd.store.distort import DistortionError, parse_chain

    for text in df["distortion"].fillna("").astype(str).unique():
        try:
            parse_chain(text)
        except DistortionError as e:
            raise SchemaError(f"{where}: column distortion: {e}") from None


def _check_common(df: pd.DataFrame, where: str) -> None:
    bad_labels = set(np.unique(df["label"].to_numpy())) - {0, 1}
    if bad_labels:
        raise SchemaError(f"{where}: labels must be 0 (real) or 1 (fake); found {sorted(bad_labels)}")
    bad_splits = set(df["split"].unique()) - set(SPLITS)
    if bad_splits:
        raise SchemaError(f"{where}: split must be one of {SPLITS}; found {sorted(bad_splits)}")


def write_parquet(df: pd.DataFrame, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write a table atomically (temp file + rename) so a killed run never leaves a half-written file.

    ``metadata`` goes into the Parquet key-value metadata as JSON, one key each (e.g. ``dfd.cache``: the
    record binding an index or manifest to its dataset root and crop contract; see dfd.store.cache).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta.update({k.encode(): json.dumps(v).encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(meta)
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_index(path: str | Path) -> pd.DataFrame:
    """Read and validate a video index written by ``dfd-index``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video index not found: {path} (build it with `dfd-index dataset=<name> ...`)")
    return validate_index(pd.read_parquet(path), where=str(path))


def read_manifest(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read and validate a frame manifest written by ``dfd-extract`` or the synthetic dataset."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"frame manifest not found: {path} (extract faces first with `dfd-extract dataset=<name> ...`)"
        )
    df = pd.read_parquet(path, columns=columns)
    return df if columns else validate_manifest(df, where=str(path))


def method_types(manifest: str | Path, split: str | None = None) -> dict[str, str]:
    """``{method: method_type}`` of a manifest's fakes (of one split), where the index said what kind they are.

    {} when the manifest has no ``method_type`` column. A method given more than one kind is left out (a
    breakdown by kind must not guess).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(str(manifest))
    if "method_type" not in pf.schema_arrow.names:
        return {}
    seen: dict[str, set[str]] = {}
    for batch in pf.iter_batches(columns=["split", "label", "method", "method_type"], use_threads=False):
        keep = pc.equal(batch.column("label"), 1)
        if split is not None:
            keep = pc.and_(keep, pc.equal(batch.column("split").cast(pa.string()), split))
        rows = pa.Table.from_batches([batch]).filter(keep).group_by(["method", "method_type"]).aggregate([])
        for m, t in zip(rows.column("method").to_pylist(), rows.column("method_type").to_pylist(), strict=True):
            seen.setdefault(str(m), set()).add(t or "")
    return {m: next(iter(t)) for m, t in sorted(seen.items()) if len(t) == 1 and next(iter(t))}
