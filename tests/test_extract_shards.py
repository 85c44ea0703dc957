"""Sharded extraction (a SLURM array of shards, merged by the last) and the batched detection pipeline: both
write exactly what one process writes, with real MTCNN and decord."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dfd.extract import jobs as sharding
from dfd.extract.config import ExtractConfig, ExtractError
from dfd.extract.parts import crop_dir, part_path
from dfd.extract.run import extract_faces
from tests.fake_slurm import write_fake_slurm
from tests.media import write_corrupt_video, write_face_video
from tests.test_extract import _cli_env, _index

SETTINGS = {"frames": 5, "size": 48, "workers": 1}
CLI = [f"extract.{k}={v}" for k, v in SETTINGS.items()] + ["progress=false"]


def _videos(tmp_path: Path, n: int = 6) -> tuple[Path, pd.DataFrame]:
    root = tmp_path / "root"
    for i in range(n):
        write_face_video(root / f"{i}.mp4", n_frames=3 + 2 * i, size=140, canvas=160)
    write_face_video(root / "noface.mp4", n_frames=4, canvas=96, faceless=True)
    write_corrupt_video(root / "corrupt.mp4")
    rows = [(f"v{i}", i % 2, f"{i}.mp4", "video") for i in range(n)]
    rows += [("noface", 0, "noface.mp4", "video"), ("corrupt", 1, "corrupt.mp4", "video")]
    return root, _index(rows, scene=[f"s{i}" for i in range(len(rows))])


def _single(index: pd.DataFrame, root: Path, cache: Path, **extra) -> None:
    """The one-process reference, with the thread count the CLI runs get (OMP_NUM_THREADS=1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        extract_faces(index, root, cache, ExtractConfig.create(**SETTINGS, **extra), progress=False, dataset="tiny")
    finally:
        torch.set_num_threads(threads)


def _shard(index: pd.DataFrame, root: Path, cache: Path, shard: int | None, num_shards: int = 3, **extra):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = ExtractConfig.create(**SETTINGS, shard=shard, num_shards=num_shards, **extra)
        return extract_faces(index, root, cache, cfg, progress=False, dataset="tiny")
    finally:
        torch.set_num_threads(threads)


def _files(cache: Path) -> dict[str, tuple[int, bytes]]:
    """Every crop and part file: relative path -> (mtime_ns, bytes)."""
    out = {}
    for sub in ("crops", "parts"):
        for p in (cache / sub).rglob("*"):
            if p.is_file():
                out[p.relative_to(cache).as_posix()] = (p.stat().st_mtime_ns, p.read_bytes())
    return out


def _assert_same_cache(a: Path, b: Path) -> None:
    """Manifest, failures and cache record byte for byte; the same crop files with the same bytes."""
    for name in ("manifest.parquet", "failures.parquet", "failures.csv", "cache.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    crops_a = {k: v[1] for k, v in _files(a).items() if k.startswith("crops/")}
    crops_b = {k: v[1] for k, v in _files(b).items() if k.startswith("crops/")}
    assert crops_a == crops_b
    assert sorted(crops_a) == sorted(pd.read_parquet(a / "manifest.parquet")["crop_path"])


def test_plan_balances_bytes_and_keeps_archives_whole():
    index = _index(
        [(f"v{i}", 0, f"{i}.mp4", "video") for i in range(7)]
        + [(f"a/{k}", 1, "big.tar.gz", "archive") for k in range(4)]
        + [("gone", 0, "gone.mp4", "video")],
        member=[None] * 7 + [f"./{k}" for k in range(4)] + [None],
    )
    sizes = {f"v{i}": {"size": s} for i, s in enumerate([90, 10, 40, 60, 30, 20, 50])}
    sizes |= {f"a/{k}": {"size": 120} for k in range(4)}  # one archive: its bytes count once
    sizes["gone"] = None  # a missing source still gets a shard (it is listed as a failure there)
    plan = sharding.make_plan(index, sizes, 3)
    assert plan["video_id"].tolist() == index["video_id"].tolist()
    shard = dict(zip(plan["video_id"], plan["shard"], strict=True))
    assert len({shard[f"a/{k}"] for k in range(4)}) == 1  # never split
    loads = [0, 0, 0]
    for v, fp in sizes.items():
        if not v.startswith("a/"):
            loads[shard[v]] += (fp or {}).get("size", 0)
    loads[shard["a/0"]] += 120
    assert sorted(loads) == [140, 140, 140]  # 420 bytes of work in three equal parts (by count: 4+4+4 rows)
    pd.testing.assert_frame_equal(plan, sharding.make_plan(index, sizes, 3))  # deterministic
    assert sharding.plan_id(index, 3) != sharding.plan_id(index, 4)
    assert sharding.plan_id(index, 3) != sharding.plan_id(index.iloc[:-1], 3)


def test_bad_shard_settings_are_refused_in_one_line():
    with pytest.raises(ExtractError, match=r"extract.shard='range\(0,4\)'"):
        ExtractConfig.create(num_shards=4)
    with pytest.raises(ExtractError, match=r"one of 0..3"):
        ExtractConfig.create(shard=4, num_shards=4)
    with pytest.raises(ExtractError, match="pipeline"):
        ExtractConfig.create(pipeline="gpu")


def test_run_time_mistakes_are_one_line_errors(tmp_path):
    root = tmp_path / "root"
    write_face_video(root / "a.mp4", n_frames=3, size=96, canvas=112)
    index = _index([("a", 0, "a.mp4", "video")])

    def run(**cfg):
        extract_faces(index, root, tmp_path / "cache", ExtractConfig.create(frames=2, **cfg), progress=False)

    if not torch.cuda.is_available():
        with pytest.raises(ExtractError, match="no CUDA GPU is visible"):
            run(device="cuda")
    with pytest.raises(ExtractError, match="nothing to merge"):
        run(num_shards=3, merge=True)
    with pytest.raises(ExtractError, match="cannot run sharded"):
        run(shard=0, num_shards=2, overwrite=True)
    assert not (tmp_path / "cache" / "parts").is_dir() or not any((tmp_path / "cache" / "parts").iterdir())


@pytest.mark.slow
def test_slurm_array_of_three_shards_writes_what_one_run_writes(tmp_path):
    root, index = _videos(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    index.to_parquet(cache / "index.parquet")
    env = _cli_env(tmp_path) | write_fake_slurm(tmp_path / "bin", tmp_path / "spool")
    cmd = [str(Path(sys.executable).parent / "dfd-extract"), "-m", "hydra/launcher=slurm", "dataset=tiny",
           f"dataset.root={root}", f"dataset.cache_dir={cache}", *CLI, "extract.shard=range(0,3)",
           "extract.num_shards=3"]
    r = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]

    # One sbatch call: a job array of the three shards; each ran from its pickle, logging under the cache.
    jobs = list((tmp_path / "spool").glob("*.job"))
    assert len(jobs) == 1 and "#SBATCH --array=0-2%" in jobs[0].read_text()
    states = lambda: sorted(p.read_text() for p in (tmp_path / "spool").glob("*.state"))  # noqa: E731
    deadline = time.time() + 60  # the results come back before the job processes exit
    while states() != ["COMPLETED"] * 3 and time.time() < deadline:
        time.sleep(0.1)
    assert states() == ["COMPLETED"] * 3
    (sweep,) = (cache / "logs").iterdir()
    assert {p.name for p in sweep.iterdir()} >= {"0", "1", "2", ".submitit"}
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.out"))
    assert logs.count("merged 3 of 3 shards") == 1 and logs.count("waiting for shard") == 2

    _single(index, root, tmp_path / "single")
    _assert_same_cache(cache, tmp_path / "single")
    (plan,) = (cache / sharding.PLANS).iterdir()
    assert len(list(plan.glob("merge-*.lock"))) == 1 and (plan / "merged.json").is_file()
    assert sorted(json.loads((plan / "merged.json").read_text())["shards"]) == ["0", "1", "2"]

    # The merge command rewrites the same files.
    before = (cache / "manifest.parquet").read_bytes()
    (cache / "manifest.parquet").unlink()
    summary = _shard(index, root, cache, shard=None, merge=True)
    assert (cache / "manifest.parquet").read_bytes() == before and summary.videos_failed == 2


@pytest.mark.slow
def test_killed_shard_rerun_changes_nothing_else(tmp_path):
    root, index = _videos(tmp_path, n=8)
    cache = tmp_path / "cache"

    # Shard 1 in its own process, killed after its first video; no merge can happen without it.
    script = (
        "import sys, pandas as pd, torch; torch.set_num_threads(1)\n"
        "from dfd.extract.config import ExtractConfig\nfrom dfd.extract.run import extract_faces\n"
        f"extract_faces(pd.read_parquet(sys.argv[1]), {str(root)!r}, {str(cache)!r}, "
        f"ExtractConfig.create(**{SETTINGS!r}, shard=1, num_shards=3), progress=False, dataset='tiny')\n"
    )
    index.to_parquet(tmp_path / "index.parquet")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "index.parquet")], cwd=tmp_path,
                            env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if (cache / "parts").is_dir() and len(list((cache / "parts").glob("*.json"))) >= 1:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "shard 1 finished before it could be killed"
    (folder,) = (cache / sharding.PLANS).iterdir()
    shard_of = dict(zip(*(sharding.read_plan(folder)[c] for c in ("video_id", "shard")), strict=True))
    killed = [v for v in index["video_id"] if shard_of[v] == 1]
    assert len(killed) >= 2
    for k in (0, 2):
        s = _shard(index, root, cache, shard=k)
        assert s.manifest_path is None and "waiting for shard(s) 1" in str(s)
    assert not (cache / "manifest.parquet").exists() and sharding.pending(folder, 3) == [1]
    others = _files(cache)

    s = _shard(index, root, cache, shard=1)  # the rerun: resumes its own videos, then merges (it ends last)
    assert s.videos_resumed >= 1 and "merged 3 of 3 shards" in str(s)
    after = _files(cache)
    mine = {part_path(cache, v).relative_to(cache).as_posix() for v in killed}
    mine_crops = {crop_dir(cache, v).relative_to(cache).as_posix() for v in killed}
    untouched = {k: v for k, v in others.items() if k not in mine and k.rsplit("/", 1)[0] not in mine_crops}
    assert untouched and all(after[k] == v for k, v in untouched.items())  # same bytes, not even rewritten
    _single(index, root, tmp_path / "single")
    _assert_same_cache(cache, tmp_path / "single")


