"""Deepfake-Eval-2024 (TrueMedia.org et al., arXiv 2503.02857): in-the-wild social-media images and videos.

Layout of the Hugging Face release (``nuriachandra/Deepfake-Eval-2024``)::

    image-data/<id>.<jpg|jpeg|png|webp>     image-metadata-publish.csv   (or image-metadata-publish-with-links.csv)
    video-data/<id>.mp4                     video-metadata-publish.csv   (or video-metadata-publish-with-links.csv)

Labels and split come from the metadata tables, whose headers and values are discovered (case and spacing do
not matter): images ``Filename, Ground Truth, Finetuning Set``; videos ``Filename, Video Ground Truth,
Finetuning Set`` (+ ``Audio Ground Truth``, kept as ``audio_label``). **A video's label is its Video Ground
Truth**: a face detector sees pixels, so a video with real pixels and a cloned voice is real (never "fake if
either track is"). The official split is the ``Finetuning Set`` column (``Train``/``Test``); there is no
validation split, and no identity or source column to carve one by, so val is carved from Train per item and
label (whole source posts when the ``-with-links`` table gives their URL), and the index summary says so.

Dropped and counted (one line each in the summary): rows whose ``Filename`` is an Excel formula artefact
(``#NAME?``), rows without a real/fake label or a Train/Test split, repeated file names, files missing on disk
and images that do not decode (a truncated JPEG is in the release). ``Date`` is never read: Excel turned many
of its cells into ``########`` (counted). Videos that do not decode are listed by ``dfd-extract``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources import tables
from dfd.sources.base import DatasetSource, carve_rows, index_frame, media_kind
from dfd.sources.protocols import split_counts

log = logging.getLogger(__name__)

MEDIA = ("both", "images", "videos")
# (media, folder, tables in order of preference, label column names)
PARTS = {
    "images": ("image-data", ("image-metadata-publish.csv", "image-metadata-publish-with-links.csv"),
               ("Ground Truth", "Image Ground Truth", "Label")),
    "videos": ("video-data", ("video-metadata-publish.csv", "video-metadata-publish-with-links.csv"),
               ("Video Ground Truth",)),
}
LABELS = {"real": 0, "fake": 1}
SPLIT_OF = {"train": "train", "test": "test"}


def undecodable(path: Path) -> str | None:
    """Why an image cannot be decoded (None when it can). JPEGs decode at 1/8 scale (DCT scaling), so checking
    a 40-megapixel photo costs about as much as a thumbnail; truncation still fails the decode."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... on bad files
        return f"{type(e).__name__}: {e}"[:200]
    return None


