"""Cheap per-file metadata of media: what a file's container says, never its decoded frames.

Resolution, frame rate, duration, frame count, codec, pixel format, bit rate, JPEG quantisation tables and file
size: facts that differ between the sources of a dataset's reals and fakes (another camera, another encoder,
another resize) and let a classifier tell them apart without looking at a face (the shortcut audit,
:mod:`dfd.sources.audit`). Videos are opened with PyAV (container and stream headers only: no packet is
decoded); images with PIL (``Image.open`` reads the header and, for JPEGs, the quantisation tables, without
decoding pixels); a folder of frames by its first frame plus its frame count and total size.

Per-file results are cached beside the video index (:func:`cache_path`), keyed by path, kind, size and
modification time: a re-run stats the files and reads nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from dfd.store.media import frame_number, media_kind

#: The columns of a metadata table (one row per index row), in order; NaN / "" where a file does not say.
NUMERIC = ("width", "height", "fps", "duration", "frames", "bit_rate", "q_luma", "q_chroma", "size")
TEXT = ("codec", "pix_fmt", "error")
KEY = ("path", "kind", "stat_size", "stat_mtime_ns")
#: What the cache file records per row (the key, then the facts).
COLUMNS = (*KEY, *NUMERIC, *TEXT)


def cache_path(index_path: str | Path) -> Path:
    """Where the metadata of an index's files is cached: beside it (``index.parquet`` -> ``index_media.parquet``)."""
    p = Path(index_path)
    return p.with_name(f"{p.stem}_media.parquet")


def _empty() -> dict:
    return {**{k: np.nan for k in NUMERIC}, **{k: "" for k in TEXT}}


def probe_image(path: str | Path) -> dict:
    """Header facts of one image (PIL: size, format, mode, JPEG chroma sampling and quantisation tables)."""
    from PIL import Image, JpegImagePlugin

    out = _empty()
    with Image.open(path) as im:
        out["width"], out["height"] = float(im.size[0]), float(im.size[1])
        out["codec"] = str(im.format or "").lower()
        mode = str(im.mode)
        tables = getattr(im, "quantization", None) or {}
        if im.format == "JPEG":
            # 4:4:4 / 4:2:2 / 4:2:0: another JPEG writer (or camera) than the other class's shows up here.
            sampling = {0: "444", 1: "422", 2: "420"}.get(JpegImagePlugin.get_sampling(im), "other")
            mode = f"{mode}:{sampling}"
        out["pix_fmt"] = mode
    if tables:
        ids = sorted(tables)
        out["q_luma"] = float(np.mean(tables[ids[0]]))
        if len(ids) > 1:
            out["q_chroma"] = float(np.mean(tables[ids[1]]))
    out["frames"] = 1.0
    out["size"] = float(os.path.getsize(path))
    return out


def probe_video(path: str | Path) -> dict:
    """Container and stream facts of one video (PyAV: headers only, nothing decoded)."""
    import av

    out = _empty()
    with av.open(str(path), metadata_errors="ignore") as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        out["width"], out["height"] = float(ctx.width or np.nan), float(ctx.height or np.nan)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        out["fps"] = float(rate) if rate else np.nan
        if stream.duration is not None and stream.time_base is not None:
            out["duration"] = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            out["duration"] = container.duration / 1_000_000
        frames = stream.frames or (out["duration"] * out["fps"] if out["fps"] == out["fps"] else np.nan)
        out["frames"] = float(frames) if frames else np.nan
        out["bit_rate"] = float(stream.bit_rate or container.bit_rate or np.nan)
        out["codec"] = str(ctx.name or "")
        out["pix_fmt"] = str(ctx.pix_fmt or "")
    out["size"] = float(os.path.getsize(path))
    return out


def probe_frames(path: str | Path) -> dict:
    """A folder of a video's frames: its first frame's header facts, its frame count and total size."""
    entries = [e for e in os.scandir(path) if e.is_file() and media_kind(e.name) == "image"]
    if not entries:
        raise ValueError("no frames in the folder")
    entries.sort(key=lambda e: (frame_number(e.name) is None, frame_number(e.name) or 0, e.name))
    out = probe_image(entries[0].path)
    out["frames"] = float(len(entries))
    out["size"] = float(sum(e.stat().st_size for e in entries))
    return out


