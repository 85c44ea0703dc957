"""Every option of every config group composes, resolves and points at importable code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def _build_all(node, build):
    """Instantiate every `_target_` node (of a dict or list of them) with ``build``; return how many."""
    if isinstance(node, dict) and "_target_" in node:
        build(node)
        return 1
    values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return sum(_build_all(v, build) for v in values)


def _build_option(group: str, cfg, tmp_path) -> None:
    """Build what ``group``'s option configures, the way the engine does (data never read from disk)."""
    import albumentations as A
    import numpy as np
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate

    from dfd.models import Detector, create_model
    from dfd.sources.base import DatasetSource

    resolved = OmegaConf.to_container(cfg, resolve=True)
    if group in ("dataset", "experiment"):
        for node in [resolved["dataset"], *resolved["test_sets"].values(), *resolved["train_mix"].values()]:
            # Keys dfd reads itself and pops first (the mix weight, a test set's display name, optional...).
            from dfd.cli._hydra import EXTRA_KEYS

            node = {k: v for k, v in node.items() if k not in set().union(*EXTRA_KEYS.values())}
            assert isinstance(instantiate(node), DatasetSource)
    if group in ("model", "experiment"):
        model = instantiate({**resolved["model"], "pretrained": False})  # weights: tests/test_weights.py
        assert isinstance(model, Detector)
    if group == "finetune":
        groups = instantiate(resolved["finetune"]).apply(create_model("timm", arch="test_vit", img_size=32), 1e-3, 0.05)
        assert any(p.requires_grad for g in groups for p in g["params"])
    if group == "augment":
        pipe = A.Compose([instantiate(t) for t in resolved["augment"]["train"]])
        image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        for _ in range(8):  # random draws: each transform runs at least once with p >= 0.2, most likely
            assert pipe(image=image)["image"].shape == (64, 64, 3)
    if group == "optim":
        opt = dict(resolved["optim"]["optimizer"], _partial_=True)
        instantiate(opt)([torch.nn.Parameter(torch.zeros(2))], lr=resolved["optim"]["lr"])
    if group == "trainer":
        trainer = instantiate(resolved["trainer"], logger=False, default_root_dir=str(tmp_path))
        assert isinstance(trainer, pl.Trainer)
    if group in ("logger", "callbacks"):
        assert _build_all(resolved[group], instantiate) == len(resolved[group])


