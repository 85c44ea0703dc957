"""Dataset sources: one module per dataset, each turning an official layout into dfd's video index.

Add a dataset by writing ``dfd/data/sources/<name>.py`` (a ``DatasetSource`` subclass) and
``conf/dataset/<name>.yaml`` whose ``_target_`` points at it. Nothing else needs editing.
"""

from dfd.data.sources.base import DatasetError, DatasetSource

__all__ = ["DatasetError", "DatasetSource"]
