"""Named roots: every path dfd stores is relative to the folder it belongs to, and that folder is *named*.

Datasets live on other disks linked into one ``data/`` folder, caches on scratch filesystems behind links, and
both get moved. A stored path such as ``../FaceForensics++/original_sequences/...`` (relative to another
dataset's root) breaks behind a link: the operating system resolves ``..`` from the link's *target*, not from
the folder the user named. So a stored path is always relative to the root it lives under, and the root is
stored by its config key, never by its location:

* index ``path`` (+ ``path_root``): ``root`` (``dataset.root``, the default when the column is absent) or another
  folder key of the dataset's config (``ffpp_root``, ``test_root``, ``train_root``, ``real_roots.ff``, ...);
* manifest ``crop_path`` (+ ``crop_root``): the manifest's own folder (the cache; the default when the column is
  absent) or, for crops read in place (DeepfakeBench, DF40), the dataset folder key they were listed under.

A path is resolved against *today's* config (:meth:`Roots.resolve`), so moving a dataset or a cache needs
only ``dataset.root=`` / ``dataset.cache_dir=``. Joining is lexical (``os.path.normpath``): a ``..`` written by
an older dfd is taken from the folder the user named, as the user meant it, so old indexes still resolve.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from dfd.errors import DatasetError

#: The dataset's own folder (``dataset.root``): the root of index paths that name none.
DATASET_ROOT = "root"
#: Index column naming the root of ``path``; manifest column naming the root of ``crop_path``.
PATH_ROOT_COLUMN = "path_root"
CROP_ROOT_COLUMN = "crop_root"
#: How index paths are stored (recorded in an index's metadata): 2 = relative to a named root, never ``..``.
PATHS_RULE = 2


def join(base: str | Path, rel: str | Path) -> Path:
    """``base / rel`` with ``..`` and ``.`` removed from the text, so links are followed where the user put
    them (``data/DF/../FF`` is ``data/FF`` even when ``data/DF`` links to another disk). Absolute ``rel`` wins."""
    return Path(os.path.normpath(os.path.join(os.path.expanduser(str(base)), str(rel))))


def _lexical(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def real(path: str | Path) -> str:
    """The absolute, symlink-resolved form of a folder (what caches record, to tell datasets apart)."""
    return os.path.realpath(os.path.expanduser(str(path)))


class Roots(Mapping[str, Path]):
    """The folders a dataset's stored paths are relative to, by config key (``root``, ``ffpp_root``, ...).

    Unset roots (None) are left out; :meth:`resolve` names the key to set when a stored path needs one.
    """

    def __init__(self, roots: Mapping[str, str | Path | None] | str | Path | None = None, where: str = "",
                 default: str = DATASET_ROOT) -> None:
        if roots is None or isinstance(roots, str | os.PathLike):
            roots = {DATASET_ROOT: roots}
        self._roots = {str(k): Path(os.path.expanduser(str(v))) for k, v in roots.items() if v is not None}
        self.where = where
        self.default = default  # the root of a path that names none

    @classmethod
    def of(cls, roots: Roots | Mapping[str, str | Path | None] | str | Path | None) -> Roots:
        """``roots`` as a Roots (a plain folder is ``dataset.root``)."""
        return roots if isinstance(roots, Roots) else cls(roots)

    def __getitem__(self, key: str) -> Path:
        return self._roots[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._roots)

    def __len__(self) -> int:
        return len(self._roots)

    def __repr__(self) -> str:
        return f"Roots({ {k: str(v) for k, v in self._roots.items()} })"

    def __reduce__(self) -> tuple:  # plain data across process boundaries (extraction workers)
        return (Roots, ({k: str(v) for k, v in self._roots.items()}, self.where, self.default))

    def resolve(self, rel: str | Path, name: str | None = None) -> Path:
        """The file ``rel`` (relative to the root named ``name``; the default root when empty) as a path today."""
        key = name if isinstance(name, str) and name else self.default  # None, NaN, pd.NA: an absent value
        base = self._roots.get(key)
        if base is None:
            where = f"{self.where}: " if self.where else ""
            raise DatasetError(
                f"{where}a stored path ({rel}) is relative to dataset.{key}, which is not set; set "
                f"dataset.{key}=<folder> (the folder it was indexed from, or where it is now)"
            )
        return join(base, rel)

    def locate(self, path: str | Path) -> tuple[str, str]:
        """``(root name, path relative to it)`` for a file found under one of the roots.

        By the text first (the paths sources build start with a root's text; the longest root wins, so a root
        inside another keeps its own name), then by resolved links; a path under no root stays absolute.
        """
        absolute = _lexical(os.path.expanduser(str(path)))
        for norm in (_lexical, os.path.realpath):
            target = norm(absolute)
            # The deepest root holding the path; on a tie the first named (dataset.root before the others).
            hits = [(len(b), -i, name, b) for i, (name, base) in enumerate(self._roots.items())
                    if _under(target, b := norm(str(base)))]
            if hits:
                *_, name, b = max(hits)
                return name, Path(os.path.relpath(target, b)).as_posix()
        return self.default, Path(absolute).as_posix()

    def record(self) -> dict[str, str]:
        """``{name: resolved folder}``: what a cache or index records about where its paths pointed."""
        return {k: real(v) for k, v in self._roots.items()}


def resolve_row(roots: Roots, row: Mapping, path_key: str = "path", root_key: str = PATH_ROOT_COLUMN) -> Path:
    """The file an index row (or a part record) names, against today's roots."""
    return roots.resolve(row[path_key], row.get(root_key))


def crop_roots(manifest: str | Path, roots: Mapping[str, str | Path | None] | None = None,
               recorded: Mapping[str, str] | None = None) -> Roots:
    """The roots a manifest's ``crop_path`` values are relative to: ``""`` (no ``crop_root``) is the manifest's
    folder; the dataset folder keys come from today's config (``roots``), else from what the manifest recorded
    when it was written (a manifest read without its dataset config, e.g. ``dfd-sbi-grid``)."""
    merged: dict[str, str | Path | None] = dict(recorded or {})
    merged.update({k: v for k, v in (roots or {}).items() if v is not None})
    merged[""] = Path(manifest).parent
    return Roots(merged, where=str(manifest), default="")
