"""DeepfakeBench's pre-processed datasets: its dataset JSONs and ``frames/``/``landmarks/`` folders, as crops.

Most researchers already hold DeepfakeBench's downloads (32 aligned 256 px crops per video + one JSON per
dataset). This source reads them for any of its datasets (``json_name``: FaceForensics++, FF-DF, Celeb-DF-v2,
DFDC, DFDCP, DeepFakeDetection, FaceShifter, DeeperForensics-1.0, UADFV, and DF40's JSONs), writes dfd's frame
manifest straight from the crops (``prepare()``, see ``dfd.sources.crops``), and repairs the protocol
leaks DeepfakeBench's ``rearrange.py`` builds into its JSONs:

* Celeb-DF v1/v2: train is every video, test videos included -> training videos in the test list are removed;
  its val (= test) is ignored and val is carved from train by identity.
* DeepFakeDetection, UADFV: every video is copied into train, val and test -> the copies are merged and the
  videos split by identity (actor / pair), or all put in test (``all_test``).
* DeeperForensics-1.0: fakes follow the official lists, but the reals (its ``source_videos``) are copied into
  every split -> each real goes to the split of the fakes showing the same actor. (DeepfakeBench's reals are
  not the authors' real class: ``dataset=deeperforensics`` reads the protocol-faithful set.)
* DFDC: its ``val`` is corrupt -> ignored; val is carved from train by whole part.
* DFDCP and any other JSON whose val is missing or equals test -> val carved from train (by identity).
* Any JSON: a video in the test split is removed from train and val.

What was removed is counted in ``self.leaks`` and said in the index summary (``dfd-index``). Frame paths in
the JSONs carry the preparer's machine prefixes (``./datasets\\rgb\\...``, ``/data/home/...``): each is resolved
against ``dataset.root`` by the longest path suffix that exists there.

One concern: reading DeepfakeBench's own layout (its JSON protocol files, frame and landmark folders, the
split and label conventions of each dataset it repackages); longer than most sources because that layout is.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources import kinds
from dfd.sources.base import assign_splits, index_frame
from dfd.sources.crops import CropFolderSource, list_frame_files
from dfd.sources.dfdcp import parse_name as dfdcp_name
from dfd.sources.protocols import carve_identities, drop_blank_splits, resolve_source_videos, split_counts
from dfd.sources.report import Skip
from dfd.store.schema import SPLITS

# DeepfakeBench's label_dict (training/config/train_config.yaml, identical in test_config.yaml).
LABEL_DICT: dict[str, int] = {
    **dict.fromkeys(("DFD_fake", "FF-SH", "FF-F2F", "FF-DF", "FF-FS", "FF-NT", "FF-FH", "CelebDFv1_fake",
                     "CelebDFv2_fake", "DFDCP_FakeA", "DFDCP_FakeB", "DFDC_Fake", "DF_fake", "UADFV_Fake",
                     "roop_Fake"), 1),
    **dict.fromkeys(("DFD_real", "FF-real", "CelebDFv1_real", "CelebDFv2_real", "DFDCP_Real", "DFDC_Real",
                     "DF_real", "UADFV_Real", "roop_Real"), 0),
}
# Fake sub-labels whose kind their dataset says (dfd.sources.kinds); DFDC's and DFDCP's do not (several
# methods, none named per video) and stay "".
SUB_LABEL_KINDS = {"FF-DF": kinds.FFPP["Deepfakes"], "FF-F2F": kinds.FFPP["Face2Face"], "FF-FS": kinds.FFPP["FaceSwap"],
                   "FF-NT": kinds.FFPP["NeuralTextures"], "FF-FH": kinds.FFPP["FaceShifter"],
                   "DFD_fake": "face_swap", "CelebDFv1_fake": "face_swap", "CelebDFv2_fake": "face_swap",
                   "DF_fake": "face_swap", "UADFV_Fake": "face_swap"}
COMPRESSIONS = ("c23", "c40", "raw", "c0")
FF_FAMILY = ("FaceForensics++", "FF-DF", "FF-F2F", "FF-FS", "FF-NT", "FaceShifter")
ORDER = {s: i for i, s in enumerate(SPLITS)}
_CELEB = re.compile(r"^(id\d+)(?:_(id\d+))?_(\d+)$")
_FF_PAIR = re.compile(r"^(\d+)_(\d+)$")


def family(name: str) -> str:
    """Which of DeepfakeBench's datasets a JSON's top-level name is (its protocol and naming rules)."""
    base = name.removesuffix("_c40")
    if base in FF_FAMILY:
        return "ffpp"
    return {
        "DeepFakeDetection": "dfd", "DFDCP": "dfdcp", "DFDC": "dfdc", "UADFV": "uadfv",
        "DeeperForensics-1.0": "deeperforensics", "Celeb-DF-v1": "celebdf", "Celeb-DF-v2": "celebdf",
    }.get(base, "generic")


def label_of(sub_label: str, overrides: dict[str, int] | None = None) -> int | None:
    """A sub-label's class by DeepfakeBench's label_dict (overrides first), else by a ``*_real``/``*_fake`` name."""
    for table in (overrides or {}, LABEL_DICT):
        if sub_label in table:
            return int(table[sub_label])
    low = sub_label.lower()
    if low.endswith("fake"):
        return 1
    if low.endswith("real"):
        return 0
    return None


class PathResolver:
    """Maps a frame path as written in a DeepfakeBench JSON to a path relative to ``root``.

    The JSONs hold whatever ``os.path.join`` made on the preparer's machine: backslashes, ``./datasets\\rgb``
    prefixes, absolute paths. The longest suffix of the path that exists under ``root`` wins; the prefix that
    was dropped is remembered, so each later path costs one lookup.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefixes: dict[tuple[str, ...], int] = {}  # dropped prefix -> count of uses
        self._lock = threading.Lock()

    @staticmethod
    def parts(raw: str) -> tuple[str, ...]:
        return tuple(p for p in raw.replace("\\", "/").split("/") if p not in ("", "."))

    def resolve_dir(self, raw_parts: tuple[str, ...]) -> str | None:
        """The folder ``raw_parts`` names, relative to ``root``, or None when no suffix of it exists there."""
        with self._lock:
            known = sorted(self.prefixes, key=lambda p: -self.prefixes[p])
        for prefix in known:
            if raw_parts[: len(prefix)] == prefix and (self.root.joinpath(*raw_parts[len(prefix):])).is_dir():
                self._used(prefix)
                return PurePosixPath(*raw_parts[len(prefix):]).as_posix()
        for k in range(len(raw_parts)):
            if self.root.joinpath(*raw_parts[k:]).is_dir():
                self._used(raw_parts[:k])
                return PurePosixPath(*raw_parts[k:]).as_posix()
        return None

    def shown(self, raw_parts: tuple[str, ...]) -> str:
        """A JSON path that resolved nowhere, as it would sit under ``root`` (the prefix most paths dropped)."""
        with self._lock:
            known = sorted(self.prefixes, key=lambda p: -self.prefixes[p])
        for prefix in known:
            if raw_parts[: len(prefix)] == prefix:
                return PurePosixPath(*raw_parts[len(prefix):]).as_posix()
        return PurePosixPath(*raw_parts).as_posix() if raw_parts else ""

    def _used(self, prefix: tuple[str, ...]) -> None:
        with self._lock:
            self.prefixes[prefix] = self.prefixes.get(prefix, 0) + 1


