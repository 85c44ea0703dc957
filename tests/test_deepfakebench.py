"""Crop datasets: DeepfakeBench's JSONs + frames come out leak-free and DF40 selects methods; manifests in place.

Fixtures are DeepfakeBench's on-disk format (``tests/layouts_more.py``): frames named by original index, some
videos with fewer crops, 81-point landmark ``.npy`` files, JSONs with its leaky splits and Windows/absolute
path prefixes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dfd.cli._hydra import config_dir, register_resolvers
from dfd.data.datasets import FrameDataset, ManifestArrays
from dfd.data.transforms import Pipeline, Spec
from dfd.errors import DatasetError
from dfd.sources.crops import five_point_landmarks, landmark_file
from dfd.sources.deepfakebench import DeepfakeBench, _video_ids, family, label_of
from dfd.sources.df40 import DF40, canonical_method
from dfd.store.cache import METADATA_KEY
from dfd.store.schema import read_index, read_manifest
from tests import layouts_more as M


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return M.make_deepfakebench(tmp_path_factory.mktemp("deepfakebench"))


def _src(db, name, tmp_path, **kw) -> DeepfakeBench:
    rgb, json_dir = db
    return DeepfakeBench("db", rgb, tmp_path / name, json_name=name, json_dir=json_dir, **kw)


def _split_of(df):
    return df.set_index("video_id").split.to_dict()


def _identity_sets(df, cols=("identity", "source_identity")):
    return {s: {i for c in cols for i in g[c] if i} for s, g in df.groupby("split")}


def test_labels_families_and_landmark_rules():
    assert label_of("FF-DF") == 1 and label_of("FF-real") == 0 and label_of("DFDCP_FakeA") == 1
    assert label_of("simswap_Fake") == 1 and label_of("blendface_real") == 0 and label_of("odd") is None
    assert label_of("odd", {"odd": 1}) == 1 and label_of("FF-DF", {"FF-DF": 0}) == 0
    assert family("FaceForensics++_c40") == "ffpp" and family("Celeb-DF-v1") == "celebdf" and family("x") == "generic"
    assert landmark_file("a/frames/v/012.png") == "a/landmarks/v/012.npy"
    np.testing.assert_allclose(five_point_landmarks(M.LM81), M.LM5)
    # Video ids: dfd's own FF++/Celeb-DF ids; more leading folders, for every sibling, only where ambiguous.
    assert _video_ids(["rgb/FaceForensics++/manipulated_sequences/Deepfakes/c23/frames/000_003",
                       "DF40/simswap/ff/frames/000_003", "DF40/inswap/ff/frames/000_003",
                       "DF40/inswap/ff/frames/001_002"]) == {
        "rgb/FaceForensics++/manipulated_sequences/Deepfakes/c23/frames/000_003": "Deepfakes/000_003",
        "DF40/simswap/ff/frames/000_003": "simswap/ff/000_003", "DF40/inswap/ff/frames/000_003": "inswap/ff/000_003",
        "DF40/inswap/ff/frames/001_002": "inswap/ff/001_002"}


def test_ffpp_json_paths_compression_and_ids(db, tmp_path):
    src = _src(db, "FaceForensics++", tmp_path)
    df = src.build_index().set_index("video_id")
    # The JSON has c23 and c40 levels; c23 picked. Ids are dfd's FF++ ids; the official splits are kept.
    assert set(df.compression) == {"c23"} and len(df) == 12
    assert df.split.value_counts().to_dict() == {"train": 4, "val": 4, "test": 4}
    assert df.loc["Deepfakes/001_002", "split"] == "val" and df.loc["youtube/004", "split"] == "test"
    assert df.loc["Deepfakes/003_000", "source_video"] == "youtube/003" and df.loc["Deepfakes/003_000", "label"] == 1
    assert df.loc["youtube/000", "n_frames"] == 2 and df.loc["youtube/003", "n_frames"] == 4
    assert all(v == 0 for k, v in src.leaks.items() if k != "videos_missing_on_disk") and not src.skipped
    # All three machine-specific prefixes resolved against root.
    assert set(src.prefixes_dropped) == {"D:/DeepfakeBench/datasets/rgb", "datasets/rgb",
                                         "data/home/someone/DeepfakeBench/datasets/rgb"}
    with pytest.raises(DatasetError, match=r"no frames folder .* exists under"):
        _src(db, "FaceForensics++", tmp_path, compression="c40").build_index()  # the JSON's c40 crops are not there
    alias = _src(db, "FaceForensics++_c40", tmp_path)  # DeepfakeBench's alias: the same JSON at c40
    assert alias.compression == "c40" and alias.json_path.name == "FaceForensics++.json"
    with pytest.raises(DatasetError, match=r"no frames folder .* exists under"):
        alias.build_index()
    with pytest.raises(DatasetError, match=r"has levels \['c23', 'c40'\], not 'raw'"):
        _src(db, "FaceForensics++", tmp_path, compression="raw").build_index()


def test_celebdf_training_videos_in_the_test_list_are_removed(db, tmp_path):
    src = _src(db, "Celeb-DF-v2", tmp_path, val_fraction=0.3, val_straddlers="held_out")
    df = src.build_index()
    split = _split_of(df)
    test = {v for v, s in split.items() if s == "test"}
    assert test == {"Celeb-real/id0_0000", "YouTube-real/00000", "Celeb-synthesis/id0_id1_0000"}
    assert src.leaks["train_videos_in_test_removed"] == 3 and src.leaks["val_entries_ignored"] == 3
    assert any("leak fixed: 3 train videos that are also test videos removed from train" in n for n in src.notes)
    assert len(df) == 14 and src.leaks["straddlers_dropped"] == 0  # 8 reals + 6 fakes, each once
    trainval = df[df.split != "test"]
    assert set(trainval.split) == {"train", "val"}
    # Train never shows a face drawn for val (straddling fakes went to val, not train).
    ids = _identity_sets(trainval)
    drawn = set(trainval[(trainval.split == "val") & (trainval.label == 0)].identity)
    assert drawn and not drawn & ids["train"]
    fake = df.set_index("video_id").loc["Celeb-synthesis/id1_id0_0000"]
    assert fake.source_video == "Celeb-real/id1_0000" and fake.source_identity == "id0"
    # Default (drop): train and val share no identity at all; dropped fakes are counted.
    strict = _src(db, "Celeb-DF-v2", tmp_path, val_fraction=0.3)
    df2 = strict.build_index()
    ids2 = _identity_sets(df2[df2.split != "test"])
    assert not ids2["train"] & ids2.get("val", set())
    assert len(df2) + strict.leaks["straddlers_dropped"] == 14 and strict.leaks["straddlers_dropped"] > 0


def test_dfdc_broken_val_ignored_and_val_carved_by_part(db, tmp_path):
    src = _src(db, "DFDC", tmp_path, val_fraction=0.34)
    df = src.build_index().set_index("video_id")
    assert src.leaks["val_entries_ignored"] == 7 and src.leaks["malformed_or_empty_entries"] == 2
    assert set(df[df.split == "test"].index) == {"test/t1", "test/t2", "test/tf1"}
    trainval = df[df.split != "test"]
    parts = trainval.index.str.split("/").str[0]
    assert (trainval.groupby(parts).split.nunique() == 1).all()  # whole parts
    assert set(trainval.split) == {"train", "val"} and len(trainval) == 7
    # The pairing DeepfakeBench's JSON drops, recovered from the part's metadata.json where it is still there.
    assert df.loc["dfdc_train_part_0/f0a", "source_video"] == "dfdc_train_part_0/r0"
    assert df.loc["dfdc_train_part_5/f5", "source_video"] == ""


@pytest.mark.parametrize(("name", "copies", "key"), [("UADFV", 24, "identity"), ("DeepFakeDetection", 20, "identity")])
def test_copied_datasets_are_split_properly(db, tmp_path, name, copies, key):
    src = _src(db, name, tmp_path, val_fraction=0.2, test_fraction=0.3, val_straddlers="held_out")
    df = src.build_index()
    assert src.leaks["copies_merged"] == copies and df.video_id.is_unique
    assert any(f"leak fixed: {copies} copies" in n for n in src.notes)
    assert set(df.split) == {"train", "val", "test"}
    # Training stays clean: no training video shows a face drawn for a held-out split (held_out straddlers
    # add held-out fakes that share a face with train, by design).
    held_out = set(df[(df.split != "train") & (df.label == 0)].identity)
    train = _identity_sets(df[df.split == "train"])
    assert not train.get("train", set()) & held_out
    everything = _src(db, name, tmp_path, all_test=True).build_index()
    assert set(everything.split) == {"test"} and len(everything) == copies // 2


def test_uadfv_pairs_stay_together(db, tmp_path):
    df = _src(db, "UADFV", tmp_path, val_fraction=0.2, test_fraction=0.3).build_index()
    assert (df.groupby("identity").split.nunique() == 1).all() and len(df) == 12
    assert df.set_index("video_id").loc["fake/0003_fake", "source_video"] == "real/0003"


def test_deeperforensics_reals_follow_their_actor(db, tmp_path):
    src = _src(db, "DeeperForensics-1.0", tmp_path)
    df = src.build_index().set_index("video_id")
    assert src.leaks["copies_merged"] == 12
    reals = df[df.label == 0]
    assert reals.groupby("identity").split.first().to_dict() == {
        "M101": "train", "W102": "train", "M103": "val", "W104": "test", "M999": "train"}
    assert df[df.label == 1].split.to_dict() == {"end_to_end/000_M101": "train", "end_to_end/001_W102": "train",
                                                 "end_to_end/002_M103": "val", "end_to_end/003_W104": "test"}
    assert df.loc["end_to_end/003_W104", "source_video"] == "youtube/003"  # named; not in this index
    assert any("not the FF++ targets" in n for n in src.notes)


def test_dfdcp_val_equal_to_test_is_replaced(db, tmp_path):
    src = _src(db, "DFDCP", tmp_path, val_fraction=0.5, val_straddlers="held_out")
    df = src.build_index().set_index("video_id")
    assert src.leaks["val_entries_ignored"] == 2 and src.leaks["train_videos_in_test_removed"] == 0
    assert set(df[df.split == "test"].index) == {"original_videos/777777_A_001", "method_B/888888_777777_A_001"}
    assert set(df.split) == {"train", "val", "test"}
    assert df.loc["method_B/100002_100001_A_001", "source_video"] == "original_videos/100001_A_001"


def test_generic_json_labels_and_test_leak(tmp_path):
    rgb, jd = tmp_path / "rgb", tmp_path / "json"
    vids = {f"v{i}": f"simswap/ff/frames/00{i}_10{i}" for i in range(4)}
    reals = {f"r{i}": f"FaceForensics++/original_sequences/youtube/c23/frames/00{i}" for i in range(4)}
    M.write_db_json(jd, "simswap_ff", {"simswap_Fake": {"train": vids, "test": {"v3": vids["v3"]}},
                                       "weird_label": {"train": reals, "test": {"r3": reals["r3"]}}}, rgb)
    with pytest.raises(DatasetError, match=r"unknown label 'weird_label' .* dataset.label_dict"):
        DeepfakeBench("db", rgb, tmp_path / "c", json_name="simswap_ff", json_dir=jd).build_index()
    src = DeepfakeBench("db", rgb, tmp_path / "c", json_name="simswap_ff", json_dir=jd, label_dict={"weird_label": 0},
                        val_fraction=0.34)
    df = src.build_index()
    assert src.leaks["train_videos_in_test_removed"] == 2  # v3 and r3 were in train and test
    assert set(df[df.split == "test"].video_id) == {"ff/003_103", "youtube/003"}
    assert set(df.split) == {"train", "val", "test"}
    with pytest.raises(DatasetError, match=r"JSONs there: \['simswap_ff'\]"):
        DeepfakeBench("db", rgb, tmp_path / "c", json_name="nope", json_dir=jd).build_index()


def test_prepare_writes_the_manifest_in_place(db, tmp_path):
    rgb, _ = db
    src = _src(db, "FaceForensics++", tmp_path)
    path = src.prepare()
    m = read_manifest(path)
    assert len(m) == 11 * 4 + 2 and m.video_id.nunique() == 12
    # Frames numbered by their original index, in numeric order (string order would put 1485 before 495).
    assert m[m.video_id == "youtube/003"].frame.tolist() == [0, 495, 990, 1485]
    assert m[m.video_id == "youtube/000"].frame.tolist() == [0, 1485]
    # Crops are DeepfakeBench's own files, not copies; the 5 points come from its 81.
    # crop_path is relative to the dataset folder it lives under, named in crop_root (never ../../..).
    assert set(m.crop_root) == {"root"} and not any(p.startswith("..") for p in m.crop_path)
    assert all((rgb / p).is_file() for p in m.crop_path)
    assert path.parent.parent == tmp_path / "FaceForensics++" and not list(path.parent.parent.rglob("*.png"))
    np.testing.assert_allclose(np.stack(m.landmarks.to_numpy())[:, :].reshape(-1, 5, 2)[0], M.LM5)
    lm81 = np.load(path.parent / "landmarks81.npy")
    assert lm81.shape == (len(m), 81, 2) and (m.landmarks81_row == np.arange(len(m))).all()
    np.testing.assert_array_equal(lm81[5], M.LM81)
    record = json.loads(pq.read_schema(path).metadata[METADATA_KEY])
    contract = record["contract"]
    assert contract["align"] == "arcface" and contract["size"] == 256 and contract["inputs"] == "crops"
    assert record["root"] == os.path.realpath(rgb)
    src = _src(db, "FaceForensics++", tmp_path)
    assert src.crop_contract().align == "arcface"  # what training stores in the checkpoint
    assert set(m.columns) >= {"source_video", "sub_label", "source_path", "compression"}
    assert read_index(path.parent / "index.parquet").video_id.nunique() == 12
    # Training reads it like any manifest.
    arrays = ManifestArrays(path, "train")
    item = FrameDataset(arrays, Pipeline(Spec(size=32, mean=(0.5,) * 3, std=(0.5,) * 3)))[0]
    assert tuple(item["image"].shape) == (3, 32, 32)
    # Up to date: not rewritten. Another setting or a changed JSON: rewritten.
    stamp = path.stat().st_mtime_ns
    assert _src(db, "FaceForensics++", tmp_path).prepare() == path and path.stat().st_mtime_ns == stamp
    fewer = _src(db, "FaceForensics++", tmp_path, frames=2).prepare()
    assert fewer != path and read_manifest(fewer).groupby("video_id").size().max() == 2
    assert path.stat().st_mtime_ns == stamp  # both selections live side by side
    json_path = db[1] / "FaceForensics++.json"
    os.utime(json_path, ns=(json_path.stat().st_atime_ns, json_path.stat().st_mtime_ns + 10**9))
    assert _src(db, "FaceForensics++", tmp_path).prepare() == path and path.stat().st_mtime_ns != stamp


def test_dfd_extract_defers_to_prepare(db, tmp_path):
    rgb, json_dir = db
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dfd-extract")), "dataset=deepfakebench", f"dataset.root={rgb}",
         f"dataset.json_dir={json_dir}", "dataset.json_name=UADFV", f"paths.cache_dir={tmp_path}"],
        cwd=tmp_path, env={**os.environ, "COLUMNS": "200"}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "crops used in place" in proc.stdout and "leak fixed: 24 copies" in proc.stdout
    (manifest,) = tmp_path.glob("deepfakebench_UADFV_c23-*/prepared-*/manifest.parquet")
    assert len(read_manifest(manifest)) == 12 * 4


# --- DF40 ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def df40(tmp_path_factory):
    return M.make_df40(tmp_path_factory.mktemp("df40"))


def _df40(p, tmp_path, **kw) -> DF40:
    kw.setdefault("real_roots", {"ff": p["ff"], "cdf": p["cdf"]})
    return DF40("df40", p["root"], tmp_path / "c", train_root=p["train_root"], **kw)


def test_df40_methods_types_domains_and_empty_folders(df40, tmp_path):
    src = _df40(df40, tmp_path, val_fraction=0.34)
    df = src.build_index().set_index("video_id")
    fakes = df[df.label == 1]
    assert fakes[fakes.split == "test"].method.value_counts().to_dict() == {
        "SimSwap": 3, "StyleGAN2": 2, "InSwapper": 1, "DaGAN": 1, "e4e": 1}
    assert (fakes.split != "test").sum() == 8  # the training tree: 6 SimSwap + 2 InSwapper
    assert df.loc["DF40/danet/ff/005_004", "type"] == "FR" and df.loc["DF40/e4e/real/b1", "label"] == 0
    # Each fake's kind as the index's method_type, in DF40's own words (FS/FR/EFS/FE); reals have none.
    assert fakes.groupby("method").method_type.unique().map(list).to_dict() == {
        "SimSwap": ["face_swap"], "InSwapper": ["face_swap"], "DaGAN": ["reenactment"],
        "StyleGAN2": ["entire_face_synthesis"], "e4e": ["face_editing"]}
    assert set(df[df.label == 0].method_type) == {""}
    assert df.loc["DF40/simswap/cdf/id0_id1_0000", "domain"] == "cdf"
    assert sorted(src.empty) == ["ddim/ff", "ddim/ff/frames/empty_video", "sd2.1/ff"]
    # Reals: FF++ by its official split, Celeb-DF's test-list reals, e4e's own.
    reals = df[df.label == 0]
    assert reals.method.value_counts().to_dict() == {"real-ff": 10, "real-cdf": 1, "real-own": 1}
    assert reals.loc["real-ff/004", "split"] == "test" and reals.loc["real-ff/001", "split"] == "val"
    # Val carved from training by FF++ pair: a_b, b_a and the two reals together, no pair in two splits.
    trainval = df[(df.split != "test") & (df.domain == "ff")]
    assert (trainval.groupby("identity").split.nunique() == 1).all()
    assert (trainval[trainval.label == 1].split == "val").any()


def test_df40_selection_by_type_method_alias_and_domain(df40, tmp_path):
    fs = _df40(df40, tmp_path, types=["FS"], domains=["ff"]).build_index()
    assert set(fs[fs.label == 1].method) == {"SimSwap", "InSwapper"} and set(fs.domain) == {"ff"}
    one = _df40(df40, tmp_path, methods=["danet"], domains=["ff"], real_roots={"ff": df40["ff"]}).build_index()
    assert set(one[one.label == 1].method) == {"DaGAN"} and canonical_method("DaGAN") == canonical_method("danet")
    own = _df40(df40, tmp_path, domains=["own"]).build_index()
    assert set(own.method) == {"e4e", "real-own"} and set(own.split) == {"test"}
    with pytest.raises(DatasetError, match="unknown DF40 method"):
        DF40("df40", df40["root"], tmp_path, methods=["nope"])
    with pytest.raises(DatasetError, match=r"unknown type\(s\) \['XX'\]"):
        DF40("df40", df40["root"], tmp_path, types=["XX"])
    with pytest.raises(DatasetError, match=r"real_roots.ff=<folder>"):
        _df40(df40, tmp_path, domains=["ff"], real_roots={"ff": tmp_path / "nowhere"}).build_index()
    alone = _df40(df40, tmp_path, domains=["ff"], real_roots={"ff": None})
    assert (alone.build_index().label == 1).all() and any("no reals for the ff domain" in n for n in alone.notes)


def test_df40_manifest_and_yaml(df40, tmp_path):
    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("index", overrides=[
            "dataset=df40", f"dataset.root={df40['root']}", f"dataset.train_root={df40['train_root']}",
            f"dataset.real_roots.ff={df40['ff']}", f"dataset.real_roots.cdf={df40['cdf']}",
            "dataset.types=[EFS]", "dataset.domains=[ff]", f"paths.cache_dir={tmp_path}"])
    src = instantiate(cfg.dataset)
    m = read_manifest(src.prepare())
    efs = m[m.method == "StyleGAN2"]
    # EFS images: no frames/ level, no landmark files (NaN, sidecar row -1), numbered from their names.
    assert sorted(efs.frame.unique()) == [1, 417] and (efs.landmarks81_row == -1).all()
    assert np.isnan(np.stack(efs.landmarks.to_numpy())).all()
    assert not np.isnan(np.stack(m[m.method == "real-ff"].landmarks.to_numpy())).any()
    from dfd.store.schema import method_types

    assert method_types(src.manifest_path, "test") == {"StyleGAN2": "entire_face_synthesis"}  # carried through


@pytest.mark.slow
def test_train_on_deepfakebench_ffpp_and_test_cross_dataset(db, tmp_path):
    """A real Lightning run reads DeepfakeBench's crops in place: val from FF++'s val, two test sets."""
    from dfd.engine.train import train
    from tests.conftest import compose as compose_run

    rgb, json_dir = db
    cfg = compose_run("train", runtime=True, overrides=[
        f"paths.run_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}", "data.num_workers=0",
        "model=tiny", "logger=none", "debug=fast_dev_run", "data.batch_size=16",
        "dataset=deepfakebench", f"dataset.root={rgb}", f"dataset.json_dir={json_dir}",
        "+dataset@test_sets.cdf=deepfakebench", f"test_sets.cdf.root={rgb}", f"test_sets.cdf.json_dir={json_dir}",
        "test_sets.cdf.json_name=Celeb-DF-v2", "test_sets.cdf.val_straddlers=held_out"])
    res = train(cfg)
    ff, cdf = res["test"]["deepfakebench_FaceForensics++"], res["test"]["cdf"]
    assert ff["frame"]["n"] == 4 * 4 and cdf["frame"]["n"] == 3 * 4  # every test crop, once
    assert 0.0 <= ff["frame"]["auc"] <= 1.0 and 0.0 <= cdf["video"]["auc"] <= 1.0
