"""Packed crops: a crop cache as a few large tar shards (the WebDataset layout), read at random or streamed.

Why: shared cluster filesystems (Lustre, GPFS, NFS) and object stores punish millions of small files; DFDC's
~4 M face crops become a few hundred ~512 MB shards. The shards are plain POSIX tar in the WebDataset layout, so
``tar``, ``webdataset``, DALI or Hugging Face ``datasets`` read them too.

Layout of a shard store (``dfd-pack`` writes it; default ``<dataset cache>/shards``)::

    shards.json                 format, the manifest it was made from (path, sha256, rows, extraction settings)
                                and every shard (split, path, samples, bytes, sha256); written last
    manifest.parquet            the source manifest's rows + ``shard, offset, nbytes``: where each crop's bytes are
    <split>/shard-000000.tar    per crop: ``<key>.png|jpg`` (the cache's file, byte for byte) and ``<key>.json``
                                (video_id, frame, label, split, method, landmarks, bbox, score)

Reading (``data.store=shards``) in one of two modes:

* ``random`` (default for local roots): map-style, one ``pread`` per crop at the offset the index gives. The
  datasets are :class:`~dfd.data.datasets.FrameDataset` / ``ClipDataset`` whose bytes come from shards, so the
  samplers, DDP split, augmentation streams and evaluation ``index`` are those of ``data.store=files``: training
  sees the same frames and labels in the same order, bit for bit.
* ``stream`` (default for URL roots: ``s3://``, ``gs://``, ``https://``, ``pipe:...``): whole shards are read in
  sequence. Each epoch the split's shards are permuted with (seed, epoch), the sample sequence is cut into equal
  contiguous ranges per DDP rank (training: equal batch counts on every rank, so no rank waits on a collective)
  and into whole batches per DataLoader worker, and each worker shuffles through a buffer seeded by
  (seed, epoch, rank, worker): deterministic for a fixed seed, every frame once per evaluation.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from dfd.data.datasets import ClipDataset, FrameDataset, ManifestArrays, row_keys
from dfd.data.schema import SPLITS, SchemaError
from dfd.data.transforms import Pipeline
from dfd.errors import UserError

FORMAT = "dfd-shards/1"
META_NAME = "shards.json"
INDEX_NAME = "manifest.parquet"
MODES = ("auto", "random", "stream")
LOCATION_COLUMNS = ("shard", "offset", "nbytes")
_BLOCK = 512  # tar block size: member data starts on, and is padded to, a block boundary
_MTIME = 0  # fixed member times: the same cache packs to byte-identical shards (resume == uninterrupted run)


class ShardError(UserError, ValueError):
    """A shard store is missing, stale, inconsistent, or used in a way its read mode cannot serve."""


# ----------------------------------------------------------------------------------------------- helpers
def parse_size(value: int | float | str) -> int:
    """``512MB``, ``1GiB``, ``2.5e8`` or an int -> bytes (decimal units: MB = 10^6, MiB = 2^20)."""
    if isinstance(value, int | float):
        return int(value)
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([KMGT]?)(i?)B?\s*", str(value), flags=re.IGNORECASE)
    if not m:
        raise ShardError(f"cannot read size {value!r}; write e.g. 512MB, 1GB, 256MiB or a byte count")
    unit = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * unit ** "_KMGT".index((m.group(2) or "_").upper()))


def sample_key(video_id: str, frame: int, track: int = 0) -> str:
    """The tar member stem of one crop: the video id made path- and WebDataset-safe, then the frame (and the
    face track when it is not 0: several faces of one frame, ``extract.choice=all``).

    WebDataset splits a member name at its first dot after the last slash, so dots and odd characters become
    ``_`` (with a short hash of the original id so two ids never share a key).
    """
    clean = re.sub(r"[^A-Za-z0-9_/-]", "_", video_id).strip("/") or "_"
    clean = "/".join(p or "_" for p in clean.split("/"))
    if clean != video_id:
        clean = f"{clean}-{hashlib.sha1(video_id.encode()).hexdigest()[:8]}"
    return f"{clean}/{int(frame):06d}" + (f"_{int(track)}" if track else "")


def is_url(root: str | Path) -> bool:
    """A remote (or fsspec) root: ``s3://``, ``gs://``, ``https://``, ``file://``, ``pipe:...``."""
    s = str(root)
    return "://" in s or s.startswith("pipe:")


def join_url(root: str | Path, rel: str) -> str:
    """A file of the store: ``{path}`` in the root is replaced (``pipe:`` commands), else ``root/rel``."""
    s = str(root)
    return s.replace("{path}", rel) if "{path}" in s else f"{s.rstrip('/')}/{rel}"


