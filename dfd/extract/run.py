"""The extraction driver: a video index -> face crops + ``manifest.parquet`` + ``failures.parquet``.

It checks the cache against the run's settings and root, drops parts of videos that left the index, runs the
videos that are not current (one process per video, or the batched pipeline), and assembles the manifest;
sharded runs (``extract.shard/num_shards/merge``, :mod:`dfd.extract.jobs`) extract their part and the last
to finish merges. The resume rule and the cache layout are in :mod:`dfd.extract.parts`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import pandas as pd

from dfd import atomic
from dfd.extract import jobs
from dfd.extract.config import ExtractConfig, ExtractError
from dfd.extract.manifest import assemble, tally_parts
from dfd.extract.parts import (
    clean_temps,
    distortions,
    fingerprints,
    part_is_current,
    part_path,
    prune,
    read_part,
)
from dfd.extract.progress import track_progress
from dfd.extract.summary import ExtractSummary
from dfd.extract.verify import UNREADABLE_FILE, unreadable_videos
from dfd.extract.worker import run_task
from dfd.faces.contract import CropContract, extract_overrides
from dfd.store.cache import (
    LEGACY_FILE,
    NO_ROOM,
    RECORD_FILE,
    check_writable,
    make_record,
    moved_here,
    read_record,
    write_problem,
)
from dfd.store.media import nvdec_problem
from dfd.store.roots import PATH_ROOT_COLUMN, Roots
from dfd.store.schema import validate_index

# ----------------------------------------------------------------------------------------------- paths


# ----------------------------------------------------------------------------------------------- sources


# ----------------------------------------------------------------------------------------------- worker


# ----------------------------------------------------------------------------------------------- driver


def _tasks(index: pd.DataFrame, todo: set[str], sources: dict[str, dict | None]) -> list[list[dict[str, Any]]]:
    """Units of work in index order: one per video, one per archive (streamed once for all its rows)."""
    cols = ["video_id", "path", "kind"] + [c for c in ("member", "fake_segments", "distortion", PATH_ROOT_COLUMN)
                                           if c in index.columns]
    tasks: list[list[dict[str, Any]]] = []
    archives: dict[str, list[dict[str, Any]]] = {}
    for row in index[cols].to_dict("records"):
        if row["video_id"] not in todo:
            continue
        row["source"] = {"path": row["path"], **(sources.get(row["video_id"]) or {})}
        if row["kind"] == "archive":
            if row.get("member") is None or pd.isna(row.get("member")):
                raise ExtractError(
                    f"index row {row['video_id']!r} has kind 'archive' but no 'member' column value "
                    "(the sequence folder inside the archive)"
                )
            if row["path"] not in archives:
                archives[row["path"]] = []
                tasks.append(archives[row["path"]])
            archives[row["path"]].append(row)
        else:
            tasks.append([row])
    return tasks


def _check_cache(cache_dir: Path, record: dict[str, Any], overwrite: bool, roots: Roots | None = None) -> None:
    """Refuse (or, with overwrite, clear) a cache made with other settings or from another root (a root that
    holds the very files the cache was made from is the same dataset, moved: the record takes the new root)."""
    have = read_record(cache_dir)
    legacy = (cache_dir / LEGACY_FILE).is_file()
    problem = None
    manifest = cache_dir / "manifest.parquet"
    moved = (have is not None and have.get("root") != record["root"] and roots is not None and manifest.is_file()
             and moved_here(manifest, roots) is None)
    if have is None and legacy:
        problem = (f"the crop cache {cache_dir} was made by an older dfd and records no crop contract or dataset "
                   "root")
    elif have is not None and have.get("root") != record["root"] and not moved:
        problem = (f"the crop cache {cache_dir} holds crops of {have.get('root')}, not of {record['root']} "
                   "(the default dataset.cache_dir is distinct per root)")
    elif have is not None and (have.get("contract_id") != record["contract_id"] or have.get("storage") != record["storage"]):
        old = CropContract.from_mapping(have.get("contract"), where="cached contract")
        new = CropContract.from_mapping(record["contract"])
        diff = old.diff(new)
        cached = {k: a for k, (a, _) in diff.items()}  # the settings that reuse the cache as it is
        if have.get("storage") != record["storage"]:
            diff["storage"] = (have.get("storage"), record["storage"])
            stored = have.get("storage") or {}
            cached.update({k: v for k, v in stored.items() if v is not None and v != record["storage"].get(k)})
        problem = f"the crop cache {cache_dir} was made with other settings {diff} (cached, requested)"
        if cached:
            problem += f"; to use it as it is, request its settings ({extract_overrides(cached)})"
    if problem:
        if not overwrite:
            raise ExtractError(f"{problem}; use another dataset.cache_dir, or pass extract.overwrite=true to "
                               "delete and redo it")
        for sub in ("crops", "parts"):
            shutil.rmtree(cache_dir / sub, ignore_errors=True)
        for name in ("manifest.parquet", "failures.parquet", "failures.csv", LEGACY_FILE):
            (cache_dir / name).unlink(missing_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(cache_dir / RECORD_FILE, json.dumps(record, indent=2, sort_keys=True))


def default_workers(batched: bool = False) -> int:
    """Worker processes by default: min(4, CPUs available to this process), since MTCNN is CPU-bound and each
    worker holds its own copy; in the batched pipeline (no MTCNN in the workers: they decode and crop), every
    CPU, so that some are always decoding while others wait for detections."""
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, cpus if batched else min(4, cpus))


def extract_faces(
    index_df: pd.DataFrame,
    root: str | Path | Roots,
    cache_dir: str | Path,
    cfg: ExtractConfig | None = None,
    faces_are_cropped: bool = False,
    progress: bool = True,
    dataset: str = "",
) -> ExtractSummary:
    """Turn a video index into face crops + ``manifest.parquet`` + ``failures.parquet`` under ``cache_dir``.

    Resumable and incremental: videos finished by an earlier run from the same source file (fingerprint)
    with the same contract are reused; changed sources are redone; videos that left the index are removed.
    Bad inputs (missing, empty, corrupt, faceless) are listed in the failures table; the call itself succeeds.
    ``root``: the dataset root, or all its named roots (:class:`dfd.store.roots.Roots`: index paths are relative
    to the one each row names in ``path_root``).

    With ``cfg.num_shards > 1`` this is one shard's job (``cfg.shard``): it extracts its part of the videos
    (:mod:`dfd.extract.jobs`) and, if it is the last to finish, merges; ``cfg.merge`` merges on request. The
    files written are the ones a single run writes.
    """
    cfg = cfg or ExtractConfig()
    contract = cfg.resolve(faces_are_cropped)
    if contract.needs_detector:
        _check_device(cfg.device)  # a device this machine lacks is refused up front, even with nothing left to do
    _check_decoder(cfg)
    start = time.perf_counter()
    index = validate_index(index_df, where="extract index")
    root, cache_dir = Roots.of(root), Path(cache_dir)
    if cfg.sharded and cfg.overwrite:
        raise ExtractError(
            "extract.overwrite=true cannot run sharded: each shard would delete the crops other shards are "
            f"writing; delete {cache_dir} (or use another dataset.cache_dir) and start the shards again"
        )
    check_writable(cache_dir)  # a read-only or full cache: one line before any work
    try:
        # One run per cache at a time (shards of one array share it); the kernel frees the lock of a killed run.
        with atomic.held_lock(cache_dir / LOCK_FILE, shared=cfg.sharded or cfg.merge, about=_whoami()):
            record = make_record(dataset, root, contract, cfg.storage())
            _check_cache(cache_dir, record, cfg.overwrite, root)
            (cache_dir / "parts").mkdir(parents=True, exist_ok=True)
            if cfg.sharded or cfg.merge:
                return _extract_shard(index, root, cache_dir, record, contract, cfg, progress, start)
            clean_temps(cache_dir)
            removed = prune(cache_dir, set(index["video_id"].tolist()))
            run = _extract_videos(index, root, cache_dir, contract, cfg, progress)
            summary = assemble(index, cache_dir, record)
            (cache_dir / UNREADABLE_FILE).unlink(missing_ok=True)  # their videos were redone
            return run.fill(summary, contract, start, removed)
    except atomic.LockHeld as e:
        raise ExtractError(f"another dfd-extract is writing the crop cache {cache_dir} ({_holder(e.holder)}); wait "
                           "for it to finish (this command then resumes from its work), or use another "
                           "dataset.cache_dir") from None
    except OSError as e:
        if e.errno in NO_ROOM:  # full or read-only mid-run (a worker's write, or the manifest's)
            raise write_problem(cache_dir, e) from None
        raise


LOCK_FILE = ".extract.lock"


def _whoami() -> dict[str, Any]:
    import os
    import socket
    import sys

    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv[:1] + [a for a in sys.argv[1:] if not a.startswith("hydra.")])[:300]}


def _holder(info: dict[str, Any]) -> str:
    from dfd.workers import alive

    if not info.get("pid") or (info.get("host") == _whoami()["host"] and not alive(int(info["pid"]))):
        return "the shards of a sharded run"  # shared holders write nothing; what is there is an older holder's
    return f"pid {info['pid']} on {info.get('host', '?')}, since {info.get('since', '?')}: {info.get('command', '')}"


@dataclass
class _Run:
    """What one extraction pass over some videos did (before the manifest is assembled)."""

    processed: list[str] = field(default_factory=list)
    resumed: int = 0
    stale: int = 0
    pipeline: dict = field(default_factory=dict)

    def fill(self, summary: ExtractSummary, contract: CropContract, start: float, removed: int = 0) -> ExtractSummary:
        summary.videos_resumed = self.resumed
        summary.videos_stale = self.stale
        summary.videos_removed = removed
        summary.processed = self.processed
        summary.pipeline = self.pipeline
        summary.contract = contract
        summary.seconds = time.perf_counter() - start
        return summary


def _extract_videos(index: pd.DataFrame, root: Roots, cache_dir: Path, contract: CropContract, cfg: ExtractConfig,
                    progress: bool, what: str = "extracting faces") -> _Run:
    """Extract the index's videos that are not current in the cache (the resume rule of the module docstring)."""
    ids = index["video_id"].tolist()
    sources = fingerprints(index, root, cfg.hash)
    cid = contract.fingerprint()
    distortion = distortions(index)
    done, stale = set(), set()
    redo = unreadable_videos(cache_dir)  # crops --verify could not decode: their videos are extracted again
    for v in ids:
        p = part_path(cache_dir, v)
        if p.is_file():
            (done if part_is_current(read_part(p), cid, sources[v], distortion.get(v, "")) and v not in redo
             else stale).add(v)
    todo = set(ids) - done
    tasks = _tasks(index, todo, sources)
    run = _Run(resumed=len(done), stale=len(stale))
    items = _execute(tasks, root, cache_dir, contract, cfg, run.pipeline)
    for item in track_progress(items, total=len(ids), completed=len(done), enabled=progress, what=what):
        run.processed.append(item["video_id"])
    return run


