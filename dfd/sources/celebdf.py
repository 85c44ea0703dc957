"""Celeb-DF v1 and v2: three video folders and the official ``List_of_testing_videos.txt``.

Identity choice (documented because it decides what leaks): a synthesis video ``id<a>_id<b>_<n>`` shows
celebrity ``a``'s video (body, background, expressions) with ``b``'s face, so it carries *both* identities.
``identity`` is the target ``id<a>``; ``source_identity`` keeps ``id<b>``. The validation set is carved by
identity from the non-test videos: a video goes to val only when every identity it shows was drawn for val, to
train only when none was; one that straddles the two is dropped (``val_straddlers=drop``, val never shares
a face with train, at the cost of the fakes mixing a val and a train identity) or sent to val
(``val_straddlers=val``: more val fakes, val then shares some source faces with train; train stays clean).
Val identities are drawn preferably from identities absent from the test list. The official protocol trains
on everything outside the test list, although test identities also appear in training videos; set
``exclude_test_identities=true`` to drop those training videos for an identity-disjoint test.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources import kinds
from dfd.sources.base import DatasetSource, assign_splits, index_frame

log = logging.getLogger(__name__)

TEST_LIST = "List_of_testing_videos.txt"
# Canonical folder name -> (label in dfd's convention, method name). Lookup is case-insensitive so that
# "Youtube-real" (some copies) and "YouTube-real" (the paper) are the same folder.
FOLDERS = {"Celeb-real": (0, "celeb-real"), "YouTube-real": (0, "youtube-real"), "Celeb-synthesis": (1, "celeb-synthesis")}
_CANON = {k.lower(): k for k in FOLDERS}
_IDS = re.compile(r"^(id\d+)(?:_(id\d+))?_\d+$")


class CelebDF(DatasetSource):
    """Celeb-DF (``version`` 1 or 2): official test list, identity-disjoint validation carved from the rest.

    Args:
        version: 1 or 2 (same layout and protocol; kept for reports and sanity messages).
        val_fraction: share of non-test identities held out for validation.
        exclude_test_identities: drop training videos that show an identity from the test list.
        val_straddlers: ``drop`` or ``val``: where a video showing a val and a train identity goes.
    """

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        version: int = 2,
        val_fraction: float = 0.1,
        exclude_test_identities: bool = False,
        val_straddlers: str = "drop",
    ) -> None:
        super().__init__(name, root, cache_dir)
        if int(version) not in (1, 2):
            raise DatasetError(f"{name}: dataset.version must be 1 or 2, got {version}")
        if val_straddlers not in ("drop", "val"):
            raise DatasetError(f"{name}: dataset.val_straddlers must be drop or val, got {val_straddlers!r}")
        self.val_straddlers = val_straddlers
        self.version = int(version)
        self.val_fraction = val_fraction
        self.exclude_test_identities = exclude_test_identities
        self.dropped: list[str] = []

    def _folders(self) -> dict[str, Path]:
        """Canonical folder -> the folder holding its videos (with or without a ``videos/`` level)."""
        found = {}
        for p in self.root.iterdir():
            canon = _CANON.get(p.name.lower())
            if canon and p.is_dir():
                found[canon] = p / "videos" if (p / "videos").is_dir() else p
        missing = sorted(set(FOLDERS) - set(found))
        if missing:
            raise DatasetError(
                f"{self.name}: expected folders {sorted(FOLDERS)} in {self.root}, missing {missing}; set "
                f"dataset.root to the unpacked Celeb-DF-v{self.version} folder"
            )
        return found

    def _test_list(self) -> dict[tuple[str, str], int]:
        """(canonical folder, file name) -> dfd label, converting the file's 1 = real convention once."""
        path = self.root / TEST_LIST
        if not path.is_file():
            raise DatasetError(
                f"{self.name}: official test list {path} not found; it ships with Celeb-DF-v{self.version} "
                "(keep it in the dataset root)"
            )
        out = {}
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            flag, _, rel = line.strip().partition(" ")
            parts = rel.strip().replace("\\", "/").split("/")
            canon = _CANON.get(parts[0].lower())
            if flag not in ("0", "1") or canon is None:
                raise DatasetError(
                    f"{self.name}: {path}:{n}: expected '<1 real|0 fake> <folder>/<video>.mp4', got {line!r}"
                )
            label = 1 - int(flag)
            if label != FOLDERS[canon][0]:
                raise DatasetError(f"{self.name}: {path}:{n}: label {flag} contradicts folder {parts[0]}")
            out[(canon, parts[-1])] = label
        return out

    def _index_rows(self) -> pd.DataFrame:
        folders = self._folders()
        test = self._test_list()
        rows = []
        for canon, folder in sorted(folders.items()):
            label, method = FOLDERS[canon]
            for p in sorted(folder.glob("*.mp4")):
                m = _IDS.match(p.stem)
                if canon == "YouTube-real":
                    ids = (f"youtube/{p.stem}",)  # unknown person: each video is its own group
                elif m:
                    ids = (m.group(1), m.group(2)) if m.group(2) else (m.group(1),)
                else:
                    raise DatasetError(f"{self.name}: unexpected file name {p} (expected id<k>_<NNNN>.mp4)")
                rows.append({
                    "video_id": f"{canon}/{p.stem}", "label": label,
                    "split": "test" if (canon, p.name) in test else "",
                    "method": method, "identity": ids[0], "path": p.relative_to(self.root).as_posix(),
                    "kind": "video", "source_identity": ids[1] if len(ids) > 1 else "", "_ids": ids,
                    # Celeb-synthesis/id<a>_id<b>_<n> is made from Celeb-real/id<a>_<n> (a's video, b's face).
                    "source_video": f"Celeb-real/{ids[0]}_{p.stem.rsplit('_', 1)[1]}" if len(ids) > 1 else "",
                })
        found = {(r["video_id"].split("/")[0], Path(r["path"]).name) for r in rows if r["split"] == "test"}
        missing = sorted(set(test) - found)
        if missing:
            raise DatasetError(
                f"{self.name}: {len(missing)} video(s) of {TEST_LIST} are missing under {self.root}, "
                f"e.g. {['/'.join(k) for k in missing[:3]]}; finish the download"
            )
        self._carve_val(rows)
        kinds.fill(rows, "face_swap")  # Celeb-DF's fakes are face swaps made with its improved DeepFake method
        return index_frame([r for r in rows if r["split"]], extra=("source_identity", "source_video", "method_type"))

    def _carve_val(self, rows: list[dict]) -> None:
        test_ids = {i for r in rows if r["split"] == "test" for i in r["_ids"]}
        pool = {i for r in rows if not r["split"] for i in r["_ids"]}
        val_ids: set[str] = set()
        # Celebrities and YouTube videos separately, so val gets celebrity reals (and their fakes) too; within
        # each, prefer identities nobody in the test list shows, else (the usual case for celebrities) any.
        for youtube in (False, True):
            group = {i for i in pool if i.startswith("youtube/") == youtube}
            carve = assign_splits((group - test_ids) or group, self.val_fraction, salt="celebdf-val")
            val_ids |= {i for i, s in carve.items() if s == "val"}
        for r in rows:
            if r["split"]:
                continue
            ids = set(r["_ids"])
            if self.exclude_test_identities and ids & test_ids:
                self.dropped.append(r["video_id"])
            elif ids <= val_ids or (ids & val_ids and self.val_straddlers == "val"):
                r["split"] = "val"
            elif ids & val_ids:
                self.dropped.append(r["video_id"])  # shows a val face and a train face
            else:
                r["split"] = "train"
        if self.dropped:
            log.info("%s: dropped %d videos to keep identities apart", self.name, len(self.dropped))