class DeepfakeEval2024(DatasetSource):
    """Deepfake-Eval-2024's images and/or videos with the official Train/Test split and a carved val.

    Args:
        media: ``both`` (default), ``images`` or ``videos``.
        val_fraction: share of the Train split (per label) carved into val.
        check_images: decode every image while indexing (the release holds undecodable ones).
    """

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        media: str = "both",
        val_fraction: float = 0.1,
        check_images: bool = True,
    ) -> None:
        super().__init__(name, root, cache_dir)
        if media not in MEDIA:
            raise DatasetError(f"{name}: dataset.media must be one of {'|'.join(MEDIA)}, got {media!r}")
        self.media = media
        self.val_fraction = val_fraction
        self.check_images = check_images
        self.notes: list[str] = []
        self.skipped: list[str] = []

    def data_paths(self) -> list[Path]:
        if self.root is None:
            return []
        parts = ("images", "videos") if self.media == "both" else (self.media,)
        return [self.root / PARTS[p][0] for p in parts]

    def _table(self, part: str) -> Path | None:
        return next((self.root / t for t in PARTS[part][1] if (self.root / t).is_file()), None)

    def _index_rows(self) -> pd.DataFrame:
        self.notes, self.skipped = [], []
        parts = ("images", "videos") if self.media == "both" else (self.media,)
        rows: list[dict] = []
        for part in parts:
            table = self._table(part)
            if table is None:
                if self.media != "both":
                    raise DatasetError(
                        f"{self.name}: no {' or '.join(PARTS[part][1])} in {self.root}; set dataset.root to the "
                        f"Deepfake-Eval-2024 download (or dataset.media to the part you have)")
                self.notes.append(f"no {PARTS[part][1][0]} in {self.root}: {part} not indexed")
                continue
            rows += self._part_rows(part, table)
        if not rows:
            raise DatasetError(f"{self.name}: no metadata table of Deepfake-Eval-2024 in {self.root} "
                               f"(expected {PARTS['images'][1][0]} and/or {PARTS['videos'][1][0]})")
        groups = "its source post (URL)" if any(r["_group"] != r["video_id"] for r in rows) else "item"
        carve_rows(rows, self.val_fraction, 0.0, salt="deepfake-eval-2024", within="train", key="_group")
        self.notes.append(f"no official val split: val carved from the official Train split ({self.val_fraction:g} "
                          f"per label, by {groups}; no identity column exists); {split_counts(rows)}")
        return index_frame(rows, extra=("media", "audio_label", "source_url", "method_type"))

    def _part_rows(self, part: str, table: Path) -> list[dict]:
        folder, _, label_names = PARTS[part]
        where = f"{self.name} {part}"
        df = tables.read_csv(table, where)
        fcol = tables.need(df, ("Filename", "File Name", "file"), table, where)
        lcol = tables.need(df, label_names, table, where)
        scol = tables.need(df, ("Finetuning Set", "Split", "Set"), table, where)
        acol = tables.column(df, ("Audio Ground Truth",))
        dcol = tables.column(df, ("Date",))
        ucol = tables.column(df, ("Media", "Link", "URL", "Source"))
        if ucol is not None and not df[ucol].str.startswith("http").any():
            ucol = None  # a column of that name without links groups nothing
        drop: dict[str, list[str]] = {}
        seen: set[str] = set()
        rows = []
        kind = part[:-1]  # image | video
        for i, rec in enumerate(df.to_dict("records")):
            name = str(rec[fcol]).strip()
            line = f"{table.name}:{i + 2}"
            if name.startswith("#") or not name:  # "#NAME?": Excel turned the id into a formula error
                drop.setdefault("Excel artefact file names (#NAME?)", []).append(line)
                continue
            label = LABELS.get(tables.key(rec[lcol]))
            split = SPLIT_OF.get(tables.key(rec[scol]))
            if label is None or split is None:
                drop.setdefault(f"no real/fake {lcol!r} or Train/Test {scol!r}", []).append(
                    f"{line} ({rec[lcol]!r}, {rec[scol]!r})")
                continue
            rel = f"{folder}/{name}"
            if rel in seen:
                drop.setdefault("repeated file names", []).append(line)
                continue
            seen.add(rel)
            path = self.root / rel
            if not path.is_file() or media_kind(path) != kind:
                drop.setdefault("files missing on disk (or not an " + kind + ")", []).append(rel)
                continue
            if kind == "image" and self.check_images and (why := undecodable(path)):
                drop.setdefault("images that do not decode", []).append(f"{rel} ({why})")
                continue
            url = str(rec[ucol]).strip() if ucol else ""
            rows.append({
                "video_id": Path(rel).with_suffix("").as_posix(), "label": label, "split": split,
                "method": kind, "identity": "", "path": rel, "kind": kind, "media": kind,
                "audio_label": str(rec[acol]).strip() if acol else "", "source_url": url,
                "method_type": "",  # the release says real/fake only, not how a fake was made
                "_group": url or Path(rel).with_suffix("").as_posix(),
            })
        for why, items in drop.items():
            self.notes.append(f"{part}: {len(items)} row(s) dropped, {why}: e.g. {items[:3]}")
            self.skipped += [f"{part}: {x}" for x in items]
        if dcol is not None:
            hashes = int(df[dcol].astype(str).str.fullmatch(r"#+").sum())
            if hashes:
                self.notes.append(f"{part}: {hashes} '{dcol}' cells are Excel's '########' (never read: dfd does not "
                                  "use the date)")
        self.notes.append(f"{part}: {len(rows)} kept of {len(df)} rows in {table.name} (label {lcol!r}, split "
                          f"{scol!r}{', grouped by ' + repr(ucol) if ucol else ''})")
        return rows