def _extract_shard(index: pd.DataFrame, root: Roots, cache_dir: Path, record: dict[str, Any], contract: CropContract,
                   cfg: ExtractConfig, progress: bool, start: float) -> ExtractSummary:
    """One shard's job (its videos, then the merge if it finishes last), or the merge alone."""
    n = cfg.num_shards
    folder = jobs.plan_dir(cache_dir, index, n)
    if cfg.shard is None:  # extract.merge=true alone
        if n > 1 and not (folder / "plan.parquet").is_file():
            raise ExtractError(
                f"nothing to merge: no shards of this index split {n} ways in {cache_dir / jobs.PLANS} (run "
                "them first with extract.shard=<k>, or check extract.num_shards; a changed index makes a new plan)"
            )
        summary, run, removed = _merge(index, cache_dir, record, folder, n, _Run())
        return run.fill(summary, contract, start, removed)

    if not (folder / "plan.parquet").is_file():
        sizes = fingerprints(index, root, content=False)  # the plan balances bytes; content hashes not needed
        folder, plan = jobs.load_or_create_plan(cache_dir, index, sizes, n)
    else:
        plan = jobs.read_plan(folder)
    shard_of = dict(zip(plan["video_id"].astype(str), plan["shard"].astype(int), strict=True))
    mine = index[[shard_of[v] == cfg.shard for v in index["video_id"]]]
    jobs.start_shard(folder, cfg.shard)
    run = _extract_videos(mine, root, cache_dir, contract, cfg, progress,
                          what=f"extracting faces (shard {cfg.shard}/{n})")
    tally = tally_parts(mine, cache_dir)
    jobs.finish_shard(folder, cfg.shard, n, {
        "videos": len(mine), "extracted": len(run.processed), "reused": run.resumed, "stale": run.stale,
        "failed": tally.videos_failed, "crops": tally.frames_saved,
        "seconds": round(time.perf_counter() - start, 3)})
    if cfg.merge or jobs.claim_merge(folder, n):
        summary, run, removed = _merge(index, cache_dir, record, folder, n, run)
        return run.fill(summary, contract, start, removed)
    waiting = jobs.pending(folder, n)
    tally.shard_status = (
        f"shard {cfg.shard} of {n} done ({len(mine)} of {len(index)} videos, plan {folder.name}); waiting for "
        f"shard(s) {', '.join(map(str, waiting))}: the last one to finish writes the manifest (merge by hand: "
        f"the same command with extract.merge=true)"
    )
    return run.fill(tally, contract, start)


