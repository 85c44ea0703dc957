"""FaceForensics++: the official download layout and the official train/val/test pair lists."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources import kinds
from dfd.sources.base import DatasetSource, assign_splits, index_frame
from dfd.sources.report import Skip
from dfd.store.schema import SPLITS

log = logging.getLogger(__name__)

PAPER_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
# FaceShifter follows the same naming and pair splits as the paper's four; DeepFakeDetection does not.
PAIR_METHODS = (*PAPER_METHODS, "FaceShifter")
DFD = "DeepFakeDetection"
LOSSLESS = ("raw", "c0")  # the download script says raw, the repo's compression scripts say c0
SPLITS_URL = "https://github.com/ondyari/FaceForensics/tree/master/dataset/splits"


class FFPP(DatasetSource):
    """FaceForensics++ as written by its download script.

    Reals of a split are every YouTube id in that split's pairs; fakes are ``a_b`` and ``b_a`` for each pair
    and method, so identities never cross splits. ``DeepFakeDetection`` (actors, no official split) is split
    by actor: a fake whose two actors fall in different splits is dropped rather than leaked. Every fake's
    ``source_video`` is the real video it was made from (``youtube/<target>``; DeepFakeDetection:
    ``actors/<target>__<scene>``), for paired sampling.

    Args:
        methods: manipulation folders to include (the paper's four by default).
        compression: ``c23``, ``c40``, or the lossless level as ``raw``/``c0`` (whichever folder exists).
        splits_dir: folder holding the official ``train.json``, ``val.json``, ``test.json`` (default
            ``<root>/splits``).
        dfd_val_fraction, dfd_test_fraction: share of DeepFakeDetection actors held out for val/test.
        media: ``videos`` (``<comp>/videos/<stem>.mp4``, kind ``video``) or ``images`` (the frames the FF++
            repo's extraction script writes, ``<comp>/images/<stem>/0000.png``, kind ``frames``).
    """

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        methods: Sequence[str] = PAPER_METHODS,
        compression: str = "c23",
        splits_dir: str | Path | None = None,
        dfd_val_fraction: float = 0.15,
        dfd_test_fraction: float = 0.15,
        media: str = "videos",
    ) -> None:
        super().__init__(name, root, cache_dir)
        unknown = sorted(set(methods) - {*PAIR_METHODS, DFD})
        if unknown:
            raise DatasetError(
                f"{name}: unknown method(s) {unknown}; choose from {[*PAIR_METHODS, DFD]} in dataset.methods"
            )
        if media not in ("videos", "images"):
            raise DatasetError(f"{name}: dataset.media must be videos or images, got {media!r}")
        self.media = media
        self.methods = list(methods)
        self.compression = str(compression)
        self.splits_dir = Path(splits_dir) if splits_dir else None
        self.dfd_val_fraction = dfd_val_fraction
        self.dfd_test_fraction = dfd_test_fraction
        self.dropped: list[str] = []  # DeepFakeDetection fakes whose actors straddle two splits
        self.skipped: list[Skip] = []  # listed videos not on disk (a partial download)

    # -- layout ---------------------------------------------------------------------------------------
    def data_paths(self) -> list[Path]:
        # Sources sharing FF++'s tree (dfd, faceshifter) are present when their method's folder is.
        if self.root is None:
            return []
        return [self.root / "manipulated_sequences" / m for m in self.methods] or [self.root]

    def _videos_dir(self, base: Path) -> Path:
        """``<base>/<comp>/<media>``, treating ``raw`` and ``c0`` as the same lossless level. A method folder that
        is not there at all (a partial download) gives the path it would have: its videos are skipped and said."""
        wanted = LOSSLESS if self.compression in LOSSLESS else (self.compression,)
        for comp in wanted:
            if (base / comp / self.media).is_dir():
                return base / comp / self.media
        if not base.exists() and base.parent.is_dir():
            return base / wanted[0] / self.media
        have = sorted(p.name for p in base.iterdir() if (p / self.media).is_dir()) if base.is_dir() else []
        hint = f"available there: {have}; set dataset.compression=<one of them>" if have else (
            "download it with the official script (download-FaceForensics.py -c <comp>) or fix dataset.root"
        )
        raise DatasetError(f"{self.name}: expected {self.media} in {base / wanted[0] / self.media}; {hint}")

    def _read_pairs(self) -> dict[str, list[tuple[str, str]]]:
        folder = self.splits_dir or self.root / "splits"
        pairs: dict[str, list[tuple[str, str]]] = {}
        for split in SPLITS:
            path = folder / f"{split}.json"
            if not path.is_file():
                raise DatasetError(
                    f"{self.name}: official split file {path} not found; copy train.json, val.json and "
                    f"test.json from {SPLITS_URL} into {folder} or set dataset.splits_dir=<folder holding them>"
                )
            try:
                raw = json.loads(path.read_text())
                pairs[split] = [(str(a), str(b)) for a, b in raw]
            except (ValueError, TypeError) as e:
                raise DatasetError(
                    f"{self.name}: {path} is not a JSON list of id pairs like [[\"071\", \"054\"], ...] ({e})"
                ) from e
        seen: dict[str, str] = {}
        for split, split_pairs in pairs.items():
            for vid in {v for p in split_pairs for v in p}:
                if seen.setdefault(vid, split) != split:
                    raise DatasetError(
                        f"{self.name}: id {vid} is in both {seen[vid]}.json and {split}.json in {folder}; "
                        "use the official split files unmodified"
                    )
        return pairs

    # -- index ----------------------------------------------------------------------------------------
    def _index_rows(self) -> pd.DataFrame:
        if not (self.root / "original_sequences").is_dir():
            raise DatasetError(
                f"{self.name}: {self.root} has no original_sequences/ folder; set dataset.root to the folder "
                "the FaceForensics++ download script wrote (holding original_sequences/ and manipulated_sequences/)"
            )
        rows: list[dict] = []
        pair_methods = [m for m in self.methods if m != DFD]
        if pair_methods:
            rows += self._pair_rows(pair_methods)
        if DFD in self.methods:
            rows += self._dfd_rows()
        exists = Path.is_file if self.media == "videos" else Path.is_dir
        # A partial download is indexed as far as it goes, and says what is missing (dfd-index's summary).
        self.skipped = []
        present = []
        for r in rows:
            if exists(self.root / r["path"]):
                present.append(r)
                continue
            folder = self.root / r["path"].split("/")[0] / r["path"].split("/")[1]
            why = "method folder missing" if not folder.is_dir() else "listed by the splits, missing on disk"
            self.skipped.append(Skip(r["path"], why, r["method"], r["label"]))
        if not present:
            raise DatasetError(
                f"{self.name}: none of the {len(rows)} video(s) the splits list is under {self.root} (e.g. "
                f"{rows[0]['path'] if rows else '-'}); finish the download or fix dataset.root / dataset.compression"
            )
        kinds.fill(present, lambda r: kinds.FFPP.get(r["method"], ""))
        return index_frame(present, extra=("source_identity", "compression", "source_video", "method_type"))

    def _pair_rows(self, methods: list[str]) -> list[dict]:
        pairs = self._read_pairs()
        real_dir = self._videos_dir(self.root / "original_sequences" / "youtube")
        fake_dirs = {m: self._videos_dir(self.root / "manipulated_sequences" / m) for m in methods}
        rows = []
        for split in SPLITS:
            for vid in sorted({v for p in pairs[split] for v in p}):
                rows.append(self._row(f"youtube/{vid}", 0, split, "youtube", vid, "", self._item(real_dir, vid)))
            for method, folder in fake_dirs.items():
                for a, b in pairs[split]:
                    for target, source in ((a, b), (b, a)):
                        stem = f"{target}_{source}"
                        # <target>_<source>: the target's video is kept and the source's face pasted in,
                        # so the real video a fake was made from is youtube/<target>.
                        rows.append(self._row(f"{method}/{stem}", 1, split, method, target, source,
                                              self._item(folder, stem), source_video=f"youtube/{target}"))
        return rows

    def _dfd_rows(self) -> list[dict]:
        real_dir = self._videos_dir(self.root / "original_sequences" / "actors")
        fake_dir = self._videos_dir(self.root / "manipulated_sequences" / DFD)
        reals = self._items(real_dir)
        # <target>_<source>__<scene>__<8-char id>: split on "__" first, scenes contain single underscores.
        fakes = [(p, *p.stem.split("__", 1)[0].split("_", 1)) for p in self._items(fake_dir)]
        actors = {p.stem.split("__", 1)[0] for p in reals} | {a for _, t, s in fakes for a in (t, s)}
        split_of = assign_splits(actors, self.dfd_val_fraction, self.dfd_test_fraction, salt="ffpp-dfd-actors")
        rows = [self._row(f"actors/{p.stem}", 0, split_of[a], "actors", f"actor{a}", "", p)
                for p in reals for a in [p.stem.split("__", 1)[0]]]
        real_ids = {r["video_id"] for r in rows}
        for p, target, source in fakes:
            if split_of[target] != split_of[source]:
                self.dropped.append(p.name)
                continue
            # <t>_<s>__<scene>__<id> alters actor t's recording of <scene>: actors/<t>__<scene> (the name as
            # the dataset implies it when that original is not on disk).
            original = f"{target}__{p.stem.split('__')[1]}" if p.stem.count("__") >= 1 else ""
            source_video = f"actors/{original}" if f"actors/{original}" in real_ids else original
            rows.append(self._row(f"{DFD}/{p.stem}", 1, split_of[target], DFD, f"actor{target}",
                                  f"actor{source}", p, source_video=source_video))
        if self.dropped:
            log.info("%s: dropped %d DeepFakeDetection fakes whose actors fall in different splits",
                     self.name, len(self.dropped))
        return rows

    def _items(self, folder: Path) -> list[Path]:
        if self.media == "videos":
            return sorted(folder.glob("*.mp4"))
        return sorted(p for p in folder.iterdir() if p.is_dir())

    def _item(self, folder: Path, stem: str) -> Path:
        return folder / f"{stem}.mp4" if self.media == "videos" else folder / stem

    def _row(self, vid: str, label: int, split: str, method: str, identity: str, source: str, path: Path,
             source_video: str = "") -> dict:
        return {
            "video_id": vid, "label": label, "split": split, "method": method, "identity": identity,
            "path": path.relative_to(self.root).as_posix(), "kind": "video" if self.media == "videos" else "frames",
            "source_identity": source, "compression": path.parent.parent.name, "source_video": source_video,
        }
