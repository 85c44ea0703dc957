"""The no-face rule (``eval.no_face``): what a test set's numbers do with videos and frames where extraction
found no face.

Papers differ here, and it moves numbers by points: dfd's default, ``drop``, scores what has a face (a video or
frame without a crop is not in any metric); ``score`` counts each video without a face, and each frame without
one, at ``eval.no_face_score`` (0.5 by default: SBI's protocol, where a video that fails scores 0.5), so a
detector whose face detector misses hard fakes is not rewarded for it. Under either rule results.json and the
report say, per test set, how many videos and frames had no face, per label (read from the cache record:
:func:`dfd.store.cache.faces_not_found`); videos that could not be decoded are counted apart and never scored.
Validation (checkpoint selection) always drops.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from dfd.engine.metrics import Unscored
from dfd.errors import ConfigError
from dfd.faces.contract import CropContract, extract_overrides
from dfd.sources.base import DatasetSource
from dfd.store.cache import FacesNotFound, faces_not_found

RULES = ("drop", "score")


@dataclass(frozen=True)
class NoFaceRule:
    """``eval.no_face`` (drop | score) and ``eval.no_face_score``."""

    rule: str = "drop"
    score: float = 0.5

    @classmethod
    def from_config(cls, cfg: DictConfig) -> NoFaceRule:
        """The run's rule, checked (a wrong value is one line naming the valid ones)."""
        block = cfg.get("eval") or {}
        rule = str(block.get("no_face", "drop"))
        if rule not in RULES:
            raise ConfigError(f"eval.no_face={rule!r} is not valid; choose one of {', '.join(RULES)} (drop: videos "
                              "and frames without a face are not scored; score: they count at eval.no_face_score)")
        try:
            score = float(block.get("no_face_score", 0.5))
        except (TypeError, ValueError):
            score = float("nan")
        if not 0.0 <= score <= 1.0:
            raise ConfigError(f"eval.no_face_score={block.get('no_face_score')!r} is not valid; give a P(fake) in "
                              "[0, 1] (0.5: SBI's protocol)")
        return cls(rule, score)

    @property
    def scores(self) -> bool:
        return self.rule == "score"

    def faces(self, src: DatasetSource, name: str, split: str = "test") -> FacesNotFound | None:
        """What ``src``'s cache records about faces not found in ``split``; under ``score`` a cache that does not
        record them is refused in one line naming the command that records them."""
        record = src.cache_record() if src.manifest_path.is_file() else None
        found = faces_not_found(record, split)
        if found is None and self.scores:
            contract = src.crop_contract()
            changed = CropContract().diff(contract) if contract is not None else {}
            command = " ".join(filter(None, [f"dfd-extract dataset={src._config_name()}",
                                             f"dataset.root={src.root}" if src.root is not None else "",
                                             extract_overrides({k: b for k, (_, b) in changed.items()})]))
            raise ConfigError(
                f"eval.no_face=score: test set '{name}' has a crop cache ({src.cache_dir}) that does not record its "
                f"videos and frames without a face per split (made by an earlier dfd); re-run `{command}` (every "
                "crop is reused and the manifest rewritten with them), or use eval.no_face=drop"
            )
        return found

    def unscored(self, found: FacesNotFound | None, frames: bool = True) -> Unscored | None:
        """The items the metrics count at the fixed score (None under ``drop``). ``frames=False`` for clip models,
        whose "frame" level is one clip per video: only the videos count then."""
        if not self.scores or found is None:
            return None
        videos = Counter((y, m) for _, y, m in found.videos)
        return Unscored(score=self.score, frames=dict(found.frames or {}) if frames else {}, videos=dict(videos))

    def record(self, found: FacesNotFound | None) -> dict[str, Any]:
        """results.json's ``no_face`` block of one test set: the rule and the counts per label."""
        out: dict[str, Any] = {"rule": self.rule, "score": self.score if self.scores else None}
        if found is None:
            return {**out, "videos": None, "frames": None, "unreadable_videos": None,
                    "note": "not recorded by this crop cache (re-run dfd-extract to record it)"}
        return {**out, **found.per_label()}
