"""Names that older dfd versions wrote into files it still reads: module paths moved by the one-package-per-stage
layout.

Checkpoints keep the training dataset's config (``hyper_parameters.meta.dataset``, with its ``_target_``) so
``dfd-eval`` and ``dfd-export`` can rebuild the dataset; results.json files keep their resolved config. A
checkpoint trained before the move names ``dfd.data.sources.ffpp.FFPP``; :func:`upgrade_targets` maps it to
``dfd.sources.ffpp.FFPP`` before instantiating. Imports nothing: every layer may use it.
"""

from __future__ import annotations

from typing import Any

#: Old module prefix -> new one, longest first (dfd 0.1 before the layout change -> now).
MOVED_MODULES: dict[str, str] = {
    "dfd.data.synthetic.SyntheticSource": "dfd.synthetic.source.SyntheticSource",
    "dfd.data.sources": "dfd.sources",
    "dfd.data.synthetic": "dfd.synthetic.draw",
}


def current_target(target: str) -> str:
    """``target`` (a dotted ``_target_``) as it is named today."""
    for old in sorted(MOVED_MODULES, key=len, reverse=True):
        if target == old or target.startswith(old + "."):
            return MOVED_MODULES[old] + target[len(old):]
    return target


def upgrade_targets(cfg: Any) -> Any:
    """A plain config (dicts and lists) with every ``_target_`` renamed by :func:`current_target`."""
    if isinstance(cfg, dict):
        return {k: current_target(v) if k == "_target_" and isinstance(v, str) else upgrade_targets(v)
                for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [upgrade_targets(v) for v in cfg]
    return cfg
