"""Dataset sources: official layouts -> video index, with exact counts, labels, splits and identity rules."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dfd.errors import DatasetError
from dfd.sources.base import assign_splits, draw, index_counts
from dfd.sources.celebdf import CelebDF
from dfd.sources.csv import CsvTable
from dfd.sources.ffpp import FFPP
from dfd.sources.folder import Folder
from dfd.sources.redface import RedFace
from dfd.sources.wilddeepfake import WildDeepfake
from tests import layouts as L


def _ids_by_split(df: pd.DataFrame, cols=("identity", "source_identity")) -> dict[str, set[str]]:
    return {s: {i for c in cols for i in g[c] if i} for s, g in df.groupby("split")}


def _assert_disjoint(by_split: dict[str, set[str]]) -> None:
    splits = sorted(by_split)
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            assert not by_split[a] & by_split[b], f"identities shared by {a} and {b}: {by_split[a] & by_split[b]}"


# --- shared helpers ---------------------------------------------------------------------------------------
def test_assign_splits_is_deterministic_whole_groups_and_keeps_train():
    groups = [f"g{i}" for i in range(50)]
    a = assign_splits(groups, 0.2, 0.1, salt="x")
    assert a == assign_splits(list(reversed(groups)), 0.2, 0.1, salt="x")
    # Each group by its own draw: test below 0.1, val below 0.3, train above.
    assert all(s == ("test" if draw("x", g) < 0.1 else "val" if draw("x", g) < 0.3 else "train") for g, s in a.items())
    # Adding or removing groups moves no other group.
    more = assign_splits([*groups, "new1", "new2"], 0.2, 0.1, salt="x")
    assert {g: more[g] for g in groups} == a
    assert assign_splits(groups[5:], 0.2, 0.1, salt="x") == {g: a[g] for g in groups[5:]}
    assert assign_splits(["only"], 0.5, 0.4) == {"only": "train"}
    # Where the draws leave a carved split empty, the nearest train group fills it; train keeps one group.
    two = assign_splits(["a", "b"], 0.01, 0.01, salt="x")
    assert sorted(two.values()) == ["test", "train"]
    assert "train" in assign_splits(["a", "b", "c"], 0.49, 0.5, salt="x").values()
    with pytest.raises(DatasetError, match="sum below 1"):
        assign_splits(groups, 0.6, 0.5)


# --- FaceForensics++ --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ffpp_root(tmp_path_factory):
    return L.make_ffpp(tmp_path_factory.mktemp("ffpp") / "FaceForensics++", with_dfd=True)


def test_ffpp_official_splits_counts_and_identities(ffpp_root, tmp_path):
    df = FFPP("ffpp", ffpp_root, tmp_path).build_index()
    n_pairs = {s: len(p) for s, p in L.FFPP_PAIRS.items()}  # 6 / 2 / 2
    for split, n in n_pairs.items():
        part = df[df.split == split]
        assert (part.label == 0).sum() == 2 * n  # every id of the split's pairs
        for method in L.FFPP_PAPER_METHODS:
            assert ((part.label == 1) & (part.method == method)).sum() == 2 * n  # a_b and b_a
    assert len(df) == 20 + 4 * 20
    assert {"Deepfakes/000_003", "Face2Face/000_003", "Deepfakes/003_000", "youtube/000"} <= set(df.video_id)
    assert df.video_id.is_unique
    assert set(df.kind) == {"video"} and set(df.compression) == {"c23"}
    assert not df.path.str.contains("masks|models").any()
    assert all((ffpp_root / p).is_file() for p in df.path)
    row = df.set_index("video_id").loc["Deepfakes/071_054"]
    assert (row.split, row.identity, row.source_identity, row.label) == ("train", "071", "054", 1)
    kinds = df.groupby("method").method_type.unique().map(list).to_dict()  # the paper's two kinds; reals: none
    assert kinds == {"Deepfakes": ["face_swap"], "FaceSwap": ["face_swap"], "Face2Face": ["reenactment"],
                     "NeuralTextures": ["reenactment"], "youtube": [""]}
    _assert_disjoint(_ids_by_split(df))


def test_ffpp_lossless_alias_and_extra_methods(tmp_path):
    root = L.make_ffpp(tmp_path / "ff", methods=("FaceShifter",), compression="raw",
                       pairs={"train": [["001", "002"]], "val": [["003", "004"]], "test": [["005", "006"]]})
    df = FFPP("ffpp", root, tmp_path / "c", methods=["FaceShifter"], compression="c0").build_index()
    assert len(df) == 6 + 6 and set(df.compression) == {"raw"}
    assert set(df[df.label == 1].method) == {"FaceShifter"}


def test_ffpp_extracted_frames_as_media(tmp_path):
    pairs = {"train": [["001", "002"]], "val": [["003", "004"]], "test": [["005", "006"]]}
    root = L.make_ffpp(tmp_path / "ff", methods=("Deepfakes",), pairs=pairs, frames=2)
    df = FFPP("ffpp", root, tmp_path, methods=["Deepfakes"], media="images").build_index().set_index("video_id")
    assert len(df) == 12 and set(df.kind) == {"frames"}
    assert df.loc["Deepfakes/003_004", "path"] == "manipulated_sequences/Deepfakes/c23/images/003_004"
    assert sorted(p.name for p in (root / df.loc["youtube/001", "path"]).iterdir()) == ["0000.png", "0001.png"]


def test_ffpp_deepfakedetection_is_split_by_actor(ffpp_root, tmp_path):
    src = FFPP("ffpp", ffpp_root, tmp_path, methods=["DeepFakeDetection"], dfd_val_fraction=0.25,
               dfd_test_fraction=0.25)
    df = src.build_index()
    reals, fakes = df[df.label == 0], df[df.label == 1]
    assert len(reals) == len(L.FFPP_DFD_ACTORS) * len(L.FFPP_DFD_SCENES)
    assert set(reals.method) == {"actors"} and set(fakes.method) == {"DeepFakeDetection"}
    assert len(fakes) + len(src.dropped) == len(L.FFPP_DFD_FAKES) and src.dropped
    assert reals.groupby("identity").split.nunique().max() == 1  # an actor lives in one split
    # Every actor by its own draw (salted): train, val and test all hold actors.
    per_split = reals.groupby("split").identity.nunique().to_dict()
    assert set(per_split) == {"train", "val", "test"} and sum(per_split.values()) == len(L.FFPP_DFD_ACTORS)
    _assert_disjoint(_ids_by_split(df))
    # Deterministic: the same carve every time.
    again = FFPP("ffpp", ffpp_root, tmp_path, methods=["DeepFakeDetection"], dfd_val_fraction=0.25,
                 dfd_test_fraction=0.25).build_index()
    pd.testing.assert_frame_equal(df, again)


def test_ffpp_errors_name_what_and_where(ffpp_root, tmp_path):
    with pytest.raises(DatasetError, match=r"official split file .*splits_elsewhere/train\.json not found"):
        FFPP("ffpp", ffpp_root, tmp_path, splits_dir=tmp_path / "splits_elsewhere").build_index()
    with pytest.raises(DatasetError, match=r"available there: \['c23'\]; set dataset.compression"):
        FFPP("ffpp", ffpp_root, tmp_path, compression="c40").build_index()
    with pytest.raises(DatasetError, match="not a folder"):
        FFPP("ffpp", tmp_path / "nowhere", tmp_path).build_index()
    with pytest.raises(DatasetError, match="no original_sequences"):
        FFPP("ffpp", tmp_path, tmp_path).build_index()
    with pytest.raises(DatasetError, match="unknown method"):
        FFPP("ffpp", ffpp_root, tmp_path, methods=["StyleGAN"])
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    for split, pairs in L.FFPP_PAIRS.items():
        (leaky / f"{split}.json").write_text(json.dumps(pairs + ([["071", "999"]] if split == "test" else [])))
    with pytest.raises(DatasetError, match="id 071 is in both train.json and test.json"):
        FFPP("ffpp", ffpp_root, tmp_path, splits_dir=leaky).build_index()


# --- Celeb-DF ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("videos_level", "youtube"), [(False, "YouTube-real"), (True, "Youtube-real")])
def test_celebdf_official_test_list_and_identity_disjoint_val(tmp_path, videos_level, youtube):
    root = L.make_celebdf(tmp_path / "Celeb-DF-v2", videos_level=videos_level, youtube_folder=youtube)
    assert not (root / "List_of_testing_videos.txt").read_text().endswith("\n")
    src = CelebDF("celebdf_v2", root, tmp_path / "c", val_fraction=0.5)
    df = src.build_index()
    test = df[df.split == "test"].set_index("video_id")
    assert sorted(test.index) == sorted(
        ["Celeb-real/id0_0000", "Celeb-real/id1_0001", "YouTube-real/00170",
         "Celeb-synthesis/id0_id1_0000", "Celeb-synthesis/id1_id2_0000", "Celeb-synthesis/id4_id0_0000"]
    )
    # The file's "1 = real" is converted once: reals are 0 here.
    assert test.loc["YouTube-real/00170", "label"] == 0 and test.loc["Celeb-synthesis/id4_id0_0000", "label"] == 1
    n_total = len(L.CELEBDF_IDS) * L.CELEBDF_REAL_PER_ID + len(L.CELEBDF_YOUTUBE) + len(L.CELEBDF_SYNTH)
    assert len(df) + len(src.dropped) == n_total == 29
    assert (df.split == "val").any() and (df.split == "train").any()
    assert df[df.label == 1].identity.str.match(r"^id\d+$").all()  # target id
    fake = df.set_index("video_id").loc["Celeb-synthesis/id4_id0_0000"]
    assert (fake.identity, fake.source_identity) == ("id4", "id0")
    # No face of a val video appears in train (both identities of a synthesis video count).
    by = _ids_by_split(df)
    assert not by["val"] & by["train"]
    assert all((root / p).is_file() for p in df.path)


def test_celebdf_can_keep_test_identities_out_of_train(tmp_path):
    root = L.make_celebdf(tmp_path / "cd")
    df = CelebDF("celebdf_v2", root, tmp_path / "c", exclude_test_identities=True).build_index()
    by = _ids_by_split(df)
    assert not by["test"] & (by["train"] | by.get("val", set()))


def test_celebdf_straddlers_to_val_keep_train_clean(tmp_path):
    root = L.make_celebdf(tmp_path / "cd")
    strict = CelebDF("celebdf_v2", root, tmp_path, val_fraction=0.5)
    loose = CelebDF("celebdf_v2", root, tmp_path, val_fraction=0.5, val_straddlers="val")
    a, b = strict.build_index(), loose.build_index()
    assert strict.dropped and not loose.dropped and len(b) == len(a) + len(strict.dropped) == 29
    assert set(b[b.video_id.isin(strict.dropped)].split) == {"val"}
    # Train never shows a val celebrity; val may show a train face (the straddlers' other identity).
    val_ids = {i for i in b[b.split == "val"].identity if i.startswith("id")} - set(a[a.split == "train"].identity)
    train = b[b.split == "train"]
    assert val_ids and not val_ids & (set(train.identity) | set(train.source_identity))


def test_celebdf_bad_list_lines_are_named(tmp_path):
    root = L.make_celebdf(tmp_path / "cd")
    lst = root / "List_of_testing_videos.txt"
    lst.write_text("1 YouTube-real/00170.mp4\n1 Celeb-synthesis/id0_id1_0000.mp4")
    with pytest.raises(DatasetError, match=r"List_of_testing_videos.txt:2: label 1 contradicts folder"):
        CelebDF("celebdf_v2", root, tmp_path).build_index()
    lst.write_text("1 YouTube-real/99999.mp4")
    with pytest.raises(DatasetError, match="1 video.* missing"):
        CelebDF("celebdf_v2", root, tmp_path).build_index()
    lst.unlink()
    with pytest.raises(DatasetError, match="official test list .* not found"):
        CelebDF("celebdf_v2", root, tmp_path).build_index()


# --- WildDeepfake -----------------------------------------------------------------------------------------
def test_wilddeepfake_archives_listed_not_extracted(tmp_path):
    root = L.make_wilddeepfake(tmp_path / "wdf", spaces=True, corrupt=True)
    src = WildDeepfake("wilddeepfake", root, tmp_path / "c", val_fraction=0.34)
    df = src.build_index().set_index("video_id")
    n = {k: sum(len(s) for s in v.values()) for k, v in L.WILDDEEPFAKE_LAYOUT.items()}
    assert len(df) == sum(n.values()) == 14
    assert ((df.split == "test") & (df.label == 0)).sum() == n["real_test"]
    assert ((df.split == "test") & (df.label == 1)).sum() == n["fake_test"]
    assert ((df.split != "test") & (df.label == 1)).sum() == n["fake_train"]
    assert set(df.split) == {"train", "val", "test"}
    row = df.loc["fake_test/12/3"]
    assert (row.kind, row.member, row.path) == ("archive", "./12/fake/3", "deepfake_in_the_wild/fake test/12.tar.gz")
    assert {"real_train/1/0", "fake_train/1/0", "real_train/7/0"} <= set(df.index)  # same seq id, other archive
    assert (df.n_frames == len(L.WILDDEEPFAKE_FRAMES)).all()
    assert df.groupby("identity").split.nunique().max() == 1  # val carved by whole archive
    assert [s[0] for s in src.skipped] == ["deepfake_in_the_wild/fake train/99.tar.gz"]
    assert src.faces_are_cropped
    assert not any(p.is_dir() for p in (root / "deepfake_in_the_wild" / "fake test").iterdir())


def test_wilddeepfake_extracted_folders_match_archives(tmp_path):
    a = WildDeepfake("w", L.make_wilddeepfake(tmp_path / "a"), tmp_path, val_fraction=0.34).build_index()
    root = L.make_wilddeepfake(tmp_path / "b", extracted=True)
    b = WildDeepfake("w", root, tmp_path, val_fraction=0.34).build_index()
    assert list(a.video_id) == list(b.video_id) and list(a.split) == list(b.split)
    assert set(b.kind) == {"frames"}
    assert all((root / p).is_dir() for p in b.path)
    assert b.set_index("video_id").loc["fake_test/12/3", "path"] == "deepfake_in_the_wild/fake_test/12/fake/3"


def test_wilddeepfake_wrong_root(tmp_path):
    with pytest.raises(DatasetError, match="no real_train/fake_train/real_test/fake_test folders"):
        WildDeepfake("w", tmp_path, tmp_path).build_index()


# --- RedFace ----------------------------------------------------------------------------------------------
def test_redface_discovers_real_and_fake_folders(tmp_path):
    root = L.make_redface(tmp_path / "RedFace")
    df = RedFace("redface", root, tmp_path / "c").build_index()
    assert len(df) == 22 and (df.label == 0).sum() == 8
    fakes = df[df.label == 1].method.value_counts().to_dict()
    assert fakes == {"PlatformA": 4, "PlatformB": 5, "face_swap/PlatformA": 2, "reenactment/PlatformC": 3}
    assert set(df[df.label == 0].method) == {"real"}
    assert set(df.kind) == {"image", "video"} and set(df.split) == {"train", "val", "test"}


def test_redface_mapping_overrides_discovery(tmp_path):
    root = L.make_redface(tmp_path / "RedFace", layout="unlabelled")
    mapping = {"real_dirs": ["batch_a"], "fake_dirs": ["batch_b"], "method_from": "parent"}
    df = RedFace("redface", root, tmp_path / "c", mapping=mapping).build_index()
    assert (df.label == 0).sum() == 3 and (df.label == 1).sum() == 3
    assert set(df[df.label == 1].method) == {"batch_b"}
    with pytest.raises(DatasetError, match="'batch_a' matches both"):
        RedFace("redface", root, tmp_path, mapping={"real_dirs": ["batch_a"], "fake_dirs": ["batch_*"]}).build_index()
    with pytest.raises(DatasetError, match="dataset.mapping takes"):
        RedFace("redface", root, tmp_path, mapping={"reals": ["x"]})


def test_redface_undecidable_layout_prints_the_tree(tmp_path):
    root = L.make_redface(tmp_path / "RedFace", layout="unlabelled")
    with pytest.raises(DatasetError, match="cannot tell real from fake") as e:
        RedFace("redface", root, tmp_path).build_index()
    assert "  batch_a/ (3 media, 0 folders)" in str(e.value)


# --- folder and csv ---------------------------------------------------------------------------------------
def test_folder_layout_with_frames_folder_and_carve(tmp_path):
    df = Folder("folder", L.make_folder(tmp_path / "data"), tmp_path / "c").build_index().set_index("video_id")
    assert len(df) == 12 and (df.label == 0).sum() == 6
    assert df.loc["real/talk", "kind"] == "frames" and df.loc["real/clip", "kind"] == "video"
    assert df.loc["fake/gan/img0", "method"] == "gan" and df.loc["fake/f", "method"] == "fake"
    assert df.groupby("split").label.nunique().to_dict() == {"test": 2, "train": 2, "val": 2}


def test_folder_sub_folders_name_methods_unless_turned_off(tmp_path):
    root = L.make_folder(tmp_path / "data")
    L._video(root / "real" / "youtube" / "v.mp4", b"x")
    src = Folder("folder", root, tmp_path / "c")
    df = src.build_index().set_index("video_id")
    assert df.loc["real/youtube/v", "method"] == "youtube" and df.loc["real/img0", "method"] == "real"
    assert "sub-folder under real/ and fake/ names" in src.index_notes()[0]
    plain = Folder("folder", root, tmp_path / "c", methods_from_folders=False)
    assert set(plain.build_index()["method"]) == {"real", "fake"}
    assert "methods_from_folders=false" in plain.index_notes()[0]


def test_folder_split_folders_kept_and_val_carved_from_train(tmp_path):
    df = Folder("folder", L.make_folder(tmp_path / "data", splits=True), tmp_path / "c").build_index()
    assert (df.split == "test").sum() == 12 and df[df.split == "test"].video_id.str.startswith("test/").all()
    assert df[df.split == "val"].video_id.str.startswith("train/").all() and (df.split == "val").sum() == 2


def test_csv_and_parquet_tables(tmp_path):
    df = CsvTable("csv", L.make_csv(tmp_path / "a"), tmp_path / "c").build_index()
    assert list(df.label) == [1, 0, 1, 0, 1, 0] and list(df.split) == ["train", "val", "test"] * 2
    assert list(df.kind) == ["video"] * 3 + ["image"] * 3 and df.video_id[0] == "media/0"
    table = L.make_csv(tmp_path / "b", with_split=False, fmt="parquet") / "labels.parquet"
    df = CsvTable("csv", None, tmp_path / "c", table=table, val_fraction=0.34, test_fraction=0.34).build_index()
    assert set(df.split) == {"train", "val", "test"} and df.path[0] == "media/0.mp4"


def test_csv_errors_name_the_row(tmp_path):
    root = L.make_csv(tmp_path / "a")
    table = root / "labels.csv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join([*lines, "media/0.mp4,maybe,train"]))
    with pytest.raises(DatasetError, match=r"labels.csv:8: label 'maybe' is not 0/1"):
        CsvTable("csv", root, tmp_path).build_index()
    table.write_text("\n".join([*lines, "media/missing.mp4,1,train"]))
    with pytest.raises(DatasetError, match=r"labels.csv:8: 'media/missing.mp4' not found"):
        CsvTable("csv", root, tmp_path).build_index()
    table.write_text("\n".join([*lines, "media/0.mp4,1,train"]))
    with pytest.raises(DatasetError, match=r"labels.csv:8: video_id 'media/0' repeats .*labels.csv:2"):
        CsvTable("csv", root, tmp_path).build_index()
    table.write_text("file,label\nx,1\n")
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['path'\]"):
        CsvTable("csv", root, tmp_path).build_index()


def test_index_counts_orders_splits():
    df = pd.DataFrame({"split": ["test", "train", "val", "train"], "label": [1, 0, 0, 0], "method": ["m", "r", "r", "r"]})
    counts = index_counts(df)
    assert list(counts.split) == ["train", "val", "test"] and list(counts.videos) == [2, 1, 1]


def test_method_type_is_an_optional_index_column_with_a_closed_vocabulary():
    from dfd.store.schema import METHOD_TYPES, SchemaError, validate_index

    rows = {"video_id": ["r", "f"], "label": [0, 1], "split": ["train", "train"], "method": ["real", "Deepfakes"],
            "identity": ["", ""], "path": ["r.mp4", "f.mp4"], "kind": ["video", "video"]}
    assert "method_type" not in validate_index(pd.DataFrame(rows)).columns  # optional
    ok = validate_index(pd.DataFrame({**rows, "method_type": ["", "face_swap"]}))
    assert ok["method_type"].tolist() == ["", "face_swap"] and "face_swap" in METHOD_TYPES
    with pytest.raises(SchemaError, match="method_type must be one of"):
        validate_index(pd.DataFrame({**rows, "method_type": ["", "faceswap"]}))