def open_url(url: str) -> Any:
    """A readable binary stream for a local path, an fsspec URL (s3:// needs s3fs) or a WebDataset ``pipe:``."""
    scheme = urlparse(url).scheme if "://" in url else ("pipe" if url.startswith("pipe:") else "")
    if scheme == "":
        return open(url, "rb")  # noqa: SIM115 - the caller closes it
    if scheme == "pipe":
        from webdataset.gopen import gopen

        return gopen(url, "rb")
    import fsspec

    try:
        return fsspec.open(url, "rb").open()
    except (ImportError, ValueError) as e:
        raise ShardError(f"cannot open {url}: {e} (install the fsspec backend for '{scheme}://', e.g. "
                         f"`pip install s3fs`, or give a root like 'pipe:aws s3 cp s3://bucket/dir/{{path}} -')") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_table_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def source_info(manifest: Path) -> dict:
    """What a store records about the manifest it was made from (a stale store is detected by its sha256)."""
    manifest = Path(manifest)
    info: dict[str, Any] = {
        "manifest": str(manifest.resolve()),
        "sha256": _sha256(manifest),
        "bytes": manifest.stat().st_size,
        "rows": pq.ParquetFile(manifest).metadata.num_rows,
    }
    for name in ("extract_config.json", "params.json"):  # extraction settings / synthetic generator params
        p = manifest.parent / name
        if p.is_file():
            with contextlib.suppress(ValueError):
                info[name.removesuffix(".json")] = json.loads(p.read_text())
    return info


# ----------------------------------------------------------------------------------------------- writing
class _HashingFile(io.RawIOBase):
    """A write-only file that hashes what passes through (each shard's sha256 at no extra read)."""

    def __init__(self, f: Any) -> None:
        super().__init__()
        self.f, self.sha = f, hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:
        self.sha.update(b)
        return self.f.write(b)


@dataclass
class ShardInfo:
    """One finished shard: its split, number within the split, path relative to the store, size and hash."""

    split: str
    number: int
    path: str
    samples: int
    bytes: int
    sha256: str


