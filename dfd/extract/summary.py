"""What an extraction did, as ``dfd-extract`` prints it at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dfd.faces.contract import CropContract
from dfd.store.schema import FAILURE_COLUMNS


@dataclass
class ExtractSummary:
    """What an extraction did; printed at the end of ``dfd-extract``."""

    videos: int = 0
    videos_ok: int = 0
    videos_failed: int = 0
    videos_resumed: int = 0  # finished by an earlier run, source unchanged: reused
    videos_stale: int = 0  # extracted earlier, but the source changed since: redone
    videos_removed: int = 0  # cached videos no longer in the index (moved or deleted sources): crops removed
    processed: list[str] = field(default_factory=list)  # ids extracted by this run
    frames_sampled: int = 0
    frames_saved: int = 0
    frames_dropped: int = 0  # sampled frames of kept videos where no face passed min_score
    frames_full_res: int = 0  # kept frames whose face only the full-resolution fallback found
    frames_near: int = 0  # kept frames whose face the search near a neighbouring frame's face found
    frames_kept: int = 0  # sampled frames that gave at least one crop (< frames_saved with several faces each)
    tracks_max: int = 0  # most face tracks in one video (extract.choice=all)
    drops: dict = field(default_factory=dict)  # per label and per method (see drop_stats)
    kept: dict = field(default_factory=dict)  # videos with crops per split: [real, fake] (after the skipped)
    warnings: list[str] = field(default_factory=list)
    contract: CropContract | None = None
    seconds: float = 0.0
    manifest_path: Path | None = None
    failures_path: Path | None = None
    failures: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(FAILURE_COLUMNS)))
    shard_status: str = ""  # sharded runs: which shard this was, what was merged
    merged: bool = False  # this summary is a merge of shards (its counts cover every shard)
    pipeline: dict = field(default_factory=dict)  # batched pipeline: detection-loop figures (dfd.extract.pipeline)

    def __str__(self) -> str:
        fps = self.frames_saved / self.seconds if self.seconds > 0 else 0.0
        reused = f"{self.videos_resumed} videos reused from an earlier run"
        if self.videos_stale:
            reused += f", {self.videos_stale} redone because their source changed"
        if self.videos_removed:
            reused += f", {self.videos_removed} no longer in the index removed"
        head = (f"extracted {self.frames_saved} face crops from {self.videos_ok}/{self.videos} videos "
                f"in {self.seconds:.1f} s ({fps:.1f} crops/s; {reused})")
        if self.merged:  # the whole cache, made by every shard: this job's time says nothing about its rate
            head = (f"all shards: {self.frames_saved} face crops from {self.videos_ok}/{self.videos} videos ({reused} "
                    f"by the shards); this job took {self.seconds:.1f} s")
        lines = [
            head,
            f"  frames sampled {self.frames_sampled}, dropped without a face {self.frames_dropped}"
            + (f", found only at full resolution {self.frames_full_res}" if self.frames_full_res else "")
            + (f"; faces found near the last face in {self.frames_near} of {self.frames_kept} kept frames "
               f"({100 * self.frames_near / max(self.frames_kept, 1):.0f} %; the rest searched whole)"
               if self.frames_near else ""),
        ]
        if self.frames_saved > self.frames_kept:
            lines.append(f"  faces: {self.frames_saved} crops from {self.frames_kept} frames "
                         f"({self.frames_saved / max(self.frames_kept, 1):.2f} per frame, up to {self.tracks_max} "
                         "tracks per video)")
        by_label = self.drops.get("label", {})
        if by_label:
            parts = [f"{'real' if k == '0' else 'fake'} {v['dropped']}/{v['sampled']} ({100 * v['rate']:.1f} %)"
                     for k, v in sorted(by_label.items())]
            lines.append(f"  frames without a face by label: {', '.join(parts)}")
        if self.kept:
            order = {"train": 0, "val": 1, "test": 2}
            parts = [f"{split} {c[0]} real / {c[1]} fake" for split, c in sorted(self.kept.items(),
                                                                                key=lambda kv: order.get(kv[0], 3))]
            lines.append(f"  videos with crops by split: {', '.join(parts)}")
        if self.contract is not None:
            lines.append(f"  crops: {self.contract.describe()}")
        if self.pipeline:
            from dfd.extract.pipeline import describe_stats

            lines.append(f"  {describe_stats(self.pipeline)}")
        if self.shard_status:
            lines.append(f"  {self.shard_status}")
        lines.append(f"  manifest: {self.manifest_path or 'not yet (written by the last shard to finish)'}")
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.videos_failed:
            noun = "video" if self.videos_failed == 1 else "videos"
            lines.append(f"  {self.videos_failed} {noun} skipped (listed in {self.failures_path}):")
            for row in self.failures.head(10).itertuples(index=False):
                held = getattr(row, "split", None)
                held = f" ({held}, {'fake' if str(row.label) == '1' else 'real'})" if held else ""
                lines.append(f"    {row.video_id}{held}: {row.reason}")
            if self.videos_failed > 10:
                lines.append(f"    ... {self.videos_failed - 10} more")
        return "\n".join(lines)
