"""One face-crop contract from extraction to predict: same frames, same faces, same crops, same probabilities."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dfd.extract.config import ExtractConfig, ExtractError
from dfd.extract.run import extract_faces
from dfd.faces.contract import ContractError, CropContract
from dfd.faces.detect import FaceDetector
from dfd.faces.track import choose_face
from dfd.store.media import read_image, read_video
from tests.media import write_composed_face_video
from tests.test_export import bundles, checkpoints  # noqa: F401  (session fixtures: trained once)


def _index(names: list[str], labels: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"video_id": [Path(n).stem for n in names], "label": labels, "split": "test",
                         "method": ["real" if y == 0 else "tint" for y in labels], "identity": "", "path": names,
                         "kind": "video"})


# ----------------------------------------------------------------------------------------------- the object
def test_contract_has_one_home_and_round_trips(compose_cfg) -> None:
    c = CropContract()
    assert CropContract.from_mapping(c.to_dict()) == c and c.fingerprint() == CropContract().fingerprint()
    assert c.replace(margin=1.25).fingerprint() != c.fingerprint()
    assert c.diff(c.replace(align="arcface")) == {"align": ("box", "arcface")}
    with pytest.raises(ContractError, match=r"unknown crop contract keys \['marign'\]; valid: .*'margin'"):
        CropContract.from_mapping({"marign": 1.3})
    with pytest.raises(ContractError, match="align='tight' is invalid"):
        CropContract(align="tight")
    # conf/extract.yaml composes its extract block from the dataclasses: the same values, no second copy.
    cfg = compose_cfg("extract", ["dataset=folder", "dataset.root=/data/x", "extract.margin=1.5"])
    settings = ExtractConfig.from_mapping(dict(cfg.extract))
    assert settings.contract == CropContract(margin=1.5) and settings.inputs == "auto"
    assert "margin:" not in (Path(__file__).parents[1] / "conf" / "extract.yaml").read_text()
    with pytest.raises(ExtractError, match=r"unknown extract settings \['frame'\]; valid: .*'frames'"):
        ExtractConfig.create(frame=8)


def test_version_1_records_keep_their_rule_and_their_id() -> None:
    """Caches and bundles written before the per-video scale was rounded and probed three times were made with
    one probe and the raw scale: read back that way, under the id they were written with."""
    v1 = CropContract(scale_steps=0, probes=1, search_roi=0)
    record = v1.to_dict()
    assert record["version"] == 1 and "scale_steps" not in record and "probes" not in record  # older dfd reads it
    old = CropContract.from_mapping(record)
    assert (old.scale_steps, old.probes, old.search_roi) == (0, 1, 0)
    # The id of the default contract of dfd before version 2 (pinned: caches made then must keep it).
    assert old.fingerprint() == "f8c7fc5c8bc2"
    # ... and of versions 2 and 3 (three probes, rounded scale; whole-frame search), read back from their record.
    v3 = CropContract.from_mapping({k: v for k, v in CropContract(search_roi=0).to_dict().items()})
    assert v3.search_roi == 0 and v3.fingerprint() == "086a4e3de051"
    # Today's default searches whole frames too: its record and id are version 3's. The search near the last
    # face (search_roi > 0) is version 4, an id of its own.
    assert CropContract() == v3 and CropContract().fingerprint() == "086a4e3de051"
    new = CropContract(search_roi=3.0)
    assert new.to_dict()["version"] == 4 and CropContract.from_mapping(new.to_dict()) == new
    assert new.fingerprint() != v3.fingerprint()
    assert old.diff(new) == {"scale_steps": (0, 8), "probes": (1, 3), "search_roi": (0.0, 3.0)}
    assert v3.diff(new) == {"search_roi": (0.0, 3.0)}
    # A config block (no version) takes today's defaults; without face_px the new fields do not matter.
    assert CropContract.from_mapping({"frames": 8}).probes == 3
    assert CropContract(face_px=0).fingerprint() == CropContract(face_px=0, scale_steps=0, probes=1).fingerprint()
    assert CropContract(face_px=0).to_dict()["version"] == 1
    with pytest.raises(ContractError, match="probes=0 is invalid"):
        CropContract(probes=0)


# ----------------------------------------------------------------------------------------------- alignment
def test_arcface_alignment_of_the_astronaut() -> None:
    """5-point similarity alignment as DeepfakeBench/GenD do it (ArcFace 112 template, scale 1.3, 256 px)."""
    from skimage.data import astronaut
    from skimage.transform import SimilarityTransform

    from dfd.faces.crops import crop_faces
    from dfd.faces.geometry import align_face
    from dfd.faces.landmarks import arcface_template

    img = astronaut()
    det = FaceDetector(min_face_size=20).detect([img])[0]
    lm = det.landmarks[choose_face(det)]
    crop, mapped = align_face(img, lm, scale=1.3, size=256)
    template = arcface_template(256, 1.3)
    # The landmarks land where DeepfakeBench's alignment (skimage's least-squares similarity to the same
    # template) puts them, within 1 px, and the crop holds the same pixels.
    ref = SimilarityTransform.from_estimate(lm.astype(np.float64), template)
    np.testing.assert_allclose(mapped, ref(lm), atol=1.0)
    import cv2

    ref_crop = cv2.warpAffine(img, ref.params[:2], (256, 256), flags=cv2.INTER_LINEAR)
    assert np.abs(crop.astype(int) - ref_crop.astype(int)).max() <= 2
    # The eyes (the template's best-fitting points) land on the template's eyes within a few px; nose and mouth
    # are where a similarity can put them (the astronaut smiles broadly: mouth nearer the eyes than ArcFace's).
    assert np.linalg.norm(mapped[:2] - template[:2], axis=1).max() < 6
    # Re-detected in the aligned crop, MTCNN finds the landmarks where the alignment says they are.
    again = FaceDetector(min_face_size=20).detect([crop])[0]
    assert np.linalg.norm(again.landmarks[choose_face(again)] - mapped, axis=1).max() < 1.5
    # crop_faces with align=arcface: the same crop.
    faces = crop_faces([img], CropContract(align="arcface", size=256, min_face_size=20), FaceDetector(min_face_size=20))
    assert len(faces) == 1 and np.abs(faces.crops[0].astype(int) - crop.astype(int)).max() <= 1


# ----------------------------------------------------------------------------------------------- no label-dependent loss
@pytest.fixture(scope="module")
def tinted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """2 real and 2 fake videos: the astronaut (240 px photo) in 1280x720 frames; fakes' face centre tinted."""
    root = tmp_path_factory.mktemp("tinted")
    names, labels = [], []
    for i in range(2):
        for fake in (0, 1):
            name = f"{'fake' if fake else 'real'}{i}.mp4"
            write_composed_face_video(root / name, n_frames=4, fake=bool(fake), seed=i)
            names.append(name)
            labels.append(fake)
    return root, _index(names, labels)


