"""The cross-dataset test bed's video sources: exact counts, labels, splits and source pairs from official layouts.

DFDC, DFDC-Preview, DeeperForensics-1.0, FFIW-10K, UADFV, DeepFakeDetection and FaceShifter (FF++'s tree), and
the ``source_video`` pairing column of FF++ and Celeb-DF, down to the manifest dfd-extract writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dfd.cli._hydra import config_dir, register_resolvers
from dfd.errors import DatasetError
from dfd.extract.config import ExtractConfig
from dfd.extract.run import extract_faces
from dfd.sources.celebdf import CelebDF
from dfd.sources.deeperforensics import DeeperForensics
from dfd.sources.deepfakedetection import DeepFakeDetection
from dfd.sources.dfdc import DFDC
from dfd.sources.dfdcp import DFDCP, parse_name
from dfd.sources.ffiw import FFIW
from dfd.sources.ffpp import FFPP
from dfd.sources.uadfv import UADFV
from dfd.store.schema import read_manifest
from tests import layouts as L
from tests import layouts_more as M


def _by_id(df: pd.DataFrame) -> pd.DataFrame:
    return df.set_index("video_id")


def _groups_in_one_split(df: pd.DataFrame, key: str) -> None:
    spread = df.groupby(key)["split"].nunique()
    assert (spread == 1).all(), f"{key} groups straddling splits: {list(spread[spread > 1].index)}"


# --- DFDC --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dfdc_root(tmp_path_factory):
    return M.make_dfdc(tmp_path_factory.mktemp("dfdc") / "DFDC")


def test_dfdc_parts_labels_pairs_and_what_is_skipped(dfdc_root, tmp_path):
    src = DFDC("dfdc", dfdc_root, tmp_path, val_fraction=0.0)
    df = _by_id(src.build_index())
    train, test = df[df.split == "train"], df[df.split == "test"]
    # Upper-case REAL/FAKE; parts 0, 7, 12 (unpadded, parsed as ints); part 3 has no metadata.json.
    assert (len(train), (train.label == 0).sum()) == (10, 4)
    assert sorted(train.part.unique()) == [0, 7, 12]
    assert set(test.index) == {"test/t1", "test/t2", "test/t3"} and test.label.to_dict() == {
        "test/t1": 0, "test/t2": 1, "test/t3": 1}
    assert set(df.split) == {"train", "test"}  # validation/ not used unless official_val
    assert dict(src.skipped) == {
        "train/dfdc_train_part_0/zzz.mp4": "not in metadata.json (no label)",
        "train/dfdc_train_part_3": "no metadata.json: 2 videos not indexed",
        "train/dfdc_train_part_7/m7.mp4": "listed in metadata.json, missing on disk",
        "test/t4.mp4": "listed in test/ labels, missing on disk",
    }
    assert any("dfdc_train_part_3" in n and "without metadata.json" in n for n in src.notes)
    # Pairing from `original`, across parts too; reals have none.
    assert df.loc["dfdc_train_part_7/f7b", "source_video"] == "dfdc_train_part_0/r0b"
    assert df.loc["dfdc_train_part_0/f0a", "source_video"] == "dfdc_train_part_0/r0a"
    assert (df[df.label == 0].source_video == "").all()
    assert df.loc["dfdc_train_part_7/f7b", "original"] == "r0b.mp4"


def test_dfdc_val_is_whole_parts(dfdc_root, tmp_path):
    df = DFDC("dfdc", dfdc_root, tmp_path, val_fraction=0.34).build_index()
    trainval = df[df.split != "test"]
    _groups_in_one_split(trainval, "part")
    val_parts = trainval[trainval.split == "val"].part.unique()
    assert len(val_parts) == 1 and set(trainval.split) == {"train", "val"}
    assert (df.split == "test").sum() == 3


def test_dfdc_val_by_original_cluster_and_single_part_fallback(dfdc_root, tmp_path):
    df = DFDC("dfdc", dfdc_root, tmp_path, val_fraction=0.5, val_by="original").build_index()
    _groups_in_one_split(df[df.split != "test"], "identity")  # a real and all its fakes together
    assert {"train", "val"} <= set(df.split)
    one = M.make_dfdc(tmp_path / "one", parts={5: M.DFDC_PARTS[0]}, validation=False)
    src = DFDC("dfdc", one, tmp_path / "c", val_fraction=0.5)
    df = src.build_index()
    assert any("val carved by original cluster instead" in n for n in src.notes)
    _groups_in_one_split(df[df.split != "test"], "identity")
    assert set(df[df.split != "test"].split) == {"train", "val"}


def test_dfdc_official_validation_and_label_errors(dfdc_root, tmp_path):
    df = DFDC("dfdc", dfdc_root, tmp_path, official_val=True).build_index()
    assert _by_id(df[df.split == "val"]).label.to_dict() == {"validation/v1": 0, "validation/v2": 1}
    bad = M.make_dfdc(tmp_path / "bad", parts={1: {"x.mp4": ("MAYBE", None)}}, validation=False)
    with pytest.raises(DatasetError, match=r"dfdc_train_part_1/metadata.json: x.mp4 has label 'MAYBE'"):
        DFDC("dfdc", bad, tmp_path).build_index()
    (bad / "train/dfdc_train_part_1/metadata.json").unlink()
    (bad / "test/labels.csv").write_text("filename,label\nt1.mp4,1\n")  # metadata.json says 0
    with pytest.raises(DatasetError, match="labels.csv and metadata.json disagree on t1.mp4"):
        DFDC("dfdc", bad, tmp_path).build_index()


# --- DFDC Preview ------------------------------------------------------------------------------------------
def test_dfdcp_names_are_parsed():
    assert parse_name("643049_A_001") == ("643049", "", "A_001")
    assert parse_name("1255229_1260311_C_001") == ("1260311", "1255229", "C_001")
    assert parse_name("qwerty") == ("", "", "qwerty")


@pytest.mark.parametrize("straddlers", ["drop", "held_out"])
def test_dfdcp_official_test_identity_disjoint_val_and_pairs(tmp_path, straddlers):
    root = M.make_dfdcp(tmp_path / "dfdc_preview_set")
    src = DFDCP("dfdcp", root, tmp_path / "c", val_fraction=0.34, val_straddlers=straddlers)
    df = _by_id(src.build_index())
    assert src.skipped == [(M.DFDCP_MISSING, "listed in dataset.json, missing on disk")]
    test = df[df.split == "test"]
    assert set(test.index) == {"original_videos/777777/777777_A_001", "method_B/777777/777777_A/888888_777777_A_001",
                               "method_A/888888/888888_B/zz"}
    assert test.label.sum() == 2  # lower-case real/fake converted
    n_train_entries = 6 * 3 + 1  # 6 identities x (2 reals + 1 fake) + the method_A fake
    assert len(df) - len(test) + len(src.dropped) == n_train_entries
    trainval = df[df.split != "test"]
    assert set(trainval.split) == {"train", "val"}
    ids = {s: set(g.identity) | set(g.source_identity) - {""} for s, g in trainval.groupby("split")}
    val_ids = set(trainval[(trainval.split == "val") & (trainval.label == 0)].identity)
    assert not val_ids & set(trainval[trainval.split == "train"].identity) and not val_ids & ids["train"]
    if straddlers == "drop":
        assert not ids["train"] & ids["val"]
    else:
        assert not src.dropped
    # Pairs: from the names, from source_video (a path), and the given name when that real is not in the set.
    assert df.loc["method_B/777777/777777_A/888888_777777_A_001", "source_video"] == "original_videos/777777/777777_A_001"
    assert df.loc["method_A/888888/888888_B/zz", "source_video"] == "888888_B_001.mp4"
    if "method_A/100001/100001_B/qwerty" in df.index:
        assert df.loc["method_A/100001/100001_B/qwerty", "source_video"] == "original_videos/100001/100001_B_001"
    assert (df[df.label == 0].source_video == "").all()


def test_dfdcp_needs_its_dataset_json(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DatasetError, match="dataset.json not found"):
        DFDCP("dfdcp", tmp_path / "x", tmp_path).build_index()


# --- DeeperForensics-1.0 -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def drf(tmp_path_factory):
    base = tmp_path_factory.mktemp("drf")
    return M.make_deeperforensics(base / "DeeperForensics-1.0", base / "FaceForensics++"), base / "FaceForensics++"


@pytest.mark.parametrize("variant", M.DRF_VARIANTS)
def test_deeperforensics_official_lists_ffpp_reals_and_pairs(drf, tmp_path, variant):
    root, ffpp = drf
    src = DeeperForensics("drf", root, tmp_path, variant=variant, ffpp_root=ffpp)
    df = _by_id(src.build_index())
    fakes, reals = df[df.label == 1], df[df.label == 0]
    assert fakes.split.to_dict() == {f"{variant}/000_M101": "train", f"{variant}/001_W102": "train",
                                     f"{variant}/002_M103": "val", f"{variant}/003_W104": "test",
                                     f"{variant}/004_M105": "test"}
    # The real class is FF++'s youtube targets (999 is no target: not indexed), each in its fake's split.
    assert reals.split.to_dict() == {"youtube/000": "train", "youtube/001": "train", "youtube/002": "val",
                                     "youtube/003": "test", "youtube/004": "test"}
    assert (fakes.source_video == "youtube/" + fakes.identity).all()
    assert set(fakes.source_identity) == {"M101", "W102", "M103", "W104", "M105"}
    # Each path relative to the download it lives in, that folder named (never ../FaceForensics++/...).
    assert all(p.startswith("original_sequences/youtube/c23/videos/") for p in reals.path)
    assert set(reals.path_root) == {"ffpp_root"} and set(fakes.path_root) == {"root"}
    roots = src.roots()
    assert all(roots.resolve(p, r).is_file() for p, r in zip(df.path, df.path_root, strict=True))
    assert {s.path: s.reason for s in src.skipped} == {f"manipulated_videos/{variant}/005_M106.mp4": "in the split lists, missing on disk",
                                 f"manipulated_videos/{variant}/006_M107.mp4": "in no split list"}


def test_deeperforensics_errors(drf, tmp_path):
    root, ffpp = drf
    with pytest.raises(DatasetError, match=r"variants found: \['end_to_end', 'end_to_end_level_2'\]"):
        DeeperForensics("drf", root, tmp_path, variant="end_to_end_level_9", ffpp_root=ffpp).build_index()
    with pytest.raises(DatasetError, match=r"real class .* YouTube videos at c23 .* set dataset.ffpp_root"):
        DeeperForensics("drf", root, tmp_path, ffpp_root=tmp_path / "nowhere").build_index()
    with pytest.raises(DatasetError, match="c40"):
        DeeperForensics("drf", root, tmp_path, ffpp_root=ffpp, compression="c40").build_index()


# --- FFIW-10K ------------------------------------------------------------------------------------------------
def test_ffiw_official_folders_test_release_pairs_and_masks(tmp_path):
    root = M.make_ffiw(tmp_path / "FFIW10K-v1-release", tmp_path / "FFIW10K-v1-release-test")
    src = FFIW("ffiw", root, tmp_path / "c", test_root=tmp_path / "FFIW10K-v1-release-test")
    df = _by_id(src.build_index())
    counts = df.groupby(["split", "label"]).size().to_dict()
    assert counts == {("train", 0): 3, ("train", 1): 4, ("val", 0): 2, ("val", 1): 2, ("test", 0): 1, ("test", 1): 1}
    assert df.loc["target/val/val_00000001", "source_video"] == "source/val/val_00000001"
    assert df.loc["target/test/test_00000000", "source_video"] == "source/test/test_00000000"
    assert df.loc["target/train/train_00000003", "source_video"] == "train_00000003.mp4"  # its real is absent
    assert df.loc["target/train/train_00000000", "mask"] == "target_mask/train/train_00000000_mask.mp4"
    # The test release's paths are relative to its own folder, named (never ../FFIW10K-v1-release-test/...).
    assert df.loc["target/test/test_00000000", ["path", "path_root"]].tolist() == [
        "target/test/test_00000000.mp4", "test_root"]
    assert any("1 fakes without a same-named real" in n for n in src.notes)


def test_ffiw_val_as_test_carves_val_by_pair(tmp_path):
    root = M.make_ffiw(tmp_path / "FFIW10K-v1-release")
    src = FFIW("ffiw", root, tmp_path / "c")
    assert "test" not in set(src.build_index().split)
    assert any("no test/ folder" in n and "val_as_test=true" in n for n in src.notes)
    df = FFIW("ffiw", root, tmp_path / "c", val_as_test=True, val_fraction=0.34).build_index()
    assert (df.split == "test").sum() == 4 and set(df[df.split == "test"].video_id.str.split("/").str[1]) == {"val"}
    _groups_in_one_split(df, "identity")  # a real and its same-named fake together
    assert set(df.split) == {"train", "val", "test"}


# --- UADFV ---------------------------------------------------------------------------------------------------
def test_uadfv_pairs_carved_together(tmp_path):
    root = M.make_uadfv(tmp_path / "UADFV")
    df = _by_id(UADFV("uadfv", root, tmp_path / "c").build_index())
    assert len(df) == 2 * M.UADFV_PAIRS and df.label.sum() == M.UADFV_PAIRS
    _groups_in_one_split(df.reset_index(), "identity")
    # 10 pairs, each by its own draw: every split holds whole pairs (a real and its fake).
    sizes = df.groupby("split").size()
    assert set(sizes.index) == {"train", "val", "test"} and (sizes % 2 == 0).all()
    assert df.loc["fake/0007_fake", "source_video"] == "real/0007" and df.loc["real/0007", "source_video"] == ""
    assert set(UADFV("uadfv", root, tmp_path / "c", all_test=True).build_index().split) == {"test"}
    with pytest.raises(DatasetError, match="expected .*/real/"):
        UADFV("uadfv", tmp_path, tmp_path / "c").build_index()


# --- FF++'s tree: DeepFakeDetection and FaceShifter, and the source_video column -------------------------------
@pytest.fixture(scope="module")
def ffpp_root(tmp_path_factory):
    return L.make_ffpp(tmp_path_factory.mktemp("ffpp") / "FaceForensics++",
                       methods=(*L.FFPP_PAPER_METHODS, "FaceShifter"), with_dfd=True)


def test_ffpp_source_video_is_the_target_youtube_video(ffpp_root, tmp_path):
    df = _by_id(FFPP("ffpp", ffpp_root, tmp_path, methods=[*L.FFPP_PAPER_METHODS, "DeepFakeDetection"]).build_index())
    assert df.loc["Deepfakes/071_054", "source_video"] == "youtube/071"  # <target>_<source>: target's video kept
    assert df.loc["NeuralTextures/054_071", "source_video"] == "youtube/054"
    fakes = df[df.label == 1]
    assert fakes.source_video.isin(df.index).all()
    assert (df.loc[fakes.source_video, "split"].to_numpy() == fakes.split.to_numpy()).all()
    assert (df[df.label == 0].source_video == "").all()
    dfd_fake = next(v for v in fakes.index if v.startswith("DeepFakeDetection/01_02__"))
    assert df.loc[dfd_fake, "source_video"] == f"actors/01__{dfd_fake.split('__')[1]}"


def test_celebdf_source_video(tmp_path):
    root = L.make_celebdf(tmp_path / "Celeb-DF-v2")
    df = _by_id(CelebDF("celebdf_v2", root, tmp_path / "c", val_straddlers="val").build_index())
    assert df.loc["Celeb-synthesis/id0_id1_0000", "source_video"] == "Celeb-real/id0_0000"
    synth = df[df.method == "celeb-synthesis"]
    assert len(synth) == len(L.CELEBDF_SYNTH) and synth.source_video.isin(df.index).all()
    assert (df[df.label == 0].source_video == "").all()


def test_dfd_is_all_test_by_default_with_pairs(ffpp_root, tmp_path):
    src = DeepFakeDetection("dfd", ffpp_root, tmp_path)
    df = _by_id(src.build_index())
    n_reals = len(L.FFPP_DFD_ACTORS) * len(L.FFPP_DFD_SCENES)
    assert len(df) == n_reals + len(L.FFPP_DFD_FAKES) and set(df.split) == {"test"} and not src.dropped
    assert set(df.method) == {"actors", "DeepFakeDetection"}
    fakes = df[df.label == 1]
    assert fakes.source_video.isin(df.index).all() and len(fakes) == len(L.FFPP_DFD_FAKES)
    carved = DeepFakeDetection("dfd", ffpp_root, tmp_path, all_test=False, val_fraction=0.25, test_fraction=0.25)
    pd.testing.assert_frame_equal(
        carved.build_index(),
        FFPP("ffpp", ffpp_root, tmp_path, methods=["DeepFakeDetection"], dfd_val_fraction=0.25,
             dfd_test_fraction=0.25).build_index())


def _compose_dataset(name: str, overrides: list[str]):
    register_resolvers()  # ${dfd.path_key:...} in the dataset's cache_dir
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("index", overrides=[f"dataset={name}", *overrides])
    return instantiate(cfg.dataset), cfg


def test_faceshifter_preset_is_the_ffpp_source(ffpp_root, tmp_path):
    src, _ = _compose_dataset("faceshifter", [f"dataset.root={ffpp_root}", f"paths.cache_dir={tmp_path}"])
    assert isinstance(src, FFPP) and src.name == "faceshifter"
    df = src.build_index()
    test = df[df.split == "test"]
    assert set(df[df.label == 1].method) == {"FaceShifter"} and (df.label == 1).sum() == 20
    assert ((test.label == 0).sum(), (test.label == 1).sum()) == (4, 4)  # FF++'s test pairs
    assert df[df.label == 1].source_video.isin(set(df.video_id)).all()


# --- Every new YAML composes, instantiates and indexes its fixture --------------------------------------------
def test_new_dataset_yamls_index_their_layouts(tmp_path, ffpp_root):
    drf_root = M.make_deeperforensics(tmp_path / "drf", tmp_path / "ff")
    cases = {
        "dfdc": ([f"dataset.root={M.make_dfdc(tmp_path / 'DFDC')}"], 13),
        "dfdcp": ([f"dataset.root={M.make_dfdcp(tmp_path / 'dfdcp')}"], None),
        "deeperforensics": ([f"dataset.root={drf_root}", f"dataset.ffpp_root={tmp_path / 'ff'}"], 10),
        "ffiw": ([f"dataset.root={M.make_ffiw(tmp_path / 'ffiw')}", f"dataset.test_root={tmp_path / 'none'}"], 11),
        "uadfv": ([f"dataset.root={M.make_uadfv(tmp_path / 'uadfv')}"], 20),
        "dfd": ([f"dataset.root={ffpp_root}"], 23),
    }
    for name, (overrides, n) in cases.items():
        src, cfg = _compose_dataset(name, [*overrides, f"paths.cache_dir={tmp_path / 'cache'}"])
        df = src.build_index()
        assert n is None or len(df) == n, name
        assert Path(cfg.index_path) == src.cache_dir / "index.parquet"
        assert "source_video" in df.columns and (df[df.label == 0].source_video == "").all()
    src, _ = _compose_dataset("deeperforensics", [f"dataset.root={drf_root}", "dataset.variant=end_to_end_level_2"])
    assert src.name == "deeperforensics_end_to_end_level_2"


def test_dfd_index_reports_parts_without_metadata(dfdc_root, tmp_path):
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dfd-index")), "dataset=dfdc", f"dataset.root={dfdc_root}",
         f"index_path={tmp_path / 'i.parquet'}"],
        cwd=tmp_path, env={**os.environ, "COLUMNS": "200"}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "note: 1 train part(s) without metadata.json not indexed: dfdc_train_part_3" in proc.stdout
    # Each skip reason once, with how many and an example (dfd.sources.report.index_report).
    assert "skipped 1 (listed in metadata.json, missing on disk), e.g. train/dfdc_train_part_7/m7.mp4" in proc.stdout
    assert proc.stdout.count("skipped 1 (") == 4 and "wrote 13 videos" in proc.stdout


# --- The pairing column reaches the manifest --------------------------------------------------------------------
def test_source_video_flows_from_index_into_the_manifest(tmp_path):
    pairs = {"train": [["001", "002"]], "val": [["003", "004"]], "test": [["005", "006"]]}
    root = L.make_ffpp(tmp_path / "ff", methods=("Deepfakes",), pairs=pairs, frames=2)
    index = FFPP("ffpp", root, tmp_path / "c", methods=["Deepfakes"], media="images").build_index()
    cfg = ExtractConfig.create(frames=1, size=16, workers=1, landmarks_for_crops=False)
    summary = extract_faces(index, root, tmp_path / "cache", cfg, faces_are_cropped=True, progress=False)
    assert summary.videos_ok == 12
    m = read_manifest(summary.manifest_path)
    per_video = m.drop_duplicates("video_id").set_index("video_id").source_video
    assert per_video.to_dict() == index.set_index("video_id").source_video.to_dict()
    assert per_video["Deepfakes/004_003"] == "youtube/004"
