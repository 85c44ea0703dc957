"""``dfd-embed`` and ``data.features=cached``: a frozen backbone's pooled features of every crop, computed once
into a feature store (:mod:`dfd.store.features`) beside the crop cache, through Lightning's predict loop.

Work is cut into fixed chunks of rows (``embed.chunk_rows``) per split and view, whatever the number of
processes: every finished chunk is written atomically (a killed run resumes from the chunks it finished), and
under DDP rank r takes the r-th, (r + W)-th, ... pending chunk, so the batches, and therefore the bytes, are
those of one process. Rank 0 assembles the arrays and writes ``features.json`` last.

Features come from the eval transform (resize + normalise). ``embed.views=N`` adds N augmented views of every
training crop, drawn with the run's training augmentation from a seed per (run seed, view, row): the same
views on any number of ranks, workers or resumes.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset, Sampler

from dfd.data.datasets import ManifestArrays, read_rgb
from dfd.data.transforms import Pipeline, Spec
from dfd.errors import ConfigError
from dfd.models.base import Detector
from dfd.sources.base import DatasetSource
from dfd.store.features import (
    TRANSFORM,
    Chunk,
    FeatureStore,
    StoreKey,
    Unit,
    ViewsKey,
    plan_chunks,
    sha256_file,
)
from dfd.workers import die_with_parent

log = logging.getLogger(__name__)

SPLIT_ORDER = ("train", "val", "test")


# ----------------------------------------------------------------------------------------------- keys and places
def store_name(model_cfg: Mapping) -> str:
    """The store's folder name: the registered model name (``clip_vit_l14``), with the architecture appended
    when it is not that builder's default (``timm-test_vit``, ``convnextv2-convnextv2_base``)."""
    import inspect

    from dfd.models.factory import _REGISTRY

    name = str(model_cfg.get("name") or "model")
    arch = model_cfg.get("arch")
    default = None
    if name in _REGISTRY:
        param = inspect.signature(_REGISTRY[name]).parameters.get("arch")
        default = param.default if param is not None else None
    if arch and arch != default:
        name = f"{name}-{arch}"
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def store_folder(source: DatasetSource, name: str, root: str | Path | None = None) -> Path:
    """Where a dataset's store of backbone ``name`` lives: ``<the manifest's folder>/features/<name>`` (beside the
    cache), or ``<root>/<dataset name>/<name>`` with ``embed.dir``."""
    if root:
        return Path(root) / source.name / name
    return Path(source.manifest_path).parent / "features" / name


def backbone_sha256(model: Detector) -> str:
    """sha256 over every tensor of the model but the classifier's (names, dtypes, shapes and bytes, sorted)."""
    skip = set(model.classifier_names())
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name in skip:
            continue
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def preprocessing(model: Detector) -> dict:
    """The preprocessing a feature depends on: the model's input spec and the transform."""
    spec = model.input_spec.to_dict()
    return {"size": int(spec["size"]), "mean": [float(v) for v in spec["mean"]],
            "std": [float(v) for v in spec["std"]], "interpolation": spec["interpolation"], "transform": TRANSFORM}


def store_key(source: DatasetSource, model: Detector, weights_sha256: str | None = None) -> StoreKey:
    """The key a store of ``source`` computed by ``model`` must carry."""
    record = source.cache_record() or {}
    return StoreKey(contract_id=record.get("contract_id"), manifest_sha256=sha256_file(source.prepare()),
                    weights_sha256=weights_sha256 or backbone_sha256(model), preprocessing=preprocessing(model))


def check_embeddable(model: Detector) -> None:
    """One line when the model has no pooled feature to store (clip models, ADDNet)."""
    if model.input_spec.clip_len or not model.has_features():
        raise ConfigError(f"{type(model).__name__} does not expose pooled frame features (forward_features): "
                          "dfd-embed and data.features=cached need a frame backbone (any timm model)")


