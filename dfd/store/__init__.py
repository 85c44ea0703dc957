"""What lives on disk between stages: index and manifest schemas, cache records, media decoding, packed crops.

Modules: ``schema`` (index/manifest columns, validation, Parquet I/O), ``cache`` (the record binding a crop cache
to its dataset root and crop contract), ``media`` (decoding videos, frame folders, images and archives; source
fingerprints; the JPEG round-trip), ``packed/`` (crops as tar shards: ``format``, ``writer``, ``reader``),
``features`` (a frozen backbone's fp16 features of every crop, keyed by contract, manifest, weights, preprocessing).

May import: dfd, dfd.faces
"""

from __future__ import annotations
