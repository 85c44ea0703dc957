"""Issue 25: the no-face rule, the new metrics and the breakdown by kind of fake, end to end.

A CSV test set in its documented layout (``path,label,split,video_id,method,method_type``) of frame folders:
astronaut faces (real MTCNN finds them) and folders or frames without a face. It is extracted as dfd-extract
does, then a tiny checkpoint is evaluated with ``eval.no_face=drop`` and ``score``: the AUC under ``score`` is
the AUC of the dropped run's own per-video scores plus one 0.5 per video without a face (and per frame at frame
level), computed by scikit-learn from the fixture's design, not from the run.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tests.conftest import compose
from tests.media import face_image

VIDEOS = "{train: 8, val: 4, test: 4}"
TINY = ["model=tiny", "logger=none", "data.num_workers=0", "trainer.max_epochs=1", f"dataset.videos={VIDEOS}",
        "dataset.frames_per_video=2", "data.batch_size=8"]
# video id -> (label, method, method_type, frames: True = a face, False = none)
LAYOUT = {
    "real_a": (0, "real", "", [True, True, True]),
    "real_b": (0, "real", "", [True, True, False]),
    "fake_a": (1, "swap", "face_swap", [True, True, True]),
    "fake_b": (1, "reenact", "reenactment", [True, False, True]),
    "real_nf": (0, "real", "", [False, False]),
    "fake_nf": (1, "swap", "face_swap", [False, False, False]),
    "fake_nf2": (1, "reenact", "reenactment", [False, False]),
}
NO_FACE_VIDEOS = {0: 1, 1: 2}  # per label, by design
NO_FACE_FRAMES = {0: 1 + 2, 1: 1 + 3 + 2}  # real_b's third + real_nf's; fake_b's second + fake_nf's + fake_nf2's


def _write_set(root: Path) -> None:
    rows = []
    for i, (vid, (label, method, kind, frames)) in enumerate(LAYOUT.items()):
        for j, has_face in enumerate(frames):
            if has_face:  # the astronaut, tinted per video and shaded per frame: distinct model inputs
                img = face_image(160).astype(np.float32) * (0.9 + 0.03 * i) + 6 * j
                img[..., i % 3] *= 0.92
            else:
                yy, xx = np.mgrid[0:160, 0:160]
                img = np.stack([(xx + 9 * j) % 256, (2 * yy) % 256, np.full_like(xx, 90 + 20 * i)], -1)
            out = root / vid / f"{j}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out), cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
        rows.append({"path": vid, "label": label, "split": "test", "video_id": vid, "method": method,
                     "method_type": kind})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared_cache):
    """A tiny checkpoint, the CSV set extracted as dfd-extract does (64 px box crops, the model's contract),
    and two evaluations of it: eval.no_face=drop and eval.no_face=score."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from dfd.engine.evaluate import evaluate
    from dfd.engine.train import train
    from dfd.extract.config import ExtractConfig
    from dfd.extract.run import extract_faces

    base = tmp_path_factory.mktemp("no_face")
    root, cache = base / "wild", base / "cache"
    _write_set(root)
    trained = train(compose("train", [*TINY, f"paths.cache_dir={shared_cache}", f"paths.run_dir={base / 'train'}"]))
    cfg = compose("extract", ["dataset=csv", f"dataset.root={root}", f"paths.cache_dir={cache}", "extract.size=64",
                              "extract.frames=4", "extract.workers=1"])
    source = instantiate(cfg.dataset)
    summary = extract_faces(source.write_index(cfg.index_path), root, source.cache_dir,
                            ExtractConfig.from_mapping(OmegaConf.to_container(cfg.extract, resolve=True)),
                            progress=False, dataset=source.name)
    out = {"extract": summary, "train": trained}
    for rule in ("drop", "score"):
        run_dir = base / rule
        out[rule] = evaluate(compose("eval", [
            f"ckpt_path={trained['checkpoint']}", "logger=none", "data.num_workers=0", f"paths.cache_dir={cache}",
            f"paths.run_dir={run_dir}", "+dataset@test_sets.wild=csv", f"test_sets.wild.root={root}",
            "data.include_train_test=false", f"eval.no_face={rule}"]))
        out[f"{rule}_dir"] = run_dir
    return out


def test_extraction_records_faces_not_found_per_split(runs):
    summary = runs["extract"]
    assert sorted(summary.failures["video_id"]) == ["fake_nf", "fake_nf2", "real_nf"]
    test = summary.drops["split"]["test"]
    assert {k: v["videos_no_face"] for k, v in test["label"].items()} == {"0": 1, "1": 2}
    assert {k: v["dropped"] for k, v in test["label"].items()} == {"0": 3, "1": 6}
    assert sorted(v for v, _, _ in test["no_face_videos"]) == ["fake_nf", "fake_nf2", "real_nf"]


def test_no_face_score_changes_auc_exactly_as_computed_by_hand(runs):
    drop, score = runs["drop"]["test"]["wild"], runs["score"]["test"]["wild"]
    for rep, rule in ((drop, "drop"), (score, "score")):  # the counts are reported whatever the rule
        assert rep["no_face"] == {"rule": rule, "score": 0.5 if rule == "score" else None,
                                  "videos": {"real": 1, "fake": 2}, "frames": {"real": 3, "fake": 6},
                                  "unreadable_videos": {"real": 0, "fake": 0}}
    pred = pd.read_parquet(runs["drop_dir"] / "predictions.parquet")
    assert sorted(pred["video_id"]) == ["fake_a", "fake_b", "real_a", "real_b"]  # dropped: no row, no number
    assert drop["video"]["auc"] == pytest.approx(roc_auc_score(pred["label"], pred["prob_fake"]), abs=1e-12)
    # score: each video without a face is one more video at P(fake) 0.5; each frame without one, one more frame.
    y = [*pred["label"], *[0] * NO_FACE_VIDEOS[0], *[1] * NO_FACE_VIDEOS[1]]
    p = [*pred["prob_fake"], *[0.5] * sum(NO_FACE_VIDEOS.values())]
    assert score["video"]["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert score["video"]["auc"] != pytest.approx(drop["video"]["auc"], abs=1e-3)
    frames = np.concatenate(pred["frame_probs"].to_numpy()).astype(np.float64)
    fy = np.repeat(pred["label"].to_numpy(), pred["frames"].to_numpy())
    assert (len(frames), drop["frame"]["n"]) == (10, 10)  # every frame with a face, by design
    fy_s = [*fy, *[0] * NO_FACE_FRAMES[0], *[1] * NO_FACE_FRAMES[1]]
    fp_s = [*frames, *[0.5] * sum(NO_FACE_FRAMES.values())]
    assert score["frame"]["auc"] == pytest.approx(roc_auc_score(fy_s, fp_s), abs=1e-6)
    assert (score["frame"]["n"], score["video"]["n_real"], score["video"]["n_fake"]) == (19, 3, 4)
    # predictions.parquet under score lists the faceless videos at 0.5 and still reproduces the video AUC.
    scored = pd.read_parquet(runs["score_dir"] / "predictions.parquet")
    assert scored.set_index("video_id").loc[["real_nf", "fake_nf", "fake_nf2"], "frames"].tolist() == [0, 0, 0]
    assert score["video"]["auc"] == pytest.approx(roc_auc_score(scored["label"], scored["prob_fake"]), abs=1e-12)
    # An evaluation-time choice that changes every number keeps report rows apart.
    assert runs["score"]["train"]["overrides"]["eval.no_face"] == "score"
    assert "eval.no_face" not in runs["drop"]["train"]["overrides"]


def test_new_metrics_kinds_and_reliability_reach_results_and_the_report(runs, tmp_path):
    from dfd.report.build import build_report

    rep = json.loads((runs["score_dir"] / "results.json").read_text())["test"]["wild"]
    for level in ("frame", "video"):
        assert {"tpr@fpr1", "tpr@fpr5", "ece", "brier"} <= set(rep[level])
        assert sum(rep["calibration"][level]["count"]) == rep[level]["n"]
    # Per kind of fake (the CSV's method_type): reals + that kind's fakes, faceless ones counted at 0.5.
    kinds = rep["per_method_type"]
    assert set(kinds) == {"face_swap", "reenactment"}
    assert (kinds["face_swap"]["video"]["n_real"], kinds["face_swap"]["video"]["n_fake"]) == (3, 2)
    assert set(rep["per_method"]) == {"swap", "reenact"}
    assert (runs["score_dir"] / "reliability_wild.png").is_file()
    report = build_report([runs["drop_dir"], runs["score_dir"]], tmp_path / "report", metric="video_tpr@fpr1")
    text = report.report.read_text()
    for section in ("## Calibration", "## Per kind of fake", "## Faces not found", "### video_ece",
                    "### video_brier", "face_swap AUC", "face_swap TPR@1%", "score (0.5)"):
        assert section in text, section
    assert (tmp_path / "report" / "figures" / "reliability_wild.png").is_file()
    # The two evaluations of one checkpoint are two rows, named by the rule that differs.
    rows = pd.read_csv(tmp_path / "report" / "matrix.csv")["config"].tolist()
    assert len(rows) == 2 and rows[0].endswith(" eval.no_face=drop") and rows[1].endswith(" eval.no_face=score")
    assert rows[0].split(" ")[0] == rows[1].split(" ")[0]  # one training configuration
    long = pd.read_csv(tmp_path / "report" / "results_long.csv")
    got = set(long.loc[long.section == "test", "metric"])
    assert {"tpr@fpr1", "tpr@fpr5", "ece", "brier", "auc"} <= got
    faces = long[(long.section == "no_face") & (long.level == "frame")].groupby("metric")["value"].max()
    assert faces.to_dict() == {"no_face_fake": 6.0, "no_face_real": 3.0}
    assert set(long.loc[long.section == "per_method_type", "method"]) == {"face_swap", "reenactment"}