class DeepfakeBench(CropFolderSource):
    """One DeepfakeBench dataset JSON (+ its crops under ``root``) as a leak-free dfd dataset.

    Args:
        json_name: the JSON's name (``FaceForensics++``, ``Celeb-DF-v2``, ``DFDC``, ``simswap_ff``...); a
            ``_c40`` suffix reads the same JSON at c40, as DeepfakeBench does.
        json_dir: folder holding ``<json_name>.json`` (DeepfakeBench: ``preprocessing/dataset_json``).
        compression: level picked in JSONs that have one (FF++ family, DFD, FaceShifter).
        val_fraction, test_fraction: shares carved by identity where DeepfakeBench's split is broken or absent
            (test only for DFD/UADFV, which have no test split of their own).
        all_test: DFD/UADFV: every video in test instead of carving (their usual cross-dataset use).
        val_straddlers: ``drop`` | ``held_out``: a fake mixing a held-out and a train identity.
        label_dict: extra ``{sub_label: 0|1}`` for labels DeepfakeBench's label_dict lacks.
        frames, landmarks, workers: see ``CropFolderSource``.
    """

    config_name = "deepfakebench"

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        json_name: str = "FaceForensics++",
        json_dir: str | Path | None = None,
        compression: str = "c23",
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        all_test: bool = False,
        val_straddlers: str = "drop",
        label_dict: dict[str, int] | None = None,
        frames: int = 0,
        landmarks: bool = True,
        workers: int = 8,
    ) -> None:
        super().__init__(name, root, cache_dir, frames=frames, landmarks=landmarks, workers=workers)
        self.json_name = str(json_name)
        self.json_dir = Path(json_dir) if json_dir else None
        self.compression = str(compression)
        if self.json_name.endswith("_c40"):
            self.compression = "c40"  # DeepfakeBench's FaceForensics++_c40 / FF-DF_c40 aliases
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.all_test = bool(all_test)
        self.val_straddlers = val_straddlers
        self.label_dict = {str(k): int(v) for k, v in dict(label_dict or {}).items()}
        self.leaks: Counter = Counter()
        self.skipped: list[Skip] = []
        self.frames_missing: list[tuple[str, int]] = []  # (video, frames the JSON lists that are not on disk)

    # -- files ----------------------------------------------------------------------------------------
    @property
    def json_path(self) -> Path:
        folder = self.json_dir or (self.root / "dataset_json" if self.root else Path("dataset_json"))
        for stem in (self.json_name, self.json_name.removesuffix("_c40")):
            if (folder / f"{stem}.json").is_file():
                return folder / f"{stem}.json"
        return folder / f"{self.json_name}.json"

    def data_paths(self) -> list[Path]:
        # The rgb folder is shared by all of DeepfakeBench's datasets: this one is here when its JSON is.
        return [self.json_path]

    def _params(self) -> dict[str, Any]:
        return {"json": str(self.json_path.resolve()), "json_name": self.json_name, "compression": self.compression,
                "val_fraction": self.val_fraction, "test_fraction": self.test_fraction, "all_test": self.all_test,
                "val_straddlers": self.val_straddlers, "label_dict": self.label_dict}

    def _stamp(self) -> dict[str, Any]:
        st = self.json_path.stat() if self.json_path.is_file() else None
        return {"json_size": st.st_size if st else None, "json_mtime_ns": st.st_mtime_ns if st else None}

    def _load(self) -> tuple[str, dict]:
        path = self.json_path
        if not path.is_file():
            have = sorted(p.stem for p in path.parent.glob("*.json")) if path.parent.is_dir() else []
            hint = f"JSONs there: {have}; set dataset.json_name" if have else (
                "download DeepfakeBench's dataset JSONs and set dataset.json_dir=<folder holding them>")
            raise DatasetError(f"{self.name}: {path} not found; {hint}")
        try:
            data = json.loads(path.read_text())
        except ValueError as e:
            raise DatasetError(f"{self.name}: {path} is not valid JSON ({e}); re-download it") from e
        for key in (self.json_name, self.json_name.removesuffix("_c40")):
            if isinstance(data, dict) and key in data:
                return key, data[key]
        if isinstance(data, dict) and len(data) == 1:
            return next(iter(data.items()))
        raise DatasetError(f"{self.name}: {path}: expected one top-level key {self.json_name!r}, found "
                           f"{list(data)[:5] if isinstance(data, dict) else type(data).__name__}")

    # -- JSON -> entries ------------------------------------------------------------------------------
    def _entries(self, tree: dict) -> list[dict]:
        """One entry per (sub-label, split, video) in the JSON, compression level chosen."""
        out = []
        for sub_label, splits in tree.items():
            if not isinstance(splits, dict):
                continue
            for split, videos in splits.items():
                if split not in SPLITS or not isinstance(videos, dict):
                    continue
                videos = self._pick_compression(videos, sub_label, split)
                for vname, entry in videos.items():
                    frames = entry.get("frames") if isinstance(entry, dict) else None
                    if not isinstance(frames, list) or not frames:
                        self.leaks["malformed_or_empty_entries"] += 1  # e.g. DFDC's overwritten val
                        continue
                    label_name = str(entry.get("label") or sub_label)
                    label = label_of(label_name, self.label_dict)
                    if label is None:
                        raise DatasetError(
                            f"{self.name}: {self.json_path}: unknown label {label_name!r} (not in DeepfakeBench's "
                            f"label_dict); set dataset.label_dict={{{label_name}: 0 or 1}}"
                        )
                    out.append({"sub_label": str(sub_label), "json_split": split, "name": str(vname),
                                "label": label, "frames": [str(f) for f in frames]})
        return out

    def _pick_compression(self, videos: dict, sub_label: str, split: str) -> dict:
        levels = [k for k in videos if k in COMPRESSIONS]
        if not levels or len(levels) != len(videos) or any("frames" in v for v in videos.values() if isinstance(v, dict)):
            return videos
        self._has_compression = True
        if self.compression in videos:
            return videos[self.compression] or {}
        alias = next((c for c in ("raw", "c0") if self.compression in ("raw", "c0") and c in videos), None)
        if alias:
            return videos[alias] or {}
        raise DatasetError(f"{self.name}: {self.json_path}: {sub_label}/{split} has levels {levels}, not "
                           f"{self.compression!r}; set dataset.compression=<one of them>")

    def _resolve(self, entries: list[dict]) -> None:
        """Fill each entry's ``folder`` (relative to root) and ``files`` (its crops that exist, in frame order)."""
        resolver = PathResolver(self.root)

        def one(e: dict) -> None:
            raw = PathResolver.parts(e["frames"][0])
            folder = resolver.resolve_dir(raw[:-1]) if len(raw) > 1 else None
            e["folder"], e["files"] = folder, []
            if folder is None:
                return
            wanted = {PathResolver.parts(f)[-1] for f in e["frames"] if PathResolver.parts(f)}
            e["files"] = [f"{folder}/{n}" for n in list_frame_files(self.root / folder) if n in wanted]
            e["frames_missing"] = len(wanted) - len(e["files"])

        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(one, entries, chunksize=64))
        if entries and all(e["folder"] is None for e in entries):
            raise DatasetError(
                f"{self.name}: no frames folder of {self.json_path} exists under {self.root} (e.g. "
                f"{entries[0]['frames'][0]!r}); set dataset.root to the folder the JSON's paths are relative to "
                "(DeepfakeBench's rgb_dir, holding e.g. FaceForensics++/ and Celeb-DF-v2/)"
            )
        self.prefixes_dropped = {"/".join(p) or "(none)": n for p, n in resolver.prefixes.items()}
        for e in entries:
            if e["folder"] is None:
                raw = PathResolver.parts(e["frames"][0])
                e["folder_shown"] = resolver.shown(raw[:-1])

    # -- index ----------------------------------------------------------------------------------------
    def _index_rows(self) -> pd.DataFrame:
        self.leaks, self.skipped, self.notes, self._frame_files = Counter(), [], [], {}
        self.frames_missing = []
        self._has_compression = False
        top, tree = self._load()
        fam = family(top)
        entries = self._entries(tree)
        if not entries:
            raise DatasetError(f"{self.name}: {self.json_path} lists no videos (with frames) under {top!r}")
        self._resolve(entries)
        missing_frames: dict[str, int] = {}  # a folder listed in several splits counts once
        for e in entries:
            if not e["files"]:
                self.skipped.append(Skip(e.get("folder_shown") or e["folder"] or e["name"],
                                         "frames folder missing" if e["folder"] is None
                                         else "none of its listed frames on disk", e["sub_label"], e["label"]))
            elif e.get("frames_missing"):
                missing_frames[e["folder"]] = max(missing_frames.get(e["folder"], 0), e["frames_missing"])
        self.frames_missing = sorted(missing_frames.items())
        self.leaks["videos_missing_on_disk"] = len(self.skipped)
        rows = self._merge([e for e in entries if e["files"]], fam)
        rows = self._apply_protocol(rows, fam)
        resolve_source_videos(rows)
        for r in rows:
            self._frame_files[r["video_id"]] = r.pop("_files")
        self._summarise(top, fam, rows)
        kinds.fill(rows, lambda r: SUB_LABEL_KINDS.get(r["sub_label"], ""))
        return index_frame(rows, extra=("sub_label", "json_splits", "compression", "source_identity",
                                        "source_video", "n_frames", "method_type"))

    def _merge(self, entries: list[dict], fam: str) -> list[dict]:
        """One row per frames folder: DeepfakeBench lists some videos in several splits (or sub-labels)."""
        by_folder: dict[str, list[dict]] = {}
        for e in entries:
            by_folder.setdefault(e["folder"], []).append(e)
        ids = _video_ids(list(by_folder))
        dfdc_meta: dict[str, dict] = {}  # part folder -> its metadata.json (DFDC pairing), read once each
        rows = []
        for folder, group in by_folder.items():
            labels = {e["label"] for e in group}
            if len(labels) > 1:
                raise DatasetError(f"{self.name}: {folder} is listed as both real and fake in {self.json_path}")
            e0 = group[0]
            files = max((e["files"] for e in group), key=len)
            ident = _identity(fam, ids[folder], e0["label"], folder, self.root, dfdc_meta)
            rows.append({
                "video_id": ids[folder], "label": e0["label"], "split": "", "method": e0["sub_label"],
                "identity": ident["ids"][0] if ident["ids"] else "", "path": folder, "kind": "frames",
                "sub_label": e0["sub_label"], "json_splits": ",".join(sorted({e["json_split"] for e in group},
                                                                             key=ORDER.get)),
                "compression": self.compression if self._has_compression else "",
                "source_identity": ident["source_identity"], "source_video": ident["source_video"],
                "_source_name": ident["source_name"], "n_frames": len(files), "_files": files,
                "_ids": ident["ids"], "_splits": {e["json_split"] for e in group}, "_group": ident["group"],
            })
        return rows

    # -- protocol repairs -----------------------------------------------------------------------------
    def _apply_protocol(self, rows: list[dict], fam: str) -> list[dict]:
        L = self.leaks
        in_test = [r for r in rows if "test" in r["_splits"]]
        val_is_test = {r["video_id"] for r in rows if "val" in r["_splits"]} == {r["video_id"] for r in in_test}
        if fam in ("dfd", "uadfv"):
            # Every video is in train, val and test alike: one copy each, then an identity-disjoint split.
            L["copies_merged"] += sum(len(r["_splits"]) - 1 for r in rows)
            for r in rows:
                r["split"] = "test" if self.all_test else "train"
            if not self.all_test:
                L["straddlers_dropped"] += len(carve_identities(
                    rows, self.val_fraction, self.test_fraction, salt=f"deepfakebench-{fam}",
                    straddlers=self.val_straddlers))
            return drop_blank_splits(rows)
        if fam == "deeperforensics":
            return self._deeperforensics(rows)
        if fam == "dfdc":
            L["val_entries_ignored"] += sum(1 for r in rows if "val" in r["_splits"])
            for r in rows:
                r["split"] = "test" if "test" in r["_splits"] else "train" if "train" in r["_splits"] else ""
            rows = drop_blank_splits(rows)
            self._carve_dfdc(rows)
            return rows
        # Official splits (FF++ family) or train/test with a broken or missing val (Celeb-DF, DFDCP, others).
        for r in rows:
            if "test" in r["_splits"]:
                L["train_videos_in_test_removed"] += "train" in r["_splits"]
                L["val_videos_in_test_removed"] += "val" in r["_splits"] and not val_is_test
                r["split"] = "test"
            else:
                r["split"] = "val" if "val" in r["_splits"] else "train"
        has_val = any(r["split"] == "val" for r in rows)
        if fam != "ffpp" and (not has_val or val_is_test or fam in ("celebdf", "dfdcp")):
            L["val_entries_ignored"] += sum(1 for r in rows if "val" in r["_splits"])
            for r in rows:
                if r["split"] == "val":
                    r["split"] = "train"
            L["straddlers_dropped"] += len(carve_identities(
                rows, self.val_fraction, salt=f"deepfakebench-{fam}-val", straddlers=self.val_straddlers))
        return drop_blank_splits(rows)

    def _deeperforensics(self, rows: list[dict]) -> list[dict]:
        fakes = [r for r in rows if r["label"] == 1]
        for r in fakes:
            r["split"] = max(r["_splits"], key=ORDER.get)  # the official lists put each fake in one split
        actor_split: dict[str, str] = {}
        for r in fakes:
            actor = r["source_identity"]
            if actor and ORDER[r["split"]] >= ORDER[actor_split.get(actor, "train")]:
                actor_split[actor] = r["split"]
        for r in rows:
            if r["label"] == 0:
                self.leaks["copies_merged"] += len(r["_splits"]) - 1
                r["split"] = actor_split.get(r["identity"], "train")
        self.notes.append("DeeperForensics-1.0: DeepfakeBench's reals are the actors' source_videos, not the FF++ "
                          "targets its authors define as real; dataset=deeperforensics reads the authors' protocol")
        return rows

    def _carve_dfdc(self, rows: list[dict]) -> None:
        parts = sorted({r["_group"] for r in rows if r["split"] == "train"})
        if len(parts) >= 2:
            draw = assign_splits(parts, self.val_fraction, salt="deepfakebench-dfdc-parts")
            for r in rows:
                if r["split"] == "train":
                    r["split"] = draw[r["_group"]]
            self.notes.append(f"DFDC val = whole train parts {sorted(p for p, s in draw.items() if s == 'val')}")
        elif parts:
            self.notes.append("DFDC: one train part only: no validation split carved (never per video)")

    def _summarise(self, top: str, fam: str, rows: list[dict]) -> None:
        L, say = self.leaks, self.notes.append
        for split in ("train", "val"):
            if L[f"{split}_videos_in_test_removed"]:
                say(f"leak fixed: {L[f'{split}_videos_in_test_removed']} {split} videos that are also test videos "
                    f"removed from {split}")
        if L["copies_merged"]:
            say(f"leak fixed: {L['copies_merged']} copies of videos DeepfakeBench puts in several splits merged")
        if L["val_entries_ignored"]:
            say(f"{top}'s own val ({L['val_entries_ignored']} entries; {'corrupt' if fam == 'dfdc' else 'equal to test or absent'}) "
                "ignored: val carved from train")
        if L["straddlers_dropped"]:
            say(f"{L['straddlers_dropped']} fakes mixing a held-out and a train identity dropped")
        if L["malformed_or_empty_entries"]:
            say(f"{L['malformed_or_empty_entries']} JSON entries without a frames list skipped")
        short = sum(1 for r in rows if r["n_frames"] < 32)
        if short:
            say(f"{short} videos have fewer than 32 crops (frames where DeepfakeBench's dlib found no face)")
        say(f"{top} ({fam}): {split_counts(rows)}")


