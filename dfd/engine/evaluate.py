"""``dfd-eval``: a checkpoint tested on any list of datasets, optionally under perturbations (robustness).
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from dfd.data.datamodule import DeepfakeDataModule, name_test_sets
from dfd.engine import provenance
from dfd.engine.build import (
    build_datamodule,
    build_dataset,
    build_sources,
    build_trainer,
    run_dir_of,
    save_config,
)
from dfd.engine.checks import check_crop_contracts, check_robustness
from dfd.engine.gallery import EXPLAIN_DIR, TABLE_ROWS, crop_manifests, explain_rows, gallery_rows
from dfd.engine.hardware import set_threads
from dfd.engine.module import DetectorModule
from dfd.engine.predictions import video_table
from dfd.engine.quiet import quiet_dependencies
from dfd.engine.results import make_results
from dfd.engine.summary import finish_run, video_score_record
from dfd.errors import ConfigError
from dfd.faces.contract import contract_of


def test_model(trainer: pl.Trainer, module: DetectorModule, dm: DeepfakeDataModule, ckpt_path: str | None,
          suffix: str = "", tables: list | None = None) -> dict:
    """Run the test loop; ``suffix`` keeps logged keys apart (``test/<name>@jpeg50/...``) for perturbed runs.

    ``tables``: when given, the per-video predictions of every test set are appended to it (DataFrames).
    """
    dm.setup("test")
    module.set_test_sets([n + suffix for n in dm.test_names], [dm.eval_info(n)["method_names"] for n in dm.test_names])
    trainer.test(module, datamodule=dm, ckpt_path=ckpt_path, verbose=False)
    if tables is not None:
        for n in dm.test_names:
            ds = dm.test_ds[n]
            frames = None if dm.spec.clip_len else ds.arrays.frame
            tables.append(video_table(n, module.test_predictions[n + suffix], ds.arrays.video_names,
                                      ds.arrays.method_names, frames, module.video_score))
    return {n: module.test_reports[n + suffix] for n in dm.test_names}


def load_module(ckpt_path: str | Path) -> DetectorModule:
    """A trained module from a checkpoint (weights_only: a checkpoint cannot run code)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (pass ckpt_path=<run dir>/checkpoints/<file>.ckpt)")
    hparams = torch.load(path, map_location="cpu", weights_only=True).get("hyper_parameters", {})
    # The checkpoint holds all weights: never look for the backbone's pretrained file again.
    model_cfg = {**hparams.get("model", {}), "pretrained": False, "weights": None}
    return DetectorModule.load_from_checkpoint(str(path), map_location="cpu", weights_only=True, model=model_cfg)


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate a checkpoint on a list of datasets (+ robustness under perturbations); write results.json."""
    from dfd.data.transforms import perturbation

    quiet_dependencies()
    sweep_levels = check_robustness(cfg.get("robustness"))  # a wrong kind or level: one line, before any work
    set_threads(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = run_dir_of(cfg)
    save_config(cfg, run_dir)
    module = load_module(cfg.ckpt_path)
    module.set_video_score(cfg.data.get("video_score"))  # null: the rule the checkpoint was trained with
    meta = dict(module.hparams.get("meta") or {})
    skipped: list[str] = []
    _, tests, _ = build_sources(cfg, skipped)
    train_src = None
    if cfg.data.get("include_train_test", True) and meta.get("dataset"):
        train_src = build_dataset(meta["dataset"])
    if train_src is None and not tests:
        raise ConfigError("dfd-eval: nothing to evaluate; add test sets with +dataset@test_sets.<name>=<dataset>")
    named = name_test_sets(train_src, tests)
    for src in named.values():
        src.prepare()  # a missing or foreign cache fails now, in one line
    # Every test set must be cropped as the model's training crops were (the checkpoint's contract).
    notes = check_crop_contracts(contract_of(meta.get("crop")), named, "test set", "the model's training crops",
                                 cfg.data.get("crop_mismatch", "refuse"))
    spec = module.model.input_spec
    run = dict(meta.get("run") or {})
    trainer = build_trainer(cfg, run_dir, module.run_id + "-eval", f"eval-{run.get('dataset', '')}", "eval")

    def evaluate_once(extra: list | None = None, suffix: str = "", tables: list | None = None) -> tuple:
        dm = build_datamodule(cfg, spec, None, name_test_sets(train_src, tests), {}, eval_extra=extra)
        return test_model(trainer, module, dm, None, suffix, tables), dm

    tables: list = []
    reports, dm = evaluate_once(tables=tables)
    explain = int(cfg.get("explain") or 0)
    gallery = gallery_rows(dm, tables, max(explain, TABLE_ROWS)) if trainer.is_global_zero else []
    explained = explain_rows(module, dm, gallery, run_dir, explain) if explain > 0 and gallery else {}
    robustness: dict = {}
    for kind, level in sweep_levels:
        perturbed, _ = evaluate_once([perturbation(kind, level)], suffix=f"@{kind}{level:g}")
        for name, rep in perturbed.items():
            robustness.setdefault(name, {}).setdefault(kind, []).append(
                {"level": level, "frame": rep["frame"], "video": rep["video"]}
            )
    overrides = provenance.task_overrides()
    results = make_results(
        "eval", run_dir, run, reports, checkpoint=str(cfg.ckpt_path),
        in_domain=train_src.name if train_src else None, robustness=robustness or None, weights=meta.get("weights"),
        invocation=provenance.invocation("dfd-eval", overrides, provenance.wandb_sweep()), notes=[*skipped, *notes],
        video_score=video_score_record(module.video_score),
    )
    results["crop_manifests"] = crop_manifests(dm)
    if explain > 0:
        results["explain"] = {"dir": EXPLAIN_DIR, "n": explain, "method": "grad-cam (dfd.models.explain)",
                              "videos": explained}
    finish_run(trainer, results, run_dir, f"evaluation of {cfg.ckpt_path}", tables, gallery)
    return results
