"""Shared test plumbing: compose dfd's real configs, keep every run inside pytest's tmp dirs, stay offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)  # tests never log online
os.environ["WANDB_MODE"] = "offline"

REPO = Path(__file__).resolve().parents[1]


def compose(config_name: str = "train", overrides: list[str] | None = None):
    """Compose a dfd root config exactly as the CLI would (without running Hydra's job machinery)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from dfd.cli._hydra import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))


@pytest.fixture
def compose_cfg():
    return compose


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One synthetic-data cache for the session: each (domain, size) set is generated once."""
    return tmp_path_factory.mktemp("dfd_cache")
