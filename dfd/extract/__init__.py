"""Extraction: a video index -> a crop cache (face crops + frame manifest), resumable, sharded, batched.

Modules: ``config`` (``extract.*`` settings: the crop contract + how to run it), ``parts`` (the part-file
protocol: one record per finished video, the resume checkpoint), ``worker`` (one video: decode, detect, crop,
write), ``pipeline`` (MTCNN batched across videos, for GPUs), ``jobs`` (planning SLURM shard jobs), ``run``
(the driver: resume, prune, execute, merge), ``manifest`` (assembling manifest + failures from the parts),
``verify`` (``--verify``), ``summary`` and ``progress`` (what the command prints).

May import: dfd, dfd.faces, dfd.store, dfd.sources
"""

from __future__ import annotations
