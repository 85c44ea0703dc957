"""Training input: datasets over a frame manifest (files or packed shards), the DataModule, transforms, pairing
of fakes with their sources, self-blended images (SBI), stored backbone features (``features``), unreadable
crops (``bad_crops``: replaced or dropped).

May import: dfd, dfd.faces, dfd.store, dfd.sources, dfd.synthetic
"""

from __future__ import annotations
