"""DeeperForensics-1.0: fakes per perturbation variant, official split lists, FF++'s YouTube videos as the reals.

Layout after the dataset's ``unzip.sh``::

    <root>/manipulated_videos/<variant>/<target>_<actor>.mp4   e.g. end_to_end/000_M101.mp4 (1,000 per variant)
    <root>/lists/splits/{train,val,test}.txt                   fake names, one per line (703 / 96 / 201)
    <root>/source_videos/<actor>/...                           the actors' recordings (faces pasted in)

A fake ``<target>_<actor>`` keeps FF++ video ``<target>`` and pastes actor ``<actor>``'s face. The dataset's
authors define the real class as those 1,000 FF++ target videos at c23, which DeeperForensics does not ship:
they are read from an FF++ download (``ffpp_root``). DeepfakeBench uses ``source_videos`` as the reals
instead, so its DeeperForensics numbers are not comparable with the authors' protocol.

**Perturbed variants** (``end_to_end_level_<1-5>``, ``end_to_end_mix_<2-4>_distortions``,
``end_to_end_random_level``): the fakes were distorted with the authors' perturbation code, each as
``lists/manipulated_videos_distortions_meta/manipulated_videos_<variant>_meta.txt`` lists it (one line per video:
its path, then ``<TYPE>:<level>`` in the order applied), while the FF++ reals are clean, so a classifier can
separate the classes by the distortion alone: indexing says so in one line. ``real_perturbation=match`` gives
each real the distortions of the fake made from it (its target), in the index column ``distortion``; extraction
applies them to the real's source frames before face detection (:mod:`dfd.store.distort`).
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources import kinds
from dfd.sources.base import VIDEO_EXTS, DatasetSource, index_frame
from dfd.sources.ffpp import LOSSLESS
from dfd.sources.protocols import resolve_source_videos, split_counts
from dfd.sources.report import Skip
from dfd.store.distort import DF_TYPES, DistortionError, chain_text, parse_chain
from dfd.store.schema import SPLITS

log = logging.getLogger(__name__)
SPLIT_ORDER = {s: i for i, s in enumerate(SPLITS)}
#: Variants whose fakes the authors distorted after the swap (their meta lists say how).
PERTURBED = re.compile(r"^end_to_end_(level_[1-5]|mix_[2-4]_distortions|random_level)$")
REAL_PERTURBATIONS = ("clean", "match")
META_DIR = Path("lists/manipulated_videos_distortions_meta")
_warned: set[str] = set()


def is_perturbed(variant: str) -> bool:
    """Whether a variant's fakes were distorted (``end_to_end_level_3``, ``end_to_end_mix_2_distortions``, ...)."""
    return bool(PERTURBED.match(variant))