class _SplitWriter:
    """Writes one split's crops into size-capped tar shards, each under a temporary name until it is complete."""

    def __init__(self, root: Path, split: str, max_bytes: int, first: int,
                 on_shard: Callable[[ShardInfo, dict[str, list]], None]) -> None:
        self.root, self.split, self.max_bytes = root, split, max_bytes
        self.number, self.on_shard = first, on_shard
        self._tw = None

    def _open(self) -> None:
        from webdataset import TarWriter

        self.rel = f"{self.split}/shard-{self.number:06d}.tar"
        final = self.root / self.rel
        final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
        self._file = open(self.tmp, "wb")  # noqa: SIM115 - closed in _close
        self._hashing = _HashingFile(self._file)
        # PAX: long video ids stay valid member names (USTAR stops at 255 characters).
        self._tw = TarWriter(self._hashing, encoder=False, mtime=_MTIME, format="PAX_FORMAT")
        self._rows: dict[str, list] = {"video_id": [], "frame": [], "track": [], "offset": [], "nbytes": [], "pos": []}

    def add(self, key: str, ext: str, image: bytes, meta: bytes, video_id: str, frame: int, pos: int,
            track: int = 0) -> None:
        if self._tw is not None and self._tw.tarstream.offset + len(image) > self.max_bytes and self._rows["frame"]:
            self._close()
        if self._tw is None:
            self._open()
        tar = self._tw.tarstream
        self._tw.write({"__key__": key, ext: image})
        # The member's data is the last ceil(n/512) blocks written: its offset needs no knowledge of headers.
        self._rows["offset"].append(tar.offset - -(-len(image) // _BLOCK) * _BLOCK)
        self._rows["nbytes"].append(len(image))
        self._rows["video_id"].append(video_id)
        self._rows["frame"].append(int(frame))
        self._rows["track"].append(int(track))
        self._rows["pos"].append(int(pos))
        self._tw.write({"__key__": key, "json": meta})

    def _close(self) -> None:
        self._tw.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        size = self._file.tell()
        self._file.close()
        os.replace(self.tmp, self.root / self.rel)
        info = ShardInfo(self.split, self.number, self.rel, len(self._rows["frame"]), size, self._hashing.sha.hexdigest())
        self._tw = None
        self.number += 1
        self.on_shard(info, self._rows)

    def close(self) -> None:
        if self._tw is not None:
            self._close()


class PackWriter:
    """Feed crops (a manifest row + the crop's encoded bytes) and get size-capped tar shards per split.

    Each finished shard is renamed into place and recorded in ``<out>/.pack/<split>-<n>.parquet`` (its crops'
    offsets), so a killed run loses at most the shard being written. :meth:`finish` joins those records with
    the manifest into the store's ``manifest.parquet`` and writes ``shards.json`` last.

    Rows may come in any order (extraction can feed videos as they finish); ``pos`` is the caller's resume
    cursor (``dfd-pack`` passes the row's position in its deterministic order).
    """

    def __init__(self, out: str | Path, shard_bytes: int | str = "512MB",
                 first_shard: Mapping[str, int] | None = None) -> None:
        self.out = Path(out)
        self.shard_bytes = parse_size(shard_bytes)
        if self.shard_bytes < 4 * _BLOCK:
            raise ShardError(f"shard size {self.shard_bytes} B is too small; use e.g. pack.shard_size=512MB")
        self.state = self.out / ".pack"
        self.state.mkdir(parents=True, exist_ok=True)
        self._first = dict(first_shard or {})
        self._writers: dict[str, _SplitWriter] = {}

    def _record(self, info: ShardInfo, rows: dict[str, list]) -> None:
        table = pa.table({
            "video_id": pa.array(rows["video_id"], pa.string()),
            "frame": pa.array(rows["frame"], pa.int32()),
            "track": pa.array(rows["track"], pa.int16()),
            "offset": pa.array(rows["offset"], pa.int64()),
            "nbytes": pa.array(rows["nbytes"], pa.int32()),
            "pos": pa.array(rows["pos"], pa.int64()),
        }).replace_schema_metadata({"shard": json.dumps(info.__dict__)})
        _write_table_atomic(table, self.state / f"{info.split}-{info.number:06d}.parquet")

    def add(self, row: Mapping[str, Any], image: bytes, ext: str, pos: int = -1) -> None:
        """Add one crop. ``row`` holds the manifest columns (video_id, frame, split, label, method, ...)."""
        split = str(row["split"])
        w = self._writers.get(split)
        if w is None:
            w = self._writers[split] = _SplitWriter(self.out, split, self.shard_bytes, self._first.get(split, 0),
                                                    self._record)
        vid, frame, track = str(row["video_id"]), int(row["frame"]), int(row.get("track") or 0)
        meta = {k: _jsonable(row.get(k)) for k in ("video_id", "frame", "track", "label", "split", "method",
                                                    "identity", "landmarks", "bbox", "score") if k in row}
        w.add(sample_key(vid, frame, track), ext, image, json.dumps(meta).encode(), vid, frame, pos, track)

    def close_split(self, split: str) -> None:
        """Finish the split's open shard (the converter does this at each split's end)."""
        if split in self._writers:
            self._writers.pop(split).close()

    def finish(self, manifest: str | Path, source: dict | None = None) -> tuple[Path, pa.Table]:
        """Close open shards; write ``manifest.parquet`` (source rows + locations) and ``shards.json``.

        Returns the store's metadata path and the manifest rows that have no crop in the store (missing files).
        """
        for split in list(self._writers):
            self.close_split(split)
        parts = sorted(self.state.glob("*.parquet"))
        shards = [ShardInfo(**json.loads(pq.read_schema(p).metadata[b"shard"])) for p in parts]
        order = sorted(range(len(shards)), key=lambda i: (_split_rank(shards[i].split), shards[i].number))
        shards = [shards[i] for i in order]
        locs = [_with_track(pq.read_table(parts[i])).append_column(
                    "shard", pa.array(np.full(shards[k].samples, k, np.int32))) for k, i in enumerate(order)]
        loc = pa.concat_tables(locs) if locs else pa.table({
            "video_id": pa.array([], pa.string()), "frame": pa.array([], pa.int32()), "track": pa.array([], pa.int16()),
            "offset": pa.array([], pa.int64()), "nbytes": pa.array([], pa.int32()), "pos": pa.array([], pa.int64()),
            "shard": pa.array([], pa.int32())})
        src = pq.read_table(manifest)
        src = src.drop_columns([c for c in LOCATION_COLUMNS if c in src.column_names])
        # Join on the keys only (payload columns such as fixed-size landmark lists need not be joinable).
        keys = _with_track(pa.table({"video_id": src["video_id"].cast(pa.string()),
                                     "frame": pc.cast(src["frame"], pa.int32()),
                                     **({"track": src["track"]} if "track" in src.column_names else {}),
                                     "_row": pa.array(np.arange(src.num_rows, dtype=np.int64))}))
        hits = keys.join(loc.select(["video_id", "frame", "track", "shard", "offset", "nbytes"]),
                         ["video_id", "frame", "track"], join_type="inner")
        at = hits["_row"].to_numpy()
        cols = {}
        for c, dtype in (("shard", np.int32), ("offset", np.int64), ("nbytes", np.int32)):
            full = np.full(src.num_rows, -1, dtype)
            full[at] = hits[c].to_numpy()
            cols[c] = full
        have = cols["shard"] >= 0
        missing = src.filter(pa.array(~have))
        table = src
        for c, v in cols.items():
            table = table.append_column(c, pa.array(v))
        table = table.filter(pa.array(have))
        _write_table_atomic(table, self.out / INDEX_NAME)
        meta = {
            "format": FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "source": source or source_info(Path(manifest)),
            "shard_bytes": self.shard_bytes,
            "samples": table.num_rows,
            "missing": missing.num_rows,
            "splits": {s: int(sum(x.samples for x in shards if x.split == s)) for s in dict.fromkeys(x.split for x in shards)},
            "shards": [x.__dict__ for x in shards],
        }
        _write_atomic(self.out / META_NAME, json.dumps(meta, indent=1).encode())
        shutil.rmtree(self.state, ignore_errors=True)
        return self.out / META_NAME, missing


def _split_rank(split: str) -> tuple[int, str]:
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, list):
        return [None if isinstance(x, float) and x != x else x for x in v]
    return v.item() if isinstance(v, np.generic) else v


@dataclass
class PackSummary:
    """What ``dfd-pack`` did."""

    out: Path
    samples: int = 0
    shards: int = 0
    bytes: int = 0
    resumed_shards: int = 0
    up_to_date: bool = False
    seconds: float = 0.0
    missing: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if self.up_to_date:
            return f"shard store {self.out} is up to date with its manifest ({self.samples} crops, {self.shards} shards)"
        rate = self.bytes / 2**20 / self.seconds if self.seconds > 0 else 0.0
        lines = [f"packed {self.samples} crops into {self.shards} shards ({self.bytes / 2**30:.2f} GiB) at {self.out} "
                 f"in {self.seconds:.1f} s ({rate:.0f} MiB/s; {self.resumed_shards} shards reused from an earlier run)"]
        if self.missing:
            lines.append(f"  {len(self.missing)} crops missing or unreadable, skipped (listed in "
                         f"{self.out / 'missing.csv'}), e.g. {self.missing[0]}")
        return "\n".join(lines)


def pack_cache(manifest: str | Path, out: str | Path | None = None, shard_size: int | str = "512MB",
               overwrite: bool = False, progress: bool = False) -> PackSummary:
    """Convert a crop cache (``manifest.parquet`` + ``crops/``) into a shard store; resumable and atomic.

    Each split's rows are written in (video_id, frame, track) order, the order training and evaluation index them.
    Rerun after a kill: finished shards are kept and the rest is written exactly as an uninterrupted run would.
    """
    t0 = time.perf_counter()
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"frame manifest not found: {manifest} (extract faces first with `dfd-extract`)")
    out = Path(out) if out is not None else manifest.parent / "shards"
    src = source_info(manifest)
    size = parse_size(shard_size)
    plan = {"format": FORMAT, "source_sha256": src["sha256"], "shard_bytes": size}
    summary = PackSummary(out)
    meta_path = out / META_NAME
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        same = meta.get("source", {}).get("sha256") == src["sha256"] and meta.get("shard_bytes") == size
        if same and not overwrite:
            summary.up_to_date, summary.samples, summary.shards = True, meta["samples"], len(meta["shards"])
            return summary
        if not overwrite:
            raise ShardError(f"{out} holds shards of another manifest or shard size; pass pack.overwrite=true to "
                             f"replace them, or pack.out=<another folder>")
        shutil.rmtree(out)
    state = out / ".pack"
    plan_path = state / "plan.json"
    if plan_path.is_file() and json.loads(plan_path.read_text()) != plan:
        if not overwrite:
            raise ShardError(f"{out} holds an unfinished pack of another manifest or shard size; pass "
                             f"pack.overwrite=true to restart it")
        shutil.rmtree(out)
    state.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*/.shard-*.tar.tmp*"):  # a shard being written when an earlier run was killed
        stale.unlink(missing_ok=True)
    _write_atomic(plan_path, json.dumps(plan).encode())

    table = pq.read_table(manifest, columns=None)
    for col in ("video_id", "frame", "crop_path", "split", "label"):
        if col not in table.column_names:
            raise SchemaError(f"{manifest}: missing column {col!r}; re-run dfd-extract to rewrite the manifest")
    done = _finished_parts(state)
    summary.resumed_shards = sum(len(v) for v in done.values())
    writer = PackWriter(out, size, first_shard={s: len(v) for s, v in done.items()})
    splits = sorted(set(table["split"].to_pylist()), key=_split_rank)
    bar = _bar(progress, table.num_rows)
    for split in splits:
        rows = table.filter(pc.equal(table["split"].cast(pa.string()), split)).sort_by(
            [("video_id", "ascending"), ("frame", "ascending")]
            + ([("track", "ascending")] if "track" in table.column_names else []))
        start = max((p for p in done.get(split, {}).values()), default=-1) + 1
        for pos in range(start, rows.num_rows, 2048):
            for k, row in enumerate(rows.slice(pos, 2048).to_pylist()):
                path = manifest.parent / row["crop_path"]
                try:
                    image = path.read_bytes()
                except OSError:
                    continue  # listed as missing by finish(): the manifest row has no location
                ext = path.suffix.lower().lstrip(".") or "png"
                writer.add(row, image, "jpg" if ext == "jpeg" else ext, pos=pos + k)
            bar(min(2048, rows.num_rows - pos))
        writer.close_split(split)
    meta_path, missing = writer.finish(manifest, src)
    if missing.num_rows:
        missing.select([c for c in ("video_id", "frame", "crop_path", "split") if c in missing.column_names]) \
            .to_pandas().to_csv(out / "missing.csv", index=False)
        summary.missing = [str(p) for p in missing["crop_path"].to_pylist()[:20]]
    meta = json.loads(meta_path.read_text())
    summary.samples, summary.shards = meta["samples"], len(meta["shards"])
    summary.bytes = sum(s["bytes"] for s in meta["shards"])
    summary.seconds = time.perf_counter() - t0
    return summary


