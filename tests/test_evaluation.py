"""Evaluation you can trust: exact probabilities under bf16, every test set and every sweep run kept apart,
checkpoints chosen on validation, per-video scores, bootstrap intervals, and honest warnings — on real runs
(Lightning on the CPU, Hydra multirun, W&B offline) over the embedded synthetic data."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dfd.engine.metrics import binary_scores, bootstrap_auc_ci, video_aggregate
from dfd.errors import DatasetError
from dfd.synthetic.source import SyntheticSource
from tests.conftest import REPO, compose

pytestmark = pytest.mark.slow

TINY = ["model=tiny", "data.num_workers=0", "dataset.frames_per_video=2", "data.batch_size=8"]
# Third-party noise a normal dfd-train run must not print (issue 13): W&B, Lightning tips, dependency
# deprecations.
NOISE = ("anonymous setting", "💡", "Tip:", "litlogger", "LitLogger", "litmodels", "LeafSpec", "_pytree",
         "TPU available", "HPU available", "FutureWarning", "DeprecationWarning", "smaller than the logging interval")


def _cli(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def mann_whitney(prob: np.ndarray, label: np.ndarray) -> float:
    pos, neg = prob[label == 1], prob[label == 0]
    d = pos[:, None] - neg[None, :]
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)


# ----------------------------------------------------------------------------------------------- 1. bf16
def test_bf16_validation_scores_in_float32(tmp_path, shared_cache):
    """Confident logits from a bf16-mixed run: probabilities stay below 1 and val AUC equals fp32 scoring."""
    import pytorch_lightning as pl

    from dfd.engine.build import build_datamodule, build_sources
    from dfd.engine.module import DetectorModule
    from dfd.engine.quiet import quiet_dependencies

    quiet_dependencies()

    cfg = compose("train", overrides=[f"paths.run_dir={tmp_path}", f"paths.cache_dir={shared_cache}", *TINY,
                                      "dataset.videos={train: 8, val: 16, test: 4}"])
    from omegaconf import OmegaConf

    r = OmegaConf.to_container(cfg, resolve=True)
    torch.manual_seed(0)
    module = DetectorModule(model=r["model"], finetune=r["finetune"], optim=r["optim"])
    head = module.model.backbone.get_classifier()
    with torch.no_grad():  # a confident detector: logits between bf16's saturation (~6) and float32's (~16.6)
        head.weight.mul_(20.0)
        head.bias.fill_(8.0)
    logits: list[torch.Tensor] = []
    module.model.register_forward_hook(lambda m, i, out: logits.append(out.detach().clone()))
    train_src, tests, mix = build_sources(cfg)
    dm = build_datamodule(cfg, module.model.input_spec, train_src, tests, mix)
    trainer = pl.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.validate(module, datamodule=dm, verbose=False)

    out = torch.cat(logits)
    assert out.dtype == torch.bfloat16  # autocast was on
    assert float(out.min()) > 6.0 and float(out.max()) < 16.0, out  # confident, yet distinct in float32
    assert torch.sigmoid(out).max() == 1.0  # what a bf16 sigmoid does to them (the bug)
    batches = list(dm.val_dataloader())
    label = torch.cat([b["label"] for b in batches]).long()
    video = torch.cat([b["video"] for b in batches])
    prob = torch.sigmoid(out.float())  # fp32 scoring of the same logits
    assert float(prob.max()) < 1.0
    vprob, vlabel, _ = video_aggregate(prob, label, video, torch.zeros_like(video))
    ref_video, ref_frame = binary_scores(vprob, vlabel), binary_scores(prob, label)
    rep = module.val_report
    assert rep["frame"]["n"] == len(prob) == 32 and rep["video"]["n"] == 16
    assert rep["video"]["auc"] == ref_video["auc"] and rep["frame"]["auc"] == ref_frame["auc"]
    assert rep["frame"]["logloss"] == pytest.approx(ref_frame["logloss"], rel=1e-12)
    assert rep["video"]["auc"] != 0.5  # saturated probabilities would all tie at 1.0: AUC exactly 0.5


# ----------------------------------------------------------------------------------------------- 7. bootstrap
def test_bootstrap_interval_contains_narrows_and_repeats():
    rng = np.random.default_rng(3)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        return np.clip(0.25 * y + rng.normal(0.4, 0.2, n), 0, 1), y

    s, y = sample(120)
    auc = mann_whitney(s, y)
    lo, hi = bootstrap_auc_ci(s, y)
    assert lo < auc < hi and lo >= 0.0 and hi <= 1.0
    assert bootstrap_auc_ci(s, y) == (lo, hi)  # fixed seed: identical
    assert bootstrap_auc_ci(s, y, seed=1) != (lo, hi)
    big_s, big_y = sample(4000)
    big_lo, big_hi = bootstrap_auc_ci(big_s, big_y)
    assert big_lo < mann_whitney(big_s, big_y) < big_hi
    assert (big_hi - big_lo) < 0.4 * (hi - lo)  # width shrinks ~ 1/sqrt(n): 120 -> 4000 videos
    # The resampling is right: the vectorised AUCs match a plain loop of stratified resamples in distribution.
    pos, neg = np.where(y == 1)[0], np.where(y == 0)[0]
    loop_rng = np.random.default_rng(7)
    loop = [mann_whitney(np.r_[s[loop_rng.choice(pos, len(pos))], s[loop_rng.choice(neg, len(neg))]],
                         np.r_[np.ones(len(pos)), np.zeros(len(neg))]) for _ in range(1000)]
    assert np.quantile(loop, [0.025, 0.975]) == pytest.approx([lo, hi], abs=0.025)
    # One class: undefined, not a crash. (Speed: tests/benchmarks/bench_bootstrap.py.)
    assert all(np.isnan(bootstrap_auc_ci(s[y == 1], y[y == 1])))


# ----------------------------------------------------------------------------------------------- the CLI run
SWEEP_ID, AGENT_RUN_ID = "swp7k2q", "run4x9zt"
SWEEP_PARAMS = {"model": "tiny", "dataset": "synthetic", "finetune": "full", "optim.lr": 0.002}
TEST_SETS = {"b_seed1": (1, 10), "b_seed2": (2, 14)}  # two synthetic domain-b test sets: both named synthetic_b


@pytest.fixture(scope="module")
def agent_run(tmp_path_factory, shared_cache):
    """``dfd-train`` as a W&B sweep agent starts it (sweep.yaml's command, the agent's environment, W&B offline),
    with two extra test sets of the same dataset at different settings."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args
    from wandb.sdk.lib.config_util import save_config_file_from_dict

    tmp = tmp_path_factory.mktemp("agent")
    run_dir = tmp / "run"
    args = {k: {"value": v} for k, v in SWEEP_PARAMS.items()}
    param_path = tmp / "wandb" / f"sweep-{SWEEP_ID}" / f"config-{AGENT_RUN_ID}.yaml"
    save_config_file_from_dict(str(param_path), args)  # exactly what `wandb agent` writes for a run
    argv = []
    for tok in yaml.safe_load((REPO / "sweep.yaml").read_text())["command"]:
        if tok == "${args_no_hyphens}":
            argv += create_sweep_command_args({"args": args})["args_no_hyphens"]
        elif tok == "dfd-train":
            argv.append(_cli("dfd-train"))
        elif tok != "${env}" and not tok.startswith("+dataset@test_sets."):  # real datasets are not here
            argv.append(tok)
    argv += [f"hydra.run.dir={run_dir}", f"paths.cache_dir={shared_cache}", "data.num_workers=0",
             "dataset.frames_per_video=2", "trainer.max_epochs=1", "dataset.videos={train: 16, val: 8, test: 12}"]
    for name, (seed, n) in TEST_SETS.items():
        argv += [f"+dataset@test_sets.{name}=synthetic", f"test_sets.{name}.domain=b", f"test_sets.{name}.seed={seed}",
                 f"test_sets.{name}.videos={{train: 0, val: 0, test: {n}}}", f"test_sets.{name}.frames_per_video=2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}  # a user's shell, not pytest's
    env.update(WANDB_MODE="offline", WANDB_SWEEP_ID=SWEEP_ID, WANDB_RUN_ID=AGENT_RUN_ID,
               WANDB_SWEEP_PARAM_PATH=str(param_path), COLUMNS="160")
    proc = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir, json.loads((run_dir / "results.json").read_text()), proc


def test_two_test_sets_of_one_dataset_are_both_reported(agent_run):
    run_dir, res, _ = agent_run
    assert list(res["test"]) == ["synthetic_a", "b_seed1", "b_seed2"]
    assert res["test"]["synthetic_a"]["in_domain"] and not res["test"]["b_seed1"]["in_domain"]
    for name, (_, n) in TEST_SETS.items():
        assert res["test"][name]["video"]["n"] == n and res["test"][name]["frame"]["n"] == 2 * n
    assert res["test"]["b_seed1"]["video"]["auc"] != res["test"]["b_seed2"]["video"]["auc"]


def test_sweep_parameters_and_overrides_land_in_results(agent_run):
    from dfd.report.wandb_runs import read_offline_run

    run_dir, res, _ = agent_run
    sweep = res["invocation"]["sweep"]
    assert sweep == {"id": SWEEP_ID, "run_id": AGENT_RUN_ID, "parameters": SWEEP_PARAMS}
    assert res["invocation"]["command"] == "dfd-train" and "optim.lr=0.002" in res["invocation"]["overrides"]
    # What defines the trained model (not output paths, loggers or added test sets), values as resolved.
    assert res["train"]["overrides"] == {"dataset": "synthetic", "dataset.frames_per_video": 2,
                                         "dataset.videos": {"train": 16, "val": 8, "test": 12}, "finetune": "full",
                                         "model": "tiny", "optim.lr": 0.002, "trainer.max_epochs": 1}
    assert res["train"]["experiment"] == "backbone_sweep" and res["config"]["optim"]["lr"] == 0.002
    # The W&B run is the one the agent named, and its config carries the same record.
    logs = list((run_dir / "wandb").glob(f"offline-run-*-{AGENT_RUN_ID}/run-{AGENT_RUN_ID}.wandb"))
    assert len(logs) == 1
    config, summary, _ = read_offline_run(logs[0])
    assert config["train"]["overrides"]["optim.lr"] == 0.002
    assert summary["test/b_seed2/video_auc_lo"] == pytest.approx(res["test"]["b_seed2"]["video"]["auc_lo"])
    assert summary["test/predictions"]["nrows"] == 12 + 10 + 14  # the per-video table


def test_predictions_reproduce_video_auc_exactly(agent_run, shared_cache):
    from dfd.data.datasets import ManifestArrays
    from dfd.engine.predictions import COLUMNS

    run_dir, res, _ = agent_run
    assert res["predictions"] == "predictions.parquet"
    df = pd.read_parquet(run_dir / "predictions.parquet")
    assert list(df.columns) == COLUMNS
    assert list(dict.fromkeys(df["test_set"])) == list(res["test"])
    for name, rep in res["test"].items():
        part = df[df["test_set"] == name]
        assert len(part) == rep["video"]["n"] and part["video_id"].is_unique
        assert (part["label"] == 1).sum() == rep["video"]["n_fake"]
        ours = binary_scores(torch.from_numpy(part["prob_fake"].to_numpy()),
                             torch.from_numpy(part["label"].to_numpy().astype(np.int64)))
        assert ours["auc"] == rep["video"]["auc"]  # exactly, not approximately
        assert mann_whitney(part["prob_fake"].to_numpy(), part["label"].to_numpy()) == pytest.approx(
            rep["video"]["auc"], abs=1e-12)
        assert (part["frames"] == 2).all() and part["frame_probs"].map(len).eq(2).all()
        means = part["frame_probs"].map(lambda p: float(np.mean(np.asarray(p, np.float64))))
        np.testing.assert_allclose(means, part["prob_fake"], rtol=1e-12)
        assert part["frame_index"].map(list).map(lambda f: f == [0, 1]).all()
    # Video ids are the manifest's string ids, not integer codes.
    a = SyntheticSource(name="synthetic_a", domain="a", videos={"train": 16, "val": 8, "test": 12},
                        frames_per_video=2, cache_dir=shared_cache / "synthetic")
    ids = {v.decode() for v in ManifestArrays(a.prepare(), splits="test").video_names}
    assert set(df.loc[df["test_set"] == "synthetic_a", "video_id"]) == ids
    assert set(df["method"]) >= {"real"}


def test_confidence_intervals_and_small_sample_warnings(agent_run):
    run_dir, res, proc = agent_run
    assert res["bootstrap"]["method"] == "percentile bootstrap" and res["bootstrap"]["resamples"] == 1000
    for name, rep in res["test"].items():
        v = rep["video"]
        assert v["auc_lo"] <= v["auc"] <= v["auc_hi"], name
        # The interval is the bootstrap of the videos' scores: recomputed from predictions.parquet, identical.
        part = pd.read_parquet(run_dir / "predictions.parquet").query("test_set == @name")
        assert bootstrap_auc_ci(part["prob_fake"].to_numpy(), part["label"].to_numpy()) == (v["auc_lo"], v["auc_hi"])
        # Printed in the console table as "AUC [lo, hi]".
        assert f"{v['auc']:.4f} [{v['auc_lo']:.3f}, {v['auc_hi']:.3f}]" in proc.stdout
    # Every test set here has < 20 videos per class: one line each, in the log and the file. ACC is at 0.5: one
    # line when some set's video ACC is well below 1 - EER (dfd.engine.summary.acc_note), else none.
    assert sum("fewer than 20 per class" in n for n in res["notes"]) == 3
    from dfd.engine.metrics import ACC_NOTE_MARGIN

    off = [n for n, r in res["test"].items() if r["video"]["acc"] is not None and r["video"]["eer"] is not None
           and r["video"]["acc"] < 1 - r["video"]["eer"] - ACC_NOTE_MARGIN]
    acc_notes = [n for n in res["notes"] if "fixed threshold 0.5" in n]
    assert len(acc_notes) == (1 if off else 0) and all(f"{name} " in acc_notes[0] for name in off)
    log = proc.stdout + proc.stderr
    assert len(re.findall(r"WARNING\] - test set '\w+' has \d+ real / \d+ fake videos", log)) == 3


def test_normal_run_prints_no_third_party_noise(agent_run):
    _, _, proc = agent_run
    for text in NOISE:
        assert text not in proc.stdout and text not in proc.stderr, text
    assert proc.stderr.strip() == "", proc.stderr
    assert "GPU available: False, used: False" in proc.stdout  # what ran stays visible


# ----------------------------------------------------------------------------------------------- 4. selection
class ValAsTest(SyntheticSource):
    """A synthetic set's *validation* videos served as a test split, labels inverted on request.

    Inverted, it is a test set whose preference over epochs is known exactly: its video AUC at every epoch is
    1 - the validation AUC, so it prefers the epoch validation likes least.
    """

    def __init__(self, invert: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.invert = bool(invert)

    @property
    def base_dir(self) -> Path:
        return SyntheticSource.data_dir.fget(self)

    @property
    def data_dir(self) -> Path:
        return self.base_dir.with_name(self.base_dir.name + ("-val-inverted" if self.invert else "-val"))

    def prepare(self) -> Path:
        if not self.manifest_path.is_file():
            from dfd.store.schema import write_parquet

            base = SyntheticSource(name=self.name, domain=self.domain, seed=self.seed, image_size=self.image_size,
                                   videos=self.videos, frames_per_video=self.frames_per_video,
                                   fake_ratio=self.fake_ratio, cache_dir=self.cache_dir)
            m = pd.read_parquet(base.prepare())
            m = m[m["split"] == "val"].assign(split="test")
            if self.invert:
                m = m.assign(label=1 - m["label"], method="inverted")
            m["crop_path"] = os.path.relpath(self.base_dir, self.data_dir) + "/" + m["crop_path"]
            write_parquet(m.reset_index(drop=True), self.manifest_path)
        return self.manifest_path


def _val_as_test(name: str, invert: bool, cache: Path, videos: str) -> str:
    return (f"+test_sets.{name}={{_target_: tests.test_evaluation.ValAsTest, name: {name}, invert: {str(invert).lower()}, "
            f"domain: a, videos: {videos}, frames_per_video: 2, cache_dir: {cache}/synthetic}}")


def test_checkpoint_is_the_validation_best_not_the_test_best(tmp_path, shared_cache):
    from dfd.engine.evaluate import evaluate
    from dfd.engine.train import train

    videos = "{train: 16, val: 12, test: 4}"
    probes = [_val_as_test("inverted", True, shared_cache, videos), _val_as_test("val_copy", False, shared_cache, videos)]
    run_dir = tmp_path / "train"
    res = train(compose("train", runtime=True, overrides=[
        f"paths.run_dir={run_dir}", f"paths.cache_dir={shared_cache}", *TINY, "logger=none", f"dataset.videos={videos}",
        "trainer.max_epochs=3", "optim.lr=1e-2", "callbacks.model_checkpoint.save_top_k=-1", *probes]))
    sel = res["selection"]
    assert sel["monitor"] == "val/select" and sel["mode"] == "max" and sel["split"] == "synthetic_a val"
    history = sel["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]

    # Every epoch's checkpoint, measured again from outside the training run.
    per_epoch = []
    for e in range(3):
        ckpt = run_dir / "checkpoints" / f"epoch{e:03d}.ckpt"
        out = evaluate(compose("eval", overrides=[f"ckpt_path={ckpt}", f"paths.run_dir={tmp_path / f'eval{e}'}",
                                                  f"paths.cache_dir={shared_cache}", "logger=none", "data.num_workers=0",
                                                  "data.batch_size=8", "data.include_train_test=false", *probes]))
        per_epoch.append(out["test"])
    val_auc = [t["val_copy"]["video"]["auc"] for t in per_epoch]
    val_select = [t["val_copy"]["video"]["auc"] - 1e-3 * min(t["val_copy"]["frame"]["logloss"], 10) for t in per_epoch]
    test_auc = [t["inverted"]["video"]["auc"] for t in per_epoch]
    assert [h["video_auc"] for h in history] == pytest.approx(val_auc, abs=1e-12)  # the record is the truth
    assert [h["value"] for h in history] == pytest.approx(val_select, abs=1e-6)
    assert test_auc == pytest.approx([1 - a for a in val_auc], abs=1e-12)  # the construction holds
    best_val = int(np.argmax(val_select))
    best_test = int(np.argmax(test_auc))
    assert best_test != best_val, (val_select, test_auc)  # validation and the test set disagree

    # The run chose validation's epoch, says so, and tested that checkpoint.
    assert sel["epoch"] == best_val and sel["step"] == history[best_val]["step"]
    assert sel["value"] == history[best_val]["value"]
    assert Path(sel["checkpoint"]).name == f"epoch{best_val:03d}.ckpt" == Path(res["checkpoint"]).name
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk["selection"]["epoch"] == best_val and on_disk["checkpoint"] == res["checkpoint"]
    assert res["test"]["inverted"]["video"]["auc"] == pytest.approx(test_auc[best_val], abs=1e-12)
    assert res["test"]["inverted"]["video"]["auc"] < max(test_auc)
    assert res["val"]["video"]["auc"] == pytest.approx(val_auc[best_val], abs=1e-12)


# ----------------------------------------------------------------------------------------------- 3. sweeps
def test_multirun_over_lr_is_two_rows_and_repeats_are_counted(tmp_path, shared_cache, capsys):
    from dfd.cli.report import main as report

    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [_cli("dfd-train"), "-m", "optim.lr=1e-3,3e-3", *TINY, "logger=none", "trainer.max_epochs=1",
         "dataset.videos={train: 8, val: 4, test: 6}", f"paths.cache_dir={shared_cache}", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {json.loads((sweep / j / "results.json").read_text())["train"]["overrides"]["optim.lr"]: j for j in "01"}
    assert set(runs) == {0.001, 0.003}
    auc = {lr: json.loads((sweep / j / "results.json").read_text())["test"]["synthetic_a"]["video"] for lr, j in
           runs.items()}

    assert report([str(sweep), "--out", str(tmp_path / "r1"), "--worst", "2"]) == 0
    out, err = capsys.readouterr()
    assert "2 result file(s), 2 configuration(s)" in out and err == ""
    matrix = pd.read_csv(tmp_path / "r1" / "matrix.csv", index_col="config")
    assert sorted(matrix.index) == ["synthetic_a/tiny/full optim.lr=0.001", "synthetic_a/tiny/full optim.lr=0.003"]
    for lr in runs:
        row = matrix.loc[f"synthetic_a/tiny/full optim.lr={lr}"]
        assert row["variant"] == f"optim.lr={lr}" and row["n_seeds"] == 1 and row["n_runs"] == 1
        assert row["synthetic_a"] == pytest.approx(auc[lr]["auc"], abs=1e-9)
    # Intervals: matrix_ci.csv and report.md.
    ci = pd.read_csv(tmp_path / "r1" / "matrix_ci.csv", index_col="config")
    md = (tmp_path / "r1" / "report.md").read_text()
    for lr in runs:
        row = ci.loc[f"synthetic_a/tiny/full optim.lr={lr}"]
        assert [row["synthetic_a_lo"], row["synthetic_a_hi"]] == pytest.approx([auc[lr]["auc_lo"], auc[lr]["auc_hi"]],
                                                                               abs=1e-9)
        assert f"{auc[lr]['auc']:.3f} [{auc[lr]['auc_lo']:.3f}, {auc[lr]['auc_hi']:.3f}]" in md
    assert "percentile-bootstrap" in md and "## Worst videos" in md
    # --worst 2: two videos per configuration and test set, worst first, from the runs' predictions.parquet.
    worst = pd.read_csv(tmp_path / "r1" / "worst_videos.csv")
    assert len(worst) == 2 * 2 and list(worst["rank"]) == [1, 2, 1, 2]
    pred = pd.read_parquet(sweep / runs[0.001] / "predictions.parquet")
    err0 = np.where(pred["label"] == 1, 1 - pred["prob_fake"], pred["prob_fake"])
    mine = worst[worst["config"] == "synthetic_a/tiny/full optim.lr=0.001"]
    assert list(mine["video_id"]) == list(pred["video_id"].to_numpy()[np.argsort(-err0, kind="stable")][:2])
    assert "worst 2 videos of synthetic_a for synthetic_a/tiny/full optim.lr=0.001:" in out

    # --group-by any recorded key.
    assert report([str(sweep), "--out", str(tmp_path / "r2"), "--group-by", "optim.lr"]) == 0
    capsys.readouterr()
    assert sorted(pd.read_csv(tmp_path / "r2" / "matrix.csv")["config"]) == ["optim.lr=0.001", "optim.lr=0.003"]

    # An exact repeat (same configuration, same seed) is counted and named, never silently dropped.
    shutil.copytree(sweep / runs[0.001], sweep / "2")
    repeat = json.loads((sweep / "2" / "results.json").read_text())
    repeat["created"] = "2099-01-01T00:00:00"
    (sweep / "2" / "results.json").write_text(json.dumps(repeat))
    assert report([str(sweep), "--out", str(tmp_path / "r3")]) == 0
    out, err = capsys.readouterr()
    assert "3 result file(s), 2 configuration(s)" in out
    assert err.count("\n") == 1 and "exact repeat" in err and "synthetic_a/tiny/full optim.lr=0.001 seed 42" in err
    matrix = pd.read_csv(tmp_path / "r3" / "matrix.csv", index_col="config")
    assert matrix.loc["synthetic_a/tiny/full optim.lr=0.001", "n_runs"] == 2
    assert matrix.loc["synthetic_a/tiny/full optim.lr=0.003", "n_runs"] == 1
    assert "## Exact repeats" in (tmp_path / "r3" / "report.md").read_text()


# ----------------------------------------------------------------------------------------------- 5, 2, 8
def test_early_stopping_and_checkpoint_share_one_criterion():
    for extra, monitor in [([], "val/select"), (["selection.monitor=val/video_auc"], "val/video_auc")]:
        cfg = compose("train", overrides=["callbacks=early_stopping", *extra])
        assert cfg.callbacks.model_checkpoint.monitor == cfg.callbacks.early_stopping.monitor == monitor
        assert cfg.callbacks.model_checkpoint.mode == cfg.callbacks.early_stopping.mode == "max"


def test_test_set_names_clash_is_one_line_and_same_data_is_in_domain(tmp_path, shared_cache):
    from dfd.data.datamodule import name_test_sets
    from dfd.engine.build import build_sources
    from dfd.engine.train import train

    base = [f"paths.run_dir={tmp_path}", f"paths.cache_dir={shared_cache}", *TINY, "logger=none"]
    # The training dataset's own data under its name, or another key: the in-domain set, tested once.
    cfg = compose("train", overrides=[*base, "+dataset@test_sets.synthetic_a=synthetic",
                                      "test_sets.synthetic_a.frames_per_video=2", "+dataset@test_sets.again=synthetic",
                                      "test_sets.again.frames_per_video=2", "+dataset@test_sets.ffpp_like=synthetic",
                                      "test_sets.ffpp_like.domain=c", "+test_sets.ffpp_like.display_name=shown_c"])
    train_src, tests, _ = build_sources(cfg)
    assert list(tests) == ["synthetic_a", "again", "shown_c"]
    assert list(name_test_sets(train_src, tests)) == ["synthetic_a", "shown_c"]
    # Other data under the in-domain name: one line naming the fix, before any training.
    cfg = compose("train", overrides=[*base, "+dataset@test_sets.synthetic_a=synthetic",
                                      "test_sets.synthetic_a.frames_per_video=2", "test_sets.synthetic_a.seed=5"])
    with pytest.raises(DatasetError) as e:
        train(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "test_sets.synthetic_a" in msg and "display_name" in msg
    assert not (tmp_path / "checkpoints").exists()


def test_split_class_warnings_at_index_time_and_in_training(tmp_path, shared_cache):
    from dfd.engine.checks import validation_class_note

    media = tmp_path / "own" / "media"
    media.mkdir(parents=True)
    rows = ["path,label,split"]
    for i, (label, split) in enumerate([(0, "train"), (1, "train"), (1, "val"), (1, "val")]):
        (media / f"{i}.png").write_bytes(b"png")
        rows.append(f"media/{i}.png,{label},{split}")
    (tmp_path / "own" / "labels.csv").write_text("\n".join(rows) + "\n")
    proc = subprocess.run([_cli("dfd-index"), "dataset=csv", f"dataset.root={tmp_path / 'own'}",
                           f"index_path={tmp_path / 'index.parquet'}", "dataset.val_fraction=0",
                           "dataset.test_fraction=0"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "COLUMNS": "400"})
    assert proc.returncode == 0, proc.stderr
    warn = [ln for ln in proc.stdout.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 2, proc.stdout
    assert "'val' split has 0 real / 2 fake videos (no real)" in warn[0] and "lowest validation log loss" in warn[0]
    assert "no 'test' videos" in warn[1]
    # In training: the same consequence, said before the first epoch.
    fakes_only = SyntheticSource(name="synthetic_a", videos={"train": 4, "val": 4, "test": 2}, frames_per_video=1,
                                 fake_ratio=1.0, cache_dir=shared_cache / "synthetic")
    note = validation_class_note(fakes_only, "val/select")
    assert note and "0 real / 4 fake" in note and "val/select" in note and "lowest validation log loss" in note
    assert validation_class_note(SyntheticSource(videos={"train": 4, "val": 4, "test": 2}, frames_per_video=1,
                                                 cache_dir=shared_cache / "synthetic"), "val/select") is None
