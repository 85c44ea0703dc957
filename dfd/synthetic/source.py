"""``dataset=synthetic``: the embedded dataset as a dataset source, generated once per (domain, seed, sizes)
into its crop cache, then read like any extracted dataset.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from dfd import atomic
from dfd.errors import DatasetError
from dfd.faces.contract import CropContract
from dfd.sources.base import DatasetSource
from dfd.store.cache import make_record, split_drop_stats
from dfd.store.schema import validate_manifest, write_parquet
from dfd.synthetic.draw import DOMAINS, GENERATOR_VERSION, make_video


class SyntheticSource(DatasetSource):
    """``dataset=synthetic``: generated once per (domain, seed, sizes) into the crop cache, then read like any other.

    Args:
        domain: forgery pipeline, one of ``DOMAINS`` (a, b, c, d).
        seed: everything is a deterministic function of the seed.
        image_size: crop size in pixels (small by default: CPU training in minutes).
        videos: number of videos per split (half real, half fake unless ``fake_ratio`` says otherwise).
        frames_per_video: frames per video (each a jittered pose of the same scene).
    """

    config_name = "synthetic"

    def __init__(
        self,
        name: str = "synthetic_a",
        domain: str = "a",
        seed: int = 0,
        image_size: int = 64,
        videos: dict[str, int] | None = None,
        frames_per_video: int = 4,
        fake_ratio: float = 0.5,
        cache_dir: str | Path = ".cache/dfd/synthetic",
        root: str | Path | None = None,
    ) -> None:
        if domain not in DOMAINS:
            raise DatasetError(f"synthetic: unknown domain {domain!r}; valid domains: {', '.join(DOMAINS)}")
        super().__init__(name=name, root=root, cache_dir=cache_dir)
        self.domain = domain
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.videos = {"train": 200, "val": 40, "test": 60, **dict(videos or {})}
        self.frames_per_video = int(frames_per_video)
        self.fake_ratio = float(fake_ratio)

    def _params(self) -> dict:
        return {
            "version": GENERATOR_VERSION,
            "domain": asdict(DOMAINS[self.domain]),
            "seed": self.seed,
            "image_size": self.image_size,
            "videos": self.videos,
            "frames_per_video": self.frames_per_video,
            "fake_ratio": self.fake_ratio,
        }

    @property
    def data_dir(self) -> Path:
        """This configuration's own folder in the cache (a hash of every parameter)."""
        digest = hashlib.sha1(json.dumps(self._params(), sort_keys=True).encode()).hexdigest()[:10]
        return self.cache_dir / f"{self.domain}-{digest}"

    @property
    def manifest_path(self) -> Path:
        return self.data_dir / "manifest.parquet"

    def build_index(self) -> pd.DataFrame:
        """Video index of the generated set (one row per synthetic video)."""
        m = self.load_manifest()
        first = m.drop_duplicates("video_id")
        return first.assign(path=first["video_id"], kind="frames")[
            ["video_id", "label", "split", "method", "identity", "path", "kind", "source_video"]
        ].reset_index(drop=True)

    def media_root(self) -> Path:
        """The index's paths (one folder of generated crops per video) are relative to ``crops/``."""
        return self.data_dir / "crops"

    def _index_rows(self) -> pd.DataFrame:  # pragma: no cover - build_index is overridden
        return self.build_index()

    def crop_contract(self) -> CropContract:
        """Faces are drawn as dfd-extract would crop them (centred, ~1.3x margin) at ``image_size``: a model
        trained here predicts on real media with dfd-extract's detection and a crop of that size."""
        return CropContract(size=self.image_size)

    def prepare(self) -> Path:
        """Generate the crops and manifest once; later calls (and other processes) reuse them."""
        if self.manifest_path.is_file():
            return self.manifest_path
        final = self.data_dir
        tmp = atomic.temp_sibling(final)  # a folder: renamed into place whole
        rows = self._generate(tmp)
        df = validate_manifest(pd.DataFrame(rows), where=f"synthetic {self.domain}")
        # Every drawn frame has its face: nothing dropped, recorded as extraction records it (per split).
        videos = df.groupby("video_id", sort=False).agg(label=("label", "first"), split=("split", "first"),
                                                        method=("method", "first"), sampled=("frame", "size"))
        drops = {"split": split_drop_stats(videos.reset_index().assign(dropped=0, failed=False).to_dict("records"))}
        record = make_record(self.name, None, self.crop_contract(), {"format": "png"}, synthetic=self._params(),
                             drops=drops)
        write_parquet(df, tmp / "manifest.parquet", metadata={"dfd.cache": record})
        (tmp / "params.json").write_text(json.dumps(self._params(), indent=2))
        try:
            tmp.rename(final)  # atomic: a concurrent or killed generation never leaves a half-written set
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first: keep theirs
        return self.manifest_path

    def _generators(self, split_idx: int, k: int) -> tuple[np.random.Generator, np.random.Generator | None,
                                                            int | None]:
        """(video generator, its source real's generator or None, that real's number) of video ``k`` of a split."""
        dom_idx = sorted(DOMAINS).index(self.domain)
        n = self.videos.get(("train", "val", "test")[split_idx], 0)
        n_fake = int(round(n * self.fake_ratio))
        n_real = n - n_fake
        # One generator per video: the same video comes out the same whatever the other counts are.
        rng = np.random.default_rng([self.seed, dom_idx, split_idx, k])
        # Each fake is made from a real video of its split (reals share fakes round-robin when fakes
        # outnumber them), as FF++'s are: same person, pose and background, the face swapped.
        j = n_fake + k % n_real if k < n_fake and n_real else None
        source = np.random.default_rng([self.seed, dom_idx, split_idx, j]) if j is not None else None
        return rng, source, j

    def video_masks(self, video_id: str) -> np.ndarray:
        """The blend masks of one generated video, regenerated from its seed: (frames, size, size) float32 in
        0-1, aligned with its crops. A fake's is the mask its swapped face was pasted through; a real's the
        one a swap of it would use (see :func:`dfd.synthetic.draw.make_video`)."""
        try:
            domain, split, kind, number = video_id.split("/")
            split_idx, k = ("train", "val", "test").index(split), int(number)
        except ValueError:
            raise DatasetError(f"synthetic: {video_id!r} is not a synthetic video id (<domain>/<split>/<real|fake>/"
                               "<number>)") from None
        if domain != self.domain or (kind == "fake") != (k < int(round(self.videos[split] * self.fake_ratio))):
            raise DatasetError(f"synthetic: {video_id!r} is not a video of this set (domain {self.domain}, "
                               f"{self.videos[split]} {split} videos)")
        rng, source, _ = self._generators(split_idx, k)
        masks: list[np.ndarray] = []
        make_video(DOMAINS[self.domain], kind == "fake", self.image_size, self.frames_per_video, rng, source=source,
                   masks=masks)
        return np.stack(masks).astype(np.float32)

    def _generate(self, out: Path) -> list[dict]:
        dom = DOMAINS[self.domain]
        rows = []
        method = f"{dom.source}_{dom.mask}"
        for split_idx, split in enumerate(("train", "val", "test")):
            n = self.videos.get(split, 0)
            n_fake = int(round(n * self.fake_ratio))
            for k in range(n):
                fake = k < n_fake
                rng, source, j = self._generators(split_idx, k)
                images, lms = make_video(dom, fake, self.image_size, self.frames_per_video, rng, source=source)
                vid = f"{self.domain}/{split}/{'fake' if fake else 'real'}/{k:04d}"
                source_vid = f"{self.domain}/{split}/real/{j:04d}" if j is not None else ""
                (out / "crops" / vid).mkdir(parents=True, exist_ok=True)
                for f, (img, lm) in enumerate(zip(images, lms, strict=True)):
                    rel = f"crops/{vid}/{f:06d}.png"
                    cv2.imwrite(str(out / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                    x1, y1 = lm.min(axis=0)
                    x2, y2 = lm.max(axis=0)
                    rows.append(
                        {
                            "video_id": vid,
                            "frame": f,
                            "crop_path": rel,
                            "label": int(fake),
                            "split": split,
                            "method": method if fake else "real",
                            "identity": f"{split}-{k if j is None else j}",  # a fake shows its source's person
                            "source_video": source_vid,
                            "bbox": [float(x1), float(y1), float(x2), float(y2)],
                            "landmarks": lm.reshape(-1).tolist(),
                            "score": 1.0,
                        }
                    )
        return rows
