"""Paired training data: every fake with frames of the real video it was made from (GenD, shared/recipes.md §1.7).

GenD's finding: training sets in which each fake's source real video is present ("paired", as FF++ is by
construction) generalise better than sets whose reals and fakes come from disjoint sources. Two switches:

* ``data.pairing=source`` — :class:`SourcePairedSampler`: every fake frame in a training batch comes with a frame
  of its source real video in the same batch (on every DDP rank). Per epoch, each real video's frames are
  dealt into *units* of one real frame plus that video's fakes' frames (round-robin, at most half a batch
  per unit; real frames repeat when the fakes outnumber them); units are shuffled and packed whole into batches
  of exactly ``batch_size`` items. A batch's last free slots, where no waiting unit fits, take random real frames
  (counted as fillers). Every fake frame is seen once per epoch and the class ratio is the data's; reals
  nobody faked are units of one frame. Fakes whose source real is not in the training split (the dataset
  names none, or the real is in another split or was not extracted) cannot be paired: they are left out of
  training, and counted in the log.
* ``data.pairing_subset=paired|unpaired`` — GenD's ablation (:func:`select_subset`): source groups (the source
  reals' identity when the dataset records it, else the video) are split in two halves A and B per seed;
  *paired* = the reals of A + K fakes made from A, *unpaired* = the same reals of A + K fakes made from B
  (no fake's source and no fake's source identity among the reals), K = min(#fakes of A, #fakes of B). Both
  subsets of one seed have the same reals and the same size; only the fakes' provenance differs.

The source of a fake is the manifest column ``source_video`` (the ``video_id`` of the real it was made from),
which the sources of FF++, Celeb-DF, DFDC, DFDCP, DeeperForensics, FFIW, UADFV and the synthetic set record.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from dfd.data.datasets import ManifestArrays
from dfd.errors import ConfigError

log = logging.getLogger(__name__)

PAIRINGS = ("none", "source")
SUBSETS = ("all", "paired", "unpaired")
RECORDING = "ffpp, celebdf_v1/v2, dfdc, dfdcp, deeperforensics, ffiw, uadfv, deepfakebench, synthetic"
#: Packing keeps at most this many units waiting for room before it fills a batch's gap with real frames.
_LOOKAHEAD = 64


@dataclass
class Sources:
    """Per video of a :class:`ManifestArrays`: its source real video and its source group.

    ``source[v]``: index (into ``video_names``) of the real video fake ``v`` was made from; -1 when the dataset
    names none (``named[v]`` False) or names a video outside these arrays. ``group[v]``: a real video's group
    (its identity when recorded, else itself); the group of a fake is its source's.
    """

    source: np.ndarray
    named: np.ndarray
    group: np.ndarray


def video_sources(arrays: ManifestArrays, dataset: str = "") -> Sources:
    """Read ``source_video`` (and ``identity``) of every video in ``arrays`` from its manifest."""
    where = f"{dataset}: " if dataset else ""
    schema = pq.read_schema(arrays.manifest)
    if "source_video" not in schema.names:
        raise ConfigError(f"{where}the manifest {arrays.manifest} records no source_video (the real video each fake "
                          f"was made from), which data.pairing / data.pairing_subset need; datasets that record it: "
                          f"{RECORDING} (re-run dfd-index and dfd-extract if yours predates it)")
    cols = ["video_id", "source_video"] + (["identity"] if "identity" in schema.names else [])
    table = pq.read_table(arrays.manifest, columns=cols)
    enc = pc.dictionary_encode(table["video_id"].combine_chunks())
    codes = enc.indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)  # one row per video: sources are per video
    names = np.array([s.encode() for s in enc.dictionary.to_pylist()], dtype="S")
    src_names = table["source_video"].combine_chunks().take(first).fill_null("").to_pylist()
    ident = (table["identity"].combine_chunks().take(first).fill_null("").to_pylist()
             if "identity" in cols else [""] * len(first))
    vn = arrays.video_names
    nv = len(vn)

    def index_of(keys: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(vn, keys) if nv else np.zeros(len(keys), np.int64)
        ok = pos < nv
        ok[ok] = vn[pos[ok]] == keys[ok]
        return np.where(ok, pos, -1)

    at = index_of(names)  # where each manifest video sits in arrays (-1: not in this split / dropped)
    keep = at >= 0
    source = np.full(nv, -1, np.int64)
    named = np.zeros(nv, bool)
    src_keys = np.array([s.encode() for s in src_names], dtype="S") if src_names else np.zeros(0, "S1")
    src_at = index_of(src_keys) if len(src_keys) else np.zeros(0, np.int64)
    source[at[keep]] = src_at[keep]
    named[at[keep]] = np.array([bool(s) for s in src_names], bool)[keep]
    labels = arrays.video_labels
    real = labels == 0
    source[~(labels == 1)] = -1
    source[(source >= 0) & ~real[np.maximum(source, 0)]] = -1  # a source must be a real video
    # Groups: the identity of a real video (when recorded), else the video itself; fakes take their source's.
    idents = np.array(["" for _ in range(nv)], dtype=object)
    idents[at[keep]] = np.asarray(ident, dtype=object)[keep]
    group = np.full(nv, -1, np.int64)
    keys = {}
    for v in np.flatnonzero(real):
        key = ("identity", idents[v]) if idents[v] else ("video", int(v))
        group[v] = keys.setdefault(key, len(keys))
    fake_ok = source >= 0
    group[fake_ok] = group[source[fake_ok]]
    return Sources(source=source, named=named, group=group)


# ----------------------------------------------------------------------------------------------- subsets
def select_subset(arrays: ManifestArrays, subset: str, seed: int, dataset: str = "") -> dict:
    """Keep GenD's *paired* or *unpaired* subset of the training videos, in place; returns the counts (logged)."""
    if subset not in SUBSETS:
        raise ConfigError(f"data.pairing_subset={subset!r} is not valid; choose one of {', '.join(SUBSETS)}")
    src = video_sources(arrays, dataset)
    labels = arrays.video_labels
    frames = np.diff(arrays.starts)
    real = np.flatnonzero(labels == 0)
    fakes = np.flatnonzero(labels == 1)
    paired = fakes[src.source[fakes] >= 0]
    groups = np.unique(src.group[paired])
    if len(groups) < 2:
        raise ConfigError(f"{dataset}: data.pairing_subset={subset} needs fakes made from at least 2 source groups "
                          f"of the training split; found {len(groups)} ({len(paired)} of {len(fakes)} fakes have "
                          f"their source real there)")
    rng = np.random.default_rng([int(seed), 0x9A1D])
    perm = rng.permutation(groups)
    half_a = perm[: len(groups) // 2]
    in_a = np.isin(src.group, half_a)
    reals = real[in_a[real]]
    fakes_a, fakes_b = paired[in_a[paired]], paired[~in_a[paired]]
    k = min(len(fakes_a), len(fakes_b))
    # Both draws are always made, so one seed's paired and unpaired subsets come from one sequence.
    pick_a = np.sort(rng.choice(fakes_a, k, replace=False))
    pick_b = np.sort(rng.choice(fakes_b, k, replace=False))
    chosen = np.concatenate([reals, pick_a if subset == "paired" else pick_b])
    stats = {
        "subset": subset, "seed": int(seed), "groups": int(len(groups)), "groups_real": int(len(half_a)),
        "real_videos": int(len(reals)), "real_frames": int(frames[reals].sum()),
        "fake_videos": int(k), "fake_frames": int(frames[pick_a if subset == "paired" else pick_b].sum()),
        "videos_before": int(len(labels)), "fakes_without_source": int(len(fakes) - len(paired)),
    }
    keep = np.zeros(len(labels), bool)
    keep[chosen] = True
    arrays.keep_rows(keep[arrays.video])
    other = "made from those reals" if subset == "paired" else "made from the other groups"
    log.info("%sdata.pairing_subset=%s (seed %d): %d real videos (%d frames) from %d of %d source groups + %d "
             "fake videos (%d frames) %s; %d of %d training videos kept (%d fakes name no source real in the "
             "split)", f"{dataset}: " if dataset else "", subset, seed, stats["real_videos"], stats["real_frames"],
             stats["groups_real"], stats["groups"], k, stats["fake_frames"], other, int(keep.sum()),
             len(labels), stats["fakes_without_source"])
    return stats


# ----------------------------------------------------------------------------------------------- sampler
class SourcePairedSampler(DistributedSampler):
    """Batches in which every fake item has an item of its source real video (see the module docstring).

    Yields item indices; consecutive runs of ``batch_size`` form one batch (give the DataLoader the same
    ``batch_size`` and no shuffling). Deterministic per (seed, epoch); the batch sequence is split between DDP
    ranks batch by batch (rank r takes batches r, r+W, ...), every rank the same number. A DistributedSampler
    subclass, so Lightning uses it as is under DDP.

    Args:
        item_video: per dataset item, its video (index into the arrays' ``video_names``).
        item_label: per item, 0 real / 1 fake.
        source: per video, its source real video (``Sources.source``), -1 for none.
        named: per video, whether the dataset names a source (for the counts only).
        batch_size: items per batch (>= 2).
    """

    def __init__(self, item_video: np.ndarray, item_label: np.ndarray, source: np.ndarray, batch_size: int,
                 seed: int = 0, num_replicas: int | None = None, rank: int | None = None,
                 named: np.ndarray | None = None) -> None:
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        # Not DistributedSampler.__init__: it needs a dataset and an initialised process group.
        self.num_replicas, self.rank, self.seed, self.epoch = int(num_replicas), int(rank), int(seed), 0
        self.shuffle, self.drop_last = True, False
        if batch_size < 2:
            raise ConfigError("data.pairing=source needs batches of at least 2 items (a fake and its source real)")
        self.batch_size = int(batch_size)
        self.max_fakes = max(1, self.batch_size // 2 - 1)  # a unit fills at most half a batch
        item_video = np.asarray(item_video, np.int64)
        item_label = np.asarray(item_label, np.int64)
        order = np.argsort(item_video, kind="stable")
        bounds = np.searchsorted(item_video[order], np.arange(len(source) + 1))
        self._items = [order[bounds[v]:bounds[v + 1]] for v in range(len(source))]
        video_label = np.full(len(source), -1, np.int64)
        video_label[item_video] = item_label
        has = np.diff(bounds) > 0
        real_v = np.flatnonzero(has & (video_label == 0))
        fake_v = np.flatnonzero(has & (video_label == 1))
        src = np.asarray(source, np.int64)
        ok = np.zeros(len(source), bool)
        ok[fake_v] = src[fake_v] >= 0
        ok[fake_v] &= has[np.maximum(src[fake_v], 0)] & (video_label[np.maximum(src[fake_v], 0)] == 0)
        self.families: dict[int, list[int]] = {}
        for v in fake_v[ok[fake_v]]:
            self.families.setdefault(int(src[v]), []).append(int(v))
        self.singles = [int(v) for v in real_v if int(v) not in self.families]
        orphans = fake_v[~ok[fake_v]]
        named = np.ones(len(source), bool) if named is None else np.asarray(named, bool)
        self.real_items = np.concatenate([self._items[v] for v in real_v]) if len(real_v) else np.zeros(0, np.int64)
        if not self.families:
            raise ConfigError(f"data.pairing=source: none of the {len(fake_v)} training fake videos has its source "
                              f"real video in the training split; nothing can be paired (use data.pairing=none)")
        self.stats = {
            "families": len(self.families), "paired_fake_videos": int(ok.sum()),
            "orphan_fake_videos": int(len(orphans)),
            "orphan_fake_items": int(sum(len(self._items[v]) for v in orphans)),
            "orphans_without_source_name": int((~named[orphans]).sum()),
            "unfaked_real_videos": len(self.singles),
        }
        first = self._batches(0)
        self.stats["fillers_per_epoch"] = int(self._fillers)
        # A fixed epoch length (schedulers count steps up front), the same for every rank.
        self.n_batches = math.ceil(len(first) / self.num_replicas) * self.num_replicas

    # -- one epoch ------------------------------------------------------------------------------------------
    def _units(self, rng: np.random.Generator) -> list[np.ndarray]:
        units: list[np.ndarray] = []
        for real_v, fakes in sorted(self.families.items()):
            reals = rng.permutation(self._items[real_v])
            fake_items = rng.permutation(np.concatenate([self._items[v] for v in fakes]))
            n = max(len(reals), math.ceil(len(fake_items) / self.max_fakes))
            units += [np.concatenate([reals[t % len(reals)][None], fake_items[t::n]]) for t in range(n)]
        for v in self.singles:
            units += [np.asarray([i]) for i in self._items[v]]
        return [units[i] for i in rng.permutation(len(units))]

    def _batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, int(epoch), 0x5A1])
        units = self._units(rng)
        batches: list[np.ndarray] = []
        cur: list[np.ndarray] = []
        free, pending, fillers = self.batch_size, [], 0

        def close() -> None:
            nonlocal cur, free, fillers
            if free:  # no waiting unit fits the gap: random real frames (any real may stand beside any fake)
                cur.append(rng.choice(self.real_items, free))
                fillers += free
            batches.append(np.concatenate(cur))
            cur, free = [], self.batch_size

        queue = iter(units)
        exhausted = False
        while True:
            waiting = []
            for u in pending:  # units that did not fit earlier come first
                if len(u) <= free:
                    cur.append(u)
                    free -= len(u)
                else:
                    waiting.append(u)
            pending = waiting
            while free and not exhausted and len(pending) <= _LOOKAHEAD:
                u = next(queue, None)
                if u is None:
                    exhausted = True
                elif len(u) <= free:
                    cur.append(u)
                    free -= len(u)
                else:
                    pending.append(u)
            if cur and (free == 0 or len(pending) > _LOOKAHEAD or exhausted):
                close()
            if exhausted and not pending and not cur:
                break
        self._fillers = fillers
        return batches

    # -- Sampler API ----------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n_batches // self.num_replicas * self.batch_size

    def batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """This rank's batches of an epoch (item indices), in order."""
        batches = self._batches(self.epoch if epoch is None else epoch)
        if len(batches) < self.n_batches:  # pad by repeating the epoch's first batches (as DDP samplers do)
            batches = batches + [batches[i % len(batches)] for i in range(self.n_batches - len(batches))]
        return batches[: self.n_batches][self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(np.concatenate(self.batches()).tolist())
