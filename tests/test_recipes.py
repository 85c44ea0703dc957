"""Generalisation recipes (issue 14): foundation backbones, L2-norm head, GenD's feature losses and slerp,
GenD's LayerNorm-only set, Effort's SVD residual with its merge and torch-only export."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from dfd.engine.losses import DetectionLoss, alignment_loss, slerp_features, uniformity_loss
from dfd.models import create_model
from dfd.models import finetune as ft
from dfd.models.heads import NormLinear
from dfd.models.svd_residual import SVDResidualLinear

ROOT = Path(__file__).resolve().parents[1]
FOUNDATION = {  # preset -> (timm arch, input size, pooling)
    "clip_vit_b16": ("vit_base_patch16_clip_quickgelu_224.openai", 224, "token"),
    "clip_vit_l14": ("vit_large_patch14_clip_quickgelu_224.openai", 224, "token"),
    "dinov2_vit_l14": ("vit_large_patch14_dinov2.lvd142m", 224, "token"),
    "dinov3_vit_l16": ("vit_large_patch16_dinov3.lvd1689m", 224, "token"),
    "pe_core_l14": ("vit_pe_core_large_patch14_336.fb", 224, "map"),
}
# The same architectures cut to 2 blocks of width 64 at a few patches: the recipe's code paths in milliseconds.
SMALL = dict(pretrained=False, depth=2, embed_dim=64, num_heads=4)
SMALL_SIZE = {"clip_vit_b16": 32, "clip_vit_l14": 28, "dinov2_vit_l14": 28, "dinov3_vit_l16": 32, "pe_core_l14": 28}


def model_cfg(name: str, **overrides) -> dict:
    """conf/model/<name>.yaml resolved against the default paths, as the engine stores it."""
    cfg = OmegaConf.create({"paths": OmegaConf.load(ROOT / "conf/paths/default.yaml"),
                            "model": OmegaConf.load(ROOT / f"conf/model/{name}.yaml")})
    cfg.model = OmegaConf.merge(cfg.model, overrides)
    return OmegaConf.to_container(cfg.model, resolve=True)


def small(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, img_size=SMALL_SIZE[name], **{**SMALL, **kw})


def images(name: str, n: int = 4) -> torch.Tensor:
    s = SMALL_SIZE[name]
    return torch.randn(n, 3, s, s, generator=torch.Generator().manual_seed(1))


def numel(params) -> int:
    return sum(p.numel() for p in params)


# ---------------------------------------------------------------------------------------------- backbones
@pytest.mark.parametrize("name", list(FOUNDATION))
def test_preset_yaml_gives_recipe_pooling_size_and_weights_stats(name: str) -> None:
    arch, size, pool = FOUNDATION[name]
    cfg = model_cfg(name)
    assert cfg["pretrained"] is True and cfg["arch"] == arch and cfg["head"] == "linear"
    with torch.device("meta"):  # full size, no memory, no weights: the config is what is under test
        model = instantiate({**cfg, "pretrained": False})
    timm_cfg = timm.models.get_pretrained_cfg(arch)
    spec = model.input_spec
    assert (spec.size, spec.interpolation) == (size, timm_cfg.interpolation)
    assert spec.mean == pytest.approx(timm_cfg.mean) and spec.std == pytest.approx(timm_cfg.std)
    assert model.backbone.global_pool == pool
    head = model.backbone.get_classifier()
    assert isinstance(head, nn.Linear) and head.out_features == 1
    assert head.in_features == (768 if name == "clip_vit_b16" else 1024)
    if name.startswith("clip"):
        assert type(model.backbone.blocks[0].mlp.act).__name__ == "QuickGELU"  # OpenAI's activation
        assert spec.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    if name == "pe_core_l14":
        assert model.backbone.dynamic_img_size and spec.mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("name", list(FOUNDATION))
def test_features_are_the_recipe_pooling_and_the_head_classifies_them(name: str) -> None:
    model = small(name).eval()
    x = images(name)
    b = model.backbone
    with torch.no_grad():
        tokens = b.forward_features(x)  # timm: final norm applied to every token
        want = b.attn_pool(tokens) if name == "pe_core_l14" else tokens[:, 0]
        if name.startswith("clip"):  # post-LN CLS, independent of timm's pooling code
            assert torch.allclose(want, b.norm(_blocks(b, x))[:, 0], atol=1e-5)
        feats = model.forward_features(x)
        assert torch.allclose(feats, want, atol=1e-6)
        assert torch.allclose(model.forward_head(feats), model(x), atol=1e-6)
        assert torch.allclose(model(x), b.get_classifier()(want).squeeze(-1), atol=1e-6)


def _embed(b: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return b._pos_embed(b.patch_embed(x))


def _blocks(b: nn.Module, x: torch.Tensor) -> torch.Tensor:
    h = b.norm_pre(_embed(b, x))
    for blk in b.blocks:
        h = blk(h)
    return h


@pytest.mark.parametrize("spec", [
    dict(name="vit_b16", arch="test_vit", img_size=32), dict(name="convnextv2", arch="convnextv2_atto", img_size=32),
    dict(name="efficientnet_b4", arch="test_efficientnet", img_size=32),
    dict(name="timm", arch="resnet10t", img_size=32), dict(name="clip_vit_b16", img_size=32, **SMALL),
])
def test_l2norm_head_on_every_backbone(spec: dict) -> None:
    torch.manual_seed(0)
    plain = create_model(**spec).eval()
    torch.manual_seed(0)
    normed = create_model(**spec, head="l2norm").eval()
    assert plain.state_dict().keys() == normed.state_dict().keys()  # same checkpoint layout as the linear head
    classifier = normed.backbone.get_classifier()
    assert isinstance(classifier, NormLinear) and not isinstance(plain.backbone.get_classifier(), NormLinear)
    x = torch.randn(3, 3, spec["img_size"], spec["img_size"])
    with torch.no_grad():
        f = normed.forward_features(x)
        logits = normed(x)
        assert logits.shape == (3,)
        assert torch.allclose(normed.forward_head(f), logits, atol=1e-5)
        want = f / f.norm(dim=1, keepdim=True) @ classifier.weight[0] + classifier.bias[0]
        assert torch.allclose(logits, want, atol=1e-5)
        assert torch.allclose(normed.forward_head(7.5 * f), logits, atol=1e-5)  # scale-free
        assert torch.allclose(plain.forward_head(plain.forward_features(x)), plain(x), atol=1e-5)


def test_one_logit_bce_equals_two_way_softmax_cross_entropy() -> None:
    """GenD's head is 2-way softmax + CE; dfd's one logit w1 - w0 with BCE is the same model and loss."""
    torch.manual_seed(0)
    z = F.normalize(torch.randn(6, 16), dim=1)
    two = nn.Linear(16, 2)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    logit = z @ (two.weight[1] - two.weight[0]) + (two.bias[1] - two.bias[0])
    assert torch.allclose(F.softmax(two(z), 1)[:, 1], torch.sigmoid(logit), atol=1e-6)
    assert torch.allclose(F.cross_entropy(two(z), y), F.binary_cross_entropy_with_logits(logit, y.float()), atol=1e-6)


def test_unknown_head_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid heads: linear, l2norm"):
        create_model("timm", arch="test_vit", img_size=32, head="cosine")


# ---------------------------------------------------------------------------------------------- norm_only
@pytest.mark.parametrize(("name", "expected"), [("clip_vit_l14", 102_400), ("clip_vit_b16", 39_936)])
def test_norm_only_on_clip_is_gend_layernorm_set(name: str, expected: int) -> None:
    with torch.device("meta"):
        model = create_model(name, pretrained=False)
    b = model.backbone
    depth, dim = len(b.blocks), b.embed_dim
    # GenD's list in timm names (HF pre_layrnorm, layer_norm1/2, post_layernorm), read off timm's modules.
    lns = {"norm_pre": b.norm_pre, "norm": b.norm}
    for i, blk in enumerate(b.blocks):
        lns[f"blocks.{i}.norm1"], lns[f"blocks.{i}.norm2"] = blk.norm1, blk.norm2
    assert all(isinstance(m, nn.LayerNorm) for m in lns.values())
    assert len(lns) == 2 * depth + 2 == (50 if name == "clip_vit_l14" else 26)
    assert {n for n, m in b.named_modules() if isinstance(m, nn.LayerNorm)} == set(lns)  # no other LN exists
    assert numel(p for m in lns.values() for p in m.parameters()) == expected == (2 * depth + 2) * 2 * dim
    ft.NormOnly().apply(model, lr=1e-3, weight_decay=0.0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = {"backbone.head.weight", "backbone.head.bias"}
    assert trainable == {f"backbone.{n}.{p}" for n in lns for p in ("weight", "bias")} | head
    assert ft.NormOnly().summary(model)["trainable"] == expected + dim + 1


# ---------------------------------------------------------------------------------------------- svd_residual
def _perturb_factors(model: nn.Module, scale: float = 0.05) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SVDResidualLinear):
                m.U_res.add_(scale * torch.randn_like(m.U_res))
                m.S_res.mul_(3.0).add_(scale)
                m.V_res.add_(scale * torch.randn_like(m.V_res))


@pytest.mark.parametrize("name", ["clip_vit_b16", "dinov3_vit_l16", "pe_core_l14"])
def test_svd_residual_starts_at_the_original_network(name: str) -> None:
    model = small(name).eval()
    x = images(name)
    originals = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    with torch.no_grad():
        before = model(x)
    ft.SVDResidual(k=1).apply(model, lr=1e-3, weight_decay=0.0)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, SVDResidualLinear)}
    depth = len(model.backbone.blocks)
    assert sorted(layers) == sorted(f"backbone.blocks.{i}.attn.{p}" for i in range(depth) for p in ("qkv", "proj"))
    assert all(layers[f"backbone.blocks.{i}.attn.qkv"].splits == 3 for i in range(depth))
    for n, m in layers.items():
        assert (m.weight - originals[n]).abs().max() <= 1e-6
        # Each q/k/v block keeps its own SVD: its frozen part has exactly rank m - 1.
        rows = m.out_features // m.splits
        for blk in m.weight_main.detach():
            assert torch.linalg.matrix_rank(blk.double(), rtol=1e-5) == min(rows, m.in_features) - 1
    with torch.no_grad():
        assert (model(x) - before).abs().max() <= 1e-5


def test_svd_residual_factors_are_the_smallest_singular_triplet_of_each_block() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(48, 3 * 48)
    layer = SVDResidualLinear(lin, k=2, splits=3)
    for i, w in enumerate(lin.weight.detach().double().reshape(3, 48, 48)):
        s = torch.linalg.svdvals(w)
        assert torch.allclose(layer.S_res[i].double(), s[-2:], atol=1e-5)
        residual = (layer.U_res[i] * layer.S_res[i]) @ layer.V_res[i]
        assert torch.linalg.svdvals(w - residual.double())[-2:].abs().max() < 1e-4  # W_main lost exactly those


def test_svd_residual_trains_only_the_residual_factors() -> None:
    model = small("clip_vit_b16", head="l2norm")
    strategy = ft.SVDResidual(k=1)
    opt = torch.optim.AdamW(strategy.apply(model, lr=1e-2, weight_decay=0.0))
    layers = [m for m in model.modules() if isinstance(m, SVDResidualLinear)]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.endswith(("U_res", "S_res", "V_res"))} | {
        "backbone.head.weight", "backbone.head.bias"}
    dim = model.backbone.embed_dim
    # Effort's count: per decomposed d x d matrix (q, k, v, proj per block) d + 1 + d parameters, plus the head.
    assert strategy.summary(model)["trainable"] == 4 * len(model.backbone.blocks) * (2 * dim + 1) + dim + 1
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = images("clip_vit_b16"), torch.tensor([0.0, 1.0, 0.0, 1.0])
    F.binary_cross_entropy_with_logits(model(x), y).backward()
    opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) != (n in trainable), n
    assert all(m.weight_main.grad is None and m.bias.grad is None for m in layers)


def test_svd_residual_merges_to_a_plain_network_that_exports_with_torch_only(tmp_path: Path) -> None:
    from dfd.inference.bundle import probability_model

    model = small("clip_vit_b16", head="l2norm")
    ft.SVDResidual(k=1).apply(model, lr=1e-3, weight_decay=0.0)
    _perturb_factors(model)
    model.eval()
    x = images("clip_vit_b16", 3)
    with torch.no_grad():
        want = model(x)
    plain = ft.merge_for_export(model).eval()
    assert not any(isinstance(m, SVDResidualLinear) for m in plain.modules())
    assert isinstance(plain.backbone.blocks[0].attn.qkv, nn.Linear)
    fresh = small("clip_vit_b16", head="l2norm").eval()
    fresh.load_state_dict(plain.state_dict())  # strict: the layout of an untouched model
    with torch.no_grad():
        assert (plain(x) - want).abs().max() <= 1e-5
        assert (fresh(x) - want).abs().max() <= 1e-5
        untouched = small("clip_vit_b16", head="l2norm").eval()  # the factors did move the network
        assert (untouched.forward_features(x) - plain.forward_features(x)).abs().max() > 1e-4
    traced = torch.jit.trace(probability_model(plain), (x,), check_trace=False)
    traced.save(str(tmp_path / "model.torchscript.pt"))
    torch.save({"x": x, "p": torch.sigmoid(want)}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("dfd", "timm", "peft", "hydra", "pytorch_lightning", "lightning"):
                    raise ImportError(name + " is blocked")
        sys.meta_path.insert(0, Block())
        import torch
        m = torch.jit.load({str(tmp_path / "model.torchscript.pt")!r}).eval()
        io = torch.load({str(tmp_path / "io.pt")!r}, weights_only=True)
        with torch.no_grad():
            got = m(io["x"])
        assert got.shape == (3,) and (got - io["p"]).abs().max() <= 1e-5, (got, io["p"])
        print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stderr[-2000:]


def test_svd_residual_checkpoint_rebuild_flow() -> None:
    """instantiate(model) -> strategy.apply -> load_state_dict (how checkpoints reload) gives the same outputs."""
    cfg = {"_target_": "dfd.models.create_model", "name": "dinov3_vit_l16", "img_size": 32, **SMALL}
    torch.manual_seed(0)
    model = instantiate(cfg)
    ft.SVDResidual(k=2, orthogonality=0.1).apply(model, lr=1e-3, weight_decay=0.0)
    _perturb_factors(model)
    torch.manual_seed(5)
    rebuilt = instantiate(cfg)
    ft.SVDResidual(k=2, orthogonality=0.1).apply(rebuilt, lr=1e-3, weight_decay=0.0)
    rebuilt.load_state_dict(model.state_dict())
    x = images("dinov3_vit_l16")
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model.eval()(x))


def _brute_orthogonality(m: SVDResidualLinear) -> torch.Tensor:
    total = 0.0
    for s in range(m.splits):
        u = torch.cat([m.U_main[s], m.U_res[s]], dim=1).double()  # Ũ = [U_r | U_res]
        v = torch.cat([m.V_main[s], m.V_res[s]], dim=0).double()  # Ṽ = [V_r ; V_res]
        total += 0.5 * torch.linalg.norm(u.T @ u - torch.eye(u.shape[1], dtype=u.dtype)) \
            + 0.5 * torch.linalg.norm(v @ v.T - torch.eye(v.shape[0], dtype=v.dtype))
    return total


def test_svd_regularisers_equal_their_definitions() -> None:
    torch.manual_seed(0)
    originals = [nn.Linear(24, 72), nn.Linear(24, 24, bias=False)]
    layers = [SVDResidualLinear(originals[0], k=2, splits=3, keep_basis=True),
              SVDResidualLinear(originals[1], k=1, keep_basis=True)]
    for m in layers:  # at init: orthonormal basis, energy kept
        assert float(m.orthogonality_loss()) < 1e-4 and float(m.energy_loss()) < 1e-3
    model = nn.Sequential(*layers)
    _perturb_factors(model, 0.2)
    for m, orig in zip(layers, originals, strict=True):
        assert float(m.orthogonality_loss()) == pytest.approx(float(_brute_orthogonality(m)), rel=1e-4)
        energy = sum(abs(float(w.double().square().sum() - o.double().square().sum()))
                     for w, o in zip(m.weight.reshape(m.splits, -1, 24), orig.weight.reshape(m.splits, -1, 24),
                                     strict=True))
        assert float(m.energy_loss()) == pytest.approx(energy, rel=1e-4)
    strategy = ft.SVDResidual(k=1, orthogonality=0.3, energy=2.0)
    reg = strategy.regularization(model)
    count = 3 + 1  # decomposed matrices: q, k, v of the first layer, the second layer
    assert float(reg["orthogonality"]) == pytest.approx(0.3 * sum(float(_brute_orthogonality(m)) for m in layers)
                                                        / count, rel=1e-4)
    assert float(reg["energy"]) == pytest.approx(2.0 * sum(float(m.energy_loss()) for m in layers) / count, rel=1e-5)
    sum(reg.values()).backward()
    for m in layers:
        assert torch.isfinite(m.U_res.grad).all() and m.U_res.grad.abs().sum() > 0
    assert ft.SVDResidual().regularization(model) == {}


def test_svd_residual_bad_input_is_explained() -> None:
    with pytest.raises(ValueError, match="no attention projections.*target_modules"):
        ft.SVDResidual().apply(create_model("timm", arch="resnet10t", img_size=32), lr=1e-3, weight_decay=0.0)
    with pytest.raises(ValueError, match="finetune.k must be in"):
        SVDResidualLinear(nn.Linear(4, 4), k=4)
    with pytest.raises(ValueError, match="finetune.k must be >= 1"):
        ft.SVDResidual(k=0)


# ---------------------------------------------------------------------------------------------- losses
def _brute_uniformity(f: torch.Tensor, t: float) -> float:
    z = [v / v.norm() for v in f.double()]
    vals = [math.exp(-t * float((z[i] - z[j]).square().sum())) for i in range(len(z)) for j in range(i + 1, len(z))]
    return math.log(max(sum(vals) / len(vals), 1e-6))


def _brute_alignment(f: torch.Tensor, y: torch.Tensor, alpha: float, g: torch.Tensor | None = None) -> float:
    z = [v / v.norm() for v in f.double()]
    vals = [float((z[i] - z[j]).norm()) ** alpha for i in range(len(z)) for j in range(i + 1, len(z))
            if y[i] == y[j] and (g is None or g[i] == g[j])]
    return sum(vals) / len(vals)


def test_uniformity_and_alignment_equal_brute_force_pairs() -> None:
    torch.manual_seed(0)
    f = torch.randn(11, 32) * torch.rand(11, 1) * 5
    y = torch.tensor([0, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1])
    groups = torch.tensor([0, 0, 1, 0, 1, 0, 1, 0, 1, 1, 0])
    for t in (2.0, 0.5):
        assert float(uniformity_loss(f, t)) == pytest.approx(_brute_uniformity(f, t), abs=1e-5)
    for alpha in (2.0, 1.0):
        assert float(alignment_loss(f, y, alpha)) == pytest.approx(_brute_alignment(f, y, alpha), abs=1e-5)
    assert float(alignment_loss(f, y, 2.0, groups)) == pytest.approx(_brute_alignment(f, y, 2.0, groups), abs=1e-5)
    # The clamp: two orthogonal unit features at t=100 give exp(-200) -> log(1e-6).
    assert float(uniformity_loss(torch.eye(2), 100.0)) == pytest.approx(math.log(1e-6))
    # No same-label pair: alignment is 0 and still differentiable.
    f2 = torch.randn(2, 8, requires_grad=True)
    a = alignment_loss(f2, torch.tensor([0, 1]))
    a.backward()
    assert float(a) == 0.0 and f2.grad is not None


def test_feature_losses_are_float32_and_stable_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    proj = nn.Linear(64, 128)
    x = torch.randn(16, 64)
    x[1] = x[0]  # duplicate features: distance 0 must not give NaN gradients
    y = torch.tensor([0, 0, 1, 1] * 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f = proj(x)
        assert f.dtype == torch.bfloat16
        u, a = uniformity_loss(f), alignment_loss(f, y)
        total, terms = DetectionLoss(uniformity=0.5, alignment=0.1)(f[:, 0], y, f)
    assert u.dtype == a.dtype == total.dtype == torch.float32
    ref = f.detach().float()  # the same bf16 values, upcast: the loss must match their fp32 brute force
    assert float(u) == pytest.approx(_brute_uniformity(ref, 2.0), abs=1e-5)
    assert float(a) == pytest.approx(_brute_alignment(ref, y, 2.0), abs=1e-5)
    assert float(total) == pytest.approx(float(terms["bce"]) + 0.5 * float(u) + 0.1 * float(a), abs=1e-6)
    total.backward()
    assert torch.isfinite(proj.weight.grad).all() and proj.weight.grad.abs().sum() > 0


def test_slerp_follows_the_great_circle_between_same_class_features() -> None:
    torch.manual_seed(0)
    f = torch.randn(8, 16)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])
    partner = torch.tensor([1, 2, 7, 4, 5, 6, 3, 0])
    t = torch.linspace(0, 1, 8)
    out = slerp_features(f, y, t=t, partner=partner)
    zi, zj = F.normalize(f, dim=1), F.normalize(f[partner], dim=1)
    theta = torch.acos((zi * zj).sum(1))
    z = F.normalize(out, dim=1)
    # The angle to the start is t·θ and to the partner (1-t)·θ: the geodesic, not the chord.
    assert torch.allclose(torch.acos((z * zi).sum(1).clamp(-1, 1)), t * theta, atol=1e-3)
    assert torch.allclose(torch.acos((z * zj).sum(1).clamp(-1, 1)), (1 - t) * theta, atol=1e-3)
    norms = (1 - t) * f.norm(dim=1) + t * f[partner].norm(dim=1)
    assert torch.allclose(out.norm(dim=1), norms, atol=1e-4)
    # Random partners: always the same class, never itself when the class has another member.
    from dfd.engine.losses import _same_class_partners

    for seed in range(5):
        p = _same_class_partners(y, torch.Generator().manual_seed(seed))
        assert torch.equal(y[p], y) and not (p == torch.arange(8)).any()
    assert torch.equal(_same_class_partners(torch.tensor([0, 1, 1]), None)[:1], torch.tensor([0]))
    same = slerp_features(torch.ones(2, 4), torch.tensor([1, 1]))  # identical directions stay finite
    assert torch.allclose(same, torch.ones(2, 4))


def test_slerp_modes_shape_the_batch() -> None:
    f, y = torch.randn(6, 8), torch.tensor([0, 1, 0, 1, 0, 1])
    loss = DetectionLoss(slerp="replace")
    f2, y2, _ = loss.augment(f, y)
    assert f2.shape == f.shape and torch.equal(y2, y) and not torch.allclose(f2, f) and loss.needs_features
    f3, y3, g3 = DetectionLoss(slerp="expand", slerp_ratio=3).augment(f, y, torch.arange(6))
    assert f3.shape == (24, 8) and torch.equal(f3[:6], f) and torch.equal(y3, y.repeat(4)) and len(g3) == 24
    assert not DetectionLoss().needs_features
    with pytest.raises(ValueError, match="loss.slerp='mix' is not one of none, replace, expand"):
        DetectionLoss(slerp="mix")


@pytest.mark.parametrize(("choice", "weights"), [("bce", (0.0, 0.0, "none")), ("gend", (0.5, 0.1, "none")),
                                               ("slerp", (0.0, 0.0, "replace"))])
def test_loss_config_group(choice: str, weights: tuple, tmp_path: Path) -> None:
    from tests.conftest import compose

    cfg = compose("train", [f"loss={choice}", f"paths.run_dir={tmp_path}"])
    loss = instantiate(cfg.loss)
    assert (loss.uniformity, loss.alignment, loss.slerp) == weights
    assert (loss.uniformity_t, loss.alignment_alpha) == (2.0, 2.0)
    assert compose("train", [f"paths.run_dir={tmp_path}"]).loss.uniformity == 0.0  # default: plain BCE


# ---------------------------------------------------------------------------------------------- training
STRATEGIES = {
    "full": ft.Full, "linear_probe": ft.LinearProbe, "last_n": lambda: ft.LastN(n=1), "lora": lambda: ft.LoRA(rank=2),
    "llrd": lambda: ft.LLRD(decay=0.7), "norm_only": ft.NormOnly,
    "svd_residual": lambda: ft.SVDResidual(k=1, orthogonality=0.1, energy=0.1),
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("name", list(FOUNDATION))
def test_every_foundation_backbone_and_strategy_trains_a_step(name: str, strategy: str) -> None:
    """GenD's objective (l2norm head, uniformity + alignment) on each backbone x strategy, as the module runs it."""
    model = small(name, head="l2norm")
    strat = STRATEGIES[strategy]()
    opt = torch.optim.AdamW(strat.apply(model, lr=1e-2, weight_decay=0.05))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    criterion = DetectionLoss(uniformity=0.5, alignment=0.1)
    model.train()
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    features = model.forward_features(images(name))
    loss, terms = criterion(model.forward_head(features), y, features)
    loss = loss + sum(strat.regularization(model).values())
    assert torch.isfinite(loss) and set(terms) == {"bce", "uniformity", "alignment"}
    loss.backward()
    opt.step()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"backbone.head.weight", "backbone.head.bias"} <= trainable
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved <= trainable and "backbone.head.weight" in moved
    assert len(moved) > 2 or strategy == "linear_probe"  # something in the backbone trained too


