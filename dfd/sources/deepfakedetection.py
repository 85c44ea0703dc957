"""DeepFakeDetection (Google/Jigsaw), as shipped inside FaceForensics++'s tree: a thin preset of the FF++ source.

Originals are ``original_sequences/actors/<comp>/videos/<actor>__<scene>.mp4`` (363) and fakes
``manipulated_sequences/DeepFakeDetection/<comp>/videos/<t>_<s>__<scene>__<id>.mp4`` (3,068). The layout,
compression levels and actor rules are the FF++ source's; this module only changes the default split.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dfd.sources.ffpp import DFD, FFPP


class DeepFakeDetection(FFPP):
    """DFD as its own dataset. It has no official split, and its common use is as an unseen test set, so by
    default every video is in ``test`` (``all_test=true``; DeepfakeBench likewise tests on all of it). With
    ``all_test=false`` val and test are carved by actor, as ``dataset=ffpp`` does for DFD (fakes whose two
    actors fall in different splits are dropped).
    """

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        compression: str = "c23",
        media: str = "videos",
        all_test: bool = True,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
    ) -> None:
        self.all_test = bool(all_test)
        # All actors in one split first (nothing dropped), then every video moves to test.
        super().__init__(
            name, root, cache_dir, methods=[DFD], compression=compression, media=media,
            dfd_val_fraction=0.0 if self.all_test else val_fraction,
            dfd_test_fraction=0.0 if self.all_test else test_fraction,
        )

    def _index_rows(self) -> pd.DataFrame:
        df = super()._index_rows()
        if self.all_test:
            df["split"] = "test"
        return df
