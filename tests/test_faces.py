"""Batched MTCNN detection (real weights), face choice, square crops and landmark mapping."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dfd.faces.boxes import Detections
from dfd.faces.detect import FaceDetector, video_scale
from dfd.faces.geometry import crop_box, crop_face
from dfd.faces.track import choose_face
from tests.media import ASTRONAUT_FACE_BOX_512, box_iou, face_image


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(batch_size=4)


def test_detects_real_face_in_mixed_size_batch(detector):
    big, small = face_image(256), face_image(128)
    grey = np.full((128, 128, 3), 127, np.uint8)
    dets = detector.detect([big, small, grey, small])
    assert [len(d) for d in dets] == [1, 1, 0, 1]
    d = dets[0]
    assert d.boxes.dtype == np.float32 and d.landmarks.shape == (1, 5, 2) and d.probs[0] > 0.99
    truth = np.array(ASTRONAUT_FACE_BOX_512) / 2
    assert box_iou(d.boxes[0], truth) > 0.7
    assert box_iou(dets[1].boxes[0], truth / 2) > 0.6
    assert np.allclose(dets[1].boxes, dets[3].boxes)  # batching does not mix images up


def test_detect_size_maps_boxes_back_to_source_pixels():
    det = FaceDetector(detect_size=128).detect([face_image(256)])[0]
    assert box_iou(det.boxes[0], np.array(ASTRONAUT_FACE_BOX_512) / 2) > 0.6


def test_choose_face_largest_or_confident():
    det = Detections(
        np.array([[0, 0, 10, 10], [0, 0, 50, 50], [0, 0, 30, 30]], np.float32),
        np.array([0.99, 0.95, 0.5], np.float32),
        np.zeros((3, 5, 2), np.float32),
    )
    assert choose_face(det, "largest", 0.9) == 1
    assert choose_face(det, "confident", 0.9) == 0
    assert choose_face(det, "largest", 0.4) == 1
    assert choose_face(det, "largest", 0.999) is None
    with pytest.raises(ValueError, match="largest"):
        choose_face(det, "biggest")


def test_crop_pads_at_border_and_maps_landmarks():
    img = np.zeros((100, 100, 3), np.uint8)
    img[:, :] = (10, 200, 30)
    box = np.array([-10, -10, 30, 30], np.float32)  # face over the top-left corner
    lm = np.array([[0, 0], [20, 0], [10, 10], [0, 20], [20, 20]], np.float32)
    crop, lmc = crop_face(img, box, lm, margin=1.5, size=60)
    assert crop.shape == (60, 60, 3) and lmc.dtype == np.float32
    x0, y0, side = crop_box(box, 1.5)
    assert (x0, y0, side) == (-20, -20, 60)
    assert np.allclose(lmc, (lm + 20) * 60 / 60)
    assert crop[:15, :15].max() == 0 and tuple(crop[40, 40]) == (10, 200, 30)  # padding black, face kept


def test_real_landmarks_land_inside_crop(detector):
    img = face_image(256)
    d = detector.detect([img])[0]
    crop, lm = crop_face(img, d.boxes[0], d.landmarks[0], margin=1.3, size=96)
    assert np.all((lm > 0) & (lm < 96))
    # Eyes above the mouth, left eye left of the right eye, in crop coordinates too.
    assert lm[0, 0] < lm[1, 0] and lm[:2, 1].max() < lm[3:, 1].min()
    # The crop is centred on the face: re-detecting in the crop finds it in the middle.
    d2 = detector.detect([cv2.resize(crop, (160, 160))])[0]
    cx = (d2.boxes[0, 0] + d2.boxes[0, 2]) / 2
    assert abs(cx - 80) < 16


def test_detect_video_shrinks_frames_to_the_face_and_finds_the_same_faces(monkeypatch):
    """The per-video scale: probe once, detect the rest on smaller frames, boxes agree with full detection."""
    canvas = np.full((720, 720, 3), 120, np.uint8)
    frames = []
    for dx in (40, 120, 200, 280):
        f = canvas.copy()
        f[100:612, dx : dx + 512][:, : min(512, 720 - dx)] = face_image(512)[:, : min(512, 720 - dx)]
        frames.append(f)
    det = FaceDetector(min_face_size=40, detect_size=640, search_roi=0)  # every frame searched whole
    seen_sizes = []
    original = det.mtcnn.detect
    monkeypatch.setattr(det.mtcnn, "detect", lambda batch, landmarks: (seen_sizes.append(batch.shape[1]),
                                                                       original(batch, landmarks=landmarks))[1])
    fast = det.detect_video(frames, face_px=64)
    assert min(seen_sizes) < 450 < 640 == max(seen_sizes)  # probe at detect_size, the rest much smaller
    full = FaceDetector(min_face_size=40, detect_size=640).detect(frames)
    for a, b in zip(fast, full, strict=True):
        ka, kb = choose_face(a), choose_face(b)
        assert box_iou(a.boxes[ka], b.boxes[kb]) > 0.8


def test_video_scale_is_a_grid_that_absorbs_noise():
    assert video_scale(0.4372, 0) == 0.4372
    for x in (0.2, 0.31, 0.4372, 0.77, 1.3):
        q = video_scale(x, 8)
        assert abs(np.log2(q / x)) <= 1 / 16 + 1e-9 and video_scale(q, 8) == q
    # Float noise in the probe box does not move a scale off its grid point.
    on_grid = 2 ** (-9 / 8)
    assert video_scale(on_grid * 1.002, 8) == video_scale(on_grid / 1.002, 8) == on_grid


def _sizes_seen(det, monkeypatch) -> list[int]:
    seen: list[int] = []
    original = det.mtcnn.detect
    monkeypatch.setattr(det.mtcnn, "detect", lambda batch, landmarks: (seen.append(batch.shape[1]),
                                                                       original(batch, landmarks=landmarks))[1])
    return seen


def test_median_of_probes_sets_a_grid_scale(monkeypatch):
    """Three probes (frames 1, 3, 4 of 6) at detect_size; the median face sets the scale, on the 1/8-octave
    grid; one odd probe (frame 3: a face half the size) moves the scale only when it probes alone."""
    canvas = np.full((720, 720, 3), 120, np.uint8)
    frames = []
    for i, dx in enumerate((20, 50, 80, 110, 140, 170)):
        f = canvas.copy()
        side = 256 if i == 3 else 512
        f[100 : 100 + side, dx : dx + side] = face_image(side)
        frames.append(f)

    def sizes(probes: int, video: list[np.ndarray]) -> list[int]:
        det = FaceDetector(min_face_size=40, detect_size=640, face_px=64, probes=probes, search_roi=0)
        seen = _sizes_seen(det, monkeypatch)
        dets = det.detect_video(video)
        assert all(choose_face(d) is not None for d in dets)
        return seen

    steady = [f.copy() for f in frames]
    steady[3] = canvas.copy()
    steady[3][100:612, 110:622] = face_image(512)
    three, three_steady, one, one_steady = (sizes(3, frames), sizes(3, steady), sizes(1, frames), sizes(1, steady))
    assert three[0] == 640 and three == three_steady  # probes at detect_size, then the same scale as a steady video
    assert one != one_steady and one[0] == one_steady[0] == 640  # the lone probe on the odd frame moves it
    small = three[1]
    k = round(np.log2(small / 720) * 8)
    assert small < 450 and small == round(720 * 2 ** (k / 8))  # on the grid
