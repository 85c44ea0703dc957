"""dfd-predict: real faces in a video and an image, a faceless image, corrupt and missing files -> one CSV row each."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dfd.inference.predict import COLUMNS, EXTRA_COLUMNS, collect_inputs
from tests.media import write_corrupt_video, write_face_png, write_face_video
from tests.test_export import BIN, bundles, checkpoints  # noqa: F401  (session fixtures: trained once)

TRAINING_STACK = ("lightning", "pytorch_lightning", "hydra", "omegaconf", "peft", "wandb", "timm", "albumentations",
                  "torchmetrics")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A face video, a face image, a faceless image and a corrupt video, in nested folders."""
    root = tmp_path_factory.mktemp("media")
    return {
        "video": write_face_video(root / "videos" / "face.mp4", n_frames=8)[0],
        "image": write_face_png(root / "images" / "face.png", size=192),
        "blank": Path(cv2.imwrite(str(root / "images" / "blank.png"), np.full((96, 96, 3), 127, np.uint8))
                      and root / "images" / "blank.png"),
        "corrupt": write_corrupt_video(root / "videos" / "sub" / "corrupt.mp4"),
    }


def _read(path: Path) -> tuple[list[str], dict[str, dict]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    return list(reader.fieldnames or []), {Path(r["path"]).name: r for r in rows}


def test_predict_cli_mixed_inputs(bundles: dict[str, Path], media: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    listing = tmp_path / "more.txt"
    listing.write_text(f"{media['image']}\nnot_there.jpg\n\n")
    out = tmp_path / "preds.csv"
    args = [str(bundles["plain"]), str(media["video"].parent.parent), str(listing),
            "--out", str(out), "--frames", "3", "--batch-size", "4", "--device", "auto", "--no-progress"]
    # main() in a fresh process, then report which training-stack packages predicting with a bundle imported.
    script = (f"import sys; from dfd.cli.predict import main; main({args!r}); "
              f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(TRAINING_STACK)!r}))")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"  # torch + facenet-pytorch + opencv/decord only
    header, rows = _read(out)
    assert tuple(header) == (*COLUMNS, *EXTRA_COLUMNS)  # the seven contract columns first, in order
    assert set(rows) == {"face.mp4", "face.png", "blank.png", "corrupt.mp4", "not_there.jpg"}  # face.png once
    thresholds = json.loads((bundles["plain"] / "preprocess.json").read_text())["thresholds"]
    for name, frames, level in (("face.mp4", 3, "video"), ("face.png", 1, "image")):
        row = rows[name]
        assert row["status"] == "ok" and row["reason"] == ""
        assert int(row["frames"]) == frames and int(row["faces"]) == frames
        prob, threshold = float(row["prob_fake"]), thresholds[level]["value"]
        assert row["threshold_level"] == level and abs(float(row["threshold"]) - threshold) < 1e-6
        assert 0.0 < prob < 1.0 and int(row["label"]) == int(prob >= threshold) and row["inputs"] == "frames"
    assert rows["blank.png"]["status"] == "no_face" and rows["blank.png"]["frames"] == "1"
    assert rows["blank.png"]["prob_fake"] == rows["blank.png"]["label"] == ""
    assert rows["corrupt.mp4"]["status"] == "unreadable" and rows["corrupt.mp4"]["reason"].startswith("corrupt")
    assert rows["not_there.jpg"]["status"] == "unreadable" and "not found" in rows["not_there.jpg"]["reason"]
    assert "2 ok, 1 without a face, 2 unreadable" in r.stdout


