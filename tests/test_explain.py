"""Where a model looks (Grad-CAM, dfd.models.explain): on the synthetic set's blend regions, from a bundle as
from its checkpoint, mapped back onto video frames; and the views built on it (W&B worst-video table,
dfd-report's failure galleries and report.html)."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dfd.models.explain import MAPS_FILE, Explainer, mass_inside
from tests.conftest import compose
from tests.media import write_face_video
from tests.test_export import bundles, checkpoints  # noqa: F401  (session fixtures: trained once)

VIDEOS = {"train": 48, "val": 16, "test": 16}
VIDEOS_ARG = "{train: 48, val: 16, test: 16}"


# ----------------------------------------------------------------------------------------------- masks
def test_blend_masks_regenerate_from_the_seed(shared_cache: Path) -> None:
    """A video's masks come back from its seed, aligned with the very crops the cache holds."""
    from dfd.synthetic.draw import DOMAINS, make_video
    from dfd.synthetic.source import SyntheticSource

    src = SyntheticSource(domain="c", videos={"train": 2, "val": 2, "test": 4}, frames_per_video=2,
                          cache_dir=shared_cache / "masks")
    src.prepare()
    fake, real = "c/test/fake/0001", "c/test/real/0003"
    mf, mr = src.video_masks(fake), src.video_masks(real)
    assert mf.shape == mr.shape == (2, 64, 64) and mf.dtype == np.float32
    assert 0.05 < mf.mean() < 0.6 and mf.min() >= 0 and mf.max() <= 1.0001
    # The fake was made from real 0003 (round-robin): it was pasted exactly where that real's mask lies.
    np.testing.assert_allclose(mf, mr, atol=1e-6)
    # Regenerating draws what the cache holds, pixel for pixel (so the masks belong to those crops).
    rng, source, _ = src._generators(2, 1)
    images, _ = make_video(DOMAINS["c"], True, 64, 2, rng, source=source)
    cached = cv2.imread(str(src.data_dir / "crops" / fake / "000001.png"))[..., ::-1]
    np.testing.assert_array_equal(images[1], cached)
    # Where the fake differs from its source real is inside the mask (the swap), not outside it.
    real_img = cv2.imread(str(src.data_dir / "crops" / real / "000001.png"))[..., ::-1].astype(float)
    diff, m = np.abs(cached.astype(float) - real_img).mean(-1), mf[1]
    assert (diff * m).sum() / m.sum() > 2 * (diff * (1 - m)).sum() / (1 - m).sum()  # camera noise is everywhere
    with pytest.raises(Exception, match="not a video of this set"):
        src.video_masks("c/test/fake/0003")


# ----------------------------------------------------------------------------------------------- maps
def test_explainer_shapes_frozen_weights_and_clips() -> None:
    """CNN and ViT maps at the input size in 0-1; frozen (linear-probe), SVD-residual and norm-only models; clips
    per frame, ADDNet-3D's too. (LoRA: the bundle test explains a LoRA checkpoint.)"""
    from dfd.models import create_model
    from dfd.models.finetune import LinearProbe, NormOnly, SVDResidual

    torch.manual_seed(0)
    x = torch.randn(3, 3, 64, 64)
    cnn = create_model(name="timm", arch="resnet10t", img_size=64)
    vit = create_model(name="timm", arch="test_vit", img_size=64)
    LinearProbe().apply(cnn, 1e-3, 0.0)  # everything before the head frozen: the map must still exist
    for model in (cnn, vit):
        maps = Explainer(model)(x)
        assert maps.shape == (3, 64, 64) and maps.dtype == np.float32
        peaks = maps.max(axis=(1, 2))  # each map scaled to 0-1, or empty (no evidence for "fake" anywhere)
        assert maps.min() >= 0 and ((peaks > 0.99) | (peaks == 0)).all() and (peaks > 0.99).any()
    assert Explainer(cnn).layer is cnn.backbone.layer3  # layer4 is 2x2 at 64 px: the 4x4 stage localises
    clips = Explainer(vit)(x[None])  # (1, L=3, 3, 64, 64): one map per frame
    assert clips.shape == (1, 3, 64, 64)
    np.testing.assert_allclose(clips[0], Explainer(vit)(x), atol=1e-5)  # a frame model scores frames alone
    # Effort's SVD-residual and GenD's norm-only ViTs, and ADDNet-3D (a clip model with landmark masks: one map
    # per frame from its shared entry flow).
    for strategy in (SVDResidual(k=1), NormOnly()):
        tuned = create_model(name="timm", arch="test_vit", img_size=64)
        strategy.apply(tuned, 1e-3, 0.0)
        assert Explainer(tuned)(x[:1]).shape == (1, 64, 64)
    addnet = create_model(name="addnet3d", clip_len=2, img_size=64, head_channels=[8, 8])
    explainer = Explainer(addnet)
    assert explainer.layer is addnet.backbone.block3
    assert explainer(x[None, :2]).shape == (1, 2, 64, 64)


