"""Shared plumbing for dfd's Hydra entry points: where the configs are, and friendly override errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def config_dir() -> Path:
    """The ``conf/`` tree: ``$DFD_CONFIG_DIR``, else the one beside the package (editable install / checkout)."""
    env = os.environ.get("DFD_CONFIG_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "conf")
    for c in candidates:
        if (c / "paths" / "default.yaml").is_file():
            return c
    raise SystemExit(
        f"error: dfd's config tree (conf/paths/default.yaml) not found in {[str(c) for c in candidates]}; "
        "install dfd from a checkout (`pip install -e .`) or set DFD_CONFIG_DIR=<checkout>/conf"
    )


def group_choices(conf: Path, group: str) -> list[str]:
    """Names of the options of a config group (``model`` -> ``['convnextv2', ...]``)."""
    folder = conf / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def check_overrides(args: list[str], conf: Path) -> str | None:
    """Return a one-line error for the first ``group=choice`` override naming an option that does not exist.

    Hydra reports these as a multi-line traceback-like block; users sweeping dozens of runs want one line
    that names the valid choices.
    """
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        group = key.split("@", 1)[0]
        if "." in group or not (conf / group).is_dir() or value in ("", "null"):
            continue
        for choice in value.split(",") if "," in value and not value.startswith("[") else [value]:
            choice = choice.strip()
            if choice.startswith(("range(", "choice(", "glob(", "interval(")):
                continue
            if not (conf / group / f"{choice}.yaml").is_file():
                valid = ", ".join(group_choices(conf, group))
                return f"error: '{arg}' is not a valid choice for '{group}'; valid choices: {valid}"
    return None


def missing_groups(args: list[str], conf: Path, config_name: str) -> str | None:
    """One-line error when a mandatory group (``dataset: ???`` in the root config) is not given."""
    import yaml

    root = yaml.safe_load((conf / f"{config_name}.yaml").read_text()) or {}
    given = {a.split("=", 1)[0].lstrip("+~").split("@", 1)[0] for a in args if "=" in a}
    for entry in root.get("defaults", []):
        if isinstance(entry, dict):
            for group, choice in entry.items():
                if choice == "???" and group not in given:
                    valid = ", ".join(group_choices(conf, group))
                    return f"error: choose a {group}: add '{group}=<name>' to the command; valid choices: {valid}"
    return None


def register_resolvers() -> None:
    """OmegaConf resolvers used across dfd's configs (idempotent)."""
    if not OmegaConf.has_resolver("dfd.wandb_offline"):
        # Offline unless the user explicitly asked for online logging (or logged in with a key).
        OmegaConf.register_new_resolver(
            "dfd.wandb_offline",
            lambda: os.environ.get("WANDB_MODE", "").lower() != "online" and not os.environ.get("WANDB_API_KEY"),
        )
    if not OmegaConf.has_resolver("dfd.path_key"):
        from dfd.data.cache import path_key

        # ${dfd.path_key:${.root}}: a short key per dataset root, so default crop caches never mix two roots.
        OmegaConf.register_new_resolver("dfd.path_key", path_key)
    from dfd.data.extract import register_configs

    register_configs()  # conf/extract.yaml's `extract:` block: the crop contract's defaults, one home


def _user_error(exc: BaseException) -> BaseException | None:
    """The dfd error behind an exception (Hydra wraps errors raised while instantiating), if it is one."""
    from dfd.data.schema import SchemaError
    from dfd.data.sources.base import DatasetError

    user = (DatasetError, SchemaError, FileNotFoundError, NotADirectoryError)
    seen = exc
    while seen is not None:
        if isinstance(seen, user) or type(seen).__name__.endswith(("WeightsError", "ExtractError")):
            return seen
        seen = seen.__cause__
    return None


def _friendly(fn: Callable[[DictConfig], object]) -> Callable[[DictConfig], object]:
    """Bad input (wrong root, missing weights, missing manifest) -> one line on stderr and exit 2, no traceback."""
    import functools

    @functools.wraps(fn)
    def run(cfg: DictConfig) -> object:
        try:
            return fn(cfg)
        except Exception as exc:
            user = _user_error(exc)
            if user is None:
                raise
            msg = str(user).strip().splitlines()[0] if str(user).strip() else type(user).__name__
            print(msg if msg.startswith("error") else f"error: {msg}", file=sys.stderr)
            raise SystemExit(2) from None

    return run


def hydra_entry(config_name: str) -> Callable[[Callable[[DictConfig], object]], Callable[[], object]]:
    """Decorator turning ``fn(cfg)`` into a console-script ``main()`` over dfd's config tree."""

    def wrap(fn: Callable[[DictConfig], object]) -> Callable[[], object]:
        def main() -> object:
            import hydra

            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait ~47 s on hub retries offline
            conf = config_dir()
            error = check_overrides(sys.argv[1:], conf) or missing_groups(sys.argv[1:], conf, config_name)
            if error:
                print(error, file=sys.stderr)
                raise SystemExit(2)
            register_resolvers()
            return hydra.main(version_base="1.3", config_path=str(conf), config_name=config_name)(_friendly(fn))()

        main.__doc__ = fn.__doc__
        return main

    return wrap
