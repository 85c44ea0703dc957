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
from dfd.engine.checks import check_crop_contracts, check_required_crop, check_sbi_keys, validation_class_note
from dfd.engine.evaluate import test_model
from dfd.engine.gallery import TABLE_ROWS, crop_manifests, gallery_rows
from dfd.engine.hardware import set_threads
from dfd.engine.module import SELECT_KEY, DetectorModule
from dfd.engine.no_face import NoFaceRule
from dfd.engine.quiet import quiet_dependencies
from dfd.engine.results import make_results
from dfd.engine.summary import finish_run, selection_record, video_score_record
from dfd.engine.video_score import check_video_score
from dfd.errors import ConfigError
from dfd.faces.contract import contract_of

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- run set-up


# ----------------------------------------------------------------------------------------------- helpers


def check_features(cfg: DictConfig) -> bool:
    """``data.features``: ``cached`` (train a head on stored features) or ``none``; impossible combinations are
    refused in one line before any work."""
    value = str(cfg.data.get("features", "none") or "none")
    if value not in ("none", "cached"):
        raise ConfigError(f"data.features={value!r} is not valid; choose none (crops) or cached (stored features)")
    head = str(cfg.model.get("head", "linear") or "linear")
    if value == "none":
        if head == "knn":
            raise ConfigError("head=knn votes over stored training features: add finetune=linear_probe "
                              "data.features=cached")
        return False
    if not str(cfg.finetune.get("_target_", "")).endswith(".LinearProbe"):
        raise ConfigError("data.features=cached trains a head on a frozen backbone's stored features: use "
                          "finetune=linear_probe")
    if cfg.get("ckpt_path"):
        raise ConfigError("data.features=cached does not resume from ckpt_path (a head on stored features trains "
                          "in seconds: rerun it)")
    return True


