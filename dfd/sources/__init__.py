"""Dataset sources: one module per dataset layout, each turning the official files into dfd's video index.

Add a dataset by writing ``dfd/sources/<name>.py`` (a ``DatasetSource`` subclass) and
``conf/dataset/<name>.yaml`` whose ``_target_`` points at it. Nothing else needs editing.

May import: dfd, dfd.faces, dfd.store
"""

from __future__ import annotations

from dfd.errors import DatasetError
from dfd.sources.base import DatasetSource

__all__ = ["DatasetError", "DatasetSource"]
