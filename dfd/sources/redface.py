"""RedFace (arXiv 2510.08067): layout discovered from disk, since the release ships no label or split files.

Discovery: a folder whose name contains a real word (``real``, ``original``, ``pristine``...) or a fake word
(``fake``, ``forged``, ``manipulated``, ``deepfake``...) labels every image, video or frames folder below it
(the nearest such folder wins). Media outside any labelled folder are fakes when they sit beside a real
folder (``root/real`` next to ``root/FaceSwap/<platform>``), otherwise the loader stops and prints the tree.
``train``/``val``/``test`` folder names give the split; anything else is carved per item.

Two levels of a fake's folders matter: the **platform** (RedFace's 9 commercial services and its own
algorithms) and the **manipulation type** (its four: entire face synthesis, face swapping, attribute
manipulation, reenactment). A folder whose name spells a type (``face_swap``, ``Face Reenactment``...) is the
type level and fills ``method_type``; the platform is the nearest other folder above the item that is neither
storage (``images``, ``videos``, split names) nor a real/fake word. ``mapping.platform_level`` /
``mapping.type_level`` (folder depth below the root, 1 = top) name them when names cannot. Since the archive's
layout is not documented, the index summary lists what it found at every folder level, and a RedFace without
reals is indexed as fakes only and says so in one line (reals from another source make a source shortcut).

Override discovery with ``dataset.mapping``::

    mapping:
      real_dirs: ["*/real"]           # glob patterns, relative to the root, matched against folders
      fake_dirs: ["*/fake", "swaps/*"]
      method_from: auto               # auto | parent | grandparent | platform | type (folders of each fake item)
      platform_level: null            # folder depth of the platform (1 = top), null = discovered
      type_level: null                # folder depth of the manipulation type, null = discovered
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources import kinds
from dfd.sources.base import DatasetSource, carve_rows, find_media, index_frame, media_kind

REAL_WORDS = frozenset({"real", "reals", "pristine", "original", "originals", "genuine", "authentic", "bonafide"})
FAKE_WORDS = frozenset({
    "fake", "fakes", "forged", "forgery", "forgeries", "manipulated", "synthetic", "deepfake", "deepfakes",
    "generated", "spoof",
})
SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}
# Folder names that say how media are stored, not how they were made: left out of method names.
NEUTRAL = frozenset({"image", "images", "imgs", "video", "videos", "frames", "data", *SPLIT_WORDS})
METHOD_FROM = ("auto", "parent", "grandparent", "platform", "type")
MAPPING_KEYS = ("real_dirs", "fake_dirs", "method_from", "platform_level", "type_level")


def _words(name: str) -> set[str]:
    return set(re.split(r"[^a-z0-9]+", name.lower()))


class RedFace(DatasetSource):
    """RedFace with a discovered (or mapped) real/fake layout; images are one row each, videos one row each.

    Args:
        mapping: optional ``{real_dirs, fake_dirs, method_from}`` overriding discovery (see module doc).
        val_fraction, test_fraction: carved per item and label when the layout has no split folders.
    """

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        mapping: Mapping | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        frame_folders: bool = True,
    ) -> None:
        super().__init__(name, root, cache_dir)
        mapping = dict(mapping or {})
        unknown = sorted(set(mapping) - set(MAPPING_KEYS))
        self.method_from = mapping.get("method_from") or "auto"
        levels = [mapping.get(k) for k in ("platform_level", "type_level")]
        if unknown or self.method_from not in METHOD_FROM or any(
                v is not None and (not isinstance(v, int) or v < 1) for v in levels):
            raise DatasetError(
                f"{name}: dataset.mapping takes real_dirs, fake_dirs (glob lists), method_from "
                f"({'|'.join(METHOD_FROM)}), platform_level and type_level (folder depth, 1 = top); got {mapping}"
            )
        self.platform_level, self.type_level = levels
        self.real_dirs = list(mapping.get("real_dirs") or [])
        self.fake_dirs = list(mapping.get("fake_dirs") or [])
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.frame_folders = frame_folders
        self.notes: list[str] = []

    def _label_of_dir(self, rel: str) -> int | None:
        """0/1 when this folder (relative path) marks real/fake, else None."""
        if self.real_dirs or self.fake_dirs:
            fake = any(fnmatch.fnmatch(rel, p) for p in self.fake_dirs)
            real = any(fnmatch.fnmatch(rel, p) for p in self.real_dirs)
            if real and fake:
                raise DatasetError(
                    f"{self.name}: folder {rel!r} matches both dataset.mapping.real_dirs and fake_dirs; narrow one"
                )
            return 1 if fake else 0 if real else None
        words = _words(Path(rel).name)
        is_real, is_fake = bool(words & REAL_WORDS), bool(words & FAKE_WORDS)
        return None if is_real == is_fake else int(is_fake)

    def _index_rows(self) -> pd.DataFrame:
        items = find_media(self.root, self.frame_folders)
        labels: dict[str, int | None] = {}  # folder (relative) -> label, memoised

        def label(rel: str) -> int | None:
            if rel not in labels:
                labels[rel] = self._label_of_dir(rel) if rel != "." else None
            return labels[rel]

        real_parents = None  # folders holding a real folder: their other children are taken as fakes
        rows, undecided = [], []
        for path, kind in items:
            rel = path.relative_to(self.root)
            dirs = rel.parts[:-1]
            # The nearest labelled ancestor folder decides; the method comes from the folders around it.
            hit = next(
                ((i, i - 1, lab) for i in range(len(dirs), 0, -1) if (lab := label("/".join(dirs[:i]))) is not None),
                None,
            )
            if hit is None:
                if real_parents is None:
                    real_parents = {str(Path(d).parent) for d, lab in self._all_dir_labels().items() if lab == 0}
                i = next((i for i in range(len(dirs) - 1, -1, -1) if ("/".join(dirs[:i]) or ".") in real_parents),
                         None)
                if i is None:
                    undecided.append(rel.as_posix())
                    continue
                hit = (i, i, 1)  # beside a real folder: that sibling folder's name is the method
            below, above, lab = hit
            mtype, platform = self._levels(dirs) if lab else ("", "")
            rows.append({
                "video_id": rel.as_posix() if kind == "frames" else rel.with_suffix("").as_posix(),
                "label": lab,
                "split": next((SPLIT_WORDS[p.lower()] for p in dirs if p.lower() in SPLIT_WORDS), ""),
                "method": self._method(dirs, below, above, mtype, platform) if lab else "real",
                "identity": "", "path": rel.as_posix(), "kind": kind,
                "platform": platform, "method_type": kinds.kind_from_words(mtype) if mtype else "",
            })
        # Fakes only (the archive may not ship the reals its fakes were "derived from"): indexed, said once.
        if undecided or not any(r["label"] for r in rows):
            what = f"{len(undecided)} media outside any real/fake folder, e.g. {undecided[:3]}" if undecided else (
                f"only {'real' if rows else 'no'} media found")
            raise DatasetError(
                f"{self.name}: cannot tell real from fake in {self.root} ({what}); set dataset.mapping="
                "{real_dirs: [<glob>], fake_dirs: [<glob>]} (folders relative to the root). Found:\n"
                + _tree(self.root)
            )
        self.notes = _level_summary(rows)
        if not any(r["label"] == 0 for r in rows):
            self.notes.insert(0, f"no real media in {self.root}: RedFace indexed as {len(rows)} fakes only; pair it with "
                                 "reals of another source and expect a source shortcut (reals and fakes then differ "
                                 "in more than the forgery)")
        carve_rows(rows, self.val_fraction, self.test_fraction, salt="redface")
        return index_frame(rows, extra=("platform", "method_type"))

    def _all_dir_labels(self) -> dict[str, int]:
        out = {}
        for dirpath, dirnames, _ in os.walk(self.root):
            for d in dirnames:
                rel = (Path(dirpath) / d).relative_to(self.root).as_posix()
                lab = self._label_of_dir(rel)
                if lab is not None:
                    out[rel] = lab
        return out

    def _levels(self, dirs: tuple[str, ...]) -> tuple[str, str]:
        """A fake's (manipulation-type folder, platform folder), "" where none: by ``mapping.type_level`` /
        ``platform_level``, else the folder naming a type and the nearest other non-storage, non-label folder."""

        def at(level: int | None) -> str | None:
            return None if level is None else dirs[level - 1] if level <= len(dirs) else ""

        mtype = at(self.type_level)
        if mtype is None:
            mtype = next((d for d in reversed(dirs) if kinds.kind_from_words(d)), "")
        platform = at(self.platform_level)
        if platform is None:
            platform = next((d for d in reversed(dirs) if d != mtype and d.lower() not in NEUTRAL
                             and not (_words(d) & (REAL_WORDS | FAKE_WORDS))), "")
        return mtype, platform

    def _method(self, dirs: tuple[str, ...], below: int, above: int, mtype: str = "", platform: str = "") -> str:
        """A fake's method: folders ``dirs[below:]`` under its fake folder, else ``dirs[:above]`` over it."""
        if self.method_from in ("platform", "type"):
            return (platform if self.method_from == "platform" else mtype) or "fake"
        if self.method_from == "parent":
            return dirs[-1] if dirs else "fake"
        if self.method_from == "grandparent":
            return dirs[-2] if len(dirs) > 1 else "fake"
        # auto: fake/<platform>/x.png -> platform; <platform>/fake/x.png -> platform; storage words
        # (images/, train/) are left out.
        pick = [d for d in dirs[below:] if d.lower() not in NEUTRAL] or [
            d for d in dirs[:above] if d.lower() not in NEUTRAL]
        return "/".join(pick) or "fake"


