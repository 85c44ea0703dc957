"""Fine-tuning strategies: which parameters train, with which learning rate, and a peft-free export."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence

import torch
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

    def regularization(self, model: Detector) -> dict[str, torch.Tensor]:
        """Weighted extra loss terms this strategy adds to the training loss, by name (none by default)."""
        return {}

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
    """Train normalisation affines (LayerNorm/BatchNorm/GroupNorm) and the head; running stats keep adapting.

    On the CLIP backbones this is GenD's LayerNorm-only set exactly: every LayerNorm's γ and β, i.e. norm_pre
    (HF pre_layrnorm), each block's norm1/norm2 and the final norm (post_layernorm) — 50 LayerNorms, 102,400
    parameters in ViT-L/14 — selected by type, so no misspelt name is missed.
    """

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


class SVDResidual(FinetuneStrategy):
    """Effort: every attention projection decomposed by SVD, its last `k` singular directions trained.

    timm's fused qkv is split into its q, k and v blocks, each decomposed separately; the output projection
    too (`target_modules` overrides the choice). The top singular directions, biases and every other backbone
    parameter stay frozen; the head trains. `orthogonality` and `energy` weight Effort's optional
    regularisers (mean over the decomposed matrices; 0 = the released face config, CE only). See
    `dfd.models.svd_residual`; `merge_for_export` folds the factors back into plain Linear weights.
    """

    name = "svd_residual"

    def __init__(self, k: int = 1, orthogonality: float = 0.0, energy: float = 0.0,
                 target_modules: Sequence[str] | None = None) -> None:
        if k < 1:
            raise ValueError(f"finetune.k must be >= 1, got {k}")
        if orthogonality < 0 or energy < 0:
            raise ValueError(f"finetune.orthogonality and finetune.energy must be >= 0, got {orthogonality}, {energy}")
        self.k, self.orthogonality, self.energy = int(k), float(orthogonality), float(energy)
        self.target_modules = list(target_modules) if target_modules else None

    def targets(self, model: Detector) -> dict[str, int]:
        """Module name -> row blocks (3 for a fused qkv, 2 for a fused kv, else 1)."""
        linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        if self.target_modules:
            names = [n for n in linears if any(n == t or n.endswith(f".{t}") for t in self.target_modules)]
        else:
            names = [n for n in linears if n.endswith(_ATTENTION_PROJECTIONS)]
        if not names:
            raise ValueError(
                f"svd_residual found no attention projections in {type(model).__name__} "
                f"({getattr(model, 'arch', '')}): it needs a ViT-style backbone, or finetune.target_modules")
        return {n: 3 if n.endswith("qkv") else 2 if n.endswith("kv") else 1 for n in names}

    def prepare(self, model: Detector) -> None:
        """Replace each target Linear by an SVDResidualLinear (one SVD per block, at the model's precision)."""
        from dfd.models.svd_residual import SVDResidualLinear

        keep_basis = self.orthogonality > 0
        for name, splits in self.targets(model).items():
            parent, _, child = name.rpartition(".")
            layer = SVDResidualLinear(model.get_submodule(name), k=self.k, splits=splits, keep_basis=keep_basis)
            setattr(model.get_submodule(parent) if parent else model, child, layer)

    def trainable(self, model: Detector) -> set[str]:
        """The residual factors and the head."""
        names = {n for n, _ in model.named_parameters() if n.rsplit(".", 1)[-1] in ("U_res", "S_res", "V_res")}
        return names | set(model.head_param_names())

    def regularization(self, model: Detector) -> dict[str, torch.Tensor]:
        """Weighted mean orthogonality / energy losses over the decomposed matrices (only when weighted > 0)."""
        if not (self.orthogonality or self.energy):
            return {}
        from dfd.models.svd_residual import SVDResidualLinear

        layers = [m for m in model.modules() if isinstance(m, SVDResidualLinear)]
        count = sum(m.splits for m in layers)
        out = {}
        if self.orthogonality:
            out["orthogonality"] = self.orthogonality * sum(m.orthogonality_loss() for m in layers) / count
        if self.energy:
            out["energy"] = self.energy * sum(m.energy_loss() for m in layers) / count
        return out


# timm's attention projections: ViT/Eva fused qkv, unfused q/k/v, the output projection.
_ATTENTION_PROJECTIONS = (".attn.qkv", ".attn.q_proj", ".attn.k_proj", ".attn.v_proj", ".attn.proj")


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
    """A copy with LoRA and SVD residuals folded into plain weights, nothing frozen: loads into a fresh model."""
    from dfd.models.svd_residual import SVDResidualLinear

    plain = copy.deepcopy(model)
    for name in [n for n, m in plain.named_modules() if isinstance(m, SVDResidualLinear)]:
        parent_name, _, child = name.rpartition(".")
        setattr(plain.get_submodule(parent_name) if parent_name else plain, child, plain.get_submodule(name).merged())
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
