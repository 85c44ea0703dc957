"""Fine-tuning strategies: exact trainable counts, what an optimizer step changes, BN statistics, LoRA export."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from dfd.models import create_model
from dfd.models import finetune as ft


def numel(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def vit() -> nn.Module:
    return create_model("timm", arch="test_vit", img_size=32)


def effnet() -> nn.Module:
    return create_model("timm", arch="test_efficientnet", img_size=32)


def calibrate_bn(model: nn.Module, *inputs, **kwargs) -> None:
    """Random-init nets are degenerate in eval mode; give every BN this batch's statistics exactly."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(*inputs, **kwargs)
    model.eval()


# ---- exact trainable-parameter counts, computed from the timm modules, not from dfd's grouping ----


def test_counts_full_and_linear_probe() -> None:
    m = vit()
    assert ft.Full().apply(m, lr=1e-3, weight_decay=0.05) and ft.Full().summary(m)["trainable"] == numel(m)
    m = vit()
    ft.LinearProbe().apply(m, lr=1e-3, weight_decay=0.05)
    head = m.backbone.head
    assert isinstance(head, nn.Linear) and head.out_features == 1
    assert ft.LinearProbe().summary(m) == {"trainable": head.in_features + 1, "total": numel(m)}


def test_counts_last_n_vit_and_efficientnet() -> None:
    m = vit()
    ft.LastN(n=2).apply(m, lr=1e-3, weight_decay=0.05)
    b = m.backbone
    # Last two transformer blocks, the final norm after them, the head.
    assert ft.LastN(2).summary(m)["trainable"] == numel(b.blocks[-1], b.blocks[-2], b.norm, b.head)

    m = effnet()
    ft.LastN(n=2).apply(m, lr=1e-3, weight_decay=0.05)
    b = m.backbone
    flat = [blk for stage in b.blocks for blk in stage]
    expected = numel(flat[-1], flat[-2], b.conv_head, b.bn2, b.classifier)
    assert ft.LastN(2).summary(m)["trainable"] == expected


def test_counts_norm_only() -> None:
    m = vit()
    ft.NormOnly().apply(m, lr=1e-3, weight_decay=0.05)
    norms = [mod for mod in m.modules() if isinstance(mod, nn.LayerNorm)]
    assert norms
    assert ft.NormOnly().summary(m)["trainable"] == numel(*norms, m.backbone.head)


def test_norm_only_includes_convnextv2_global_response_norm() -> None:
    from timm.layers.grn import GlobalResponseNorm

    m = create_model("convnextv2", arch="convnextv2_atto", img_size=32)
    ft.NormOnly().apply(m, lr=1e-3, weight_decay=0.05)
    norms = [mod for mod in m.modules() if isinstance(mod, nn.LayerNorm | GlobalResponseNorm)]
    assert any(isinstance(mod, GlobalResponseNorm) for mod in norms)
    # ConvNeXt's head (norm + fc) is one head; its norm is already among `norms`.
    assert ft.NormOnly().summary(m)["trainable"] == numel(*norms, m.backbone.head.fc)


@pytest.mark.parametrize("rank", [2, 4])
def test_counts_lora(rank: int) -> None:
    m = vit()
    before = numel(m)
    ft.LoRA(rank=rank, alpha=8).apply(m, lr=1e-3, weight_decay=0.05)
    b = m.backbone
    lora = 0
    for blk in b.blocks:
        for lin in (blk.attn.qkv, blk.attn.proj, blk.mlp.fc1, blk.mlp.fc2):
            base = lin.get_base_layer()
            lora += rank * (base.in_features + base.out_features)
    head = b.head.in_features + 1
    assert ft.LoRA().summary(m) == {"trainable": lora + head, "total": before + lora}


def test_llrd_learning_rates_per_layer() -> None:
    m = vit()
    lr, decay = 1e-2, 0.5
    groups = ft.LLRD(decay=decay).apply(m, lr=lr, weight_decay=0.05)
    depth = len(m.backbone.blocks)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    b = m.backbone
    # Groups from input to head: stem (tokens, patch embed), block 0..depth-1 (final norm with the last), head.
    assert lr_of[id(b.cls_token)] == pytest.approx(lr * decay ** (depth + 1))
    assert lr_of[id(b.patch_embed.proj.weight)] == pytest.approx(lr * decay ** (depth + 1))
    for i, blk in enumerate(b.blocks):
        assert lr_of[id(blk.attn.qkv.weight)] == pytest.approx(lr * decay ** (depth - i))
    assert lr_of[id(b.norm.weight)] == pytest.approx(lr * decay)
    assert lr_of[id(b.head.weight)] == pytest.approx(lr)
    assert len(lr_of) == len(list(m.parameters()))


