"""Framework overhead: ``dfd-train``'s training steps/s against a bare PyTorch loop on the same everything.

Both sides get the same model (a DetectorModule built from the same config and seed), the same optimiser and
LR schedule (AdamW param groups of the fine-tuning strategy, warm-up/cosine stepped every step), the same
gradient clipping (the trainer preset's ``gradient_clip_val``), precision and the same DataLoader (the
DataModule's ``train_dataloader()``: same dataset object, workers, batch size, augmentation).

* dfd side: the real DetectorModule + Lightning Trainer built by ``dfd.engine.build_trainer`` from the
  composed config, with the callbacks and loggers of a normal run (checkpointing, rich progress bar, LR monitor,
  W&B offline), ``max_steps`` = warm-up + timed steps, no validation inside the timed window.
* bare side: ``for batch in loader: forward, BCE, backward, clip, step, schedule`` — nothing else.

Steady state: the first ``--warmup`` steps (worker start-up, allocator warm-up) are excluded on both sides;
steps/s is measured from the end of step ``warmup`` to the end of the last step. Sides alternate
(bare, dfd, bare, dfd, ...) and the best of ``--repeats`` runs is compared, so background load on a shared
machine hits both alike. Goal: dfd >= 0.9x bare. Also printed: the main process's CPU seconds per step (all its
threads), which other processes' load cannot inflate: on a busy shared machine it is the steadier figure.

Run: ``.venv/bin/python tests/benchmarks/bench_overhead.py [--steps 60] [--warmup 10] [--repeats 2]
     [-- model=small_cnn data.batch_size=32 ...]`` (any dfd-train override after ``--``).
``--profile`` adds a cProfile of one dfd run (top functions by own time) to see where the overhead goes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ["WANDB_MODE"] = "offline"

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

DEFAULTS = ["model=small_cnn", "data.batch_size=32", "data.num_workers=2", "trainer.precision=32-true",
            "dataset.videos={train: 600, val: 8, test: 8}", "logger=wandb"]


def compose(overrides: list[str], run_dir: Path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from dfd.cli._hydra import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose("train", overrides=[*overrides, f"paths.run_dir={run_dir}"])


def _tree_cpu() -> float:
    """CPU seconds of this process and every live descendant (loader workers, W&B's service process)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a process that just ended
            total += sum(child.cpu_times()[:2])
    return total


def _stamp(count: int, warmup: int, steps: int) -> tuple[float, float, float]:
    """(wall clock, CPU seconds of this process's threads, CPU of the process tree at the window's two ends)."""
    tree = _tree_cpu() if count in (warmup, steps - 1) else float("nan")
    return time.perf_counter(), time.process_time(), tree


class StepClock(pl.Callback):
    """Wall and CPU time at the end of every training step."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.ends: list[tuple[float, float, float]] = []
        self.warmup, self.steps = warmup, steps

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.ends.append(_stamp(len(self.ends), self.warmup, self.steps))


def steady_rate(ends: list[tuple[float, float, float]], warmup: int) -> tuple[float, float, float]:
    """(steps per wall second, main-process CPU s/step, process-tree CPU s/step) from the end of step ``warmup``."""
    if len(ends) <= warmup + 1:
        raise SystemExit(f"only {len(ends)} steps ran; raise --steps or the dataset size")
    n = len(ends) - 1 - warmup
    return ((n / (ends[-1][0] - ends[warmup][0])), (ends[-1][1] - ends[warmup][1]) / n,
            (ends[-1][2] - ends[warmup][2]) / n)


def build(cfg, seed: int):
    """(module, datamodule) exactly as ``dfd.engine.train`` builds them."""
    from omegaconf import OmegaConf

    from dfd.engine.build import build_datamodule, build_sources, describe_run
    from dfd.engine.module import DetectorModule

    pl.seed_everything(seed, workers=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    train_src, _, _ = build_sources(cfg)
    train_src.prepare()
    meta = {"run_id": None, "dataset": resolved.get("dataset"), "run": describe_run(cfg, train_src.name)}
    module = DetectorModule(model=resolved["model"], finetune=resolved["finetune"], optim=resolved["optim"],
                            channels_last=cfg.get("channels_last", False), compile=cfg.get("compile", False), meta=meta)
    dm = build_datamodule(cfg, module.model.input_spec, train_src, {}, {})
    dm.setup("fit")
    return module, dm, resolved


def run_dfd(cfg, steps: int, warmup: int, seed: int, run_dir: Path, profile: bool = False) -> list[tuple]:
    from dfd.engine.build import build_trainer

    module, dm, resolved = build(cfg, seed)
    trainer = build_trainer(cfg, run_dir, module.run_id, "bench-overhead")
    clock = StepClock(warmup, steps)
    trainer.callbacks.append(clock)
    for lg in trainer.loggers:
        lg.log_hyperparams({**resolved, "params": module.param_counts})
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        trainer.fit(module, datamodule=dm)
        prof.disable()
        print("\n-- cProfile of one dfd run (main process), top 25 by own time --")
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    else:
        trainer.fit(module, datamodule=dm)
    for lg in trainer.loggers:
        if hasattr(lg, "experiment") and hasattr(lg.experiment, "finish"):
            lg.experiment.finish()
    return clock.ends


def run_bare(cfg, steps: int, warmup: int, seed: int) -> list[tuple]:
    from dfd.engine.module import warmup_cosine

    module, dm, _ = build(cfg, seed)
    loader = dm.train_dataloader()  # the very DataLoader the Trainer gets: same dataset object, workers, batch
    model = module.model
    model.train()
    o = cfg.optim
    groups = [g for g in module._param_groups if any(p.requires_grad for p in g["params"])]
    opt = torch.optim.AdamW(groups, lr=float(o.lr), weight_decay=float(o.weight_decay))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps, float(o.get("warmup", 0.05)),
                                                                 float(o.get("min_lr_ratio", 0.01))))
    params = [p for p in model.parameters() if p.requires_grad]
    clip = cfg.trainer.get("gradient_clip_val")
    loss_fn = torch.nn.BCEWithLogitsLoss()
    ends: list[tuple] = []
    while len(ends) < steps:
        for batch in loader:
            logits = model(batch["image"], batch["landmarks"] if model.needs_landmarks else None)
            loss = loss_fn(logits, batch["label"].float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, float(clip))
            opt.step()
            sched.step()
            ends.append(_stamp(len(ends), warmup, steps))
            if len(ends) >= steps:
                break
    del loader
    return ends


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="total steps per run (warm-up included)")
    ap.add_argument("--warmup", type=int, default=10, help="first steps excluded on both sides")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs per side")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--profile", action="store_true", help="cProfile one extra dfd run")
    ap.add_argument("--side", choices=["both", "dfd", "bare"], default="both",
                    help="run one side only (under a sampling profiler: py-spy record -f raw -- python ...)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads on both sides (1 on a busy shared machine: no spin-waiting, so "
                         "CPU time per step is a clean measure)")
    ap.add_argument("--also", default=None,
                    help="a second dfd configuration timed in the same alternation, as extra overrides, e.g. "
                         "'logger=none callbacks.progress_bar=null' (what a change would buy)")
    ap.add_argument("overrides", nargs="*", help="dfd-train overrides (after --)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [*DEFAULTS, *args.overrides, f"+trainer.max_steps={args.steps}", "trainer.max_epochs=-1",
                 "+trainer.limit_val_batches=0", f"seed={args.seed}"]
    with tempfile.TemporaryDirectory(prefix="bench_overhead_") as tmp:
        cfg = compose([*overrides, f"paths.cache_dir={tmp}/cache"], Path(tmp) / "run")
        print(f"bench_overhead: {' '.join(args.overrides) or 'defaults'}; {args.steps} steps/run, first {args.warmup} "
              f"excluded; torch threads {torch.get_num_threads()}, cores {len(os.sched_getaffinity(0))}, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"model={cfg.model.get('arch', cfg.model.get('name'))} size={cfg.model.get('img_size')} "
              f"batch={cfg.data.batch_size} workers={cfg.data.num_workers} precision={cfg.trainer.precision} "
              f"clip={cfg.trainer.get('gradient_clip_val')} callbacks={list(cfg.callbacks or {})} "
              f"loggers={list(cfg.logger or {})} log_every_n_steps={cfg.trainer.get('log_every_n_steps')}")
        bare, dfd, also = [], [], []
        cfg_also = compose([*overrides, f"paths.cache_dir={tmp}/cache", *args.also.split()], Path(tmp) / "run") \
            if args.also else None
        for r in range(args.repeats):
            if cfg_also is not None:
                also.append(steady_rate(run_dfd(cfg_also, args.steps, args.warmup, args.seed, Path(tmp) / f"also{r}"),
                                        args.warmup))
                print(f"  run {r}: dfd + {args.also}: {also[-1][0]:.2f} steps/s (CPU-s/step main {also[-1][1]:.3f}, "
                      f"tree {also[-1][2]:.3f})", flush=True)
            if args.side != "dfd":
                bare.append(steady_rate(run_bare(cfg, args.steps, args.warmup, args.seed), args.warmup))
            if args.side != "bare":
                dfd.append(steady_rate(run_dfd(cfg, args.steps, args.warmup, args.seed, Path(tmp) / f"run{r}"),
                                       args.warmup))
            if args.side != "both":
                x = (bare or dfd)[-1]
                print(f"  run {r}: {args.side} {x[0]:.2f} steps/s (CPU-s/step main {x[1]:.3f}, tree {x[2]:.3f})")
                continue
            print(f"  run {r}: bare {bare[-1][0]:.2f} steps/s (CPU-s/step main {bare[-1][1]:.3f}, tree "
                  f"{bare[-1][2]:.3f}), dfd {dfd[-1][0]:.2f} steps/s (main {dfd[-1][1]:.3f}, tree {dfd[-1][2]:.3f}):"
                  f" {dfd[-1][0] / bare[-1][0]:.2f}x; load average {os.getloadavg()[0]:.1f}", flush=True)
        if args.side != "both":
            return
        b_wall, d_wall = max(x[0] for x in bare), max(x[0] for x in dfd)
        b_cpu, d_cpu = min(x[1] for x in bare), min(x[1] for x in dfd)
        b_tree, d_tree = min(x[2] for x in bare), min(x[2] for x in dfd)
        ratio = d_wall / b_wall
        print(f"bare PyTorch loop: {b_wall:.2f} steps/s (best of {args.repeats}; median "
              f"{statistics.median(x[0] for x in bare):.2f}); main process {b_cpu:.3f} CPU-s/step")
        print(f"dfd-train (Lightning, callbacks + loggers of a normal run): {d_wall:.2f} steps/s (best; median "
              f"{statistics.median(x[0] for x in dfd):.2f}); main process {d_cpu:.3f} CPU-s/step")
        print(f"ratio dfd / bare: {ratio:.3f}x steps/s best-vs-best (goal >= 0.9x) {'OK' if ratio >= 0.9 else 'MISSED'};"
              f" by CPU time per step (robust to other load): main process {b_cpu / d_cpu:.3f}x, process tree "
              f"(+ loader workers, W&B service) {b_tree / d_tree:.3f}x; load average now {os.getloadavg()[0]:.1f}")
        if also:
            a_wall, a_cpu, a_tree = max(x[0] for x in also), min(x[1] for x in also), min(x[2] for x in also)
            print(f"dfd + {args.also}: {a_wall:.2f} steps/s = {a_wall / b_wall:.3f}x bare; CPU per step: main "
                  f"{b_cpu / a_cpu:.3f}x, tree {b_tree / a_tree:.3f}x of bare; vs default dfd: {a_wall / d_wall:.3f}x "
                  f"steps/s, main CPU {d_cpu / a_cpu:.3f}x")
        if args.profile:
            run_dfd(cfg, args.steps, args.warmup, args.seed, Path(tmp) / "profiled", profile=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
