"""MTCNN's cascade with its first stage (P-Net) scanning only a window of each image: the search near the face.

Why not MTCNN on a cropped region: MTCNN resizes its input to every pyramid scale with ``int(side * s + 1)``
pixels, so a crop is resampled on another grid than the whole frame, and its boxes move (by up to 17 % IoU for a
one-pixel change of size, measured on these videos). Here every pyramid level is the whole frame's level,
resized exactly as facenet-pytorch resizes it; P-Net runs on the part of each level that covers the window,
cut at an even offset so its stride-2 grid is the whole frame's. Inside the window P-Net's candidates are then
the whole frame's, and the second and third stages (R-Net, O-Net: on the frame, as facenet-pytorch runs them)
give the same boxes — unless a candidate outside the window would have suppressed one inside it.

What it saves: P-Net's convolutions and pooling on the rest of every level (most of MTCNN's time on a frame
shrunk to a ~64 px face), and the R-Net/O-Net work on candidates elsewhere in the frame.

Built on facenet-pytorch's networks and helpers (MIT licence, Tim Esler); the stages below follow its
``detect_face`` step for step, with the window added to the first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from facenet_pytorch.models.utils.detect_face import (
    batched_nms_numpy,
    bbreg,
    fixed_batch_process,
    imresample,
    pad,
    rerec,
)
from torchvision.ops.boxes import batched_nms


def pyramid(h: int, w: int, min_face_size: int, factor: float) -> list[float]:
    """MTCNN's scales for an ``h`` x ``w`` image (facenet-pytorch's rule)."""
    m = 12.0 / min_face_size
    minl = min(h, w) * m
    scales, s = [], m
    while minl >= 12:
        scales.append(s)
        s *= factor
        minl *= factor
    return scales


def _level_window(x0: int, y0: int, side: int, h: int, w: int, lh: int, lw: int) -> tuple[int, int, int, int]:
    """The part of a pyramid level (``lh`` x ``lw``, of an ``h`` x ``w`` image) that covers the window, as
    (y, x, height, width): starting at an even pixel (P-Net's stride) and of one size for every window of the
    same ``side``, shifted inside the level."""
    fy, fx = lh / h, lw / w
    ch = min(lh, int(np.ceil(side * fy)) + 2)
    cw = min(lw, int(np.ceil(side * fx)) + 2)
    ys = min(int(np.floor(y0 * fy / 2)) * 2, max(lh - ch, 0) // 2 * 2)
    xs = min(int(np.floor(x0 * fx / 2)) * 2, max(lw - cw, 0) // 2 * 2)
    return ys, xs, min(ch, lh - ys), min(cw, lw - xs)


def integral(images: np.ndarray) -> np.ndarray:
    """Summed-area tables of uint8 images (N x H x W x C) with a zero first row and column, exact in int32
    (255 x H x W stays below 2^31 for frames up to ~2,900 px square at the detection scale)."""
    n, h, w, c = images.shape
    table = np.zeros((n, h + 1, w + 1, c), np.int32)
    np.cumsum(images, axis=1, dtype=np.int32, out=table[:, 1:, 1:])
    np.cumsum(table[:, 1:, 1:], axis=2, out=table[:, 1:, 1:])
    return table


def area_windows(table: np.ndarray, shape: tuple[int, int], size: tuple[int, int],
                 cuts: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """Per image, the window ``cuts[i]`` = (y, x, height, width) of the image area-resized to ``size``
    (N x C x height x width, float32): the same bins as ``interpolate(mode="area")`` of the whole image (output
    pixel i averages input [floor(i H / h), ceil((i + 1) H / h))), from the summed-area table, so only the
    window's outputs are computed, from exact sums."""
    (hh, ww), (lh, lw) = shape, size
    ch, cw = cuts[0][2], cuts[0][3]
    ys = np.array([c[0] for c in cuts])[:, None] + np.arange(ch)
    xs = np.array([c[1] for c in cuts])[:, None] + np.arange(cw)
    r0, r1 = (ys * hh) // lh, -((-(ys + 1) * hh) // lh)  # floor(i H / h), ceil((i + 1) H / h)
    c0, c1 = (xs * ww) // lw, -((-(xs + 1) * ww) // lw)
    b = np.arange(len(cuts))[:, None, None]

    def at(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return table[b, r[:, :, None], c[:, None, :]]  # N x ch x cw x C

    total = (at(r1, c1) - at(r0, c1) - at(r1, c0) + at(r0, c0)).astype(np.float64)
    count = ((r1 - r0)[:, :, None] * (c1 - c0)[:, None, :])[..., None]
    return np.ascontiguousarray((total / count).astype(np.float32).transpose(0, 3, 1, 2))


def _pnet_boxes(reg: torch.Tensor, probs: torch.Tensor, scale: float, thresh: float,
                offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """facenet-pytorch's ``generateBoundingBox`` for P-Net output on level crops: cell indices are moved by each
    image's crop offset (in cells) before they become boxes, so boxes are the whole level's."""
    stride, cellsize = 2, 12
    reg = reg.permute(1, 0, 2, 3)
    mask = probs >= thresh
    mask_inds = mask.nonzero()
    image_inds = mask_inds[:, 0]
    score = probs[mask]
    reg = reg[:, mask].permute(1, 0)
    bb = mask_inds[:, 1:].type(reg.dtype).flip(1) + offsets[image_inds]
    q1 = ((stride * bb + 1) / scale).floor()
    q2 = ((stride * bb + cellsize - 1 + 1) / scale).floor()
    return torch.cat([q1, q2, score.unsqueeze(1), reg], dim=1), image_inds


@torch.no_grad()
def detect_in_windows(mtcnn, images: np.ndarray, windows: Sequence[tuple[int, int]], side: int
                      ) -> tuple[list, list, list]:
    """Faces in ``images`` (N x H x W x 3 uint8, one size) whose P-Net candidates lie in each image's window
    (top-left ``windows[i]``, ``side`` x ``side`` pixels); ``(boxes, probs, points)`` per image as
    ``facenet_pytorch.MTCNN.detect(..., landmarks=True)`` returns them (None for an image without a face)."""
    device = mtcnn.device
    imgs = torch.as_tensor(np.ascontiguousarray(images), device=device)
    dtype = next(mtcnn.pnet.parameters()).dtype
    imgs = imgs.permute(0, 3, 1, 2).type(dtype)
    n, (h, w) = len(imgs), imgs.shape[2:4]
    threshold = mtcnn.thresholds

    # First stage: P-Net on the window's part of every level of the whole frame's pyramid.
    table = integral(np.asarray(images, np.uint8))
    boxes, image_inds, scale_picks, offset = [], [], [], 0
    for scale in pyramid(h, w, mtcnn.min_face_size, mtcnn.factor):
        lh, lw = int(h * scale + 1), int(w * scale + 1)
        cuts = [_level_window(x0, y0, side, h, w, lh, lw) for x0, y0 in windows]
        ch, cw = cuts[0][2], cuts[0][3]
        if ch < 12 or cw < 12:
            continue
        crops = torch.from_numpy(area_windows(table, (h, w), (lh, lw), cuts)).to(device=device, dtype=dtype)
        reg, probs = mtcnn.pnet((crops - 127.5) * 0.0078125)
        cells = torch.tensor([[xs / 2, ys / 2] for ys, xs, _, _ in cuts], dtype=reg.dtype, device=device)
        boxes_scale, inds_scale = _pnet_boxes(reg, probs[:, 1], scale, threshold[0], cells)
        boxes.append(boxes_scale)
        image_inds.append(inds_scale)
        pick = batched_nms(boxes_scale[:, :4], boxes_scale[:, 4], inds_scale, 0.5)
        scale_picks.append(pick + offset)
        offset += boxes_scale.shape[0]
    if not boxes:
        return [None] * n, [[None]] * n, [None] * n
    boxes, image_inds = torch.cat(boxes), torch.cat(image_inds)
    picks = torch.cat(scale_picks)
    boxes, image_inds = boxes[picks], image_inds[picks]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    boxes, image_inds = boxes[pick], image_inds[pick]
    regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                         boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh, boxes[:, 4]]).permute(1, 0)
    boxes = rerec(boxes)

    # Second stage (R-Net) and third (O-Net), on the frame, as facenet-pytorch runs them.
    if len(boxes) > 0:
        data = _crops(imgs, boxes, image_inds, w, h, 24)
        out0, out1 = (o.permute(1, 0) for o in fixed_batch_process(data, mtcnn.rnet))
        score = out1[1, :]
        ipass = score > threshold[1]
        boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
        image_inds, mv = image_inds[ipass], out0[:, ipass].permute(1, 0)
        pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes, image_inds, mv = boxes[pick], image_inds[pick], mv[pick]
        boxes = rerec(bbreg(boxes, mv))
    points = torch.zeros(0, 5, 2, device=device)
    if len(boxes) > 0:
        data = _crops(imgs, boxes, image_inds, w, h, 48)
        out0, out1, out2 = (o.permute(1, 0) for o in fixed_batch_process(data, mtcnn.onet))
        score = out2[1, :]
        ipass = score > threshold[2]
        pts = out1[:, ipass]
        boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
        image_inds, mv = image_inds[ipass], out0[:, ipass].permute(1, 0)
        w_i, h_i = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
        px = w_i.repeat(5, 1) * pts[:5, :] + boxes[:, 0].repeat(5, 1) - 1
        py = h_i.repeat(5, 1) * pts[5:10, :] + boxes[:, 1].repeat(5, 1) - 1
        points = torch.stack((px, py)).permute(2, 1, 0)
        boxes = bbreg(boxes, mv)
        pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
        boxes, image_inds, points = boxes[pick], image_inds[pick], points[pick]

    boxes_np, points_np, inds = boxes.cpu().numpy(), points.cpu().numpy(), image_inds.cpu().numpy()
    out_boxes, out_probs, out_points = [], [], []
    for i in range(n):
        sel = inds == i
        if not sel.any():
            out_boxes.append(None)
            out_probs.append([None])
            out_points.append(None)
        else:
            out_boxes.append(boxes_np[sel, :4])
            out_probs.append(boxes_np[sel, 4])
            out_points.append(points_np[sel])
    return out_boxes, out_probs, out_points


def _crops(imgs: torch.Tensor, boxes: torch.Tensor, image_inds: torch.Tensor, w: int, h: int, size: int
           ) -> torch.Tensor:
    """The candidate boxes cut from the frames and resampled to ``size`` (R-Net 24, O-Net 48), normalised."""
    y, ey, x, ex = pad(boxes, w, h)
    data = [imresample(imgs[image_inds[k], :, (y[k] - 1):ey[k], (x[k] - 1):ex[k]].unsqueeze(0), (size, size))
            for k in range(len(y)) if ey[k] > (y[k] - 1) and ex[k] > (x[k] - 1)]
    return (torch.cat(data, dim=0) - 127.5) * 0.0078125