# -- naming rules -----------------------------------------------------------------------------------------
def _video_ids(folders: list[str]) -> dict[str, str]:
    """``<sub-dataset>/<video>`` from ``.../<sub-dataset>[/<comp>]/frames/<video>``, e.g. ``Deepfakes/000_003``,
    ``youtube/000``, ``Celeb-real/id0_0000`` (the ids dfd's own FF++ and Celeb-DF sources use); more leading
    folders only where that is ambiguous (``simswap/ff/000_003`` beside ``inswap/ff/000_003``)."""
    info = {}
    for f in folders:
        parts = PurePosixPath(f).parts
        i = max((k for k, p in enumerate(parts[:-1]) if p == "frames"), default=-1)
        head = list(parts[:i]) if i >= 0 else list(parts[:-1])
        if head and head[-1] in COMPRESSIONS:
            head.pop()
        info[f] = (head, parts[-1])
    out: dict[str, str] = {}
    pending, k = set(folders), 1
    while pending:
        # Ids of different depths never collide, so each depth only has to be unique among itself.
        cand = {f: "/".join([*info[f][0][-k:], info[f][1]]) for f in pending}
        counts = Counter(cand.values())
        out.update({f: c for f, c in cand.items() if counts[c] == 1})
        pending -= out.keys()
        if pending and all(k >= len(info[f][0]) for f in pending):
            out.update({f: f for f in pending})  # the same path twice cannot happen: keep the folder
            break
        k += 1
    # One style per folder of videos: siblings take the depth the most ambiguous of them needed.
    depth: dict[tuple[str, ...], int] = {}
    for f, vid in out.items():
        if vid != f:
            head = tuple(info[f][0])
            depth[head] = max(depth.get(head, 1), vid.count("/"))
    final = {f: "/".join([*info[f][0][-depth[tuple(info[f][0])]:], info[f][1]]) if out[f] != f else f for f in out}
    counts = Counter(final.values())
    return {f: v if counts[v] == 1 else f for f, v in final.items()}