def test_detection_loop_batches_same_size_frames_of_several_videos():
    from dfd.extract.pipeline import DetectionLoop
    from dfd.faces.detect import FaceDetector
    from tests.media import face_image

    det = FaceDetector(detect_size=None, face_px=0)
    a = np.stack([face_image(128)] * 3)
    b = np.stack([np.ascontiguousarray(face_image(128)[:, ::-1])] * 2)
    c = np.stack([face_image(96)])
    requests: queue.Queue = queue.Queue()
    replies = [queue.Queue() for _ in range(3)]
    loop = DetectionLoop({"frames": det.mtcnn}, batch_size=8, requests=requests, replies=replies)
    loop.run([(0, 1, "frames", a), (1, 7, "frames", b), (2, 1, "frames", c)])
    # a and b (128 px, two videos) share one MTCNN call; c (96 px) cannot.
    assert loop.stats["calls"] == 2 and loop.stats["multi_request_calls"] == 1 and loop.stats["frames"] == 6
    for w, batch in ((0, a), (1, b), (2, c)):
        seq, (boxes, probs, points) = replies[w].get_nowait()
        alone = det.mtcnn.detect(batch, landmarks=True)
        assert seq == (7 if w == 1 else 1) and len(boxes) == len(batch)
        for got, ref in zip(boxes, alone[0], strict=True):
            np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ref, np.float32), atol=1e-3)
    loop.batch_size = 4  # a full call never takes more: a (3) and b (2) now go separately
    loop.run([(0, 2, "frames", a), (1, 8, "frames", b)])
    assert loop.stats["calls"] == 4


