"""Model registry and `create_model`: the one place configs turn into detectors."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from dfd.errors import ConfigError
from dfd.models.base import Detector

_REGISTRY: dict[str, Callable[..., Detector]] = {}


def register_model(name: str) -> Callable[[Callable[..., Detector]], Callable[..., Detector]]:
    """Decorator: make a builder reachable as `create_model(name=...)` and `model.name=<name>` in configs."""

    def deco(fn: Callable[..., Detector]) -> Callable[..., Detector]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} registered twice ({_REGISTRY[name].__module__} and {fn.__module__})")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Registered model names (what `model.name` accepts)."""
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> Detector:
    """Build a registered detector; Hydra's `_target_` for every `conf/model/*.yaml`."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models())} "
                       f"(or use name=timm arch=<any timm model name>)")
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as e:
        # Extra config keys travel as **kwargs down to the timm constructor: a typo there is the user's.
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if bad and bad.group(1) in kwargs:
            raise ConfigError(f"model.{bad.group(1)} is not an argument of model {name!r} ({e})") from e
        raise