@pytest.mark.parametrize("strategy", [ft.Full(), ft.LinearProbe(), ft.LastN(1), ft.NormOnly(), ft.LLRD(), ft.LoRA()])
def test_param_groups_cover_trainable_once_without_decay_on_vectors(strategy: ft.FinetuneStrategy) -> None:
    m = vit()
    groups = strategy.apply(m, lr=1e-3, weight_decay=0.05)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in m.parameters() if p.requires_grad}
    for g in groups:
        if g["weight_decay"] > 0:
            assert all(p.ndim > 1 for p in g["params"])
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    if m.backbone.pos_embed.requires_grad:
        assert id(m.backbone.pos_embed) in no_decay  # timm's no_weight_decay list is honoured


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="finetune.n"):
        ft.LastN(n=-1)
    with pytest.raises(ValueError, match="finetune.decay"):
        ft.LLRD(decay=1.5)


def test_counts_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    m = vit()
    with caplog.at_level(logging.INFO, logger="dfd.models.finetune"):
        ft.LinearProbe().apply(m, lr=1e-3, weight_decay=0.0)
    assert f"65 of {numel(m)} parameters trainable" in caplog.text


# ---- frozen BatchNorm statistics ----


def test_frozen_batchnorm_stats_survive_train_mode() -> None:
    m = effnet()
    ft.LinearProbe().apply(m, lr=1e-3, weight_decay=0.0)
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert bns
    before = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in bns]
    m.train()  # what Lightning does every epoch
    m(torch.randn(4, 3, 32, 32) * 3 + 1)
    for bn, (mean, var) in zip(bns, before, strict=True):
        assert not bn.training
        assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert m.backbone.classifier.training  # the rest follows train()


def test_norm_only_batchnorm_stats_adapt() -> None:
    m = effnet()
    ft.NormOnly().apply(m, lr=1e-3, weight_decay=0.0)
    bn = m.backbone.bn1
    before = bn.running_mean.clone()
    m.train()
    m(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert bn.training and not torch.equal(bn.running_mean, before)


# ---- LoRA export ----


def _lora_model_with_nonzero_adapters(arch: str, strategy: ft.FinetuneStrategy | None = None) -> nn.Module:
    torch.manual_seed(0)
    m = create_model("timm", arch=arch, img_size=32)
    (strategy or ft.LoRA(rank=4)).apply(m, lr=1e-3, weight_decay=0.0)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # B starts at zero: without this, merged == unmerged trivially
    return m


@pytest.mark.parametrize("arch", ["test_vit", "test_efficientnet", "test_convnext"])
def test_lora_merge_matches_unmerged(arch: str) -> None:
    m = _lora_model_with_nonzero_adapters(arch)
    x = torch.randn(3, 3, 32, 32)
    calibrate_bn(m, x)
    with torch.no_grad():
        y = m(x)
        plain = ft.merge_for_export(m).eval()
        assert not any("lora" in k or "base_layer" in k for k in plain.state_dict())
        assert not any("peft" in type(v).__module__ for v in [*vars(plain).values(), *plain.modules()])
        assert torch.allclose(plain(x), y, atol=1e-5, rtol=0)
        assert not torch.equal(y, create_model("timm", arch=arch, img_size=32).eval()(x))


def test_merged_state_dict_loads_without_peft(tmp_path) -> None:
    m = _lora_model_with_nonzero_adapters("test_vit").eval()
    x = torch.randn(2, 3, 32, 32)
    plain = ft.merge_for_export(m).eval()
    with torch.no_grad():
        expected = plain(x)
    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, tmp_path / "merged.safetensors")
    torch.save({"x": x, "y": expected}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import sys
        class BlockPeft:
            def find_spec(self, name, path=None, target=None):
                if name == "peft" or name.startswith("peft."):
                    raise ImportError("peft is blocked in this test")
        sys.meta_path.insert(0, BlockPeft())
        import torch
        from safetensors.torch import load_file
        from dfd.models import create_model
        from dfd.models.finetune import merge_for_export
        m = create_model("timm", arch="test_vit", img_size=32)
        m.load_state_dict(load_file({str(tmp_path / "merged.safetensors")!r}))
        m = merge_for_export(m).eval()  # no adapters: must not need peft either
        io = torch.load({str(tmp_path / "io.pt")!r}, weights_only=True)
        with torch.no_grad():
            assert torch.allclose(m(io["x"]), io["y"], atol=1e-6), "outputs differ"
        assert "peft" not in sys.modules
        try:
            import peft  # noqa: F401
        except ImportError:
            print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("OK")


def test_engine_rebuild_flow_restores_lora_model() -> None:
    """instantiate(model) -> instantiate(finetune).apply -> load_state_dict gives the same model back."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    model_cfg = {"_target_": "dfd.models.create_model", "name": "timm", "arch": "test_vit", "img_size": 32}
    ft_cfg = OmegaConf.to_container(OmegaConf.load("conf/finetune/lora.yaml"))
    m = _lora_model_with_nonzero_adapters("test_vit", instantiate(ft_cfg)).eval()
    state = m.state_dict()
    rebuilt = instantiate(model_cfg)
    instantiate(ft_cfg).apply(rebuilt, lr=1e-3, weight_decay=0.0)
    rebuilt.load_state_dict(state)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), m(x))
