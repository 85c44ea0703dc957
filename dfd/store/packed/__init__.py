"""Packed crops: a crop cache as a few large tar shards (the WebDataset layout), read at random or streamed.

Why: shared cluster filesystems (Lustre, GPFS, NFS) and object stores punish millions of small files; DFDC's
~4 M face crops become a few hundred ~512 MB shards. The shards are plain POSIX tar in the WebDataset layout, so
``tar``, ``webdataset``, DALI or Hugging Face ``datasets`` read them too.

Layout of a shard store (``dfd-pack`` writes it; default ``<dataset cache>/shards``)::

    shards.json                 format, the manifest it was made from (path, sha256, rows, extraction settings)
                                and every shard (split, path, samples, bytes, sha256); written last
    manifest.parquet            the source manifest's rows + ``shard, offset, nbytes``: where each crop's bytes are
    <split>/shard-000000.tar    per crop: ``<key>.png|jpg`` (the cache's file, byte for byte) and ``<key>.json``
                                (video_id, frame, label, split, method, landmarks, bbox, score)

Modules: ``format`` (names, keys, sizes, URLs, settings), ``writer`` (``dfd-pack``: resumable, byte-identical
reruns), ``reader`` (opening a store, reading one crop's bytes). The training datasets over a store
(``random`` and ``stream`` modes) are training input and live in :mod:`dfd.data.packed`.

May import: dfd, dfd.faces, dfd.store
"""

from __future__ import annotations
