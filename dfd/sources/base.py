"""The common shape of a dataset source: an official layout on disk -> video index -> crop-cache manifest."""

from __future__ import annotations

import abc
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from dfd.errors import DatasetError
from dfd.faces.contract import CropContract
from dfd.store import cache
from dfd.store.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, media_kind
from dfd.store.roots import DATASET_ROOT, PATH_ROOT_COLUMN, PATHS_RULE, Roots
from dfd.store.schema import INDEX_COLUMNS, SPLITS, read_manifest, validate_index, write_parquet

# Sets of dfd.store.media's one extension list (kept under these names for sources that import them).
VIDEO_EXTS = frozenset(VIDEO_EXTENSIONS)
IMAGE_EXTS = frozenset(IMAGE_EXTENSIONS)


class DatasetSource(abc.ABC):
    """A dataset as distributed by its authors.

    Subclasses know one official layout and protocol (splits, label convention) and turn it into the video
    index (``build_index``). Face crops and the frame manifest are written by ``dfd-extract`` into
    ``cache_dir``; training and evaluation only read that manifest.

    Args:
        name: short name used in metric keys (``test/<name>/video_auc``), cache paths and reports.
        root: the dataset's root folder as downloaded.
        cache_dir: where this dataset's face crops and ``manifest.parquet`` live.
    """

    #: True when the dataset is distributed as face crops already (WildDeepfake): no detection needed.
    faces_are_cropped: bool = False
    #: Config keys of folders other than ``root`` that index paths may be relative to (``ffpp_root``; a dict
    #: entry as ``real_roots.ff``): a path is stored relative to the folder it lives under, named by its key.
    other_roots: tuple[str, ...] = ()
    #: The ``conf/dataset/<config_name>.yaml`` option when ``name`` is derived from settings (None: ``name``).
    config_name: str | None = None

    def __init__(self, name: str, root: str | Path | None, cache_dir: str | Path) -> None:
        self.name = name
        self.root = Path(root) if root is not None else None
        self.cache_dir = Path(cache_dir)

    @abc.abstractmethod
    def _index_rows(self) -> pd.DataFrame:
        """Rows of the video index (see ``dfd.store.schema.INDEX_COLUMNS``), before validation."""

    def build_index(self) -> pd.DataFrame:
        """The validated video index: one row per video or face sequence."""
        if self.root is None or not self.root.is_dir():
            raise DatasetError(
                f"{self.name}: dataset root {self.root} is not a folder; "
                f"set dataset.root=<folder holding the dataset as downloaded>"
            )
        return validate_index(self._index_rows(), where=f"{self.name} index ({self.root})")

    def write_index(self, path: str | Path) -> pd.DataFrame:
        """Build the index and write it atomically to ``path`` (what ``dfd-index`` does), recording the
        dataset root it describes and the rules it was built with (``dfd.cache`` metadata), so a later run can
        tell it belongs to another root or was built by an older dfd."""
        df = self.build_index()
        with cache.writing(Path(path).parent):
            write_parquet(df, path, metadata={"dfd.cache": self.index_record()})
        return df

    def index_record(self) -> dict:
        """What an index (and the manifest extracted from it) records about how it was built."""
        return {"dataset": self.name, "root": cache.normalize_root(self.root), "roots": self.roots().record(),
                "rules": dict(INDEX_RULES)}

    # -- where files are ---------------------------------------------------------------------------------
    def roots(self) -> Roots:
        """The folders stored paths are relative to, by config key, as configured today."""
        out: dict[str, Path | None] = {DATASET_ROOT: self.root}
        for key in self.other_roots:
            head, _, entry = key.partition(".")
            value = getattr(self, head, None)
            if entry:
                value = (value or {}).get(entry)
            out[key] = Path(value) if value else None
        return Roots(out, where=self.name)

    def locate(self, path: str | Path) -> dict[str, str]:
        """``{"path": ..., "path_root": ...}`` of a file of this dataset: relative to the root it lives under."""
        name, rel = self.roots().locate(path)
        return {"path": rel, PATH_ROOT_COLUMN: name}

    @property
    def manifest_path(self) -> Path:
        """The frame manifest that ``dfd-extract`` writes for this dataset."""
        return self.cache_dir / "manifest.parquet"

    def prepare(self) -> Path:
        """Make sure the frame manifest exists, belongs to this dataset root, and return its path.

        Real datasets are extracted beforehand (``dfd-extract``). A cache that records another root is
        refused with one line naming both roots and the fix; the source folder itself need not be present
        (crops can train on a machine without the videos).
        """
        if not self.manifest_path.is_file():
            if self.root is not None and not self.root.is_dir():
                raise DatasetError(
                    f"{self.name}: dataset root {self.root} does not exist and there is no crop cache for it at "
                    f"{self.cache_dir}; set dataset.root=<folder holding the dataset as downloaded>"
                )
            raise DatasetError(
                f"{self.name}: no face-crop manifest at {self.manifest_path}; run "
                f"`dfd-extract dataset={self._config_name()} dataset.root={self.root}` first"
            )
        cache.check_root(self.cache_record(), self.name, self.roots(), self.cache_dir, self._config_name(),
                         manifest=self.manifest_path)
        return self.manifest_path

    def media_root(self) -> Path | None:
        """The folder the index's ``path`` column is relative to (the dataset root; the synthetic set: its
        generated crops), where the shortcut audit reads the files' metadata."""
        return self.root

    def data_paths(self) -> list[Path]:
        """The files or folders whose presence means this dataset is on this machine (its root by default;
        sources reading part of a shared tree or a named file list those)."""
        return [self.root] if self.root is not None else []

    def missing(self) -> str | None:
        """None when the dataset can be used here (a crop cache exists, or its data is on disk); else what is
        absent, in words. Optional test sets (``test_sets.<name>.optional``) whose data is missing are skipped."""
        if self.manifest_path.is_file():
            return None
        absent = [p for p in self.data_paths() if not p.exists()]
        if not absent:
            return None
        return f"no {', '.join(str(p) for p in absent)} and no crop cache in {self.cache_dir}"

    def cache_record(self) -> dict | None:
        """The record of this dataset's crop cache (root, crop contract, drop rates), None if it has none."""
        return cache.record_of(self.manifest_path) if self.manifest_path.is_file() else None

    def crop_contract(self) -> CropContract | None:
        """The crop contract the cached crops were made with (training stores it in the checkpoint)."""
        return cache.contract_of_record(self.cache_record())

    def load_manifest(self) -> pd.DataFrame:
        """The frame manifest (one row per face crop), preparing it first if needed."""
        return read_manifest(self.prepare())

    def _config_name(self) -> str:
        return self.config_name or self.name

    def verify_command(self) -> str:
        """The command that checks this dataset's cache and decodes every crop it lists (``--verify``)."""
        return (f"dfd-extract dataset={self._config_name()} dataset.root={self.root} dataset.cache_dir={self.cache_dir} "
                "--verify")

    def index_notes(self) -> list[str]:
        """Lines ``dfd-index`` prints under its counts: how this source read the layout, protocol repairs,
        missing metadata, carved splits (sources fill ``self.notes`` while indexing)."""
        return list(getattr(self, "notes", None) or ())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, root={str(self.root)!r})"


