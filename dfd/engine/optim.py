"""Optimisers and learning-rate schedules: what ``optim:`` (``conf/optim/*.yaml``) configures, in one place.

* :func:`build_optimizer` — the configured ``torch.optim`` optimiser over the strategy's parameter groups,
  wrapped in :class:`SAM` when ``optim.sam`` is set.
* :func:`lr_factor` — the per-step LR multiplier of ``optim.scheduler``:

  ``cosine``           linear warm-up, then one cosine decay to ``min_lr_ratio`` x lr (dfd's default);
  ``cosine_restarts``  GenD's: linear warm-up from ``min_lr_ratio`` to 1, then cosine annealing with warm
                       restarts every ``cycle_epochs`` epochs down to ``min_lr_ratio`` x lr (torch's
                       ``CosineAnnealingWarmRestarts`` with T_mult = 1, per step; the warm-up happens once);
  ``linear_decay``     SBI's ``LinearDecayLR``: constant until ``decay_start`` (fraction of training), then
                       linear to 0 at the last step (per step; the paper steps per epoch: 75 of 100 epochs);
  ``constant``         no schedule.

  Warm-up length: ``warmup`` (a fraction of all steps, or a step count if >= 1), or ``warmup_epochs`` when set.

SAM (Foret et al., "Sharpness-Aware Minimization", ICLR 2021), as the SBI paper trains with it: each step
evaluates the loss twice, at w (gradient g) and at w + rho g/||g|| (gradient g'), and the base optimiser
steps from w with g'. Lightning's automatic optimisation hands ``optimizer.step`` a closure that runs
``training_step`` + backward (gradient clipping included, after each backward), so SAM simply calls it twice.
What it cannot do is refused in one line: gradient accumulation (the second evaluation would see only the last
micro-batch) and ``16-mixed`` precision (the GradScaler steps without a closure); ``bf16-mixed`` and 32-bit
work, and so does DDP (gradients are all-reduced in each backward).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from hydra.utils import instantiate

from dfd.errors import ConfigError

SCHEDULERS = ("cosine", "cosine_restarts", "linear_decay", "constant")


def need(cfg: Mapping, key: str) -> Any:
    """``cfg[key]``, refused in one line when absent. The defaults of ``optim.*`` live in ``conf/optim/*.yaml`` and
    only there: a config without the key (a hand-made dict) fails instead of training with a value that silently
    differs from the presets'. ``warmup_epochs`` and ``sam`` are optional (absent = not used)."""
    if key not in cfg:
        raise ConfigError(f"optim.{key} is not set; every conf/optim/*.yaml sets it (choose a preset with "
                          "optim=adamw|sgd|sam, or give the key)")
    return cfg[key]


# ----------------------------------------------------------------------------------------------- schedules
def warmup_cosine(total_steps: int, warmup: float, min_lr_ratio: float) -> Callable[[int], float]:
    """LR multiplier per step: linear warm-up (a fraction of the steps, or a count if >= 1), then cosine."""
    warm = int(warmup * total_steps) if warmup < 1 else int(warmup)
    warm = min(warm, max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = min((step - warm) / max(total_steps - warm, 1), 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def cosine_restarts(warm: int, cycle: int, min_lr_ratio: float) -> Callable[[int], float]:
    """GenD's schedule per step: warm-up from ``min_lr_ratio`` to 1 over ``warm`` steps, then cosine annealing
    from 1 to ``min_lr_ratio`` restarted every ``cycle`` steps."""
    cycle = max(int(cycle), 1)

    def factor(step: int) -> float:
        if step < warm:
            return min_lr_ratio + (1 - min_lr_ratio) * step / warm
        t = (step - warm) % cycle
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t / cycle))

    return factor


def linear_decay(total_steps: int, start: int, warm: int = 0) -> Callable[[int], float]:
    """SBI's schedule per step: (optional warm-up), constant until ``start``, then linear to 0 at the end."""
    start = min(max(int(start), warm), max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if step < start:
            return 1.0
        return max(total_steps - step, 0) / max(total_steps - start, 1)

    return factor


def lr_factor(cfg: Mapping, total_steps: int, steps_per_epoch: float) -> Callable[[int], float] | None:
    """The per-step LR multiplier ``optim.scheduler`` asks for, or None for a constant LR.

    Why multipliers for torch's ``LambdaLR`` rather than torch's or timm's schedulers: one multiplier scales
    every parameter group alike, so layer-wise LR decay (groups with different LRs) keeps its ratios through
    warm-up and decay, and the floor is ``min_lr_ratio`` x each group's LR; torch's ``CosineAnnealingLR`` /
    ``CosineAnnealingWarmRestarts`` and timm's ``CosineLRScheduler`` take one absolute floor for all groups, and
    their warm-ups start from other values than the papers' (GenD: from ``min_lr_ratio``; SBI: ``LinearDecayLR``).
    """
    name = need(cfg, "scheduler")
    if name in (None, "none", "constant"):
        return None
    if name not in SCHEDULERS:
        raise ConfigError(f"optim.scheduler={name!r} is not valid; choose one of {', '.join(SCHEDULERS)}")
    total = max(int(total_steps), 1)
    per_epoch = max(float(steps_per_epoch), 1.0)
    if cfg.get("warmup_epochs") is not None:
        warm = int(round(float(cfg["warmup_epochs"]) * per_epoch))
    else:
        w = float(need(cfg, "warmup") or 0.0)
        warm = int(w * total) if w < 1 else int(w)
    warm = min(warm, max(total - 1, 0))
    if name == "cosine":
        return warmup_cosine(total, warm, float(need(cfg, "min_lr_ratio")))
    if name == "cosine_restarts":
        cycle = int(round(float(need(cfg, "cycle_epochs")) * per_epoch))
        return cosine_restarts(warm, cycle, float(need(cfg, "min_lr_ratio")))
    return linear_decay(total, int(float(need(cfg, "decay_start")) * total), warm)


# ----------------------------------------------------------------------------------------------- SAM
class SAM(torch.optim.Optimizer):
    """Sharpness-Aware Minimisation around a base optimiser (SGD in the SBI paper), stepping with a closure.

    Args:
        params: parameters or parameter groups (per-group ``lr``/``weight_decay`` are kept).
        base_optimizer: the base optimiser's class (or a partial), built over the same groups.
        rho: radius of the ascent step (the paper's and SBI's 0.05).
        adaptive: ASAM (Kwon et al. 2021): the ascent step scaled by |w| per element.
        **kwargs: the base optimiser's arguments (lr, momentum, weight_decay...).

    The base optimiser owns the groups and the state (momentum buffers): ``state_dict`` is the base's, so
    checkpoints resume exactly and LR schedulers act on the groups both share.
    """

    def __init__(self, params: Any, base_optimizer: Callable[..., torch.optim.Optimizer], rho: float = 0.05,
                 adaptive: bool = False, **kwargs: Any) -> None:
        if rho <= 0:
            raise ConfigError(f"optim.sam.rho must be > 0, got {rho}")
        super().__init__(params, dict(rho=float(rho), adaptive=bool(adaptive), **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self.state = self.base_optimizer.state
        self._eps: dict[torch.Tensor, torch.Tensor] = {}
        #: True while the closure runs at the perturbed weights (the module does not log that pass).
        self.perturbed = False

    @torch.no_grad()
    def _grad_norm(self) -> torch.Tensor:
        norms = [((p.abs() if g["adaptive"] else 1.0) * p.grad).norm(2)
                 for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not norms:
            return torch.zeros(())
        device = norms[0].device
        return torch.stack([n.to(device) for n in norms]).norm(2)

    @torch.no_grad()
    def first_step(self) -> None:
        """w -> w + e(w), e = rho * g / ||g|| (ASAM: scaled by w² per element)."""
        norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                e = (p.pow(2) if group["adaptive"] else 1.0) * p.grad * scale.to(p)
                p.add_(e)
                self._eps[p] = e

    @torch.no_grad()
    def second_step(self) -> None:
        """Back to w, then the base optimiser's step with the gradient taken at w + e(w)."""
        for p, e in self._eps.items():
            p.sub_(e)
        self._eps.clear()
        self.base_optimizer.step()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One SAM step; ``closure`` recomputes the loss and its gradients (zeroing them first)."""
        if closure is None:
            raise RuntimeError("SAM needs a closure that recomputes the loss and gradients (Lightning's automatic "
                               "optimisation passes one; trainer.precision=16-mixed does not: use bf16-mixed)")
        closure = torch.enable_grad()(closure)
        loss = closure()  # gradient at w
        self.first_step()
        self.perturbed = True
        try:
            closure()  # gradient at w + e(w)
        finally:
            self.perturbed = False
        self.second_step()
        return loss

    def state_dict(self) -> dict:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state


def build_optimizer(cfg: Mapping, groups: list[dict], trainer: Any = None) -> torch.optim.Optimizer:
    """The configured optimiser over ``groups`` (``optim.optimizer``; wrapped in SAM when ``optim.sam`` is set).

    ``trainer`` (a Lightning Trainer) lets SAM refuse, in one line, what it cannot do.
    """
    opt_cfg = dict(need(cfg, "optimizer"))
    opt_cfg["_partial_"] = True
    make = instantiate(opt_cfg)
    lr, wd = float(need(cfg, "lr")), float(need(cfg, "weight_decay"))
    sam = cfg.get("sam")
    if not sam:
        return make(groups, lr=lr, weight_decay=wd)
    if trainer is not None:
        if int(getattr(trainer, "accumulate_grad_batches", 1) or 1) > 1:
            raise ConfigError("optim.sam cannot accumulate gradients (its second gradient would see only the last "
                              "micro-batch): set trainer.accumulate_grad_batches=1 or drop optim.sam")
        if str(getattr(trainer, "precision", "")) in ("16-mixed", "16"):
            raise ConfigError("optim.sam needs a closure-driven step, which fp16's GradScaler does not do: use "
                              "trainer.precision=bf16-mixed or 32-true")
    sam = dict(sam)
    unknown = sorted(set(sam) - {"rho", "adaptive"})
    if unknown:
        raise ConfigError(f"optim.sam: unknown key(s) {', '.join(unknown)}; valid: rho, adaptive")
    return SAM(groups, make, lr=lr, weight_decay=wd, **sam)