def read_meta(path: Path, variant: str) -> dict[str, str]:
    """A distortion meta list -> {video stem: chain text} (``"df_cs:3 df_gb:2"``).

    Lines are ``<video path> <TYPE>:<level> ...``. The authors' script appends the entries of intermediate files
    of a mix too (each with the distortions applied so far), so per stem the entry whose folder is the variant
    wins, else the longest chain.
    """
    best: dict[str, tuple[bool, int, str]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        video = Path(parts[0].replace("\\", "/"))
        try:
            chain = parse_chain(parts[1:])
        except DistortionError as e:
            raise DatasetError(f"{path}:{n}: {e}") from None
        rank = (video.parent.name == variant, len(chain), chain_text(chain))
        if video.stem not in best or rank[:2] > best[video.stem][:2]:
            best[video.stem] = rank
    return {stem: r[2] for stem, r in best.items()}


class DeeperForensics(DatasetSource):
    """DeeperForensics-1.0 (one perturbation ``variant``) with the authors' real class and split lists.

    Each real FF++ video goes to the split of the fake made from it (the targets are distinct, so real and fake
    of a pair always share a split).

    Args:
        variant: folder under ``manipulated_videos`` (``end_to_end``, ``end_to_end_level_3``,
            ``end_to_end_mix_2_distortions``, ``reenact_postprocess``, ...; the folders found are listed on error).
        ffpp_root: the FaceForensics++ download holding ``original_sequences/youtube/<compression>/videos``.
        compression: FF++ level of the reals (``c23`` in the authors' protocol).
        splits_dir: folder holding ``train.txt``, ``val.txt``, ``test.txt`` (default ``<root>/lists/splits``).
        real_perturbation: ``clean`` (the reals as FF++ ships them) or ``match`` (perturbed variants: each real
            gets its fake's distortions, read from the variant's meta list, applied before face detection).
        meta_dir: folder of the distortion meta lists (default ``<root>/lists/manipulated_videos_distortions_meta``).

    The reals' index paths are relative to ``ffpp_root`` (``path_root``), the fakes' to ``root``: the two
    downloads may sit on different disks, linked into one folder.
    """

    other_roots = ("ffpp_root",)
    config_name = "deeperforensics"

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        variant: str = "end_to_end",
        ffpp_root: str | Path | None = None,
        compression: str = "c23",
        splits_dir: str | Path | None = None,
        real_perturbation: str = "clean",
        meta_dir: str | Path | None = None,
    ) -> None:
        super().__init__(name, root, cache_dir)
        if real_perturbation not in REAL_PERTURBATIONS:
            raise DatasetError(f"dataset.real_perturbation={real_perturbation!r} is not valid; choose one of "
                               f"{', '.join(REAL_PERTURBATIONS)}")
        self.real_perturbation = real_perturbation
        self.meta_dir = Path(meta_dir) if meta_dir else None
        self.variant = str(variant)
        self.ffpp_root = Path(ffpp_root) if ffpp_root else None
        self.compression = str(compression)
        self.splits_dir = Path(splits_dir) if splits_dir else None
        self.skipped: list[Skip] = []
        self.notes: list[str] = []

    def _fake_dir(self) -> Path:
        base = self.root / "manipulated_videos"
        have = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        if self.variant not in have:
            hint = f"variants found: {have}; set dataset.variant=<one of them>" if have else (
                f"{base} does not exist: set dataset.root to the DeeperForensics-1.0 folder (after unzip.sh)")
            raise DatasetError(f"{self.name}: no manipulated_videos/{self.variant}/ folder; {hint}")
        return base / self.variant

    def _split_of(self) -> dict[str, str]:
        folder = self.splits_dir or self.root / "lists" / "splits"
        split_of: dict[str, str] = {}
        for split in SPLITS:
            path = folder / f"{split}.txt"
            if not path.is_file():
                raise DatasetError(
                    f"{self.name}: official split list {path} not found; it ships in DeeperForensics-1.0/lists/"
                    "splits (or set dataset.splits_dir)"
                )
            for line in path.read_text().splitlines():
                stem = Path(line.strip().replace("\\", "/")).stem
                if not stem:
                    continue
                if split_of.setdefault(stem, split) != split:
                    raise DatasetError(f"{self.name}: {stem} is in both {split_of[stem]}.txt and {split}.txt")
        return split_of

    def meta_path(self) -> Path:
        """The variant's distortion meta list."""
        folder = self.meta_dir or self.root / META_DIR
        return folder / f"manipulated_videos_{self.variant}_meta.txt"

    def clean_reals_warning(self) -> str | None:
        """The one line saying a perturbed variant's reals are clean (None when not perturbed or matched)."""
        if not is_perturbed(self.variant) or self.real_perturbation == "match":
            return None
        return (f"{self.name}: the fakes of {self.variant} are distorted (its meta list says how) but the reals are "
                f"FF++'s clean {self.compression} videos, so a classifier can tell them apart by the distortion "
                "alone; dataset.real_perturbation=match gives each real its fake's distortions")

    def prepare(self) -> Path:
        path = super().prepare()
        warning = self.clean_reals_warning()
        if warning and warning not in _warned:
            _warned.add(warning)
            log.warning(warning)
        return path

    def _real_chains(self, fakes: dict[str, str]) -> dict[str, str]:
        """{target: chain} for the reals: the distortions of the fake made from each (``fakes``: stem -> target)."""
        path = self.meta_path()
        if not path.is_file():
            raise DatasetError(
                f"{self.name}: dataset.real_perturbation=match reads the fakes' distortions from {path}, which is "
                "missing; it ships in DeeperForensics-1.0/lists (or set dataset.meta_dir)")
        meta = read_meta(path, self.variant)
        if not meta:
            raise DatasetError(f"{self.name}: {path} lists no distortions; re-download the dataset's lists")
        pool = sorted(meta)
        out: dict[str, str] = {}
        drawn = []
        for stem, target in sorted(fakes.items()):
            if target in out:
                continue
            if stem in meta:
                out[target] = meta[stem]
            else:  # a fake the list misses: a line of the list drawn by the real's name, so the mix stays the same
                pick = pool[int(hashlib.sha1(target.encode()).hexdigest(), 16) % len(pool)]
                out[target] = meta[pick]
                drawn.append(stem)
        if drawn:
            self.notes.append(f"real_perturbation=match: {len(drawn)} fake(s) missing from {path.name} (e.g. "
                              f"{drawn[0]}): their reals take the distortions of another line of the list")
        return out

    def _real_dir(self) -> Path:
        if self.ffpp_root is None or not (self.ffpp_root / "original_sequences").is_dir():
            raise DatasetError(
                f"{self.name}: the real class of DeeperForensics-1.0 is FaceForensics++'s YouTube videos at "
                f"{self.compression} (the targets of its fakes), which DeeperForensics does not ship; download "
                f"them (FF++ download script: -d original -c {self.compression}) and set dataset.ffpp_root=<folder "
                f"holding original_sequences/> (now {self.ffpp_root})"
            )
        base = self.ffpp_root / "original_sequences" / "youtube"
        for comp in LOSSLESS if self.compression in LOSSLESS else (self.compression,):
            if (base / comp / "videos").is_dir():
                return base / comp / "videos"
        raise DatasetError(
            f"{self.name}: {base / self.compression / 'videos'} not found; download FF++'s originals at "
            f"{self.compression} or set dataset.compression to a level you have"
        )

    def _index_rows(self) -> pd.DataFrame:
        self.skipped, self.notes = [], []
        fake_dir, split_of, real_dir = self._fake_dir(), self._split_of(), self._real_dir()
        rows: list[dict] = []
        fakes = sorted(p for p in fake_dir.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTS)
        on_disk = {p.stem for p in fakes}
        self.skipped += [Skip(f"manipulated_videos/{self.variant}/{s}.mp4", "in the split lists, missing on disk",
                              self.variant, 1) for s in sorted(set(split_of) - on_disk)]
        real_split: dict[str, str] = {}
        for p in fakes:
            if p.stem not in split_of:
                self.skipped.append(Skip(self.locate(p)["path"], "in no split list", self.variant))
                continue
            target, _, actor = p.stem.partition("_")
            split = split_of[p.stem]
            # Targets are distinct in the release; if one were reused, its real goes to the most held-out split.
            if target not in real_split or SPLIT_ORDER[split] > SPLIT_ORDER[real_split[target]]:
                real_split[target] = split
            rows.append({
                "video_id": f"{self.variant}/{p.stem}", "label": 1, "split": split, "method": self.variant,
                "identity": target, **self.locate(p), "kind": "video", "source_identity": actor,
                "source_video": f"youtube/{target}", "_source_name": f"youtube/{target}",
            })
        match = self.real_perturbation == "match" and is_perturbed(self.variant)
        chains = self._real_chains({r["video_id"].split("/", 1)[1]: r["identity"] for r in rows}) if match else {}
        for target, split in sorted(real_split.items()):
            path = real_dir / f"{target}.mp4"
            if not path.is_file():
                self.skipped.append(Skip(str(path), "FF++ target video missing", "youtube", 0))
                continue
            rows.append({
                "video_id": f"youtube/{target}", "label": 0, "split": split, "method": "youtube", "identity": target,
                **self.locate(path), "kind": "video", "source_identity": "", "source_video": "",
                **({"distortion": chains.get(target, "")} if match else {}),
            })
        reused = sum(1 for r in rows if r["label"] and split_of[r["video_id"].split("/", 1)[1]] != real_split[r["identity"]])
        if reused:
            self.notes.append(f"{reused} fakes share their FF++ target with a fake of another split")
        if not rows:
            raise DatasetError(f"{self.name}: no fakes of {fake_dir} are in the split lists")
        resolve_source_videos(rows)
        self.notes.append(f"reals = FF++ youtube/{self.compression} targets; splits: {split_counts(rows)}")
        kinds.fill(rows, "face_swap")  # DF-VAE swaps the actors' faces into FF++'s videos
        warning = self.clean_reals_warning()
        if warning:
            log.warning(warning)
            self.notes.append(warning)
        elif match:
            used = {d.df_type for c in chains.values() for d in parse_chain(c)}
            types = [t for t in DF_TYPES if t in used]
            self.notes.append(f"real_perturbation=match: {len(chains)} reals get their fake's distortions from "
                              f"{self.meta_path().name} ({', '.join(types)}), applied to their frames before "
                              "face detection")
        elif self.real_perturbation == "match":
            self.notes.append(f"real_perturbation=match: {self.variant}'s fakes are not distorted; the reals stay "
                              "clean")
        if not match:
            return index_frame(rows, extra=("source_identity", "source_video", "method_type"))
        for r in rows:
            r.setdefault("distortion", "")  # the fakes carry theirs in their pixels already
        return index_frame(rows, extra=("source_identity", "source_video", "method_type", "distortion"))