# ----------------------------------------------------------------------------------------------- the study
def _train_and_explain(base: Path, cache: Path, model: list[str], explain: int = 3) -> dict:
    """Train on a synthetic domain (W&B offline), then (explain > 0) dfd-eval the checkpoint with explain=N."""
    from dfd.engine.evaluate import evaluate
    from dfd.engine.train import train

    common = [f"paths.cache_dir={cache}", "data.num_workers=0", "data.batch_size=16"]
    res = train(compose("train", runtime=True, overrides=[f"paths.run_dir={base / 'train'}", *common,
                                                          f"dataset.videos={VIDEOS_ARG}", "trainer.max_epochs=3",
                                                          *model]))
    ckpt = res["selection"]["checkpoint"]
    if explain:
        evaluate(compose("eval", overrides=[f"ckpt_path={ckpt}", f"paths.run_dir={base / 'eval'}", *common,
                                            "logger=none", f"explain={explain}"]))
    return {"train": base / "train", "eval": base / "eval", "ckpt": Path(ckpt), "results": res, "base": base}


MODELS = {
    "cnn": ["model=small_cnn", "dataset.domain=a"],
    # A ViT from scratch (the 0.3 M-parameter `tiny`, CLS pooling) does not find domain a's trace (a blurrier
    # pasted face: a quadratic, texture-energy cue) in a few epochs (AUC 0.5 after 100 steps); domain b's
    # sharpened face with an up-sampling checkerboard is linear in its patches: AUC 1.0 after 100 steps at a
    # constant lr and without JPEG augmentation (which erases the checkerboard).
    "vit": ["model=tiny", "dataset.domain=b", "augment=none", "optim.scheduler=constant", "trainer.max_epochs=8"],
}
DOMAIN = {"cnn": "a", "vit": "b"}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path):
    """Each backbone trained once for this module (lazily, by name)."""
    done: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in done:
            # Only the CNN's evaluation is looked at (W&B table, report); the ViT needs its training alone.
            done[name] = _train_and_explain(tmp_path_factory.mktemp(f"study_{name}"), shared_cache, MODELS[name],
                                            explain=3 if name == "cnn" else 0)
        return done[name]

    return get


@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_heatmaps_look_at_the_blend_region(study, shared_cache: Path, name: str) -> None:
    """On a model that separates the domain (AUC >= 0.9), fake crops' heatmap mass lies inside the generator's
    blend region more than the region's share of the crop, and more than real crops' mass in the same region."""
    from dfd.data.datasets import ManifestArrays, read_rgb
    from dfd.engine.evaluate import load_module
    from dfd.synthetic.source import SyntheticSource

    run = study(name)
    domain = DOMAIN[name]
    assert run["results"]["test"][f"synthetic_{domain}"]["video"]["auc"] >= 0.9
    model = load_module(run["ckpt"]).model.eval()
    src = SyntheticSource(domain=domain, videos=VIDEOS, cache_dir=shared_cache / "synthetic")
    arrays = ManifestArrays(src.manifest_path, "test")
    spec = model.input_spec
    mean, std = np.array(spec.mean, np.float32) * 255, np.array(spec.std, np.float32) * 255
    images = np.stack([read_rgb(arrays.path(i)) for i in range(len(arrays))]).astype(np.float32)
    maps = Explainer(model)(torch.from_numpy(((images - mean) / std).transpose(0, 3, 1, 2).copy()))
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in arrays.video_names]
    masks = {v: src.video_masks(v) for v in names}
    inside = {0: [], 1: []}
    share = []
    for i, heat in enumerate(maps):
        mask = masks[names[arrays.video[i]]][arrays.frame[i]]
        mass = mass_inside(heat, mask)  # NaN: an empty map (no evidence for "fake" anywhere), nothing inside
        inside[int(arrays.label[i])].append(0.0 if np.isnan(mass) else mass)
        share.append(float(mask.mean()))
    fake, real, area = float(np.mean(inside[1])), float(np.mean(inside[0])), float(np.mean(share))
    print(f"{name}: heatmap mass inside the blend region: fakes {fake:.3f}, reals {real:.3f}, region share {area:.3f}")
    assert fake > area and fake > real


