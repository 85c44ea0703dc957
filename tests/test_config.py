"""Every option of every config group composes, resolves and points at importable code."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.utils import get_class, get_method
from omegaconf import OmegaConf

from dfd.cli._hydra import config_dir, group_choices
from tests.conftest import compose

GROUPS = ["dataset", "model", "finetune", "augment", "optim", "trainer", "logger", "callbacks", "paths",
          "experiment", "debug"]
CASES = [(g, c) for g in GROUPS for c in group_choices(config_dir(), g)]


def _targets(node):
    if isinstance(node, dict):
        if "_target_" in node:
            yield node["_target_"]
        for v in node.values():
            yield from _targets(v)
    elif isinstance(node, list):
        for v in node:
            yield from _targets(v)


def test_required_groups_have_options():
    conf = config_dir()
    for group in GROUPS:
        assert group_choices(conf, group), f"config group {group} has no options"
    assert {"cpu", "gpu", "ddp", "ddp_multinode"} <= set(group_choices(conf, "trainer"))
    assert {"wandb", "csv", "none"} <= set(group_choices(conf, "logger"))
    assert {"fast_dev_run", "overfit", "limit"} <= set(group_choices(conf, "debug"))


@pytest.mark.parametrize(("group", "choice"), CASES, ids=[f"{g}={c}" for g, c in CASES])
def test_option_composes_and_resolves(group, choice, tmp_path):
    cfg = compose("train", [f"{group}={choice}", f"paths.run_dir={tmp_path}", f"paths.root_dir={tmp_path}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["seed"] == 42 or group == "experiment"
    for target in _targets(resolved):
        try:
            get_class(target)
        except Exception:
            get_method(target)  # factories are functions


def test_eval_config_composes(tmp_path):
    cfg = compose("eval", ["ckpt_path=x.ckpt", f"paths.run_dir={tmp_path}", "+dataset@test_sets.syn_b=synthetic",
                           "test_sets.syn_b.domain=b"])
    assert cfg.test_sets.syn_b.name == "synthetic_b"


def test_test_sets_are_named_by_dataset(tmp_path):
    cfg = compose("train", ["+dataset@test_sets.celebdf_v2=celebdf_v2", f"paths.run_dir={tmp_path}"])
    assert cfg.test_sets.celebdf_v2.name == "celebdf_v2"
    assert cfg.dataset.name == "synthetic_a"


@pytest.mark.parametrize("argv", [["model=nope"], ["dataset=imagenet"], ["+dataset@test_sets.x=nope"]])
def test_bad_choice_is_one_line_listing_valid_choices(argv):
    proc = subprocess.run([sys.executable, "-m", "dfd.cli.train", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    group = argv[0].lstrip("+").split("@")[0].split("=")[0]
    assert "valid choices" in lines[0]
    for valid in group_choices(config_dir(), group):
        assert valid in lines[0]
