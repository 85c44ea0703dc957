"""A competition's own data as a table: CSV or Parquet with ``path,label[,split,video_id,method,identity,
method_type]``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dfd.errors import DatasetError
from dfd.sources.base import DatasetSource, carve_rows, index_frame, media_kind
from dfd.store.roots import Roots
from dfd.store.schema import SPLITS

LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1}


class CsvTable(DatasetSource):
    """One row per video, image or frames folder; ``label`` is 0/1 or real/fake; an optional ``method_type``
    says what kind of manipulation a fake is (one of dfd.store.schema.METHOD_TYPES, empty when unknown).

    Paths may be relative to the table's folder or to ``dataset.root`` (decided for the whole table: the
    table's folder when every path exists there); the index stores them relative to the root they live under
    (``path_root``: ``root``, or ``table`` for the table's folder when it is not inside the root). Without a
    ``split`` column, val and test are carved per video and label by each video's own draw (stable when rows
    are added or removed).

    Args:
        table: the ``.csv`` or ``.parquet`` file (default ``<root>/labels.csv``).
    """

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        table: str | Path | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
    ) -> None:
        if root is None and table is not None:
            root = Path(table).parent
        super().__init__(name, root, cache_dir)
        self.table = Path(table) if table else (self.root / "labels.csv" if self.root else None)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction

    def roots(self) -> Roots:
        # Paths found relative to the table's folder outside the root are stored relative to that folder.
        extra = {"table": self.table.parent} if self.table is not None else {}
        return Roots({**super().roots(), **extra}, where=self.name)

    def _read(self) -> pd.DataFrame:
        if self.table is None or not self.table.is_file():
            raise DatasetError(
                f"{self.name}: table {self.table} not found; set dataset.table=<file.csv|file.parquet> with "
                "columns path,label[,split,video_id]"
            )
        if self.table.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(self.table)
            df = df.astype({c: str for c in df.columns if c != "label"})
        else:
            df = pd.read_csv(self.table, dtype=str, keep_default_na=False, skipinitialspace=True)
        df.columns = [str(c).strip().lower() for c in df.columns]
        missing = [c for c in ("path", "label") if c not in df.columns]
        if missing:
            raise DatasetError(f"{self.name}: {self.table} lacks column(s) {missing}; found {list(df.columns)}")
        return df

    def _where(self, i: int) -> str:
        # Row numbers as a user sees them: CSV line (header is line 1), or 0-based Parquet row.
        return f"{self.table}:{i + 2}" if self.table.suffix.lower() == ".csv" else f"{self.table} row {i}"

    def _index_rows(self) -> pd.DataFrame:
        df = self._read()
        labels = []
        for i, v in enumerate(df["label"]):
            key = str(v).strip().lower().removesuffix(".0")
            if key not in LABELS:
                raise DatasetError(f"{self.name}: {self._where(i)}: label {v!r} is not 0/1 or real/fake")
            labels.append(LABELS[key])
        paths = [str(p).strip() for p in df["path"]]
        base = self._base(paths)
        rows = []
        for i, (p, label) in enumerate(zip(paths, labels, strict=True)):
            full = base / p
            kind = "frames" if full.is_dir() else media_kind(full)
            if kind is None:
                raise DatasetError(f"{self.name}: {self._where(i)}: {p!r} is not a video, image or frames folder")
            where = self.locate(full)
            rel = where["path"]
            vid = str(df["video_id"].iat[i]).strip() if "video_id" in df else ""
            rows.append({
                "video_id": vid or (rel if kind == "frames" else Path(rel).with_suffix("").as_posix()),
                "label": label,
                "split": str(df["split"].iat[i]).strip().lower() if "split" in df else "",
                "method": (str(df["method"].iat[i]).strip() if "method" in df else "") or ("fake" if label else "real"),
                "identity": str(df["identity"].iat[i]).strip() if "identity" in df else "",
                **where, "kind": kind,
                # What kind of fake, as the table says (validated against dfd.store.schema.METHOD_TYPES).
                **({"method_type": str(df["method_type"].iat[i]).strip() if label else ""}
                   if "method_type" in df else {}),
            })
        self._check(rows)
        return index_frame(rows, extra=("method_type",) if "method_type" in df else ())

    def _base(self, paths: list[str]) -> Path:
        """The folder the table's relative paths start from (table folder first, then the root)."""
        candidates = list(dict.fromkeys([self.table.parent, self.root]))
        for base in candidates:
            if all((base / p).exists() for p in paths):
                return base
        i = next(i for i, p in enumerate(paths) if not (candidates[-1] / p).exists())
        raise DatasetError(
            f"{self.name}: {self._where(i)}: {paths[i]!r} not found relative to "
            f"{' or '.join(str(c) for c in candidates)}; fix the path or set dataset.root"
        )

    def _check(self, rows: list[dict]) -> None:
        seen: dict[str, int] = {}
        for i, r in enumerate(rows):
            if r["split"] and r["split"] not in SPLITS:
                raise DatasetError(f"{self.name}: {self._where(i)}: split {r['split']!r} is not one of {SPLITS}")
            if r["video_id"] in seen:
                raise DatasetError(
                    f"{self.name}: {self._where(i)}: video_id {r['video_id']!r} repeats "
                    f"{self._where(seen[r['video_id']])}; give each row its own id (frames of one video belong "
                    "in one folder row)"
                )
            seen[r["video_id"]] = i
        self.notes = []
        carve_rows(rows, self.val_fraction, self.test_fraction, salt="csv", notes=self.notes)  # rows without a split
