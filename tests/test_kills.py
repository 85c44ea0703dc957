"""Killed commands and shared caches (issue 22, case 6 and the concurrency rules): a SIGKILLed dfd-extract or
DataLoader parent leaves no process behind; a second dfd-extract on one cache is refused in one line and the lock
of a killed run never sticks; dfd-pack, the shard merge and --verify killed mid-way rerun to byte-identical
output; a read-only or full cache folder is one line."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from dfd.errors import UserError
from dfd.extract.config import ExtractConfig, ExtractError
from dfd.extract.run import extract_faces
from dfd.sources.folder import Folder
from dfd.workers import alive, children
from tests.media import write_face_video

BIN = Path(sys.executable).parent
CFG = {"frames": 2, "size": 32, "workers": 1, "probes": 1}


def _videos(root: Path, n: int) -> Path:
    clip, _ = write_face_video(root / ".clip.mp4", n_frames=3, size=160, canvas=192)
    for i in range(n):
        (root / ("real" if i % 2 else "fake/m") / f"v{i}.mp4").parent.mkdir(parents=True, exist_ok=True)
        (root / ("real" if i % 2 else "fake/m") / f"v{i}.mp4").write_bytes(clip.read_bytes())
    clip.unlink()
    return root


def _gone_within(pids: list[int], seconds: float = 5.0) -> list[int]:
    """The pids still alive (zombies count as gone) after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_killed_extract_leaves_no_worker_and_no_stuck_lock(tmp_path):
    """Case 6: dfd-extract with two spawn workers, SIGKILLed mid-run: no worker or resource tracker within 5 s.
    Meanwhile a second run on the cache is refused in one line; after the kill the next run takes the cache."""
    root = _videos(tmp_path / "data", 4)
    cache = tmp_path / "cache"
    cmd = [str(BIN / "dfd-extract"), "dataset=folder", f"dataset.root={root}", f"dataset.cache_dir={cache}",
           "extract.frames=2", "extract.size=32", "extract.workers=2", "extract.probes=1", "progress=false",
           "extract.parallel=processes"]  # spawned workers (auto picks threads for two)
    proc = subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    index = Folder("folder", root, cache).build_index()
    try:
        deadline = time.monotonic() + 240
        kids: list[int] = []
        while proc.poll() is None and time.monotonic() < deadline:
            kids = children(proc.pid)
            if len(kids) >= 3 and (cache / "parts").is_dir():  # two workers and the resource tracker, working
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        with pytest.raises(ExtractError, match=r"^another dfd-extract is writing the crop cache .* \(pid "
                                               rf"{proc.pid} on .*\); wait for it to finish"):
            extract_faces(index, root, cache, ExtractConfig.create(**CFG), progress=False, dataset="folder")
        kids = children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # The kernel ends armed workers at once (measured: all gone within 5 s on an idle machine); a worker
        # still importing torch when its parent dies notices at the end of that import, which takes longer on
        # a loaded machine (the test suite's), hence the margin.
        assert _gone_within(kids, 20.0) == [], "workers outlived their SIGKILLed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
    # The kernel freed the lock with the process: the next run resumes and finishes.
    done = extract_faces(index, root, cache, ExtractConfig.create(**CFG), progress=False, dataset="folder")
    assert done.videos == 4 and done.videos_ok == 4


DATALOADER_PARENT = textwrap.dedent("""
    import sys, time
    from torch.utils.data import DataLoader
    from dfd.data.datasets import FrameDataset, ManifestArrays
    from dfd.data.transforms import Pipeline, Spec
    from dfd.workers import die_with_parent

    ds = FrameDataset(ManifestArrays(sys.argv[1]), Pipeline(Spec(32, (0.5,) * 3, (0.5,) * 3)))
    it = iter(DataLoader(ds, batch_size=2, num_workers=2, persistent_workers=True, worker_init_fn=die_with_parent))
    next(it)
    print("ready", flush=True)
    time.sleep(600)
""")