# ----------------------------------------------------------------------------------------------- data
@dataclass
class Request:
    """One store to build or complete: which source, which units (splits and views), how."""

    source: DatasetSource
    store: FeatureStore
    key: StoreKey
    units: list[Unit]
    views: ViewsKey | None
    info: dict = field(default_factory=dict)


class _ChunkItems(Dataset):
    """Item j = one row of one chunk (chunks of every request, in plan order), as the eval transform (view 0)
    or a seeded augmented view sees it."""

    def __init__(self, chunks: Sequence[tuple[ManifestArrays, Chunk]], spec: Spec, augment: Sequence,
                 seed: int) -> None:
        self.chunks, self.seed = list(chunks), int(seed)
        self.eval_pipe = Pipeline(spec)
        self.view_pipe = Pipeline(spec, list(augment)) if any(c.unit.view for _, c in self.chunks) else None
        sizes = np.array([c.stop - c.start for _, c in self.chunks], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, j: int) -> dict:
        k = int(np.searchsorted(self.offsets, j, side="right") - 1)
        arrays, chunk = self.chunks[k]
        pos = int(j - self.offsets[k])
        row = chunk.start + pos
        image = read_rgb(arrays.path(row))
        if chunk.unit.view == 0 or self.view_pipe is None:
            x, _ = self.eval_pipe(image)
        else:
            split = SPLIT_ORDER.index(chunk.unit.split) if chunk.unit.split in SPLIT_ORDER else len(SPLIT_ORDER)
            self.view_pipe.reseed(int(np.random.SeedSequence([self.seed, chunk.unit.view, split, row])
                                      .generate_state(1)[0]))
            x, _ = self.view_pipe(image)
        return {"image": x, "chunk": k, "pos": pos}