def test_eval_explain_w_and_b_table_and_report_html(study, tmp_path: Path) -> None:
    """dfd-eval explain=N writes heatmaps of the worst videos; the training run's offline W&B log holds the
    worst-video table with its images; dfd-report's report.html holds every matrix cell, gallery and figure,
    inlined and decodable, with no external URL (and, with Chromium on the machine, renders the matrix)."""
    from dfd.cli.report import main as report_main
    from dfd.report.wandb_runs import iter_records, offline_tables

    run = study("cnn")
    results = json.loads((run["eval"] / "results.json").read_text())
    assert results["explain"]["n"] == 3 and set(results["explain"]["videos"]) == {"synthetic_a"}
    for vid in results["explain"]["videos"]["synthetic_a"]:
        folder = run["eval"] / "explain" / "synthetic_a" / vid
        cam = np.load(folder / MAPS_FILE)
        assert cam["maps"].shape == (4, 64, 64) and len(list(folder.glob("0000*.png"))) == 4

    # W&B: the table in the offline log (a run artifact: its manifest names the table and every image in it).
    log = next(run["train"].rglob("offline-run-*/run-*.wandb"))
    logged: dict[str, dict] = {}
    for record in iter_records(log):
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key = list(item.nested_key) or [item.key]
                if len(key) == 2:
                    logged.setdefault(key[0], {})[key[1]] = json.loads(item.value_json)
    assert logged["test/worst_videos"]["_type"] == "table-file"
    assert logged["test/roc_curves_table"]["_type"] == "table-file"  # the ROC line plot's data
    table = offline_tables(log)["test/worst_videos"]
    assert table["columns"][:6] == ["test_set", "rank", "video_id", "label", "method", "prob_fake"]
    assert len(table["data"]) == 8
    crops = table["columns"].index("crops")
    for row in table["data"]:
        image = cv2.imread(table["files"][row[crops]["path"]])
        assert image is not None and image.shape[0] == 96 and image.shape[1] == 4 * 96

    out = tmp_path / "report"
    assert report_main([str(run["train"]), str(run["eval"]), "--out", str(out), "--gallery", "2",
                        "--wandb-project", "me/dfd-reports"]) == 0
    # The report run (offline here) holds the matrix and the gap as Tables. W&B's service writes the log behind
    # the run's finish(), so give it a moment.
    report_log = next(out.glob("wandb/offline-run-*/run-*.wandb"))
    for _ in range(60):
        logged_report = offline_tables(report_log)
        if {"report/matrix", "report/gap"} <= set(logged_report):
            break
        time.sleep(0.5)
    assert {"report/matrix", "report/gap"} <= set(logged_report)
    assert len(logged_report["report/matrix"]["data"]) == 1 and "gap" in logged_report["report/gap"]["columns"]
    page = (out / "report.html").read_text()
    assert not re.search(r"(https?:|ftp:)//|src=\"//|url\(", page), "report.html must not reference anything outside"
    parser = _Page()
    parser.feed(page)
    with (out / "matrix.csv").open() as f:
        matrix = list(csv.DictReader(f))
    test_sets = [c for c in matrix[0] if c.startswith("synthetic_")]
    for row in matrix:
        for t in test_sets:
            assert row[t] in parser.values, (row["config"], t, row[t])
    assert len(parser.images) >= 6
    for src in parser.images:
        assert src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,"))
        img = cv2.imdecode(np.frombuffer(base64.b64decode(src.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.size > 0
    gallery = list(csv.DictReader((out / "gallery.csv").open()))
    assert {r["kind"] for r in gallery} == {"false_positive", "false_negative"} and all(r["thumbnail"] for r in gallery)
    assert any(r["heatmap"] for r in gallery)  # the eval run explained its worst videos
    assert sum(f"alt=\"heatmaps of {r['video_id']}\"" in page for r in gallery if r["heatmap"]) >= 1
    _screenshot(out / "report.html", tmp_path)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: set[str] = set()
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "td" and a.get("data-value"):
            self.values.add(a["data-value"])
        if tag == "img":
            self.images.append(a.get("src") or "")


def _screenshot(page: Path, tmp: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no Chromium binary on this machine (Debian package `chromium`): report.html was checked by "
                    "parsing only, not rendered")
    shot = tmp / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp / 'chromium'}", f"--screenshot={shot}", "--window-size=1400,2000",
                    page.resolve().as_uri()], capture_output=True, timeout=120, check=False)
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (2000, 1400)
    # The matrix renders: the top of the page is not blank (text, table borders, in-domain cell shading).
    top = img[:600]
    assert (top < 200).any(axis=2).mean() > 0.005