@pytest.mark.slow
def test_batched_pipeline_makes_the_per_video_crops(tmp_path):
    root, index = _videos(tmp_path, n=4)
    _single(index, root, tmp_path / "video")
    cfg = ExtractConfig.create(**{**SETTINGS, "workers": 2}, pipeline="batched", batch_size=64)
    s = extract_faces(index, root, tmp_path / "batched", cfg, progress=False, dataset="tiny")
    assert s.pipeline["calls"] >= 4 and s.pipeline["frames"] >= s.frames_saved
    assert "batched detection on cpu" in str(s)
    a = pd.read_parquet(tmp_path / "video" / "manifest.parquet")
    b = pd.read_parquet(tmp_path / "batched" / "manifest.parquet")
    # Same videos, frames and crop files; boxes equal up to MTCNN's float rounding across batch compositions.
    pd.testing.assert_frame_equal(a.drop(columns=["bbox", "landmarks", "score"]),
                                  b.drop(columns=["bbox", "landmarks", "score"]))
    np.testing.assert_allclose(np.stack(a["bbox"]), np.stack(b["bbox"]), atol=1e-3)
    np.testing.assert_allclose(np.stack(a["score"]), np.stack(b["score"]), atol=1e-5)
    for p in a["crop_path"]:
        assert (tmp_path / "video" / p).read_bytes() == (tmp_path / "batched" / p).read_bytes()
    for name in ("failures.parquet", "cache.json"):
        assert (tmp_path / "video" / name).read_bytes() == (tmp_path / "batched" / name).read_bytes()