def test_predict_matches_training_crop_and_checkpoint(bundles: dict[str, Path], checkpoints: dict[str, Path],  # noqa: F811
                                                      media: dict[str, Path]) -> None:
    """The image's probability equals: MTCNN -> dfd-extract's crop -> training eval pipeline -> checkpoint."""
    from dfd.data.transforms import Pipeline, Spec
    from dfd.engine.evaluate import load_module
    from dfd.faces.detect import FaceDetector
    from dfd.faces.geometry import crop_face
    from dfd.faces.track import choose_face
    from dfd.inference.bundle import load_bundle
    from dfd.inference.predict import Predictor
    from dfd.store.media import read_image

    bundle = load_bundle(bundles["plain"])
    (res,) = Predictor(bundle, batch_size=4).predict([str(media["image"])], progress=False)
    c = bundle.contract
    img = read_image(media["image"])
    det = FaceDetector(c).detect_frames([img])[0]
    k = choose_face(det, c.choice, c.min_score)
    crop, _ = crop_face(img, det.boxes[k], det.landmarks[k], c.margin, c.size)
    x, _ = Pipeline(Spec.of(bundle.config["input"]))(crop)
    module = load_module(checkpoints["plain"]).eval()
    with torch.no_grad():
        want = float(torch.sigmoid(module(x[None]))[0])
    assert res.status == "ok" and abs(res.prob_fake - want) < 1e-5


