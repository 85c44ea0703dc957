"""The entry points as a user runs them, from their own folder: one-line errors for user mistakes, dfd-eval
with its defaults (W&B offline), and config groups added from the user's own config folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dfd.cli._hydra import config_dir

BIN = Path(sys.executable).parent


def _cli(name: str, args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([str(BIN / name), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


def test_missing_mandatory_value_is_one_line(tmp_path):
    line = _one_line_error(_cli("dfd-train", ["model=timm"], tmp_path))
    assert line == "error: model.arch has no value: add 'model.arch=<value>' to the command"
    line = _one_line_error(_cli("dfd-eval", [], tmp_path))
    assert line == "error: ckpt_path has no value: add 'ckpt_path=<value>' to the command"


def test_unknown_timm_name_is_one_line_with_the_closest_names(tmp_path):
    line = _one_line_error(_cli("dfd-train", ["model=timm", "model.arch=resnt50"], tmp_path))
    assert line.startswith("error: model.arch='resnt50' is not a timm model: did you mean resnet50")


def test_unknown_key_added_with_plus_is_one_line(tmp_path):
    line = _one_line_error(_cli("dfd-train", ["+optim.lrr=1"], tmp_path))
    assert line == ("error: '+optim.lrr=1': 'lrr' is not a key of optim (did you mean optim.lr?); valid keys: "
                    "cycle_epochs, decay_start, lr, min_lr_ratio, optimizer, sam, scheduler, warmup, warmup_epochs, "
                    "weight_decay")


@pytest.mark.slow
def test_wrong_combination_raised_inside_the_run_is_one_line(tmp_path, shared_cache):
    line = _one_line_error(_cli("dfd-train", [
        "model=addnet3d", "data.fakes=sbi", "model.pretrained=false", "model.img_size=64", "model.clip_len=2",
        "model.head_channels=[8, 8]", "logger=none", f"paths.cache_dir={shared_cache}", "data.num_workers=0",
        "dataset.videos={train: 8, val: 4, test: 4}"], tmp_path))
    assert line == "error: data.fakes=sbi works on frame models; clip models need real fakes (data.fakes=real)"


@pytest.mark.slow
def test_user_config_folder_and_dfd_eval_defaults(tmp_path, shared_cache):
    """A model preset from the user's folder trains; dfd-eval then runs with its defaults (W&B offline logger)."""
    work = tmp_path / "project"
    (work / "my_conf" / "model").mkdir(parents=True)
    (work / "my_conf" / "model" / "my_vit.yaml").write_text(
        (config_dir() / "model" / "tiny.yaml").read_text().replace("img_size: 64", "img_size: 32"))
    train = _cli("dfd-train", [
        "hydra.searchpath=[file://my_conf]", "model=my_vit", "logger=none", "trainer.max_epochs=1",
        f"paths.cache_dir={shared_cache}", "data.num_workers=0", "dataset.videos={train: 8, val: 4, test: 4}",
        "hydra.run.dir=train_run"], work)
    assert train.returncode == 0, train.stderr[-3000:]
    results = json.loads((work / "train_run" / "results.json").read_text())
    assert results["train"]["model"] == "my_vit" and results["weights"] is None  # random init, recorded
    ckpt = Path(results["checkpoint"])
    assert ckpt.is_file() and ckpt.is_relative_to(work)

    evaluation = _cli("dfd-eval", [f"ckpt_path={ckpt}", f"paths.cache_dir={shared_cache}", "data.num_workers=0",
                                   "hydra.run.dir=eval_run"], work)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    run = work / "eval_run"
    res = json.loads((run / "results.json").read_text())
    assert res["kind"] == "eval" and res["test"]["synthetic_a"]["frame"]["n"] == 16
    assert res["weights"] is None
    assert len(list((run / "wandb").glob("offline-run-*/run-*.wandb"))) == 1  # the default logger ran, offline
