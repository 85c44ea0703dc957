"""Index -> crop cache + manifest with real MTCNN and decord: faces found, bad input listed, resume exact."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from dfd.extract.config import ExtractConfig, ExtractError
from dfd.extract.run import extract_faces
from dfd.faces.contract import CropContract
from dfd.sources.base import DatasetSource
from dfd.store.schema import MANIFEST_COLUMNS, read_manifest
from tests.media import box_iou, face_image, write_corrupt_video, write_face_png, write_face_video

REPO = Path(__file__).resolve().parents[1]


class PreIndexed(DatasetSource):
    """A source whose index is written by the test itself (``<cache_dir>/index.parquet``)."""

    def _index_rows(self) -> pd.DataFrame:
        raise AssertionError("dfd-extract should reuse the existing index.parquet")


def _index(rows: list[tuple[str, int, str, str]], **extra) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["video_id", "label", "path", "kind"])
    df["split"], df["method"], df["identity"] = "train", "m", "p"
    for k, v in extra.items():
        df[k] = v
    return df


def test_extract_finds_faces_and_lists_bad_input(tmp_path):
    root = tmp_path / "root"
    _, boxes = write_face_video(root / "face.mp4", n_frames=9, size=160, canvas=192)
    write_face_video(root / "noface.mp4", n_frames=6, canvas=96, faceless=True)
    write_corrupt_video(root / "corrupt.mp4")
    (root / "empty.mp4").write_bytes(b"")
    frames = root / "seq"
    for n in (1, 2):
        write_face_png(frames / f"{n}.png", size=160)
    cv2.imwrite(str(frames / "10.png"), np.full((160, 160, 3), 90, np.uint8))  # a frame without a face
    write_face_png(root / "still.png", size=160)
    index = _index(
        [
            ("vid/face", 1, "face.mp4", "video"),
            ("noface", 0, "noface.mp4", "video"),
            ("corrupt", 1, "corrupt.mp4", "video"),
            ("empty", 0, "empty.mp4", "video"),
            ("seq", 0, "seq", "frames"),
            ("still", 0, "still.png", "image"),
        ],
        scene=["a", "b", "c", "d", "e", "f"],
    )
    summary = extract_faces(index, root, tmp_path / "cache", ExtractConfig.create(frames=3, size=64, workers=1),
                            progress=False)

    m = read_manifest(tmp_path / "cache" / "manifest.parquet")
    assert list(m.columns)[: len(MANIFEST_COLUMNS)] == list(MANIFEST_COLUMNS)
    assert m["video_id"].tolist() == ["vid/face"] * 3 + ["seq"] * 2 + ["still"]  # index order
    assert m["scene"].tolist() == ["a"] * 3 + ["e"] * 2 + ["f"]  # index extras carried through
    face = m[m.video_id == "vid/face"]
    assert face["frame"].tolist() == [0, 4, 8]  # uniform over 9 frames, not the first 3
    for frame, bbox in zip(face["frame"], face["bbox"], strict=True):
        assert box_iou(bbox, boxes[frame]) > 0.5
    assert m["frame"][m.video_id == "seq"].tolist() == [1, 2]
    lm = np.stack(m["landmarks"].to_numpy()).reshape(-1, 5, 2)
    assert np.all((lm > 0) & (lm < 64))
    assert (m["score"] > 0.9).all() and m["label"].tolist() == [1] * 3 + [0] * 3
    for p in m["crop_path"]:
        img = cv2.imread(str(tmp_path / "cache" / p))
        assert img.shape == (64, 64, 3) and p.endswith(".png")

    fails = pd.read_parquet(tmp_path / "cache" / "failures.parquet").set_index("video_id")["reason"]
    assert sorted(fails.index) == ["corrupt", "empty", "noface"]
    assert fails["corrupt"].startswith("corrupt") and fails["empty"].startswith("empty")
    assert fails["noface"].startswith("no face")
    assert len(pd.read_csv(tmp_path / "cache" / "failures.csv")) == 3
    assert (summary.videos, summary.videos_ok, summary.videos_failed) == (6, 3, 3)
    assert summary.frames_saved == 6 and summary.frames_dropped == 1  # seq's faceless frame, counted
    assert "noface" in str(summary) and "dropped without a face 1" in str(summary)

    # Other settings on the same cache are refused (they would mix crops), unless asked to redo it.
    # The refusal names the overrides that reuse the cache as it is.
    with pytest.raises(ExtractError, match=r"other settings \{'size': \(64, 96\)\}.*request its settings "
                                           r"\(extract.size=64\)"):
        extract_faces(index, root, tmp_path / "cache", ExtractConfig.create(frames=3, size=96, workers=1), progress=False)


def test_a_version_1_cache_is_refused_with_the_overrides_that_reuse_it(tmp_path):
    """A cache extracted before the per-video scale was probed three times and rounded: today's defaults are
    refused (they would mix two detection rules in one cache), and the refusal names the overrides under which
    the cache is reused as it is, with nothing extracted again."""
    from dfd.store.cache import read_record

    root = tmp_path / "root"
    write_face_video(root / "a.mp4", n_frames=8, size=160, canvas=192)
    index = _index([("a", 1, "a.mp4", "video")])
    v1 = ExtractConfig.create(frames=3, size=64, workers=1, scale_steps=0, probes=1, search_roi=0)
    extract_faces(index, root, tmp_path / "cache", v1, progress=False)
    record = read_record(tmp_path / "cache")["contract"]
    assert record["version"] == 1 and "probes" not in record and "scale_steps" not in record
    with pytest.raises(ExtractError, match=r"request its settings \(extract.probes=1 extract.scale_steps=0\)"):
        extract_faces(index, root, tmp_path / "cache", ExtractConfig.create(frames=3, size=64, workers=1),
                      progress=False)
    again = extract_faces(index, root, tmp_path / "cache", v1, progress=False)
    assert again.videos_resumed == 1 and again.processed == [] and again.frames_saved == 3


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()


def test_archive_of_face_crops(tmp_path):
    crop = face_image(96)[8:88, 8:88]  # already a face crop, 80 x 80 as in WildDeepfake
    arc = tmp_path / "root" / "fake_train" / "3.tar.gz"
    arc.parent.mkdir(parents=True)
    with tarfile.open(arc, "w:gz") as tar:
        for name in ("./3/fake/7/4.png", "./3/fake/7/17.png", "./3/fake/7/9.png", "./3/real/1/2.png"):
            data = _png(crop)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    index = _index(
        [("fake/3/7", 1, "fake_train/3.tar.gz", "archive"), ("real/3/1", 0, "fake_train/3.tar.gz", "archive"),
         ("real/3/5", 0, "fake_train/3.tar.gz", "archive")],
        member=["./3/fake/7", "./3/real/1", "./3/real/5"],
    )
    summary = extract_faces(index, tmp_path / "root", tmp_path / "cache", ExtractConfig.create(frames=2, size=64),
                            faces_are_cropped=True, progress=False)
    m = read_manifest(tmp_path / "cache" / "manifest.parquet")
    assert m["video_id"].tolist() == ["fake/3/7", "fake/3/7", "real/3/1"]
    assert m["frame"].tolist() == [4, 17, 2]  # numeric order 4, 9, 17 -> first and last
    assert np.allclose(np.stack(m["bbox"].to_numpy()), [0, 0, 80, 80]) and (m["score"] == 1.0).all()
    lm = np.stack(m["landmarks"].to_numpy()).reshape(-1, 5, 2)
    assert np.all((lm > 0) & (lm < 64))  # landmarks found by MTCNN on the crop, in 64-px crop pixels
    assert summary.videos_failed == 1 and "not found in archive" in summary.failures["reason"].iloc[0]


def _cli_env(tmp_path: Path) -> dict[str, str]:
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    if not (conf / "train.yaml").exists():  # config_dir() recognises the tree by its train.yaml
        (conf / "train.yaml").write_text("{}\n")
    (conf / "dataset" / "tiny.yaml").write_text(
        "_target_: tests.test_extract.PreIndexed\nname: tiny\nroot: ???\ncache_dir: ???\n"
    )
    env = dict(os.environ, DFD_CONFIG_DIR=str(conf), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return env


def _cli(root: Path, cache: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "dfd-extract"), "dataset=tiny", f"dataset.root={root}",
            f"dataset.cache_dir={cache}", "extract.frames=6", "extract.size=48", "extract.workers=1",
            "progress=false"]


def test_killed_cli_run_resumes_to_identical_manifest(tmp_path):
    root = tmp_path / "root"
    n_videos = 8
    for i in range(n_videos):
        write_face_video(root / f"{i}.mp4", n_frames=4 + i, size=160, canvas=192)
    index = _index([(f"v{i}", i % 2, f"{i}.mp4", "video") for i in range(n_videos)])
    env = _cli_env(tmp_path)
    (tmp_path / "killed").mkdir()
    index.to_parquet(tmp_path / "killed" / "index.parquet")

    proc = subprocess.Popen(_cli(root, tmp_path / "killed"), env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "killed" / "parts"
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline:
        if parts.is_dir() and len(list(parts.glob("*.json"))) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done_before = len(list(parts.glob("*.json")))
    assert done_before < n_videos and not (tmp_path / "killed" / "manifest.parquet").exists()

    resumed = subprocess.run(_cli(root, tmp_path / "killed"), env=env, cwd=tmp_path, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{done_before} videos reused" in resumed.stdout and "extracted" in resumed.stdout
    assert not (tmp_path / "outputs").exists()  # Hydra's run folder sits beside the cache, not in the cwd

    # The uninterrupted reference, with the CLI's settings and torch thread count (OMP_NUM_THREADS=1).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        extract_faces(index, root, tmp_path / "full", ExtractConfig.create(frames=6, size=48, workers=1), progress=False)
    finally:
        torch.set_num_threads(threads)
    a = pd.read_parquet(tmp_path / "full" / "manifest.parquet")
    b = pd.read_parquet(tmp_path / "killed" / "manifest.parquet")
    assert len(a) == sum(min(6, 4 + i) for i in range(n_videos))
    pd.testing.assert_frame_equal(a, b)
    crops = sorted(p.relative_to(tmp_path / "killed").as_posix() for p in (tmp_path / "killed" / "crops").rglob("*")
                   if p.is_file())
    assert crops == sorted(b["crop_path"])  # no stray or temporary crops left by the killed run
    for p in b["crop_path"]:
        assert (tmp_path / "full" / p).read_bytes() == (tmp_path / "killed" / p).read_bytes()


def test_cli_reports_bad_choice_in_one_line(tmp_path):
    env = _cli_env(tmp_path)
    r = subprocess.run([str(Path(sys.executable).parent / "dfd-extract"), "dataset=nope"], env=env,
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and "not a valid choice for 'dataset'" in r.stderr and "tiny" in r.stderr


def test_nvdec_is_refused_in_one_line_where_it_cannot_run_and_auto_decodes_on_the_cpu(tmp_path):
    from dfd.store.media import nvdec_problem

    root = tmp_path / "root"
    write_face_video(root / "a.mp4", n_frames=4, size=160, canvas=192)
    index = _index([("a", 1, "a.mp4", "video")])
    problem = nvdec_problem("cuda")
    assert problem  # no GPU here (or no PyNvVideoCodec): auto stays on the CPU, nvdec is refused
    with pytest.raises(ExtractError, match=r"extract.decoder=nvdec cannot decode here: .*use extract.decoder=cpu"):
        extract_faces(index, root, tmp_path / "c", ExtractConfig.create(frames=2, size=64, decoder="nvdec"),
                      progress=False)
    auto = ExtractConfig.create(frames=2, size=64, device="cpu")
    assert auto.resolve(False).decoder == "cpu" and auto.resolve(False).fingerprint() == CropContract(
        frames=2, size=64).fingerprint()
    with pytest.raises(ExtractError, match="extract.decoder='gpu' is not one of"):
        ExtractConfig.create(decoder="gpu")
