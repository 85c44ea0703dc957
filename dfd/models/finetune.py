"""Fine-tuning strategies: which parameters train, with which learning rate, and a peft-free export."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from dfd.errors import ConfigError
from dfd.models.base import Detector

log = logging.getLogger(__name__)

_NORMS = (nn.LayerNorm, nn.GroupNorm, _BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.RMSNorm)


class FinetuneStrategy:
    """Base strategy: `apply` freezes what the strategy leaves out and returns AdamW parameter groups."""

    name = "full"

    def trainable(self, model: Detector) -> set[str]:
        """Names of the parameters this strategy trains."""
        return {n for n, _ in model.named_parameters()}

    def prepare(self, model: Detector) -> None:
        """Change the model's structure before freezing (LoRA injects adapters here)."""

    def apply(self, model: Detector, lr: float, weight_decay: float) -> list[dict]:
        """Freeze, keep frozen BatchNorm statistics fixed, log the counts and return the optimizer's groups."""
        self.prepare(model)
        keep = self.trainable(model)
        for name, param in model.named_parameters():
            param.requires_grad_(name in keep)
        freeze_norm_stats(model)
        counts = self.summary(model)
        log.info(
            "finetune %s: %d of %d parameters trainable (%.2f%%)",
            self.name, counts["trainable"], counts["total"], 100.0 * counts["trainable"] / max(counts["total"], 1),
        )
        return self.param_groups(model, lr, weight_decay)

    def param_groups(self, model: Detector, lr: float, weight_decay: float) -> list[dict]:
        """One lr for everything; no weight decay on biases, norms and tokens."""
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        return _split_decay(model, names, lr, weight_decay, "all")

    def summary(self, model: nn.Module) -> dict[str, int]:
        """Trainable and total parameter counts, for logs and the results file."""
        return {
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in model.parameters()),
        }


class Full(FinetuneStrategy):
    """Train every parameter."""

    name = "full"


class LinearProbe(FinetuneStrategy):
    """Train the classification head only."""

    name = "linear_probe"

    def trainable(self, model: Detector) -> set[str]:
        """The head's parameters."""
        return set(model.head_param_names())


class LastN(FinetuneStrategy):
    """Train the last `n` blocks (the architecture's own block list, see `Detector.layer_groups`) and the head."""

    name = "last_n"

    def __init__(self, n: int = 2) -> None:
        if n < 0:
            raise ConfigError(f"finetune.n must be >= 0, got {n}")
        self.n = n

    def trainable(self, model: Detector) -> set[str]:
        """Parameters of the last n groups before the head, plus the head."""
        groups = model.layer_groups()
        return {name for g in groups[max(len(groups) - 1 - self.n, 0):] for name in g}


class NormOnly(FinetuneStrategy):
    """Train normalisation affines (LayerNorm/BatchNorm/GroupNorm) and the head; running stats keep adapting."""

    name = "norm_only"

    def trainable(self, model: Detector) -> set[str]:
        """Norm-layer parameters and the head."""
        names = set(model.head_param_names())
        for mod_name, module in model.named_modules():
            # By type, or by name for norms outside torch.nn (timm's GlobalResponseNorm in ConvNeXt V2).
            if isinstance(module, _NORMS) or re.search(r"Norm(\dd)?$", type(module).__name__):
                names.update(f"{mod_name}.{p}" for p, _ in module.named_parameters(recurse=False))
        return names


class LLRD(FinetuneStrategy):
    """Train everything, with the lr shrinking by `decay` per layer group from the head back to the stem."""

    name = "llrd"

    def __init__(self, decay: float = 0.75) -> None:
        if not 0.0 < decay <= 1.0:
            raise ConfigError(f"finetune.decay must be in (0, 1], got {decay}")
        self.decay = decay

    def param_groups(self, model: Detector, lr: float, weight_decay: float) -> list[dict]:
        """One lr per layer group: lr * decay ** (distance from the head)."""
        groups = model.layer_groups()
        out: list[dict] = []
        for i, names in enumerate(groups):
            scale = self.decay ** (len(groups) - 1 - i)
            out += _split_decay(model, names, lr * scale, weight_decay, f"layer{i}")
        return out


class LoRA(FinetuneStrategy):
    """Low-rank adapters (peft) on the architecture's default layers, the head trained in full."""

    name = "lora"

    def __init__(
        self, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0, target_modules: Sequence[str] | None = None
    ) -> None:
        self.rank, self.alpha, self.dropout = rank, alpha, dropout
        self.target_modules = list(target_modules) if target_modules else None

    def prepare(self, model: Detector) -> None:
        """Inject LoRA layers in place (peft is imported only here, so plain models never need it)."""
        from peft import LoraConfig, inject_adapter_in_model

        head_modules = sorted({n.rsplit(".", 1)[0] for n in model.head_param_names()})
        targets = self.target_modules or model.lora_targets()
        if not targets:
            raise ConfigError(f"LoRA found no target layers in {type(model).__name__}; set finetune.target_modules")
        config = LoraConfig(
            r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets,
            exclude_modules=head_modules,
        )
        inject_adapter_in_model(config, model)

    def trainable(self, model: Detector) -> set[str]:
        """Adapter weights and the head."""
        return {n for n, _ in model.named_parameters() if ".lora_" in n} | set(model.head_param_names())


def _split_decay(model: nn.Module, names: Sequence[str], lr: float, weight_decay: float, tag: str) -> list[dict]:
    # Biases, norm affines and position/class tokens are not decayed (the usual AdamW recipe).
    params = dict(model.named_parameters())
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    decay, no_decay = [], []
    for name in names:
        p = params[name]
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    groups = [
        {"params": decay, "lr": lr, "weight_decay": weight_decay, "name": f"{tag}_decay"},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{tag}_no_decay"},
    ]
    return [g for g in groups if g["params"]]


def freeze_norm_stats(model: Detector) -> list[str]:
    """Record BatchNorms whose parameters are all frozen so `model.train()` keeps them in eval mode."""
    any_frozen = any(not p.requires_grad for p in model.parameters())
    frozen = []
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm) and module.track_running_stats:
            own = list(module.parameters(recurse=False))
            if (own and not any(p.requires_grad for p in own)) or (not own and any_frozen):
                frozen.append(name)
    model.frozen_norms = frozen
    model.train(model.training)
    return frozen


def merge_for_export(model: Detector) -> Detector:
    """A copy with LoRA folded into plain weights and nothing frozen: loads into a fresh model, needs no peft."""
    plain = copy.deepcopy(model)
    # Duck-typed so exporting a model without adapters never imports peft.
    tuned = [(n, m) for n, m in plain.named_modules() if hasattr(m, "get_base_layer") and hasattr(m, "merge")]
    for name, module in tuned:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(plain.get_submodule(parent_name) if parent_name else plain, child, module.get_base_layer())
    plain.frozen_norms = []
    # peft leaves its config on the model it adapted; a plain model must not reference peft objects.
    plain.__dict__.pop("peft_config", None)
    for p in plain.parameters():
        p.requires_grad_(True)
    return plain.train(model.training)
