"""Training input from a feature store (``data.features=cached``): the frozen backbone's stored features of each
crop in place of its pixels, with everything else a frame dataset carries (label, video, method, frame, track).

The items follow the same manifest rows, samplers, splits, subsets and DDP sharding as
:class:`dfd.data.datasets.FrameDataset`: only the image is replaced by its features. Batches are gathered as
whole slices (``__getitems__``), since a feature vector costs nothing to "decode".
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from dfd.data.datasets import ManifestArrays

__all__ = ["FeatureDataset", "collate_features"]


class FeatureDataset(Dataset):
    """One item per face crop: ``{features, label, video, index, method, frame, track}``.

    Args:
        arrays: the split's manifest rows (after any frame subset: ``arrays.rows`` maps them to the store).
        features: the store's (rows, dim) float16 array of that split (memory-mapped).
        views: augmented views of the same rows (``embed.views``); with views, each epoch gives every row one
            of them, drawn per (seed, epoch, row), as a training augmentation would draw a new crop each epoch.
        seed: the run's seed.
    """

    def __init__(self, arrays: ManifestArrays, features: np.ndarray, views: list[np.ndarray] | None = None,
                 name: str = "", seed: int = 0) -> None:
        self.arrays = arrays
        self.features = features
        self.views = list(views or [])
        self.name = name
        self.seed = int(seed)
        self._choice: np.ndarray | None = None
        if len(arrays) and int(arrays.rows.max()) >= len(features):
            raise ValueError(f"{name}: the feature store has {len(features)} rows, the manifest split more")
        self.set_epoch(0)

    def __len__(self) -> int:
        return len(self.arrays)

    @property
    def labels(self) -> np.ndarray:
        return self.arrays.label

    def set_epoch(self, epoch: int) -> None:
        """With views: which view each row gives this epoch (the same on every rank and worker)."""
        if self.views:
            rng = np.random.default_rng([self.seed, int(epoch)])
            self._choice = rng.integers(0, len(self.views), size=len(self.arrays))

    def _vectors(self, idx: np.ndarray) -> np.ndarray:
        rows = self.arrays.rows[idx]
        if not self.views or self._choice is None:
            return np.asarray(self.features[rows], np.float32)
        out = np.empty((len(idx), self.features.shape[1]), np.float32)
        choice = self._choice[idx]
        for v in np.unique(choice):
            sel = choice == v
            out[sel] = self.views[int(v)][rows[sel]]
        return out

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, np.int64)
        a = self.arrays
        return {
            "features": torch.from_numpy(self._vectors(idx)),
            "label": torch.from_numpy(a.label[idx].astype(np.float32)),
            "video": torch.from_numpy(a.video[idx].astype(np.int64)),
            "index": torch.from_numpy(idx),
            "method": torch.from_numpy(a.method[idx].astype(np.int64)),
            "frame": torch.from_numpy(a.frame[idx].astype(np.int64)),
            "track": torch.from_numpy(a.track[idx].astype(np.int64)),
        }

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([int(i)]).items()}


def collate_features(batch: dict | list) -> dict:
    """A batch gathered whole by ``__getitems__`` passes as it is; per-item lists (a ConcatDataset of several
    training sets) are stacked as usual."""
    return batch if isinstance(batch, dict) else default_collate(batch)
