"""``dfd-index``: every dataset YAML composes and instantiates; the command writes the index or fails in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dfd.cli._hydra import config_dir, group_choices, register_resolvers
from dfd.sources.base import DatasetSource
from dfd.store.cache import path_key
from dfd.store.schema import read_index
from tests import layouts as L

DATASETS = ("ffpp", "celebdf_v1", "celebdf_v2", "wilddeepfake", "redface", "folder", "csv")
DFD_INDEX = Path(sys.executable).with_name("dfd-index")


def test_every_dataset_yaml_is_tested():
    assert set(DATASETS) <= set(group_choices(config_dir(), "dataset"))


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_yaml_composes_and_instantiates_with_only_root(name, tmp_path):
    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("index", overrides=[f"dataset={name}", f"dataset.root={tmp_path}"])
    src = instantiate(cfg.dataset)
    assert isinstance(src, DatasetSource)
    assert src.name == name and src.root == tmp_path
    expected_cache = f"ffpp_{cfg.dataset.compression}" if name == "ffpp" else name
    # One cache per dataset root: <name>-<key of the root>, so two roots of one kind never share crops.
    assert Path(cfg.index_path) == src.cache_dir / "index.parquet"
    assert src.cache_dir.name == f"{expected_cache}-{path_key(tmp_path)}"
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        other = compose("index", overrides=[f"dataset={name}", f"dataset.root={tmp_path / 'other'}"])
    assert other.dataset.cache_dir != cfg.dataset.cache_dir


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run([str(DFD_INDEX), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def ffpp_root(tmp_path_factory):
    return L.make_ffpp(tmp_path_factory.mktemp("cli") / "FaceForensics++", methods=("Deepfakes", "FaceSwap"))


def test_dfd_index_writes_the_index_and_prints_counts(ffpp_root, tmp_path):
    out = tmp_path / "idx" / "ffpp.parquet"
    proc = _run(["dataset=ffpp", f"dataset.root={ffpp_root}", "dataset.methods=[Deepfakes,FaceSwap]",
                 f"index_path={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    df = read_index(out)
    assert len(df) == 20 + 2 * 20
    assert df.groupby("split").size().to_dict() == {"train": 36, "val": 12, "test": 12}
    assert "Deepfakes" in proc.stdout and "FaceSwap" in proc.stdout and f"wrote 60 videos to {out}" in proc.stdout
    # Hydra leaves one empty run folder at most: no config copies, no log files. Beside the index: the shortcut
    # audit's per-file metadata cache, and the audit's line (every fixture video is one clip: metadata says nothing).
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "idx/ffpp.parquet", "idx/ffpp_media.parquet"]
    assert "shortcut audit: metadata alone tells real from fake with AUC 0.50 (5-fold CV over 60 files" in proc.stdout


def test_dfd_index_missing_splits_is_one_line_without_traceback(ffpp_root, tmp_path):
    proc = _run(["dataset=ffpp", f"dataset.root={ffpp_root}", f"dataset.splits_dir={tmp_path}/none"], tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: ffpp: official split file") and "dataset.splits_dir" in lines[0]


def test_dfd_index_wrong_root_and_wrong_choice(tmp_path):
    proc = _run(["dataset=celebdf_v2", f"dataset.root={tmp_path}/missing"], tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: celebdf_v2: dataset root {tmp_path}/missing is not a folder; "
        "set dataset.root=<folder holding the dataset as downloaded>"
    ]
    proc = _run(["dataset=nope"], tmp_path)
    assert proc.returncode == 2 and "valid choices: av_deepfake1m, celebdf_pp, celebdf_v1, celebdf_v2, csv" in proc.stderr
