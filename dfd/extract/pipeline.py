"""Batched extraction: CPU workers decode and crop; one detection loop batches MTCNN across videos.

::

    worker processes (CPU, spawn)                    this process
    decode the video's sampled frames
    process_video -> crop_faces -> detect_video  --> requests (bounded) --> detection loop (a thread): the
      each MTCNN call becomes a request          <-- reply (per worker) <--   waiting frames of equal size, of
    crop, encode, write crops, finish_part                                    several videos, in one MTCNN call
      --> results --> progress, summary                                       (GPU with extract.device=cuda)

Each worker runs the per-video path's own code (:func:`dfd.extract.worker.process_video` and
:func:`dfd.faces.crops.crop_faces`), with the MTCNN inside its :class:`~dfd.faces.detect.FaceDetector` replaced
by a proxy that sends each (already rescaled) batch to the loop and waits for the answer. Scales, fallbacks,
face choice, crops and part files are therefore exactly the per-video path's; the loop only decides which frames
share an MTCNN call: frames of equal size (MTCNN stacks a batch into one tensor) from as many requests as are
waiting, up to ``extract.batch_size`` frames. Only detection-sized frames cross process boundaries, never
full-resolution ones, and a worker waiting for detections holds no CPU: with more workers than the detector can
keep up with, some are always decoding, so the detector never waits for frames.

Detections of a frame do not depend on which other frames share its MTCNN call, except for float rounding
(about 1e-5 px on the CPU); crops are cut from boxes rounded to whole pixels and match the per-video path's.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dfd.faces.contract import CropContract
from dfd.faces.detect import mtcnn_detect, windows_detect

POLL_S = 0.5


class DetectionStopped(BaseException):  # noqa: N818 (not an error of the video: must not be caught as one)
    """The detection loop stopped (an error in it, or the run ended): the worker's video is not finished.

    A ``BaseException`` on purpose: the per-video error handler records ``Exception``s as the video's failure,
    and a video must not be listed as failed because the detector went away.
    """


class RemoteMTCNN:
    """Stands in for ``facenet_pytorch.MTCNN`` in a worker: ``detect`` asks the detection loop."""

    def __init__(self, worker: int, kind: str, requests: Any, reply: Any) -> None:
        self.worker, self.kind, self.requests, self.reply = worker, kind, requests, reply
        self.seq = 0

    def detect(self, img: np.ndarray, landmarks: bool = False):
        boxes, probs, points = self._ask(img, None)
        return (boxes, probs, points) if landmarks else (boxes, probs)

    def detect_windows(self, img: np.ndarray, windows: list[tuple[int, int]], side: int):
        """The search near the face (:func:`dfd.faces.windowed.detect_in_windows`), done by the loop."""
        return self._ask(img, (tuple(windows), int(side)))

    def _ask(self, img: np.ndarray, windows: tuple | None):
        self.seq += 1
        batch = np.ascontiguousarray(img)
        if batch.ndim != 4:
            raise ValueError("the detection loop takes batches (n, h, w, 3)")
        self.requests.put((self.worker, self.seq, self.kind, batch, windows))
        while True:
            try:
                seq, out = self.reply.get(timeout=POLL_S)
                break
            except queue.Empty:
                if not _parent_alive():
                    raise DetectionStopped("the extraction process ended") from None
        if seq != self.seq or isinstance(out, str):
            raise DetectionStopped(out if isinstance(out, str) else f"reply {seq} to request {self.seq}")
        return out


def _parent_alive() -> bool:
    parent = mp.parent_process()
    return parent is None or parent.is_alive()


class DetectionLoop:
    """Serve detection requests from workers: group waiting frames by (detector, size), one MTCNN call each.

    ``detectors`` maps a request kind to an MTCNN (``frames``: the contract's; ``crops``: the one for images
    that are face crops). Figures for the summary are in :attr:`stats`.
    """

    def __init__(self, detectors: dict[str, Any], batch_size: int, requests: Any, replies: list[Any]) -> None:
        self.detectors, self.batch_size = detectors, max(1, int(batch_size))
        self.requests, self.replies = requests, replies
        self.stop = threading.Event()
        self.error: str | None = None
        self.stats = {"calls": 0, "frames": 0, "requests": 0, "multi_request_calls": 0, "busy_s": 0.0,
                      "wall_s": 0.0}

    def serve(self) -> None:
        """Run until :attr:`stop` is set (in a thread); an exception ends it and is kept in :attr:`error`."""
        t0 = time.perf_counter()
        try:
            while not self.stop.is_set():
                try:
                    first = self.requests.get(timeout=0.05)
                except queue.Empty:
                    continue
                waiting = [first]
                while True:  # everything already queued: the more frames per call, the better the batches
                    try:
                        waiting.append(self.requests.get_nowait())
                    except queue.Empty:
                        break
                self.run(waiting)
        except BaseException:
            self.error = traceback.format_exc(limit=3).strip().splitlines()[-1]
            raise
        finally:
            self.stats["wall_s"] += time.perf_counter() - t0

    def run(self, waiting: list[tuple]) -> None:
        """Answer these requests: same detector and frame size share calls of at most ``batch_size`` frames
        (a request is never split; one larger than the cap gets a call of its own)."""
        groups: dict[tuple, list] = defaultdict(list)
        # (worker, seq, kind, frames, windows): windows = (top-left corners, side) of a search near the face.
        waiting = [req if len(req) == 5 else (*req, None) for req in waiting]
        for req in waiting:
            # Whole frames by size; window searches by frame size and window side (their P-Net inputs match).
            groups[(req[2], req[3].shape[1:], None if req[4] is None else req[4][1])].append(req)
        for (kind, _, side), reqs in groups.items():
            call: list = []
            for req in reqs:
                if call and sum(len(r[3]) for r in call) + len(req[3]) > self.batch_size:
                    self._call(kind, call, side)
                    call = []
                call.append(req)
            self._call(kind, call, side)

    def _call(self, kind: str, reqs: list[tuple], side: int | None = None) -> None:
        t = time.perf_counter()
        try:
            batch = reqs[0][3] if len(reqs) == 1 else np.concatenate([r[3] for r in reqs])
            if side is None:
                boxes, probs, points = mtcnn_detect(self.detectors[kind], batch)
            else:
                windows = [w for r in reqs for w in r[4][0]]
                boxes, probs, points = windows_detect(self.detectors[kind], batch, windows, side)
        except Exception as e:
            for worker, seq, *_ in reqs:
                self.replies[worker].put((seq, f"detection failed: {type(e).__name__}: {e}"))
            raise
        self.stats["busy_s"] += time.perf_counter() - t
        self.stats["calls"] += 1
        self.stats["frames"] += len(batch)
        self.stats["requests"] += len(reqs)
        self.stats["multi_request_calls"] += int(len(reqs) > 1)
        at = 0
        for worker, seq, _, frames, _ in reqs:
            n = len(frames)
            self.replies[worker].put((seq, (boxes[at : at + n], probs[at : at + n], points[at : at + n])))
            at += n


def describe_stats(stats: dict[str, Any]) -> str:
    """One line for the summary: how full the MTCNN calls were and how busy the detector was."""
    calls = max(int(stats.get("calls", 0)), 1)
    wall = float(stats.get("wall_s", 0.0)) or float("nan")
    return (f"batched detection on {stats.get('device', '?')}: {stats.get('calls', 0)} MTCNN calls, "
            f"{stats.get('frames', 0) / calls:.1f} frames per call ({stats.get('multi_request_calls', 0)} calls "
            f"joined several requests), detector busy {100 * stats.get('busy_s', 0.0) / wall:.0f} % of the run, "
            f"{stats.get('workers', '?')} CPU workers")


# ----------------------------------------------------------------------------------------------- workers


def _worker(wid: int, root: Any, cache_dir: str, contract: CropContract, cfg: Any, tasks: Any, results: Any,
            requests: Any, reply: Any) -> None:
    """A worker process: tasks in, each video through the per-video code with the remote MTCNN, results out."""
    from dfd.extract import worker
    from dfd.workers import die_with_parent

    die_with_parent()  # a SIGKILLed dfd-extract leaves no worker behind
    worker.init_worker(contract, cfg, needs_detector=False)
    det = worker.worker_detector(contract, cfg)  # a CPU FaceDetector registered for process_video
    det.mtcnn = RemoteMTCNN(wid, "frames", requests, reply)
    det.for_crops().mtcnn = RemoteMTCNN(wid, "crops", requests, reply)
    while True:
        try:
            item = tasks.get(timeout=POLL_S)
        except queue.Empty:
            if not _parent_alive():
                return
            continue
        if item is None:
            return
        i, task = item
        try:
            results.put(("ok", i, worker.run_task(task, root, cache_dir, contract, cfg)))
        except BaseException as e:  # DetectionStopped, or a bug outside the per-video error handling
            results.put(("error", i, f"{type(e).__name__}: {e}"))
            return


def run_batched(tasks: list[list[dict[str, Any]]], root: Any, cache_dir: Path, contract: CropContract, cfg: Any,
                workers: int, stats: dict | None = None) -> Iterator[dict[str, Any]]:
    """Extract the tasks through the batched pipeline; yield each video's summary (as the per-video path does).

    ``stats`` (if given) receives the detection loop's figures.
    """
    from dfd.faces.detect import FaceDetector

    workers = max(1, int(workers))
    det = FaceDetector(contract, batch_size=cfg.batch_size, device=cfg.device)
    ctx = mp.get_context("spawn")  # as the per-video pool: forking after torch threads started can deadlock
    requests = ctx.Queue(maxsize=4 * workers)  # bounded; each worker has at most one request in flight
    replies = [ctx.Queue() for _ in range(workers)]
    todo, results = ctx.Queue(), ctx.Queue()
    loop = DetectionLoop({"frames": det.mtcnn, "crops": det.for_crops().mtcnn}, cfg.batch_size, requests, replies)
    server = threading.Thread(target=loop.serve, name="dfd-detection-loop", daemon=True)
    server.start()
    procs = [ctx.Process(target=_worker, args=(w, root, str(cache_dir), contract, cfg, todo, results, requests,
                                               replies[w]), daemon=True, name=f"dfd-extract-{w}")
             for w in range(workers)]
    for p in procs:
        p.start()
    pending = iter(enumerate(tasks))
    in_flight = 0

    def feed() -> None:  # a bounded number of tasks queued ahead: workers never starve, memory stays flat
        nonlocal in_flight, pending
        while in_flight < 2 * workers:
            item = next(pending, None)
            if item is None:
                return
            todo.put(item)
            in_flight += 1

    try:
        feed()
        while in_flight:
            try:
                kind, _, payload = results.get(timeout=POLL_S)
            except queue.Empty:
                if loop.error is not None:
                    raise RuntimeError(f"the detection loop failed: {loop.error}") from None
                dead = [p.name for p in procs if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"extraction worker(s) {', '.join(dead)} died (killed, or out of memory); "
                                       "rerun the same command to resume") from None
                continue
            if kind == "error":
                raise RuntimeError(f"an extraction worker stopped: {payload}")
            in_flight -= 1
            yield from payload
            feed()
    finally:
        for _ in procs:
            todo.put(None)
        loop.stop.set()
        server.join(timeout=5)
        while True:  # requests nobody will serve now: their workers stop instead of waiting
            try:
                worker, seq, _, _ = requests.get_nowait()
            except queue.Empty:
                break
            replies[worker].put((seq, "the extraction run stopped"))
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join()
        if stats is not None:
            stats.update(loop.stats, device=str(cfg.device), workers=workers)
