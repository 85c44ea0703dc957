"""``dfd-eval``: a checkpoint tested on any list of datasets, optionally under perturbations (robustness).

``robustness.at=crop`` degrades the stored face crops before the model's resize; ``robustness.at=frame``
degrades the test sets' source frames before face detection and re-extracts them with dfd-extract's code
(:mod:`dfd.extract.distorted`, a crop cache per contract and distortion, reused by reruns).
"""

from __future__ import annotations

import uuid
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
from dfd.engine.checks import check_crop_contracts, robustness_plan
from dfd.engine.gallery import EXPLAIN_DIR, TABLE_ROWS, crop_manifests, explain_rows, gallery_rows
from dfd.engine.hardware import set_threads
from dfd.engine.metrics import ITEM_WORDS, LEVELS, headline
from dfd.engine.module import DetectorModule
from dfd.engine.no_face import NoFaceRule
from dfd.engine.predictions import no_face_table, video_table
from dfd.engine.quiet import quiet_dependencies
from dfd.engine.results import make_results
from dfd.engine.summary import finish_run, video_score_record
from dfd.errors import ConfigError
from dfd.faces.contract import contract_of
from dfd.store.schema import method_types


def test_model(trainer: pl.Trainer, module: DetectorModule, dm: DeepfakeDataModule, ckpt_path: str | None,
               suffix: str = "", tables: list | None = None, no_face: NoFaceRule | None = None) -> dict:
    """Run the test loop; ``suffix`` keeps logged keys apart (``test/<name>@jpeg50/...``) for perturbed runs.

    ``tables``: when given, the per-video predictions of every test set are appended to it (DataFrames).
    ``no_face``: the rule for videos and frames without a face (``eval.no_face``; default: drop); each report
    records it with the counts (``no_face``).
    """
    rule = no_face or NoFaceRule()
    dm.setup("test")
    names = dm.test_names
    srcs = [dm.test_sources[n] for n in names]
    infos = [dm.eval_info(n) for n in names]
    found = [rule.faces(src, n) for n, src in zip(names, srcs, strict=True)]
    kinds = [method_types(src.manifest_path, "test") if src.manifest_path.is_file() else {} for src in srcs]
    module.set_test_sets([n + suffix for n in names], [i["method_names"] for i in infos], kinds,
                         [rule.unscored(f, frames=not dm.spec.clip_len) for f in found],
                         [i.get("image_videos") for i in infos])
    trainer.test(module, datamodule=dm, ckpt_path=ckpt_path, verbose=False)
    if tables is not None:
        for n, f in zip(names, found, strict=True):
            ds = dm.test_ds[n]
            frames = None if dm.spec.clip_len else ds.arrays.frame
            tables.append(video_table(n, module.test_predictions[n + suffix], ds.arrays.video_names,
                                      ds.arrays.method_names, frames, module.video_score,
                                      ds.arrays.video_is_image))
            if rule.scores and f is not None and f.videos:
                tables.append(no_face_table(n, f.videos, rule.score))
    reports = {n: module.test_reports[n + suffix] for n in names}
    for n, f in zip(names, found, strict=True):
        reports[n]["no_face"] = rule.record(f)
    return reports


