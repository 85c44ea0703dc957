"""What ``dfd-train`` and ``dfd-eval`` do, given a composed config: build, fit, test, record.

Kept out of the entry points so tests and notebooks can call ``train(cfg)`` / ``evaluate(cfg)`` directly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dfd.data.contract import CropContract, contract_of, extract_overrides
from dfd.data.datamodule import DeepfakeDataModule, name_test_sets
from dfd.data.sources.base import DatasetError, DatasetSource
from dfd.engine import provenance
from dfd.engine.hardware import on_gpu
from dfd.engine.metrics import (
    ACC_THRESHOLD,
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    small_sample_notes,
)
from dfd.engine.module import SELECT_KEY, DetectorModule
from dfd.engine.predictions import PREDICTIONS_FILE, video_table, write_predictions
from dfd.engine.quiet import quiet_dependencies
from dfd.engine.results import make_results, write_results
from dfd.engine.video_score import DESCRIPTIONS as VIDEO_SCORE_DESCRIPTIONS
from dfd.engine.video_score import check_video_score
from dfd.errors import ConfigError

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- run set-up
def cpu_threads(cfg: DictConfig) -> int | None:
    """torch's intra-op threads for this run's main process, or None to leave torch's default.

    ``threads`` in the config wins. Else, for CPU DDP (several processes on one machine, as torchrun does) and
    unless the user set ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``: the cores divided among the processes, which
    would otherwise each start one thread per core and spin-wait against each other. One process keeps torch's
    default, one thread per core: on 2 idle cores with 2 loader workers it made 5.99 steps/s against 3.76 with
    1 thread (bench_overhead.py). On a machine busy with other work, ``threads=1`` avoids spin-waiting
    (measured there under load ~6: 2.28 steps/s with 1 thread, 0.57 with 2).
    """
    if cfg.get("threads"):
        return int(cfg.threads)
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return None
    trainer = cfg.get("trainer") or {}
    if on_gpu(trainer.get("accelerator", "auto")):
        return None  # the GPU computes; the main process mostly waits
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    devices = trainer.get("devices", 1)
    processes = int(devices) if str(devices).isdigit() and int(devices) > 0 else 1  # CPU DDP: one per device
    return max(1, cores // processes) if processes > 1 else None


def set_threads(cfg: DictConfig) -> None:
    """Apply :func:`cpu_threads` (logged, so a run says how it used the CPU)."""
    n = cpu_threads(cfg)
    if n is not None and n != torch.get_num_threads():
        torch.set_num_threads(n)
        log.info("torch threads: %d (set threads=N or OMP_NUM_THREADS to choose)", n)


def check_sbi_keys(cfg: DictConfig) -> None:
    """``data.sbi`` holds SelfBlend's arguments: a typo fails now, in one line naming the valid keys."""
    given = (cfg.get("data") or {}).get("sbi") or {}
    if not given:
        return
    import inspect

    from dfd.data.sbi import SelfBlend

    valid = [n for n in inspect.signature(SelfBlend).parameters if n != "self"]
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ConfigError(f"data.sbi: {', '.join(map(repr, unknown))} {'is not an argument' if len(unknown) == 1 else 'are not arguments'} "
                          f"of SelfBlend; valid keys: {', '.join(valid)}")


def check_robustness(robustness: Mapping | None) -> list[tuple[str, float]]:
    """The robustness sweep as (kind, level) pairs, checked before any model work (one line when wrong)."""
    from dfd.data.transforms import perturbation

    pairs = []
    for kind, levels in (robustness or {}).items():
        if levels is None or isinstance(levels, str | int | float):
            raise ConfigError(f"robustness.{kind} must be a list of levels, e.g. robustness='{{{kind}: [..]}}'")
        for level in levels:
            try:
                perturbation(str(kind), float(level))  # an unknown kind: ConfigError naming the valid ones
            except ConfigError:
                raise
            except (TypeError, ValueError) as e:
                raise ConfigError(f"robustness.{kind}: level {level!r} is invalid ({str(e).strip().splitlines()[0]})"
                                  ) from e
            pairs.append((str(kind), float(level)))
    return pairs


#: data.crop_mismatch: what a run does with a cache whose crop geometry differs from the run's.
CROP_MISMATCH = ("refuse", "warn")


def _geometry(c: CropContract) -> str:
    if c.inputs == "crops":
        return f"the dataset's own face crops at {c.size} px"
    return f"{c.align} x{c.margin:g}, {c.size} px"


