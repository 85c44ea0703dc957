"""The embedded synthetic dataset: drawn faces whose fakes carry face-swap traces; no download needed.

Modules: ``draw`` (faces, forgery domains, videos), ``source`` (``dataset=synthetic``: generated once into a
crop cache, then read like any extracted dataset).

May import: dfd, dfd.faces, dfd.store, dfd.sources
"""

from __future__ import annotations