def _with_track(table: pa.Table) -> pa.Table:
    """The table with an int16 ``track`` key column (0 where a manifest or pack record predates tracks)."""
    if "track" in table.column_names:
        i = table.column_names.index("track")
        return table.set_column(i, "track", pc.fill_null(pc.cast(table["track"], pa.int16()), 0))
    return table.append_column("track", pa.array(np.zeros(table.num_rows, np.int16)))


def _finished_parts(state: Path) -> dict[str, dict[int, int]]:
    """Per split: shard number -> last row position it holds, for the contiguous run of finished shards."""
    found: dict[str, dict[int, int]] = {}
    for p in state.glob("*.parquet"):
        info = json.loads(pq.read_schema(p).metadata[b"shard"])
        pos = pq.read_table(p, columns=["pos"])["pos"]
        found.setdefault(info["split"], {})[info["number"]] = int(pc.max(pos).as_py()) if len(pos) else -1
    done: dict[str, dict[int, int]] = {}
    for split, parts in found.items():
        n = 0
        while n in parts:
            n += 1
        done[split] = {k: parts[k] for k in range(n)}
        for k in set(parts) - set(range(n)):  # a later shard without its predecessors: rewrite it
            (state / f"{split}-{k:06d}.parquet").unlink(missing_ok=True)
    return done