def check_crop_contracts(run: CropContract | None, sources: Mapping[str, DatasetSource], role: str, against: str,
                         policy: str = "refuse") -> list[str]:
    """Compare every source's cache contract with the run's (``run``: the training set's, or the checkpoint's).

    Crops framed differently (:data:`dfd.data.contract.GEOMETRY`: alignment, margin, size) are different model
    inputs: refused by default, in one line naming both and the fix; ``data.crop_mismatch=warn`` keeps them
    for a deliberate cross-preprocessing study, with a note. A dataset distributed as face crops (WildDeepfake)
    next to crops cut from frames is framed by its authors: allowed, with a note. Returns the notes.
    """
    if policy not in CROP_MISMATCH:
        raise ConfigError(f"data.crop_mismatch={policy!r} is not valid; choose one of {', '.join(CROP_MISMATCH)}")
    if run is None:
        return []
    notes = []
    for name, src in sources.items():
        theirs = src.crop_contract()
        if theirs is None:
            continue
        diff = run.geometry_diff(theirs)
        if not diff:
            continue
        if set(diff) == {"inputs"}:
            notes.append(f"{role} '{name}' holds {_geometry(theirs)}, {against} {_geometry(run)}: framed "
                         "differently" + (" (re-extract it with extract.inputs=frames to crop its faces the same way)"
                                          if theirs.inputs == "crops" else ""))
            continue
        what = ", ".join(f"{k}={b} (vs {a})" for k, (a, b) in diff.items())
        if policy == "warn":
            notes.append(f"{role} '{name}' was cropped differently from {against} {_geometry(run)}: {what}; used "
                         "anyway (data.crop_mismatch=warn)")
            continue
        fix = extract_overrides({k: a for k, (a, _) in diff.items()})
        root = f" dataset.root={src.root}" if src.root is not None else ""
        raise ConfigError(
            f"{role} '{name}' was cropped differently from {against} {_geometry(run)}: {what} in its cache "
            f"{src.cache_dir}; re-extract it to match (`dfd-extract dataset={src._config_name()}{root} {fix}`), "
            "or set data.crop_mismatch=warn to compare across preprocessing on purpose"
        )
    for note in notes:
        log.warning(note)
    return notes


# ----------------------------------------------------------------------------------------------- helpers
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


def describe_run(cfg: DictConfig, dataset_name: str) -> dict:
    """The run's training configuration as reports group it: dataset × model × fine-tuning, seed."""
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
    mix = [str(node.get("name", key)) for key, node in (cfg.get("train_mix") or {}).items()]
    return {
        "dataset": "+".join([dataset_name, *mix]) + ("" if fakes == "real" else f"+{fakes}"),
        "model": model,
        "finetune": ft,
        "seed": int(cfg.seed),
        "experiment": ch.get("experiment") or cfg.get("experiment_name"),
    }


def build_sources(cfg: DictConfig, skipped: list[str] | None = None
                  ) -> tuple[DatasetSource | None, dict[str, DatasetSource], dict]:
    """(training source, test sources by name, extra training sources with weights).

    A test set is named by its ``test_sets`` key, or by ``test_sets.<key>.display_name`` when given, never by
    the dataset it reads: ``test_sets.ffpp_c40`` (FF++ at c40) and the in-domain ``ffpp`` (c23) are two sets.

    A test set marked ``optional: true`` (or every test set with ``data.skip_missing_test_sets=true``) whose data
    and crop cache are both absent is left out with one logged line naming it and how to add it; the lines are
    appended to ``skipped`` (results.json ``notes``). A present dataset that is not extracted is still an error.
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
        src = instantiate(node)
        mix[src.name or key] = (src, weight)
    return train, tests, mix


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
                     eval_extra: list | None = None) -> DeepfakeDataModule:
    """The DataModule for a config and a model input spec."""
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
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir))


def _wandb_loggers(trainer: pl.Trainer) -> list:
    from pytorch_lightning.loggers import WandbLogger

    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def save_roc_figure(reports: Mapping[str, dict], path: Path) -> Path | None:
    """One figure: frame- and video-level ROC curves of every test set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    drawn = False
    for ax, level in zip(axes, ("frame", "video"), strict=True):
        for name, rep in reports.items():
            roc = rep.get("roc", {}).get(level)
            if roc:
                auc = rep[level]["auc"]
                ax.plot(roc["fpr"], roc["tpr"], label=f"{name} (AUC {auc:.3f})")
                drawn = True
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(title=f"{level}-level ROC", xlabel="false positive rate", ylabel="true positive rate")
        if drawn:
            ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    if drawn:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return path if drawn else None


