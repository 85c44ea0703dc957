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

from dfd.data.datamodule import DeepfakeDataModule
from dfd.data.sources.base import DatasetSource
from dfd.engine.module import DetectorModule
from dfd.engine.results import make_results, write_results

log = logging.getLogger(__name__)


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


def build_sources(cfg: DictConfig) -> tuple[DatasetSource | None, dict[str, DatasetSource], dict]:
    """(training source, test sources by name, extra training sources with weights)."""
    train = instantiate(cfg.dataset) if cfg.get("dataset") else None
    tests = {}
    for key, node in (cfg.get("test_sets") or {}).items():
        src = instantiate(node)
        tests[src.name or key] = src
    mix = {}
    for key, node in (cfg.get("train_mix") or {}).items():
        node = OmegaConf.to_container(node, resolve=True)
        weight = float(node.pop("weight", 1.0))
        src = instantiate(node)
        mix[src.name or key] = (src, weight)
    return train, tests, mix


def build_datamodule(cfg: DictConfig, spec: object, train: DatasetSource | None, tests: dict, mix: dict,
                     eval_extra: list | None = None) -> DeepfakeDataModule:
    """The DataModule for a config and a model input spec."""
    d = cfg.data
    augment = [instantiate(t) for t in (cfg.augment.get("train") or [])] if cfg.get("augment") else []
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
        loggers.append(instantiate(node, **kwargs))
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


def print_table(reports: Mapping[str, dict], title: str) -> None:
    """A rich table of test metrics, one row per test set."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("test set", "frames", "videos", "frame AUC", "video AUC", "video ACC", "video AP", "video EER"):
        table.add_column(col, justify="right" if col != "test set" else "left")
    fmt = lambda v: "n/a" if v is None or v != v else f"{v:.4f}"  # noqa: E731
    for name, r in reports.items():
        table.add_row(name, str(r["frame"]["n"]), str(r["video"]["n"]), fmt(r["frame"]["auc"]),
                      fmt(r["video"]["auc"]), fmt(r["video"]["acc"]), fmt(r["video"]["ap"]), fmt(r["video"]["eer"]))
    Console(width=max(Console().width, 110)).print(table)


def _test(trainer: pl.Trainer, module: DetectorModule, dm: DeepfakeDataModule, ckpt_path: str | None,
          suffix: str = "") -> dict:
    """Run the test loop; ``suffix`` keeps logged keys apart (``test/<name>@jpeg50/...``) for perturbed runs."""
    dm.setup("test")
    module.set_test_sets([n + suffix for n in dm.test_names], [dm.eval_info(n)["method_names"] for n in dm.test_names])
    trainer.test(module, datamodule=dm, ckpt_path=ckpt_path, verbose=False)
    return {n: module.test_reports[n + suffix] for n in dm.test_names}


def _finish(trainer: pl.Trainer, results: dict, run_dir: Path, title: str) -> None:
    if not trainer.is_global_zero:
        return
    path = write_results(results, run_dir)
    roc = save_roc_figure(results["test"], run_dir / "roc.png")
    for lg in _wandb_loggers(trainer):
        if roc is not None:
            lg.log_image(key="test/roc", images=[str(roc)])
        lg.experiment.summary["results_json"] = str(path)
    print_table(results["test"], title)
    log.info("results: %s", path)
    for lg in _wandb_loggers(trainer):
        lg.experiment.finish()  # flush the offline log now: multiruns start the next run in this process


def _save_config(cfg: DictConfig, run_dir: Path) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
    return resolved


# ----------------------------------------------------------------------------------------------- train
def train(cfg: DictConfig) -> dict:
    """Fit on the training set, select on its val split, test on every test set; write results.json."""
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = run_dir_of(cfg)
    resolved = _save_config(cfg, run_dir)
    train_src, tests, mix = build_sources(cfg)
    for src in [train_src, *tests.values(), *(s for s, _ in mix.values())]:
        src.prepare()  # fail now, with the fix, rather than after building the model and loggers

    run_id = None
    if cfg.get("ckpt_path"):
        ckpt = torch.load(cfg.ckpt_path, map_location="cpu", weights_only=True)
        run_id = ckpt.get("dfd", {}).get("run_id")
    meta = {"run_id": run_id, "dataset": resolved.get("dataset"), "run": describe_run(cfg, train_src.name)}
    module = DetectorModule(
        model=resolved["model"],
        finetune=resolved["finetune"],
        optim=resolved["optim"],
        channels_last=cfg.get("channels_last", False),
        compile=cfg.get("compile", False),
        meta=meta,
        loss=resolved.get("loss"),
    )
    dm = build_datamodule(cfg, module.model.input_spec, train_src, tests, mix)
    run = meta["run"]
    name = f"{run['dataset']}-{run['model']}-{run['finetune']}-s{run['seed']}"
    trainer = build_trainer(cfg, run_dir, module.run_id, name)
    for lg in trainer.loggers:
        lg.log_hyperparams({**resolved, "params": module.param_counts, "train": run})

    trainer.fit(module, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
    ckpt_cb = trainer.checkpoint_callback
    best = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
    if best:  # results.json reports the validation metrics of the checkpoint that was selected
        trainer.validate(module, datamodule=dm, ckpt_path=best, verbose=False)
    reports = _test(trainer, module, dm, best)
    results = make_results(
        "train", run_dir, run, reports, val=module.val_report, checkpoint=best, in_domain=[train_src.name, *mix],
        params=module.param_counts, global_step=int(trainer.global_step),
    )
    _finish(trainer, results, run_dir, f"test metrics ({name})")
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

    pl.seed_everything(cfg.seed, workers=True)
    run_dir = run_dir_of(cfg)
    _save_config(cfg, run_dir)
    module = load_module(cfg.ckpt_path)
    meta = dict(module.hparams.get("meta") or {})
    _, tests, _ = build_sources(cfg)
    train_src = None
    if cfg.data.get("include_train_test", True) and meta.get("dataset"):
        train_src = instantiate(meta["dataset"])
    if train_src is None and not tests:
        raise ValueError("dfd-eval: nothing to evaluate; add test sets with +dataset@test_sets.<name>=<dataset>")
    spec = module.model.input_spec
    run = dict(meta.get("run") or {})
    trainer = build_trainer(cfg, run_dir, module.run_id + "-eval", f"eval-{run.get('dataset', '')}", "eval")

    def evaluate_once(extra: list | None = None, suffix: str = "") -> dict:
        dm = build_datamodule(cfg, spec, None, {**({train_src.name: train_src} if train_src else {}), **tests}, {},
                              eval_extra=extra)
        return _test(trainer, module, dm, None, suffix)

    reports = evaluate_once()
    robustness: dict = {}
    for kind, levels in (cfg.get("robustness") or {}).items():
        for level in levels:
            perturbed = evaluate_once([perturbation(kind, float(level))], suffix=f"@{kind}{level}")
            for name, rep in perturbed.items():
                robustness.setdefault(name, {}).setdefault(kind, []).append(
                    {"level": float(level), "frame": rep["frame"], "video": rep["video"]}
                )
    results = make_results(
        "eval", run_dir, run, reports, checkpoint=str(cfg.ckpt_path),
        in_domain=train_src.name if train_src else None, robustness=robustness or None,
    )
    _finish(trainer, results, run_dir, f"evaluation of {cfg.ckpt_path}")
    return results
