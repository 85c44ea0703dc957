"""Many faces per frame: extract.choice=all keeps every face with a stable track id, and one video-score rule
(max over a frame's faces, mean over frames) is what evaluation and dfd-predict both compute."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dfd.engine.metrics import DetectionMetrics, detection_report
from dfd.engine.video_score import VideoScoreError, score
from dfd.extract.config import ExtractConfig
from dfd.extract.run import extract_faces
from dfd.faces.contract import ContractError, CropContract
from dfd.faces.track import track_faces
from tests.conftest import compose
from tests.media import box_iou, write_faces_video
from tests.test_export import bundles, checkpoints  # noqa: F401  (session fixtures: trained once)

# Two astronauts side by side (the right one mirrored: another image to the model), plus a small bystander whose
# face area is ~1/4 of the largest: below the default min_face_ratio of 0.5.
FACES = [(300, 10, 10), (260, 330, 40), (150, 560, 150)]
FRAME = (720, 320)


def _box(x: float, y: float, side: float = 50.0) -> list[float]:
    return [x, y, x + side, y + side * 1.2]


# ----------------------------------------------------------------------------------------------- tracking
def test_tracks_survive_gaps_new_faces_get_new_ids_and_track_0_is_the_main_face() -> None:
    big, small = 60.0, 45.0
    frames = [
        np.array([_box(100, 50, big), _box(400, 60, small)]),
        np.array([_box(412, 62, small), _box(108, 52, big)]),  # detector order changes: ids must not
        np.array([_box(115, 55, big)]),  # the small face is missed in this frame
        np.array([_box(420, 66, small), _box(122, 57, big), _box(250, 200, small)]),  # it is back; a newcomer
        np.array([_box(130, 58, big), _box(600, 60, small)]),  # a face far from every track: a new one
        np.zeros((0, 4)),  # nobody
        np.array([_box(140, 60, big)]),
    ]
    ids = track_faces(frames)
    assert [a.tolist() for a in ids] == [[0, 1], [1, 0], [0], [1, 0, 2], [0, 3], [], [0]]
    # Renumbered by summed face area: the big face (6 frames) is 0; the small one seen 3 times is 1.
    assert track_faces([]) == [] and [a.tolist() for a in track_faces([np.zeros((0, 4))])] == [[]]


def test_two_faces_of_one_frame_never_share_a_track_and_a_jump_starts_a_new_one() -> None:
    a, b = _box(100, 100), _box(140, 100)  # overlapping neighbours
    ids = track_faces([np.array([a, b]), np.array([b, a]), np.array([_box(100, 100, 200)])])
    assert sorted(ids[0].tolist()) == [1, 2] and ids[1].tolist() == ids[0][::-1].tolist()
    # 4x the side: not the same face, whatever the overlap; its area (16x) makes it the main face.
    assert ids[2].tolist() == [0]


def test_choice_all_is_a_contract_setting_recorded_only_when_used() -> None:
    single = CropContract()
    assert "min_face_ratio" not in single.to_dict()  # older dfd versions still read single-face bundles
    assert single.fingerprint() == single.replace(min_face_ratio=0.9).fingerprint()  # no effect, same id
    multi = single.replace(choice="all")
    assert multi.to_dict()["min_face_ratio"] == 0.5 and multi.fingerprint() != single.fingerprint()
    assert multi.fingerprint() != multi.replace(min_face_ratio=0.25).fingerprint()
    assert CropContract.from_mapping(multi.to_dict()) == multi
    assert "every face >= 0.5 x the largest's area, tracked" in multi.describe()
    with pytest.raises(ContractError, match=r"min_face_ratio=1.5 is invalid; use a fraction"):
        CropContract(choice="all", min_face_ratio=1.5)
    with pytest.raises(ContractError, match=r"choice='every' is invalid; choose one of \('largest', 'confident', 'all'\)"):
        CropContract(choice="every")


# ----------------------------------------------------------------------------------------------- extraction
def _index(names: list[str], labels: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"video_id": [Path(n).stem for n in names], "label": labels, "split": "test",
                         "method": ["real" if y == 0 else "swap" for y in labels], "identity": "",
                         "path": names, "kind": "video"})


MULTI = CropContract(choice="all", min_face_size=20, size=64, frames=4)


def test_choice_all_keeps_both_astronauts_with_stable_tracks(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    _, truth = write_faces_video(root / "crowd.mp4", FACES, n_frames=8, frame=FRAME, mirror=(False, True, False))
    index = _index(["crowd.mp4"], [0])

    summary = extract_faces(index, root, tmp_path / "all", ExtractConfig(MULTI, workers=1), progress=False)
    m = pd.read_parquet(summary.manifest_path)
    assert len(m) == 8 and sorted(m["frame"].unique().tolist()) == [0, 2, 4, 7]  # 4 sampled frames x 2 faces
    assert (m.groupby("frame")["track"].apply(sorted) == pd.Series([[0, 1]] * 4, index=[0, 2, 4, 7])).all()
    assert m["crop_path"].is_unique and m["track"].dtype == np.int16
    assert (tmp_path / "all" / "crops" / "crowd" / "000002_1.png").is_file()  # <frame>_<track> for extra faces
    for row in m.itertuples():
        # The same person keeps the same id in every frame: track 0 is always the left, larger astronaut.
        person = 0 if row.track == 0 else 1
        assert box_iou(row.bbox, truth[row.frame][person]) > 0.6, (row.frame, row.track)
    assert summary.frames_kept == 4 and summary.frames_saved == 8 and summary.frames_dropped == 0
    assert "8 crops from 4 frames (2.00 per frame, up to 2 tracks per video)" in str(summary)

    # min_face_ratio=0 keeps the bystander as a third track; the default choice keeps one face per frame.
    everyone = extract_faces(index, root, tmp_path / "everyone",
                             ExtractConfig(MULTI.replace(min_face_ratio=0.0), workers=1), progress=False)
    e = pd.read_parquet(everyone.manifest_path)
    assert sorted(e["track"].unique().tolist()) == [0, 1, 2]
    assert all(box_iou(r.bbox, truth[r.frame][2]) > 0.5 for r in e[e.track == 2].itertuples())
    one = extract_faces(index, root, tmp_path / "one", ExtractConfig(MULTI.replace(choice="largest"), workers=1),
                        progress=False)
    o = pd.read_parquet(one.manifest_path)
    assert len(o) == 4 and set(o["track"]) == {0} and o["crop_path"].str.fullmatch(r"crops/crowd/\d{6}\.png").all()
    assert np.allclose(np.stack(o["bbox"]), np.stack(m[m.track == 0]["bbox"]), atol=1.0)

    # Readers: rows sorted by (video, frame, track), training keeps whole frames, clips follow track 0.
    from dfd.data.datasets import ClipDataset, FrameDataset, ManifestArrays
    from dfd.data.transforms import Pipeline, Spec

    arrays = ManifestArrays(summary.manifest_path, splits="test")
    assert arrays.track.tolist() == [0, 1] * 4 and arrays.frame.tolist() == [0, 0, 2, 2, 4, 4, 7, 7]
    item = FrameDataset(arrays, Pipeline(Spec(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))))[3]
    assert int(item["frame"]) == 2 and int(item["track"]) == 1
    clip = ClipDataset(arrays, Pipeline(Spec(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))), clip_len=3)
    assert arrays.track[clip.frame_rows(0)].tolist() == [0, 0, 0]
    assert ManifestArrays(summary.manifest_path).keep_frames_per_video(2).frame.tolist() == [0, 0, 7, 7]

    # Packed shards keep both faces of a frame apart (keys by video, frame and track), at random and streamed.
    import tarfile

    from dfd.data.packed import shard_arrays, shard_dataset
    from dfd.store.packed.format import ShardSettings
    from dfd.store.packed.writer import pack_cache

    packed = pack_cache(summary.manifest_path, tmp_path / "shards")
    members = []
    for shard in sorted((tmp_path / "shards").rglob("*.tar")):
        with tarfile.open(shard) as tar:
            members += tar.getnames()
    assert "crowd/000002_1.png" in members and "crowd/000002.png" in members and len(set(members)) == 16
    files = FrameDataset(arrays, Pipeline(Spec(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))))
    for mode in ("random", "stream"):
        settings = ShardSettings(root=str(packed.out), mode=mode)
        store, sharded = shard_arrays(settings, "crowd", summary.manifest_path, "test")
        ds = shard_dataset(settings, store, sharded, "test", files.pipeline, "crowd", None, 4, False, 0)
        items = list(ds) if mode == "stream" else [ds[i] for i in range(len(ds))]
        assert [(int(x["frame"]), int(x["track"])) for x in items] == list(zip(arrays.frame, arrays.track, strict=True))
        assert all(torch.equal(x["image"], files[int(x["index"])]["image"]) for x in items)


# ----------------------------------------------------------------------------------------------- the rule
def test_video_score_rules_on_known_numbers_in_any_row_order() -> None:
    # Video 0: frame 0 faces (0.2, 0.9), frame 1 faces (0.4, 0.6), frame 2 only track 1 (0.8).
    # Video 1: one face per frame (0.1, 0.3): every rule is the plain mean.
    prob = torch.tensor([0.2, 0.9, 0.4, 0.6, 0.8, 0.1, 0.3])
    video = torch.tensor([0, 0, 0, 0, 0, 1, 1])
    frame = torch.tensor([0, 0, 1, 1, 2, 0, 5])
    track = torch.tensor([0, 1, 0, 1, 1, 0, 0])
    want = {"max_face_mean": [(0.9 + 0.6 + 0.8) / 3, 0.2], "mean": [(0.55 + 0.5 + 0.8) / 3, 0.2],
            "largest_face": [(0.2 + 0.4) / 2, 0.2]}
    perm = torch.tensor([6, 3, 0, 5, 2, 4, 1])
    for rule, expected in want.items():
        s = score(prob, video, frame, track, rule)
        assert s.video_prob.tolist() == pytest.approx(expected, abs=1e-7), rule
        again = score(prob[perm], video[perm], frame[perm], track[perm], rule)
        assert torch.equal(again.video_prob, s.video_prob)  # bit-identical whatever the row order
    s = score(prob, video, frame, track, "max_face_mean")
    assert s.frame_prob.float().tolist() == pytest.approx([0.9, 0.6, 0.8, 0.1, 0.3])
    assert s.frame_row.tolist() == [0, 2, 4, 5, 6] and s.video_row.tolist() == [0, 5]
    # Without frames every crop is its own frame: the phase-1 mean, exactly.
    plain = score(prob, video)
    assert plain.video_prob.tolist() == [float(prob[:5].double().mean()), float(prob[5:].double().mean())]
    with pytest.raises(VideoScoreError, match="data.video_score='max' is not a video-score rule; choose one of"):
        score(prob, video, rule="max")


def test_metric_state_carries_frame_and_track_and_dedups_padding() -> None:
    prob = torch.tensor([0.2, 0.9, 0.4, 0.6, 0.7, 0.6, 0.3, 0.35])
    target = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    video = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    frame = torch.tensor([0, 0, 1, 1, 0, 0, 3, 3])
    track = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    method = torch.zeros(8, dtype=torch.long)
    rep = detection_report(prob, target, video, method, frame=frame, track=track, video_score="max_face_mean")
    # Frame level = frames (max over faces): 4 frames, 2 fake; video level: fake 0.75 vs reals 0.7 and 0.35.
    assert rep["frame"]["n"] == 4 and rep["frame"]["crops"] == 8 and rep["video"]["auc"] == 1.0
    # Mean over faces: fake 0.525 vs reals 0.65 and 0.325.
    mean = detection_report(prob, target, video, method, frame=frame, track=track, video_score="mean")
    assert mean["video"]["auc"] == 0.5
    # Two "ranks" with a padded repeat of row 0: the gathered state counts it once, frame and track included.
    m = DetectionMetrics(video_score="max_face_mean")
    index = torch.arange(8)
    for part in (torch.tensor([0, 2, 4, 6]), torch.tensor([1, 3, 5, 7, 0])):
        m.update(prob[part], target[part], video[part], index[part], method[part], frame[part], track[part])
    got = m.compute()
    assert got["video"] == rep["video"] and torch.equal(m.predictions["track"], track)


# ----------------------------------------------------------------------------------------------- eval == predict
def _edit_bundle(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "preprocess.json").read_text())
    cfg.update(changes)
    (dst / "preprocess.json").write_text(json.dumps(cfg))
    return dst


def test_eval_and_predict_compute_the_same_max_face_score(bundles: dict[str, Path],  # noqa: F811
                                                          checkpoints: dict[str, Path],  # noqa: F811
                                                          tmp_path: Path) -> None:
    from dfd.engine.evaluate import evaluate
    from dfd.inference.bundle import load_bundle
    from dfd.inference.predict import Predictor
    from dfd.sources.folder import Folder

    root = tmp_path / "crowd"
    # The darker face of each pair scores far higher with the test model: the rule decides the video's number.
    write_faces_video(root / "test" / "real" / "pair.mp4", FACES[:2], n_frames=8, frame=FRAME, mirror=(False, True),
                      gain=(1.0, 0.5))
    write_faces_video(root / "test" / "fake" / "pair_swap.mp4", FACES[:2], n_frames=8, frame=FRAME,
                      mirror=(True, False), gain=(0.6, 1.0), step=(4, -1))
    contract = load_bundle(bundles["plain"]).contract.replace(choice="all", min_face_size=20, frames=4)
    src = Folder("crowd", root, tmp_path / "cache")
    extract_faces(src.build_index(), root, src.cache_dir, ExtractConfig(contract, workers=1), progress=False,
                  dataset="crowd")

    run = tmp_path / "eval"
    res = evaluate(compose("eval", overrides=[
        f"ckpt_path={checkpoints['plain']}", f"paths.run_dir={run}", "logger=none", "data.num_workers=0",
        "data.include_train_test=false", "+dataset@test_sets.crowd=folder", f"test_sets.crowd.root={root}",
        f"test_sets.crowd.cache_dir={src.cache_dir}"]))
    assert res["video_score"]["rule"] == "max_face_mean"  # the checkpoint's training setting
    assert res["test"]["crowd"]["frame"]["n"] == 8 and res["test"]["crowd"]["frame"]["crops"] == 16
    table = pd.read_parquet(run / "predictions.parquet").set_index("video_id")
    evaluated, rules = {}, {}
    for vid, row in table.iterrows():
        assert list(row["frame_track"]) == [0, 1] * 4
        args = (torch.tensor(row["frame_probs"]), torch.zeros(8, dtype=torch.long),
                torch.tensor(row["frame_index"]), torch.tensor(row["frame_track"]))
        assert score(*args, "max_face_mean").video_prob[0].item() == row["prob_fake"]  # the file reproduces it
        rules[vid] = {r: score(*args, r).video_prob[0].item() for r in ("mean", "largest_face")}
        evaluated[vid] = row["prob_fake"]
        # The faces score differently, so the rule decides the number (well above the tolerance below).
        assert abs(row["prob_fake"] - rules[vid]["mean"]) > 0.05

    bundle_dir = _edit_bundle(bundles["plain"], tmp_path / "bundle", crop=contract.to_dict())
    bundle = load_bundle(bundle_dir)
    assert bundle.video_score == "max_face_mean"  # exported from the checkpoint's training setting
    paths = [str(root / "test" / "real" / "pair.mp4"), str(root / "test" / "fake" / "pair_swap.mp4")]
    predicted = Predictor(bundle, save_crops=tmp_path / "saved").predict(paths, progress=False)
    largest = Predictor(bundle, video_score="largest_face").predict(paths, progress=False)
    for res_max, res_largest, vid in zip(predicted, largest, ("test/real/pair", "test/fake/pair_swap"), strict=True):
        assert res_max.status == "ok" and res_max.faces == 8 and res_max.frames == 4
        assert res_max.prob_fake == pytest.approx(evaluated[vid], abs=1e-4)
        assert res_largest.prob_fake == pytest.approx(rules[vid]["largest_face"], abs=1e-4)
    saved = sorted(p.name for p in (tmp_path / "saved").rglob("*.png") if "pair_swap" not in str(p))
    assert saved == ["000000.png", "000000_1.png", "000002.png", "000002_1.png", "000004.png", "000004_1.png",
                     "000007.png", "000007_1.png"]
    meta = json.loads((bundles["plain"] / "preprocess.json").read_text())
    assert meta["video_score"] == "max_face_mean" and "max over the frame's faces" in meta["video_score_rule"]
