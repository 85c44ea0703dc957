"""Training input from a shard store (``data.store=shards``), as map-style or streaming datasets.

Reading (``data.store=shards``) in one of two modes:

* ``random`` (default for local roots): map-style, one ``pread`` per crop at the offset the index gives. The
  datasets are :class:`~dfd.data.datasets.FrameDataset` / ``ClipDataset`` whose bytes come from shards, so the
  samplers, DDP split, augmentation streams and evaluation ``index`` are those of ``data.store=files``: training
  sees the same frames and labels in the same order, bit for bit.
* ``stream`` (default for URL roots: ``s3://``, ``gs://``, ``https://``, ``pipe:...``): whole shards are read in
  sequence. Each epoch the split's shards are permuted with (seed, epoch), the sample sequence is cut into equal
  contiguous ranges per DDP rank (training: equal batch counts on every rank, so no rank waits on a collective)
  and into whole batches per DataLoader worker, and each worker shuffles through a buffer seeded by
  (seed, epoch, rank, worker): deterministic for a fixed seed, every frame once per evaluation.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from dfd.data.bad_crops import KEY
from dfd.data.datasets import ClipDataset, FrameDataset, ManifestArrays, row_keys
from dfd.data.transforms import Pipeline
from dfd.store.media import MediaError, decode_image
from dfd.store.packed.format import LOCATION_COLUMNS, ShardError, ShardSettings, open_url, sample_key
from dfd.store.packed.reader import ByteReader, ShardStore, open_store


def decode_rgb(data: bytes, where: str) -> np.ndarray:
    """Encoded crop bytes from a shard -> RGB uint8 (:func:`dfd.store.media.decode_image`, as files are decoded),
    with an error that names the fix."""
    try:
        return decode_image(data, where)
    except MediaError as e:
        raise OSError(f"cannot decode face crop {where}: {e.reason} shard data (re-run dfd-pack)") from e


def shard_locations(store: ShardStore, arrays: ManifestArrays, split: str | list[str] | None
                    ) -> dict[str, np.ndarray]:
    """Where each row of ``arrays`` lies in ``store`` (``shard, offset, nbytes``, aligned with its rows), and the split's
    whole sample sequence in shard order (``seq_shard``, ``seq_row``: -1 for crops ``arrays`` dropped)."""
    names = pq.read_schema(store.manifest_path).names
    cols = ["video_id", "frame", *(["track"] if "track" in names else []), "split", *LOCATION_COLUMNS]
    t = pq.read_table(store.manifest_path, columns=cols)
    if split is not None:
        wanted = pa.array([split] if isinstance(split, str) else list(split), pa.string())
        t = t.filter(pc.is_in(t["split"].cast(pa.string()), value_set=wanted))
    enc = pc.dictionary_encode(t["video_id"].combine_chunks())
    names = np.array([s.encode() for s in enc.dictionary.to_pylist()], dtype="S")
    vn = arrays.video_names
    code_of_name = np.searchsorted(vn, names) if len(vn) else np.zeros(len(names), np.int64)
    known = code_of_name < len(vn)
    known[known] = vn[code_of_name[known]] == names[known]
    codes = enc.indices.to_numpy(zero_copy_only=False)
    vid = np.where(known[codes], code_of_name[codes], -1).astype(np.int64)
    frame = t["frame"].to_numpy().astype(np.int64)
    track = (pc.fill_null(t["track"], 0).to_numpy().astype(np.int64) if "track" in t.column_names
             else np.zeros(len(frame), np.int64))
    multi = bool(track.any() or arrays.track.any())
    key = row_keys(np.maximum(vid, 0), frame, track if multi else None)
    key[vid < 0] = -1  # rows of videos arrays does not hold: match nothing
    akey = row_keys(arrays.video, arrays.frame, arrays.track if multi else None)
    pos = np.searchsorted(akey, key)
    hit = (vid >= 0) & (pos < len(akey))
    hit[hit] = akey[pos[hit]] == key[hit]
    row = np.where(hit, pos, -1)
    shard = t["shard"].to_numpy().astype(np.int32)
    offset = t["offset"].to_numpy().astype(np.int64)
    nbytes = t["nbytes"].to_numpy().astype(np.int32)
    out = {k: np.full(len(arrays), -1, d) for k, d in (("shard", np.int32), ("offset", np.int64), ("nbytes", np.int32))}
    out["shard"][row[hit]], out["offset"][row[hit]], out["nbytes"][row[hit]] = shard[hit], offset[hit], nbytes[hit]
    if (out["shard"] < 0).any():
        raise ShardError(f"{store.root}: {int((out['shard'] < 0).sum())} crops of the manifest are not in the "
                         f"shards; re-run dfd-pack")
    order = np.lexsort((offset, shard))
    out["seq_shard"], out["seq_row"] = shard[order], row[order].astype(np.int64)
    return out


class ShardFrameDataset(FrameDataset):
    """:class:`FrameDataset` whose crops are read from shards (random access): same rows, indices, samples."""

    def __init__(self, arrays: ManifestArrays, pipeline: Pipeline, store: ShardStore, locs: Mapping[str, np.ndarray],
                 name: str = "") -> None:
        super().__init__(arrays, pipeline, name)
        self.shard, self.offset, self.nbytes = locs["shard"], locs["offset"], locs["nbytes"]
        self.reader = ByteReader(store.urls, store.remote)

    def read_image(self, i: int) -> np.ndarray:
        """The RGB crop of row ``i``."""
        data = self.reader.read(int(self.shard[i]), int(self.offset[i]), int(self.nbytes[i]))
        return decode_rgb(data, f"{self.arrays.paths[i].decode()} in {self.reader.urls[self.shard[i]]}")



class ShardClipDataset(ClipDataset):
    """:class:`ClipDataset` whose frames are read from shards (random access)."""

    def __init__(self, arrays: ManifestArrays, pipeline: Pipeline, clip_len: int, store: ShardStore,
                 locs: Mapping[str, np.ndarray], name: str = "") -> None:
        super().__init__(arrays, pipeline, clip_len, name)
        self._frames = ShardFrameDataset(arrays, pipeline, store, locs, name)

    def read_image(self, i: int) -> np.ndarray:
        # ClipDataset reads files: the same clip with images from the shard.
        return self._frames.read_image(i)


class ShardStreamDataset(IterableDataset):
    """Streams a split's shards in sequence: DDP- and worker-aware, deterministic for (seed, epoch).

    Args:
        arrays, pipeline, name: as for :class:`FrameDataset` (``index`` = the file store's row index).
        store, locs: the opened store and :meth:`ShardStore.locations` of ``arrays``.
        batch_size: the DataLoader's batch size: each worker gets whole batches, so ``len(loader)`` is exact.
        train: shuffle (shard order + buffer) and give every rank the same number of samples (the remainder,
            fewer than ``world_size`` crops, is left out that epoch; a different one each epoch).
        drop_last: training: drop the last partial batch when every rank has more than one batch (as the file
            store's loader does).
        shuffle_buffer: samples each worker shuffles through (training only).
    """

    def __init__(self, arrays: ManifestArrays, pipeline: Pipeline, store: ShardStore, locs: Mapping[str, np.ndarray],
                 batch_size: int, name: str = "", train: bool = False, seed: int = 0, drop_last: bool = False,
                 shuffle_buffer: int = 1000) -> None:
        self.frames = FrameDataset(arrays, pipeline, name)
        self.arrays, self.name = arrays, name
        self.urls = store.urls
        seq_shard, seq_row = locs["seq_shard"], locs["seq_row"]
        self.split_shards = np.unique(seq_shard)  # global shard ids of this split, in order
        # CSR over the split's shards: the dataset row of each sample in tar order (-1: not used, e.g. frames
        # beyond data.frames_per_video), and the number of used samples per shard.
        starts = np.searchsorted(seq_shard, self.split_shards)
        self.seq_starts = np.append(starts, len(seq_shard)).astype(np.int64)
        self.seq_row = seq_row
        self.used = np.add.reduceat((seq_row >= 0).astype(np.int64), starts) if len(starts) else np.zeros(0, np.int64)
        self.batch_size = max(int(batch_size), 1)
        self.train, self.seed, self.drop_last = bool(train), int(seed), bool(drop_last)
        self.shuffle_buffer = int(shuffle_buffer)
        self.rank, self.world_size = 0, 1
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # seen by persistent workers

    # -------------------------------------------------------------------------------- the file store's API
    @property
    def labels(self) -> np.ndarray:
        return self.arrays.label

    def set_epoch(self, epoch: int) -> None:
        """Permute shards and buffers anew for this epoch (the DataModule calls it every training epoch)."""
        self._epoch.fill_(int(epoch))

    def set_distributed(self, rank: int, world_size: int) -> None:
        """This process's DDP rank (the DataModule sets it from the trainer; tests set it directly)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.rank, self.world_size = int(rank), int(world_size)

    # -------------------------------------------------------------------------------- plan
    def _rank_range(self) -> tuple[int, int]:
        n = int(self.used.sum())
        if self.train:
            per = n // self.world_size
            lo, hi = self.rank * per, (self.rank + 1) * per
            # As the file store's loader: drop the last partial batch only if every rank keeps a full one.
            if self.drop_last and per > self.batch_size:
                hi = lo + per // self.batch_size * self.batch_size
        else:
            lo, hi = self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size
        return lo, hi

    def __len__(self) -> int:
        lo, hi = self._rank_range()
        return hi - lo

    def worker_range(self, worker: int, num_workers: int) -> tuple[int, int]:
        """This (rank, worker)'s samples, as positions in the epoch's sequence: whole batches per worker."""
        lo, hi = self._rank_range()
        batches = -(-(hi - lo) // self.batch_size)
        b0, b1 = worker * batches // num_workers, (worker + 1) * batches // num_workers
        return min(lo + b0 * self.batch_size, hi), min(lo + b1 * self.batch_size, hi)

    def shard_order(self, epoch: int) -> np.ndarray:
        """Positions into ``split_shards`` in this epoch's order (permuted with (seed, epoch) when training)."""
        k = len(self.split_shards)
        return np.random.default_rng([self.seed, epoch]).permutation(k) if self.train else np.arange(k)

    # -------------------------------------------------------------------------------- iteration
    def _rows(self, lo: int, hi: int, order: np.ndarray) -> Iterator[tuple[int, int, int]]:
        """(shard position, member ordinal, dataset row) of used samples lo..hi-1 of the epoch's sequence."""
        at = 0
        for k in order:
            n = int(self.used[k])
            if at + n > lo and at < hi:
                s, e = self.seq_starts[k], self.seq_starts[k + 1]
                rows = self.seq_row[s:e]
                used_pos = np.flatnonzero(rows >= 0)
                for j in used_pos[max(lo - at, 0): hi - at]:
                    yield int(k), int(j), int(rows[j])
            at += n
            if at >= hi:
                break

    def _samples(self, lo: int, hi: int, order: np.ndarray) -> Iterator[dict]:
        """Raw samples (encoded bytes + row) read sequentially, each wanted shard opened once."""
        from webdataset.tariterators import group_by_keys, tar_file_expander

        plan = list(self._rows(lo, hi, order))
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for k, j, row in plan:
            by_shard.setdefault(k, []).append((j, row))
        for k in dict.fromkeys(k for k, _, _ in plan):
            wanted = dict(by_shard[k])
            last = max(wanted)
            url = self.urls[int(self.split_shards[k])]
            stream = open_url(url)
            try:
                members = group_by_keys(tar_file_expander([{"url": url, "stream": stream}]))
                for j, sample in enumerate(members):
                    if j in wanted:
                        row = wanted[j]
                        key = sample_key(self.arrays.video_names[self.arrays.video[row]].decode(),
                                         int(self.arrays.frame[row]), int(self.arrays.track[row]))
                        if sample["__key__"] != key:
                            raise ShardError(f"{url}: member {j} is {sample['__key__']!r}, the index says {key!r}; "
                                             f"the shard does not match its manifest (re-run dfd-pack)")
                        ext = "png" if "png" in sample else "jpg"
                        yield {"row": row, "data": sample[ext], "url": url}
                    if j >= last:
                        break
            finally:
                stream.close()

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = int(self._epoch)
        lo, hi = self.worker_range(worker, workers)
        samples = self._samples(lo, hi, self.shard_order(epoch))
        if self.train and self.shuffle_buffer > 1:
            from webdataset.filters import _shuffle

            rng = random.Random(hash((self.seed, epoch, self.rank, worker)))
            samples = _shuffle(samples, bufsize=self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)
        a = self.arrays
        skipped = [0, 0]  # unreadable crops not yet reported (per label): told by the next sample of that label
        for s in samples:
            i = s["row"]
            try:
                image = decode_rgb(s["data"], f"{a.paths[i].decode()} in {s['url']}")
            except OSError as e:
                if self.frames.bad_crops == "fail":
                    raise self.frames._unreadable(i, e) from None
                skipped[int(a.label[i])] += 1  # a stream cannot go back for another frame: dropped
                continue
            label = int(a.label[i])
            raw = {"image": image, "landmarks": a.landmarks[i], "label": label, "video": int(a.video[i]),
                   "index": int(i), "method": int(a.method[i]), KEY: skipped[label]}
            skipped[label] = 0
            yield self.frames.apply_transform(raw)


def shard_arrays(settings: ShardSettings, name: str, manifest: Path, split: str) -> tuple[ShardStore, ManifestArrays]:
    """The store of a dataset and one split's rows read from the store's own manifest."""
    store = open_store(settings.root_for(name, manifest), settings.cache_dir)
    warning = None
    if not store.remote and not getattr(store, "_checked", False):
        store._checked = True
        warning = store.check_source(manifest)
    if warning:
        import warnings

        warnings.warn(warning, stacklevel=2)
    return store, ManifestArrays(store.manifest_path, splits=split)


def shard_dataset(settings: ShardSettings, store: ShardStore, arrays: ManifestArrays, split: str, pipeline: Pipeline,
                  name: str, clip_len: int | None, batch_size: int, train: bool, seed: int) -> Dataset:
    """The dataset of one split read from shards, in the configured mode."""
    locs = shard_locations(store, arrays, split)
    mode = settings.mode_for(store.root)
    if mode == "random":
        if store.root.startswith("pipe:"):
            raise ShardError(f"data.shards.mode=random reads byte ranges; a pipe: root ({store.root}) can only be "
                             f"streamed: use data.shards.mode=stream or an fsspec URL (s3://, gs://, https://)")
        if clip_len:
            return ShardClipDataset(arrays, pipeline, clip_len, store, locs, name=name)
        return ShardFrameDataset(arrays, pipeline, store, locs, name=name)
    if clip_len:
        raise ShardError("clip models (ADDNet-3D) need random access to frames: use data.shards.mode=random "
                         "(local or mounted shards) or data.store=files")
    return ShardStreamDataset(arrays, pipeline, store, locs, batch_size=batch_size, name=name, train=train, seed=seed,
                              drop_last=train, shuffle_buffer=settings.shuffle_buffer)
