"""dfd-predict sees inputs as dfd-extract does: an image gives the crop extract_faces caches for it (pixel for
pixel, several images in one call), a folder of numbered frames is one video (kind=frames), and faces are detected
on the CPU unless --detect-device says otherwise (a GPU model without a gpu_checks.sh PASS record is named)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from dfd.extract.config import ExtractConfig
from dfd.extract.run import extract_faces
from dfd.faces.gpu_passes import ENV, detection_warning, passed_models, read_passes, record_pass
from dfd.inference.bundle import load_bundle
from dfd.inference.predict import Predictor, collect_inputs
from dfd.store.cache import safe_relpath
from dfd.store.media import read_image, read_video
from tests.media import face_image, write_face_video
from tests.test_export import bundles, checkpoints  # noqa: F401  (session fixtures: trained once)


def _one_row_cache(root: Path, rel: str, kind: str, cache: Path, contract) -> pd.DataFrame:
    """extract_faces on a dataset of one image (or one frames folder): dfd-extract's own crops of it."""
    index = pd.DataFrame([{"video_id": rel, "label": 0, "split": "test", "method": "m", "identity": "", "path": rel,
                           "kind": kind}])
    cfg = ExtractConfig(contract=contract, inputs=contract.inputs, workers=1)
    extract_faces(index, root, cache, cfg, progress=False)
    return pd.read_parquet(cache / "manifest.parquet").sort_values(["frame", "track"])


def _saved(folder: Path, path: Path) -> Path:
    """Where --save-crops put an input's crops: its path below the inputs' common folder (all inputs of these
    tests sit in one folder)."""
    return folder / safe_relpath(path.name)


def _aligned_bundle(folder: Path, out: Path) -> Path:
    """The bundle with ArcFace-aligned 256 px crops: landmarks feed a float warp, so MTCNN's last bits show."""
    import shutil

    from dfd.faces.contract import CropContract

    shutil.copytree(folder, out)
    cfg = json.loads((out / "preprocess.json").read_text())
    cfg["crop"] = CropContract.from_mapping(cfg["crop"]).replace(align="arcface", size=256).to_dict()
    (out / "preprocess.json").write_text(json.dumps(cfg))
    return out