def _bar(enabled: bool, total: int) -> Callable[[int], None]:
    if not enabled:
        return lambda n: None
    from rich.progress import Progress

    prog = Progress(transient=False)
    prog.start()
    task = prog.add_task("packing", total=total)

    def advance(n: int) -> None:
        prog.advance(task, n)
        if prog.finished:
            prog.stop()

    return advance


# ----------------------------------------------------------------------------------------------- reading
class ShardStore:
    """A shard store opened for reading: its metadata, its index (as a local file) and its shards' URLs.

    Args:
        root: a folder, or a URL (``s3://bucket/dfd/ffpp``, ``https://...``, ``file:///...``,
            ``pipe:aws s3 cp s3://bucket/dfd/ffpp/{path} -``).
        cache_dir: for URL roots, where ``shards.json`` and ``manifest.parquet`` are kept locally (re-fetched
            when the remote ``shards.json`` changes).
    """

    def __init__(self, root: str | Path, cache_dir: str | Path | None = None) -> None:
        self.root = str(root)
        self.remote = is_url(self.root)
        if not self.remote:
            meta_path = Path(self.root) / META_NAME
            if not meta_path.is_file():
                raise ShardError(f"no shard store at {self.root} ({META_NAME} missing); pack the crop cache first "
                                 f"with `dfd-pack dataset=<name>`, or use data.store=files")
            self.meta = json.loads(meta_path.read_text())
            self.manifest_path = Path(self.root) / INDEX_NAME
        else:
            self.meta, self.manifest_path = self._fetch(cache_dir)
        if self.meta.get("format") != FORMAT:
            raise ShardError(f"{self.root}: shard format {self.meta.get('format')!r} is not {FORMAT!r}; re-run dfd-pack")
        self.shards: list[dict] = self.meta["shards"]
        self.urls = [self.url(s["path"]) for s in self.shards]

    def url(self, rel: str) -> str:
        return join_url(self.root, rel) if self.remote else str(Path(self.root) / rel)

    def _fetch(self, cache_dir: str | Path | None) -> tuple[dict, Path]:
        base = Path(cache_dir or Path.home() / ".cache" / "dfd" / "remote_shards")
        local = base / hashlib.sha1(self.root.encode()).hexdigest()[:16]
        local.mkdir(parents=True, exist_ok=True)
        try:
            with open_url(self.url(META_NAME)) as f:
                raw = f.read()
        except (OSError, FileNotFoundError) as e:
            raise ShardError(f"cannot read {self.url(META_NAME)}: {e}; check data.shards.root") from None
        cached = local / META_NAME
        if not (cached.is_file() and cached.read_bytes() == raw and (local / INDEX_NAME).is_file()):
            tmp = local / f".{INDEX_NAME}.tmp{os.getpid()}"
            with open_url(self.url(INDEX_NAME)) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            os.replace(tmp, local / INDEX_NAME)
            _write_atomic(cached, raw)
        return json.loads(raw), local / INDEX_NAME

    def check_source(self, manifest: Path) -> str | None:
        """A one-line warning when the store was packed from another version of ``manifest`` (else None)."""
        src = self.meta.get("source", {})
        if not manifest.is_file():
            return None
        if manifest.stat().st_size != src.get("bytes") or _sha256(manifest) != src.get("sha256"):
            return (f"shard store {self.root} was packed from an older {manifest}; re-run dfd-pack to include "
                    f"the current crops (training uses the store's own manifest)")
        return None

    def locations(self, arrays: ManifestArrays, split: str | list[str] | None) -> dict[str, np.ndarray]:
        """Where each row of ``arrays`` lies (``shard, offset, nbytes``, aligned with its rows), and the split's
        whole sample sequence in shard order (``seq_shard``, ``seq_row``: -1 for crops ``arrays`` dropped)."""
        names = pq.read_schema(self.manifest_path).names
        cols = ["video_id", "frame", *(["track"] if "track" in names else []), "split", *LOCATION_COLUMNS]
        t = pq.read_table(self.manifest_path, columns=cols)
        if split is not None:
            wanted = pa.array([split] if isinstance(split, str) else list(split), pa.string())
            t = t.filter(pc.is_in(t["split"].cast(pa.string()), value_set=wanted))
        enc = pc.dictionary_encode(t["video_id"].combine_chunks())
        names = np.array([s.encode() for s in enc.dictionary.to_pylist()], dtype="S")
        vn = arrays.video_names
        code_of_name = np.searchsorted(vn, names) if len(vn) else np.zeros(len(names), np.int64)
        known = code_of_name < len(vn)
        known[known] = vn[code_of_name[known]] == names[known]
        codes = enc.indices.to_numpy(zero_copy_only=False)
        vid = np.where(known[codes], code_of_name[codes], -1).astype(np.int64)
        frame = t["frame"].to_numpy().astype(np.int64)
        track = (pc.fill_null(t["track"], 0).to_numpy().astype(np.int64) if "track" in t.column_names
                 else np.zeros(len(frame), np.int64))
        multi = bool(track.any() or arrays.track.any())
        key = row_keys(np.maximum(vid, 0), frame, track if multi else None)
        key[vid < 0] = -1  # rows of videos arrays does not hold: match nothing
        akey = row_keys(arrays.video, arrays.frame, arrays.track if multi else None)
        pos = np.searchsorted(akey, key)
        hit = (vid >= 0) & (pos < len(akey))
        hit[hit] = akey[pos[hit]] == key[hit]
        row = np.where(hit, pos, -1)
        shard = t["shard"].to_numpy().astype(np.int32)
        offset = t["offset"].to_numpy().astype(np.int64)
        nbytes = t["nbytes"].to_numpy().astype(np.int32)
        out = {k: np.full(len(arrays), -1, d) for k, d in (("shard", np.int32), ("offset", np.int64), ("nbytes", np.int32))}
        out["shard"][row[hit]], out["offset"][row[hit]], out["nbytes"][row[hit]] = shard[hit], offset[hit], nbytes[hit]
        if (out["shard"] < 0).any():
            raise ShardError(f"{self.root}: {int((out['shard'] < 0).sum())} crops of the manifest are not in the "
                             f"shards; re-run dfd-pack")
        order = np.lexsort((offset, shard))
        out["seq_shard"], out["seq_row"] = shard[order], row[order].astype(np.int64)
        return out