def find_media(top: str | Path, frame_folders: bool = True) -> list[tuple[Path, str]]:
    """Every video, image and frames-of-a-video folder below ``top`` as (path, kind), in a stable order.

    Why: generic layouts mix loose images, videos and folders of extracted frames. A leaf folder (below
    ``top``) holding only numerically named images (``0.png``, ``0017.jpg``) is taken as one video's frames.
    """
    top = Path(top)
    items: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        media = [(f, media_kind(f)) for f in sorted(filenames) if not f.startswith(".")]
        media = [(f, k) for f, k in media if k]
        if (
            frame_folders and folder != top and not dirnames and len(media) >= 2
            and all(k == "image" and Path(f).stem.isdigit() for f, k in media)
        ):
            items.append((folder, "frames"))
            continue
        items += [(folder / f, k) for f, k in media]
    return items


def index_frame(rows: Iterable[dict], extra: Iterable[str] = ()) -> pd.DataFrame:
    """Rows (dicts) -> a DataFrame with the index columns first, then the source's extra columns.

    ``path_root`` (the root a row's path is relative to) is added when some path is not under ``dataset.root``.
    """
    rows = list(rows)
    columns = [*INDEX_COLUMNS, *extra]
    if any(r.get(PATH_ROOT_COLUMN, DATASET_ROOT) != DATASET_ROOT for r in rows) and PATH_ROOT_COLUMN not in columns:
        columns.insert(len(INDEX_COLUMNS), PATH_ROOT_COLUMN)
        rows = [{PATH_ROOT_COLUMN: DATASET_ROOT, **r} for r in rows]
    return pd.DataFrame(rows, columns=columns)


#: How carved splits are drawn (recorded in an index's metadata): 2 = each group by its own salted hash, so adding
#: or removing one file moves no other video; 1 (dfd before it, or no record) = groups ranked among those present.
SPLITS_RULE = 2
INDEX_RULES = {"paths": PATHS_RULE, "splits": SPLITS_RULE}


def draw(salt: str, group: str) -> float:
    """A group's draw in [0, 1): a content hash, not Python's salted hash(), so it is the same on every machine
    and depends on nothing but the salt and the group's own name."""
    return int(hashlib.sha1(f"{salt}\0{group}".encode()).hexdigest()[:13], 16) / 16**13