def probe(path: str | Path, kind: str) -> dict:
    """The metadata of one index row's file (``kind`` as the index says); ``error`` holds why it could not be
    read (the facts are then NaN): bad input is recorded, never raised."""
    try:
        if kind == "image":
            return probe_image(path)
        if kind == "video":
            return probe_video(path)
        if kind == "frames":
            return probe_frames(path)
        return {**_empty(), "error": f"{kind}: not probed (members of an archive are read only by decoding it)"}
    except Exception as e:  # a broken file is a fact about the dataset, not a reason to stop
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return {**_empty(), "error": f"{type(e).__name__}: {text}"[:200]}


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return -1, -1
    return int(st.st_size), int(st.st_mtime_ns)


def probe_files(items: Iterable[tuple[str, str]], root: str | Path, cache: str | Path | None = None,
                workers: int = 4, trust_cache: bool = False) -> pd.DataFrame:
    """Metadata of ``(path relative to root, kind)`` items, one row each (in order), reusing and refreshing the
    cache file ``cache`` (see :func:`cache_path`): an entry is reused while the file's size and mtime match.

    ``trust_cache``: the files are not on this machine (crops train without their videos): cached entries are
    used as they are, the rest are reported as not here, and the cache is left untouched."""
    items = list(items)
    root = Path(root)
    cached: dict[tuple[str, str], dict] = {}
    cache = Path(cache) if cache is not None else None
    if cache is not None and cache.is_file():
        try:
            old = pd.read_parquet(cache)
            if set(COLUMNS) <= set(old.columns):
                cached = {(r["path"], r["kind"]): r for r in old[list(COLUMNS)].to_dict("records")}
        except Exception:  # an unreadable cache is rebuilt, never trusted
            cached = {}
    unique = list(dict.fromkeys(items))
    if trust_cache:
        gone = {**_empty(), "error": "not on this machine (no cached metadata)"}
        rows = [cached.get(it) or {"path": it[0], "kind": it[1], "stat_size": -1, "stat_mtime_ns": -1, **gone}
                for it in items]
        return pd.DataFrame(rows, columns=list(COLUMNS))
    stats = {it: _stat(root / it[0]) for it in unique}
    rows: dict[tuple[str, str], dict] = {}
    todo = []
    for it in unique:
        hit = cached.get(it)
        size, mtime = stats[it]
        if hit is not None and (int(hit["stat_size"]), int(hit["stat_mtime_ns"])) == (size, mtime):
            rows[it] = hit
        else:
            todo.append(it)

    def one(it: tuple[str, str]) -> dict:
        size, mtime = stats[it]
        facts = probe(root / it[0], it[1]) if size >= 0 else {**_empty(), "error": "missing"}
        return {"path": it[0], "kind": it[1], "stat_size": size, "stat_mtime_ns": mtime, **facts}

    if todo:
        if workers > 1 and len(todo) > 8:
            from concurrent.futures import ThreadPoolExecutor

            # Header reads wait on the disk, and PyAV/PIL release the GIL while they do.
            with ThreadPoolExecutor(workers) as pool:
                done = list(pool.map(one, todo))
        else:
            done = [one(it) for it in todo]
        rows.update({(r["path"], r["kind"]): r for r in done})
        if cache is not None:
            _write_cache(cache, {**cached, **rows})
    return pd.DataFrame([rows[it] for it in items], columns=list(COLUMNS))


def _write_cache(cache: Path, rows: dict[tuple[str, str], dict]) -> None:
    from dfd import atomic

    df = pd.DataFrame(list(rows.values()), columns=list(COLUMNS))
    df = df.astype({**{k: "float64" for k in NUMERIC}, **{k: "string" for k in (*TEXT, "path", "kind")},
                    "stat_size": "int64", "stat_mtime_ns": "int64"})
    try:
        with atomic.atomic_path(cache) as tmp:
            df.to_parquet(tmp, index=False)
    except OSError:  # a read-only cache folder: the audit still runs, only a re-run reads the files again
        pass