def test_default_extraction_keeps_every_frame_full_resolution_keeps(tinted, tmp_path: Path) -> None:
    root, index = tinted
    summary = extract_faces(index, root, tmp_path / "default", ExtractConfig.create(frames=4, size=32, workers=1),
                            progress=False)
    kept = set(zip(*(pd.read_parquet(summary.manifest_path)[c] for c in ("video_id", "frame")), strict=True))
    full = FaceDetector(detect_size=None, face_px=0)
    reference = set()
    for row in index.itertuples():
        frames = read_video(root / row.path, 4)
        for n, d in zip(frames.numbers, full.detect_frames(frames.images), strict=True):
            if full.found(d):
                reference.add((row.video_id, int(n)))
    assert len(reference) == 16  # full resolution finds the face in every frame, reals and fakes
    assert reference <= kept
    by_label = summary.drops["label"]
    assert by_label["0"]["dropped"] == by_label["1"]["dropped"] == 0 and not summary.warnings
    assert "frames without a face by label: real 0/8 (0.0 %), fake 0/8 (0.0 %)" in str(summary)
    from dfd.store.cache import manifest_record

    rec = manifest_record(summary.manifest_path)
    assert rec["drops"]["label"]["1"]["sampled"] == 8 and rec["contract"]["full_res_fallback"] is True

    # Without the fallback, the detection shortcut loses fakes and keeps reals: a bias in every metric. The
    # summary and the manifest metadata say so.
    lossy = extract_faces(index, root, tmp_path / "lossy",
                          ExtractConfig.create(frames=4, size=32, workers=1, full_res_fallback=False), progress=False)
    drops = lossy.drops["label"]
    assert drops["0"]["dropped"] == 0 and drops["1"]["dropped"] >= 2, drops
    assert any("differ by label" in w for w in lossy.warnings)
    assert "warning: sampled frames without a face differ by label" in str(lossy)
    assert manifest_record(lossy.manifest_path)["drops"]["label"]["1"]["dropped"] == drops["1"]["dropped"]