# ----------------------------------------------------------------------------------------------- bundles
def test_bundle_explain_equals_checkpoint_explain(bundles, checkpoints, tmp_path: Path) -> None:  # noqa: F811
    """dfd-predict --explain on an exported LoRA bundle (its safetensors network: TorchScript has no hooks) gives
    the crops and maps dfd-eval explain=N gives from the checkpoint, to 1e-4; on a video the heatmaps go back
    onto the frames."""
    from dfd.cli.predict import main as predict_main
    from dfd.engine.evaluate import evaluate

    base = checkpoints["lora"].parents[3]
    cache = base / "cache"
    evaluate(compose("eval", overrides=[f"ckpt_path={checkpoints['lora']}", f"paths.run_dir={tmp_path / 'eval'}",
                                        f"paths.cache_dir={cache}", "logger=none", "data.num_workers=0",
                                        "explain=2"]))
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    manifest = Path(results["crop_manifests"]["synthetic_a"])
    compared = 0
    for vid in next(iter(results["explain"]["videos"].values())):
        want = np.load(tmp_path / "eval" / "explain" / "synthetic_a" / vid / MAPS_FILE)
        crops = sorted((manifest.parent / "crops" / vid).glob("*.png"))
        assert len(crops) == len(want["maps"]) == 2
        out = tmp_path / "predict" / vid.replace("/", "_")
        predict_main([str(bundles["lora"]), *map(str, crops), "--inputs", "crops", "--explain", str(out),
                      "--save-crops", str(out / "crops"), "--out", str(out / "p.csv"), "--no-progress"])
        for k, crop in enumerate(crops):
            rel = crop.name  # the inputs' common folder is the video's crop folder
            got = np.load(out / rel / MAPS_FILE)
            np.testing.assert_array_equal(cv2.imread(str(out / "crops" / rel / "000000.png")), cv2.imread(str(crop)))
            np.testing.assert_allclose(got["maps"][0], want["maps"][k], atol=1e-4)
            np.testing.assert_allclose(got["probs"][0], want["probs"][k], atol=1e-4)
            compared += 1
    assert compared == 4

    # A video: MTCNN finds the face, each scored crop gets its overlay and the heatmap laid back on its frame.
    video, _ = write_face_video(tmp_path / "media" / "face.mp4", n_frames=4)
    predict_main([str(bundles["plain"]), str(video), "--frames", "2", "--explain", str(tmp_path / "x"),
                  "--out", str(tmp_path / "v.csv"), "--no-progress"])
    folder = tmp_path / "x" / video.name  # mirrored under the inputs' common folder, as --save-crops
    cam = np.load(folder / MAPS_FILE)
    assert cam["maps"].shape == (2, 64, 64) and len(cam["frames"]) == 2
    for f in cam["frames"]:
        crop, frame = cv2.imread(str(folder / f"{f:06d}.png")), cv2.imread(str(folder / f"{f:06d}_frame.png"))
        assert crop.shape[:2] == (64, 64) and frame.shape[:2] == (320, 320)