def _level_summary(rows: list[dict], per_level: int = 12) -> list[str]:
    """What the index found at each folder level (depth below the root): names and media counts, platforms and
    types read, so the first real download shows its layout in the index summary."""
    levels: dict[int, dict[str, int]] = {}
    for r in rows:
        for depth, name in enumerate(Path(r["path"]).parts[:-1], 1):
            levels.setdefault(depth, {}).setdefault(name, 0)
            levels[depth][name] += 1
    out = []
    for depth in sorted(levels):
        names = sorted(levels[depth].items())
        shown = ", ".join(f"{n} ({c})" for n, c in names[:per_level])
        out.append(f"level {depth}: {len(names)} folder(s): {shown}{', ...' if len(names) > per_level else ''}")
    fakes = [r for r in rows if r["label"]]
    for what, key in (("platforms", "platform"), ("manipulation types", "method_type")):
        found = pd.Series([r[key] or "(none)" for r in fakes]).value_counts().sort_index()
        out.append(f"fakes by {what}: " + ", ".join(f"{k} {v}" for k, v in found.items()))
    return out


def _tree(root: Path, max_lines: int = 40, max_depth: int = 4) -> str:
    """An indented listing of folders with their media counts, truncated, for error messages."""
    lines: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root)
        depth = len(rel.parts)
        if depth >= max_depth:
            dirnames[:] = []
        n = sum(1 for f in filenames if media_kind(f))
        lines.append(f"{'  ' * depth}{rel.name or root.name}/ ({n} media, {len(dirnames)} folders)")
        if len(lines) > max_lines:
            lines.append("  ... (truncated)")
            break
    return "\n".join(lines)
