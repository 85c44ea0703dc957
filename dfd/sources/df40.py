"""DF40 (Yan et al., NeurIPS 2024): 40 forgery methods in four types, shipped as DeepfakeBench-style crops.

Distributed pre-processed (face crops, up to 32 per video; no detection needed)::

    DF40/<method folder>/{ff,cdf}/[frames/]<video>/<frame>.png     test fakes, FF++ and Celeb-DF domains
    DF40/<method folder>/{fake,real}/...                           the 9 "unknown" methods, with their own reals
    DF40_train/<method folder>/ff/...                              training fakes (FF++ domain only)

The fakes of the 31 "known" methods have no reals beside them: those are FF++'s and Celeb-DF's real videos in
DeepfakeBench's format (separate downloads), read from ``real_roots`` (FF++ reals follow FF++'s official
splits; the Celeb-DF domain is test-only, its reals are Celeb-DF's test-list reals). Folder names differ from the paper's table names (``inswap`` =
InSwapper, ``danet`` = DaGAN, ``ddim`` = DDPM, ...): both are accepted when selecting methods, and ``method``
in the index is the table name. Empty method or video folders (a known issue of the release) are reported,
not fatal.

Protocols of the paper, as dfd configs (the test sets are further ``+dataset@test_sets.<name>=df40``):

1. Train on FS (ff), test on FS/FR/EFS (ff): ``dataset=df40 dataset.types=[FS] dataset.domains=[ff]``,
   test sets ``types=[FR] domains=[ff]`` and ``types=[EFS] domains=[ff]``.
2. Same model on the cdf domain: test sets ``types=[FS|FR|EFS] domains=[cdf]``.
3. The 9 unknown methods: a test set ``domains=[own]``.
4. One-vs-all: ``dataset.methods=[SimSwap] dataset.domains=[ff]``, every other method a test set.

Unlike DF40's own scripts, dfd selects the checkpoint on a validation split carved from training (by FF++
pair), never on the test set. No ``source_video`` is recorded: DF40 does not say which of a ``<a>_<b>`` name's
two FF++ videos a fake was made from (third-party loaders disagree), and its EFS images have no source video.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources import kinds
from dfd.sources.base import IMAGE_EXTS, index_frame
from dfd.sources.crops import CropFolderSource, list_frame_files
from dfd.sources.protocols import carve_identities, drop_blank_splits, split_counts

TYPES = {"FS": "face-swap", "FR": "face-reenactment", "EFS": "entire-face synthesis", "FE": "face editing"}
# (table name, type, folder names and other spellings). Folder names per the DF40 README and its JSON labels.
METHODS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("FSGAN", "FS", ("fsgan",)), ("FaceSwap", "FS", ("faceswap",)), ("SimSwap", "FS", ("simswap",)),
    ("InSwapper", "FS", ("inswap", "inswapper")), ("BlendFace", "FS", ("blendface",)),
    ("UniFace", "FS", ("uniface",)), ("MobileSwap", "FS", ("mobileswap",)), ("e4s", "FS", ("e4s",)),
    ("FaceDancer", "FS", ("facedancer",)), ("DeepFaceLab", "FS", ("deepfacelab",)),
    ("FOMM", "FR", ("fomm",)), ("FS_vid2vid", "FR", ("facevid2vid", "fs_vid2vid", "face_vid2vid")),
    ("Wav2Lip", "FR", ("wav2lip",)), ("MRAA", "FR", ("mraa",)), ("OneShot", "FR", ("one_shot_free", "oneshot")),
    ("PIRender", "FR", ("pirender",)), ("TPSM", "FR", ("tpsm",)), ("LIA", "FR", ("lia",)),
    ("DaGAN", "FR", ("danet", "dagan")), ("SadTalker", "FR", ("sadtalker",)), ("MCNet", "FR", ("mcnet",)),
    ("HyperReenact", "FR", ("hyperreenact",)), ("HeyGen", "FR", ("heygen",)),
    ("VQGAN", "EFS", ("vqgan",)), ("StyleGAN2", "EFS", ("stylegan2",)), ("StyleGAN3", "EFS", ("stylegan3",)),
    ("StyleGAN-XL", "EFS", ("styleganxl", "stylegan-xl")), ("SD-2.1", "EFS", ("sd2.1", "sd-2.1", "sd21")),
    ("DDPM", "EFS", ("ddim", "ddpm")), ("RDDM", "EFS", ("rddm",)), ("PixArt-alpha", "EFS", ("pixart", "pixart-alpha")),
    ("DiT-XL-2", "EFS", ("dit", "dit-xl-2")), ("SiT-XL-2", "EFS", ("sit", "sit-xl-2")),
    ("MidJourney6", "EFS", ("midjourney", "midjourney6", "mj")),
    ("WhichisReal", "EFS", ("whichfaceisreal", "whichisreal")),
    ("CollabDiff", "FE", ("collabdiff", "collaborative_diffusion")), ("e4e", "FE", ("e4e",)),
    ("StarGAN", "FE", ("stargan",)), ("StarGANv2", "FE", ("starganv2",)), ("StyleCLIP", "FE", ("styleclip",)),
)
TYPE_OF = {m: t for m, t, _ in METHODS}
_ALIAS = {a.lower(): m for m, _, aliases in METHODS for a in (m, *aliases)}
DOMAINS = ("ff", "cdf", "own")
SKIP_DIRS = frozenset({"landmarks", "masks", "frames_wocropface", "mask"})
_PAIR = re.compile(r"^(\d{3})_(\d{3})(?:$|_)")


def canonical_method(name: str) -> str | None:
    """The paper's table name for a DF40 folder or table name (case-insensitive), or None."""
    return _ALIAS.get(name.lower())