def video_score_record(rule: str) -> dict:
    """How results.json's frame and video scores were made from the crops (dfd.engine.video_score)."""
    return {"rule": rule, "description": VIDEO_SCORE_DESCRIPTIONS[rule]}


def _fmt(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None or v != v else f"{v:.{digits}f}"


def auc_with_ci(video: Mapping) -> str:
    """``0.9412 [0.901, 0.972]``: the video AUC and its bootstrap interval (n/a where undefined)."""
    text = _fmt(video.get("auc"))
    lo, hi = video.get("auc_lo"), video.get("auc_hi")
    if text != "n/a" and lo is not None and lo == lo:
        text += f" [{lo:.3f}, {hi:.3f}]"
    return text


def print_table(reports: Mapping[str, dict], title: str) -> None:
    """A rich table of test metrics, one row per test set (video AUC with its 95 % bootstrap interval)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=f"[ ]: {BOOTSTRAP_LEVEL:.0%} bootstrap interval over videos; "
                  f"ACC at threshold {ACC_THRESHOLD}", caption_justify="left")
    for col in ("test set", "real/fake videos", "frames", "frame AUC", "video AUC [95% CI]", "video ACC",
                "video AP", "video EER"):
        table.add_column(col, justify="right" if col != "test set" else "left")
    for name, r in reports.items():
        v = r["video"]
        table.add_row(name, f"{v['n_real']}/{v['n_fake']}", str(r["frame"]["n"]), _fmt(r["frame"]["auc"]),
                      auc_with_ci(v), _fmt(v["acc"]), _fmt(v["ap"]), _fmt(v["eer"]))
    Console(width=max(Console().width, 120)).print(table)


def run_notes(reports: Mapping[str, dict], calibrated: bool = False) -> list[str]:
    """One-line cautions about the numbers of a run (small test sets, uncalibrated accuracy)."""
    notes = [n for name, rep in reports.items() for n in small_sample_notes(name, rep)]
    if not calibrated and any(r["video"].get("acc") is not None for r in reports.values()):
        notes.append(f"ACC is measured at the fixed threshold {ACC_THRESHOLD} of an uncalibrated model, so it can be "
                     "low while AUC is high; compare AUC, or calibrate a threshold on validation "
                     "(dfd-export <ckpt> <bundle> --calibrate eer)")
    return notes


def bootstrap_method() -> dict:
    """How results.json's ``video.auc_lo`` / ``auc_hi`` were computed."""
    return {"metric": "video auc", "method": "percentile bootstrap", "resamples": BOOTSTRAP_RESAMPLES,
            "level": BOOTSTRAP_LEVEL, "resample": "videos, within each class (class counts fixed)",
            "seed": BOOTSTRAP_SEED}


def _test(trainer: pl.Trainer, module: DetectorModule, dm: DeepfakeDataModule, ckpt_path: str | None,
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


def _finish(trainer: pl.Trainer, results: dict, run_dir: Path, title: str, tables: list | None = None) -> None:
    if not trainer.is_global_zero:
        return
    results["bootstrap"] = bootstrap_method()
    notes = run_notes(results["test"])
    results["notes"] = [*(results.get("notes") or []), *notes]
    if tables is not None:
        write_predictions(tables, run_dir)
        results["predictions"] = PREDICTIONS_FILE
    path = write_results(results, run_dir)
    roc = save_roc_figure(results["test"], run_dir / "roc.png")
    for lg in _wandb_loggers(trainer):
        if roc is not None:
            lg.log_image(key="test/roc", images=[str(roc)])
        if tables:
            import pandas as pd

            videos = pd.concat(tables, ignore_index=True).drop(columns=["frame_probs", "frame_index", "frame_track"])
            lg.log_table(key="test/predictions", dataframe=videos)
        lg.experiment.summary["results_json"] = str(path)
    print_table(results["test"], title)
    for note in notes:
        log.warning(note)
    log.info("results: %s", path)
    for lg in _wandb_loggers(trainer):
        lg.experiment.finish()  # flush the offline log now: multiruns start the next run in this process


def _save_config(cfg: DictConfig, run_dir: Path) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
    return resolved


# ----------------------------------------------------------------------------------------------- train
def validation_class_note(src: DatasetSource, monitor: str) -> str | None:
    """A one-line warning when the training set's validation split holds one class (AUC undefined)."""
    from dfd.data.datasets import ManifestArrays

    labels = ManifestArrays(src.prepare(), splits="val").video_labels
    n_fake = int((labels == 1).sum())
    n_real = len(labels) - n_fake
    if len(labels) == 0 or (n_real and n_fake):
        return None
    missing = "real" if n_fake else "fake"
    return (f"the validation split of '{src.name}' has {n_real} real / {n_fake} fake videos (no {missing}): "
            f"validation AUC is undefined, so {monitor} selects the checkpoint (and early stopping) by the lowest "
            f"validation log loss alone; give the split both classes (the dataset's split files or val_fraction)")


def selection_record(module: DetectorModule, trainer: pl.Trainer, split: str) -> dict:
    """How the tested checkpoint was chosen: the criterion, its value at every epoch, the epoch it picked.

    Read from the checkpoint callback itself (what actually chose), not from the config.
    """
    cb = trainer.checkpoint_callback
    monitor = cb.monitor if cb is not None else None
    mode = cb.mode if cb is not None else None
    history = [{"epoch": e["epoch"], "step": e["step"], "value": e.get(monitor),
                **{k.removeprefix("val/"): v for k, v in e.items() if k.startswith("val/")}}
               for e in module.val_history]
    best = cb.best_model_path if cb is not None and cb.best_model_path else None
    record = {"split": split, "monitor": monitor, "mode": mode, "checkpoint": best, "epoch": None, "step": None,
              "value": None, "history": history}
    if monitor == SELECT_KEY:
        record["criterion"] = ("video AUC on the validation split; ties broken by the lower frame log loss "
                               "(val/select = val/video_auc - 0.001 * min(val/frame_logloss, 10))")
    if best:
        ckpt = torch.load(best, map_location="cpu", weights_only=True, mmap=True)
        record.update(epoch=int(ckpt["epoch"]), step=int(ckpt["global_step"]))
        score = cb.best_model_score
        at = [h["value"] for h in history if (h["epoch"], h["step"]) == (record["epoch"], record["step"])
              and h["value"] is not None]
        record["value"] = at[-1] if at else (float(score) if score is not None else None)
    else:
        record["note"] = "no checkpoint callback: the weights of the last epoch were tested"
    if cb is not None and monitor is None:
        record["note"] = "no monitor: the latest checkpoint was tested (no selection on validation)"
    return record


def train(cfg: DictConfig) -> dict:
    """Fit on the training set, select on its val split, test on every test set; write results.json."""
    quiet_dependencies()
    check_sbi_keys(cfg)
    set_threads(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = run_dir_of(cfg)
    resolved = _save_config(cfg, run_dir)
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
            from dfd.data.shards import ShardSettings, open_store

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
    reports = _test(trainer, module, dm, best, tables=tables)
    results = make_results(
        "train", run_dir, run, reports, val=module.val_report, checkpoint=best, in_domain=[train_src.name, *mix],
        params=module.param_counts, global_step=int(trainer.global_step), selection=chosen,
        invocation=provenance.invocation("dfd-train", overrides, sweep), config=resolved, notes=notes,
        weights=module.model.weights_source, video_score=video_score_record(module.video_score),
    )
    _finish(trainer, results, run_dir, f"test metrics ({name})", tables)
    return results


# ----------------------------------------------------------------------------------------------- eval
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
    _save_config(cfg, run_dir)
    module = load_module(cfg.ckpt_path)
    module.set_video_score(cfg.data.get("video_score"))  # null: the rule the checkpoint was trained with
    meta = dict(module.hparams.get("meta") or {})
    skipped: list[str] = []
    _, tests, _ = build_sources(cfg, skipped)
    train_src = None
    if cfg.data.get("include_train_test", True) and meta.get("dataset"):
        train_src = instantiate(meta["dataset"])
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

    def evaluate_once(extra: list | None = None, suffix: str = "", tables: list | None = None) -> dict:
        dm = build_datamodule(cfg, spec, None, name_test_sets(train_src, tests), {}, eval_extra=extra)
        return _test(trainer, module, dm, None, suffix, tables)

    tables: list = []
    reports = evaluate_once(tables=tables)
    robustness: dict = {}
    for kind, level in sweep_levels:
        perturbed = evaluate_once([perturbation(kind, level)], suffix=f"@{kind}{level:g}")
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
    _finish(trainer, results, run_dir, f"evaluation of {cfg.ckpt_path}", tables)
    return results
