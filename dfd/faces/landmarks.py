"""Geometry of MTCNN's 5 landmarks (left eye, right eye, nose, left and right mouth corner): one home.

* the ArcFace alignment template and the similarity transform that maps a face onto it (aligned crops);
* the face outline extrapolated from the 5 points and the ellipse used when landmarks are unknown (SBI's
  blending masks in numpy, ADDNet's attention masks in torch: both take the same constants from here).

Numpy only, so the organiser-side predict path can align without the training stack.
"""

from __future__ import annotations

import numpy as np

# The ArcFace 5-point template of the 112 x 112 aligned face (insightface's reference points, x shifted by 8
# for the square crop), as fractions of the crop side: DeepfakeBench and GenD align to these same points.
ARCFACE_TEMPLATE = (
    np.array(
        [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
        np.float64,
    )
    / 112.0
)

# A face outline in a frame spanned by the eyes and the mouth: x in units of the eye-to-eye vector (eyes at
# x = +-0.5) from the eyes' midpoint, y in units of the vector from the eyes' midpoint to the mouth's midpoint
# (y = 1 is the mouth). Roughly the hull of the 68-point dlib layout (brows, temples, cheeks, jaw, chin) from
# average face proportions: the chin about 0.8 eye-mouth distances below the mouth, the cheeks about one
# interocular distance from the centre.
FACE_OUTLINE = np.array(
    [
        [-1.00, -0.35], [-0.78, -0.62], [-0.35, -0.72], [0.35, -0.72], [0.78, -0.62], [1.00, -0.35],
        [1.05, 0.25], [0.98, 0.85], [0.80, 1.35], [0.45, 1.70], [0.00, 1.82],
        [-0.45, 1.70], [-0.80, 1.35], [-0.98, 0.85], [-1.05, 0.25],
    ],
    dtype=np.float32,
)  # fmt: skip

# Where the face is in a dfd crop when no landmarks say otherwise: an ellipse (centre x, centre y, semi-axis x,
# semi-axis y) as fractions of the crop's width and height (the face box is centred; margin around it).
FACE_ELLIPSE = (0.5, 0.52, 0.30, 0.38)


def arcface_template(size: int, scale: float = 1.3) -> np.ndarray:
    """The 5 template points in pixels of a ``size`` crop that shows ``scale`` x the ArcFace face area.

    ``scale`` 1.3 leaves the same context around the face as DeepfakeBench's and GenD's 1.3 (the template
    shrinks towards the centre by 1/scale).
    """
    return (size * (ARCFACE_TEMPLATE + (scale - 1.0) / 2.0) / scale).astype(np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2 x 3 least-squares similarity (rotation, uniform scale, translation; no reflection) src -> dst.

    Umeyama's closed form in 2-D: the same estimate as skimage's ``SimilarityTransform``, deterministic, and
    needing nothing but numpy.
    """
    s = np.asarray(src, np.float64).reshape(-1, 2)
    d = np.asarray(dst, np.float64).reshape(-1, 2)
    ms, md = s.mean(0), d.mean(0)
    sc, dc = s - ms, d - md
    norm = float((sc**2).sum())
    if norm <= 1e-12:
        raise ValueError("landmarks are degenerate (all points coincide); cannot align the face")
    a = float((sc * dc).sum())  # sum of dot products
    b = float((sc[:, 0] * dc[:, 1] - sc[:, 1] * dc[:, 0]).sum())  # sum of cross products
    c, k = a / norm, b / norm  # scale * cos(theta), scale * sin(theta)
    rot = np.array([[c, -k], [k, c]])
    t = md - rot @ ms
    return np.hstack([rot, t[:, None]])


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points with a 2 x 3 affine matrix."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    return (p @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def face_outline(landmarks: np.ndarray) -> np.ndarray:
    """(15, 2) outline points (pixels) of the face around 5 landmarks, by ``FACE_OUTLINE``."""
    pts = np.asarray(landmarks, np.float32).reshape(5, 2)
    eyes = (pts[0] + pts[1]) / 2
    mouth = (pts[3] + pts[4]) / 2
    ex, ey = pts[1] - pts[0], mouth - eyes
    return eyes + FACE_OUTLINE[:, :1] * ex + FACE_OUTLINE[:, 1:] * ey


def ellipse_polygon(shape: tuple[int, int], points: int = 32) -> np.ndarray:
    """``FACE_ELLIPSE`` as a polygon (points, 2) in pixels of an image of ``shape`` (h, w)."""
    h, w = shape
    cx, cy, ax, ay = FACE_ELLIPSE
    t = np.linspace(0, 2 * np.pi, points, endpoint=False, dtype=np.float32)
    return np.stack([(cx + ax * np.cos(t)) * w, (cy + ay * np.sin(t)) * h], axis=1)