def feature_stores(cfg: DictConfig, module: DetectorModule, train_src, tests: dict, mix: dict
                   ) -> tuple[dict, list[str], dict]:
    """The feature store of every dataset the run reads (built where absent), its notes and its record."""
    from dfd.data.datamodule import feature_key
    from dfd.engine.embed import ensure_stores, store_name

    include = bool(cfg.data.get("include_train_test", True))
    needs = [(train_src, ["train", "val", *(["test"] if include else [])], True)]
    needs += [(src, ["train"], True) for src, _ in mix.values()]
    needs += [(src, ["test"], False) for src in tests.values()]
    stores, notes = ensure_stores(cfg, module.model, needs)
    named = {train_src.name: train_src, **{n: s for n, (s, _) in mix.items()}, **tests}
    record = {"backbone": store_name(cfg.model), "views": int(cfg.embed.get("views", 0) or 0),
              "stores": {n: str(stores[feature_key(s)].folder) for n, s in named.items()}}
    return stores, notes, record


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
    no_face = NoFaceRule.from_config(cfg)
    # The test sets as the run names them (a name clash fails now, in one line).
    named = name_test_sets(train_src if cfg.data.get("include_train_test", True) else None, tests)
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
    if no_face.scores:
        for name, src in named.items():
            no_face.faces(src, name)  # a cache that does not record faces not found: refused before training
    monitor = (cfg.get("selection") or {}).get("monitor") or SELECT_KEY
    notes = [] if shards_only else [n for n in [validation_class_note(train_src, monitor)] if n]
    for note in notes:
        log.warning(note)
    # The training set's crop contract is the run's: mixed-in and test sets must be cropped the same way.
    contract = train_src.crop_contract()  # how the training crops were made: export hands it to dfd-predict
    policy = cfg.data.get("crop_mismatch", "refuse")
    # A preset whose method needs particular crops (GenD, Effort: ArcFace-aligned 256 px) says so; the training
    # data must have been cropped that way (test sets are then held to the training set's contract below).
    who = f"experiment={cfg.experiment_name}" if cfg.get("experiment_name") else "this run"
    notes += check_required_crop(cfg.data.get("require_crop"), {train_src.name: train_src, **{
        n: s for n, (s, _) in mix.items()}}, who, policy, (cfg.get("paths") or {}).get("cache_dir"))
    against = f"the training set '{train_src.name}'"
    notes += check_crop_contracts(contract, {n: s for n, (s, _) in mix.items()}, "training mix set", against, policy)
    notes += check_crop_contracts(contract, tests, "test set", against, policy)
    notes = [*skipped, *notes]
    audit = mix_audit(cfg, train_src, mix, notes)

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
    run = {**describe_run(cfg, train_src.name, list(mix)),
           "overrides": provenance.config_overrides(cfg, overrides, sweep)}
    meta = {"run_id": run_id, "dataset": resolved.get("dataset"), "run": run,
            "crop": contract.to_dict() if contract is not None else None, "video_score": video_score}
    features = check_features(cfg)
    model_cfg = dict(resolved["model"])
    if features:  # the head learns on fp16-stored features: the whole model rounds them alike (TimmDetector)
        model_cfg["feature_dtype"] = "float16"
    module = DetectorModule(
        model=model_cfg,
        finetune=resolved["finetune"],
        optim=resolved["optim"],
        channels_last=cfg.get("channels_last", False),
        compile=cfg.get("compile", False),
        meta=meta,
        loss=resolved.get("loss"),
        features=features,
    )
    module.hparams["meta"]["weights"] = module.model.weights_source  # initial weights' provenance, in the ckpt
    stores, store_record = None, None
    if features:
        stores, store_notes, store_record = feature_stores(cfg, module, train_src, tests, mix)
        notes += store_notes
    dm = build_datamodule(cfg, module.model.input_spec, train_src, tests, mix, features=stores)
    name = f"{run['dataset']}-{run['model']}-{run['finetune']}-s{run['seed']}"
    trainer = build_trainer(cfg, run_dir, module.run_id, name)
    if module.fits_without_gradients:  # head=knn: no optimiser, so no learning rate to monitor
        from pytorch_lightning.callbacks import LearningRateMonitor

        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, LearningRateMonitor)]
    for lg in trainer.loggers:
        lg.log_hyperparams({**resolved, "params": module.param_counts, "train": run})

    trainer.fit(module, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
    chosen = selection_record(module, trainer, " + ".join([train_src.name, *dm.val_mix]) + " val")
    best = chosen["checkpoint"]
    if best:  # results.json reports the validation metrics of the checkpoint that was selected
        trainer.validate(module, datamodule=dm, ckpt_path=best, verbose=False)
    tables: list = []
    reports = test_model(trainer, module, dm, best, tables=tables, no_face=no_face)
    results = make_results(
        "train", run_dir, run, reports, val=module.val_report, checkpoint=best, in_domain=[train_src.name, *mix],
        params=module.param_counts, global_step=int(trainer.global_step), selection=chosen,
        invocation=provenance.invocation("dfd-train", overrides, sweep), config=resolved, notes=notes,
        weights=module.model.weights_source, video_score=video_score_record(module.video_score), run_id=module.run_id,
        **({"features": store_record} if store_record else {}),
        **({"audit": audit} if audit else {}),
    )
    results["crop_manifests"] = crop_manifests(dm)
    gallery = gallery_rows(dm, tables, TABLE_ROWS) if trainer.is_global_zero else []
    finish_run(trainer, results, run_dir, f"test metrics ({name})", tables, gallery)
    if best and trainer.is_global_zero:
        log.info("checkpoint: %s (selected on %s val; dfd-eval and dfd-export take it)", best, train_src.name)
    return results


def mix_audit(cfg: DictConfig, train_src, mix: dict, notes: list[str]) -> dict | None:
    """The shortcut audit of a training mix (``train_mix`` with ``audit.mix``), once, on the first process:
    logged, its warnings appended to ``notes``; results.json's ``audit`` record (None without a mix)."""
    from pytorch_lightning.utilities import rank_zero_only

    from dfd.sources.audit import AuditSettings, audit_mix, mix_lines

    settings = AuditSettings.from_mapping(OmegaConf.to_container(cfg.audit, resolve=True) if cfg.get("audit") else {})
    if not mix or not settings.mix or settings.max_files <= 0 or rank_zero_only.rank != 0:
        return None
    sources = {train_src.name: train_src, **{name: src for name, (src, _) in mix.items()}}
    try:
        result = audit_mix(sources, settings)
    except Exception as e:  # a diagnostic must never cost the run it diagnoses
        line = f"shortcut audit of the training mix failed ({type(e).__name__}: {str(e).strip()[:200]}); training goes on"
        log.warning("%s", line)
        notes.append(line)
        return None
    info, warn = mix_lines(result, settings.warn_auc)
    for line in info:
        log.info("%s", line)
    for line in warn:
        log.warning("%s", line)
    notes += warn
    record = {"warn_auc": settings.warn_auc, "split": "train", "seconds": round(result["seconds"], 3),
              "mix": result["mix"].to_dict() if result["mix"] is not None else None,
              "pairs": result["pairs"], "skipped": result["skipped"]}
    return record


# ----------------------------------------------------------------------------------------------- eval


