"""A test set whose source frames are distorted before face detection (``dfd-eval robustness.at=frame``).

The test split's videos are decoded, distorted (:mod:`dfd.store.distort`, deterministic per video, kind and
level), and their faces detected and cropped by :func:`dfd.extract.run.extract_faces` itself: dfd-extract's own
code, with the crop contract of the clean crops they are compared with. Each (contract, distortion) has its own
crop cache below the test set's (``<cache>/distorted/<contract id>/<kind>_<level>/``), resumable like any
extraction, so a rerun of the sweep reuses every crop already made.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dfd.extract.config import ExtractConfig
from dfd.extract.run import extract_faces
from dfd.extract.summary import ExtractSummary
from dfd.faces.contract import CropContract
from dfd.sources.base import DatasetSource
from dfd.store.distort import Distortion, chain_text, parse_chain

DISTORTED = "distorted"


def frame_level_problem(src: DatasetSource) -> str | None:
    """Why ``src`` cannot be distorted at the source (no raw media here), or None."""
    if getattr(src, "writes_manifest", False):
        return "its crops are used in place (no source frames to distort)"
    if src.root is None:
        return "it has no source frames (generated crops)"
    if not Path(src.root).is_dir():
        return f"its raw media are not on this machine (dataset root {src.root} is not a folder)"
    return None


def distorted_cache_dir(cache_dir: str | Path, contract: CropContract, distortion: Distortion) -> Path:
    """Where the crops of one (contract, distortion) of a test set live."""
    level = f"{distortion.level:g}".replace(".", "p").replace("-", "m")
    return Path(cache_dir) / DISTORTED / contract.fingerprint()[:12] / f"{distortion.kind}_{level}"


class DistortedTestSet(DatasetSource):
    """``base``'s test split with ``distortion`` applied to every source frame before detection.

    Args:
        base: the test set (its index is rebuilt from its root: the raw media must be here).
        contract: the crop contract to extract with (the clean crops' own, so the two differ by the distortion).
        distortion: appended to any distortion the base index already gives a row (DeeperForensics' matched reals).
        workers: extraction processes (None: dfd-extract's default).
        progress: show dfd-extract's progress bar.
        index: ``base``'s video index when the caller has it already (a sweep builds it once per test set).
    """

    def __init__(self, base: DatasetSource, contract: CropContract, distortion: Distortion, workers: int | None = None,
                 progress: bool = False, index: pd.DataFrame | None = None) -> None:
        super().__init__(base.name, base.root, distorted_cache_dir(base.cache_dir, contract, distortion))
        self.base = base
        self.contract = contract
        self.distortion = distortion
        self.workers = workers
        self.progress = progress
        self.faces_are_cropped = base.faces_are_cropped
        self.summary: ExtractSummary | None = None
        self._base_index = index

    def _index_rows(self) -> pd.DataFrame:
        index = self._base_index if self._base_index is not None else self.base.build_index()
        test = index[index["split"] == "test"].copy()
        own = test["distortion"].fillna("").astype(str) if "distortion" in test.columns else [""] * len(test)
        test["distortion"] = [chain_text((*parse_chain(o), self.distortion)) for o in own]
        return test

    def prepare(self) -> Path:
        """Extract the distorted test split once per process (resuming the cache), then the manifest's path."""
        if self.summary is None:
            cfg = ExtractConfig(contract=self.contract, inputs=self.contract.inputs, workers=self.workers)
            self.summary = extract_faces(self.build_index(), self.root, self.cache_dir, cfg,
                                         faces_are_cropped=self.faces_are_cropped, progress=self.progress,
                                         dataset=self.base.name)
        return self.manifest_path

    def _config_name(self) -> str:
        return self.base._config_name()
