"""Tiny real media for tests: a real face (scikit-image's astronaut) in videos and images.

MTCNN finds one face in ``skimage.data.astronaut()`` (box about [181, 62, 268, 172] at 512 px), so these
fixtures let tests check face extraction honestly instead of mocking the detector.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from skimage.data import astronaut


def face_image(size: int = 256) -> np.ndarray:
    """The astronaut photo as RGB uint8, resized to ``size`` x ``size``."""
    import cv2

    return cv2.resize(astronaut(), (size, size), interpolation=cv2.INTER_AREA)


# The face box in astronaut() at 512 px, as MTCNN reports it (x1, y1, x2, y2).
ASTRONAUT_FACE_BOX_512 = (181.0, 62.0, 268.0, 172.0)


def write_face_video(
    path: str | Path,
    n_frames: int = 12,
    size: int = 256,
    canvas: int = 320,
    fps: int = 10,
    faceless: bool = False,
) -> tuple[Path, list[tuple[float, float, float, float]]]:
    """Write an H.264 mp4 where the astronaut moves across a grey canvas; return the path and face boxes.

    The boxes are the face's position in each frame (canvas pixels), derived from the known box in the
    512 px photo, so tests can check that extracted crops overlap the real face.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = face_image(size)
    scale = size / 512.0
    boxes = []

    def frames():
        for i in range(n_frames):
            frame = np.full((canvas, canvas, 3), 127, np.uint8)
            if faceless:
                # A moving gradient: texture without a face.
                yy, xx = np.mgrid[0:canvas, 0:canvas]
                frame[..., 0] = ((xx + 7 * i) % 256).astype(np.uint8)
                frame[..., 1] = ((yy * 2) % 256).astype(np.uint8)
            else:
                dx = int((canvas - size) * i / max(n_frames - 1, 1))
                dy = (canvas - size) // 2
                frame[dy : dy + size, dx : dx + size] = img
                x1, y1, x2, y2 = ASTRONAUT_FACE_BOX_512
                boxes.append((x1 * scale + dx, y1 * scale + dy, x2 * scale + dx, y2 * scale + dy))
            yield frame

    _write_h264(path, frames(), (canvas, canvas), fps, crf=23)
    return path, boxes


def write_face_png(path: str | Path, size: int = 256) -> Path:
    """Write the astronaut face as a PNG image."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(face_image(size), cv2.COLOR_RGB2BGR))
    return path


def write_face_jpeg(path: str | Path, frame: tuple[int, int] = (640, 480), face: int = 200, quality: int = 90,
                    seed: int = 0) -> Path:
    """Write the astronaut (``face`` px photo) at a seeded place on a ``frame`` (w, h) grey canvas as a JPEG of
    ``quality``: a still image MTCNN finds one face in, of a chosen resolution and JPEG quantisation."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = frame
    rng = np.random.default_rng(seed)
    canvas = np.full((h, w, 3), 110, np.uint8)
    x, y = int(rng.integers(0, w - face + 1)), int(rng.integers(0, h - face + 1))
    canvas[y : y + face, x : x + face] = face_image(face)
    Image.fromarray(canvas).save(path, quality=quality)
    return path


def write_corrupt_video(path: str | Path) -> Path:
    """Write a file with an .mp4 name and garbage bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(2048))
    return path


def box_iou(a, b) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def write_composed_face_video(
    path: str | Path,
    n_frames: int = 8,
    face: int = 240,
    frame: tuple[int, int] = (1280, 720),
    fake: bool = False,
    seed: int = 0,
    fps: int = 10,
) -> Path:
    """The astronaut (``face`` px photo) composed into larger ``frame`` (w, h) frames, drifting a little.

    ``fake=True`` tints the face centre (a soft magenta blob over nose and mouth): a stand-in for a face swap
    whose altered face MTCNN finds less readily at reduced scale, which is how detection shortcuts lose fakes
    more often than reals.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = face_image(face).astype(np.float32)
    if fake:
        s = face / 512.0
        x1, y1, x2, y2 = (v * s for v in ASTRONAUT_FACE_BOX_512)
        yy, xx = np.mgrid[0:face, 0:face]
        blob = np.exp(-(((xx - (x1 + x2) / 2) / ((x2 - x1) * 0.3)) ** 2 + ((yy - (y1 + y2) / 2) / ((y2 - y1) * 0.3)) ** 2))
        img = img * (1 - 0.5 * blob[..., None]) + np.array([255, 40, 160], np.float32) * 0.5 * blob[..., None]
    img = img.astype(np.uint8)
    w, h = frame
    rng = np.random.default_rng(seed)
    ox, oy = int(rng.integers(0, w - face)), int(rng.integers(0, h - face))

    def frames():
        for i in range(n_frames):
            canvas = np.full((h, w, 3), 110, np.uint8)
            dx = min(max(ox + int(20 * np.sin(i / 3)), 0), w - face)
            canvas[oy : oy + face, dx : dx + face] = img
            yield canvas

    _write_h264(path, frames(), (w, h), fps, crf=23)
    return path


def _write_h264(path: Path, frames, size: tuple[int, int], fps: int, crf: int) -> None:
    """Encode RGB frames (w, h) as H.264 (yuv420p, ultrafast) at ``crf``."""
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "ultrafast"}
        for canvas in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_faces_video(
    path: str | Path,
    faces: list[tuple[int, int, int]],
    n_frames: int = 6,
    frame: tuple[int, int] = (640, 320),
    step: tuple[int, int] = (6, 2),
    mirror: tuple[bool, ...] = (),
    gain: tuple[float, ...] = (),
    fps: int = 10,
    enter: tuple[int, ...] = (),
) -> tuple[Path, list[list[tuple[float, float, float, float]]]]:
    """Several astronauts in one H.264 video (two people side by side, a bystander...); return the path and,
    per frame, each face's box (canvas pixels, in the order of ``faces``).

    ``faces``: ``(photo size, x, y)`` of each astronaut photo in frame 0; every photo drifts by ``step`` pixels
    per frame. ``mirror[i]`` flips photo i left-right and ``gain[i]`` scales its brightness, so two faces of a
    frame are different images (a model scores them differently) while MTCNN finds both as well as the original.
    ``enter[i]``: the frame at which face i appears (absent before it: a person entering mid-video; its boxes
    are listed from that frame on).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = frame
    photos = []
    for i, (size, _, _) in enumerate(faces):
        img = face_image(size)
        if i < len(gain):
            img = np.clip(img.astype(np.float32) * gain[i], 0, 255).astype(np.uint8)
        photos.append(np.ascontiguousarray(img[:, ::-1]) if i < len(mirror) and mirror[i] else img)
    boxes: list[list[tuple[float, float, float, float]]] = []

    def frames():
        for t in range(n_frames):
            canvas = np.full((h, w, 3), 120, np.uint8)
            frame_boxes = []
            for i, ((size, x, y), img) in enumerate(zip(faces, photos, strict=True)):
                if i < len(enter) and t < enter[i]:
                    continue
                px = min(max(x + step[0] * t, 0), w - size)
                py = min(max(y + step[1] * t, 0), h - size)
                canvas[py : py + size, px : px + size] = img
                s = size / 512.0
                x1, y1, x2, y2 = ASTRONAUT_FACE_BOX_512
                if i < len(mirror) and mirror[i]:
                    x1, x2 = 512 - x2, 512 - x1
                frame_boxes.append((x1 * s + px, y1 * s + py, x2 * s + px, y2 * s + py))
            boxes.append(frame_boxes)
            yield canvas

    _write_h264(path, frames(), (w, h), fps, crf=18)
    return path, boxes