def _merge(index: pd.DataFrame, cache_dir: Path, record: dict[str, Any], folder: Path, n: int,
           run: _Run) -> tuple[ExtractSummary, _Run, int]:
    """Manifest + failures (+ the cache record in the manifest) from every shard's parts: what one run writes."""
    waiting = jobs.pending(folder, n) if n > 1 else []
    if not waiting:
        clean_temps(cache_dir)  # no shard is writing any more
    removed = prune(cache_dir, set(index["video_id"].tolist()))
    summary = assemble(index, cache_dir, record)
    if not waiting:
        (cache_dir / UNREADABLE_FILE).unlink(missing_ok=True)  # every shard redid its videos of it
    if n > 1:
        markers = jobs.finished(folder, n)
        run = _Run(processed=run.processed, resumed=sum(m.get("reused", 0) for m in markers.values()),
                   stale=sum(m.get("stale", 0) for m in markers.values()), pipeline=run.pipeline)
        jobs.record_merge(folder, n, {"videos": summary.videos, "crops": summary.frames_saved,
                                          "failed": summary.videos_failed})
        summary.shard_status = f"merged {n - len(waiting)} of {n} shards (plan {folder.name})"
        summary.merged = True
        if waiting:
            summary.warnings.append(
                f"shard(s) {', '.join(map(str, waiting))} have not finished: their unfinished videos are listed as "
                "not processed; run them (extract.shard=<k>) and the last to finish merges again"
            )
    return summary, run, removed