def load_module(ckpt_path: str | Path) -> DetectorModule:
    """A trained module from a checkpoint (weights_only: a checkpoint cannot run code)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (pass ckpt_path=<run dir>/checkpoints/<file>.ckpt)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    hparams = ckpt.get("hyper_parameters", {})
    # The checkpoint holds all weights: never look for the backbone's pretrained file again.
    model_cfg = {**hparams.get("model", {}), "pretrained": False, "weights": None}
    module = DetectorModule.load_from_checkpoint(str(path), map_location="cpu", weights_only=True, model=model_cfg)
    # The id of the training run that wrote the checkpoint (results.json `run_id`: dfd-report attaches an
    # evaluation to its training run by it).
    module.run_id = (ckpt.get("dfd") or {}).get("run_id") or module.run_id
    return module


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate a checkpoint on a list of datasets (+ robustness under perturbations); write results.json."""
    from dfd.data.transforms import perturbation

    quiet_dependencies()
    plan = robustness_plan(cfg.get("robustness"))  # a wrong kind, level or setting: one line, before any work
    no_face = NoFaceRule.from_config(cfg)
    if plan.at == "frame" and plan.pairs and "ddp" in str((cfg.get("trainer") or {}).get("strategy") or ""):
        # Every DDP rank runs this function: each would extract the same distorted caches at once.
        raise ConfigError("robustness.at=frame re-extracts the test sets in this process; run it without DDP "
                          "(one device), or use robustness.at=crop")
    module = load_module(cfg.ckpt_path)  # a missing checkpoint too
    set_threads(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = run_dir_of(cfg)
    save_config(cfg, run_dir)
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
    for name, src in named.items():
        src.prepare()  # a missing or foreign cache fails now, in one line
        no_face.faces(src, name)  # eval.no_face=score on a cache that does not record faces not found: now
    # Every test set must be cropped as the model's training crops were (the checkpoint's contract).
    trained = contract_of(meta.get("crop"))
    notes = check_crop_contracts(trained, named, "test set", "the model's training crops",
                                 cfg.data.get("crop_mismatch", "refuse"))
    if plan.at == "frame" and plan.pairs:
        from dfd.extract.distorted import frame_level_problem

        for name, src in named.items():
            problem = frame_level_problem(src)
            if problem:
                raise ConfigError(f"robustness.at=frame distorts each test set's source frames before face detection, "
                                  f"but test set '{name}' cannot be: {problem}; use robustness.at=crop (its stored "
                                  "crops), or evaluate it in a run of its own")
    spec = module.model.input_spec
    run = dict(meta.get("run") or {})
    # A W&B run of its own per evaluation (two evaluations of one checkpoint must not resume each other's).
    trainer = build_trainer(cfg, run_dir, f"{uuid.uuid4().hex[:12]}-eval", f"eval-{run.get('dataset', '')}", "eval")

    def evaluate_once(extra: list | None = None, suffix: str = "", tables: list | None = None,
                      sources: dict | None = None) -> tuple:
        tests_now = name_test_sets(train_src, tests) if sources is None else sources
        dm = build_datamodule(cfg, spec, None, tests_now, {}, eval_extra=extra)
        return test_model(trainer, module, dm, None, suffix, tables, no_face), dm

    tables: list = []
    reports, dm = evaluate_once(tables=tables)
    explain = int(cfg.get("explain") or 0)
    gallery = gallery_rows(dm, tables, max(explain, TABLE_ROWS)) if trainer.is_global_zero else []
    explained = explain_rows(module, dm, gallery, run_dir, explain) if explain > 0 and gallery else {}
    robustness: dict = {}
    indexes: dict = {}  # at=frame: each test set's video index, built once for the whole sweep
    for kind, level in plan.pairs:
        if plan.at == "frame":
            distorted, empty = _distorted_sets(named, trained, kind, level, plan.workers, indexes)
            notes += [f"robustness {kind} {level:g} (at=frame) on '{name}': no test video kept a face; not scored"
                      for name in empty]
            # Its own metric keys: a frame-level and a crop-level point of one kind and level are different numbers.
            perturbed = evaluate_once(suffix=f"@frame_{kind}{level:g}", sources=distorted)[0] if distorted else {}
        else:
            perturbed, _ = evaluate_once([perturbation(kind, level)], suffix=f"@{kind}{level:g}")
        for name, rep in perturbed.items():
            point = {"level": level, "at": plan.at, **{lv: rep[lv] for lv in LEVELS if lv in rep}}
            top = headline(reports[name])  # videos, images, or both
            lost = int(reports[name][top].get("n", 0)) - int(rep.get(top, {}).get("n", 0))
            if plan.at == "frame" and lost > 0:
                point["videos_lost"] = lost
                notes.append(f"robustness {kind} {level:g} (at=frame) on '{name}': {lost} of "
                             f"{reports[name][top].get('n')} test {ITEM_WORDS[top]} kept no face and are not scored")
            robustness.setdefault(name, {}).setdefault(kind, []).append(point)
    overrides = provenance.task_overrides()
    if no_face.scores:  # an evaluation-time choice that changes every number: report rows must not merge it
        run["overrides"] = {**(run.get("overrides") or {}), "eval.no_face": no_face.rule,
                            "eval.no_face_score": no_face.score}
    results = make_results(
        "eval", run_dir, run, reports, checkpoint=str(cfg.ckpt_path),
        in_domain=train_src.name if train_src else None, robustness=robustness or None, weights=meta.get("weights"),
        run_id=module.run_id,
        invocation=provenance.invocation("dfd-eval", overrides, provenance.wandb_sweep()), notes=[*skipped, *notes],
        video_score=video_score_record(module.video_score),
        # The evaluation-time settings reports compare runs by (a training run records them in its config).
        config={"eval": {"no_face": no_face.rule, "no_face_score": no_face.score}},
    )
    results["crop_manifests"] = crop_manifests(dm)
    if explain > 0:
        results["explain"] = {"dir": EXPLAIN_DIR, "n": explain, "method": "grad-cam (dfd.models.explain)",
                              "videos": explained}
    finish_run(trainer, results, run_dir, f"evaluation of {cfg.ckpt_path}", tables, gallery)
    return results


def _distorted_sets(named: dict, trained, kind: str, level: float, workers: int | None,
                    indexes: dict) -> tuple[dict, list[str]]:
    """Every test set with its source frames distorted, extracted with its own cache's contract (the crops its
    clean numbers came from; evaluation already requires them framed as the model's training crops), and the
    names of those where no test video kept a face (nothing to score)."""
    import logging

    from dfd.extract.distorted import DistortedTestSet
    from dfd.store.distort import Distortion
    from dfd.store.schema import read_manifest

    d = Distortion(kind, level)
    out, empty = {}, []
    for name, src in named.items():
        contract = src.crop_contract() or trained
        if contract is None:
            raise ConfigError(f"robustness.at=frame: test set '{name}' records no crop contract and neither does the "
                              "checkpoint; re-extract it with dfd-extract")
        if name not in indexes:
            indexes[name] = src.build_index()
        dist = DistortedTestSet(src, contract, d, workers, index=indexes[name])
        manifest = dist.prepare()
        logging.getLogger(__name__).info("robustness %s (at=frame) on '%s': crops in %s", d, name, manifest.parent)
        if (read_manifest(manifest, columns=["split"])["split"] == "test").any():
            out[name] = dist
        else:
            empty.append(name)
    return out, empty