@pytest.mark.slow
def test_dfd_train_gend_and_effort_recipes_end_to_end_and_export(tmp_path: Path, shared_cache: Path) -> None:
    """The real engine: l2norm head + GenD losses + svd_residual with regularisers, then a bundle matching it."""
    from dfd.engine.evaluate import load_module
    from dfd.engine.train import train
    from dfd.inference.bundle import load_bundle
    from dfd.inference.export import export_bundle
    from tests.conftest import compose

    run_dir = tmp_path / "run"
    cfg = compose("train", runtime=True, overrides=[
        f"paths.run_dir={run_dir}", f"paths.cache_dir={shared_cache}", "data.num_workers=0", "logger=csv",
        "trainer.precision=bf16-mixed", "trainer.log_every_n_steps=1",
        "model=clip_vit_b16", "model.pretrained=false", "model.img_size=32", "model.head=l2norm",
        "+model.depth=2", "+model.embed_dim=32", "+model.num_heads=2",
        "finetune=svd_residual", "finetune.orthogonality=0.1", "finetune.energy=0.01", "loss=gend",
        "trainer.max_epochs=1", "data.batch_size=8", "dataset.videos={train: 8, val: 4, test: 4}",
        "dataset.frames_per_video=2",
    ])
    results = train(cfg)
    assert results["params"]["trainable"] == 4 * 2 * (2 * 32 + 1) + 32 + 1
    assert results["train"]["finetune"] == "svd_residual(k=1)"
    import csv

    rows = [r for p in run_dir.rglob("metrics.csv") for r in csv.DictReader(p.open())]
    for term in ("train/bce", "train/uniformity", "train/alignment", "train/orthogonality", "train/energy"):
        values = [float(r[term]) for r in rows if r.get(term)]
        assert values and all(math.isfinite(v) for v in values), term
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    module = load_module(ckpt).eval()
    assert any(isinstance(m, SVDResidualLinear) for m in module.model.modules())
    export_bundle(ckpt, tmp_path / "bundle", calibrate="none")
    bundle = load_bundle(tmp_path / "bundle")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        want = torch.sigmoid(module.model(x))
    assert (bundle(x) - want).abs().max() <= 1e-5
    st = load_bundle(tmp_path / "bundle", backend="safetensors")  # rebuilt from the config: a plain network
    assert (st(x) - want).abs().max() <= 1e-5