def _check_decoder(cfg: ExtractConfig) -> None:
    """``extract.decoder=nvdec`` where NVIDIA's decoder cannot run: one line now, not one failure per video."""
    if cfg.decoder == "nvdec":
        problem = nvdec_problem(cfg.device)
        if problem:
            raise ExtractError(f"extract.decoder=nvdec cannot decode here: {problem}; use extract.decoder=cpu (or auto)")


def _check_device(device: str) -> None:
    """One line instead of a CUDA traceback from inside MTCNN."""
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ExtractError(f"extract.device={device} but no CUDA GPU is visible here (torch.cuda.is_available() "
                               "is False); use extract.device=cpu, or run on a GPU node")


def _run_threads(tasks: list[list[dict[str, Any]]], root: Roots, cache_dir: Path, contract: CropContract,
                 cfg: ExtractConfig, workers: int) -> Iterator[dict[str, Any]]:
    """The per-video path with ``workers`` threads of this process (``extract.parallel``): one thread per core,
    so torch and OpenCV run single-threaded meanwhile; the threads share one detector (inference only)."""
    import torch

    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dfd-extract") as pool:
            yield from _results([pool.submit(run_task, t, root, str(cache_dir), contract, cfg) for t in tasks])
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def _execute(
    tasks: list[list[dict[str, Any]]],
    root: Roots,
    cache_dir: Path,
    contract: CropContract,
    cfg: ExtractConfig,
    stats: dict | None = None,
) -> Iterator[dict[str, Any]]:
    """Run the tasks (per video, or through the batched detection pipeline); yield each video's summary."""
    if not tasks:
        return
    if cfg.batched() and contract.needs_detector:
        from dfd.extract.pipeline import run_batched

        workers = min(cfg.workers or default_workers(batched=True), len(tasks))
        yield from run_batched(tasks, root, cache_dir, contract, cfg, workers, stats)
        return
    workers = min(cfg.workers or default_workers(), max(len(tasks), 1))
    if workers <= 1:
        for task in tasks:
            yield from run_task(task, root, str(cache_dir), contract, cfg)
        return
    if cfg.threads(workers):
        yield from _run_threads(tasks, root, cache_dir, contract, cfg, workers)
        return
    import multiprocessing as mp
    import os

    from dfd.workers import start_worker

    # spawn, not fork: forking a process that has touched torch's thread pools can deadlock. Workers die with
    # this process (a SIGKILLed dfd-extract leaves none behind, dfd.workers).
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=mp.get_context("spawn"),
        initializer=start_worker,
        initargs=(os.getpid(), "dfd.extract.worker:init_worker", contract, cfg, contract.needs_detector),
    ) as pool:
        yield from _results([pool.submit(run_task, t, root, str(cache_dir), contract, cfg) for t in tasks])


def _results(futures: list) -> Iterator[dict[str, Any]]:
    """The part records of the tasks as they finish; on an error (or a stop) the tasks not started are cancelled."""
    try:
        for fut in as_completed(futures):
            yield from fut.result()
    except BaseException:
        for f in futures:
            f.cancel()
        raise


# ----------------------------------------------------------------------------------------------- verify


