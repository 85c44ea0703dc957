"""The search near the last face (crop contract ``search_roi``): it finds the faces the whole-frame search finds,
falls back where it must (no face near, a newcomer, a scene cut), and keeps every frame of degraded faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.functional import interpolate

from dfd.faces.contract import CropContract
from dfd.faces.crops import faces_from_detections
from dfd.faces.detect import FaceDetector, roi_side
from dfd.faces.track import choose_face
from dfd.faces.windowed import area_windows, detect_in_windows, integral
from dfd.store.media import read_video
from tests.media import box_iou, face_image, write_composed_face_video, write_face_video, write_faces_video

WHOLE = CropContract(search_roi=0)  # the rule every cache before contract version 4 was made with
NEAR = CropContract(search_roi=3.0)  # the search near the last face (opt-in: extract.search_roi=3)


def _boxes(dets, contract: CropContract) -> list[np.ndarray | None]:
    out = []
    for d in dets:
        k = choose_face(d, contract.choice, contract.min_score)
        out.append(None if k is None else d.boxes[k])
    return out


def test_area_windows_are_the_whole_images_area_resize_cut():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 203, 197, 3), dtype=np.uint8)
    whole = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    table = integral(images)
    for size in ((61, 60), (43, 42), (13, 13)):
        full = interpolate(whole, size=size, mode="area").numpy()
        h, w = min(20, size[0] - 2), min(18, size[1] - 4)  # one window size per call, as P-Net's batch needs
        cuts = [(2, 4, h, w), (0, 0, h, w)]
        got = area_windows(table, (203, 197), size, cuts)
        for i, (y, x, h, w) in enumerate(cuts):
            np.testing.assert_allclose(got[i], full[i, :, y:y + h, x:x + w], atol=1e-4)


def test_a_face_inside_the_window_gets_the_whole_frames_boxes():
    det = FaceDetector(WHOLE)
    frame = np.full((300, 360, 3), 120, np.uint8)
    frame[40:200, 150:310] = face_image(160)
    side = 208
    window = (min(max(150 + 80 - side // 2, 0), 360 - side), min(max(40 + 80 - side // 2, 0), 300 - side))
    boxes, probs, points = detect_in_windows(det.mtcnn, frame[None], [window], side)
    ref_boxes, ref_probs, ref_points = det.mtcnn.detect(frame[None], landmarks=True)
    assert boxes[0] is not None and len(boxes[0]) == len(ref_boxes[0]) == 1
    np.testing.assert_allclose(boxes[0], np.asarray(ref_boxes[0], np.float32), atol=1e-3)
    np.testing.assert_allclose(probs[0], np.asarray(ref_probs[0], np.float32), atol=1e-5)
    np.testing.assert_allclose(points[0], np.asarray(ref_points[0], np.float32), atol=1e-3)
    # A window that misses the face finds nothing there.
    boxes, _, _ = detect_in_windows(det.mtcnn, frame[None], [(0, 0)], 120)
    assert boxes[0] is None


@pytest.fixture(scope="module")
def moving(tmp_path_factory):
    """The astronaut crossing a 640 px canvas (its face ~100 px tall, ~2/3 of its width further each sampled
    frame), 16 frames sampled."""
    path, _ = write_face_video(tmp_path_factory.mktemp("moving") / "v.mp4", n_frames=48, size=440, canvas=640, fps=30)
    return read_video(path, 16)


def test_search_near_the_face_finds_the_whole_frame_search_s_faces_on_a_moving_face(moving):
    whole = FaceDetector(WHOLE).detect_video(moving.images)
    near_det = FaceDetector(NEAR)
    near = near_det.detect_video(moving.images)
    a, b = _boxes(whole, WHOLE), _boxes(near, NEAR)
    assert all(x is not None for x in a) and all(x is not None for x in b)
    ious = np.array([box_iou(x, y) for x, y in zip(a, b, strict=True)])
    assert (ious >= 0.95).mean() >= 0.95, ious.round(3)
    # The search near the face did the work: most frames were never searched whole.
    assert near_det.searched["near"] >= 0.8 * (len(moving.images) - NEAR.probes), near_det.searched
    # The crops the contract makes of them are the same pixels where the boxes agree exactly.
    same = [i for i, iou in enumerate(ious) if iou == 1.0]
    assert len(same) >= len(ious) // 2
    ca = faces_from_detections([moving.images[i] for i in same], [whole[i] for i in same], WHOLE)
    cb = faces_from_detections([moving.images[i] for i in same], [near[i] for i in same], NEAR)
    assert all(np.array_equal(x, y) for x, y in zip(ca.crops, cb.crops, strict=True))


def test_a_scene_cut_is_searched_whole(tmp_path):
    # Two shots: the face moving right in a grey room, then moving left in a dark one (faces ~100 px in 640 px
    # frames: the per-video scale, and with it the search near the face, is in use).
    path_a, _ = write_face_video(tmp_path / "a.mp4", n_frames=6, size=440, canvas=640)
    frames = read_video(path_a, 6).images
    cut = [np.ascontiguousarray(f[:, ::-1] // 3) for f in frames]
    det = FaceDetector(NEAR)
    dets = det.detect_video(frames + cut)
    assert all(x is not None for x in _boxes(dets, NEAR))
    assert det.searched["whole"] >= 1  # the first frames after the cut were not searched near the old face


def test_a_face_entering_mid_video_is_found_and_tracked_with_choice_all(tmp_path):
    path, boxes = write_faces_video(tmp_path / "enter.mp4", [(200, 20, 60), (200, 400, 60)], n_frames=16,
                                    frame=(640, 320), step=(2, 0), enter=(0, 6))
    images = read_video(path, 16).images
    c = CropContract(choice="all", roi_recheck=4)
    got = faces_from_detections(images, FaceDetector(c).detect_video(images), c)
    ref = faces_from_detections(images, FaceDetector(c.replace(search_roi=0)).detect_video(images),
                                c.replace(search_roi=0))
    frames_with_two = {i for i in set(got.keep) if got.keep.count(i) == 2}
    # Found from the first whole-frame search after it entered on (frame 8: every 4th frame is searched whole).
    assert set(range(8, 16)) <= frames_with_two, sorted(frames_with_two)
    assert not {i for i in frames_with_two if i < 6}
    assert set(got.tracks) == {0, 1} and set(ref.tracks) == {0, 1}


def test_tinted_and_blurred_fakes_keep_every_frame_the_whole_frame_search_keeps(tmp_path):
    kept = {}
    for name, contract in (("whole", WHOLE), ("near", NEAR)):
        kept[name] = []
        for fake, blur in ((False, 0), (True, 0), (True, 2)):
            path = write_composed_face_video(tmp_path / f"{fake}{blur}.mp4", n_frames=8, face=200, fake=fake,
                                             frame=(960, 540), seed=3)
            images = read_video(path, 8).images
            if blur:
                import cv2

                images = [cv2.GaussianBlur(im, (0, 0), blur) for im in images]
            dets = FaceDetector(contract).detect_video(images)
            kept[name].append({i for i, b in enumerate(_boxes(dets, contract)) if b is not None})
    for whole, near in zip(kept["whole"], kept["near"], strict=True):
        assert whole <= near, (whole, near)


def test_the_region_is_one_size_per_contract_so_gpus_batch_regions_of_many_videos():
    assert roi_side(NEAR) == roi_side(NEAR.replace(frames=8)) and roi_side(NEAR) % 8 == 0
    assert roi_side(NEAR) >= NEAR.search_roi * NEAR.face_px


def test_extraction_counts_the_frames_found_near_the_last_face(tmp_path):
    import pandas as pd

    from dfd.extract.config import ExtractConfig
    from dfd.extract.run import extract_faces

    write_face_video(tmp_path / "root" / "a.mp4", n_frames=24, size=440, canvas=640)
    index = pd.DataFrame({"video_id": ["a"], "label": [1], "split": "test", "method": "m", "identity": "",
                          "path": ["a.mp4"], "kind": "video"})
    s = extract_faces(index, tmp_path / "root", tmp_path / "cache", ExtractConfig.create(frames=8, size=64, workers=1,
                                                                                   search_roi=NEAR.search_roi),
                      progress=False)
    assert s.frames_kept == 8 and 8 - NEAR.probes >= s.frames_near >= 4, (s.frames_near, s.frames_kept)
    assert f"faces found near the last face in {s.frames_near} of 8 kept frames" in str(s)
