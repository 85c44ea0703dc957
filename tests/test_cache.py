"""A crop cache belongs to its data: per-root caches, source fingerprints, exact re-extraction, refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dfd.errors import DatasetError
from dfd.extract.config import ExtractConfig, ExtractError
from dfd.extract.parts import part_path
from dfd.extract.run import extract_faces
from dfd.sources.folder import Folder
from dfd.store.cache import path_key, read_record
from tests.media import write_face_video

BIN = Path(sys.executable).parent


def _videos(root: Path, names: dict[str, int]) -> Path:
    """Face videos under ``root`` (relative name -> frame count: different counts, different contents)."""
    for rel, n in names.items():
        write_face_video(root / rel, n_frames=n, size=160, canvas=192)
    return root


def _extract(root: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [str(BIN / "dfd-extract"), "dataset=folder", f"dataset.root={root}", f"paths.cache_dir={cache}",
            "extract.frames=2", "extract.size=32", "extract.workers=1", "progress=false", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=root.parent, env=env)


def _parts(cache: Path, ids: list[str]) -> dict[str, int]:
    return {v: part_path(cache, v).stat().st_mtime_ns for v in ids if part_path(cache, v).is_file()}


def test_next_extract_redoes_exactly_the_changed_sources(tmp_path: Path) -> None:
    root = _videos(tmp_path / "data", {"real/a.mp4": 4, "real/b.mp4": 5, "real/c.mp4": 6, "fake/d.mp4": 4,
                                       "fake/e.mp4": 5})
    first = _extract(root, tmp_path / "cache")
    assert first.returncode == 0, first.stderr
    cache = tmp_path / "cache" / f"folder-{path_key(root)}"
    record = read_record(cache)
    assert record["root"] == str(root.resolve()) and record["contract"]["size"] == 32
    ids = ["real/a", "real/b", "real/c", "fake/d", "fake/e"]
    before = _parts(cache, ids)
    assert len(before) == 5

    # Move one, edit one in place, replace a real one by a fake of the same name.
    (root / "real" / "sub").mkdir()
    shutil.move(root / "real/a.mp4", root / "real/sub/a2.mp4")
    write_face_video(root / "real/b.mp4", n_frames=7, size=160, canvas=192)
    (root / "real/c.mp4").unlink()
    write_face_video(root / "fake/c.mp4", n_frames=6, size=150, canvas=192)

    check = _extract(root, tmp_path / "cache", "--verify")
    assert check.returncode == 1, check.stdout + check.stderr
    assert "stale: 1" in check.stdout and "real/b" in check.stdout
    assert "not extracted: 2" in check.stdout and "orphaned: 2" in check.stdout

    again = _extract(root, tmp_path / "cache")
    assert again.returncode == 0, again.stderr
    assert "re-indexing" in again.stdout and "no longer exist" in again.stdout
    assert "2 videos reused from an earlier run, 1 redone because their source changed, 2 no longer in the index " \
           "removed" in again.stdout
    after = _parts(cache, ["real/sub/a2", "real/b", "fake/c", "fake/d", "fake/e"])
    assert after["fake/d"] == before["fake/d"] and after["fake/e"] == before["fake/e"]  # untouched
    assert after["real/b"] != before["real/b"]  # redone
    assert not part_path(cache, "real/a").exists() and not part_path(cache, "real/c").exists()
    m = pd.read_parquet(cache / "manifest.parquet")
    assert sorted(m.video_id.unique()) == ["fake/c", "fake/d", "fake/e", "real/b", "real/sub/a2"]
    assert set(m.loc[m.video_id == "fake/c", "label"]) == {1}
    assert not (cache / "crops" / "real" / "c").exists() or not any((cache / "crops" / "real" / "c").iterdir())
    assert set(m.source_size[m.video_id == "real/b"]) == {(root / "real/b.mp4").stat().st_size}
    clean = _extract(root, tmp_path / "cache", "extract.verify=true")
    assert clean.returncode == 0 and "5/5 videos current; nothing stale or missing" in clean.stdout


def test_two_roots_never_share_crops(tmp_path: Path, compose_cfg) -> None:
    a = _videos(tmp_path / "a", {"real/x.mp4": 4, "fake/y.mp4": 4})
    b = _videos(tmp_path / "b", {"real/x.mp4": 5, "fake/y.mp4": 5})
    dirs = [compose_cfg("extract", ["dataset=folder", f"dataset.root={r}", f"paths.cache_dir={tmp_path}/c"]
                        ).dataset.cache_dir for r in (a, b)]
    assert dirs[0] != dirs[1]  # default caches are per root
    cfg = ExtractConfig.create(frames=2, size=32, workers=1)
    index = Folder("folder", a, dirs[0]).build_index()
    extract_faces(index, a, dirs[0], cfg, progress=False, dataset="folder")
    # Pointing root b at root a's cache is refused, by extraction and by training alike (one line, both roots).
    with pytest.raises(ExtractError, match=f"holds crops of {a}, not of {b}"):
        extract_faces(Folder("folder", b, dirs[0]).build_index(), b, dirs[0], cfg, progress=False)
    with pytest.raises(DatasetError) as e:
        Folder("folder", b, dirs[0]).prepare()
    msg = str(e.value)
    assert f"holds crops of {a}, but dataset.root is {b}" in msg and f"dataset.root={a}" in msg and "\n" not in msg
    assert Folder("folder", a, dirs[0]).prepare() == Path(dirs[0]) / "manifest.parquet"
    # The same settings, root b in its own cache: separate crops.
    extract_faces(Folder("folder", b, dirs[1]).build_index(), b, dirs[1], cfg, progress=False)
    assert json.loads((Path(dirs[1]) / "cache.json").read_text())["root"] == str(b.resolve())
    assert (Path(dirs[1]) / "crops").is_dir() and Path(dirs[0]) != Path(dirs[1])


def test_train_on_a_missing_root_fails_in_one_line(tmp_path: Path) -> None:
    r = subprocess.run([str(BIN / "dfd-train"), "dataset=folder", f"dataset.root={tmp_path}/nope", "logger=none",
                        f"paths.cache_dir={tmp_path}/cache", f"hydra.run.dir={tmp_path}/run"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: folder: dataset root {tmp_path}/nope does not exist") and "dataset.root=" in lines[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_content_hash_catches_same_size_same_mtime_edits(tmp_path: Path) -> None:
    from dfd.extract.parts import same_source, source_fingerprint

    f = tmp_path / "v.mp4"
    f.write_bytes(b"a" * 100)
    row = {"path": "v.mp4", "kind": "video"}
    plain, hashed = source_fingerprint(tmp_path, row), source_fingerprint(tmp_path, row, content=True)
    st = f.stat()
    f.write_bytes(b"b" * 100)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime, other content
    assert same_source(plain, source_fingerprint(tmp_path, row))  # size + mtime cannot tell
    assert not same_source(hashed, source_fingerprint(tmp_path, row, content=True))  # extract.hash=true can
    assert source_fingerprint(tmp_path, {"path": "gone.mp4", "kind": "video"}) is None
    frames = tmp_path / "seq"
    frames.mkdir()
    for i in range(3):
        (frames / f"{i}.png").write_bytes(b"x" * (i + 1))
    fp = source_fingerprint(tmp_path, {"path": "seq", "kind": "frames"})
    assert fp["files"] == 3 and fp["size"] == 6
