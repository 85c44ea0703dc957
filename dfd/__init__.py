"""dfd: a research framework for detecting deepfaked faces. Labels everywhere: 0 = real, 1 = fake.

One package per stage; data flows left to right and imports only point that way (a test builds the import graph
from the source and checks every package against the ``May import:`` line of its docstring)::

    sources ─┐
    store  ──┼─▶ extract / synthetic ─▶ data ─▶ models ─▶ engine ─▶ inference / report ─▶ cli
    faces  ──┘        (faces ◀ store ◀ sources, underneath)

The root holds what every layer may use: ``errors`` (UserError, the base of every error meant for a user),
``atomic`` (atomic file writes, locks), ``compat`` (names older dfd versions wrote into files), ``workers``
(worker processes that die with their parent) and the labels below.

May import: (nothing of dfd)
"""

from __future__ import annotations

import os as _os

# albumentations phones home on import to check for updates; these machines (and many clusters) are offline.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

REAL, FAKE = 0, 1
