"""The DataModule: train on one dataset (or a weighted mix), validate on its val split, test on any list.

Checkpoints are selected on the *training* dataset's validation split, never on a test set; every configured
test set (in-domain and cross-dataset) gets its own test dataloader, in a fixed order whose names the
LightningModule uses for metric keys.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import (
    ConcatDataset,
    DataLoader,
    Dataset,
    IterableDataset,
    Sampler,
    WeightedRandomSampler,
)

from dfd.data.bad_crops import check_policy
from dfd.data.bad_crops import collate as bad_crop_collate
from dfd.data.datasets import ClipDataset, FrameDataset, ManifestArrays, concat_arrays
from dfd.data.transforms import Pipeline, Spec, build_pipelines
from dfd.errors import ConfigError, DatasetError
from dfd.sources.base import DatasetSource
from dfd.workers import die_with_parent

FAKES_CHOICES = ("real", "sbi", "both")
STORES = ("files", "shards")

log = logging.getLogger(__name__)


def _same_data(a: DatasetSource, b: DatasetSource) -> bool:
    """Two sources read the same frames when they read the same manifest (same cache, same settings)."""
    try:
        return Path(a.manifest_path).resolve() == Path(b.manifest_path).resolve()
    except (OSError, RuntimeError):
        return False


def name_test_sets(in_domain: DatasetSource | None, tests: Mapping[str, DatasetSource] | None
                   ) -> dict[str, DatasetSource]:
    """The test sets by name, in-domain first: every configured set is tested once, under its own name.

    ``in_domain`` (the training dataset) keeps its dataset name; every other set is named by its ``test_sets``
    key (two FF++ test sets at c23 and c40 are two test sets). A test set that reads the training dataset's own
    data is the in-domain set already (said once in the log); a *different* set under an existing name is an
    error: one of them would silently overwrite the other.
    """
    named: dict[str, DatasetSource] = {}
    if in_domain is not None:
        named[in_domain.name] = in_domain
    for name, src in (tests or {}).items():
        if in_domain is not None and _same_data(src, in_domain):
            log.info("test_sets.%s is the training dataset's own test split: tested once, in-domain, as '%s'",
                     name, in_domain.name)
            continue
        if name in named:
            raise DatasetError(
                f"test_sets.{name}: the name '{name}' is already the in-domain test set (the training dataset's "
                f"test split) and this entry reads other data ({src.manifest_path}); rename it "
                f"(+dataset@test_sets.<other name>=...) or give it a display name (+test_sets.{name}.display_name=<other name>)"
            )
        named[name] = src
    return named


def _check_pairing(pairing: str, subset: str, fakes: str, balance: bool, extra_train: Mapping | None
                   ) -> tuple[str, str]:
    """``data.pairing`` / ``data.pairing_subset``, with combinations that cannot work refused in one line."""
    from dfd.data.pairing import PAIRINGS, SUBSETS

    pairing, subset = str(pairing or "none"), str(subset or "all")
    if pairing not in PAIRINGS:
        raise ConfigError(f"data.pairing={pairing!r} is not valid; choose one of {', '.join(PAIRINGS)}")
    if subset not in SUBSETS:
        raise ConfigError(f"data.pairing_subset={subset!r} is not valid; choose one of {', '.join(SUBSETS)}")
    if pairing == "source":
        if balance or extra_train:
            raise ConfigError("data.pairing=source builds each batch from fake/source-real families and cannot also "
                              "weight samples (data.balance=true, train_mix): turn one of them off")
        if fakes == "sbi":
            raise ConfigError("data.pairing=source pairs a dataset's fakes with their source reals; data.fakes=sbi "
                              "has none (each self-blend is paired with its real frame already): use data.fakes=both")
        if subset == "unpaired":
            raise ConfigError("data.pairing_subset=unpaired has no fake whose source real is in the set: use "
                              "data.pairing=none with it")
    return pairing, subset


def feature_key(src: DatasetSource) -> str:
    """How a DataModule finds a source's feature store: its manifest (two test sets of one dataset at two
    compressions are two caches, two stores)."""
    try:
        return str(Path(src.manifest_path).resolve())
    except (OSError, RuntimeError):
        return str(src.manifest_path)


class UnpaddedDistributedSampler(UnrepeatedDistributedSampler):
    """Lightning's unrepeated sampler, in index order: rank r gets rows r, r+W, r+2W, ..., every sample exactly
    once overall, no padding.

    torch's DistributedSampler pads the last batch by repeating samples, which biases evaluation metrics;
    evaluation needs no equal batch counts (there is no gradient all-reduce). Being a DistributedSampler, it
    keeps Lightning from wrapping it in its own (padding) sampler.
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)


