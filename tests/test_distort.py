"""DeeperForensics-1.0's distortions at the source (dfd.store.distort): each type against a value computed by hand
on a small frame, determinism per (video, kind, level), whole-video H.264, chains, and face detection on
distorted frames (real MTCNN on the astronaut)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from dfd.store.distort import (
    DF_LEVELS,
    DF_PARAMS,
    DF_TYPES,
    Distortion,
    DistortionError,
    chain_text,
    noise_std,
    parse_chain,
    psnr,
    read_distorted,
)
from dfd.store.media import read_video
from tests.media import box_iou, face_image, write_face_video


def _df(code: str, level: int) -> Distortion:
    return Distortion(f"df_{code.lower()}", level)


def _pixel(rgb: tuple[int, int, int], shape: tuple[int, int] = (4, 6)) -> np.ndarray:
    return np.tile(np.array(rgb, np.uint8), (*shape, 1))


# ----------------------------------------------------------------------------------------------- each type by hand
def test_parameter_table_is_the_authors_published_one() -> None:
    # get_distortion_parameter in DeeperForensics-1.0's perturbation/add_distortion_to_video.py
    assert DF_TYPES == ("CS", "CC", "BW", "GNC", "GB", "JPEG", "VC")
    assert [_df(t, lv).param for t in ("CS", "GB", "VC") for lv in DF_LEVELS] == [
        0.4, 0.3, 0.2, 0.1, 0.0, 7, 9, 13, 17, 21, 30, 32, 35, 38, 40]
    assert DF_PARAMS["CC"] == (0.85, 0.725, 0.6, 0.475, 0.35) and DF_PARAMS["BW"] == (16, 32, 48, 64, 80)
    assert DF_PARAMS["GNC"] == (0.001, 0.002, 0.005, 0.01, 0.05) and DF_PARAMS["JPEG"] == (2, 3, 4, 5, 6)


def test_colour_saturation_scales_chroma_around_luma() -> None:
    # Y = 0.299*200 + 0.587*100 + 0.114*50 = 124.2; level 1 keeps 0.4 of the chroma: Y + 0.4 * (RGB - Y), truncated.
    out = _df("CS", 1).apply(_pixel((200, 100, 50)))
    assert out[0, 0].tolist() == [154, 114, 94]  # 154.52, 114.52, 94.52
    assert (out == out[0, 0]).all()
    assert _df("CS", 5).apply(_pixel((200, 100, 50)))[0, 0].tolist() == [124, 124, 124]  # no chroma left


def test_colour_contrast_multiplies_and_truncates() -> None:
    out = _df("CC", 2).apply(_pixel((200, 100, 50)))  # x 0.725: 145.0, 72.5, 36.25
    assert out[0, 0].tolist() == [145, 72, 36]
    assert _df("CC", 5).apply(_pixel((255, 255, 255)))[0, 0].tolist() == [89, 89, 89]  # 255 x 0.35 = 89.25


def test_gaussian_blur_of_a_point_is_the_kernel_centre() -> None:
    img = np.zeros((21, 21, 3), np.uint8)
    img[10, 10] = 255
    out = _df("GB", 1).apply(img)  # 7 x 7 kernel, sigma 7/6
    x = np.arange(-3, 4)
    g = np.exp(-(x**2) / (2 * (7 / 6) ** 2))
    g /= g.sum()
    assert abs(int(out[10, 10, 0]) - 255 * g[3] ** 2) <= 1  # 29.9
    assert abs(int(out[10, 13, 0]) - 255 * g[3] * g[6]) <= 1  # 3 px away: 3.2
    assert out[10, 14].max() == 0  # beyond the kernel


def test_pixelation_averages_pairs_at_factor_two() -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    img[:, 1::2] = 200  # columns 0, 200, 0, 200, ...
    out = _df("JPEG", 1).apply(img)  # shrink to 4 x 4 (bilinear: the mean of each pair), grow back
    assert out.shape == img.shape and (out == 100).all()
    odd = _df("JPEG", 2).apply(np.zeros((10, 7, 3), np.uint8))  # factor 3: 10 // 3 x 7 // 3, back to 10 x 7
    assert odd.shape == (10, 7, 3)


def test_gaussian_noise_in_ycbcr_has_the_published_spread() -> None:
    img = _pixel((128, 128, 128), (256, 256))
    out = _df("GNC", 3).apply(img, key="v").astype(np.float64)  # variance 0.005 on studio-range YCbCr
    y = out @ np.array([0.299, 0.587, 0.114])
    cb = (out[..., 2] - y) * 0.564
    sy, sc = noise_std(0.005)
    assert sy == pytest.approx(math.sqrt(0.005) * 255 * 255 / 219) and sc == pytest.approx(math.sqrt(0.005) * 255 * 255 / 224)
    assert y.std() == pytest.approx(sy, rel=0.03)  # 21.0 grey levels
    assert cb.std() == pytest.approx(sc, rel=0.05)
    assert y.mean() == pytest.approx(127.5, abs=0.3)  # truncation lowers the mean by half a level


def test_block_wise_grey_blocks_scale_with_the_frame() -> None:
    def grey_blocks(h: int, w: int, level: int) -> float:
        out = _df("BW", level).apply(np.zeros((h, w, 3), np.uint8), key="v")
        grey = (out == 128).all(-1)
        assert set(np.unique(out)) <= {0, 128}
        # Every grey pixel lies in an 8 x 8 square of grey pixels (blocks lie wholly inside the frame).
        ys, xs = np.nonzero(grey)
        k = np.ones((8, 8), np.uint8)
        full = cv2.erode(grey.astype(np.uint8), k, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT, borderValue=0)
        covered = cv2.dilate(full, k, anchor=(7, 7), borderType=cv2.BORDER_CONSTANT, borderValue=0)
        assert covered[ys, xs].all()
        return grey.sum() / 64.0

    small = grey_blocks(64, 64, 1)  # under 256 px: one 256 px frame's count, 16 (overlaps merge some)
    assert 10 <= small <= 16
    big = grey_blocks(800, 1000, 3)  # 800 // 256 = 3 -> 3 x 48 = 144 blocks
    assert 130 <= big <= 144


def test_video_compression_is_h264_at_the_level_crf() -> None:
    flat = _pixel((100, 150, 200), (64, 64))
    out = _df("VC", 1).apply(flat)
    assert np.abs(out.astype(int) - flat.astype(int)).max() <= 2  # a flat frame survives CRF 30 (YUV rounding)
    face = face_image(128)
    quality = [psnr(face, _df("VC", lv).apply(face)) for lv in DF_LEVELS]
    assert quality == sorted(quality, reverse=True) and quality[0] > quality[-1] + 2  # CRF 30 .. 40


# ----------------------------------------------------------------------------------------------- determinism, chains
def test_random_kinds_are_deterministic_per_video_kind_level_and_frame() -> None:
    img = face_image(64)
    for d in (_df("BW", 2), _df("GNC", 2), Distortion("noise", 10)):
        a, b = d.apply(img, "video_a", 3), d.apply(img, "video_a", 3)
        assert (a == b).all()
        assert (a != d.apply(img, "video_b", 3)).any() and (a != d.apply(img, "video_a", 4)).any()


def test_chains_parse_the_meta_list_form_and_refuse_bad_tokens() -> None:
    chain = parse_chain("CS:3 GB:2 jpeg:50")
    assert chain == (Distortion("df_cs", 3), Distortion("df_gb", 2), Distortion("jpeg", 50))
    assert chain_text(chain) == "df_cs:3 df_gb:2 jpeg:50" and parse_chain(chain_text(chain)) == chain
    assert parse_chain("") == () and parse_chain(None) == ()
    with pytest.raises(DistortionError, match="unknown distortion 'XX'"):
        parse_chain("XX:1")
    with pytest.raises(DistortionError, match="not one of DeeperForensics' levels"):
        parse_chain("CS:6")
    with pytest.raises(DistortionError, match="has no level"):
        parse_chain("GB")


def test_whole_video_compression_keeps_sampling_and_order(tmp_path) -> None:
    path, _ = write_face_video(tmp_path / "v.mp4", n_frames=20, size=128, canvas=160)
    clean = read_video(path, 5)
    chain = parse_chain("CC:1 VC:2 GB:1")  # CC on every frame, the whole video re-encoded, GB on the sampled ones
    a = read_distorted("video", path, 5, chain, "v")
    b = read_distorted("video", path, 5, chain, "v")
    assert a.numbers.tolist() == clean.numbers.tolist() == [0, 4, 9, 14, 19]
    assert all((x == y).all() for x, y in zip(a.images, b.images, strict=True))
    darker = [float(x.mean()) / float(c.mean()) for x, c in zip(a.images, clean.images, strict=True)]
    assert all(0.8 < r < 0.88 for r in darker), darker  # CC level 1 scales by 0.85 (blur and H.264 keep the mean)
    # Each sampled frame is its own frame re-encoded (timestamps intact: rate control at a steady CRF).
    q1, q5 = ([psnr(c, x) for c, x in zip(clean.images, read_distorted("video", path, 5, parse_chain(f"VC:{lv}"),
                                                                            "v").images, strict=True)]
              for lv in (1, 5))
    assert min(q1) > 30 and min(q1) > max(q5) + 1, (q1, q5)


# ----------------------------------------------------------------------------------------------- detection
def test_level_one_distortions_keep_the_face_box() -> None:
    """Real MTCNN: at level 1 every type still finds the astronaut's face, box within IoU 0.9 of the clean one."""
    from dfd.faces.detect import FaceDetector
    from dfd.faces.track import choose_face

    frame = np.ascontiguousarray(face_image(512)[0:300, 80:380])  # the face at full size, about 90 px wide
    frames = [frame] + [_df(t, 1).apply(frame, "v") for t in DF_TYPES]
    dets = FaceDetector().detect_frames(frames)
    boxes = [d.boxes[choose_face(d, "largest", 0.9)] for d in dets]
    ious = {t: box_iou(boxes[0], b) for t, b in zip(DF_TYPES, boxes[1:], strict=True)}
    assert min(ious.values()) >= 0.9, ious
