"""ADDNet: landmark face masks, the gated Xception entry flow (2D) and the clip model (3D)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from dfd.models import create_model, masks
from dfd.models.masks import ellipse_mask, face_mask
from tests.test_finetune import calibrate_bn

# Eyes, nose, mouth corners of an upright face centred in a 64 px crop.
FACE64 = torch.tensor([[22.0, 26.0], [42.0, 26.0], [32.0, 36.0], [24.0, 46.0], [40.0, 46.0]])


# ---- masks ----


def test_mask_covers_inner_face_cheeks_and_chin_but_not_the_background() -> None:
    m = face_mask(FACE64[None], 64, 64)
    assert m.shape == (1, 1, 64, 64) and m.dtype == torch.float32
    assert m.min() >= 0 and m.max() == pytest.approx(1.0)
    v = m[0, 0]
    for x, y in [(32, 36), (22, 26), (42, 26), (32, 46), (18, 36), (46, 36), (32, 53)]:  # nose, eyes, mouth, cheeks, chin
        assert v[y, x] > 0.8, (x, y)
    for x, y in [(1, 1), (62, 1), (1, 62), (62, 62), (3, 36), (61, 36)]:
        assert v[y, x] < 0.05, (x, y)
    # Smooth edge: values strictly between 0 and 1 exist along a row through the cheeks.
    row = v[36]
    assert ((row > 0.1) & (row < 0.9)).sum() >= 4


def test_mask_follows_the_landmarks() -> None:
    """Transposing the landmarks transposes the mask; shifting them shifts it."""
    m = face_mask(FACE64[None], 64, 64)[0, 0]
    mt = face_mask(FACE64.flip(-1)[None], 64, 64)[0, 0]
    assert torch.allclose(mt, m.T, atol=1e-5)
    shifted = face_mask((FACE64 + torch.tensor([6.0, 0.0]))[None], 64, 64)[0, 0]
    assert torch.allclose(shifted[:, 6:], m[:, :-6], atol=1e-4)


def test_mask_is_batched_and_cheap_at_xception_size() -> None:
    lm = (FACE64 * 299 / 64)[None].repeat(64, 1, 1) + torch.randn(64, 5, 2)
    masks_ = face_mask(lm, 299, 299)
    assert masks_.shape == (64, 1, 299, 299)
    assert torch.allclose(masks_[0], face_mask(lm[:1], 299, 299)[0])


def test_missing_landmarks_fall_back_to_an_ellipse_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    masks._fallback_logged = False
    lm = torch.stack([FACE64, torch.full((5, 2), float("nan")), FACE64])
    with caplog.at_level(logging.WARNING, logger="dfd.models.masks"):
        m = face_mask(lm, 64, 64)
        face_mask(None, 64, 64, batch=3)
    assert caplog.text.count("centred ellipse") == 1
    assert torch.equal(m[0], m[2]) and torch.allclose(m[0], face_mask(FACE64[None], 64, 64)[0], atol=1e-6)
    assert torch.allclose(m[1], face_mask(None, 64, 64, batch=1)[0])
    assert not torch.allclose(m[1], m[0], atol=0.1)
    hard = ellipse_mask(1, 64, 64)[0]
    assert hard[35, 32] and not hard[0, 0]


def test_degenerate_landmarks_fall_back() -> None:
    same = torch.full((1, 5, 2), 30.0)
    assert torch.allclose(face_mask(same, 64, 64), face_mask(None, 64, 64, batch=1))


def test_bad_landmark_shape_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"\(B,5,2\)"):
        face_mask(torch.zeros(2, 68, 2), 64, 64)


def test_mask_on_a_real_face_crop_from_mtcnn() -> None:
    """MTCNN's landmarks on a real face, in a 128 px crop like dfd-extract's: the mask covers that face."""
    import cv2
    from facenet_pytorch import MTCNN
    from skimage.data import astronaut

    img = astronaut()
    boxes, _, points = MTCNN(keep_all=True).detect(img, landmarks=True)
    x0, y0, x1, y1 = boxes[0].astype(np.float32)
    side = 1.3 * max(x1 - x0, y1 - y0)
    left, top = (x0 + x1 - side) / 2, (y0 + y1 - side) / 2
    crop = cv2.resize(img[int(top):int(top + side), int(left):int(left + side)], (128, 128))
    scale = 128 / int(side)
    pts = torch.from_numpy((points[0].astype(np.float32) - [int(left), int(top)]) * scale).float()
    m = face_mask(pts[None], 128, 128)[0, 0]
    for x, y in pts.round().long().tolist():  # every landmark is well inside
        assert m[y, x] > 0.9
    face = ((x0 - int(left)) * scale, (y0 - int(top)) * scale, (x1 - int(left)) * scale, (y1 - int(top)) * scale)
    bx0, by0, bx1, by1 = (int(round(v)) for v in face)
    assert m[by0:by1, bx0:bx1].mean() > 0.5
    assert m[:, :8].max() < 0.05 and m[:, -8:].max() < 0.05  # background beside the face
    # The masked crop keeps the face's pixels and darkens the background.
    masked = crop * m[..., None].numpy()
    assert masked[by0:by1, bx0:bx1].mean() > 0.5 * crop[by0:by1, bx0:bx1].mean()


# ---- ADDNet-2D ----


def test_all_ones_mask_is_plain_xception() -> None:
    torch.manual_seed(0)
    model = create_model("addnet2d", img_size=64)
    x = torch.randn(4, 3, 64, 64)
    ones = torch.ones(4, 1, 64, 64)
    calibrate_bn(model, x, mask=ones)
    ref = timm.create_model("legacy_xception", num_classes=1)
    ref.load_state_dict({k.removeprefix("backbone."): v for k, v in model.state_dict().items()})
    ref.eval()
    with torch.no_grad():
        expected = ref(x).squeeze(-1)
        assert expected.std() > 1e-3  # a non-degenerate comparison
        assert torch.allclose(model(x, mask=ones), expected, atol=1e-5, rtol=1e-5)


def test_mask_changes_the_output_and_gates_the_entry_flow() -> None:
    torch.manual_seed(0)
    model = create_model("addnet2d", img_size=64)
    assert model.needs_landmarks
    x = torch.randn(2, 3, 64, 64)
    lm = FACE64.expand(2, 5, 2)
    calibrate_bn(model, x, lm)
    with torch.no_grad():
        y_mask = model(x, lm)
        y_ones = model(x, mask=torch.ones(2, 1, 64, 64))
        assert (y_mask - y_ones).abs().max() > 1e-3
        assert not torch.allclose(model(x, None), y_mask)  # ellipse fallback differs from the landmark mask
        # A zero mask removes the image entirely: any two inputs score the same.
        zero = torch.zeros(2, 1, 64, 64)
        assert torch.allclose(model(x, mask=zero), model(torch.randn(2, 3, 64, 64), mask=zero))
        # Clips are scored frame by frame and averaged, each frame with its own landmarks.
        clip_lm = torch.stack([lm, lm + 2], dim=1)
        per_frame = torch.stack([model(x, lm), model(x, lm + 2)], dim=1).mean(1)
        assert torch.allclose(model(torch.stack([x, x], dim=1), clip_lm), per_frame, atol=1e-5)


def test_addnet_starts_from_xception_weights(tmp_path) -> None:
    state = timm.create_model("legacy_xception").state_dict()  # ImageNet-style 1000-class head
    save_file(state, tmp_path / "legacy_xception.safetensors")
    m2 = create_model("addnet2d", img_size=64, pretrained=True, weights_dir=str(tmp_path))
    assert torch.equal(m2.backbone.block7.rep[1].conv1.weight, state["block7.rep.1.conv1.weight"])
    m3 = create_model("addnet3d", img_size=64, clip_len=2, weights=str(tmp_path / "legacy_xception.safetensors"))
    assert torch.equal(m3.backbone.block2.skip.weight, state["block2.skip.weight"])


# ---- ADDNet-3D ----


def test_addnet3d_takes_clips_and_uses_every_frame() -> None:
    torch.manual_seed(0)
    model = create_model("addnet3d", img_size=48, clip_len=3, head_channels=[16, 16])
    assert model.input_spec.clip_len == 3 and model.needs_landmarks
    clips = torch.randn(2, 3, 3, 48, 48)
    lm = (FACE64 * 48 / 64).expand(2, 3, 5, 2).clone()
    lm[1, 2] = float("nan")
    calibrate_bn(model, clips, lm)
    with torch.no_grad():
        y = model(clips, lm)
        assert y.shape == (2,)
        changed = clips.clone()
        changed[:, 2] = torch.randn(2, 3, 48, 48)  # only the last frame differs
        assert (model(changed, lm) - y).abs().min() > 1e-6
    # Only the entry flow is kept: every parameter gets a gradient (no dead middle/exit flow for DDP).
    model.train()
    model(clips, lm).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert not hasattr(model.backbone.block4, "rep")