# ----------------------------------------------------------------------------------------------- parity
def test_predict_on_raw_video_equals_eval_on_its_cache(bundles: dict[str, Path],  # noqa: F811
                                                       checkpoints: dict[str, Path],  # noqa: F811
                                                       tmp_path: Path) -> None:
    """dfd-predict on raw videos == the evaluation path on the extracted cache, frame for frame and crop for crop.

    Real-face videos (the astronaut in 800x600 frames) whose face is large enough for the per-video downscaled
    detection to be taken; extraction and predict both follow the bundle's crop contract.
    """
    from torch.utils.data import DataLoader

    from dfd.data.datasets import FrameDataset, ManifestArrays
    from dfd.data.transforms import Pipeline, Spec
    from dfd.engine.evaluate import load_module
    from dfd.engine.metrics import video_aggregate
    from dfd.inference.bundle import load_bundle
    from dfd.inference.predict import Predictor, crops_root
    from dfd.store.cache import safe_relpath

    root = tmp_path / "videos"
    names = []
    for i in range(2):
        write_composed_face_video(root / f"v{i}.mp4", n_frames=15, face=512, frame=(800, 600), seed=i)
        names.append(f"v{i}.mp4")
    bundle = load_bundle(bundles["plain"])
    contract = bundle.contract.replace(frames=6)  # 6 of 15 frames, by the one uniform rule
    summary = extract_faces(_index(names, [0, 0]), root, tmp_path / "cache", ExtractConfig(contract, workers=1),
                            progress=False)
    manifest = pd.read_parquet(summary.manifest_path)
    assert len(manifest) == 12
    # The downscaled paths were taken: frames above detect_size, and the face large enough for the per-video
    # scale (face_px / face side) to shrink them further.
    boxes = np.stack(manifest["bbox"].to_numpy())
    side = float(np.median(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
    assert contract.detect_size < 800 and contract.face_px / side < 0.9 * contract.detect_size / 800

    # Evaluation on the cache, as dfd-eval's test loop scores it (eval pipeline + checkpoint, video = mean).
    arrays = ManifestArrays(summary.manifest_path, splits="test")
    ds = FrameDataset(arrays, Pipeline(Spec.of(bundle.config["input"])))
    module = load_module(checkpoints["plain"]).eval()
    probs, videos = [], []
    with torch.no_grad():
        for batch in DataLoader(ds, batch_size=8):
            probs.append(torch.sigmoid(module(batch["image"])).float())
            videos.append(batch["video"])
    prob, video = torch.cat(probs), torch.cat(videos)
    vprob, _, _ = video_aggregate(prob, torch.zeros_like(prob), video, torch.zeros_like(video))
    evaluated = {arrays.video_names[v].decode(): float(p) for v, p in zip(torch.unique(video), vprob, strict=True)}

    saved = tmp_path / "saved"
    inputs = [str(root / n) for n in names]
    results = Predictor(bundle, frames=6, save_crops=saved).predict(inputs, progress=False)
    for res, name in zip(results, names, strict=True):
        vid = Path(name).stem
        assert res.status == "ok" and res.faces == res.frames == 6
        assert abs(res.prob_fake - evaluated[vid]) <= 1e-3, (res.prob_fake, evaluated[vid])
        cached = manifest[manifest.video_id == vid]
        folder = saved / safe_relpath(os.path.relpath(root / name, crops_root(inputs)))  # below their common folder
        assert sorted(p.name for p in folder.iterdir()) == [f"{f:06d}.png" for f in cached["frame"]]
        for frame, rel in zip(cached["frame"], cached["crop_path"], strict=True):
            a = read_image(folder / f"{frame:06d}.png").astype(int)
            b = read_image(summary.manifest_path.parent / rel).astype(int)
            assert np.abs(a - b).max() <= 2


# ----------------------------------------------------------------------------------------------- robustness
@pytest.mark.parametrize(("kind", "level"), [("jpeg", 30), ("blur", 2.0), ("downscale", 0.5), ("h264", 35)])
def test_a_perturbation_level_is_one_source_operation_for_every_backbone(kind: str, level: float) -> None:
    """"blur 2" is a sigma of 2 stored-crop pixels whether the backbone reads 224 or 380 px: the perturbation
    degrades the stored crop, then each model resizes the same degraded crop."""
    from dfd.data.transforms import Pipeline, Spec, perturbation
    from tests.media import face_image

    crop = face_image(320)  # a stored crop at the cache's size
    degraded = perturbation(kind, level)(image=crop)["image"]
    assert np.abs(degraded.astype(int) - crop.astype(int)).mean() > 0.5  # it does degrade
    for size in (224, 380):
        spec = Spec(size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")
        got, _ = Pipeline(spec, extra=[perturbation(kind, level)])(crop)
        want, _ = Pipeline(spec)(degraded)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