def test_dataloader_workers_die_with_their_parent(tmp_path, shared_cache):
    """Loader workers started as the DataModule starts them (worker_init_fn=die_with_parent) end within 5 s of a
    SIGKILLed parent."""
    from dfd.data.datamodule import DeepfakeDataModule
    from dfd.synthetic.source import SyntheticSource
    from dfd.workers import die_with_parent

    src = SyntheticSource("s", "a", videos={"train": 4, "val": 2, "test": 2}, frames_per_video=2, image_size=32,
                          cache_dir=shared_cache / "loader")
    dm = DeepfakeDataModule(src, {"size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}, batch_size=2, num_workers=2)
    dm.setup("fit")
    assert dm.train_dataloader().worker_init_fn is die_with_parent
    proc = subprocess.Popen([sys.executable, "-c", DATALOADER_PARENT, str(src.prepare())], env=_env(),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()[-2000:]
        kids = children(proc.pid)
        assert len(kids) >= 2
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _gone_within(kids) == [], "loader workers outlived their SIGKILLed parent"
    finally:
        if proc.poll() is None:
            proc.kill()


def _killed_while(target, args: tuple, when) -> None:
    """Run ``target(*args)`` in a forked child and SIGKILL it as soon as ``when()`` is true (or it ends)."""
    ctx = mp.get_context("fork")
    child = ctx.Process(target=target, args=args)
    child.start()
    deadline = time.monotonic() + 120
    while child.is_alive() and not when() and time.monotonic() < deadline:
        time.sleep(0.002)
    with contextlib.suppress(ProcessLookupError):
        os.kill(child.pid, signal.SIGKILL)
    child.join()


def test_killed_pack_merge_and_verify_rerun_to_identical_bytes(tmp_path, shared_cache):
    """SIGKILL during dfd-pack (after its first shard), the shard merge (while it writes the manifest) and
    --verify's crop check: each rerun completes with the bytes an uninterrupted run writes."""
    from dfd.extract.verify import check_crops
    from dfd.store.packed.writer import pack_cache
    from dfd.synthetic.source import SyntheticSource

    src = SyntheticSource("s", "a", videos={"train": 16, "val": 4, "test": 4}, frames_per_video=4, image_size=32,
                          cache_dir=shared_cache / "kills")
    manifest = src.prepare()
    pack_cache(manifest, tmp_path / "ref", shard_size="16KB")
    out = tmp_path / "run"
    _killed_while(pack_cache, (manifest, out, "16KB"), lambda: len(list((out / ".pack").glob("*.parquet"))) >= 1)
    assert not (out / "shards.json").exists() and (out / ".pack").is_dir()  # killed mid-way
    pack_cache(manifest, out, shard_size="16KB")
    assert _tree(out) == _tree(tmp_path / "ref")

    # The merge of a sharded extraction: killed while writing the manifest, merged again by the rerun.
    root = _videos(tmp_path / "data", 2)
    index = Folder("folder", root, tmp_path / "c").build_index()
    cache = tmp_path / "sharded"
    for k in range(2):
        extract_faces(index, root, cache, ExtractConfig.create(**CFG, shard=k, num_shards=2), progress=False,
                      dataset="folder")
    reference = {n: (cache / n).read_bytes() for n in ("manifest.parquet", "failures.parquet", "failures.csv")}
    for n in reference:
        (cache / n).unlink()
    merge = ExtractConfig.create(**CFG, num_shards=2, merge=True)
    _killed_while(extract_faces, (index, root, cache, merge, False, False, "folder"),
                  lambda: any(cache.glob(".manifest.parquet.*.tmp")))
    extract_faces(index, root, cache, merge, progress=False, dataset="folder")
    assert {n: (cache / n).read_bytes() for n in reference} == reference

    # --verify's crop check, killed as it starts: no list, or the whole one (atomic); the rerun's, byte for byte.
    (cache / pd.read_parquet(cache / "manifest.parquet").crop_path.iloc[1]).write_bytes(b"")
    check_crops(cache / "manifest.parquet").write(cache)
    listed = (cache / "unreadable_crops.csv").read_bytes()
    (cache / "unreadable_crops.csv").unlink()
    _killed_while(lambda: check_crops(cache / "manifest.parquet").write(cache), (), lambda: True)
    left = cache / "unreadable_crops.csv"
    assert not left.exists() or left.read_bytes() == listed
    again = check_crops(cache / "manifest.parquet")
    again.write(cache)
    assert left.read_bytes() == listed and len(again.unreadable) == 1


@contextlib.contextmanager
def _mounted(path: Path, options: str):
    """A tmpfs at ``path`` (root only; skipped elsewhere): a real read-only or full filesystem."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and mount to make a read-only or full filesystem")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_read_only_or_full_cache_is_one_line(tmp_path):
    root = _videos(tmp_path / "data", 2)
    index = Folder("folder", root, tmp_path / "c").build_index()
    with _mounted(tmp_path / "ro", "ro,size=1m") as ro, pytest.raises(UserError) as e:
        extract_faces(index, root, ro / "cache", ExtractConfig.create(**CFG), progress=False)
    assert str(e.value).startswith(f"cannot write to {ro / 'cache'}: it is on a read-only filesystem")
    assert "\n" not in str(e.value)
    # Full: room for the probe and a few crops, not for the PNGs of 2 videos at 160 px... nor their manifest.
    with _mounted(tmp_path / "full", "size=24k") as full, pytest.raises(UserError) as e:
        extract_faces(index, root, full / "cache", ExtractConfig.create(**{**CFG, "size": 160}), progress=False)
    assert str(e.value).startswith(f"cannot write to {full / 'cache'}: it is full") and "\n" not in str(e.value)