class DeepfakeDataModule(pl.LightningDataModule):
    """Builds train / val / test loaders from dataset sources and the model's input spec.

    Args:
        train_source: the training dataset (val split used for checkpoint selection; test split = in-domain,
            named by the dataset's name).
        test_sources: extra test datasets by name (cross-dataset evaluation); the names are the test sets'
            names (``name_test_sets``), whatever dataset they read.
        spec: the model's input spec (size, mean, std, clip_len).
        augment: instantiated albumentations transforms for training.
        extra_train: more training datasets mixed in, ``{name: (source, weight)}``; the training source has
            weight ``train_weight``. Weights are per dataset, whatever its size.
        fakes: ``real`` (the dataset's own fakes), ``sbi`` (real frames + their self-blends only),
            ``both`` (dataset fakes and self-blends).
        balance: sample real and fake frames equally often (datasets are often 1:4 real:fake).
        frames_per_video: train on at most this many uniformly spaced frames of each video (all when unset);
            validation and test always use every extracted frame.
        store: ``files`` (the crop cache) or ``shards`` (packed by ``dfd-pack``; see dfd.store.packed).
        shards: ``data.shards`` settings (root, mode, shuffle_buffer, cache_dir) for ``store=shards``.
        pairing: ``none`` (plain shuffling) or ``source``: every fake in a training batch with frames of its
            source real video (dfd.data.pairing.SourcePairedSampler; not with ``balance`` or a mix).
        pairing_subset: ``all``, or GenD's ``paired`` / ``unpaired`` training subsets of equal size
            (dfd.data.pairing.select_subset, per training dataset, deterministic per seed).
        val_mix: names of ``extra_train`` datasets whose validation splits join the training dataset's for
            checkpoint selection (one pooled validation set; videos named ``<dataset>/<video_id>``).
        features: ``data.features=cached``: feature stores (``dfd.store.features.FeatureStore``) by
            :func:`feature_key` of each source; every split is then read as stored features instead of crops
            (:class:`dfd.data.features.FeatureDataset`), on the same rows, samplers and splits.
        feature_views: with features, the number of augmented views training draws from (``embed.views``).
        bad_crops: ``skip`` (an unreadable crop is replaced by another frame of its video, or dropped) or
            ``fail`` (stop at the first one); see dfd.data.bad_crops.
    """

    def __init__(
        self,
        train_source: DatasetSource | None,
        spec: object,
        test_sources: Mapping[str, DatasetSource] | None = None,
        augment: Sequence = (),
        extra_train: Mapping[str, tuple[DatasetSource, float]] | None = None,
        train_weight: float = 1.0,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        fakes: str = "real",
        sbi: Mapping | None = None,
        balance: bool = False,
        include_train_test: bool = True,
        seed: int = 0,
        eval_extra: Sequence = (),
        frames_per_video: int | None = None,
        store: str = "files",
        shards: Mapping | None = None,
        pairing: str = "none",
        pairing_subset: str = "all",
        val_mix: Sequence[str] = (),
        features: Mapping | None = None,
        feature_views: int = 0,
        bad_crops: str = "skip",
    ) -> None:
        super().__init__()
        self.bad_crops = check_policy(bad_crops)
        self.features = dict(features) if features is not None else None
        self.feature_views = int(feature_views or 0)
        if self.features is not None and (fakes != "real" or store != "files"):
            raise ConfigError("data.features=cached reads stored features of the crop cache's own faces: it needs "
                              "data.fakes=real and data.store=files")
        if fakes not in FAKES_CHOICES:
            raise ConfigError(f"data.fakes={fakes!r} is not valid; choose one of {', '.join(FAKES_CHOICES)}")
        self.pairing, self.pairing_subset = _check_pairing(pairing, pairing_subset, fakes, balance, extra_train)
        self.pairing_stats: dict[str, dict] = {}
        if store not in STORES:
            raise ConfigError(f"data.store={store!r} is not valid; choose one of {', '.join(STORES)}")
        self.store = store
        self.shards = None
        if store == "shards":
            from dfd.store.packed.format import ShardSettings

            self.shards = ShardSettings.from_mapping(shards)
        self.train_source = train_source
        self.spec = Spec.of(spec)
        self.extra_train = dict(extra_train or {})
        unknown = sorted(set(val_mix) - set(self.extra_train))
        if unknown:
            raise ConfigError(f"val_mix {unknown} are not training-mix datasets ({sorted(self.extra_train)})")
        self.val_mix = list(val_mix)
        self.train_weight = float(train_weight)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.fakes = fakes
        self.sbi_cfg = dict(sbi or {})
        self.balance = bool(balance)
        self.seed = int(seed)
        self.frames_per_video = int(frames_per_video or 0)
        self.train_pipe, self.eval_pipe = build_pipelines(self.spec, list(augment))
        if eval_extra:
            self.eval_pipe = Pipeline(self.spec, extra=list(eval_extra))
        self.test_sources = name_test_sets(train_source if include_train_test else None, test_sources)
        self.train_ds: Dataset | None = None
        self.val_ds: Dataset | None = None
        self.test_ds: dict[str, Dataset] = {}

    # ----------------------------------------------------------------------------------------------- setup
    @property
    def test_names(self) -> list[str]:
        """Names of the test sets, in dataloader order (``test/<name>/...`` metric keys)."""
        return list(self.test_sources)

    def _all_sources(self) -> list[DatasetSource]:
        srcs = [self.train_source] if self.train_source is not None else []
        srcs += [s for s, _ in self.extra_train.values()] + list(self.test_sources.values())
        return srcs

    def prepare_data(self) -> None:
        # Rank 0 only: generate the synthetic set / check extracted manifests exist, with a clear error.
        for src in self._all_sources():
            if self.shards is None or not self.shards.root:  # a shard store elsewhere needs no crop cache here
                src.prepare()

    def _dataset(self, src: DatasetSource, split: str, pipe: Pipeline) -> Dataset:
        if self.features is not None:
            return self._feature_dataset(src, split)
        if self.shards is not None:
            from dfd.data.packed import shard_arrays

            manifest = src.manifest_path if self.shards.root else src.prepare()
            store, arrays = shard_arrays(self.shards, src.name, manifest, split)
        else:
            arrays = ManifestArrays(src.prepare(), splits=split, roots=src.roots())
        if split == "train" and self.frames_per_video:
            arrays.keep_frames_per_video(self.frames_per_video)
        if split == "train" and not self.spec.clip_len:
            # Partial fakes (AV-Deepfake1M): a frame outside its video's fake segments is real, and trains as real.
            real_frames = arrays.train_on_frame_labels()
            if real_frames:
                log.info("%s: %d training frames of fake videos lie outside their fake segments: trained as real "
                         "(manifest frame_label)", src.name, real_frames)
        if split == "train" and self.pairing_subset != "all":
            from dfd.data.pairing import select_subset

            self.pairing_stats[f"{src.name}/subset"] = select_subset(arrays, self.pairing_subset, self.seed, src.name)
        if len(arrays) == 0:
            raise DatasetError(
                f"{src.name}: the manifest {src.manifest_path} has no '{split}' frames; "
                f"check the dataset's split protocol or extraction failures ({src.cache_dir}/failures.csv)"
            )
        if self.shards is not None:
            from dfd.data.packed import shard_dataset

            train = split == "train"
            ds = shard_dataset(self.shards, store, arrays, split, pipe, src.name, self.spec.clip_len,
                               self.batch_size if train else self.eval_batch_size, train, self.seed)
        elif self.spec.clip_len:
            ds = ClipDataset(arrays, pipe, self.spec.clip_len, name=src.name)
        else:
            ds = FrameDataset(arrays, pipe, name=src.name)
        for target in (ds, getattr(ds, "frames", None)):  # a shard stream reads through its frame dataset
            if target is not None:
                target.bad_crops, target.verify_hint = self.bad_crops, src.verify_command()
        return ds

    def verify_hint(self, name: str) -> str:
        """The command listing the unreadable crops of a test set (by name), of ``train``/``val``'s dataset."""
        src = self.train_source if name in ("train", "val") else self.test_sources.get(name)
        return src.verify_command() if src is not None else ""

    def _feature_dataset(self, src: DatasetSource, split: str) -> Dataset:
        from dfd.data.features import FeatureDataset

        if self.spec.clip_len:
            raise ConfigError("data.features=cached serves frame models; clip models (ADDNet-3D) read crops")
        store = self.features[feature_key(src)]
        arrays = ManifestArrays(src.prepare(), splits=split)
        features = store.array(split)
        if len(features) != len(arrays):
            raise DatasetError(f"{src.name}: the feature store {store.folder} holds {len(features)} '{split}' rows, "
                               f"the manifest {len(arrays)}; rebuild it (add embed.rebuild=true)")
        if split == "train" and self.frames_per_video:
            arrays.keep_frames_per_video(self.frames_per_video)
        if split == "train" and self.pairing_subset != "all":
            from dfd.data.pairing import select_subset

            self.pairing_stats[f"{src.name}/subset"] = select_subset(arrays, self.pairing_subset, self.seed, src.name)
        if len(arrays) == 0:
            raise DatasetError(f"{src.name}: the manifest {src.manifest_path} has no '{split}' frames")
        views = ([store.array(split, v) for v in range(1, self.feature_views + 1)]
                 if split == "train" and self.feature_views else [])
        return FeatureDataset(arrays, features, views, name=src.name, seed=self.seed)

    def feature_bank(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every training crop's stored features (each row once, clean view) and labels: a k-NN head's bank."""
        from dfd.data.features import FeatureDataset

        feats, labels = [], []
        for ds, _ in self._train_parts:
            if not isinstance(ds, FeatureDataset):
                raise ConfigError("head=knn votes over stored training features: add data.features=cached")
            feats.append(torch.from_numpy(np.asarray(ds.features[ds.arrays.rows], np.float32)))
            labels.append(torch.from_numpy(ds.arrays.label.astype(np.float32)))
        return torch.cat(feats), torch.cat(labels)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_source is not None:
            parts = [(self._train_part(self.train_source), self.train_weight)]
            parts += [(self._train_part(src), w) for src, w in self.extra_train.values()]
            self._train_parts = parts
            self.train_ds = parts[0][0] if len(parts) == 1 else ConcatDataset([p for p, _ in parts])
            self.val_ds = self._val_dataset()
        if stage in (None, "fit", "validate") and self.val_ds is None and self.train_source is not None:
            self.val_ds = self._val_dataset()
        if stage in (None, "test"):
            self.test_ds = {n: self._dataset(s, "test", self.eval_pipe) for n, s in self.test_sources.items()}

    def _val_dataset(self) -> Dataset:
        """The training dataset's val split, pooled with the val splits of ``val_mix`` (one selection set)."""
        if not self.val_mix:
            return self._dataset(self.train_source, "val", self.eval_pipe)
        if self.shards is not None:
            raise ConfigError("train_mix.<name>.validate=true pools validation crops from several caches: use "
                              "data.store=files")
        srcs = [self.train_source, *(self.extra_train[n][0] for n in self.val_mix)]
        parts = []
        for src in srcs:
            arrays = ManifestArrays(src.prepare(), splits="val", roots=src.roots())
            if len(arrays) == 0:
                raise DatasetError(f"{src.name}: the manifest {src.manifest_path} has no 'val' frames to select on "
                                   f"(train_mix.{src.name}.validate=true); check its split protocol")
            parts.append((src.name, arrays))
        arrays = concat_arrays(parts)
        if self.spec.clip_len:
            return ClipDataset(arrays, self.eval_pipe, self.spec.clip_len, name="+".join(s.name for s in srcs))
        return FrameDataset(arrays, self.eval_pipe, name="+".join(s.name for s in srcs))

    def _train_part(self, src: DatasetSource) -> Dataset:
        ds = self._dataset(src, "train", self.train_pipe)
        if self.fakes == "real":
            return ds
        if self.spec.clip_len:
            raise ConfigError("data.fakes=sbi works on frame models; clip models need real fakes (data.fakes=real)")
        if isinstance(ds, IterableDataset):
            raise ConfigError("data.fakes=sbi needs random access to frames: use data.shards.mode=random or files")
        from dfd.data.sbi import SelfBlend, SelfBlendedPairs

        return SelfBlendedPairs(ds, SelfBlend(**self.sbi_cfg), mode=self.fakes, seed=self.seed)

    # ----------------------------------------------------------------------------------------------- loaders
    def _sample_weights(self) -> np.ndarray | None:
        """Per-sample weights realising the dataset mix and class balance, or None for plain shuffling."""
        if len(self._train_parts) == 1 and not self.balance:
            return None
        if any(isinstance(ds, IterableDataset) for ds, _ in self._train_parts):
            raise ValueError("data.balance and train_mix sample by weight, which needs random access: use "
                             "data.shards.mode=random (local or mounted shards) or data.store=files")
        weights = []
        for ds, w in self._train_parts:
            labels = np.asarray(ds.labels, np.int64)
            per = np.full(len(labels), w / max(len(labels), 1), np.float64)
            if self.balance:
                # Equal weight per class *present*: a one-class dataset keeps its whole configured share.
                counts = np.bincount(labels, minlength=2).astype(np.float64)
                per *= len(labels) / (np.count_nonzero(counts) * np.maximum(counts[labels], 1))
            weights.append(per)
        return np.concatenate(weights)

    def _loader(self, ds: Dataset, shuffle: bool, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        inner = None
        workers = self.num_workers
        if self.fakes != "real" and shuffle:
            from dfd.data.sbi import pair_collate

            inner = pair_collate
            batch_size = max(1, batch_size // 2)  # each item is a (real, self-blend) pair
        # Dropped samples (a video without a readable crop) leave the batch; its unreadable crops are counted.
        collate = functools.partial(bad_crop_collate, inner=inner)
        if self.features is not None:
            from dfd.data.features import collate_features

            # Stored features (no crop to be unreadable) are a memory-mapped slice per batch: worker processes
            # would only add start-up time.
            collate, workers = collate_features, 0
        if isinstance(ds, IterableDataset):  # streamed shards: the dataset splits, shuffles and batches itself
            trainer = getattr(self, "trainer", None)
            ds.set_distributed(int(trainer.global_rank) if trainer is not None else 0, self._world_size())
            shuffle, sampler = False, None
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            # A last batch of 1 breaks BatchNorm in training, but dropping must leave every rank a batch.
            drop_last=shuffle and len(ds) // self._world_size() > batch_size,
            collate_fn=collate,
            worker_init_fn=die_with_parent,
        )

    def _world_size(self) -> int:
        trainer = getattr(self, "trainer", None)
        return max(int(trainer.world_size), 1) if trainer is not None else 1

    def _paired_sampler(self) -> Sampler:
        """The training sampler of ``data.pairing=source`` (frames, clips or self-blend pairs alike)."""
        from dfd.data.pairing import SourcePairedSampler, video_sources

        ds = self.train_ds
        if isinstance(ds, IterableDataset):
            raise ConfigError("data.pairing=source builds batches by video, which needs random access: use "
                              "data.shards.mode=random (local or mounted shards) or data.store=files")
        base = getattr(ds, "base", ds)  # self-blend pairs (data.fakes=both) wrap the frame dataset
        arrays = base.arrays
        if isinstance(base, ClipDataset):
            item_video, labels = np.arange(len(arrays.video_names)), arrays.video_labels
        else:
            item_video, labels = arrays.video, arrays.label
        if ds is not base:
            item_video, labels = item_video[ds.items], labels[ds.items]
        name = self.train_source.name
        src = video_sources(arrays, name)
        trainer = getattr(self, "trainer", None)
        per_batch = max(1, self.batch_size // 2) if self.fakes != "real" else self.batch_size
        sampler = SourcePairedSampler(item_video, labels, src.source, per_batch, seed=self.seed,
                                      num_replicas=self._world_size(),
                                      rank=int(trainer.global_rank) if trainer is not None else 0, named=src.named)
        st = self.pairing_stats[f"{name}/pairing"] = sampler.stats
        if trainer is None or trainer.is_global_zero:
            log.info("data.pairing=source: %d fake videos with their source real in every batch (%d source reals, %d "
                     "reals nobody faked); %d filler real frames per epoch", st["paired_fake_videos"], st["families"],
                     st["unfaked_real_videos"], st["fillers_per_epoch"])
            if st["orphan_fake_videos"]:
                log.warning("data.pairing=source: %d training fake videos (%d frames) have no source real in the "
                            "training split (%d name none; the rest name a real outside it) and are left out of "
                            "training", st["orphan_fake_videos"], st["orphan_fake_items"],
                            st["orphans_without_source_name"])
        return sampler

    def train_dataloader(self) -> DataLoader:
        if self.pairing == "source":
            return self._loader(self.train_ds, True, self.batch_size, self._paired_sampler())
        weights = self._sample_weights()
        sampler = None
        if weights is not None:
            gen = torch.Generator().manual_seed(self.seed)
            sampler = WeightedRandomSampler(torch.as_tensor(weights), num_samples=len(weights), generator=gen)
        return self._loader(self.train_ds, True, self.batch_size, sampler)

    def _eval_loader(self, ds: Dataset) -> DataLoader:
        sampler = None
        if dist.is_available() and dist.is_initialized() and not isinstance(ds, IterableDataset):
            sampler = UnpaddedDistributedSampler(ds)
        return self._loader(ds, False, self.eval_batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_ds)

    def test_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader(self.test_ds[n]) for n in self.test_names]

    def set_epoch(self, epoch: int) -> None:
        """Tell epoch-dependent training datasets (self-blends) which epoch it is: new blends every epoch."""
        for ds, _ in getattr(self, "_train_parts", []):
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(epoch)

    def eval_info(self, name: str | None = None) -> dict:
        """Video names and method names of a test set (or the val set), for per-method results, and which of
        its items are still images (``image_videos``, per video code: reported at the image level)."""
        ds = self.val_ds if name is None else self.test_ds[name]
        return {"video_names": ds.arrays.video_names, "method_names": ds.arrays.method_names,
                "image_videos": ds.arrays.video_is_image}