def test_images_get_dfd_extracts_crops_pixel_for_pixel(bundles, tmp_path):  # noqa: F811
    # Detected together, as dfd-predict did before, 12 of 16 such aligned crops differed from dfd-extract's by a
    # grey level (issue 25 closing note); each image alone, as dfd-extract detects it, none.
    bundle = load_bundle(_aligned_bundle(bundles["plain"], tmp_path / "bundle"))
    assert bundle.contract.align == "arcface"
    root = tmp_path / "images"
    root.mkdir()
    faces = {"a.png": face_image(192), "b.png": np.ascontiguousarray(face_image(192)[:, ::-1]),
             "c.png": (face_image(192) * 0.8).astype(np.uint8)}  # one size: the images of a call share batches
    for name, img in faces.items():
        cv2.imwrite(str(root / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    paths = [root / n for n in faces]
    saved = tmp_path / "saved"
    results = Predictor(bundle, save_crops=saved).predict([str(p) for p in paths], progress=False)
    for p, res in zip(paths, results, strict=True):
        man = _one_row_cache(root, p.name, "image", tmp_path / f"cache_{p.stem}", bundle.contract)
        assert len(man) == 1 and res.status == "ok" and res.faces == 1 and res.threshold_level == "image"
        want = read_image(tmp_path / f"cache_{p.stem}" / man.crop_path.iloc[0])
        got = read_image(_saved(saved, p) / "000000.png")
        assert np.array_equal(got, want), p.name
        with torch.no_grad():  # and its probability is the model's on that very crop
            prob = float(bundle(bundle.preprocess([want]))[0])
        assert res.prob_fake == pytest.approx(prob, abs=1e-6)


def test_a_folder_of_frames_is_one_video_as_dfd_extract_takes_it(bundles, tmp_path):  # noqa: F811
    bundle = load_bundle(bundles["plain"])
    inputs = tmp_path / "inputs"
    video, _ = write_face_video(tmp_path / "v.mp4", n_frames=12, size=192, canvas=224)
    (inputs / "seq").mkdir(parents=True)
    for i, frame in enumerate(read_video(video, None).images):
        cv2.imwrite(str(inputs / "seq" / f"{i:04d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(inputs / "face.png"), cv2.cvtColor(face_image(160), cv2.COLOR_RGB2BGR))
    assert collect_inputs([inputs]) == [str(inputs / "face.png"), str(inputs / "seq")]

    saved = tmp_path / "saved"
    image, seq = Predictor(bundle, frames=4, save_crops=saved).predict(collect_inputs([inputs]), progress=False)
    assert (image.threshold_level, image.frames) == ("image", 1)
    assert (seq.status, seq.threshold_level, seq.frames, seq.faces) == ("ok", "video", 4, 4)
    assert seq.threshold == pytest.approx(json.loads((bundles["plain"] / "preprocess.json").read_text())
                                          ["thresholds"]["video"]["value"])
    man = _one_row_cache(inputs, "seq", "frames", tmp_path / "cache", bundle.contract.replace(frames=4))
    assert man.frame.tolist() == [0, 3, 7, 11]  # linspace(0, 11, 4): the sampling rule of both
    for frame, rel in zip(man.frame, man.crop_path, strict=True):
        got = read_image(_saved(saved, inputs / "seq") / f"{frame:06d}.png")
        assert np.array_equal(got, read_image(tmp_path / "cache" / rel)), frame


def test_detection_runs_on_the_cpu_unless_asked_and_gpu_models_need_a_pass(bundles, tmp_path, monkeypatch, capsys):  # noqa: F811
    from dfd.cli.predict import main
    from dfd.inference.export import bundle_readme

    image = tmp_path / "face.png"
    cv2.imwrite(str(image), cv2.cvtColor(face_image(96), cv2.COLOR_RGB2BGR))
    predictor = Predictor(load_bundle(bundles["plain"]))
    assert predictor.detector.device == "cpu" and predictor.detect_notice is None
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as e:
            main([str(bundles["plain"]), str(image), "--out", str(tmp_path / "p.csv"), "--detect-device", "cuda"])
        # One line on stderr, exit 2 (every dfd command's user error).
        assert e.value.code == 2
        assert capsys.readouterr().err.strip() == ("error: --detect-device cuda asked for, but torch sees no GPU; use "
                                                   "--detect-device cpu (the default)")

    gpu = "NVIDIA H100 80GB HBM3"
    warning = detection_warning("cuda:0", name=gpu, passes=[])
    assert warning == (f"faces are detected on {gpu}, where `tests/benchmarks/gpu_checks.sh extract` has not passed "
                       "yet: its boxes may differ from the CPU-extracted training crops (leave out --detect-device to "
                       "detect on the CPU, the default)")
    assert detection_warning("cpu") is None
    record = {"gpu": gpu, "date": "2026-12-01", "torch": "2.14.1", "cuda": "13.0", "contract_id": "c1", "frames": 256,
              "min_iou": 0.97}
    passes = tmp_path / "passes.json"
    record_pass(passes, record)
    record_pass(passes, {**record, "date": "2026-12-02", "min_iou": 0.98})  # same GPU, torch, contract: replaced
    assert [r["date"] for r in read_passes([passes])] == ["2026-12-02"]
    assert detection_warning("cuda:0", name=gpu.lower(), passes=read_passes([passes])) is None
    monkeypatch.setenv(ENV, str(passes))
    assert passed_models() == [gpu]
    readme = bundle_readme(json.loads((bundles["plain"] / "preprocess.json").read_text()))
    assert "## Face detection on a GPU" in readme and f"| {gpu} | 2026-12-02 | torch 2.14.1, CUDA 13.0 |" in readme
