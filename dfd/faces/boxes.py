"""Face detections and box arithmetic: what a detector returns for one image, and the box maths face choice,
tracking and the per-video scale share.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class Detections:
    """Faces found in one image: boxes (k, 4) x1 y1 x2 y2, probs (k,), landmarks (k, 5, 2); all float32.

    ``scale`` is the detection scale that produced them (1.0 = full resolution); ``fallback`` marks detections
    made by the full-resolution fallback after the reduced scale found no face; ``near`` marks detections made
    by the search near a neighbouring frame's face (contract ``search_roi``).
    """

    boxes: np.ndarray
    probs: np.ndarray
    landmarks: np.ndarray
    scale: float = 1.0
    fallback: bool = False
    near: bool = False

    def __len__(self) -> int:
        return len(self.boxes)


def empty_detections(scale: float = 1.0) -> Detections:
    return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32), scale)


def largest_side(det: Detections) -> float:
    """The longer side of the largest box among the detections."""
    return float(np.maximum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1]).max())


def within_size(det: Detections, max_side: float) -> Detections:
    """The detections whose box side is at most ``max_side``."""
    if len(det) == 0:
        return det
    side = np.maximum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])
    keep = side <= max_side
    return det if keep.all() else Detections(det.boxes[keep], det.probs[keep], det.landmarks[keep], det.scale)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of (k, 4) x1 y1 x2 y2 boxes."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
