"""The common shape of a dataset source: an official layout on disk -> video index -> crop-cache manifest."""

from __future__ import annotations

import abc
from pathlib import Path

import pandas as pd

from dfd.data.schema import read_manifest, validate_index


class DatasetError(ValueError):
    """A dataset on disk does not match what its loader expects (message says what, where, how to fix)."""


class DatasetSource(abc.ABC):
    """A dataset as distributed by its authors.

    Subclasses know one official layout and protocol (splits, label convention) and turn it into the video
    index (``build_index``). Face crops and the frame manifest are written by ``dfd-extract`` into
    ``cache_dir``; training and evaluation only read that manifest.

    Args:
        name: short name used in metric keys (``test/<name>/video_auc``), cache paths and reports.
        root: the dataset's root folder as downloaded.
        cache_dir: where this dataset's face crops and ``manifest.parquet`` live.
    """

    #: True when the dataset is distributed as face crops already (WildDeepfake): no detection needed.
    faces_are_cropped: bool = False

    def __init__(self, name: str, root: str | Path | None, cache_dir: str | Path) -> None:
        self.name = name
        self.root = Path(root) if root is not None else None
        self.cache_dir = Path(cache_dir)

    @abc.abstractmethod
    def _index_rows(self) -> pd.DataFrame:
        """Rows of the video index (see ``dfd.data.schema.INDEX_COLUMNS``), before validation."""

    def build_index(self) -> pd.DataFrame:
        """The validated video index: one row per video or face sequence."""
        if self.root is None or not self.root.is_dir():
            raise DatasetError(
                f"{self.name}: dataset root {self.root} is not a folder; "
                f"set dataset.root=<folder holding the dataset as downloaded>"
            )
        return validate_index(self._index_rows(), where=f"{self.name} index ({self.root})")

    @property
    def manifest_path(self) -> Path:
        """The frame manifest that ``dfd-extract`` writes for this dataset."""
        return self.cache_dir / "manifest.parquet"

    def prepare(self) -> Path:
        """Make sure the frame manifest exists and return its path (real datasets: extracted beforehand)."""
        if not self.manifest_path.is_file():
            raise DatasetError(
                f"{self.name}: no face-crop manifest at {self.manifest_path}; run "
                f"`dfd-extract dataset={self._config_name()} dataset.root={self.root}` first"
            )
        return self.manifest_path

    def load_manifest(self) -> pd.DataFrame:
        """The frame manifest (one row per face crop), preparing it first if needed."""
        return read_manifest(self.prepare())

    def _config_name(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, root={str(self.root)!r})"