def assign_splits(
    groups: Iterable[str], val_fraction: float = 0.0, test_fraction: float = 0.0, salt: str = "",
    filled: list[tuple[str, str]] | None = None,
) -> dict[str, str]:
    """Deterministically send whole groups (identities, archives, videos) to train/val/test.

    Why: datasets without an official split still need held-out sets that never share a group with train,
    and that are the same on every machine and every run. Each group's split comes from its own draw
    (:func:`draw`): test below ``test_fraction``, val below ``test_fraction + val_fraction``, else train, so
    adding or removing a group (a new file, an unreadable one) moves no other group.

    Where the draws leave a gap, the nearest groups fill it: at least one group stays in train (the one
    drawn highest), and a non-zero fraction carves at least one group when at least two are left in train
    (the train group drawn lowest; test first, then val). Only then can another group's arrival move a group:
    one whose draw is nearer the gap takes its place.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DatasetError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) and sum below 1"
        )
    u = {g: draw(salt, g) for g in set(groups)}
    out = {g: "test" if x < test_fraction else "val" if x < test_fraction + val_fraction else "train"
           for g, x in u.items()}
    by_draw = sorted(u, key=lambda g: (u[g], g))
    moved = []
    if out and "train" not in out.values():
        out[by_draw[-1]] = "train"
        moved.append((by_draw[-1], "train"))
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        train = [g for g in by_draw if out[g] == "train"]
        if fraction > 0 and split not in out.values() and len(train) >= 2:
            out[train[0]] = split
            moved.append((train[0], split))
    if filled is not None:
        filled += moved
    return out


def carve_rows(
    rows: list[dict], val_fraction: float, test_fraction: float, salt: str, within: str = "", key: str = "video_id",
    notes: list[str] | None = None,
) -> None:
    """Give rows whose split is ``within`` a carved split, whole ``key`` groups at a time, per label.

    Per label, so every carved split holds both classes; by group, so no group straddles two splits; each group
    by its own draw (:func:`assign_splits`). ``notes`` (if given) gets a line per gap the draws left and a
    group filled: the one case where adding or removing a file can move another.
    """
    for label in (0, 1):
        groups = [r[key] for r in rows if r["split"] == within and r["label"] == label]
        filled: list[tuple[str, str]] = []
        carve = assign_splits(groups, val_fraction, test_fraction, salt=f"{salt}-{label}", filled=filled)
        kind = "fake" if label else "real"
        for group, split in filled if notes is not None else ():
            notes.append(f"no {kind} video drew the '{split}' split: {group}, the nearest draw, was moved there; "
                         f"adding or removing {kind} videos can move it back (more videos, or a larger "
                         f"{split}_fraction, make the draws fill every split)")
        for r in rows:
            if r["split"] == within and r["label"] == label:
                r["split"] = carve[r[key]]


def index_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Videos per split x label x method (``dfd-index`` prints it; tests and reports compare it)."""
    counts = df.groupby(["split", "label", "method"], observed=True).size().rename("videos").reset_index()
    order = {s: i for i, s in enumerate(SPLITS)}
    counts["_o"] = counts["split"].map(order)
    return counts.sort_values(["_o", "label", "method"]).drop(columns="_o").reset_index(drop=True)


#: What a run does with each split, for the warning when one lacks a class.
_SPLIT_USE = {
    "train": ("training", "the model never sees that class, so it cannot learn to tell real from fake"),
    "val": ("checkpoint selection", "validation AUC is undefined, so dfd-train selects the checkpoint (and early-"
            "stops) by the lowest validation log loss alone"),
    "test": ("the in-domain test", "test AUC, AP and EER are undefined (reported as n/a); only ACC remains"),
}


def split_class_warnings(df: pd.DataFrame, name: str = "") -> list[str]:
    """One line per split a run needs (train, val, test) that is missing or lacks a class, saying what follows."""
    where = f"{name}: " if name else ""
    out = []
    for split, (use, consequence) in _SPLIT_USE.items():
        labels = df.loc[df["split"] == split, "label"]
        n_fake = int((labels == 1).sum())
        n_real = len(labels) - n_fake
        if len(labels) == 0:
            out.append(f"{where}no '{split}' videos: {use} has no data (dfd-train needs train and val splits); "
                       "check the dataset's split files or its val_fraction / test_fraction")
        elif n_real == 0 or n_fake == 0:
            missing = "real" if n_real == 0 else "fake"
            out.append(f"{where}the '{split}' split has {n_real} real / {n_fake} fake videos (no {missing}): "
                       f"{consequence}; check the dataset's split files or its val_fraction / test_fraction")
    return out
