"""Benchmark the generalisation recipes: trainable parameters and training-step time per fine-tuning recipe.

Each recipe (backbone x strategy x head x loss) is built at full size, random init, as `dfd-train` builds it
(`DetectorModule`: model, strategy, loss), and timed on its real `training_step` plus an AdamW step:

    full           every parameter, linear head, BCE                       (the baseline of the ratios)
    linear_probe   the head only
    norm_only      GenD: every LayerNorm + l2norm head, BCE + 0.5 uniformity + 0.1 alignment
    svd_residual   Effort: last singular direction of every q, k, v, out projection + head, BCE
    lora, last_n, llrd (with --strategies)

Printed per recipe: build time (model + strategy: SVD included), trainable and total parameters, step time,
images/s and the ratio to `full` measured in the same run; on CUDA also the peak memory.

Run: ``.venv/bin/python tests/benchmarks/bench_recipes.py``   (CLIP ViT-L/14, 224 px, batch 2, CPU)
     ``.venv/bin/python tests/benchmarks/bench_recipes.py --models clip_vit_l14 pe_core_l14 dinov3_vit_l16``
     ``.venv/bin/python tests/benchmarks/bench_recipes.py --device cuda --amp bf16 --batch 32 --steps 10``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import torch

from dfd.engine.module import DetectorModule

RECIPES = {
    "full": ({"_target_": "dfd.models.finetune.Full"}, "linear", {}),
    "linear_probe": ({"_target_": "dfd.models.finetune.LinearProbe"}, "linear", {}),
    "norm_only": ({"_target_": "dfd.models.finetune.NormOnly"}, "l2norm", {"uniformity": 0.5, "alignment": 0.1}),
    "svd_residual": ({"_target_": "dfd.models.finetune.SVDResidual", "k": 1}, "linear", {}),
    "lora": ({"_target_": "dfd.models.finetune.LoRA", "rank": 8, "alpha": 16}, "linear", {}),
    "last_n": ({"_target_": "dfd.models.finetune.LastN", "n": 2}, "linear", {}),
    "llrd": ({"_target_": "dfd.models.finetune.LLRD", "decay": 0.75}, "linear", {}),
}
OPTIM = {"lr": 3e-4, "weight_decay": 0.0}


def build(model: str, recipe: str) -> DetectorModule:
    """The module `dfd-train model=<model> finetune=<recipe>` builds (random init: no weights are read)."""
    finetune, head, loss = RECIPES[recipe]
    cfg = {"_target_": "dfd.models.create_model", "name": model, "pretrained": False, "head": head}
    loss_cfg = {"_target_": "dfd.engine.losses.DetectionLoss", **loss}
    return DetectorModule(model=cfg, finetune=finetune, optim=OPTIM, loss=loss_cfg)


def time_steps(module: DetectorModule, batch: int, steps: int, device: str, amp: torch.dtype | None) -> float:
    """Seconds per training step (training_step + backward + AdamW step), after one untimed warm-up step."""
    module = module.to(device).train()
    opt = torch.optim.AdamW([g for g in module._param_groups if g["params"]], lr=OPTIM["lr"])
    size = module.model.input_spec.size
    data = {"image": torch.randn(batch, 3, size, size, device=device),
            "label": torch.arange(batch, device=device).remainder(2)}
    ctx = (lambda: torch.autocast(device_type=device.split(":")[0], dtype=amp)) if amp else contextlib.nullcontext

    def step() -> None:
        with ctx():
            loss = module.training_step(data, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    """Parse flags and print one table per backbone."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["clip_vit_l14"], help="registered model names")
    ap.add_argument("--strategies", nargs="*", default=["full", "linear_probe", "norm_only", "svd_residual"],
                    choices=list(RECIPES))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", choices=["none", "bf16"], default="none", help="autocast dtype")
    args = ap.parse_args()
    amp = torch.bfloat16 if args.amp == "bf16" else None
    import logging
    import warnings

    logging.getLogger("dfd").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*self.log.*")  # training_step outside a Trainer: nothing to log to
    where = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
             else f"CPU, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print(f"{where}; batch {args.batch}, {args.steps} timed steps after 1 warm-up, autocast {args.amp}")
    for name in args.models:
        print(f"\n{name}")
        print(f"{'recipe':<14}{'build s':>9}{'trainable':>13}{'total':>14}{'% train':>11}{'s/step':>9}"
              f"{'images/s':>10}{'x full':>8}" + (f"{'peak GiB':>10}" if args.device.startswith("cuda") else ""))
        base = None
        for recipe in args.strategies:
            torch.manual_seed(0)
            start = time.perf_counter()
            module = build(name, recipe)
            built = time.perf_counter() - start
            counts = module.param_counts
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats(args.device)
            sec = time_steps(module, args.batch, args.steps, args.device, amp)
            ips = args.batch / sec
            base = base or (ips if recipe == "full" else None)
            ratio = f"{ips / base:.2f}x" if base else "-"
            mem = (f"{torch.cuda.max_memory_allocated(args.device) / 2**30:>10.1f}"
                   if args.device.startswith("cuda") else "")
            print(f"{recipe:<14}{built:>9.1f}{counts['trainable']:>13,}{counts['total']:>14,}"
                  f"{100 * counts['trainable'] / counts['total']:>10.4f}%{sec:>9.2f}{ips:>10.2f}{ratio:>8}{mem}")
            del module
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
