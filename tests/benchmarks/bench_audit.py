"""What does the shortcut audit cost per 1000 files? Header probing vs decoding, a cached re-run, the classifier.

On the same files (JPEG images and H.264 videos, written here):

* baseline: decoding every frame of each file (what reading metadata "the expensive way" costs: PyAV decodes
  the videos, PIL decodes the images);
* dfd, cold: ``dfd.store.probe.probe_files`` without a cache (container headers, JPEG tables; nothing decoded);
* dfd, cached: the same call again (the cache beside the index: a stat per file);
* the audit itself: ``dfd.sources.audit.audit_items`` (features, single-feature AUCs, 5-fold CV of gradient
  boosting) on the probed rows.

    .venv/bin/python tests/benchmarks/bench_audit.py [--images 1000] [--videos 200] [--frames 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd
from PIL import Image

from dfd.sources.audit import AuditSettings, audit_items
from dfd.store.probe import probe_files


def write_files(root: Path, images: int, videos: int, frames: int) -> list[tuple[str, str, int]]:
    """(path, kind, label) of ``images`` JPEGs and ``videos`` H.264 videos, half of each labelled fake."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(images):
        w, h = [(640, 480), (512, 512), (800, 600)][i % 3]
        img = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        rel = f"img/{i:05d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / rel, quality=int(rng.choice([75, 85, 95])))
        out.append((rel, "image", i % 2))
    for i in range(videos):
        rel = f"vid/{i:05d}.mp4"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(root / rel), mode="w") as c:
            s = c.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
            s.options = {"preset": "ultrafast"}
            for t in range(frames):
                arr = np.full((240, 320, 3), (t * 7 + i) % 255, np.uint8)
                for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        out.append((rel, "video", i % 2))
    return out


def decode_all(root: Path, files: list[tuple[str, str, int]]) -> None:
    for rel, kind, _ in files:
        if kind == "image":
            with Image.open(root / rel) as im:
                im.load()
        else:
            with av.open(str(root / rel)) as c:
                for _ in c.decode(video=0):
                    pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--videos", type=int, default=200)
    p.add_argument("--frames", type=int, default=30, help="frames per video")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = write_files(root, args.images, args.videos, args.frames)
        items = [(rel, kind) for rel, kind, _ in files]
        for kind, n in (("image", args.images), ("video", args.videos)):
            if not n:
                continue
            sub = [f for f in files if f[1] == kind]
            t = time.perf_counter()
            decode_all(root, sub)
            decode = time.perf_counter() - t
            cache = root / f"{kind}_media.parquet"
            sub_items = [(rel, k) for rel, k, _ in sub]
            t = time.perf_counter()
            probe_files(sub_items, root, cache)
            cold = time.perf_counter() - t
            t = time.perf_counter()
            probe_files(sub_items, root, cache)
            warm = time.perf_counter() - t
            per = 1000 / n
            print(f"{kind}s ({n}): decode every frame {decode * per:.2f} s/1000 files | probe headers {cold * per:.2f} "
                  f"s/1000 ({decode / cold:.0f}x less) | cached re-run {warm * per:.3f} s/1000 ({cold / warm:.0f}x less)")
        meta = probe_files(items, root, root / "all_media.parquet")
        rows = pd.concat([pd.DataFrame({"label": [f[2] for f in files], "group": [f[0] for f in files]}),
                          meta.drop(columns=["path", "kind"])], axis=1)
        audit_items(rows.head(20), "warm-up")  # scikit-learn's import, once
        t = time.perf_counter()
        res = audit_items(rows, "bench", AuditSettings())
        took = time.perf_counter() - t
        print(f"audit of {len(rows)} files (5-fold CV): {took:.2f} s = {took * 1000 / len(rows):.2f} s/1000 files; "
              f"AUC {res.auc:.2f} (labels drawn independently of the files: ~0.5)")


if __name__ == "__main__":
    main()
