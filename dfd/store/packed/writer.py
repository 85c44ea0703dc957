"""``dfd-pack``: a crop cache -> size-capped tar shards per split, resumable after a kill, byte-identical to an
uninterrupted run (fixed member times, deterministic order).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dfd import atomic
from dfd.store.cache import NO_ROOM, check_writable, manifest_record, write_problem
from dfd.store.packed.format import (
    BLOCK,
    FORMAT,
    INDEX_NAME,
    LOCATION_COLUMNS,
    META_NAME,
    MTIME,
    ShardError,
    parse_size,
    sample_key,
    source_info,
)
from dfd.store.roots import CROP_ROOT_COLUMN, crop_roots
from dfd.store.schema import SPLITS, SchemaError


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
        self.tmp = atomic.temp_sibling(final)
        self._file = open(self.tmp, "wb")  # noqa: SIM115 - closed in _close
        self._hashing = _HashingFile(self._file)
        # PAX: long video ids stay valid member names (USTAR stops at 255 characters).
        self._tw = TarWriter(self._hashing, encoder=False, mtime=MTIME, format="PAX_FORMAT")
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
        self._rows["offset"].append(tar.offset - -(-len(image) // BLOCK) * BLOCK)
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
        if self.shard_bytes < 4 * BLOCK:
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
        atomic.write_table(table, self.state / f"{info.split}-{info.number:06d}.parquet")

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
        order = sorted(range(len(shards)), key=lambda i: (split_rank(shards[i].split), shards[i].number))
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
        atomic.write_table(table, self.out / INDEX_NAME)
        # No wall-clock time: a pack resumed after a kill writes this file byte for byte as an uninterrupted one.
        meta = {
            "format": FORMAT,
            "source": source or source_info(Path(manifest)),
            "shard_bytes": self.shard_bytes,
            "samples": table.num_rows,
            "missing": missing.num_rows,
            "splits": {s: int(sum(x.samples for x in shards if x.split == s)) for s in dict.fromkeys(x.split for x in shards)},
            "shards": [x.__dict__ for x in shards],
        }
        atomic.write_bytes(self.out / META_NAME, json.dumps(meta, indent=1).encode())
        shutil.rmtree(self.state, ignore_errors=True)
        return self.out / META_NAME, missing


def split_rank(split: str) -> tuple[int, str]:
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
               overwrite: bool = False, progress: bool = False,
               roots: Mapping[str, str | Path | None] | None = None, cache_dir: str | Path | None = None
               ) -> PackSummary:
    """Convert a crop cache (``manifest.parquet`` + ``crops/``) into a shard store; resumable and atomic.

    ``roots``: the dataset's folders by config key, for crops read in place (``crop_root``; default: the
    folders the manifest recorded); ``cache_dir``: the dataset's cache (the store records the manifest relative
    to it). One pack per store at a time; a read-only or full folder stops in one line.

    Each split's rows are written in (video_id, frame, track) order, the order training and evaluation index them.
    Rerun after a kill: finished shards are kept and the rest is written exactly as an uninterrupted run would.
    """
    t0 = time.perf_counter()
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"frame manifest not found: {manifest} (extract faces first with `dfd-extract`)")
    out = Path(out) if out is not None else manifest.parent / "shards"
    check_writable(out.parent, "pack.out")
    try:
        with atomic.held_lock(out.parent / f".{out.name}.pack.lock", about={"pid": os.getpid()}):
            return _pack(manifest, out, shard_size, overwrite, progress, roots, cache_dir, t0)
    except atomic.LockHeld:
        raise ShardError(f"another dfd-pack is writing {out}; wait for it to finish, or set pack.out=<another "
                         "folder>") from None
    except OSError as e:
        if e.errno in NO_ROOM:
            raise write_problem(out, e, "pack.out") from None
        raise


def _pack(manifest: Path, out: Path, shard_size: int | str, overwrite: bool, progress: bool,
          roots: Mapping[str, str | Path | None] | None, cache_dir: str | Path | None, t0: float) -> PackSummary:
    src = source_info(manifest, cache_dir)
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
    for stale in out.glob("*/.shard-*.tar.*.tmp"):  # a shard being written when an earlier run was killed
        stale.unlink(missing_ok=True)
    atomic.write_bytes(plan_path, json.dumps(plan).encode())

    table = pq.read_table(manifest, columns=None)
    for col in ("video_id", "frame", "crop_path", "split", "label"):
        if col not in table.column_names:
            raise SchemaError(f"{manifest}: missing column {col!r}; re-run dfd-extract to rewrite the manifest")
    where = crop_roots(manifest, roots, (manifest_record(manifest) or {}).get("roots"))
    has_root = CROP_ROOT_COLUMN in table.column_names
    done = _finished_parts(state)
    summary.resumed_shards = sum(len(v) for v in done.values())
    writer = PackWriter(out, size, first_shard={s: len(v) for s, v in done.items()})
    splits = sorted(set(table["split"].to_pylist()), key=split_rank)
    bar = _bar(progress, table.num_rows)
    for split in splits:
        rows = table.filter(pc.equal(table["split"].cast(pa.string()), split)).sort_by(
            [("video_id", "ascending"), ("frame", "ascending")]
            + ([("track", "ascending")] if "track" in table.column_names else []))
        start = max((p for p in done.get(split, {}).values()), default=-1) + 1
        for pos in range(start, rows.num_rows, 2048):
            for k, row in enumerate(rows.slice(pos, 2048).to_pylist()):
                path = where.resolve(row["crop_path"], row.get(CROP_ROOT_COLUMN) if has_root else "")
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
