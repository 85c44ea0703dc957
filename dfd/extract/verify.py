"""``dfd-extract --verify``: check a cache against its sources, and decode every crop its manifest points to.

Nothing in the cache changes. The crops (the cache's own, or a dataset's crops read in place) are decoded in
parallel, with a progress bar; unreadable ones (missing, 0-byte, truncated, not an image) are listed, all of
them in ``<cache>/unreadable_crops.csv`` (sorted, written atomically: a rerun after a kill writes the same
bytes). The next ``dfd-extract`` redoes the videos of the cache's own unreadable crops.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dfd.extract.config import ExtractConfig
from dfd.extract.parts import distortions, fingerprints, part_is_current, part_path, read_part
from dfd.extract.progress import track_progress
from dfd.faces.contract import CropContract
from dfd.store.cache import manifest_record, moved_here, normalize_root, read_record
from dfd.store.media import MediaError, read_image
from dfd.store.roots import CROP_ROOT_COLUMN, DATASET_ROOT, Roots, crop_roots
from dfd.store.schema import validate_index


@dataclass
class VerifyReport:
    """A cache checked against its sources (``dfd-extract extract.verify=true``, or ``--verify``)."""

    cache_dir: Path
    videos: int = 0
    current: int = 0
    stale: list[str] = field(default_factory=list)  # source changed since its crops were made
    missing_sources: list[str] = field(default_factory=list)  # indexed source no longer on disk
    not_extracted: list[str] = field(default_factory=list)  # in the index, never extracted (or interrupted)
    orphaned: int = 0  # cached videos the index no longer lists (moved or deleted sources)
    problems: list[str] = field(default_factory=list)  # root/contract/manifest level
    crops: CropCheck | None = None  # every crop of the manifest decoded
    in_place: bool = False  # the crops are a dataset's own files (nothing to extract again)

    @property
    def ok(self) -> bool:
        return not (self.stale or self.missing_sources or self.not_extracted or self.orphaned or self.problems
                    or (self.crops is not None and self.crops.unreadable))

    def __str__(self) -> str:
        head = (f"cache {self.cache_dir}: {self.current}/{self.videos} videos current"
                + ("; nothing stale or missing" if self.ok else ""))
        if self.in_place:
            head = f"{self.cache_dir}: crops read in place" + ("; every crop decodes" if self.ok else "")
        lines = [head, *[f"  problem: {p}" for p in self.problems]]
        for label, items, what in (
            ("stale", self.stale, "source changed since extraction: rerun dfd-extract to redo them"),
            ("missing source", self.missing_sources, "source gone: rerun dfd-index + dfd-extract"),
            ("not extracted", self.not_extracted, "rerun dfd-extract"),
        ):
            if items:
                lines.append(f"  {label}: {len(items)} ({what}), e.g. {', '.join(items[:5])}")
        if self.orphaned:
            lines.append(f"  orphaned: {self.orphaned} cached videos no longer in the index (removed by the next "
                         "dfd-extract)")
        if self.crops is not None:
            lines += self.crops.lines(self.in_place)
        return "\n".join(lines)


def verify_cache(index_df: pd.DataFrame, root: str | Path | Roots, cache_dir: str | Path,
                 cfg: ExtractConfig | None = None, faces_are_cropped: bool = False, progress: bool = False
                 ) -> VerifyReport:
    """Check a cache against its sources without changing anything: what the next dfd-extract would redo, and
    every crop of its manifest decoded."""
    cfg = cfg or ExtractConfig()
    index = validate_index(index_df, where="extract index")
    root, cache_dir = Roots.of(root), Path(cache_dir)
    rep = VerifyReport(cache_dir, videos=len(index))
    have = read_record(cache_dir)
    contract = cfg.resolve(faces_are_cropped)
    if have is None:
        rep.problems.append("no cache record (cache.json): not extracted yet, or made by an older dfd")
    else:
        wanted = normalize_root(root.get(DATASET_ROOT))
        manifest = cache_dir / "manifest.parquet"
        if have.get("root") != wanted and not (manifest.is_file() and moved_here(manifest, root) is None):
            rep.problems.append(f"made from root {have.get('root')}, configured root is {wanted}")
        if have.get("contract_id") != contract.fingerprint():
            old = CropContract.from_mapping(have.get("contract"), where="cached contract")
            rep.problems.append(f"made with other crop settings {old.diff(contract)} (cached, configured)")
    if not (cache_dir / "manifest.parquet").is_file():
        rep.problems.append("no manifest.parquet")
    sources = fingerprints(index, root, cfg.hash)
    cid = contract.fingerprint()
    distortion = distortions(index)
    ids = index["video_id"].tolist()
    for v in ids:
        if sources[v] is None:
            rep.missing_sources.append(v)
            continue
        part = read_part(part_path(cache_dir, v)) if part_path(cache_dir, v).is_file() else None
        if part is None:
            rep.not_extracted.append(v)
        elif not part_is_current(part, cid, sources[v], distortion.get(v, "")):
            rep.stale.append(v)
        else:
            rep.current += 1
    parts = cache_dir / "parts"
    if parts.is_dir():
        wanted = {part_path(cache_dir, v).name for v in ids}
        rep.orphaned = sum(1 for p in parts.glob("*.json") if p.name not in wanted)
    if (cache_dir / "manifest.parquet").is_file():
        rep.crops = check_crops(cache_dir / "manifest.parquet", root, progress=progress)
    return rep


UNREADABLE_FILE = "unreadable_crops.csv"
UNREADABLE_COLUMNS = ("video_id", "frame", "split", "label", "crop_path", "reason")


@dataclass
class CropCheck:
    """Every crop of a manifest decoded: how many, and the unreadable ones (``UNREADABLE_COLUMNS`` rows)."""

    manifest: Path
    checked: int = 0
    unreadable: list[tuple] = field(default_factory=list)
    written: Path | None = None  # the full list, when it could be written

    def lines(self, in_place: bool = False) -> list[str]:
        if not self.unreadable:
            return [f"  crops: {self.checked} decoded, none unreadable"]
        by = pd.DataFrame(self.unreadable, columns=list(UNREADABLE_COLUMNS)).groupby(["split", "label"]).size()
        counts = ", ".join(f"{s} {'fake' if lab else 'real'} {n}" for (s, lab), n in by.items())
        fix = ("restore them from the dataset's download; training skips them (data.bad_crops=skip)" if in_place
               else "the next dfd-extract redoes their videos")
        out = [f"  unreadable crops: {len(self.unreadable)} of {self.checked} ({counts}; {fix})"]
        out += [f"    {r[4]}: {r[5]}" for r in self.unreadable[:10]]
        if len(self.unreadable) > 10:
            out.append(f"    ... {len(self.unreadable) - 10} more")
        if self.written is not None:
            out.append(f"  all of them: {self.written}")
        return out

    def write(self, folder: Path) -> Path | None:
        """The full list as ``<folder>/unreadable_crops.csv`` (atomic; removed when none): None if not writable."""
        from dfd import atomic

        path = Path(folder) / UNREADABLE_FILE
        try:
            if not self.unreadable:
                path.unlink(missing_ok=True)
                return None
            with atomic.atomic_path(path) as tmp:
                pd.DataFrame(self.unreadable, columns=list(UNREADABLE_COLUMNS)).to_csv(tmp, index=False)
        except OSError:
            return None  # a read-only cache: the printed list is all there is
        self.written = path
        return path


def _reason(path: Path) -> str | None:
    try:
        read_image(path)
    except MediaError as e:
        return f"{e.reason}: {e.detail}"
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    return None


def check_crops(manifest: str | Path, roots: Roots | None = None, workers: int = 0, progress: bool = False
                ) -> CropCheck:
    """Decode every crop ``manifest`` points to (threads: decoding releases the GIL); list the unreadable ones,
    sorted by crop path. ``roots``: the dataset's folders today (crops read in place)."""
    import pyarrow.parquet as pq

    manifest = Path(manifest)
    names = pq.read_schema(manifest).names
    cols = [c for c in ("video_id", "frame", "split", "label", "crop_path", CROP_ROOT_COLUMN) if c in names]
    table = pq.read_table(manifest, columns=cols).to_pydict()
    n = len(table["crop_path"])
    where = crop_roots(manifest, roots, (manifest_record(manifest) or {}).get("roots"))
    named = table.get(CROP_ROOT_COLUMN) or [""] * n
    paths = [where.resolve(p, r) for p, r in zip(table["crop_path"], named, strict=True)]
    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    bad = []
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(_reason, paths, chunksize=64)
        for i, reason in enumerate(track_progress(results, n, 0, progress, "decoding crops", "crops")):
            if reason is not None:
                bad.append((table["video_id"][i], int(table["frame"][i]), table["split"][i], int(table["label"][i]),
                            str(paths[i]), reason))
    return CropCheck(manifest, n, sorted(bad, key=lambda r: (r[4], r[0])))


def unreadable_videos(cache_dir: str | Path) -> set[str]:
    """The videos whose cache crops the last ``--verify`` found unreadable (the next extraction redoes them)."""
    path = Path(cache_dir) / UNREADABLE_FILE
    if not path.is_file():
        return set()
    try:
        return set(pd.read_csv(path, dtype={"video_id": str}, keep_default_na=False)["video_id"])
    except (OSError, ValueError, KeyError):
        return set()
