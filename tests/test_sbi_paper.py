"""SBI as the paper trains it: one augmentation draw per (real, self-blend) pair, per-process augmentation seeds,
SAM (SGD inside, two gradient evaluations per step) and the paper's LR schedule."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from dfd.data.datasets import FrameDataset, ManifestArrays
from dfd.data.sbi import SelfBlend, SelfBlendedPairs
from dfd.data.transforms import Pipeline, Spec

ROOT = Path(__file__).resolve().parents[1]
SIZE = 160  # crops stored at the model's size: the resize is the identity, augmentation alone acts


def augment(preset: str) -> list:
    return [instantiate(t) for t in OmegaConf.load(ROOT / f"conf/augment/{preset}.yaml").train]


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> ManifestArrays:
    """Real faces (the astronaut, MTCNN landmarks) in wide crops, 8 frames, as a frame manifest on disk."""
    import pandas as pd
    from skimage.data import astronaut

    from dfd.cli.sbi_grid import _astronaut_face
    from dfd.store.schema import validate_manifest, write_parquet

    out = tmp_path_factory.mktemp("sbi_aug")
    img = astronaut()
    (x1, y1, x2, y2), points = _astronaut_face()
    rows = []
    for f in range(8):
        side = (2.4 + 0.1 * f) * max(x2 - x1, y2 - y1)  # the face fills about a third of the crop
        sx, sy = (x1 + x2) / 2 - side / 2 + 3 * f, (y1 + y2) / 2 - side / 2 - 2 * f
        mat = np.float32([[SIZE / side, 0, -sx * SIZE / side], [0, SIZE / side, -sy * SIZE / side]])
        crop = cv2.warpAffine(img, mat, (SIZE, SIZE), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT_101)
        lm = (points - (sx, sy)) * (SIZE / side)
        cv2.imwrite(str(out / f"{f}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        rows.append({"video_id": "astronaut", "frame": f, "crop_path": f"{f}.png", "label": 0, "split": "train",
                     "method": "real", "identity": "astronaut", "bbox": [0.0, 0.0, 1.0, 1.0],
                     "landmarks": lm.reshape(-1).astype(float).tolist(), "score": 1.0})
    write_parquet(validate_manifest(pd.DataFrame(rows)), out / "manifest.parquet")
    return ManifestArrays(out / "manifest.parquet", splits="train")


def _outside(mask: np.ndarray, block: int = 16, spread: int = 6) -> np.ndarray:
    """Pixels that no augmentation can couple to the mask: the mask's pixels, grown to whole JPEG MCUs (16 px
    at 4:2:0, the grid of the augmented image) and by a few pixels for resampling and blur kernels, excluded."""
    inside = (mask > 0).astype(np.uint8)
    h, w = inside.shape
    grid = inside.reshape(h // block, block, w // block, block).max(axis=(1, 3))
    blocks = np.kron(grid, np.ones((block, block), np.uint8))
    grown = cv2.dilate(np.maximum(inside, blocks), np.ones((2 * spread + 1, 2 * spread + 1), np.uint8))
    return grown == 0


@pytest.mark.parametrize("preset", ["light", "strong", "sbi"])
def test_sbi_pair_differs_only_inside_the_blend_mask_after_augmentation(frames, preset):
    spec = Spec(SIZE, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    base = FrameDataset(frames, Pipeline(spec, augment(preset)))
    pairs = SelfBlendedPairs(base, SelfBlend(), mode="sbi", seed=3, masks=True)
    torch.manual_seed(0)
    flips, checked = 0, 0
    for epoch in range(3):
        for i in range(len(pairs)):
            real, fake = pairs[(epoch, i)]
            mask = real["mask"].numpy()
            assert torch.equal(fake["mask"], real["mask"]) and mask.shape == (SIZE, SIZE)
            out = torch.from_numpy(_outside(mask))
            assert out.float().mean() > 0.1, "too little outside the mask to check anything"
            diff = (real["image"] != fake["image"]).any(0)
            assert not diff[out].any(), f"pair {i} epoch {epoch} differs outside its blend mask"
            assert diff.any(), "a self-blend must differ from its real frame somewhere"
            checked += 1
            # Count draws with a flip: the mask's centroid moves to the other side of the vertical axis.
            raw = pairs.blend.pair(base.load(int(pairs.items[i]))["image"], base.load(int(pairs.items[i]))["landmarks"],
                                   np.random.default_rng([3, epoch, int(pairs.items[i])]))[2]
            cx = lambda m: (m * np.arange(SIZE)[None, :]).sum() / max(m.sum(), 1e-6)  # noqa: E731
            flips += (cx(raw) - SIZE / 2) * (cx(mask) - SIZE / 2) < 0
    assert checked == 24 and 0 < flips < checked  # flips happened, and not always


def test_independent_draws_would_break_the_pair(frames):
    """The check above has teeth: augmenting the pair's two images with two draws changes pixels outside."""
    spec = Spec(SIZE, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    base = FrameDataset(frames, Pipeline(spec, augment("light")))
    sample = base.load(0)
    real, fake, mask = SelfBlend().pair(sample["image"], sample["landmarks"], np.random.default_rng(0))
    torch.manual_seed(0)
    outside = torch.from_numpy(_outside(mask))
    broken = 0
    for _ in range(10):
        a = base.apply_transform({**sample, "image": real})["image"]
        b = base.apply_transform({**sample, "image": fake})["image"]
        broken += bool((a != b).any(0)[outside].any())
    assert broken >= 3


# ---------------------------------------------------------------------------------------------- seeding
class Constant(Dataset):
    """One image, augmented anew on every access: what differs between items is the augmentation draw."""

    def __init__(self, preset: str = "strong") -> None:
        rng = np.random.default_rng(0)
        self.img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        self.pipe = Pipeline(Spec(32, (0.5,) * 3, (0.5,) * 3), augment(preset))

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.pipe(self.img)[0]


def _epoch(ds: Dataset, seed: int, workers: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)  # what Lightning's seed_everything does first
    loader = DataLoader(ds, batch_size=1, num_workers=workers, multiprocessing_context="fork" if workers else None)
    return [b[0] for b in loader]


def test_augmentation_differs_between_workers_and_repeats_with_the_seed():
    ds = Constant()
    run1 = _epoch(ds, 7, workers=2)
    run2 = _epoch(Constant(), 7, workers=2)
    # Two runs with one seed: the same sequence, item for item.
    assert all(torch.equal(a, b) for a, b in zip(run1, run2, strict=True))
    # With 2 workers, items 0, 2, 4... come from worker 0 and 1, 3, 5... from worker 1: their k-th draws differ.
    w0, w1 = run1[0::2], run1[1::2]
    assert sum(not torch.equal(a, b) for a, b in zip(w0, w1, strict=True)) >= 6
    # Another seed, another sequence; the main process (no workers) is seeded from the run's seed too.
    assert not all(torch.equal(a, b) for a, b in zip(run1, _epoch(Constant(), 8, workers=2), strict=True))
    main1, main2 = _epoch(Constant(), 7, workers=0), _epoch(Constant(), 7, workers=0)
    assert all(torch.equal(a, b) for a, b in zip(main1, main2, strict=True))


# ---------------------------------------------------------------------------------------------- SAM
def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g)