class _ByteReader:
    """Reads one crop's bytes: ``os.pread`` on local shards (descriptors opened lazily, per process), or an
    fsspec range read for URL roots."""

    def __init__(self, urls: list[str], remote: bool) -> None:
        self.urls, self.remote = urls, remote
        self._fds: dict[int, Any] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        return {"urls": self.urls, "remote": self.remote}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["urls"], state["remote"])

    def read(self, shard: int, offset: int, nbytes: int) -> bytes:
        if self._pid != os.getpid():  # forked DataLoader worker: its own descriptors
            self._fds, self._pid = {}, os.getpid()
        if self.remote:
            import fsspec

            fs, path = fsspec.core.url_to_fs(self.urls[shard])
            return fs.cat_file(path, start=int(offset), end=int(offset) + int(nbytes))
        fd = self._fds.get(shard)
        if fd is None:
            if len(self._fds) >= 256:
                os.close(self._fds.pop(next(iter(self._fds))))
            fd = self._fds[shard] = os.open(self.urls[shard], os.O_RDONLY)
        data = os.pread(fd, int(nbytes), int(offset))
        if len(data) != nbytes:
            raise OSError(f"shard {self.urls[shard]} is truncated at offset {offset}; re-run dfd-pack")
        return data

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            for fd in getattr(self, "_fds", {}).values():
                with contextlib.suppress(OSError):
                    os.close(fd)


