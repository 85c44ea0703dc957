"""Sharded extraction: N jobs (one SLURM array) extract one index into one cache; the last to finish merges.

Every shard works from the same *plan*: the index, each video's shard, chosen once. Units of work (a video, or
a whole archive: WildDeepfake's tar.gz files are streamed once and never split) are balanced by source bytes,
the work they cost to read and decode, largest first onto the least-loaded shard (ties by index position): the
same index and sizes give the same plan on every machine. The plan is written with an exclusive create, so
shards starting together agree on the first one written, even if sizes changed in between.

Layout, under ``<cache_dir>/shard-plans/<plan id>/`` (the id hashes the index and ``num_shards``)::

    plan.parquet          video_id -> shard (written once)
    done-<k>.json         shard k finished: a fresh token per run, its counts (written atomically, last)
    merge-<tokens>.lock   created exclusively by the one shard that merges this set of finished shards
    merged.json           what the last merge merged

A shard deletes its own ``done`` marker when it starts, writes it when it ends, then checks the others: the
shard that sees all N markers and wins the exclusive create of the lock named after their tokens merges. A
rerun shard makes a new token set, hence a new lock: its end merges again. Nothing else is shared: each
video's crops and part file belong to one shard (the part-file protocol of :mod:`dfd.extract`), so a
killed shard's rerun redoes only its own unfinished videos and touches no other shard's files. Every shard must
read the same index (``dfd-index`` before submitting): a shard that reads another one works in another plan.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import socket
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from dfd import atomic

PLANS = "shard-plans"  # not "shards": dfd-pack's default output folder


def plan_id(index: pd.DataFrame, num_shards: int) -> str:
    """16 hex digits naming an (index, num_shards) pair: every column and row of the index counts."""
    h = hashlib.sha1(f"{num_shards}\n{list(index.columns)}\n".encode())
    h.update(index.to_json(orient="values", default_handler=str).encode())
    return h.hexdigest()[:16]


def plan_dir(cache_dir: str | Path, index: pd.DataFrame, num_shards: int) -> Path:
    """The folder holding the plan and markers of this index split ``num_shards`` ways."""
    return Path(cache_dir) / PLANS / plan_id(index, num_shards)


def units(index: pd.DataFrame) -> list[list[int]]:
    """Row positions grouped into units of work, in index order: one per row, one per archive."""
    out: list[list[int]] = []
    archives: dict[str, list[int]] = {}
    for pos, (path, kind) in enumerate(zip(index["path"], index["kind"], strict=True)):
        if kind == "archive":
            if path not in archives:
                archives[path] = []
                out.append(archives[path])
            archives[path].append(pos)
        else:
            out.append([pos])
    return out


def balance(weights: list[int], num_shards: int) -> list[int]:
    """Shard of each unit: largest first onto the least-loaded shard (LPT, within 4/3 of the best makespan);
    ties go to the earlier unit and the lower shard, so the result depends on the weights alone."""
    order = sorted(range(len(weights)), key=lambda i: (-weights[i], i))
    heap = [(0, k) for k in range(num_shards)]
    shard = [0] * len(weights)
    for i in order:
        load, k = heapq.heappop(heap)
        shard[i] = k
        # Weight 0 (missing sources) still costs a little: spread them instead of piling them on one shard.
        heapq.heappush(heap, (load + max(int(weights[i]), 1), k))
    return shard


def make_plan(index: pd.DataFrame, sources: Mapping[str, Mapping[str, Any] | None], num_shards: int) -> pd.DataFrame:
    """``video_id, shard`` in index order, balancing source bytes across ``num_shards`` (archives whole)."""
    groups = units(index)
    ids = index["video_id"].tolist()
    weights = []
    for g in groups:
        # An archive's sequences share one fingerprint (the archive's): count its bytes once.
        fp = sources.get(ids[g[0]]) or {}
        weights.append(int(fp.get("size") or 0))
    assigned = balance(weights, num_shards)
    shard = [0] * len(index)
    for g, k in zip(groups, assigned, strict=True):
        for pos in g:
            shard[pos] = k
    return pd.DataFrame({"video_id": pd.Series(ids, dtype="string"), "shard": pd.Series(shard, dtype="int32")})


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Write ``path`` only if it does not exist, atomically: True if this call created it.

    A complete temporary file is hard-linked to the final name: ``link`` fails when the name exists, on local
    and network filesystems alike (NFS included, where ``O_EXCL`` was long unreliable), and readers never see
    a partial file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic.temp_sibling(path)
    try:
        tmp.write_bytes(data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def load_or_create_plan(
    cache_dir: str | Path, index: pd.DataFrame, sources: Mapping[str, Mapping[str, Any] | None], num_shards: int
) -> tuple[Path, pd.DataFrame]:
    """The plan every shard of this index shares: the one on disk, else a new one (exclusively created)."""
    folder = plan_dir(cache_dir, index, num_shards)
    path = folder / "plan.parquet"
    if not path.is_file():
        plan = make_plan(index, sources, num_shards)
        tmp = atomic.temp_sibling(folder / "plan.build")
        folder.mkdir(parents=True, exist_ok=True)
        try:
            plan.to_parquet(tmp, index=False)
            _create_exclusive(path, tmp.read_bytes())
        finally:
            tmp.unlink(missing_ok=True)
    return folder, read_plan(folder)


def read_plan(folder: str | Path) -> pd.DataFrame:
    """A plan written by :func:`load_or_create_plan`."""
    return pd.read_parquet(Path(folder) / "plan.parquet")


def done_path(folder: Path, shard: int) -> Path:
    return Path(folder) / f"done-{shard}.json"


def start_shard(folder: Path, shard: int) -> None:
    """This shard is running again: its earlier ``done`` marker no longer holds."""
    done_path(folder, shard).unlink(missing_ok=True)


def finish_shard(folder: Path, shard: int, num_shards: int, info: Mapping[str, Any]) -> dict[str, Any]:
    """Mark shard ``shard`` finished (atomic); return the marker."""
    marker = {"shard": shard, "num_shards": num_shards, "token": uuid.uuid4().hex, "host": socket.gethostname(),
              "pid": os.getpid(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **dict(info)}
    atomic.write_text(done_path(folder, shard), json.dumps(marker))
    return marker


def finished(folder: Path, num_shards: int) -> dict[int, dict[str, Any]]:
    """The markers of the finished shards."""
    out = {}
    for k in range(num_shards):
        try:
            out[k] = json.loads(done_path(folder, k).read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return out


def pending(folder: Path, num_shards: int) -> list[int]:
    """Shards that have not finished (or are running again)."""
    have = finished(folder, num_shards)
    return [k for k in range(num_shards) if k not in have]


def claim_merge(folder: Path, num_shards: int) -> bool:
    """True for exactly one caller once all shards are finished: the one that merges this set of runs.

    Every shard calls this after writing its marker, so the last to finish sees all N (two finishing together
    may both see them; the exclusive create of the lock picks one).
    """
    have = finished(folder, num_shards)
    if len(have) < num_shards:
        return False
    tokens = "".join(have[k]["token"] for k in range(num_shards))
    name = f"merge-{hashlib.sha1(tokens.encode()).hexdigest()[:16]}.lock"
    return _create_exclusive(folder / name, json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode())


def record_merge(folder: Path, num_shards: int, info: Mapping[str, Any]) -> None:
    """Write ``merged.json``: which shard runs the manifest was built from."""
    have = finished(folder, num_shards)
    atomic.write_text(folder / "merged.json", json.dumps({
        "merged": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "shards": {str(k): v.get("token") for k, v in have.items()},
        "pending": [k for k in range(num_shards) if k not in have], **dict(info)}))