class _ChunkBatches(Sampler[list[int]]):
    """Batches that never cross a chunk: a chunk's rows are batched alike on any rank, in any resumed run."""

    def __init__(self, offsets: np.ndarray, mine: Sequence[int], batch_size: int) -> None:
        self.offsets, self.mine, self.batch_size = offsets, list(mine), int(batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for k in self.mine:
            lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
            for s in range(lo, hi, self.batch_size):
                yield list(range(s, min(s + self.batch_size, hi)))

    def __len__(self) -> int:
        return sum(-(-(int(self.offsets[k + 1] - self.offsets[k])) // self.batch_size) for k in self.mine)


class _Embedder(pl.LightningModule):
    """The predict loop's module: forward_features of the frozen model, as float16 on the CPU."""

    def __init__(self, model: Detector, items: _ChunkItems, pending: list[int], batch_size: int,
                 num_workers: int) -> None:
        super().__init__()
        self.model = model
        self.items, self.pending = items, list(pending)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)

    def setup(self, stage: str) -> None:
        # Every rank works from rank 0's list of pending chunks (another rank may already be writing).
        self.pending = list(self.trainer.strategy.broadcast(self.pending, src=0))

    def predict_dataloader(self) -> DataLoader:
        rank, world = int(self.trainer.global_rank), max(int(self.trainer.world_size), 1)
        mine = self.pending[rank::world]
        # A private generator: the embedding pass leaves the run's global random state as it found it, so a
        # training run that builds its store first shuffles exactly like one that found it built.
        # Its workers die with a killed parent (dfd.workers), as every training loader's.
        return DataLoader(self.items, batch_sampler=_ChunkBatches(self.items.offsets, mine, self.batch_size),
                          num_workers=self.num_workers, persistent_workers=False,
                          pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(0),
                          worker_init_fn=die_with_parent)

    def predict_step(self, batch: Mapping, batch_idx: int) -> torch.Tensor:
        return self.model.forward_features(batch["image"]).float().to(torch.float16).cpu()


class _ChunkWriter(BasePredictionWriter):
    """Collects a chunk's batches and writes the chunk atomically once its last row arrives."""

    def __init__(self, store_of: Sequence[FeatureStore], chunks: Sequence[Chunk]) -> None:
        super().__init__(write_interval="batch")
        self.store_of, self.chunks = list(store_of), list(chunks)
        self.buffers: dict[int, tuple[np.ndarray, int]] = {}
        self.written = 0

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        k = int(batch["chunk"][0])
        chunk = self.chunks[k]
        feats = prediction.numpy()
        buf, filled = self.buffers.get(k) or (np.empty((chunk.stop - chunk.start, feats.shape[1]), np.float16), 0)
        buf[batch["pos"].cpu().numpy()] = feats
        filled += len(feats)
        if filled == len(buf):
            self.store_of[k].write_chunk(chunk, buf)
            self.buffers.pop(k, None)
            self.written += 1
        else:
            self.buffers[k] = (buf, filled)


# ----------------------------------------------------------------------------------------------- building
def _feature_dim(model: Detector) -> int:
    s = int(model.input_spec.size)
    was = model.training
    model.eval()
    with torch.no_grad():
        dim = int(model.forward_features(torch.zeros(1, 3, s, s, device=next(model.parameters()).device)).shape[-1])
    model.train(was)
    return dim


def build(requests: Sequence[Request], model: Detector, trainer_cfg: DictConfig | Mapping, *, augment: Sequence = (),
          seed: int = 0, batch_size: int = 64, num_workers: int = 2, chunk_rows: int = 2048, progress: bool = True,
          single_device: bool = False) -> dict:
    """Compute the missing units of every request in one predict run, then assemble each store.

    Returns ``{"chunks", "reused", "rows"}`` (reused: chunks a killed run had finished). ``single_device``: one
    process whatever ``trainer_cfg`` says (dfd-train builds a missing store before its own, possibly
    distributed, fit); dfd-embed spreads the work over every device of ``trainer_cfg``.
    """
    check_embeddable(model)
    plan: list[tuple[int, ManifestArrays, Chunk]] = []
    pending: list[int] = []
    for i, req in enumerate(requests):
        arrays = {u.split: ManifestArrays(req.source.prepare(), splits=u.split, roots=req.source.roots()) for u in req.units}
        finished = req.store.begin(req.key, chunk_rows, req.views)
        for c in plan_chunks(req.units, chunk_rows):
            if c.name not in finished:
                pending.append(len(plan))
            plan.append((i, arrays[c.unit.split], c))
    summary = {"chunks": len(plan), "reused": len(plan) - len(pending), "rows": sum(c.stop - c.start for *_, c in plan)}
    trainer = None
    if pending:
        items = _ChunkItems([(a, c) for _, a, c in plan], Spec.of(model.input_spec), augment, seed)
        module = _Embedder(model, items, pending, batch_size, num_workers)
        writer = _ChunkWriter([requests[i].store for i, _, _ in plan], [c for *_, c in plan])
        overrides: dict[str, Any] = {"logger": False, "callbacks": [writer], "enable_checkpointing": False,
                                     "use_distributed_sampler": False, "enable_progress_bar": bool(progress),
                                     "enable_model_summary": False}
        if single_device:
            overrides.update(devices=1, num_nodes=1, strategy="auto")
        node = (OmegaConf.to_container(trainer_cfg, resolve=True) if isinstance(trainer_cfg, DictConfig)
                else dict(trainer_cfg))
        node.pop("sync_batchnorm", None)  # a training setting (and SyncBatchNorm needs a GPU)
        trainer = instantiate(node, **overrides)
        with warnings.catch_warnings():
            # Lightning cannot check a custom batch sampler's drop_last; _ChunkBatches returns every row.
            warnings.filterwarnings("ignore", message=".*custom batch sampler.*")
            trainer.predict(module, return_predictions=False)
        trainer.strategy.barrier()
    if trainer is None or trainer.is_global_zero:
        dim = None
        for i, req in enumerate(requests):
            mine = [c for j, _, c in plan if j == i]
            if mine:
                d = int(np.load(req.store.parts / mine[0].name, mmap_mode="r").shape[1])
            else:
                dim = dim if dim is not None else _feature_dim(model)
                d = dim
            req.store.finish(req.key, mine, d, req.views, req.info, units=req.units)
    if trainer is not None:
        trainer.strategy.barrier()
    return summary


# ----------------------------------------------------------------------------------------------- requests
def request_for(source: DatasetSource, model: Detector, name: str, splits: Sequence[str], views: ViewsKey | None,
                *, rebuild: bool, rebuild_cmd: str, root: str | Path | None = None, weights_sha256: str | None = None,
                info: Mapping | None = None) -> tuple[FeatureStore, Request | None]:
    """The store of ``source`` for ``model`` and what it lacks (None: nothing, it is usable as it is).

    A store computed from another key (weights, contract, manifest, preprocessing) or with other augmented views
    is refused in one line naming ``rebuild_cmd``, unless ``rebuild`` (``embed.rebuild=true``) starts it anew.
    """
    store = FeatureStore(store_folder(source, name, root))
    key = store_key(source, model, weights_sha256)
    record = store.record()
    views = views if views is not None and views.n > 0 else None
    stale = record is not None and bool(key.differences(record.get("key")))
    have_views = (record or {}).get("views") or None
    other_views = (views is not None and have_views is not None
                   and any(have_views.get(k) != v for k, v in views.to_dict().items()))
    if (stale or other_views) and not rebuild:
        store.check(key, splits, views, rebuild_cmd)
    if stale or other_views:
        log.warning("rebuilding the feature store %s (embed.rebuild=true)", store.folder)
        store.begin(key, 1, views, overwrite=True)
        record = None
    have = set((record or {}).get("splits") or {})
    units = []
    for split in splits:
        want_views = views is not None and split == "train" and (have_views is None or other_views or record is None)
        if split in have and not want_views:
            continue
        n = len(ManifestArrays(source.prepare(), splits=split))
        if split not in have:
            units.append(Unit(split, 0, n))
        if want_views:
            units += [Unit(split, v, n) for v in range(1, views.n + 1)]
    if not units:
        return store, None
    if views is None and have_views is not None:  # a store that holds views keeps them when splits are added
        views = ViewsKey(int(have_views["n"]), int(have_views["seed"]), list(have_views.get("augment") or []))
    full = {"backbone": name, "dataset": source.name, "manifest": str(source.manifest_path), **dict(info or {})}
    return store, Request(source, store, key, units, views, full)


def views_key(cfg: DictConfig) -> ViewsKey | None:
    """``embed.views=N``: N augmented views drawn with the run's ``augment`` and ``seed``."""
    n = int((cfg.get("embed") or {}).get("views", 0) or 0)
    if n <= 0:
        return None
    augment = OmegaConf.to_container(cfg.augment.get("train") or [], resolve=True) if cfg.get("augment") else []
    return ViewsKey(n, int(cfg.seed), list(augment))


def rebuild_command(command: str) -> str:
    """This command as typed, plus ``embed.rebuild=true``."""
    from dfd.engine import provenance

    args = [a for a in provenance.task_overrides() if not a.startswith("embed.rebuild=")]
    return " ".join([command, *args, "embed.rebuild=true"])


def _augment(cfg: DictConfig) -> list:
    from dfd.engine.build import build_augment

    return build_augment(cfg)


def ensure_stores(cfg: DictConfig, model: Detector, needs: Sequence[tuple[DatasetSource, Sequence[str], bool]],
                  command: str = "dfd-train", progress: bool = True) -> tuple[dict[str, FeatureStore], list[str]]:
    """``data.features=cached``: every store a training run reads, built (one process) where absent or missing
    splits, refused in one line where stale. ``needs``: (source, splits, with augmented views).

    Returns the stores by :func:`dfd.data.datamodule.feature_key` and the run's notes.
    """
    from dfd.data.datamodule import feature_key

    check_embeddable(model)
    embed_cfg = cfg.get("embed") or {}
    name = store_name(cfg.model)
    sha = backbone_sha256(model)
    views = views_key(cfg)
    stores: dict[str, FeatureStore] = {}
    requests: list[Request] = []
    merged: dict[str, tuple[DatasetSource, list[str], bool]] = {}
    for src, splits, with_views in needs:
        key = feature_key(src)
        old = merged.get(key)
        merged[key] = (src, sorted({*(old[1] if old else []), *splits}, key=_split_rank), bool(with_views or (old and old[2])))
    for key, (src, splits, with_views) in merged.items():
        store, req = request_for(src, model, name, splits, views if with_views else None,
                                 rebuild=bool(embed_cfg.get("rebuild", False)), rebuild_cmd=rebuild_command(command),
                                 root=embed_cfg.get("dir"), weights_sha256=sha,
                                 info={"weights": model.weights_source})
        stores[key] = store
        if req is not None:
            requests.append(req)
    notes: list[str] = []
    if requests:
        log.info("data.features=cached: computing %s", ", ".join(f"{r.store.folder} ({', '.join(sorted({u.split for u in r.units}))})"
                                                               for r in requests))
        summary = build(requests, model, cfg.trainer, augment=_augment(cfg), seed=int(cfg.seed),
                        batch_size=int(embed_cfg.get("batch_size", 64)), num_workers=int(cfg.data.num_workers),
                        chunk_rows=int(embed_cfg.get("chunk_rows", 2048)), progress=progress, single_device=True)
        notes.append(f"data.features=cached: feature stores built for this run ({summary['rows']} crop features, "
                     f"{summary['reused']} of {summary['chunks']} chunks from an earlier, interrupted build)")
    if cfg.get("augment") and (cfg.augment.get("train") or []) and views is None:
        notes.append("data.features=cached trains on the eval transform's stored features: augment.train is not "
                     "applied (embed.views=N stores N augmented views per training crop to train on)")
    return stores, notes


def _split_rank(split: str) -> int:
    return SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER)


def embed(cfg: DictConfig) -> dict:
    """``dfd-embed``: the store of ``dataset`` for ``model`` (``embed.splits``, ``embed.views``), across every
    device of ``trainer``; returns ``{"store": folder, "record": features.json, "chunks", "reused", "rows"}``."""
    from dfd.engine.hardware import set_threads
    from dfd.engine.quiet import quiet_dependencies

    quiet_dependencies()
    set_threads(cfg)
    pl.seed_everything(int(cfg.seed), workers=True)  # the same random init as a dfd-train run of this seed
    source: DatasetSource = instantiate(cfg.dataset)
    source.prepare()
    model: Detector = instantiate(OmegaConf.to_container(cfg.model, resolve=True))
    check_embeddable(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    e = cfg.embed
    splits = sorted({str(s) for s in e.splits}, key=_split_rank)
    bad = [s for s in splits if s not in SPLIT_ORDER]
    if bad:
        raise ConfigError(f"embed.splits={list(e.splits)}: {bad} not a split; choose among {', '.join(SPLIT_ORDER)}")
    views = views_key(cfg) if "train" in splits else None
    store, req = request_for(source, model, store_name(cfg.model), splits, views, rebuild=bool(e.rebuild),
                             rebuild_cmd=rebuild_command("dfd-embed"), root=e.get("dir"),
                             info={"weights": model.weights_source})
    summary = {"chunks": 0, "reused": 0, "rows": 0}
    if req is not None:
        summary = build([req], model, cfg.trainer, augment=_augment(cfg), seed=int(cfg.seed),
                        batch_size=int(e.batch_size), num_workers=int(e.num_workers), chunk_rows=int(e.chunk_rows),
                        progress=bool(cfg.get("progress", True)))
    dist = torch.distributed
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    return {"store": store.folder, "record": store.record(), "rank": rank, **summary}
