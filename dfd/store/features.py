"""Feature stores: a frozen backbone's pooled features for every crop of a crop cache, fp16, beside the cache.

Why: a linear probe (or any head) on a frozen backbone needs the backbone's forward pass once per crop, not once
per crop, epoch, learning rate and run. ``dfd-embed`` (dfd.engine.embed) computes the features once; training
with ``data.features=cached`` reads them here.

Layout of a store (default ``<dataset cache>/features/<backbone>/``)::

    features.json          the key (below), feature size, dtype, and per split its rows, file and sha256; the
                           augmented views (if any) and how they were drawn; written last
    <split>.npy            (rows, dim) float16, row i = row i of the split in the manifest's (video, frame, track)
                           order (``dfd.data.datasets.ManifestArrays``)
    <split>.view<k>.npy    augmented view k (1..N) of the same rows (training crops only)
    parts/                 resume checkpoints while it is being built: ``key.json`` and one ``.npy`` per
                           finished chunk of rows (the folder goes once the store is complete)

The **key** says which features these are: the crop cache's contract id, the sha256 of its manifest (a
re-extracted cache has another one), the sha256 of the backbone's weights (every tensor but the classifier's)
and the preprocessing (input size, mean, std, interpolation, transform). A store whose key differs from the
one a run asks for is refused in one line that names the command rebuilding it; it is never silently reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dfd import atomic
from dfd.errors import UserError

FORMAT = "dfd-feature-store"
FORMAT_VERSION = 1
RECORD = "features.json"
PARTS = "parts"
DTYPE = "float16"
#: What the features are computed from: the eval transform (resize + normalise, nothing random).
TRANSFORM = "eval: resize the stored crop to size x size, normalise with mean/std"

_KEY_WORDS = {
    "contract_id": "another crop contract",
    "manifest_sha256": "a re-extracted crop cache (its manifest changed)",
    "weights_sha256": "other backbone weights",
    "preprocessing": "other preprocessing",
}


class FeatureStoreError(UserError, ValueError):
    """A feature store that does not hold what a run needs (stale key, missing split or views)."""


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class StoreKey:
    """What a store's features were computed from (see the module docstring)."""

    contract_id: str | None
    manifest_sha256: str
    weights_sha256: str
    preprocessing: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def key_id(self) -> str:
        """16 hex digits naming this key."""
        return hashlib.sha256(_canonical(self.to_dict()).encode()).hexdigest()[:16]

    def differences(self, recorded: Mapping | None) -> list[str]:
        """What differs between this key and a recorded one, in words (empty: the same key)."""
        recorded = dict(recorded or {})
        return [_KEY_WORDS[k] for k, v in self.to_dict().items() if _canonical(recorded.get(k)) != _canonical(v)]


@dataclass(frozen=True)
class ViewsKey:
    """How a store's augmented views were drawn: N views, the run's seed, its training augmentation."""

    n: int
    seed: int
    augment: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Unit:
    """One array of a store: a split's clean features (view 0) or one augmented view of them."""

    split: str
    view: int
    rows: int

    @property
    def file(self) -> str:
        return f"{self.split}.npy" if self.view == 0 else f"{self.split}.view{self.view}.npy"


@dataclass(frozen=True)
class Chunk:
    """A fixed range of rows of one unit: the unit of work, of resuming and of splitting between ranks."""

    unit: Unit
    number: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"{self.unit.split}.v{self.unit.view}.{self.number:06d}.npy"


def plan_chunks(units: Iterable[Unit], chunk_rows: int) -> list[Chunk]:
    """Every unit cut into chunks of ``chunk_rows`` rows, in a fixed order (independent of ranks and resumes)."""
    if chunk_rows < 1:
        raise FeatureStoreError(f"embed.chunk_rows must be >= 1, got {chunk_rows}")
    out = []
    for unit in units:
        for number, start in enumerate(range(0, unit.rows, chunk_rows)):
            out.append(Chunk(unit, number, start, min(start + chunk_rows, unit.rows)))
    return out


