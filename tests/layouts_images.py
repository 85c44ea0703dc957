"""Still-image datasets in the generic ``folder`` layout (``real/``, ``fake/<method>/``), built in code: face
images whose metadata either gives the label away (the shortcut audit's positive case) or does not.

Every image is the astronaut (MTCNN finds one face) on a grey canvas, written by :func:`tests.media.write_face_jpeg`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.media import write_face_jpeg, write_face_video


def make_shortcut_images(root: Path, n: int = 6, methods: tuple[str, ...] = ("m1", "m2")) -> Path:
    """``n`` real JPEGs at 1280x720 and ``n`` fake JPEGs per method at 640x480 (same face size, same quality):
    a source shortcut, the resolution alone gives every label away."""
    for i in range(n):
        write_face_jpeg(root / "real" / f"r{i}.jpg", (1280, 720), face=240, quality=90, seed=i)
        for k, m in enumerate(methods):
            write_face_jpeg(root / "fake" / m / f"{m}_{i}.jpg", (640, 480), face=240, quality=90, seed=100 * (k + 1) + i)
    return root


def make_shortcut_splits(root: Path) -> Path:
    """The shortcut of :func:`make_shortcut_images` in split folders (``<split>/real``, ``<split>/fake/<method>``):
    train 3 real + 2 + 1 fake (enough for a 3-fold audit of the training split), val 1 + 1, test 1 + 1 + 1 (both
    methods: a per-method breakdown)."""
    counts = {"train": (3, {"m1": 2, "m2": 1}), "val": (1, {"m1": 1}), "test": (1, {"m1": 1, "m2": 1})}
    seed = 0
    for split, (reals, fakes) in counts.items():
        for i in range(reals):
            seed += 1
            write_face_jpeg(root / split / "real" / f"r{i}.jpg", (1280, 720), face=240, quality=90, seed=seed)
        for m, k in fakes.items():
            for i in range(k):
                seed += 1
                write_face_jpeg(root / split / "fake" / m / f"{m}_{i}.jpg", (640, 480), face=240, quality=90, seed=seed)
    return root


def make_alike_images(root: Path, n: int = 30, seed: int = 1) -> Path:
    """``n`` real and ``n`` fake JPEGs whose size, face size and JPEG quality are drawn from one distribution,
    whatever the label: metadata says nothing about it."""
    rng = np.random.default_rng(seed)
    sizes = [(320, 240), (400, 300), (480, 360), (360, 360)]
    for label in ("real", "fake"):
        for i in range(n):
            w, h = sizes[int(rng.integers(len(sizes)))]
            write_face_jpeg(root / label / f"{label}{i}.jpg", (w, h), face=int(rng.integers(100, 200)),
                            quality=int(rng.choice([70, 80, 90])), seed=int(rng.integers(1 << 30)))
    return root


def make_mixed_media(root: Path, videos: int = 2, images: int = 3, split: str = "") -> Path:
    """A set holding both kinds: ``videos`` face videos and ``images`` face images per label (under ``split/``
    when given: every item in that split)."""
    top = root / split if split else root
    for label in ("real", "fake"):
        for i in range(videos):
            write_face_video(top / label / f"{label}_v{i}.mp4", n_frames=3, size=160, canvas=192)
        for i in range(images):
            write_face_jpeg(top / label / f"{label}_i{i}.jpg", (256, 256), face=192, quality=90, seed=i)
    return root
