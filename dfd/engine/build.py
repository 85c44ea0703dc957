"""A run's objects from its config: the dataset sources, the DataModule, the Trainer with its loggers and
callbacks, the run directory and the run's description (dataset × model × fine-tuning × seed).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dfd.compat import upgrade_targets
from dfd.data.datamodule import DeepfakeDataModule
from dfd.engine.bad_crops import BadCropCounter
from dfd.errors import DatasetError
from dfd.sources.base import DatasetSource

log = logging.getLogger(__name__)
def _choices() -> dict[str, str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return dict(HydraConfig.get().runtime.choices)
    except Exception:  # composed without a Hydra run (tests, notebooks)
        return {}


def run_dir_of(cfg: DictConfig) -> Path:
    """The run directory (Hydra's output dir, or ``paths.run_dir`` when composed by hand)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        return Path(cfg.paths.run_dir)


def describe_run(cfg: DictConfig, dataset_name: str, mix: list[str] | None = None) -> dict:
    """The run's training configuration as reports group it: dataset × model × fine-tuning, seed.

    ``mix``: the names of the mixed-in training sets actually used (optional ones may be absent); default: every
    ``train_mix`` entry of the config."""
    ch = _choices()
    model = ch.get("model") or cfg.model.get("name", "model")
    if model == "timm" or (not ch and cfg.model.get("name") == "timm"):
        model = f"timm/{cfg.model.arch}"
    ft = ch.get("finetune") or str(cfg.finetune._target_).rsplit(".", 1)[-1].lower()
    extra = {k: cfg.finetune[k] for k in ("n", "rank", "decay", "k") if k in cfg.finetune}
    if extra:
        ft += "(" + ",".join(f"{k}={v}" for k, v in extra.items()) + ")"
    fakes = cfg.get("data", {}).get("fakes", "real")
    # A training mix is named by all its datasets (ffpp+wilddeepfake): it is a different training set.
    if mix is None:
        mix = [str(node.get("name", key)) for key, node in (cfg.get("train_mix") or {}).items()]
    return {
        "dataset": "+".join([dataset_name, *mix]) + ("" if fakes == "real" else f"+{fakes}"),
        "model": model,
        "finetune": ft,
        "seed": int(cfg.seed),
        "experiment": ch.get("experiment") or cfg.get("experiment_name"),
    }


def build_dataset(dataset_cfg: Any) -> DatasetSource:
    """A dataset source from a stored dataset config (a checkpoint's ``meta.dataset``), written by this dfd or an
    older one (module paths moved since are renamed: :mod:`dfd.compat`)."""
    if isinstance(dataset_cfg, DictConfig):
        dataset_cfg = OmegaConf.to_container(dataset_cfg, resolve=True)
    return instantiate(upgrade_targets(dict(dataset_cfg)))


def build_sources(cfg: DictConfig, skipped: list[str] | None = None
                  ) -> tuple[DatasetSource | None, dict[str, DatasetSource], dict]:
    """(training source, test sources by name, extra training sources with weights).

    A test set is named by its ``test_sets`` key, or by ``test_sets.<key>.display_name`` when given, never by
    the dataset it reads: ``test_sets.ffpp_c40`` (FF++ at c40) and the in-domain ``ffpp`` (c23) are two sets.

    A test set marked ``optional: true`` (or every test set with ``data.skip_missing_test_sets=true``) whose data
    and crop cache are both absent is left out with one logged line naming it and how to add it; the lines are
    appended to ``skipped`` (results.json ``notes``). A present dataset that is not extracted is still an error.
    A ``train_mix`` entry marked ``optional: true`` is left out the same way (train on the mix you have);
    ``validate: true`` is read by :func:`build_datamodule`.
    """
    train = instantiate(cfg.dataset) if cfg.get("dataset") else None
    skip_all = bool((cfg.get("data") or {}).get("skip_missing_test_sets", False))
    tests: dict[str, DatasetSource] = {}
    for key, node in (cfg.get("test_sets") or {}).items():
        node = OmegaConf.to_container(node, resolve=True)
        name = str(node.pop("display_name", None) or key)
        optional = bool(node.pop("optional", False)) or skip_all
        if name in tests:
            raise DatasetError(f"test_sets.{key}: the test-set name '{name}' is used twice; give each test set its "
                               f"own name (+test_sets.<key>.display_name=...)")
        src = instantiate(node)
        absent = src.missing() if optional else None
        if absent:
            note = (f"test set '{name}' skipped: {absent}; to add it, put the dataset there in its official layout "
                    f"(or set test_sets.{key}.root=<folder>) and run dfd-index + dfd-extract for it")
            log.warning(note)
            if skipped is not None:
                skipped.append(note)
            continue
        tests[name] = src
    mix = {}
    for key, node in (cfg.get("train_mix") or {}).items():
        node = OmegaConf.to_container(node, resolve=True)
        weight = float(node.pop("weight", 1.0))
        optional = bool(node.pop("optional", False))
        node.pop("validate", None)
        src = instantiate(node)
        absent = src.missing() if optional else None
        if absent:
            note = (f"training set '{src.name or key}' (train_mix.{key}) skipped: {absent}; to add it, put the dataset "
                    f"there in its official layout (or set train_mix.{key}.root=<folder>) and run dfd-index + "
                    "dfd-extract for it")
            log.warning(note)
            if skipped is not None:
                skipped.append(note)
            continue
        mix[src.name or key] = (src, weight)
    return train, tests, mix


def validated_mix(cfg: DictConfig, mix: dict) -> list[str]:
    """Names of the mixed-in training sets whose validation splits join checkpoint selection
    (``train_mix.<key>.validate: true``) and are in the mix (optional ones may be absent)."""
    out = []
    for key, node in (cfg.get("train_mix") or {}).items():
        name = str(node.get("name") or key)
        if node.get("validate", False) and name in mix:
            out.append(name)
    return out


def build_augment(cfg: DictConfig) -> list:
    """The training augmentations of ``augment.train``, instantiated.

    ``_convert_="all"``: nested lists (``OneOf``'s transforms) become plain lists. A ListConfig of objects
    deep-copies by reference, so the clip pipeline's ReplayCompose would mark the frame pipeline's transforms
    too, and ``augment=strong`` failed in the loader with ``KeyError: 'replay'``.
    """
    if not cfg.get("augment"):
        return []
    return [instantiate(t, _convert_="all") for t in (cfg.augment.get("train") or [])]


def build_datamodule(cfg: DictConfig, spec: object, train: DatasetSource | None, tests: dict, mix: dict,
                     eval_extra: list | None = None, features: dict | None = None) -> DeepfakeDataModule:
    """The DataModule for a config and a model input spec (``features``: stores for data.features=cached)."""
    d = cfg.data
    augment = build_augment(cfg)
    return DeepfakeDataModule(
        train_source=train,
        spec=spec,
        test_sources=tests,
        augment=augment,
        extra_train=mix,
        train_weight=d.get("train_weight", 1.0),
        batch_size=d.batch_size,
        eval_batch_size=d.get("eval_batch_size"),
        num_workers=d.num_workers,
        fakes=d.get("fakes", "real"),
        sbi=OmegaConf.to_container(d.sbi, resolve=True) if d.get("sbi") is not None else {},
        balance=d.get("balance", False),
        include_train_test=d.get("include_train_test", True),
        seed=cfg.seed,
        eval_extra=eval_extra or [],
        frames_per_video=d.get("frames_per_video"),
        store=d.get("store", "files"),
        shards=OmegaConf.to_container(d.shards, resolve=True) if d.get("shards") is not None else None,
        pairing=d.get("pairing", "none"),
        pairing_subset=d.get("pairing_subset", "all"),
        val_mix=validated_mix(cfg, mix),
        features=features,
        feature_views=int((cfg.get("embed") or {}).get("views", 0) or 0) if features is not None else 0,
        bad_crops=d.get("bad_crops", "skip"),
    )


def build_trainer(cfg: DictConfig, run_dir: Path, run_id: str, run_name: str, job_type: str = "train"
                  ) -> pl.Trainer:
    """Trainer with the configured callbacks and loggers (W&B offline by default)."""
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        if not node or "_target_" not in node:
            continue
        kwargs = {}
        if "Wandb" in node._target_:
            kwargs = {"id": run_id, "name": run_name, "resume": "allow", "job_type": job_type}
            if node.get("offline"):
                # Explicit init argument: Lightning's env-var switch is ignored once wandb's process-wide
                # settings exist (an earlier wandb run in the same process).
                kwargs["mode"] = "offline"
            os.environ.setdefault("WANDB_SILENT", "true")
        logger = instantiate(node, **kwargs)
        # Lightning passes anonymous=None, and wandb warns that the setting is deprecated on every run.
        getattr(logger, "_wandb_init", {}).pop("anonymous", None)
        loggers.append(logger)
    callbacks = []
    for node in (cfg.get("callbacks") or {}).values():
        if not node or "_target_" not in node:
            continue
        if "LearningRateMonitor" in node._target_ and not loggers:
            continue  # it refuses to run without a logger
        callbacks.append(instantiate(node))
    # Unreadable crops: counted per split and label, the run stopped above the cap (dfd.data.bad_crops).
    callbacks.append(BadCropCounter((cfg.get("data") or {}).get("max_bad_fraction", 0.001)))
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir))


def save_config(cfg: DictConfig, run_dir: Path) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
    return resolved