class FeatureStore:
    """One store folder: its record, its arrays (memory-mapped), and the writing protocol of dfd-embed."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    # ------------------------------------------------------------------------------------------- reading
    @property
    def record_path(self) -> Path:
        return self.folder / RECORD

    def record(self) -> dict | None:
        """``features.json`` (None while the store is absent or unfinished)."""
        if not self.record_path.is_file():
            return None
        try:
            return json.loads(self.record_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise FeatureStoreError(f"{self.record_path} is unreadable ({e}); delete {self.folder} and rebuild it "
                                    "with dfd-embed") from e

    def exists(self) -> bool:
        return self.record_path.is_file()

    def problems(self, key: StoreKey, splits: Iterable[str], views: ViewsKey | None = None) -> list[str]:
        """Why this store cannot serve ``key``/``splits``/``views`` (empty: it can; absent store: ['absent'])."""
        rec = self.record()
        if rec is None:
            return ["absent"]
        if rec.get("format") != FORMAT or int(rec.get("format_version", 0)) > FORMAT_VERSION:
            return [f"format {rec.get('format')} v{rec.get('format_version')} (this dfd reads {FORMAT} "
                    f"v{FORMAT_VERSION})"]
        out = key.differences(rec.get("key"))
        missing = [s for s in splits if s not in (rec.get("splits") or {})]
        if missing:
            out.append(f"no features of split(s) {', '.join(missing)}")
        if views is not None and views.n > 0:
            have = rec.get("views") or {}
            if _canonical({k: have.get(k) for k in ("n", "seed", "augment")}) != _canonical(views.to_dict()):
                out.append(f"other augmented views (it holds {have.get('n', 0)} drawn with seed {have.get('seed')}; "
                           f"the run asks for {views.n} with seed {views.seed} and its augment)")
        return out

    def check(self, key: StoreKey, splits: Iterable[str], views: ViewsKey | None, rebuild: str) -> None:
        """Refuse, in one line naming ``rebuild`` (the command that rebuilds it), a store that is not usable."""
        problems = [p for p in self.problems(key, splits, views) if p != "absent"]
        if problems:
            raise FeatureStoreError(f"the feature store {self.folder} was computed with {'; '.join(problems)}: "
                                    f"rebuild it with `{rebuild}`")

    def array(self, split: str, view: int = 0) -> np.ndarray:
        """(rows, dim) float16 features of a split (``view`` k: augmented view k), memory-mapped."""
        rec = self.record() or {}
        entry = (rec.get("splits") or {}).get(split)
        if entry is None:
            raise FeatureStoreError(f"{self.folder} holds no '{split}' features; rebuild it with dfd-embed "
                                    f"embed.splits=[...,{split}]")
        file = entry["file"] if view == 0 else ((rec.get("views") or {}).get("files") or {}).get(f"{split}.{view}")
        if file is None:
            raise FeatureStoreError(f"{self.folder} holds no view {view} of '{split}'; rebuild it with dfd-embed "
                                    f"embed.views=<N>")
        arr = np.load(self.folder / file, mmap_mode="r")
        if arr.shape != (int(entry["rows"]), int(rec["dim"])):
            raise FeatureStoreError(f"{self.folder / file} holds {arr.shape}, its record says "
                                    f"({entry['rows']}, {rec['dim']}); delete the folder and rebuild it with dfd-embed")
        return arr

    def n_views(self) -> int:
        return int(((self.record() or {}).get("views") or {}).get("n", 0))

    # ------------------------------------------------------------------------------------------- writing
    @property
    def parts(self) -> Path:
        return self.folder / PARTS

    def begin(self, key: StoreKey, chunk_rows: int, views: ViewsKey | None, overwrite: bool = False) -> set[str]:
        """Prepare the folder for (re)building; return the names of chunks finished by an earlier, killed run.

        Parts of another key (or chunk size) are thrown away; with ``overwrite`` everything is.
        """
        if overwrite and self.folder.is_dir():
            shutil.rmtree(self.folder)
        self.parts.mkdir(parents=True, exist_ok=True)
        plan = {"key": key.to_dict(), "chunk_rows": int(chunk_rows),
                "views": views.to_dict() if views is not None else None}
        marker = self.parts / "key.json"
        try:
            same = json.loads(marker.read_text()) == json.loads(_canonical(plan))
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            shutil.rmtree(self.parts)
            self.parts.mkdir(parents=True)
            atomic.write_text(marker, _canonical(plan))
        for tmp in self.parts.glob(".*.tmp"):  # a killed writer's half-written chunk
            tmp.unlink(missing_ok=True)
        return {p.name for p in self.parts.glob("*.npy")}

    def write_chunk(self, chunk: Chunk, features: np.ndarray) -> None:
        """Write one finished chunk atomically (float16, its rows in order)."""
        arr = np.ascontiguousarray(features, dtype=np.float16)
        if arr.shape[0] != chunk.stop - chunk.start:
            raise ValueError(f"chunk {chunk.name}: {arr.shape[0]} rows, expected {chunk.stop - chunk.start}")
        with atomic.atomic_path(self.parts / chunk.name) as tmp, open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)

    def finish(self, key: StoreKey, chunks: list[Chunk], dim: int, views: ViewsKey | None, info: Mapping,
               units: Iterable[Unit] = ()) -> dict:
        """Assemble the chunks into one array per unit, write ``features.json`` last, remove ``parts/``."""
        by_unit: dict[Unit, list[Chunk]] = {u: [] for u in units}
        for c in chunks:
            by_unit.setdefault(c.unit, []).append(c)
        splits: dict[str, dict] = {}
        view_files: dict[str, str] = {}
        for unit, parts in by_unit.items():
            out = np.lib.format.open_memmap(self.folder / f".{unit.file}.tmp", mode="w+", dtype=np.float16,
                                            shape=(unit.rows, int(dim)))
            for c in sorted(parts, key=lambda c: c.number):
                out[c.start:c.stop] = np.load(self.parts / c.name, allow_pickle=False)
            out.flush()
            del out
            os.replace(self.folder / f".{unit.file}.tmp", self.folder / unit.file)
            if unit.view == 0:
                splits[unit.split] = {"rows": unit.rows, "file": unit.file,
                                      "sha256": sha256_file(self.folder / unit.file)}
            else:
                view_files[f"{unit.split}.{unit.view}"] = unit.file
        previous = self.record()
        if previous is not None and not key.differences(previous.get("key")):
            # What an earlier build of this key made and this one did not redo stays: its splits, and its views
            # when they were drawn the same way.
            for split, entry in (previous.get("splits") or {}).items():
                if (self.folder / entry["file"]).is_file():
                    splits.setdefault(split, entry)
            old = previous.get("views") or None
            if old is not None and (views is None or views.to_dict() == {k: old.get(k) for k in ("n", "seed", "augment")}):
                views = ViewsKey(int(old["n"]), int(old["seed"]), list(old.get("augment") or []))
                for name, file in (old.get("files") or {}).items():
                    view_files.setdefault(name, file)
        record = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "key": key.to_dict(),
            "key_id": key.key_id(),
            "dim": int(dim),
            "dtype": DTYPE,
            "splits": dict(sorted(splits.items())),
            "views": ({**views.to_dict(), "files": dict(sorted(view_files.items()))}
                      if views is not None and views.n > 0 else None),
            **dict(info),
        }
        atomic.write_text(self.record_path, json.dumps(record, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(self.parts, ignore_errors=True)
        return record
