"""What a run checks before any work (issues 13.1 and 13.6): the crop contract of every mixed-in and test set
against the run's, torch threads beside the loader workers, robustness kinds and self-blend keys named at config
time, and GPUs or SLURM this machine does not have — each a one-line error naming the fix."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dfd.cli._hydra import accelerator_problem, launcher_problem
from dfd.engine.build import build_augment
from dfd.engine.checks import (
    RobustnessPlan,
    check_crop_contracts,
    check_required_crop,
    check_robustness,
    robustness_plan,
)
from dfd.engine.evaluate import evaluate
from dfd.engine.hardware import cpu_threads, set_threads
from dfd.engine.train import train
from dfd.errors import ConfigError
from dfd.faces.contract import CropContract
from dfd.synthetic.source import SyntheticSource
from tests.conftest import compose

VIDEOS = "{train: 8, val: 4, test: 4}"
TINY = ["model=tiny", "logger=none", "data.num_workers=0", "trainer.max_epochs=1", f"dataset.videos={VIDEOS}",
        "dataset.frames_per_video=2", "data.batch_size=8"]


# ----------------------------------------------------------------------------------------------- crop contracts
def test_geometry_is_alignment_margin_size_and_dataset_crops_are_their_own():
    box = CropContract()
    assert box.geometry_diff(box.replace(min_face_size=20, frames=8, detect_size=None)) == {}  # not geometry
    assert box.geometry_diff(box.replace(align="arcface", size=256)) == {"align": ("box", "arcface"),
                                                                         "size": (320, 256)}
    assert box.geometry_diff(box.replace(margin=1.5)) == {"margin": (1.3, 1.5)}
    crops = box.replace(inputs="crops")  # WildDeepfake: framed by its authors, align/margin do not apply
    assert box.geometry_diff(crops) == {"inputs": ("frames", "crops")}
    assert crops.geometry_diff(crops.replace(align="arcface", margin=2.0)) == {}
    assert crops.geometry_diff(crops.replace(size=256)) == {"size": (320, 256)}


def _synthetic(cache: Path, size: int, name: str = "small") -> SyntheticSource:
    src = SyntheticSource(name=name, domain="b", image_size=size, videos={"train": 0, "val": 0, "test": 4},
                          frames_per_video=2, cache_dir=cache / "synthetic")
    src.prepare()
    return src


def test_a_set_cropped_otherwise_is_refused_or_noted(shared_cache):
    run = CropContract(size=64)
    same, other = _synthetic(shared_cache, 64, "same"), _synthetic(shared_cache, 32, "other")
    assert check_crop_contracts(run, {"same": same}, "test set", "the training set 'x'") == []
    with pytest.raises(ConfigError) as e:
        check_crop_contracts(run, {"same": same, "other": other}, "test set", "the training set 'x'")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("test set 'other' was cropped differently from the training set 'x'")
    assert "size=32 (vs 64)" in msg and "extract.size=64" in msg and "data.crop_mismatch=warn" in msg
    notes = check_crop_contracts(run, {"other": other}, "test set", "the training set 'x'", "warn")
    assert len(notes) == 1 and "size=32 (vs 64)" in notes[0] and "data.crop_mismatch=warn" in notes[0]
    with pytest.raises(ConfigError, match="data.crop_mismatch='maybe' is not valid; choose one of refuse, warn"):
        check_crop_contracts(run, {}, "test set", "x", "maybe")


def test_training_refuses_a_test_set_or_mix_cropped_otherwise_before_any_work(shared_cache, tmp_path):
    base = [*TINY, f"paths.cache_dir={shared_cache}", f"paths.run_dir={tmp_path}"]
    for extra in (["+dataset@test_sets.small=synthetic", "test_sets.small.image_size=32"],
                  ["+dataset@train_mix.small=synthetic", "train_mix.small.image_size=32"]):
        cfg = compose("train", [*base, *extra, f"{extra[1].split('.')[0]}.small.videos={VIDEOS}"])
        with pytest.raises(ConfigError, match=r"'small' was cropped differently from the training set 'synthetic_a' "
                                              r"\(a x1.3, 64 px|box x1.3, 64 px"):
            train(cfg)
        assert not (tmp_path / "checkpoints").exists()  # refused before the model and the trainer


def test_a_preset_refuses_training_crops_its_method_does_not_use_in_one_line(shared_cache, tmp_path):
    """GenD's preset records the crops its numbers are made on (ArcFace-aligned, x1.3, 256 px); the synthetic set
    is box-cropped, so training is refused before any work, naming the dfd-extract that makes the right cache
    (data.crop_mismatch=warn trains anyway: tests/test_recipes_synthetic.py)."""
    cfg = compose("train", ["experiment=gend_clip_l14", "dataset=synthetic", "testbed=none", *TINY,
                            f"paths.cache_dir={shared_cache}", f"paths.run_dir={tmp_path}", "trainer=cpu"])
    assert cfg.data.require_crop == {"align": "arcface", "size": 256, "margin": 1.3}
    with pytest.raises(ConfigError) as e:
        train(cfg)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("experiment=gend_clip_l14 needs arcface x1.3, 256 px crops "
                                              "(data.require_crop), but the training set 'synthetic_a' was cropped "
                                              "box x1.3, 64 px: align=box (vs arcface), size=64 (vs 256)")
    assert (f" paths.cache_dir={shared_cache}-arcface256 extract.align=arcface extract.size=256`) and train with "
            f"paths.cache_dir={shared_cache}-arcface256") in msg and "(`dfd-extract dataset=" in msg
    assert msg.endswith("or set data.crop_mismatch=warn to train on these crops anyway")
    assert not (tmp_path / "checkpoints").exists()
    # Crops that match pass; a requirement naming no geometry key is one line too.
    src = _synthetic(shared_cache, 64, "same")
    assert check_required_crop({"align": "box", "margin": 1.3, "size": 64}, {"same": src}, "x") == []
    with pytest.raises(ConfigError, match=r"^data.require_crop: 'sise' not a crop geometry key; valid keys: align, "
                                          r"margin, size$"):
        check_required_crop({"sise": 256}, {"same": src}, "x")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_cache):
    """One tiny run whose test set is cropped at another size, kept on purpose (data.crop_mismatch=warn)."""
    run_dir = tmp_path_factory.mktemp("warned")
    cfg = compose("train", [*TINY, f"paths.cache_dir={shared_cache}", f"paths.run_dir={run_dir}",
                            "+dataset@test_sets.small=synthetic", "test_sets.small.image_size=32",
                            f"test_sets.small.videos={VIDEOS}", "data.crop_mismatch=warn"])
    return train(cfg), run_dir


def test_warn_keeps_the_set_and_records_why(trained):
    results, run_dir = trained
    assert set(results["test"]) == {"synthetic_a", "small"}
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert sum("'small' was cropped differently" in n and "data.crop_mismatch=warn" in n
               for n in on_disk["notes"]) == 1


def test_evaluation_checks_test_sets_against_the_checkpoint(trained, shared_cache, tmp_path):
    results, _ = trained
    base = [f"ckpt_path={results['checkpoint']}", "logger=none", "data.num_workers=0", f"paths.cache_dir={shared_cache}",
            f"paths.run_dir={tmp_path}", "+dataset@test_sets.small=synthetic", "test_sets.small.image_size=32",
            f"test_sets.small.videos={VIDEOS}", "test_sets.small.frames_per_video=2",
            "data.include_train_test=false"]
    with pytest.raises(ConfigError, match=r"^test set 'small' was cropped differently from the model's training "
                                          r"crops box x1.3, 64 px: size=32 \(vs 64\)"):
        evaluate(compose("eval", base))
    evaluated = evaluate(compose("eval", [*base, "data.crop_mismatch=warn"]))
    assert list(evaluated["test"]) == ["small"] and any("data.crop_mismatch=warn" in n for n in evaluated["notes"])


def test_bundles_record_the_pretrained_weights_they_started_from(trained, tmp_path):
    """preprocess.json carries the checkpoint's meta["weights"] next to the crop contract (and its README says it)."""
    from dfd.inference.export import export_bundle

    results, _ = trained
    ckpt = torch.load(results["checkpoint"], map_location="cpu", weights_only=True)
    weights = {"arch": "test_vit", "source": "hf_cache", "path": "/hf/model.safetensors",
               "hub_id": "timm/test_vit.r160_in1k", "revision": "abc123", "sha256": "0" * 64}
    ckpt["hyper_parameters"]["meta"]["weights"] = weights  # as a pretrained run records it
    torch.save(ckpt, tmp_path / "pretrained.ckpt")
    export_bundle(tmp_path / "pretrained.ckpt", tmp_path / "bundle", calibrate="none")
    pre = json.loads((tmp_path / "bundle" / "preprocess.json").read_text())
    assert pre["weights"] == weights and pre["crop"]["size"] == 64
    assert "timm/test_vit.r160_in1k @ abc123" in (tmp_path / "bundle" / "README.md").read_text()