@pytest.mark.parametrize("launcher", ["slurm", "slurm_cpu", "local"])
def test_launcher_presets_compose_with_the_shard_sweep(launcher, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.utils import get_class, instantiate

    from dfd.cli._hydra import config_dir, register_resolvers

    register_resolvers()
    sweep = ["extract.shard=range(0,4)", "extract.num_shards=4"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("extract", overrides=[f"hydra/launcher={launcher}", "dataset=folder",
                                            f"dataset.root={tmp_path}", "extract.shard=0", "extract.num_shards=4"],
                      return_hydra_config=True)
    GlobalHydra.instance().clear()
    launcher_cls = get_class(cfg.hydra.launcher._target_).__name__
    assert launcher_cls == {"slurm": "SlurmLauncher", "slurm_cpu": "SlurmLauncher", "local": "LocalLauncher"}[launcher]
    params = instantiate(cfg.hydra.launcher).params
    assert params["tasks_per_node"] in (1, None) and params["timeout_min"] >= 60
    if launcher == "slurm_cpu":
        assert params["gpus_per_node"] == 0 and params["cpus_per_task"] >= 8
    # The sweep dir sits beside the cache (its logs with it); the sweep is one batch of 4 jobs (one array).
    cache_dir = Path(cfg.dataset.cache_dir)
    assert Path(str(cfg.hydra.sweep.dir)).parent == cache_dir / "logs"
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(sweep), max_batch_size=None)
    assert [[o[0] for o in b] for b in batches] == [[f"extract.shard={k}" for k in range(4)]]
    assert ExtractConfig.from_mapping(dict(cfg.extract)).shard == 0


@pytest.mark.slow
def test_threads_and_processes_write_what_one_process_writes(tmp_path):
    root, index = _videos(tmp_path, n=3)
    _single(index, root, tmp_path / "single")
    for parallel in ("threads", "processes"):
        cfg = ExtractConfig.create(**{**SETTINGS, "workers": 2}, parallel=parallel)
        s = extract_faces(index, root, tmp_path / parallel, cfg, progress=False, dataset="tiny")
        assert s.videos_ok == 3 and s.videos_failed == 2
        _assert_same_cache(tmp_path / "single", tmp_path / parallel)


def test_detection_loop_serves_window_searches_of_several_videos_in_one_call():
    from dfd.extract.pipeline import DetectionLoop
    from dfd.faces.detect import FaceDetector
    from dfd.faces.windowed import detect_in_windows
    from tests.media import face_image

    det = FaceDetector(detect_size=None, face_px=0)
    frame = np.full((240, 320, 3), 120, np.uint8)
    frame[20:200, 60:240] = face_image(180)
    a, b = np.stack([frame] * 2), np.stack([np.ascontiguousarray(frame[:, ::-1])])
    requests: queue.Queue = queue.Queue()
    replies = [queue.Queue() for _ in range(2)]
    loop = DetectionLoop({"frames": det.mtcnn}, batch_size=8, requests=requests, replies=replies)
    loop.run([(0, 1, "frames", a, (((10, 0), (20, 10)), 200)), (1, 3, "frames", b, (((100, 0),), 200))])
    assert loop.stats["calls"] == 1 and loop.stats["frames"] == 3  # two videos' regions, one MTCNN call
    for w, batch, windows in ((0, a, [(10, 0), (20, 10)]), (1, b, [(100, 0)])):
        seq, (boxes, probs, points) = replies[w].get_nowait()
        alone = detect_in_windows(det.mtcnn, batch, windows, 200)
        assert seq == (1 if w == 0 else 3) and len(boxes) == len(batch)
        for got, ref in zip(boxes, alone[0], strict=True):
            np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ref, np.float32), atol=1e-3)