def _identity(fam: str, video_id: str, label: int, folder: str, root: Path, dfdc_meta: dict) -> dict[str, Any]:
    """Identities shown (``ids``, target first), the source identity, and the real video a fake came from."""
    group = video_id.split("/", 1)[0] if "/" in video_id else ""
    out: dict[str, Any] = {"ids": (), "source_identity": "", "source_video": "", "source_name": "", "group": group}
    vname = PurePosixPath(folder).name
    if fam == "ffpp":
        m = _FF_PAIR.match(vname)
        if m and label:
            out.update(ids=(m.group(1), m.group(2)), source_identity=m.group(2), source_video=f"youtube/{m.group(1)}")
        else:
            out["ids"] = (vname,)
    elif fam == "dfd":
        actors, _, rest = vname.partition("__")
        t, _, s = actors.partition("_")
        scene = rest.split("__")[0]
        if label and s:
            out.update(ids=(f"actor{t}", f"actor{s}"), source_identity=f"actor{s}",
                       source_video=f"actors/{t}__{scene}", source_name=f"{t}__{scene}")
        else:
            out["ids"] = (f"actor{t}",)
    elif fam == "celebdf":
        m = _CELEB.match(vname)
        if m and m.group(2):
            out.update(ids=(m.group(1), m.group(2)), source_identity=m.group(2),
                       source_video=f"Celeb-real/{m.group(1)}_{m.group(3)}")
        else:
            out["ids"] = (m.group(1),) if m else (f"youtube/{vname}",)
    elif fam == "dfdcp":
        target, swapped, rest = dfdcp_name(vname)
        out["ids"] = tuple(i for i in (target, swapped) if i)
        if label and target and rest:
            out.update(source_identity=swapped, source_video=f"original_videos/{target}_{rest}")
    elif fam == "dfdc":
        out["ids"] = (group,)
        original = _dfdc_original(root, folder, vname, dfdc_meta) if label else ""
        if original:
            out.update(source_video=f"{group}/{PurePosixPath(original).stem}", source_name=original)
    elif fam == "deeperforensics":
        head, _, tail = vname.partition("_")
        if label:  # <FF++ target>_<actor>
            out.update(ids=(head,), source_identity=tail, source_name=f"youtube/{head}")
        else:  # <actor>_light_..., <actor>_BlendShape_...
            out["ids"] = (head,)
    elif fam == "uadfv":
        pair = vname.removesuffix("_fake")
        out["ids"] = (pair,)
        if label:
            out.update(source_video=f"real/{pair}")
    else:
        out["ids"] = (video_id,)
    return out


def _dfdc_original(root: Path, folder: str, vname: str, cache: dict[str, dict]) -> str:
    """A DFDC fake's ``original`` from its part's metadata.json, when the part folder still has it."""
    parts = PurePosixPath(folder).parts
    base = root.joinpath(*parts[: parts.index("frames")]) if "frames" in parts else root.joinpath(*parts[:-1])
    key = str(base)
    if key not in cache:
        meta = base / "metadata.json"
        try:
            cache[key] = json.loads(meta.read_text()) if meta.is_file() else {}
        except ValueError:
            cache[key] = {}
    entry = cache[key].get(f"{vname}.mp4") or {}
    value = entry.get("original") if isinstance(entry, dict) else None
    return str(value) if value else ""