def decode_rgb(data: bytes, where: str) -> np.ndarray:
    """Encoded crop bytes -> RGB uint8, decoded exactly as ``cv2.imread`` decodes the file."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot decode face crop {where}: corrupt shard (re-run dfd-pack)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class ShardFrameDataset(FrameDataset):
    """:class:`FrameDataset` whose crops are read from shards (random access): same rows, indices, samples."""

    def __init__(self, arrays: ManifestArrays, pipeline: Pipeline, store: ShardStore, locs: Mapping[str, np.ndarray],
                 name: str = "") -> None:
        super().__init__(arrays, pipeline, name)
        self.shard, self.offset, self.nbytes = locs["shard"], locs["offset"], locs["nbytes"]
        self.reader = _ByteReader(store.urls, store.remote)

    def read_image(self, i: int) -> np.ndarray:
        """The RGB crop of row ``i``."""
        data = self.reader.read(int(self.shard[i]), int(self.offset[i]), int(self.nbytes[i]))
        return decode_rgb(data, f"{self.arrays.paths[i].decode()} in {self.reader.urls[self.shard[i]]}")

    def load(self, i: int) -> dict:
        # FrameDataset.load reads a file: same sample with the image from the shard.
        a = self.arrays
        return {"image": self.read_image(i), "landmarks": a.landmarks[i], "label": int(a.label[i]),
                "video": int(a.video[i]), "index": int(i), "method": int(a.method[i])}


class ShardClipDataset(ClipDataset):
    """:class:`ClipDataset` whose frames are read from shards (random access)."""

    def __init__(self, arrays: ManifestArrays, pipeline: Pipeline, clip_len: int, store: ShardStore,
                 locs: Mapping[str, np.ndarray], name: str = "") -> None:
        super().__init__(arrays, pipeline, clip_len, name)
        self._frames = ShardFrameDataset(arrays, pipeline, store, locs, name)

    def __getitem__(self, v: int) -> dict:
        # ClipDataset.__getitem__ reads files: the same clip with images from the shard.
        rows = self.frame_rows(int(v))
        return self.clip_item(int(v), rows, [self._frames.read_image(r) for r in rows])


class ShardStreamDataset(IterableDataset):
    """Streams a split's shards in sequence: DDP- and worker-aware, deterministic for (seed, epoch).

    Args:
        arrays, pipeline, name: as for :class:`FrameDataset` (``index`` = the file store's row index).
        store, locs: the opened store and :meth:`ShardStore.locations` of ``arrays``.
        batch_size: the DataLoader's batch size: each worker gets whole batches, so ``len(loader)`` is exact.
        train: shuffle (shard order + buffer) and give every rank the same number of samples (the remainder,
            fewer than ``world_size`` crops, is left out that epoch; a different one each epoch).
        drop_last: training: drop the last partial batch when every rank has more than one batch (as the file
            store's loader does).
        shuffle_buffer: samples each worker shuffles through (training only).
    """

    def __init__(self, arrays: ManifestArrays, pipeline: Pipeline, store: ShardStore, locs: Mapping[str, np.ndarray],
                 batch_size: int, name: str = "", train: bool = False, seed: int = 0, drop_last: bool = False,
                 shuffle_buffer: int = 1000) -> None:
        self.frames = FrameDataset(arrays, pipeline, name)
        self.arrays, self.name = arrays, name
        self.urls = store.urls
        seq_shard, seq_row = locs["seq_shard"], locs["seq_row"]
        self.split_shards = np.unique(seq_shard)  # global shard ids of this split, in order
        # CSR over the split's shards: the dataset row of each sample in tar order (-1: not used, e.g. frames
        # beyond data.frames_per_video), and the number of used samples per shard.
        starts = np.searchsorted(seq_shard, self.split_shards)
        self.seq_starts = np.append(starts, len(seq_shard)).astype(np.int64)
        self.seq_row = seq_row
        self.used = np.add.reduceat((seq_row >= 0).astype(np.int64), starts) if len(starts) else np.zeros(0, np.int64)
        self.batch_size = max(int(batch_size), 1)
        self.train, self.seed, self.drop_last = bool(train), int(seed), bool(drop_last)
        self.shuffle_buffer = int(shuffle_buffer)
        self.rank, self.world_size = 0, 1
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # seen by persistent workers

    # -------------------------------------------------------------------------------- the file store's API
    @property
    def labels(self) -> np.ndarray:
        return self.arrays.label

    def set_epoch(self, epoch: int) -> None:
        """Permute shards and buffers anew for this epoch (the DataModule calls it every training epoch)."""
        self._epoch.fill_(int(epoch))

    def set_distributed(self, rank: int, world_size: int) -> None:
        """This process's DDP rank (the DataModule sets it from the trainer; tests set it directly)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.rank, self.world_size = int(rank), int(world_size)

    # -------------------------------------------------------------------------------- plan
    def _rank_range(self) -> tuple[int, int]:
        n = int(self.used.sum())
        if self.train:
            per = n // self.world_size
            lo, hi = self.rank * per, (self.rank + 1) * per
            # As the file store's loader: drop the last partial batch only if every rank keeps a full one.
            if self.drop_last and per > self.batch_size:
                hi = lo + per // self.batch_size * self.batch_size
        else:
            lo, hi = self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size
        return lo, hi

    def __len__(self) -> int:
        lo, hi = self._rank_range()
        return hi - lo

    def worker_range(self, worker: int, num_workers: int) -> tuple[int, int]:
        """This (rank, worker)'s samples, as positions in the epoch's sequence: whole batches per worker."""
        lo, hi = self._rank_range()
        batches = -(-(hi - lo) // self.batch_size)
        b0, b1 = worker * batches // num_workers, (worker + 1) * batches // num_workers
        return min(lo + b0 * self.batch_size, hi), min(lo + b1 * self.batch_size, hi)

    def shard_order(self, epoch: int) -> np.ndarray:
        """Positions into ``split_shards`` in this epoch's order (permuted with (seed, epoch) when training)."""
        k = len(self.split_shards)
        return np.random.default_rng([self.seed, epoch]).permutation(k) if self.train else np.arange(k)

    # -------------------------------------------------------------------------------- iteration
    def _rows(self, lo: int, hi: int, order: np.ndarray) -> Iterator[tuple[int, int, int]]:
        """(shard position, member ordinal, dataset row) of used samples lo..hi-1 of the epoch's sequence."""
        at = 0
        for k in order:
            n = int(self.used[k])
            if at + n > lo and at < hi:
                s, e = self.seq_starts[k], self.seq_starts[k + 1]
                rows = self.seq_row[s:e]
                used_pos = np.flatnonzero(rows >= 0)
                for j in used_pos[max(lo - at, 0): hi - at]:
                    yield int(k), int(j), int(rows[j])
            at += n
            if at >= hi:
                break

    def _samples(self, lo: int, hi: int, order: np.ndarray) -> Iterator[dict]:
        """Raw samples (encoded bytes + row) read sequentially, each wanted shard opened once."""
        from webdataset.tariterators import group_by_keys, tar_file_expander

        plan = list(self._rows(lo, hi, order))
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for k, j, row in plan:
            by_shard.setdefault(k, []).append((j, row))
        for k in dict.fromkeys(k for k, _, _ in plan):
            wanted = dict(by_shard[k])
            last = max(wanted)
            url = self.urls[int(self.split_shards[k])]
            stream = open_url(url)
            try:
                members = group_by_keys(tar_file_expander([{"url": url, "stream": stream}]))
                for j, sample in enumerate(members):
                    if j in wanted:
                        row = wanted[j]
                        key = sample_key(self.arrays.video_names[self.arrays.video[row]].decode(),
                                         int(self.arrays.frame[row]), int(self.arrays.track[row]))
                        if sample["__key__"] != key:
                            raise ShardError(f"{url}: member {j} is {sample['__key__']!r}, the index says {key!r}; "
                                             f"the shard does not match its manifest (re-run dfd-pack)")
                        ext = "png" if "png" in sample else "jpg"
                        yield {"row": row, "data": sample[ext], "url": url}
                    if j >= last:
                        break
            finally:
                stream.close()

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = int(self._epoch)
        lo, hi = self.worker_range(worker, workers)
        samples = self._samples(lo, hi, self.shard_order(epoch))
        if self.train and self.shuffle_buffer > 1:
            from webdataset.filters import _shuffle

            rng = random.Random(hash((self.seed, epoch, self.rank, worker)))
            samples = _shuffle(samples, bufsize=self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)
        a = self.arrays
        for s in samples:
            i = s["row"]
            raw = {"image": decode_rgb(s["data"], f"{a.paths[i].decode()} in {s['url']}"),
                   "landmarks": a.landmarks[i], "label": int(a.label[i]), "video": int(a.video[i]),
                   "index": int(i), "method": int(a.method[i])}
            yield self.frames.apply_transform(raw)


# ----------------------------------------------------------------------------------------------- DataModule glue
@dataclass
class ShardSettings:
    """``data.shards``: where a dataset's shards are and how to read them."""

    root: str | None = None  # None: <dataset cache>/shards; a URL may hold {name} (the dataset's name)
    mode: str = "auto"  # auto | random | stream
    shuffle_buffer: int = 1000
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ShardError(f"data.shards.mode={self.mode!r} is not valid; choose one of {', '.join(MODES)}")

    @classmethod
    def from_mapping(cls, values: Mapping | None) -> ShardSettings:
        values = dict(values or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ShardError(f"unknown data.shards settings {unknown}; valid: {sorted(known)}")
        return cls(**values)

    def root_for(self, name: str, manifest: Path) -> str:
        if self.root:
            return str(self.root).replace("{name}", name)
        return str(manifest.parent / "shards")

    def mode_for(self, root: str) -> str:
        return self.mode if self.mode != "auto" else ("stream" if is_url(root) else "random")


_STORES: dict[tuple[str, str | None], ShardStore] = {}


def open_store(root: str, cache_dir: str | None = None) -> ShardStore:
    """An opened store, reused across a DataModule's splits."""
    key = (root, cache_dir)
    if key not in _STORES:
        _STORES[key] = ShardStore(root, cache_dir)
    return _STORES[key]


def shard_arrays(settings: ShardSettings, name: str, manifest: Path, split: str) -> tuple[ShardStore, ManifestArrays]:
    """The store of a dataset and one split's rows read from the store's own manifest."""
    store = open_store(settings.root_for(name, manifest), settings.cache_dir)
    warning = None
    if not store.remote and not getattr(store, "_checked", False):
        store._checked = True
        warning = store.check_source(manifest)
    if warning:
        import warnings

        warnings.warn(warning, stacklevel=2)
    return store, ManifestArrays(store.manifest_path, splits=split)


def shard_dataset(settings: ShardSettings, store: ShardStore, arrays: ManifestArrays, split: str, pipeline: Pipeline,
                  name: str, clip_len: int | None, batch_size: int, train: bool, seed: int) -> Dataset:
    """The dataset of one split read from shards, in the configured mode."""
    locs = store.locations(arrays, split)
    mode = settings.mode_for(store.root)
    if mode == "random":
        if store.root.startswith("pipe:"):
            raise ShardError(f"data.shards.mode=random reads byte ranges; a pipe: root ({store.root}) can only be "
                             f"streamed: use data.shards.mode=stream or an fsspec URL (s3://, gs://, https://)")
        if clip_len:
            return ShardClipDataset(arrays, pipeline, clip_len, store, locs, name=name)
        return ShardFrameDataset(arrays, pipeline, store, locs, name=name)
    if clip_len:
        raise ShardError("clip models (ADDNet-3D) need random access to frames: use data.shards.mode=random "
                         "(local or mounted shards) or data.store=files")
    return ShardStreamDataset(arrays, pipeline, store, locs, batch_size=batch_size, name=name, train=train, seed=seed,
                              drop_last=train, shuffle_buffer=settings.shuffle_buffer)
