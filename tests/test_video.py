"""Frame sampling and decoding: uniform sampling, only sampled frames decoded, typed errors, archives."""

from __future__ import annotations

import io
import tarfile

import av
import cv2
import numpy as np
import pytest

from dfd.faces.contract import sample_indices
from dfd.store.media import (
    CorruptMedia,
    EmptyMedia,
    MissingMedia,
    iter_archive_sequences,
    read_frames_folder,
    read_source,
    read_video,
    sort_frame_names,
)
from tests.media import write_corrupt_video, write_face_video


def test_sample_indices_span_the_whole_video():
    idx = sample_indices(300, 32)
    assert len(idx) == 32 and idx[0] == 0 and idx[-1] == 299
    assert np.all(np.diff(idx) >= 9) and np.all(np.diff(idx) <= 10)  # evenly spaced, never "the first 32"
    assert sample_indices(10, 32).tolist() == list(range(10))  # fewer frames than asked: all of them
    assert sample_indices(5, 0).tolist() == list(range(5))
    assert sample_indices(0, 32).size == 0


def test_read_video_decodes_only_sampled_frames(tmp_path):
    path, _ = write_face_video(tmp_path / "v.mp4", n_frames=12, canvas=64, size=48)
    frames = read_video(path, 4)
    assert frames.numbers.tolist() == [0, 3, 7, 11]
    assert len(frames.images) == 4 and frames.images[0].shape == (64, 64, 3)
    assert frames.images[0].dtype == np.uint8
    with av.open(str(path)) as c:
        every = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(every) == 12
    # The sampled frames are the right ones: the face moves, so frame 7 differs from its neighbours.
    for n, img in zip(frames.numbers, frames.images, strict=True):
        errs = [np.abs(img.astype(int) - e.astype(int)).mean() for e in every]
        assert int(np.argmin(errs)) == n


def test_bad_files_raise_typed_errors(tmp_path):
    with pytest.raises(CorruptMedia, match="corrupt"):
        read_video(write_corrupt_video(tmp_path / "bad.mp4"), 4)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(EmptyMedia, match="0 bytes"):
        read_video(tmp_path / "empty.mp4", 4)
    with pytest.raises(MissingMedia, match="not found"):
        read_video(tmp_path / "nope.mp4", 4)
    (tmp_path / "frames").mkdir()
    with pytest.raises(EmptyMedia):
        read_frames_folder(tmp_path / "frames", 4)
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(CorruptMedia):
        read_source("image", tmp_path / "x.png", 1)


def _png(value: int) -> bytes:
    return cv2.imencode(".png", np.full((8, 8, 3), value, np.uint8))[1].tobytes()


def test_frames_folder_sorted_numerically(tmp_path):
    for n in (1, 2, 10, 33, 100):
        (tmp_path / f"{n}.png").write_bytes(_png(n))
    assert sort_frame_names(["10.png", "2.png", "1.png"]) == ["1.png", "2.png", "10.png"]
    frames = read_frames_folder(tmp_path, 3)
    assert frames.numbers.tolist() == [1, 10, 100]  # file numbers, uniform over the sorted list
    assert [int(im[0, 0, 0]) for im in frames.images] == [1, 10, 100]


def _tar(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_archive_streams_wanted_sequences(tmp_path):
    files = [(f"./12/fake/3/{n}.png", _png(n)) for n in (5, 40, 7, 100, 12)]
    files += [(f"./12/fake/4/{n}.png", _png(200 + n)) for n in (1, 2)]
    files += [(f"./12/real/9/{n}.png", _png(n)) for n in (3, 30)]
    arc = _tar(tmp_path / "12.tar.gz", files)
    got = dict(iter_archive_sequences(arc, ["./12/fake/3", "12/real/9", "./12/fake/77"], 3))
    seq = got["./12/fake/3"]
    assert seq.numbers.tolist() == [5, 12, 100]  # numeric order 5, 7, 12, 40, 100 -> uniform 3
    assert [int(im[0, 0, 0]) for im in seq.images] == [5, 12, 100]
    assert got["12/real/9"].numbers.tolist() == [3, 30]
    assert isinstance(got["./12/fake/77"], MissingMedia)
    (tmp_path / "bad.tar.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    assert isinstance(dict(iter_archive_sequences(tmp_path / "bad.tar.gz", ["./1/real/1"], 3))["./1/real/1"],
                      CorruptMedia)


def test_decoder_messages_become_the_reason_not_noise(tmp_path, capfd):
    """decord/FFmpeg print from C++ to fd 2; on a corrupt file that text is the failure reason, not stderr noise."""
    bad = write_corrupt_video(tmp_path / "bad.mp4")
    with pytest.raises(CorruptMedia) as e:
        read_video(bad, 4)
    out, err = capfd.readouterr()
    assert err == "" and out == ""
    assert "moov atom not found" in e.value.detail and "Invalid data found" in e.value.detail
    assert "\n" not in e.value.detail
    import sys

    print("after", file=sys.stderr)  # fd 2 is restored
    assert capfd.readouterr().err == "after\n"