class DF40(CropFolderSource):
    """DF40's test tree (and optional training tree) with method / type / domain selection.

    Args:
        train_root: the ``DF40_train`` folder (optional; its fakes are the train split, val carved from it).
        methods: table or folder names to keep (None: all); combined with ``types`` (FS, FR, EFS, FE).
        domains: ``ff`` / ``cdf`` (the FF++ / Celeb-DF domains of the known methods), ``own`` (methods
            shipping their own reals).
        real_roots: ``{ff: <FF++ in DeepfakeBench format>, cdf: <Celeb-DF-v2 in DeepfakeBench format>}``;
            a domain set to null is indexed without reals.
        ffpp_splits_dir: FF++'s official ``train/val/test.json`` (default: ``<real_roots.ff>/splits``, else
            ``<real_roots.ff>`` where DeepfakeBench keeps them).
        compression: the FF++ reals' level (DF40's known methods were made from FF++ c23).
        val_fraction: share of training groups (FF++ pairs, else videos) carved for validation.
    """

    # Training fakes and the reals are separate downloads: their paths are relative to their own folders.
    other_roots = ("train_root", "real_roots.ff", "real_roots.cdf")

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        train_root: str | Path | None = None,
        methods: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        domains: Sequence[str] = DOMAINS,
        real_roots: Mapping[str, str | Path | None] | None = None,
        ffpp_splits_dir: str | Path | None = None,
        compression: str = "c23",
        val_fraction: float = 0.1,
        frames: int = 0,
        landmarks: bool = True,
        workers: int = 8,
    ) -> None:
        super().__init__(name, root, cache_dir, frames=frames, landmarks=landmarks, workers=workers)
        self.train_root = Path(train_root) if train_root else None
        unknown = sorted(m for m in (methods or ()) if canonical_method(str(m)) is None)
        if unknown:
            raise DatasetError(f"{name}: unknown DF40 method(s) {unknown}; valid: {[m for m, _, _ in METHODS]} "
                               "(or their folder names)")
        bad_types = sorted(set(types or ()) - set(TYPES))
        if bad_types:
            raise DatasetError(f"{name}: unknown type(s) {bad_types}; valid: {list(TYPES)} ({TYPES})")
        bad_domains = sorted(set(domains) - set(DOMAINS))
        if bad_domains:
            raise DatasetError(f"{name}: unknown domain(s) {bad_domains}; valid: {list(DOMAINS)}")
        self.methods = sorted({canonical_method(str(m)) for m in methods}) if methods else None
        self.types = sorted(set(types)) if types else None
        self.domains = list(domains)
        self.real_roots = {k: (Path(v) if v else None) for k, v in dict(real_roots or {}).items()}
        self.ffpp_splits_dir = Path(ffpp_splits_dir) if ffpp_splits_dir else None
        self.compression = str(compression)
        self.val_fraction = val_fraction
        self.empty: list[str] = []
        self.skipped: list[tuple[str, str]] = []

    def selected(self, method: str) -> bool:
        return (self.methods is None or method in self.methods) and (self.types is None or TYPE_OF[method] in self.types)

    def _params(self) -> dict[str, Any]:
        return {"train_root": str(self.train_root), "methods": self.methods, "types": self.types,
                "domains": self.domains, "real_roots": {k: str(v) for k, v in self.real_roots.items()},
                "ffpp_splits_dir": str(self.ffpp_splits_dir), "compression": self.compression,
                "val_fraction": self.val_fraction}

    def _stamp(self) -> dict[str, Any]:
        # Folder mtimes change when a method/domain folder gains or loses entries (a cheap staleness check).
        out = {}
        for tree in (self.root, self.train_root):
            if tree is not None and tree.is_dir():
                for d in sorted(tree.iterdir()):
                    if d.is_dir():
                        out[f"{tree.name}/{d.name}"] = [d.stat().st_mtime_ns] + [
                            s.stat().st_mtime_ns for s in sorted(d.iterdir()) if s.is_dir()]
        return out

    # -- fakes (and the unknown methods' own reals) ---------------------------------------------------
    def _tree_rows(self, tree: Path, split: str) -> list[dict]:
        rows = []
        for d in sorted(p for p in tree.iterdir() if p.is_dir()):
            method = canonical_method(d.name)
            if method is None:
                self.skipped.append((self._shown(d), "not a DF40 method folder"))
                continue
            if not self.selected(method):
                continue
            subs = {s.name.lower(): s for s in d.iterdir() if s.is_dir()}
            if subs.keys() & {"ff", "cdf"}:
                parts = [(dom, subs[dom], 1) for dom in ("ff", "cdf") if dom in subs]
            elif subs.keys() & {"fake", "real"}:
                parts = [("own", subs[k], int(k == "fake")) for k in ("fake", "real") if k in subs]
            else:  # no domain level: a method of a single domain (the training tree holds FF++ only)
                parts = [("ff" if split == "train" else "own", d, 1)]
            for domain, base, label in parts:
                if domain not in self.domains:
                    continue
                found = self._videos(base)
                if not found:
                    self.empty.append(self._shown(base))
                for folder, files in found:
                    below = [p for p in PurePosixPath(os.path.relpath(folder, base)).parts if p != "frames"]
                    vid = "/".join([tree.name, d.name, base.name if base != d else "", *below]).replace("//", "/")
                    rows.append(self._row(vid, label, split, method, domain, folder, files,
                                          group=_pair_group(below[-1] if below else folder.name)))
        return rows

    def _videos(self, base: Path) -> list[tuple[Path, list[str]]]:
        """Every folder below ``base`` holding images (one video's crops each); empty video folders counted."""
        out = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(x for x in dirnames if x.lower() not in SKIP_DIRS and not x.startswith("."))
            images = [f for f in filenames if os.path.splitext(f)[1].lower() in IMAGE_EXTS]
            if images:
                out.append((Path(dirpath), list_frame_files(Path(dirpath))))
            elif not dirnames and Path(dirpath) != base:
                self.empty.append(self._shown(dirpath))
        return out

    def _shown(self, path: str | Path) -> str:
        # A folder as the notes name it: relative to the root it lives under.
        name, rel = self.roots().locate(path)
        return rel if name == "root" else f"<{name}>/{rel}"

    def _row(self, vid: str, label: int, split: str, method: str, domain: str, folder: Path, files: list[str],
             group: str, identity: str = "") -> dict:
        where = self.locate(folder)
        self._frame_files[vid] = [f"{where['path']}/{n}" for n in files]
        return {"video_id": vid, "label": label, "split": split, "method": method if label else f"real-{domain}",
                "identity": identity or group, **where, "kind": "frames", "type": TYPE_OF.get(method, ""),
                "domain": domain, "n_frames": len(files), "_ids": (group,)}

    # -- reals of the known methods -------------------------------------------------------------------
    def _real_rows(self, domain: str) -> list[dict]:
        root = self.real_roots.get(domain)
        if root is None:
            self.notes.append(f"no reals for the {domain} domain (dataset.real_roots.{domain} is null): "
                              "its fakes are indexed alone")
            return []
        if not root.is_dir():
            raise DatasetError(
                f"{self.name}: DF40's {domain}-domain fakes need that domain's real videos in DeepfakeBench's "
                f"format (DF40 README: 'Original Real Data'); {root} is not a folder: set "
                f"dataset.real_roots.{domain}=<folder> (or null to index the fakes alone)"
            )
        return self._ff_reals(root) if domain == "ff" else self._cdf_reals(root)

    def _ff_reals(self, root: Path) -> list[dict]:
        from dfd.sources.ffpp import FFPP

        base = root / "original_sequences" / "youtube" / self.compression / "frames"
        if not base.is_dir():
            raise DatasetError(f"{self.name}: expected FF++ real crops in {base} (DeepfakeBench format); "
                               "set dataset.real_roots.ff / dataset.compression")
        splits_dir = self.ffpp_splits_dir or next(
            (d for d in (root / "splits", root) if (d / "train.json").is_file()), root / "splits")
        pairs = FFPP(self.name, root, self.cache_dir, splits_dir=splits_dir)._read_pairs()
        split_of = {v: s for s, ps in pairs.items() for p in ps for v in p}
        pair_of = {v: "_".join(sorted(p)) for ps in pairs.values() for p in ps for v in p}
        rows = []
        for folder in sorted(p for p in base.iterdir() if p.is_dir()):
            files = list_frame_files(folder)
            if not files:
                self.empty.append(self._shown(folder))
                continue
            if folder.name not in split_of:
                self.skipped.append((self._shown(folder), "not in FF++'s split files"))
                continue
            rows.append(self._row(f"real-ff/{folder.name}", 0, split_of[folder.name], "", "ff", folder, files,
                                  group=pair_of[folder.name], identity=folder.name))
        return rows

    def _cdf_reals(self, root: Path) -> list[dict]:
        from dfd.sources.celebdf import CelebDF

        test = {(c, Path(n).stem) for c, n in CelebDF(self.name, root, self.cache_dir)._test_list()}
        rows = []
        for canon in ("Celeb-real", "YouTube-real"):
            base = next((p / "frames" for p in root.iterdir() if p.name.lower() == canon.lower()), None)
            if base is None or not base.is_dir():
                continue
            for folder in sorted(p for p in base.iterdir() if p.is_dir()):
                files = list_frame_files(folder)
                if not files:
                    self.empty.append(self._shown(folder))
                    continue
                if (canon, folder.name) not in test:
                    continue  # DF40's Celeb-DF domain is test-only: its reals are Celeb-DF's test reals
                split = "test"
                person = folder.name.split("_")[0] if canon == "Celeb-real" else f"youtube/{folder.name}"
                rows.append(self._row(f"real-cdf/{canon}/{folder.name}", 0, split, "", "cdf", folder, files,
                                      group=person, identity=person))
        return rows

    # -- index ----------------------------------------------------------------------------------------
    def _index_rows(self) -> pd.DataFrame:
        self.empty, self.skipped, self.notes, self._frame_files = [], [], [], {}
        test_tree = self.root / "DF40" if (self.root / "DF40").is_dir() else self.root
        rows = self._tree_rows(test_tree, "test")
        if self.train_root is not None and self.train_root.is_dir():
            rows += self._tree_rows(self.train_root, "train")
        elif self.train_root is not None:
            self.notes.append(f"no training tree at {self.train_root}: test split only")
        if not rows:
            raise DatasetError(
                f"{self.name}: no crops of the selected methods/domains under {test_tree}"
                f"{' or ' + str(self.train_root) if self.train_root else ''} (methods={self.methods}, "
                f"types={self.types}, domains={self.domains}); set dataset.root to the DF40 folder"
            )
        for domain in ("ff", "cdf"):
            if any(r["domain"] == domain and r["label"] for r in rows):
                rows += self._real_rows(domain)
        # Validation from training, whole FF++ pairs (a_b and b_a, and their reals) or videos at a time.
        if any(r["split"] == "train" for r in rows) and not any(r["split"] == "val" and r["label"] for r in rows):
            carve_identities(rows, self.val_fraction, salt="df40-val")
        rows = drop_blank_splits(rows)
        if self.empty:
            self.notes.append(f"{len(self.empty)} empty folder(s) skipped, e.g. {self.empty[:3]}")
        counts = pd.Series([r["method"] for r in rows if r["label"]]).value_counts()
        self.notes.append(f"{len(counts)} methods: " + ", ".join(f"{m} {n}" for m, n in sorted(counts.items())))
        self.notes.append(f"splits: {split_counts(rows)}")
        kinds.fill(rows, lambda r: kinds.DF40.get(r["type"], ""))
        return index_frame(rows, extra=("type", "domain", "n_frames", "method_type"))


def _pair_group(name: str) -> str:
    """FF++-domain fakes are named after an FF++ pair (``000_003``): both orders form one group."""
    m = _PAIR.match(name)
    return "_".join(sorted(m.groups())) if m else name
