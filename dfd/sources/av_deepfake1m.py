"""AV-Deepfake1M and AV-Deepfake1M++ (Cai et al., ACM MM 2024 / 2025): partial fakes, a few words re-spoken and
lip-synced inside otherwise real VoxCeleb2 videos.

Layout (the authors' SDK README)::

    train_metadata.json   train/<file>.mp4        (++: per-file JSON beside the videos, or in train_metadata/)
    val_metadata.json     val/<file>.mp4
    test_files.txt        test/ (testA/, testB/)  labels withheld (challenge): not indexed

Each metadata entry: ``file``, ``original``, ``modify_type`` (``real`` | ``visual_modified`` | ``audio_modified``
| ``both_modified``), ``fake_segments``, ``visual_fake_segments``, ``audio_fake_segments`` ([[start, end], ...]
in seconds), ``video_frames``, ``audio_model`` (++: ``video_model``).

**Labels for a face detector.** A video is fake when its pixels were altered: ``modify_type`` is
``visual_modified`` or ``both_modified`` (trusted over the segment lists, which some entries copy across
modalities). ``audio_modified`` videos have real pixels: ``audio_only=real`` (default) keeps them as reals,
``exclude`` leaves them out; counted. The label the dataset publishes for its own video-level AUC (fake iff
``fake_segments`` is not empty, whatever the modality) is kept as ``published_label``.

**Frame labels.** A fake video is fake only inside its visual segments (``visual_fake_segments``, else
``fake_segments``), written to the index column ``fake_segments``: ``dfd-extract`` samples frames inside and
outside them and labels each frame by them at the video's own frame rate (manifest ``frame_label``; the rule:
``dfd.faces.contract.segment_indices`` / ``segment_labels``). ``label`` stays the video's.

Splits: ``train`` -> train, with val carved from it by identity (the VoxCeleb2 ``id<N>``; in ++ train and val
share subjects), ``val`` -> test. ``method`` is ``modify_type``; ``method_type`` of a visual fake is lip sync.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources.base import DatasetSource, index_frame
from dfd.sources.protocols import carve_identities, drop_blank_splits, split_counts

SUBSETS = {"train": "train", "val": "test"}
VISUAL = frozenset({"visual_modified", "both_modified"})
AUDIO_ONLY = ("real", "exclude")
_ID = re.compile(r"id\d+")


def _segments(value: object) -> list[list[float]]:
    if not isinstance(value, list):
        return []
    return [[float(a), float(b)] for a, b in value if b > a]


class AVDeepfake1M(DatasetSource):
    """AV-Deepfake1M(++) with visual labels, per-frame labels from the fake segments, and a carved val.

    Args:
        audio_only: ``real`` (default: their pixels are) or ``exclude``: what ``audio_modified`` videos are.
        val_fraction: share of training identities carved into val.
    """

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        audio_only: str = "real",
        val_fraction: float = 0.1,
    ) -> None:
        super().__init__(name, root, cache_dir)
        if audio_only not in AUDIO_ONLY:
            raise DatasetError(f"{name}: dataset.audio_only must be {'|'.join(AUDIO_ONLY)}, got {audio_only!r}")
        self.audio_only = audio_only
        self.val_fraction = val_fraction
        self.notes: list[str] = []
        self.skipped: list[str] = []
        self.dropped: list[str] = []

    def _entries(self, subset: str) -> list[dict] | None:
        """The subset's metadata entries (one JSON list, or one JSON per video), None when it has none."""
        table = self.root / f"{subset}_metadata.json"
        if table.is_file():
            try:
                entries = json.loads(table.read_text())
            except ValueError as e:
                raise DatasetError(f"{self.name}: {table} is not JSON ({e}); re-download it") from e
            if not isinstance(entries, list):
                raise DatasetError(f"{self.name}: {table} is not a JSON list of per-video entries")
            return entries
        for folder in (self.root / f"{subset}_metadata", self.root / subset):  # per-file JSONs (++ in <subset>/)
            if folder.is_dir():
                files = sorted(Path(d) / f for d, _, fs in os.walk(folder) for f in fs if f.endswith(".json"))
                if files:
                    return [json.loads(p.read_text()) for p in files]
        return None

    def _index_rows(self) -> pd.DataFrame:
        self.notes, self.skipped, self.dropped = [], [], []
        rows, audio_only, missing, no_segments = [], 0, [], 0
        for subset, split in SUBSETS.items():
            entries = self._entries(subset)
            if entries is None:
                self.notes.append(f"no {subset}_metadata.json (or per-video JSONs) in {self.root}: {subset} not indexed")
                continue
            on_disk = {(Path(d) / f).relative_to(self.root / subset).as_posix()
                       for d, _, fs in os.walk(self.root / subset) for f in fs if f.endswith(".mp4")}
            for e in entries:
                file = str(e.get("file", "")).replace("\\", "/")
                if file not in on_disk:
                    missing.append(f"{subset}/{file}")
                    continue
                modify = str(e.get("modify_type", ""))
                label = int(modify in VISUAL)
                if modify == "audio_modified":
                    audio_only += 1
                    if self.audio_only == "exclude":
                        continue
                segs = (_segments(e.get("visual_fake_segments")) or _segments(e.get("fake_segments"))) if label else []
                no_segments += int(bool(label and not segs))
                ident = next(iter(_ID.findall(file) or _ID.findall(str(e.get("original", "")))), "")
                original = str(e.get("original") or "")
                rows.append({
                    "video_id": f"{subset}/{file[:-4]}", "label": label, "split": split,
                    "method": modify or "real", "identity": ident, "path": f"{subset}/{file}", "kind": "video",
                    "fake_segments": json.dumps(segs) if segs else "",
                    "published_label": int(bool(_segments(e.get("fake_segments")))),
                    "modify_type": modify, "audio_model": str(e.get("audio_model") or ""),
                    "video_model": str(e.get("video_model") or ""),
                    "video_frames": int(e.get("video_frames") or 0),
                    "source_video": f"{subset}/{original[:-4]}" if label and original.endswith(".mp4") else "",
                    "method_type": "lip_sync" if label else "", "_ids": (ident,) if ident else (),
                })
        if not rows:
            raise DatasetError(f"{self.name}: no AV-Deepfake1M metadata with videos in {self.root} (expected "
                               "train_metadata.json + train/, val_metadata.json + val/); set dataset.root")
        ids = {r["video_id"] for r in rows}
        for r in rows:
            if r["source_video"] not in ids:
                r["source_video"] = ""  # its real is not indexed here (the dataset names it in `original`)
        if missing:
            self.notes.append(f"{len(missing)} metadata entries without their video on disk (dropped), e.g. "
                              f"{missing[:3]}")
            self.skipped += missing
        self.notes.append(f"audio_modified (real pixels, fake audio): {audio_only} video(s) "
                          f"{'kept as real' if self.audio_only == 'real' else 'excluded'} (dataset.audio_only="
                          f"{self.audio_only}); published_label keeps the dataset's own (either-modality) label")
        if no_segments:
            self.notes.append(f"{no_segments} visual fake(s) list no fake segment: every frame labelled fake")
        withheld = [d for d in ("test", "testA", "testB") if (self.root / d).is_dir()]
        if withheld:
            self.notes.append(f"{', '.join(withheld)}: labels withheld by the challenge, not indexed")
        self.dropped = carve_identities(rows, self.val_fraction, salt="av-deepfake1m-val", within="train")
        rows = drop_blank_splits(rows)
        self.notes.append(f"splits: the official train (val carved from it by identity) and val (-> test); "
                          f"{split_counts(rows)}")
        return index_frame(rows, extra=("fake_segments", "published_label", "modify_type", "audio_model",
                                        "video_model", "video_frames", "source_video", "method_type"))