def test_predict_from_checkpoint_and_all_unreadable(checkpoints: dict[str, Path], media: dict[str, Path],  # noqa: F811
                                                    tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from dfd.cli.predict import main

    out = tmp_path / "ckpt.csv"
    main([str(checkpoints["plain"]), str(media["image"]), "--out", str(out), "--no-progress", "--device", "cpu"])
    _, rows = _read(out)
    assert rows["face.png"]["status"] == "ok" and rows["face.png"]["label"] == str(int(float(rows["face.png"]["prob_fake"]) >= 0.5))

    bad = tmp_path / "bad.csv"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([str(checkpoints["plain"]), str(media["corrupt"]), str(tmp_path / "gone.png"), "--out", str(bad),
              "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: none of the 2 inputs could be read") and err.count("\n") == 1
    _, rows = _read(bad)
    assert {r["status"] for r in rows.values()} == {"unreadable"}


def test_predict_errors_before_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from dfd.cli.predict import main

    r = subprocess.run([str(BIN / "dfd-predict"), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--batch-size" in r.stdout and "prob_fake" in r.stdout

    def error(argv: list[str]) -> str:
        with pytest.raises(SystemExit) as done:
            main(argv)
        err = capsys.readouterr().err
        assert done.value.code == 2 and err.count("\n") == 1, err
        return err

    assert error([str(tmp_path / "nope"), str(tmp_path), "--out", str(tmp_path / "x.csv")]).startswith(
        "error: no images or videos found")
    (tmp_path / "a.png").write_bytes(b"x")
    assert re.match(r"error: model .* not found", error([str(tmp_path / "nope"), str(tmp_path), "--out",
                                                          str(tmp_path / "x.csv")]))
    assert not (tmp_path / "x.csv").exists()


def test_collect_inputs_walks_folders_and_lists(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("a/1.png", "a/b/2.mp4", "a/b/notes.txt", "a/.hidden.png", "z.jpg"):
        (tmp_path / rel).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("z.jpg\n# comment\n\n/abs/elsewhere.mp4\na/1.png\n")
    got = collect_inputs([tmp_path / "a", listing])
    assert got == [str(tmp_path / "a/1.png"), str(tmp_path / "a/b/2.mp4"), str(tmp_path / "z.jpg"),
                   "/abs/elsewhere.mp4"]


def _clip_bundle(plain: Path, folder: Path) -> Path:
    """ADDNet-3D (clips + landmark masks, tiny) traced into a copy of the plain bundle."""
    import shutil

    from dfd.inference.bundle import probability_model
    from dfd.inference.export import write_torchscript
    from dfd.models import create_model

    torch.manual_seed(0)
    det = create_model("addnet3d", clip_len=2, img_size=64, head_channels=[16, 16]).eval()
    shutil.copytree(plain, folder)
    cfg = json.loads((folder / "preprocess.json").read_text())
    cfg["input"].update(det.input_spec.to_dict())
    cfg["inputs"] = ["images", "landmarks"]
    (folder / "preprocess.json").write_text(json.dumps(cfg))
    write_torchscript(probability_model(det), cfg["input"], folder / "model.torchscript.pt")
    torch.save(det.state_dict(), folder / "eager_state.pt")  # for the test's own reference only
    return folder


@pytest.fixture(scope="module")
def clip_bundle(bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    return _clip_bundle(bundles["plain"], tmp_path_factory.mktemp("clip") / "clip_bundle")


def test_predict_clip_model_with_landmarks(clip_bundle: Path, media: dict[str, Path]) -> None:
    """ADDNet-3D (clips + landmark masks) traced to TorchScript scores an image as a clip of repeated faces."""
    from dfd.faces.detect import FaceDetector
    from dfd.faces.geometry import crop_face
    from dfd.faces.track import choose_face
    from dfd.inference.bundle import load_bundle
    from dfd.inference.predict import Predictor
    from dfd.models import create_model
    from dfd.store.media import read_image

    bundle = load_bundle(clip_bundle)
    assert bundle.clip_len == 2 and bundle.needs_landmarks
    (image,) = Predictor(bundle, batch_size=4).predict([str(media["image"])], progress=False)
    assert (image.status, image.faces) == ("ok", 1)
    # The same clip through the eager network: traced graph, clip sampling and landmark scaling agree.
    det = create_model("addnet3d", clip_len=2, img_size=64, head_channels=[16, 16]).eval()
    det.load_state_dict(torch.load(clip_bundle / "eager_state.pt", weights_only=True))
    c = bundle.contract
    img = read_image(media["image"])
    d = FaceDetector(c).detect_frames([img])[0]
    k = choose_face(d, c.choice, c.min_score)
    crop, lm = crop_face(img, d.boxes[k], d.landmarks[k], c.margin, c.size)
    x = bundle.preprocess([crop, crop])[None]
    lms = torch.from_numpy(bundle.scale_landmarks(np.stack([lm, lm]), c.size))[None]
    with torch.no_grad():
        want = float(torch.sigmoid(det(x, lms))[0])
    assert abs(image.prob_fake - want) < 1e-5


def test_clip_bundle_predicts_with_torch_only(clip_bundle: Path, media: dict[str, Path], tmp_path: Path) -> None:
    """A clip bundle (ADDNet-3D) predicts in a fresh process with the training stack import-blocked."""
    from tests.test_export import BLOCKED

    blocked = (*BLOCKED, "albumentations", "torchmetrics")
    out = tmp_path / "clip.csv"
    args = [str(clip_bundle), str(media["video"]), str(media["image"]), "--out", str(out), "--frames", "3",
            "--no-progress", "--device", "cpu"]
    script = "\n".join([
        "import importlib.abc, sys",
        "class Block(importlib.abc.MetaPathFinder):",
        "    def find_spec(self, name, path=None, target=None):",
        f"        if name.split('.')[0] in {set(blocked)!r}:",
        "            raise ImportError(f'blocked import of {name}')",
        "sys.meta_path.insert(0, Block())",
        "from dfd.cli.predict import main",
        f"main({args!r})",
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(blocked)!r}))",
    ])
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
    _, rows = _read(out)
    assert rows["face.mp4"]["status"] == rows["face.png"]["status"] == "ok"
    assert rows["face.mp4"]["faces"] == "3" and 0 < float(rows["face.mp4"]["prob_fake"]) < 1


def _edited(bundle: Path, folder: Path, **changes) -> Path:
    """A copy of a bundle with preprocess.json sections changed (crop contract, thresholds)."""
    import shutil

    shutil.copytree(bundle, folder)
    cfg = json.loads((folder / "preprocess.json").read_text())
    for key, value in changes.items():
        section, field = key.split("__")
        cfg[section][field] = value
    (folder / "preprocess.json").write_text(json.dumps(cfg))
    return folder


def test_images_use_the_image_threshold_and_videos_the_video_one(bundles: dict[str, Path],  # noqa: F811
                                                                  media: dict[str, Path], tmp_path: Path) -> None:
    from dfd.inference.bundle import load_bundle
    from dfd.inference.predict import Predictor

    cfg = json.loads((bundles["plain"] / "preprocess.json").read_text())
    video_thr = {**cfg["thresholds"]["video"], "value": 1e-9}  # every video fake
    image_thr = {**cfg["thresholds"]["image"], "value": 1 - 1e-9}  # every image real
    folder = _edited(bundles["plain"], tmp_path / "b", thresholds__video=video_thr, thresholds__image=image_thr)
    video, image = Predictor(load_bundle(folder), frames=3).predict([str(media["video"]), str(media["image"])],
                                                                    progress=False)
    assert (video.threshold_level, video.threshold, video.label) == ("video", 1e-9, 1)
    assert (image.threshold_level, image.threshold, image.label) == ("image", 1 - 1e-9, 0)
    assert 0 < video.prob_fake < 1 - 1e-9 and image.prob_fake > 1e-9
    # A bundle exported before image thresholds applies its frame threshold to images, and says which.
    old = json.loads((folder / "preprocess.json").read_text())
    old["thresholds"].pop("image")
    old["thresholds"]["frame"]["value"] = 1 - 1e-9
    (folder / "preprocess.json").write_text(json.dumps(old))
    (image,) = Predictor(load_bundle(folder), frames=3).predict([str(media["image"])], progress=False)
    assert (image.threshold_level, image.threshold, image.label) == ("frame", 1 - 1e-9, 0)


def test_crop_trained_bundle_takes_crops_as_they_are(bundles: dict[str, Path], media: dict[str, Path],  # noqa: F811
                                                     tmp_path: Path) -> None:
    """A model trained on a dataset's own face crops (WildDeepfake) is fed crops uncropped; on frames it says
    what it does instead."""
    from dfd.cli.predict import main
    from dfd.faces.geometry import resize_crop
    from dfd.inference.bundle import load_bundle
    from dfd.store.media import read_image

    crop = cv2.resize(cv2.imread(str(media["image"]))[30:150, 40:160], (80, 80))  # a face crop, framed its own way
    cv2.imwrite(str(tmp_path / "crop.png"), crop)
    folder = _edited(bundles["plain"], tmp_path / "crop_bundle", crop__inputs="crops")
    saved = tmp_path / "saved"
    out = tmp_path / "p.csv"
    main([str(folder), str(tmp_path / "crop.png"), "--out", str(out), "--save-crops", str(saved), "--no-progress",
          "--device", "cpu"])
    _, rows = _read(out)
    row = rows["crop.png"]
    assert (row["status"], row["faces"], row["inputs"]) == ("ok", "1", "crops")
    (written,) = [p for p in saved.rglob("*.png") if p.is_file()]
    want = resize_crop(read_image(tmp_path / "crop.png"), 64)  # the whole crop, resized to the contract's size
    assert np.array_equal(read_image(written), want)
    bundle = load_bundle(folder)
    assert abs(float(row["prob_fake"]) - float(bundle(bundle.preprocess([want]))[0])) < 1e-5

    # Frames on a crop-trained model: it detects and crops, and says so in one line.
    r = subprocess.run([str(BIN / "dfd-predict"), str(folder), str(media["image"]), "--inputs", "frames",
                        "--out", str(tmp_path / "f.csv"), "--no-progress", "--device", "cpu"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stderr.splitlines() if line.startswith("dfd-predict: note:")]
    assert len(notes) == 1 and "trained on face crops" in notes[0] and "detects faces" in notes[0]
    _, rows = _read(tmp_path / "f.csv")
    assert rows["face.png"]["inputs"] == "frames" and rows["face.png"]["faces"] == "1"
