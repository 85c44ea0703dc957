"""Reading the metadata tables datasets ship (CSV in whatever encoding, headers as their authors typed them).

Shared by the sources whose labels live in a table (Deepfake-Eval-2024, KoDF, DeepSpeak): columns are found by
name whatever their case and spacing, so a header's capitalisation is discovered, not assumed.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from dfd.errors import DatasetError

# UTF-8 (with or without BOM) first; Korean releases (AI Hub) are often CP949.
ENCODINGS = ("utf-8-sig", "cp949", "latin-1")


def key(name: object) -> str:
    """A header or value as compared: lower case, runs of spaces/underscores/hyphens as one space."""
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().lower()


def read_csv(path: Path, where: str) -> pd.DataFrame:
    """A CSV as strings (empty cells ""), decoded with the first encoding that works; headers stripped."""
    data = path.read_bytes()
    for enc in ENCODINGS:
        try:
            text = data.decode(enc)
            break
        except UnicodeDecodeError:
            continue
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
    except (ValueError, pd.errors.ParserError) as e:
        raise DatasetError(f"{where}: {path} is not a readable CSV ({e})") from e
    df.columns = [str(c).strip() for c in df.columns]
    return df


def column(df: pd.DataFrame, names: Iterable[str]) -> str | None:
    """The first of ``names`` that ``df`` has, compared by :func:`key` (``Ground Truth`` = ``ground_truth``)."""
    have = {key(c): c for c in df.columns}
    return next((have[key(n)] for n in names if key(n) in have), None)


def need(df: pd.DataFrame, names: Iterable[str], path: Path, where: str) -> str:
    """:func:`column`, or a one-line error naming the table, the wanted column and the columns it has."""
    names = list(names)
    found = column(df, names)
    if found is None:
        raise DatasetError(f"{where}: {path} has no {names[0]!r} column (found {list(df.columns)}); is this the "
                           "dataset's own metadata file?")
    return found
