"""DeeperForensics-1.0's perturbed variants (issue 22 case 7): indexed with a one-line warning that the reals are
clean; ``dataset.real_perturbation=match`` gives each FF++ real its fake's distortions from the variant's meta list,
applied by dfd-extract to the real's source frames before face detection. Fixtures in the official layout."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tests.layouts_more as M
from dfd.errors import DatasetError
from dfd.extract.config import ExtractConfig
from dfd.extract.run import extract_faces
from dfd.sources.deeperforensics import DeeperForensics, read_meta
from dfd.store.media import read_image
from tests.layouts import videos_of
from tests.media import write_face_video

V = "end_to_end_level_2"


@pytest.fixture(scope="module")
def drf(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("drf_variants")
    face, _ = write_face_video(base / "face.mp4", n_frames=6, size=192, canvas=224)
    with videos_of(face.read_bytes()):  # videos whose face MTCNN finds, for extraction
        root = M.make_deeperforensics(base / "DeeperForensics-1.0", base / "FaceForensics++")
    return root, base / "FaceForensics++"


def _by_id(df: pd.DataFrame) -> pd.DataFrame:
    return df.set_index("video_id")


def test_perturbed_variant_warns_that_the_reals_are_clean(drf, tmp_path, caplog) -> None:
    root, ffpp = drf
    with caplog.at_level(logging.WARNING):
        src = DeeperForensics("drf", root, tmp_path, variant=V, ffpp_root=ffpp)
        df = src.build_index()
    lines = [r.getMessage() for r in caplog.records if "reals are" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith(f"drf: the fakes of {V} are distorted") and "real_perturbation=match" in lines[0]
    assert lines[0] in src.index_notes()  # dfd-index prints it under its counts
    assert "distortion" not in df.columns  # clean reals: the index is as before
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        DeeperForensics("drf", root, tmp_path, variant="end_to_end", ffpp_root=ffpp).build_index()
    assert not [r for r in caplog.records if "reals are" in r.getMessage()]  # the clean variant: nothing to say


def test_match_gives_each_real_its_fakes_distortions(drf, tmp_path) -> None:
    root, ffpp = drf
    src = DeeperForensics("drf", root, tmp_path, variant=V, ffpp_root=ffpp, real_perturbation="match")
    df = _by_id(src.build_index())
    reals, fakes = df[df.label == 0], df[df.label == 1]
    assert reals.distortion.to_dict() == {"youtube/000": "df_cs:2", "youtube/001": "df_gb:2", "youtube/002": "df_vc:2",
                                          "youtube/003": "df_bw:2", "youtube/004": "df_gnc:2"}
    assert (fakes.distortion == "").all()  # their distortions are in their pixels already
    assert not any("reals are" in n for n in src.index_notes())
    assert any("5 reals get their fake's distortions" in n and "(CS, BW, GNC, GB, VC)" in n for n in src.index_notes())
    with pytest.raises(DatasetError, match="real_perturbation=match reads the fakes' distortions from .*missing"):
        DeeperForensics("drf", root, tmp_path, variant=V, ffpp_root=ffpp, real_perturbation="match",
                        meta_dir=tmp_path / "nowhere").build_index()
    with pytest.raises(DatasetError, match="real_perturbation='matched' is not valid; choose one of clean, match"):
        DeeperForensics("drf", root, tmp_path, variant=V, ffpp_root=ffpp, real_perturbation="matched")


def test_meta_lists_of_mixes_keep_the_variants_own_lines(tmp_path) -> None:
    # The authors' script appends each intermediate file's entry too; the final file's (in the variant folder) wins.
    meta = tmp_path / "manipulated_videos_end_to_end_mix_2_distortions_meta.txt"
    meta.write_text("tmp/000_M101.mp4 GB:3\n"
                    "manipulated_videos/end_to_end_mix_2_distortions/000_M101.mp4 GB:3 JPEG:1\n"
                    "manipulated_videos/end_to_end_mix_2_distortions/001_W102.mp4 VC:5 CC:4\n\n")
    assert read_meta(meta, "end_to_end_mix_2_distortions") == {"000_M101": "df_gb:3 df_jpeg:1",
                                                              "001_W102": "df_vc:5 df_cc:4"}
    meta.write_text("x/000_M101.mp4 GB:9\n")
    with pytest.raises(DatasetError, match=r"meta.txt:1: distortion df_gb: level 9.0 is not one of"):
        read_meta(meta, "end_to_end_mix_2_distortions")


def test_a_fake_missing_from_the_meta_list_still_gives_its_real_a_listed_mix(drf, tmp_path) -> None:
    root, ffpp = drf
    meta_dir = tmp_path / "meta"
    meta_dir.mkdir()
    lines = (root / "lists/manipulated_videos_distortions_meta" / f"manipulated_videos_{V}_meta.txt").read_text()
    (meta_dir / f"manipulated_videos_{V}_meta.txt").write_text(
        "\n".join(line for line in lines.splitlines() if "003_W104" not in line) + "\n")
    src = DeeperForensics("drf", root, tmp_path, variant=V, ffpp_root=ffpp, real_perturbation="match",
                          meta_dir=meta_dir)
    df = _by_id(src.build_index())
    assert df.loc["youtube/003", "distortion"] in {"df_cs:2", "df_gb:2", "df_vc:2", "df_gnc:2"}
    assert any("1 fake(s) missing from" in n and "003_W104" in n for n in src.index_notes())


def test_matched_reals_are_distorted_before_face_detection(drf, tmp_path) -> None:
    """dfd-extract on two matched reals: the crops are those of the distorted frames, not of clean ones."""
    from dfd.faces.crops import crop_faces
    from dfd.faces.detect import FaceDetector
    from dfd.store.distort import parse_chain, read_distorted

    root, ffpp = drf
    cfg = ExtractConfig.create(frames=2, size=64, workers=1)
    src = DeeperForensics("drf", root, tmp_path, variant=V, ffpp_root=ffpp, real_perturbation="match")
    index = src.build_index()
    roots = src.roots()  # the reals' paths are relative to ffpp_root (index column path_root)
    reals = index[index.video_id.isin(["youtube/000", "youtube/004"])]  # CS:2 and GNC:2: every pixel changes
    matched = extract_faces(reals, roots, tmp_path / "match", cfg, progress=False)
    clean = extract_faces(reals.drop(columns="distortion"), roots, tmp_path / "clean", cfg, progress=False)
    assert matched.frames_saved == clean.frames_saved == 4
    man = pd.read_parquet(tmp_path / "match" / "manifest.parquet")
    assert dict(zip(man.video_id, man.distortion, strict=True)) == {"youtube/000": "df_cs:2", "youtube/004": "df_gnc:2"}
    det = FaceDetector(cfg.contract)
    for row in reals.itertuples():
        frames = read_distorted("video", roots.resolve(row.path, row.path_root), 2, parse_chain(row.distortion), row.video_id)
        want = crop_faces(frames.images, cfg.contract, det).crops
        got = man[man.video_id == row.video_id].sort_values("frame")
        for crop, rel in zip(want, got.crop_path, strict=True):
            assert np.array_equal(read_image(tmp_path / "match" / rel), crop)  # pixel for pixel
            assert not np.array_equal(read_image(tmp_path / "clean" / rel), crop)
    # A changed distortion makes the video stale; the same one is reused.
    again = extract_faces(reals, roots, tmp_path / "match", cfg, progress=False)
    assert again.videos_resumed == 2 and again.processed == []
    changed = reals.assign(distortion=["df_cs:2", "df_gnc:3"])
    redo = extract_faces(changed, roots, tmp_path / "match", cfg, progress=False)
    assert redo.processed == ["youtube/004"] and redo.videos_resumed == 1


def test_matched_reals_are_their_own_test_set_and_cache(drf, tmp_path) -> None:
    from hydra.utils import instantiate

    from tests.conftest import compose

    root, ffpp = drf
    common = ["dataset=deeperforensics", f"dataset.root={root}", f"dataset.ffpp_root={ffpp}", f"dataset.variant={V}",
              f"paths.cache_dir={tmp_path}"]
    clean = instantiate(compose("extract", common).dataset)
    match = instantiate(compose("extract", [*common, "dataset.real_perturbation=match"]).dataset)
    assert (clean.name, match.name) == (f"deeperforensics_{V}", f"deeperforensics_{V}_reals_match")
    assert clean.cache_dir != match.cache_dir and match.cache_dir.name.startswith(match.name)
    assert match.real_perturbation == "match" and match.meta_path().is_file()
