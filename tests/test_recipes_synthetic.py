"""The papers' presets (experiment=gend_clip_l14, gend_dinov3_l16, gend_pe_l14, effort_clip_l14, sbi_paper): their
numbers as the papers state them, and one training step each on the CPU with a tiny stand-in backbone on the
synthetic data (testbed=synthetic); runs that differ by loss stay apart in reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

from tests.conftest import compose

GEND = ("gend_clip_l14", "gend_dinov3_l16", "gend_pe_l14")
PRESETS = (*GEND, "effort_clip_l14", "sbi_paper")
# The stand-in: each preset's own architecture cut to 1 block of width 32 (the
# recipe's pooling, norms, attention projections), random init; the SBI preset's EfficientNet-B4 -> a ResNet-10t.
STAND_IN = {
    "vit": ["model.pretrained=false", "model.img_size=112", "+model.depth=1", "+model.embed_dim=32",
            "+model.num_heads=2"],
    "sbi_paper": ["model.pretrained=false", "model.arch=resnet10t", "model.img_size=64", "~dataset.compression"],
}
SMALL_DATA = ["dataset=synthetic", "testbed=synthetic", "trainer=cpu", "trainer.precision=32-true",
              "dataset.videos={train: 8, val: 4, test: 4}", "dataset.frames_per_video=2"]


def test_presets_state_the_papers_hyperparameters() -> None:
    losses = {}
    for name in GEND:
        c = compose("train", [f"experiment={name}"])
        losses[name] = (c.loss.uniformity, c.loss.alignment)
        assert (c.model.head, c.finetune._target_, c.dataset.name, c.dataset.compression) == (
            "l2norm", "dfd.models.finetune.NormOnly", "ffpp", "c23")
        assert (c.optim.optimizer._target_, c.optim.lr, c.optim.weight_decay) == ("torch.optim.AdamW", 3e-4, 0.0)
        assert (c.optim.scheduler, c.optim.warmup_epochs, c.optim.cycle_epochs) == ("cosine_restarts", 1, 10)
        assert c.optim.lr * c.optim.min_lr_ratio == pytest.approx(1e-5)
        assert (c.data.batch_size, c.trainer.max_epochs, c.trainer.precision) == (128, 30, "bf16-mixed")
        assert set(c.test_sets) == {"celebdf_v2", "dfd", "dfdc", "ffiw"}
        assert [t._target_.rsplit(".", 1)[-1] for t in c.augment.train] == [
            "HorizontalFlip", "Affine", "GaussianBlur", "ColorJitter", "ImageCompression"]
        assert c.experiment_name == name
    assert losses == {"gend_clip_l14": (0.5, 0.1), "gend_dinov3_l16": (0.5, 0.1), "gend_pe_l14": (0.0, 0.0)}
    e = compose("train", ["experiment=effort_clip_l14"])
    assert (e.model.name, e.model.head, e.finetune.k, e.loss.uniformity) == ("clip_vit_l14", "linear", 1, 0.0)
    assert (e.optim.optimizer._target_, e.optim.lr, e.optim.weight_decay, e.optim.scheduler) == (
        "torch.optim.Adam", 2e-4, 5e-4, "constant")
    assert (e.data.batch_size, e.data.frames_per_video, e.trainer.max_epochs, e.seed) == (32, 8, 10, 1024)
    assert len(e.augment.train) == 11 and len(e.test_sets) == 7
    s = compose("train", ["experiment=sbi_paper"])
    assert (s.model.name, s.model.img_size, s.data.fakes, s.data.batch_size, s.data.frames_per_video) == (
        "efficientnet_b4", 380, "sbi", 32, 8)
    assert (s.optim.optimizer._target_, s.optim.optimizer.momentum, s.optim.lr, s.optim.weight_decay) == (
        "torch.optim.SGD", 0.9, 1e-3, 0.0)
    assert (s.optim.sam.rho, s.optim.scheduler, s.optim.decay_start, s.trainer.max_epochs) == (
        0.05, "linear_decay", 0.75, 100)
    assert s.dataset.compression == "raw" and s.callbacks.model_checkpoint.monitor is None
    for c in (e, s, compose("train", ["experiment=gend_clip_l14"])):  # the augmentation presets build
        ops = [instantiate(t) for t in c.augment.train]
        assert ops and all(callable(op) for op in ops)


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_trains_a_step_on_the_cpu_with_a_stand_in(preset: str, tmp_path: Path, shared_cache: Path):
    from dfd.engine.train import train

    stand_in = STAND_IN.get(preset, STAND_IN["vit"])
    # The synthetic set is box-cropped: the GenD/Effort presets (ArcFace-aligned 256 px crops) train on it only
    # when told to, and say so in results.json; SBI's box crops are the synthetic set's own.
    cfg = compose("train", runtime=True, overrides=[
        f"experiment={preset}", *SMALL_DATA, *stand_in, "debug=fast_dev_run",
        f"paths.run_dir={tmp_path}", f"paths.cache_dir={shared_cache}", "data.crop_mismatch=warn",
    ])
    results = train(cfg)
    assert set(results["test"]) == {"synthetic_a", "synthetic_b", "synthetic_c", "synthetic_d"}
    assert results["global_step"] == 1
    assert results["train"]["experiment"] == preset
    needs = [n for n in json.loads((tmp_path / "results.json").read_text())["notes"] if "data.require_crop" in n]
    if preset == "sbi_paper":
        assert needs == [] and {r["no_face"]["rule"] for r in results["test"].values()} == {"score"}
    else:
        assert len(needs) == 1 and needs[0].startswith(f"experiment={preset} needs arcface x1.3, 256 px crops")
        assert "align=box (vs arcface)" in needs[0] and "data.crop_mismatch=warn" in needs[0]
    trainable, total = results["params"]["trainable"], results["params"]["total"]
    if preset in GEND or preset.startswith("effort"):
        assert 0 < trainable < total / 2  # LayerNorms / singular directions + head, not the backbone
    else:
        assert trainable == total


def test_loss_choices_are_recorded_and_keep_report_rows_apart(tmp_path: Path) -> None:
    from dfd.engine.provenance import config_overrides
    from dfd.report.collect import collect
    from dfd.report.matrix import build_matrix
    from tests.test_report import make_results

    typed = ["experiment=gend_clip_l14", "loss=bce", "model.head=linear"]
    assert config_overrides(compose("train", typed), typed) == {"loss": "bce", "model.head": "linear"}
    for i, overrides in enumerate([{}, {"loss": "bce"}]):  # the preset's own loss=gend, and loss=bce
        r = make_results("ffpp", "clip_vit_l14", "norm_only", 1, {"ffpp": 0.99, "celebdf_v2": 0.8 + 0.1 * i})
        r["train"].update(experiment="gend_clip_l14", overrides=overrides)
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "results.json").write_text(json.dumps(r))
    rows = build_matrix(collect([tmp_path]).long).mean["celebdf_v2"].to_dict()
    assert sorted(rows.values()) == pytest.approx([0.8, 0.9]) and len(rows) == 2
    assert any("loss=bce" in k for k in rows)
