"""What made a run: its command-line overrides (Hydra) and, under a W&B sweep agent, the sweep's parameters.

Reports tell runs apart by these, so a sweep over ``optim.lr`` yields one row per learning rate instead of
collapsing into one. Two records go into results.json:

* ``train.overrides`` — ``{key: value}`` of the overrides that define the *trained model* (everything but
  output paths, loggers, worker counts, added test sets, seed and study name, which have their own fields):
  the identity of a training configuration. Values are read back from the resolved config (``optim.lr=1e-3``
  and ``optim.lr=0.001`` are the same run); a config-group choice records the option name.
* ``invocation`` — this command's own overrides as typed, the multirun job number and the W&B sweep
  (``id``, ``run_id``, ``parameters``) when a W&B agent started the run.

A W&B agent starts each run with ``WANDB_SWEEP_ID``, ``WANDB_RUN_ID`` and ``WANDB_SWEEP_PARAM_PATH`` (a YAML
file ``{param: {value: v}}``) in the environment, and passes the parameters on the command line through
``sweep.yaml``'s ``${args_no_hyphens}``: dfd records them from both, so a sweep whose command omits them is
still told apart.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: Override keys (and their sub-keys) that change where or how a run is recorded, not the trained model.
NOT_CONFIG_KEYS = (
    "seed", "experiment", "experiment_name", "paths", "hydra", "logger", "ckpt_path", "test_sets", "testbed", "robustness",
    "data.num_workers", "data.eval_batch_size", "data.include_train_test", "data.skip_missing_test_sets",
    "callbacks.progress_bar",
    "callbacks.lr_monitor", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
)


def task_overrides() -> list[str]:
    """This Hydra job's overrides as typed (a multirun job's own values included); [] outside a Hydra run."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return [str(o) for o in HydraConfig.get().overrides.task]
    except Exception:  # composed without a Hydra run (tests, notebooks)
        return []


def multirun_job() -> int | None:
    """The multirun job number, None for a single run."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        return int(hc.job.num) if str(hc.mode).endswith("MULTIRUN") else None
    except Exception:
        return None


def wandb_sweep() -> dict[str, Any] | None:
    """The W&B sweep this process runs for (an agent set its environment), or None."""
    sweep_id = os.environ.get("WANDB_SWEEP_ID")
    if not sweep_id:
        return None
    params: dict[str, Any] = {}
    path = os.environ.get("WANDB_SWEEP_PARAM_PATH")
    if path and Path(path).is_file():
        import yaml

        raw = yaml.safe_load(Path(path).read_text()) or {}
        raw.pop("wandb_version", None)
        params = {str(k): (v.get("value") if isinstance(v, dict) and "value" in v else v) for k, v in raw.items()}
    return {"id": sweep_id, "run_id": os.environ.get("WANDB_RUN_ID"), "parameters": params}


def _ignored(key: str) -> bool:
    key = key.lstrip("+~")
    return any(key == k or key.startswith(k + ".") or key.startswith(k + "/") for k in NOT_CONFIG_KEYS)


def _jsonable(value: Any) -> Any:
    if isinstance(value, DictConfig) or OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def config_overrides(cfg: DictConfig, overrides: Sequence[str], sweep: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
    """``{key: value}`` of the overrides that define the trained model (see the module docstring)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out: dict[str, Any] = {}
    parsed = OverridesParser.create().parse_overrides(list(overrides)) if overrides else []
    for o in parsed:
        key = o.key_or_group + (f"@{o.package}" if o.package else "")
        if _ignored(key) or (o.package and _ignored(o.package)):
            continue
        if o.is_delete():
            out[f"~{key}"] = None
            continue
        value = o.value()
        current = OmegaConf.select(cfg, o.key_or_group, default=None) if not o.package else None
        if current is not None and not OmegaConf.is_config(current):
            value = current  # the resolved value: 1e-3 and 0.001 are one configuration
        out[key] = _jsonable(value)
    for key, value in ((sweep or {}).get("parameters") or {}).items():
        if key not in out and not _ignored(key):
            current = OmegaConf.select(cfg, key, default=None)
            out[key] = _jsonable(value if current is None or OmegaConf.is_config(current) else current)
    return dict(sorted(out.items()))


def invocation(command: str, overrides: Sequence[str], sweep: dict[str, Any] | None) -> dict[str, Any]:
    """This command's own record: name, overrides as typed, multirun job, W&B sweep."""
    return {"command": command, "overrides": list(overrides), "multirun_job": multirun_job(), "sweep": sweep}
