"""``dfd-extract --verify``: check a cache against its sources without changing anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dfd.extract.config import ExtractConfig
from dfd.extract.parts import fingerprints, part_is_current, part_path, read_part
from dfd.faces.contract import CropContract
from dfd.store.cache import moved_here, normalize_root, read_record
from dfd.store.roots import DATASET_ROOT, Roots
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
    missing_crops: list[str] = field(default_factory=list)  # crops the manifest lists but the disk lacks
    problems: list[str] = field(default_factory=list)  # root/contract/manifest level

    @property
    def ok(self) -> bool:
        return not (self.stale or self.missing_sources or self.not_extracted or self.orphaned
                    or self.missing_crops or self.problems)

    def __str__(self) -> str:
        head = (f"cache {self.cache_dir}: {self.current}/{self.videos} videos current"
                + ("; nothing stale or missing" if self.ok else ""))
        lines = [head, *[f"  problem: {p}" for p in self.problems]]
        for label, items, what in (
            ("stale", self.stale, "source changed since extraction: rerun dfd-extract to redo them"),
            ("missing source", self.missing_sources, "source gone: rerun dfd-index + dfd-extract"),
            ("not extracted", self.not_extracted, "rerun dfd-extract"),
            ("crops missing", self.missing_crops, "crop files gone: rerun with extract.overwrite=true"),
        ):
            if items:
                lines.append(f"  {label}: {len(items)} ({what}), e.g. {', '.join(items[:5])}")
        if self.orphaned:
            lines.append(f"  orphaned: {self.orphaned} cached videos no longer in the index (removed by the next "
                         "dfd-extract)")
        return "\n".join(lines)


def verify_cache(index_df: pd.DataFrame, root: str | Path | Roots, cache_dir: str | Path,
                 cfg: ExtractConfig | None = None, faces_are_cropped: bool = False) -> VerifyReport:
    """Check a cache against its sources without changing anything: what the next dfd-extract would redo."""
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
    ids = index["video_id"].tolist()
    for v in ids:
        if sources[v] is None:
            rep.missing_sources.append(v)
            continue
        part = read_part(part_path(cache_dir, v)) if part_path(cache_dir, v).is_file() else None
        if part is None:
            rep.not_extracted.append(v)
        elif not part_is_current(part, cid, sources[v]):
            rep.stale.append(v)
        else:
            rep.current += 1
            if any(not (cache_dir / r["crop_path"]).is_file() for r in part.get("rows", [])):
                rep.missing_crops.append(v)
    parts = cache_dir / "parts"
    if parts.is_dir():
        wanted = {part_path(cache_dir, v).name for v in ids}
        rep.orphaned = sum(1 for p in parts.glob("*.json") if p.name not in wanted)
    return rep