# ----------------------------------------------------------------------------------------------- threads
def test_cpu_ddp_processes_share_the_cores_and_one_process_keeps_torchs_default(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert cpu_threads(compose("train", ["data.num_workers=2"])) is None
    # CPU DDP: the cores are divided among the processes.
    assert cpu_threads(compose("train", ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"])) == 4
    assert cpu_threads(compose("train", ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=16"])) == 1
    assert cpu_threads(compose("train", ["trainer=gpu"])) is None  # the GPU computes
    assert cpu_threads(compose("train", ["threads=3"])) == 3
    assert cpu_threads(compose("eval", ["ckpt_path=x", "threads=5"])) == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert cpu_threads(compose("train", [])) is None  # the user's choice stands
    monkeypatch.delenv("OMP_NUM_THREADS")
    before = torch.get_num_threads()
    try:
        set_threads(compose("train", ["threads=1"]))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------- config-time errors
def test_unknown_robustness_kind_or_level_is_one_line_before_the_checkpoint_is_read(tmp_path):
    from dfd.data.transforms import perturbation

    with pytest.raises(ConfigError, match="^robustness: unknown perturbation 'blurr'; valid kinds: jpeg, blur, "
                                          "downscale, noise, h264, resize, df_cs, df_cc, df_bw, df_gnc, df_gb, "
                                          "df_jpeg, df_vc$"):
        perturbation("blurr", 1.0)
    with pytest.raises(ConfigError, match="^robustness.df_gb: distortion df_gb: level 6.0 is not one of "
                                          "DeeperForensics' levels 1, 2, 3, 4, 5$"):
        check_robustness({"df_gb": [1, 6]})
    with pytest.raises(ConfigError, match="^robustness.at='frames' is not valid; choose one of crop, frame"):
        robustness_plan({"at": "frames", "jpeg": [50]})
    assert robustness_plan({"at": "frame", "df_cs": [1, 5], "workers": 2}) == RobustnessPlan(
        "frame", (("df_cs", 1.0), ("df_cs", 5.0)), 2)
    with pytest.raises(ConfigError, match="robustness.jpeg must be a list of levels"):
        check_robustness({"jpeg": 50})
    with pytest.raises(ConfigError, match="robustness.jpeg: level 'high' is invalid"):
        check_robustness({"jpeg": ["high"]})
    assert check_robustness({"jpeg": [90, 50], "h264": [23]}) == [("jpeg", 90.0), ("jpeg", 50.0), ("h264", 23.0)]
    cfg = compose("eval", [f"ckpt_path={tmp_path}/none.ckpt", "robustness={blurr: [1]}", "logger=none",
                           f"paths.run_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="unknown perturbation 'blurr'"):  # not: checkpoint not found
        evaluate(cfg)


def test_self_blend_typo_is_one_line_naming_the_valid_keys(tmp_path):
    cfg = compose("train", ["data.fakes=sbi", "+data.sbi.xyz=1", f"paths.run_dir={tmp_path}", "logger=none"])
    with pytest.raises(ConfigError) as e:
        train(cfg)
    assert str(e.value).startswith("data.sbi: 'xyz' is not an argument of SelfBlend; valid keys: rgb_shift, hue, ")
    assert "blend_ratios" in str(e.value) and not list(tmp_path.iterdir())  # nothing was written


def test_strong_augmentation_runs_in_the_frame_and_clip_pipelines():
    from dfd.data.transforms import Pipeline, Spec

    augment = build_augment(compose("train", ["augment=strong"]))
    assert len(augment) == 7
    pipe = Pipeline(Spec(32, (0.5,) * 3, (0.5,) * 3), augment)
    rng = np.random.default_rng(0)
    for _ in range(40):  # every transform drawn at least once ('replay' KeyError before the fix)
        x, _ = pipe(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8), np.full((5, 2), np.nan, np.float32))
        assert x.shape == (3, 32, 32)
    clip, _ = pipe.clip([np.zeros((48, 48, 3), np.uint8)] * 3, [np.full((5, 2), np.nan, np.float32)] * 3)
    assert clip.shape == (3, 3, 32, 32)


def test_gpu_and_slurm_that_are_not_here_are_named(tmp_path, monkeypatch):
    if not torch.cuda.is_available():
        line = accelerator_problem(compose("train", ["trainer=gpu"]))
        assert line.startswith("error: trainer.accelerator=gpu trains on CUDA GPUs and this machine has none")
        assert "trainer=ddp trainer.accelerator=cpu trainer.devices=2" in line
    assert accelerator_problem(compose("train", ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"])) is None
    assert accelerator_problem(compose("train", [])) is None
    from dfd.cli._hydra import config_dir

    monkeypatch.setenv("PATH", str(tmp_path))
    args = ["-m", "hydra/launcher=slurm", "seed=1,2"]
    assert launcher_problem(args, config_dir()).startswith(
        "error: 'hydra/launcher=slurm' submits every run to SLURM, but sbatch and srun are not on this machine's PATH")
    assert launcher_problem(args[1:], config_dir()) is None  # no multirun: the launcher is not used
    for tool in ("sbatch", "srun"):  # a login node
        (tmp_path / tool).write_text("#!/bin/sh\n")
        (tmp_path / tool).chmod(0o755)
    assert shutil.which("sbatch") and launcher_problem(args, config_dir()) is None