@pytest.mark.parametrize(("group", "choice"), CASES, ids=[f"{g}={c}" for g, c in CASES])
def test_option_composes_resolves_and_builds(group, choice, tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    # This machine has no GPU: trainers are built on the CPU (ddp: 2 gloo processes, launched at fit only).
    extra = {"trainer": ["trainer.accelerator=cpu"] + (["trainer.devices=2"] if choice.startswith("ddp") else []),
             "model": ["model.arch=test_vit"] if choice == "timm" else []}.get(group, [])
    cfg = compose("train", [f"{group}={choice}", f"paths.run_dir={tmp_path}", f"paths.root_dir={tmp_path}",
                            f"paths.data_dir={data}", f"paths.cache_dir={cache}", *extra])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["seed"] == 42 or group == "experiment"
    for target in _targets(resolved):
        try:
            get_class(target)
        except Exception:
            get_method(target)  # factories are functions
    _build_option(group, cfg, tmp_path)
    assert not data.exists() and not cache.exists()  # building touched no data


def test_ddp_syncs_batchnorm_on_gpus_only(tmp_path):
    def sync(*overrides):
        return compose("train", ["trainer=ddp", f"paths.run_dir={tmp_path}", *overrides]).trainer.sync_batchnorm

    assert sync() is True  # the GPU preset
    assert sync("trainer.accelerator=cpu") is False  # the documented CPU (gloo) form
    assert sync("trainer.accelerator=cpu", "trainer.sync_batchnorm=true") is True  # explicit wins


def test_slurm_launcher_composes():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from dfd.cli._hydra import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        full = hydra_compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert get_class(full.hydra.launcher._target_).__name__ == "SlurmLauncher"
    assert full.hydra.launcher.tasks_per_node == full.hydra.launcher.gpus_per_node == 1


@pytest.mark.parametrize("name", ["eval", "extract", "index"])
def test_root_configs_compose_with_their_defaults(name, tmp_path):
    overrides = {"eval": ["ckpt_path=x.ckpt"], "extract": ["dataset=folder"], "index": ["dataset=folder"]}[name]
    cfg = compose(name, [*overrides, f"paths.run_dir={tmp_path}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if name == "eval":  # the default W&B logger interpolates the experiment name (it crashed dfd-eval once)
        assert resolved["logger"]["wandb"]["group"] is None and resolved["logger"]["wandb"]["offline"] is True


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


def _addition_error(*overrides: str, searchpath: str | None = None) -> str | None:
    from hydra import initialize_config_dir

    from dfd.cli._hydra import check_additions, register_resolvers

    register_resolvers()
    hydra = [f"hydra.searchpath=[file://{searchpath}]"] if searchpath else []
    dirs = [config_dir()] + ([Path(searchpath)] if searchpath else [])
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return check_additions("train", list(overrides), dirs, hydra)


@pytest.mark.parametrize(("overrides", "expected"), [
    (["+optim.lrr=1"], "'+optim.lrr=1': 'lrr' is not a key of optim (did you mean optim.lr?); valid keys: "
                       "cycle_epochs, decay_start, lr, min_lr_ratio, optimizer, sam, scheduler, warmup, warmup_epochs, "
                       "weight_decay"),
    (["++optim.lrr=1"], "'lrr' is not a key of optim"),
    (["+optim.extra.lr=1"], "'extra' is not a key of optim"),
    (["+data.batchsize=8"], "'batchsize' is not a key of data (did you mean data.batch_size?); valid keys: bad_crops, "
                            "balance, batch_size,"),
    (["+seeds=1"], "'seeds' is not a key of the config (did you mean seed?); valid keys:"),
    (["+trainer.limitval=2"], "'limitval' is not an argument of pytorch_lightning.Trainer (trainer; did you mean "
                              "trainer.limit_val_batches?); valid:"),
    (["+optim.optimizer.epss=1e-7"], "'epss' is not an argument of torch.optim.AdamW (optim.optimizer; did you mean "
                                     "optim.optimizer.eps?)"),
    (["+dataset@test_sets.cdf=celebdf_v2", "+test_sets.cdf.rooot=/d"], "'rooot' is not an argument of "
                                                                       "dfd.sources.celebdf.CelebDF"),
    (["finetune=lora", "+finetune.rnk=4"], "'rnk' is not an argument of dfd.models.finetune.LoRA"),
])
def test_unknown_keys_are_refused_even_with_plus(overrides, expected):
    error = _addition_error(*overrides)
    assert error is not None and expected in error, error
    assert error.startswith("error: '") and "\n" not in error


@pytest.mark.parametrize("overrides", [
    ["+trainer.limit_val_batches=2", "+optim.optimizer.eps=1e-7", "++optim.lr=0.1", "+model.drop_path_rate=0.1"],
    ["+dataset@test_sets.cdf=celebdf_v2", "test_sets.cdf.root=/d", "+dataset@train_mix.wdf=wilddeepfake",
     "+train_mix.wdf.weight=0.5"],
    ["data.fakes=sbi", "+data.sbi.blend_ratios=[0.5]", "+callbacks.timer={_target_: pytorch_lightning.callbacks.Timer}",
     "+logger.wandb.notes=hello", "callbacks=none", "+callbacks.stop.patience=3"],
])
def test_legitimate_additions_pass(overrides):
    assert _addition_error(*overrides) is None


def test_user_config_folder_options_are_valid_choices(tmp_path):
    from dfd.cli._hydra import check_overrides, user_config_dirs

    (tmp_path / "my_conf" / "model").mkdir(parents=True)
    (tmp_path / "my_conf" / "model" / "mine.yaml").write_text((config_dir() / "model" / "tiny.yaml").read_text())
    user = f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]"
    assert user_config_dirs([user]) == [tmp_path / "my_conf"]
    assert user_config_dirs(["--config-dir", "x", "-cd", "y", "--config-dir=z"]) == [Path(p) for p in "xyz"]
    assert check_overrides([user, "model=mine"], config_dir()) is None
    error = check_overrides([user, "model=mne"], config_dir())
    assert "valid choices: " in error and "mine" in error and "vit_b16" in error
    assert "model=mine" in check_overrides(["model=mine"], config_dir())  # without the folder: unknown
    # A typo check composes the config, user folder included.
    assert "'lrr' is not a key of optim" in _addition_error("model=mine", "+optim.lrr=1",
                                                            searchpath=str(tmp_path / "my_conf"))
