"""dfd-export: bundles that load with torch only and reproduce the checkpoint (plain and LoRA models)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from dfd.faces.contract import CropContract
from dfd.inference.bundle import BundleError, load_bundle
from dfd.inference.calibrate import choose_threshold, engine_eer

BIN = Path(sys.executable).parent
TRAIN_ARGS = ["model=tiny", "logger=none", "trainer.max_epochs=1", "dataset.videos={train:16,val:8,test:8}",
              "dataset.frames_per_video=2", "data.num_workers=0"]
BLOCKED = ("lightning", "pytorch_lightning", "lightning_fabric", "hydra", "omegaconf", "peft", "wandb", "timm")


def _env(base: Path) -> dict:
    # The synthetic set goes to the test's own folder (absolute, so export finds it from any cwd).
    return {**os.environ, "DFD_CACHE": str(base / "cache"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


@functools.cache
def trained(base: Path) -> dict[str, Path]:
    """Train the plain and the LoRA tiny model once per session with the real dfd-train (one multirun)."""
    cmd = [str(BIN / "dfd-train"), "-m", *TRAIN_ARGS, "finetune=full,lora", f"hydra.sweep.dir={base / 'runs'}"]
    r = subprocess.run(cmd, env=_env(base), cwd=base, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"dfd-train failed:\n{(r.stdout + r.stderr)[-3000:]}"
    return {name: base / "runs" / str(i) / "checkpoints" / "last.ckpt" for i, name in enumerate(("plain", "lora"))}


@functools.cache
def exported(base: Path) -> dict[str, Path]:
    """Plain model exported through the CLI entry point (EER threshold); LoRA with best-accuracy threshold."""
    from dfd.cli.export import main
    from dfd.inference.export import export_bundle

    ckpts = trained(base)
    old = os.environ.get("DFD_CACHE")
    os.environ["DFD_CACHE"] = str(base / "cache")  # calibration rebuilds the synthetic val split from here
    umask = os.umask(0o077)  # a private umask: the bundle must still come out readable by others
    try:
        main([str(ckpts["plain"]), str(base / "bundle_plain")])
        export_bundle(ckpts["lora"], base / "bundle_lora", calibrate="accuracy")
    finally:
        os.umask(umask)
        os.environ.pop("DFD_CACHE") if old is None else os.environ.__setitem__("DFD_CACHE", old)
    return {"plain": base / "bundle_plain", "lora": base / "bundle_lora"}


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints of the tiny model, plain and LoRA."""
    return trained(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bundles exported from ``checkpoints``."""
    return exported(tmp_path_factory.getbasetemp())


def _inputs(n: int = 3, size: int = 64) -> torch.Tensor:
    return torch.randn((n, 3, size, size), generator=torch.Generator().manual_seed(7))


@functools.cache
def _module(ckpt: Path) -> torch.nn.Module:
    from dfd.engine.evaluate import load_module

    return load_module(ckpt).eval()


def checkpoint_probs(ckpt: Path, x: torch.Tensor) -> np.ndarray:
    """Probabilities the training checkpoint itself gives (the reference every export must match)."""
    with torch.no_grad():
        return torch.sigmoid(_module(ckpt)(x)).numpy()


# ----------------------------------------------------------------------------------------------- files
def test_bundle_files_and_preprocess_json(bundles: dict[str, Path]) -> None:
    for kind, folder in bundles.items():
        names = {p.name for p in folder.iterdir()}
        assert {"model.safetensors", "model.torchscript.pt", "model.onnx", "preprocess.json", "README.md"} <= names
        # Readable by the organiser's server account whatever the umask or the exporters' temporary files chose.
        assert {p.name: oct(p.stat().st_mode & 0o777) for p in folder.iterdir()} == {n: "0o644" for n in names}
        cfg = json.loads((folder / "preprocess.json").read_text())
        assert cfg["format_version"] == 2
        assert cfg["labels"] == {"0": "real", "1": "fake"} and cfg["inputs"] == ["images"]
        assert cfg["input"]["size"] == 64 and cfg["input"]["mean"] == [0.5, 0.5, 0.5]
        assert cfg["input"]["interpolation"] == "bicubic" and cfg["input"]["clip_len"] is None
        # The crop contract of the training cache (synthetic: drawn like dfd-extract's crops at image_size),
        # copied from the checkpoint: what dfd-predict runs on raw media.
        crop = cfg["crop"]
        assert crop == CropContract(size=64).to_dict() and cfg["crop_source"] == "checkpoint"
        assert cfg["model"] == {"_target_": "dfd.models.create_model", "name": "timm", "arch": "test_vit",
                                "img_size": 64, "pretrained": False, "weights": None}
        video, frame = cfg["thresholds"]["video"], cfg["thresholds"]["frame"]
        assert video["split"] == frame["split"] == "val" and video["dataset"] == "synthetic_a"
        assert video["n"] == 8 and frame["n"] == 16 and frame["videos"] == 8  # 8 val videos of 2 frames
        assert video["level"] == "video" and frame["level"] == "frame"
        assert (video["on"], frame["on"]) == ("videos", "frames")
        # No still images in this val split: single images get the frame threshold, and the bundle says so.
        image = cfg["thresholds"]["image"]
        assert image["value"] == frame["value"] and image["level"] == "image" and "no still images" in image["note"]
        for thr in (video, frame):
            assert 0.0 < thr["value"] < 1.0, kind
            # 4 real / 4 fake validation videos: the threshold says it rests on too few (one line).
            assert "fewer than 20 per class" in thr["warning"] and "\n" not in thr["warning"]
        assert "torch.jit.load" in (folder / "README.md").read_text()
    eer = json.loads((bundles["plain"] / "preprocess.json").read_text())["thresholds"]["video"]
    acc = json.loads((bundles["lora"] / "preprocess.json").read_text())["thresholds"]["video"]
    assert eer["method"] == "eer" and abs(eer["val_fpr"] - eer["val_fnr"]) <= 0.25 + 1e-9  # one video per class
    assert abs(eer["val_eer"] - (eer["val_fpr"] + eer["val_fnr"]) / 2) <= 0.125 + 1e-9
    assert acc["method"] == "accuracy" and acc["val_accuracy"] >= acc["val_accuracy_at_0.5"]


def test_safetensors_are_plain_merged_weights(bundles: dict[str, Path], checkpoints: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    keys = set(load_file(str(bundles["lora"] / "model.safetensors")))
    assert keys and not any("lora_" in k for k in keys) and "backbone.blocks.0.attn.qkv.weight" in keys
    x = _inputs()
    for kind in ("plain", "lora"):
        got = load_bundle(bundles[kind], backend="safetensors")(x).numpy()
        np.testing.assert_allclose(got, checkpoint_probs(checkpoints[kind], x), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------- fresh process
FRESH = textwrap.dedent("""
    import importlib.abc, json, os, sys
    BLOCKED = {blocked!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked import of {{name}}")
            return None

    sys.meta_path.insert(0, Block())
    import numpy as np, torch
    from dfd.inference.bundle import load_bundle

    x = torch.from_numpy(np.load(sys.argv[1]))
    out = {{}}
    for folder in sys.argv[2:]:
        out[folder] = load_bundle(folder)(x).tolist()
        # The bundle README's own snippet must run as written, from inside the bundle.
        readme = open(os.path.join(folder, "README.md")).read()
        snippet = readme.split("```python")[1].split("```")[0]
        os.chdir(folder)
        scope = {{}}
        exec(snippet, scope)
        assert tuple(scope["prob_fake"].shape) == (1,) and scope["label"].item() in (0, 1)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps({{"probs": out, "loaded": loaded}}))
""")


def test_bundle_loads_in_fresh_process_with_torch_only(bundles: dict[str, Path], checkpoints: dict[str, Path],
                                                       tmp_path: Path) -> None:
    x = _inputs()
    np.save(tmp_path / "x.npy", x.numpy())
    script = FRESH.format(blocked=BLOCKED)
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.npy"), str(bundles["plain"]),
                        str(bundles["lora"])], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["loaded"] == []
    for kind in ("plain", "lora"):
        want = checkpoint_probs(checkpoints[kind], x)
        np.testing.assert_allclose(np.array(res["probs"][str(bundles[kind])]), want, atol=1e-5, rtol=0)
        assert want.std() > 0  # the inputs really differ in score: a constant output would not prove much


def test_onnx_runtime_matches_checkpoint(bundles: dict[str, Path], checkpoints: dict[str, Path]) -> None:
    import onnxruntime as ort

    x = _inputs(5)  # traced at batch 2: the batch axis must be dynamic
    for kind in ("plain", "lora"):
        sess = ort.InferenceSession(str(bundles[kind] / "model.onnx"), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == ["images"]
        (got,) = sess.run(["prob_fake"], {"images": x.numpy()})
        assert got.shape == (5,)
        np.testing.assert_allclose(got, checkpoint_probs(checkpoints[kind], x), atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------------------------- refusals
def test_loading_refuses_pickles(bundles: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(bundles["plain"], bad)
    torch.save(torch.nn.Linear(3, 1), bad / "model.torchscript.pt")  # a pickle of a module, renamed
    with pytest.raises(BundleError, match="pickled object"):
        load_bundle(bad)
    (bad / "model.torchscript.pt").write_bytes(b"not a zip at all")
    with pytest.raises(BundleError, match="not a TorchScript archive"):
        load_bundle(bad)
    torch.save({"backbone.head.weight": torch.zeros(1)}, bad / "model.safetensors")
    with pytest.raises(BundleError, match="not a valid safetensors file"):
        load_bundle(bad, backend="safetensors")
    with pytest.raises(BundleError, match="not a dfd bundle"):
        load_bundle(tmp_path)


def test_export_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from dfd.cli.export import main

    with pytest.raises(SystemExit) as done:
        main([str(tmp_path / "nope.ckpt"), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.startswith("error: checkpoint not found") and err.count("\n") == 1


# ----------------------------------------------------------------------------------------------- calibration
def test_thresholds_eer_and_accuracy() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    eer = choose_threshold(scores, labels, "eer")
    assert eer["val_fpr"] == eer["val_fnr"] == 0.25 and 0.4 < eer["value"] <= 0.6
    acc = choose_threshold(scores, labels, "accuracy")
    assert acc["val_accuracy"] == 0.875 and acc["val_accuracy_at_0.5"] == 0.75
    assert choose_threshold(scores, np.ones(8), "eer")["value"] == 0.5  # one class: undefined, keep 0.5
    assert choose_threshold(scores, labels, "none")["value"] == 0.5
    # The EER is the evaluation engine's number (one implementation), realised by the chosen threshold.
    assert eer["val_eer"] == engine_eer(scores, labels) == 0.25


def test_format_1_bundles_still_load(bundles: dict[str, Path], tmp_path: Path) -> None:
    """Bundles exported before crop contracts (face/video/threshold sections) load with the contract they implied."""
    import shutil

    old = tmp_path / "v1"
    shutil.copytree(bundles["plain"], old)
    cfg = json.loads((old / "preprocess.json").read_text())
    for key in ("crop", "crop_source", "thresholds"):
        cfg.pop(key)
    cfg.update(format_version=1, threshold={"value": 0.42, "method": "eer"},
               face={"margin": 1.25, "crop_size": 96, "choice": "largest", "min_score": 0.95, "min_face_size": 20},
               video={"frames": 16})
    (old / "preprocess.json").write_text(json.dumps(cfg))
    b = load_bundle(old)
    assert b.thresholds == {"video": 0.42, "frame": 0.42, "image": 0.42} and b.image_level == "frame"
    assert b.contract == CropContract(margin=1.25, size=96, min_score=0.95, min_face_size=20, frames=16,
                                      detect_size=None, face_px=0)  # how dfd-predict cropped for them
