"""Backbones behind one interface: configs, input specs from timm, a training step per backbone × strategy,
offline pretrained weights."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import timm
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import save_file
from torch import nn

from dfd.models import Detector, InputSpec, create_model, list_models
from dfd.models import finetune as ft
from dfd.models.weights import MissingWeightsError

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["vit_b16", "convnextv2", "efficientnet_b4", "xception", "timm", "addnet2d", "addnet3d"]


def model_cfg(name: str, **overrides) -> dict:
    """conf/model/<name>.yaml resolved against the default paths, as the engine stores it."""
    cfg = OmegaConf.create({"paths": OmegaConf.load(ROOT / "conf/paths/default.yaml"),
                            "model": OmegaConf.load(ROOT / f"conf/model/{name}.yaml")})
    cfg.model = OmegaConf.merge(cfg.model, overrides)
    return OmegaConf.to_container(cfg.model, resolve=True)


def fake_batch(model: Detector, size: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor | None]:
    clip = model.input_spec.clip_len
    shape = (batch, clip, 3, size, size) if clip else (batch, 3, size, size)
    images = torch.randn(shape)
    if not model.needs_landmarks:
        return images, None
    # Eyes, nose, mouth corners of a centred face, in input pixels; the last sample has none (NaN).
    lm = torch.tensor([[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.38, 0.72], [0.62, 0.72]]) * size
    lm = lm.expand(*shape[:-3], 5, 2).clone()
    lm[-1] = float("nan")
    return images, lm


def train_step(model: Detector, strategy: ft.FinetuneStrategy, size: int) -> None:
    """One AdamW step; assert frozen parameters and frozen BN statistics stay put and trainable ones move."""
    groups = strategy.apply(model, lr=1e-2, weight_decay=0.05)
    opt = torch.optim.AdamW(groups)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = {n: b.clone() for n, b in model.named_buffers() if "running_" in n}
    frozen_norms = tuple(model.frozen_norms)
    model.train()
    images, landmarks = fake_batch(model, size)
    logits = model(images, landmarks)
    assert logits.shape == (images.shape[0],)
    nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 1.0])).backward()
    opt.step()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None and torch.equal(p, before[name]), name
        elif p.grad is not None and p.grad.abs().max() > 0:
            assert not torch.equal(p, before[name]), f"{name} has a gradient but did not change"
    for head in model.head_param_names():
        assert not torch.equal(dict(model.named_parameters())[head], before[head])
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if has_bn and isinstance(strategy, ft.LinearProbe):
        assert frozen_norms  # a frozen backbone's BatchNorms are all frozen
    for name, buf in model.named_buffers():
        if "running_" in name and name.rsplit(".", 1)[0] in frozen_norms:
            assert torch.equal(buf, stats[name]), f"frozen BN statistics {name} changed"


# Small members of each registered family (the full presets are exercised once below).
BACKBONES = {
    "vit": dict(name="vit_b16", arch="test_vit", img_size=32),
    "convnextv2": dict(name="convnextv2", arch="convnextv2_atto", img_size=32),
    "efficientnet": dict(name="efficientnet_b4", arch="test_efficientnet", img_size=32),
    "xception": dict(name="xception", img_size=48),
    "timm_resnet": dict(name="timm", arch="resnet10t", img_size=32),
    "addnet2d": dict(name="addnet2d", img_size=48),
    "addnet3d": dict(name="addnet3d", img_size=48, clip_len=2, head_channels=[16, 16]),
}
STRATEGIES = {
    "full": ft.Full, "linear_probe": ft.LinearProbe, "last_n": lambda: ft.LastN(n=2), "lora": lambda: ft.LoRA(rank=2),
    "llrd": lambda: ft.LLRD(decay=0.7), "norm_only": ft.NormOnly,
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_every_backbone_and_strategy_trains_a_step(backbone: str, strategy: str) -> None:
    torch.manual_seed(0)
    kw = dict(BACKBONES[backbone])
    model = create_model(**kw)
    assert model.input_spec.size == kw["img_size"]
    train_step(model, STRATEGIES[strategy](), kw["img_size"])
    if strategy in ("linear_probe", "last_n", "lora"):
        assert ft.Full().summary(model)["trainable"] < ft.Full().summary(model)["total"]


def test_registry_lists_every_preset() -> None:
    assert set(PRESETS) <= set(list_models())
    with pytest.raises(KeyError, match="unknown model 'nope'.*vit_b16"):
        create_model("nope")


NATIVE = {"vit_b16": ("vit_base_patch16_224", 224), "convnextv2": ("convnextv2_tiny", 224),
          "convnextv2_base": ("convnextv2_base", 224), "efficientnet_b4": ("efficientnet_b4", 380),
          "xception": ("legacy_xception", 299), "addnet2d": ("legacy_xception", 299),
          "addnet3d": ("legacy_xception", 299), "timm": ("resnet10t", 176), "tiny": ("test_vit", 64),
          "small_cnn": ("resnet10t", 64)}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NATIVE))
def test_preset_config_builds_with_timm_spec(name: str) -> None:
    """Each conf/model/*.yaml builds offline with its native size and timm's mean/std, and backpropagates."""
    # The foundation presets' configs are checked in test_recipes (full size, on the meta device).
    from tests.test_recipes import FOUNDATION

    assert {p.stem for p in (ROOT / "conf/model").glob("*.yaml")} - set(FOUNDATION) == set(NATIVE)
    arch, size = NATIVE[name]
    # Real presets are pretrained by default (tests/test_weights.py); the architecture is what is checked here.
    model = instantiate(model_cfg(name, arch=arch, pretrained=False) if name == "timm"
                        else model_cfg(name, pretrained=False))
    timm_cfg = timm.models.get_pretrained_cfg(arch)
    assert model.input_spec.size == size
    assert model.input_spec.mean == pytest.approx(timm_cfg.mean)
    assert model.input_spec.std == pytest.approx(timm_cfg.std)
    assert model.input_spec.interpolation == timm_cfg.interpolation
    assert model.input_spec.clip_len == (8 if name == "addnet3d" else None)
    assert model.needs_landmarks == name.startswith("addnet")
    json.dumps(model.input_spec.to_dict())
    if name == "vit_b16":  # position embeddings fix ViT's size: train the real ViT-B at a tiny one instead
        model = instantiate(model_cfg(name, img_size=32, pretrained=False))
        assert model.backbone.pos_embed.shape[1] == 1 + (32 // 16) ** 2
    # The full-size presets are too slow for an optimizer step here (their families train in the matrix
    # above): one forward/backward at a tiny size shows every parameter is reached.
    images, landmarks = fake_batch(model, 32)
    model.train()
    model(images, landmarks).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, no_grad[:5]


def test_config_rebuilds_identically_from_its_plain_dict() -> None:
    cfg = model_cfg("tiny")
    plain = json.loads(json.dumps(cfg))  # what a checkpoint holds
    a, b = instantiate(cfg), instantiate(plain)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 64, 64)
    assert a.input_spec == b.input_spec
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_frame_model_scores_a_clip_as_the_mean_of_its_frames() -> None:
    model = create_model("timm", arch="test_vit", img_size=32).eval()
    clips = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        expected = model(clips.flatten(0, 1)).view(2, 3).mean(1)
        assert torch.allclose(model(clips), expected, atol=1e-6)


def test_input_spec_is_frozen() -> None:
    spec = InputSpec(64, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(AttributeError):
        spec.size = 32  # type: ignore[misc]


# ---- pretrained weights, offline ----


def _timm_state(arch: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return timm.create_model(arch).state_dict()  # 1000-class head, like a real ImageNet checkpoint


def test_weights_file_safetensors_loads_and_drops_the_imagenet_head(tmp_path: Path) -> None:
    state = _timm_state("test_vit")
    save_file(state, tmp_path / "vit.safetensors")
    model = create_model("timm", arch="test_vit", pretrained=True, weights=str(tmp_path / "vit.safetensors"))
    got = model.backbone.state_dict()
    assert torch.equal(got["blocks.3.attn.qkv.weight"], state["blocks.3.attn.qkv.weight"])
    assert got["head.weight"].shape == (1, 64)
    # A different input size resamples position embeddings and keeps everything else.
    small = create_model("timm", arch="test_vit", img_size=48, weights=str(tmp_path / "vit.safetensors"))
    assert small.backbone.pos_embed.shape == (1, 10, 64)
    assert torch.equal(small.backbone.state_dict()["blocks.0.mlp.fc1.weight"], state["blocks.0.mlp.fc1.weight"])


def test_weights_dir_torch_file_is_found_by_arch_name(tmp_path: Path) -> None:
    state = _timm_state("test_efficientnet")
    torch.save(state, tmp_path / "test_efficientnet.pth")
    model = instantiate(model_cfg("timm", arch="test_efficientnet", pretrained=True, weights_dir=str(tmp_path)))
    got = model.backbone.state_dict()
    key = next(k for k in state if k.startswith("blocks.2.") and k.endswith("weight"))
    assert torch.equal(got[key], state[key])


def test_hf_cache_is_used_offline(tmp_path: Path) -> None:
    """A timm repo in $HF_HOME/hub is found without network access (subprocess: HF_HOME is read at import)."""
    repo = tmp_path / "hf/hub/models--timm--test_vit.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs/main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    state = _timm_state("test_vit")
    save_file(state, repo / "snapshots" / ("0" * 40) / "model.safetensors")
    script = textwrap.dedent(f"""
        import torch
        from safetensors.torch import load_file
        from dfd.models import create_model
        m = create_model("timm", arch="test_vit", pretrained=True, weights_dir={str(tmp_path / 'empty')!r})
        ref = load_file({str(repo / 'snapshots' / ('0' * 40) / 'model.safetensors')!r})
        assert torch.equal(m.backbone.blocks[2].attn.qkv.weight, ref["blocks.2.attn.qkv.weight"])
        print("OK")
    """)
    env = {"HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stderr[-2000:]


def test_missing_pretrained_weights_fail_fast_with_one_clear_message(tmp_path: Path) -> None:
    weights_dir = tmp_path / "weights"
    for name, arch in (("vit_b16", "vit_base_patch16_224"), ("efficientnet_b4", "efficientnet_b4"),
                       ("addnet2d", "legacy_xception")):
        cfg = model_cfg(name, pretrained=True, weights_dir=str(weights_dir))
        start = time.perf_counter()
        with pytest.raises(InstantiationException) as err:  # Hydra wraps it; the cause is ours
            instantiate(cfg)
        assert time.perf_counter() - start < 5
        assert isinstance(err.value.__cause__, MissingWeightsError)
        msg = str(err.value.__cause__)
        assert "\n" not in msg
        assert str(weights_dir / f"{arch}.safetensors") in msg
        assert "model.weights=" in msg and "model.pretrained=false" in msg
    with pytest.raises(MissingWeightsError, match="model.weights='/nowhere/x.safetensors' does not exist"):
        create_model("xception", weights="/nowhere/x.safetensors")
