"""``dfd-train``: fit on the training set, select on its validation split, test on every test set, record.

Kept out of the entry point so tests and notebooks can call ``train(cfg)`` directly.
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from dfd.data.datamodule import name_test_sets
from dfd.engine import provenance
from dfd.engine.build import (
    build_datamodule,
    build_sources,
    build_trainer,
    describe_run,
    run_dir_of,
    save_config,
)
from dfd.engine.checks import check_crop_contracts, check_sbi_keys, validation_class_note
from dfd.engine.evaluate import test_model
from dfd.engine.gallery import TABLE_ROWS, crop_manifests, gallery_rows
from dfd.engine.hardware import set_threads
from dfd.engine.module import SELECT_KEY, DetectorModule
from dfd.engine.quiet import quiet_dependencies
from dfd.engine.results import make_results
from dfd.engine.summary import finish_run, selection_record, video_score_record
from dfd.engine.video_score import check_video_score
from dfd.faces.contract import contract_of

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- run set-up


# ----------------------------------------------------------------------------------------------- helpers


# ----------------------------------------------------------------------------------------------- train


def train(cfg: DictConfig) -> dict:
    """Fit on the training set, select on its val split, test on every test set; write results.json."""
    quiet_dependencies()
    check_sbi_keys(cfg)
    set_threads(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = run_dir_of(cfg)
    resolved = save_config(cfg, run_dir)
    skipped: list[str] = []
    train_src, tests, mix = build_sources(cfg, skipped)
    video_score = check_video_score(cfg.data.get("video_score"))
    if cfg.data.get("include_train_test", True):
        name_test_sets(train_src, tests)  # a test-set name clash fails now, in one line
    # Shards at an explicit root (object storage) need no local crop cache: they carry their own manifest.
    shards_only = cfg.data.get("store") == "shards" and bool((cfg.data.get("shards") or {}).get("root"))
    for src in [train_src, *tests.values(), *(s for s, _ in mix.values())]:
        if not shards_only:
            src.prepare()  # fail now, with the fix, rather than after building the model and loggers
        else:  # open each store now (object storage: a missing backend or bucket fails in one line, before any work)
            from dfd.store.packed.format import ShardSettings
            from dfd.store.packed.reader import open_store

            settings = ShardSettings.from_mapping(OmegaConf.to_container(cfg.data.shards, resolve=True))
            open_store(settings.root_for(src.name, src.manifest_path), settings.cache_dir)
    monitor = (cfg.get("selection") or {}).get("monitor") or SELECT_KEY
    notes = [] if shards_only else [n for n in [validation_class_note(train_src, monitor)] if n]
    for note in notes:
        log.warning(note)
    # The training set's crop contract is the run's: mixed-in and test sets must be cropped the same way.
    contract = train_src.crop_contract()  # how the training crops were made: export hands it to dfd-predict
    policy = cfg.data.get("crop_mismatch", "refuse")
    against = f"the training set '{train_src.name}'"
    notes += check_crop_contracts(contract, {n: s for n, (s, _) in mix.items()}, "training mix set", against, policy)
    notes += check_crop_contracts(contract, tests, "test set", against, policy)
    notes = [*skipped, *notes]

    run_id = None
    if cfg.get("ckpt_path"):
        ckpt = torch.load(cfg.ckpt_path, map_location="cpu", weights_only=True)
        run_id = ckpt.get("dfd", {}).get("run_id")
        resumed = contract_of((ckpt.get("hyper_parameters", {}).get("meta") or {}).get("crop"))
        if resumed is not None and contract is not None and resumed.geometry_diff(contract):
            notes += check_crop_contracts(resumed, {train_src.name: train_src}, "the training set",
                                          f"the checkpoint being resumed ({cfg.ckpt_path})", policy)
    overrides = provenance.task_overrides()
    sweep = provenance.wandb_sweep()
    if run_id is None and sweep and sweep.get("run_id"):
        run_id = sweep["run_id"]  # the W&B agent waits for the run it named
    run = {**describe_run(cfg, train_src.name), "overrides": provenance.config_overrides(cfg, overrides, sweep)}
    meta = {"run_id": run_id, "dataset": resolved.get("dataset"), "run": run,
            "crop": contract.to_dict() if contract is not None else None, "video_score": video_score}
    module = DetectorModule(
        model=resolved["model"],
        finetune=resolved["finetune"],
        optim=resolved["optim"],
        channels_last=cfg.get("channels_last", False),
        compile=cfg.get("compile", False),
        meta=meta,
        loss=resolved.get("loss"),
    )
    module.hparams["meta"]["weights"] = module.model.weights_source  # initial weights' provenance, in the ckpt
    dm = build_datamodule(cfg, module.model.input_spec, train_src, tests, mix)
    name = f"{run['dataset']}-{run['model']}-{run['finetune']}-s{run['seed']}"
    trainer = build_trainer(cfg, run_dir, module.run_id, name)
    for lg in trainer.loggers:
        lg.log_hyperparams({**resolved, "params": module.param_counts, "train": run})

    trainer.fit(module, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
    chosen = selection_record(module, trainer, f"{train_src.name} val")
    best = chosen["checkpoint"]
    if best:  # results.json reports the validation metrics of the checkpoint that was selected
        trainer.validate(module, datamodule=dm, ckpt_path=best, verbose=False)
    tables: list = []
    reports = test_model(trainer, module, dm, best, tables=tables)
    results = make_results(
        "train", run_dir, run, reports, val=module.val_report, checkpoint=best, in_domain=[train_src.name, *mix],
        params=module.param_counts, global_step=int(trainer.global_step), selection=chosen,
        invocation=provenance.invocation("dfd-train", overrides, sweep), config=resolved, notes=notes,
        weights=module.model.weights_source, video_score=video_score_record(module.video_score),
    )
    results["crop_manifests"] = crop_manifests(dm)
    gallery = gallery_rows(dm, tables, TABLE_ROWS) if trainer.is_global_zero else []
    finish_run(trainer, results, run_dir, f"test metrics ({name})", tables, gallery)
    return results


# ----------------------------------------------------------------------------------------------- eval


