"""``dfd-sbi-grid``: look at self-blended images before training on them.

Writes one PNG with three rows — real faces, their blending masks, the self-blended fakes — from a folder
of face images, a frame manifest (``crop_path`` + ``landmarks``), or, with no input, the astronaut's face
found by MTCNN. ``--wandb`` also logs the grid to Weights & Biases (offline unless WANDB_MODE=online).

    dfd-sbi-grid --images .cache/dfd/ffpp/manifest.parquet --out sbi.png --n 8 --seed 0
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from dfd.cli._args import ArgumentParser, fail, user_errors
from dfd.data.sbi import SelfBlend
from dfd.errors import UserError
from dfd.store.media import IMAGE_EXTENSIONS, MediaError, read_image


def _read_rgb(path: Path) -> np.ndarray | None:
    try:
        return read_image(path)
    except MediaError:
        return None


def _detect_landmarks(images: list[np.ndarray]) -> list[np.ndarray]:
    """MTCNN's 5 points of the most confident face per image; NaN where none is found."""
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, device="cpu")
    out = []
    for img in images:
        _, probs, points = mtcnn.detect(img, landmarks=True)
        if points is None:
            out.append(np.full((5, 2), np.nan, np.float32))
        else:
            best = int(np.argmax(np.asarray(probs, dtype=np.float32)))
            out.append(np.asarray(points[best], dtype=np.float32))
    return out


@functools.cache
def _astronaut_face() -> tuple[np.ndarray, np.ndarray]:
    """MTCNN's box and 5 points on skimage's astronaut (detected once per process)."""
    from facenet_pytorch import MTCNN
    from skimage.data import astronaut

    boxes, _, points = MTCNN(device="cpu").detect(astronaut(), landmarks=True)
    if boxes is None:
        raise UserError("MTCNN found no face in the astronaut demo image; pass --images instead")
    return np.asarray(boxes[0], dtype=np.float32), np.asarray(points[0], dtype=np.float32)


def demo_face(size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A real face crop with MTCNN landmarks: the astronaut, cropped like dfd's extractor (box + 30 % margin)."""
    from skimage.data import astronaut

    img = astronaut()
    box, points = _astronaut_face()
    x1, y1, x2, y2 = box
    side = 1.3 * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    sx, sy = cx - side / 2, cy - side / 2
    mat = np.array([[size / side, 0, -sx * size / side], [0, size / side, -sy * size / side]], np.float32)
    crop = cv2.warpAffine(img, mat, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT_101)
    lm = (points - (sx, sy)) * (size / side)
    return crop, lm.astype(np.float32)


def load_faces(source: str | None, n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Up to ``n`` (image, landmarks) pairs from a folder, a manifest, or the demo face (repeated)."""
    if source is None:
        face, lm = demo_face()
        return [(face, lm)] * n
    path = Path(source)
    if path.suffix == ".parquet":
        from dfd.store.cache import manifest_record
        from dfd.store.roots import CROP_ROOT_COLUMN, crop_roots
        from dfd.store.schema import read_manifest

        df = read_manifest(path)
        where = crop_roots(path, None, (manifest_record(path) or {}).get("roots"))
        reals = df[df["label"] == 0]
        df = reals if len(reals) else df  # SBI is made from reals; show fakes only if there are none
        rows = df.sample(n=min(n, len(df)), random_state=seed) if len(df) > n else df
        faces, bad = [], []
        for row in rows.itertuples():
            img = _read_rgb(where.resolve(row.crop_path, getattr(row, CROP_ROOT_COLUMN, "")))
            if img is None:
                bad.append(str(row.crop_path))
                continue
            lm = np.asarray(row.landmarks, dtype=np.float32).reshape(-1, 2)
            faces.append((img, lm))
        if bad:
            print(f"warning: skipped {len(bad)} unreadable crops: {bad[:5]}", file=sys.stderr)
        return faces
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[:n]
        images = [(f, _read_rgb(f)) for f in files]
        bad = [str(f) for f, im in images if im is None]
        if bad:
            print(f"warning: skipped {len(bad)} unreadable images: {bad[:5]}", file=sys.stderr)
        images = [im for _, im in images if im is not None]
        return list(zip(images, _detect_landmarks(images), strict=True))
    raise UserError(f"--images {source}: not a folder or a .parquet frame manifest")


def make_grid(
    faces: list[tuple[np.ndarray, np.ndarray | None]], blend: SelfBlend, seed: int, tile: int
) -> np.ndarray:
    """Rows: reals, masks, self-blends; one column per face, ``tile`` px squares. Returns RGB uint8."""
    cols = []
    for k, (img, lm) in enumerate(faces):
        real, fake, mask = blend.pair(img, lm, np.random.default_rng([seed, k]))
        m = cv2.cvtColor((mask * 255).astype(np.uint8), cv2.COLOR_GRAY2RGB)
        cols.append(
            np.concatenate(
                [cv2.resize(x, (tile, tile), interpolation=cv2.INTER_AREA) for x in (real, m, fake)]
            )
        )
    return np.concatenate(cols, axis=1)


def main(argv: list[str] | None = None) -> int:
    """Console script: write (and optionally log) a grid of reals, masks and self-blended fakes."""
    ap = ArgumentParser(prog="dfd-sbi-grid", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--images", help="folder of face images or a frame manifest .parquet (default: demo face)"
    )
    ap.add_argument("--out", default="sbi_grid.png", help="output PNG (default: %(default)s)")
    ap.add_argument("--n", type=int, default=8, help="number of faces / columns (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tile", type=int, default=128, help="tile size in pixels (default: %(default)s)")
    ap.add_argument("--wandb", action="store_true", help="also log the grid to W&B (offline by default)")
    ap.add_argument("--project", default="dfd", help="W&B project (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.n < 1 or args.tile < 8:
        ap.error("--n must be >= 1 and --tile >= 8")

    with user_errors():
        faces = load_faces(args.images, args.n, args.seed)
    if not faces:
        fail(f"no readable faces in {args.images}")
    grid = make_grid(faces, SelfBlend(), args.seed, args.tile)
    out = Path(args.out)
    with user_errors():
        out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), grid[..., ::-1]):
        fail(f"could not write {out} (is the extension .png and the folder writable?)")
    print(f"wrote {out} ({grid.shape[1]}x{grid.shape[0]}): rows = real, mask, self-blend; {len(faces)} faces")
    if args.wandb:
        import wandb

        mode = "online" if os.environ.get("WANDB_MODE", "").lower() == "online" else "offline"
        run = wandb.init(project=args.project, job_type="sbi-grid", mode=mode, config=vars(args))
        run.log({"sbi/grid": wandb.Image(grid, caption="rows: real, mask, self-blend")})
        run.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
