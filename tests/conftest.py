"""Shared test plumbing: compose dfd's real configs, keep every run inside pytest's tmp dirs, stay offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download (dfd itself leaves it to the user)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)  # tests never log online
os.environ["WANDB_MODE"] = "offline"

REPO = Path(__file__).resolve().parents[1]


def compose(config_name: str = "train", overrides: list[str] | None = None, runtime: bool = False):
    """Compose a dfd root config exactly as the CLI would (without running Hydra's job machinery).

    ``runtime=True`` also installs Hydra's runtime info (config-group choices), as a real run has it, so
    in-process runs label results exactly like ``dfd-train`` does.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from dfd.cli._hydra import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides or []), return_hydra_config=runtime)
    if runtime:
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


@pytest.fixture
def compose_cfg():
    return compose


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One synthetic-data cache for the session: each (domain, size) set is generated once."""
    return tmp_path_factory.mktemp("dfd_cache")