def _loss_at(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((x @ w.T + b - y) ** 2).mean()


def _grads(w: torch.Tensor, b: torch.Tensor, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    w, b = w.detach().requires_grad_(), b.detach().requires_grad_()
    return torch.autograd.grad(_loss_at(w, b, x, y), (w, b))


def _clip(gs: tuple[torch.Tensor, ...], max_norm: float | None) -> tuple[torch.Tensor, ...]:
    if max_norm is None:
        return gs
    norm = torch.cat([g.reshape(-1) for g in gs]).norm()
    return tuple(g * min(1.0, max_norm / (float(norm) + 1e-6)) for g in gs)


def _sam_by_hand(w, b, x, y, steps: int, lr: float, momentum: float, rho: float, clip: float | None = None):
    """SAM written out: g = grad L(w); e = rho g/||g||; g' = grad L(w + e); SGD-momentum step from w with g'."""
    bufs = None
    for _ in range(steps):
        g = _clip(_grads(w, b, x, y), clip)
        norm = torch.cat([t.reshape(-1) for t in g]).norm()
        e = [rho * t / norm for t in g]
        g2 = _clip(_grads(w + e[0], b + e[1], x, y), clip)
        bufs = list(g2) if bufs is None else [momentum * m + t for m, t in zip(bufs, g2, strict=True)]
        w, b = w - lr * bufs[0], b - lr * bufs[1]
    return w, b


def test_sam_step_equals_the_hand_computed_two_step_update():
    from dfd.engine.optim import SAM

    x, y = _data()
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    calls = []

    def closure():
        calls.append(opt.perturbed)
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    assert calls == [False, True] * 3  # two evaluations per step, the second at the perturbed weights
    w, b = _sam_by_hand(w0, b0, x, y, steps=3, lr=0.1, momentum=0.9, rho=0.05)
    torch.testing.assert_close(model.weight.detach(), w, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(model.bias.detach(), b, rtol=1e-6, atol=1e-7)
    plain = _sam_by_hand(w0, b0, x, y, steps=3, lr=0.1, momentum=0.9, rho=1e-9)[0]
    assert (plain - w).abs().max() > 1e-4  # SAM is not plain SGD here
    # The base optimiser's momentum is the checkpointed state: a reloaded SAM continues exactly.
    state = opt.state_dict()
    assert any("momentum_buffer" in s for s in state["state"].values())
    twin = torch.nn.Linear(3, 1)
    twin.load_state_dict(model.state_dict())
    opt2 = SAM(twin.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    opt2.load_state_dict(state)
    with pytest.raises(RuntimeError, match="closure"):
        opt2.step()


class _Tiny:
    """A minimal LightningModule over one fixed batch, optimised by dfd's build_optimizer (SAM)."""

    @staticmethod
    def make(optim: dict):
        import pytorch_lightning as pl

        from dfd.engine.optim import build_optimizer

        class Tiny(pl.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                torch.manual_seed(0)
                self.net = torch.nn.Linear(3, 1)
                self.calls = 0

            def training_step(self, batch, _):
                self.calls += 1
                x, y = batch
                return ((self.net(x).float() - y) ** 2).mean()

            def configure_optimizers(self):
                return build_optimizer(optim, [{"params": list(self.parameters())}], self.trainer)

        return Tiny()


def _fit(module, **trainer_kw) -> None:
    import pytorch_lightning as pl

    from dfd.engine.quiet import quiet_dependencies

    quiet_dependencies()
    x, y = _data()
    loader = DataLoader(list(zip(x, y, strict=True)), batch_size=8)
    pl.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, **trainer_kw).fit(module, loader)


SAM_CFG = {"optimizer": {"_target_": "torch.optim.SGD", "momentum": 0.9}, "lr": 0.1, "weight_decay": 0.0,
           "sam": {"rho": 0.05}}


def test_sam_under_lightning_with_gradient_clipping_and_bf16():
    x, y = _data()
    module = _Tiny.make(SAM_CFG)
    w0, b0 = module.net.weight.detach().clone(), module.net.bias.detach().clone()
    _fit(module, gradient_clip_val=0.05)  # small enough to clip both gradients
    assert module.calls == 2
    w, b = _sam_by_hand(w0, b0, x, y, steps=1, lr=0.1, momentum=0.9, rho=0.05, clip=0.05)
    torch.testing.assert_close(module.net.weight.detach(), w, rtol=1e-5, atol=1e-6)
    unclipped = _sam_by_hand(w0, b0, x, y, steps=1, lr=0.1, momentum=0.9, rho=0.05)[0]
    assert (unclipped - w).abs().max() > 1e-3  # the clipping did act
    bf16 = _Tiny.make(SAM_CFG)
    _fit(bf16, precision="bf16-mixed")
    assert bf16.calls == 2 and torch.isfinite(bf16.net.weight).all()
    assert not torch.equal(bf16.net.weight.detach(), w0)


def test_sam_refuses_accumulation_and_fp16_in_one_line():
    from types import SimpleNamespace

    from dfd.engine.optim import build_optimizer
    from dfd.errors import ConfigError

    params = [{"params": [torch.nn.Parameter(torch.zeros(2))]}]
    with pytest.raises(ConfigError, match="accumulate_grad_batches=1"):
        _fit(_Tiny.make(SAM_CFG), accumulate_grad_batches=2)
    with pytest.raises(ConfigError, match="bf16-mixed"):
        build_optimizer(SAM_CFG, params, SimpleNamespace(accumulate_grad_batches=1, precision="16-mixed"))
    assert type(build_optimizer({**SAM_CFG, "sam": None}, params)).__name__ == "SGD"


# ---------------------------------------------------------------------------------------------- schedules
def test_linear_decay_is_sbis_constant_then_linear_to_zero():
    from dfd.engine.optim import lr_factor

    f = lr_factor({"scheduler": "linear_decay", "decay_start": 0.75, "warmup": 0}, total_steps=100, steps_per_epoch=1)
    assert [f(s) for s in (0, 50, 74, 75)] == [1.0, 1.0, 1.0, 1.0]
    assert f(80) == pytest.approx(20 / 25) and f(99) == pytest.approx(1 / 25)
    assert all(f(s) >= f(s + 1) for s in range(99))


def test_cosine_restarts_is_gends_sequential_warmup_and_warm_restarts():
    """Against torch's own schedulers, built the way GenD builds them (LinearLR then CosineAnnealingWarmRestarts)."""
    from dfd.engine.optim import lr_factor

    per_epoch, epochs, lr, min_lr = 7, 30, 3e-4, 1e-5
    total = per_epoch * epochs
    cfg = {"scheduler": "cosine_restarts", "warmup_epochs": 1, "cycle_epochs": 10, "min_lr_ratio": min_lr / lr}
    f = lr_factor(cfg, total, per_epoch)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=min_lr / lr, end_factor=1.0, total_iters=per_epoch),
        torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10 * per_epoch, eta_min=min_lr),
    ], milestones=[per_epoch])
    want = []
    for _ in range(total):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose([lr * f(s) for s in range(total)], want, rtol=1e-6)
    assert min(want) == pytest.approx(min_lr, rel=1e-3)
