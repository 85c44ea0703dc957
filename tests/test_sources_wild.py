"""In-the-wild and 2024-25 sources: exact counts per split, label, method and method_type on fixtures in the
distributed layouts (tests/layouts_wild.py), with each dataset's quirks; AV-Deepfake1M's frame labels down to
the manifest; RedFace's folder levels; method_type of the older sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dfd.cli._hydra import config_dir, register_resolvers
from dfd.errors import DatasetError
from dfd.sources.av_deepfake1m import AVDeepfake1M
from dfd.sources.celebdf_pp import CelebDFPP
from dfd.sources.deepfake_eval_2024 import DeepfakeEval2024
from dfd.sources.deepspeak import DeepSpeak
from dfd.sources.diff import DiFF
from dfd.sources.fakeavceleb import FakeAVCeleb
from dfd.sources.kodf import KoDF
from dfd.sources.redface import RedFace
from dfd.store.schema import METHOD_TYPES, read_manifest
from tests import layouts as L
from tests import layouts_wild as W


def _counts(df: pd.DataFrame, *cols: str) -> dict:
    return {k if isinstance(k, tuple) else (k,): int(v) for k, v in df.groupby(list(cols)).size().items()}


def _official(df: pd.DataFrame) -> pd.Series:
    # val is carved from the official train split: together they are what the dataset calls train.
    return df.split.replace({"val": "train"})


def _note(src, text: str) -> str:
    hits = [n for n in src.index_notes() if text in n]
    assert len(hits) == 1, (text, src.index_notes())
    return hits[0]


def _extract(index: pd.DataFrame, root: Path, cache: Path, **kw):
    from dfd.extract.config import ExtractConfig
    from dfd.extract.run import extract_faces

    cfg = ExtractConfig.create(**{"frames": 1, "size": 16, "workers": 1, "landmarks_for_crops": False, **kw})
    return extract_faces(index, root, cache, cfg, faces_are_cropped=kw.get("inputs", "crops") == "crops",
                         progress=False)


# --- Deepfake-Eval-2024 ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def de_root(tmp_path_factory) -> Path:
    return W.make_deepfake_eval_2024(tmp_path_factory.mktemp("de") / "Deepfake-Eval-2024")


def test_deepfake_eval_2024_drops_excel_artefacts_and_bad_images_and_labels_videos_by_pixels(de_root, tmp_path):
    src = DeepfakeEval2024("de", de_root, tmp_path)
    df = src.build_index()
    official = df.assign(split=_official(df))
    for media, want in (("image", W.DE_IMAGE_COUNTS), ("video", W.DE_VIDEO_COUNTS)):
        part = official[official.media == media]
        assert _counts(part, "split", "label") == want, media
    assert len(df) == sum(W.DE_IMAGE_COUNTS.values()) + sum(W.DE_VIDEO_COUNTS.values()) == 17
    assert "2 row(s) dropped, Excel artefact file names (#NAME?)" in _note(src, "#NAME?")
    assert W.DE_TRUNCATED in _note(src, "images that do not decode")
    assert "image-data/gone.png" in _note(src, "files missing on disk")
    assert "4 'Date' cells are Excel's '########'" in _note(src, "########")
    assert "video-metadata-publish-with-links.csv" in _note(src, "videos: 8 kept of 8")
    assert "carved from the official Train split" in _note(src, "no official val split")
    assert len(src.skipped) == 4
    by_id = df.set_index("video_id")
    # The Video Ground Truth decides, never "fake if either track is": real pixels + cloned voice is real.
    assert by_id.loc["video-data/v3", "label"] == 0 and by_id.loc["video-data/v3", "audio_label"] == "Fake"
    assert by_id.loc["video-data/v2", "label"] == 1 and by_id.loc["video-data/v2", "audio_label"] == "Real"
    # Val is carved by source post: two videos of one URL share a split.
    assert by_id.loc["video-data/0DOGSzwaUcyt9m0E4thYW8DCvRs", "split"] == by_id.loc["video-data/v2", "split"]
    assert set(df.split) == {"train", "val", "test"} and set(df.kind) == {"image", "video"}
    assert set(df.method_type) == {""}  # the release does not say how a fake was made


def test_deepfake_eval_2024_media_choice_has_its_own_cache(de_root, tmp_path):
    srcs = {m: _compose("deepfake_eval_2024", [f"dataset.root={de_root}", f"paths.cache_dir={tmp_path}",
                                                f"dataset.media={m}"]) for m in ("images", "videos")}
    assert srcs["images"].cache_dir != srcs["videos"].cache_dir
    assert set(srcs["images"].build_index().kind) == {"image"} and len(srcs["videos"].build_index()) == 8
    with pytest.raises(DatasetError, match=r"dataset.media must be one of both\|images\|videos"):
        DeepfakeEval2024("de", de_root, tmp_path, media="audio")


# --- KoDF ----------------------------------------------------------------------------------------------------------
def test_kodf_tables_in_korean_families_kept_together_and_validation_as_test(tmp_path):
    src = KoDF("kodf", W.make_kodf(tmp_path / "KoDF"), tmp_path / "c")
    df = src.build_index()
    official = df.assign(split=_official(df))
    assert _counts(official, "split", "label") == {("train", 0): 6, ("train", 1): 7, ("test", 0): 2, ("test", 1): 3}
    fakes = df[df.label == 1]
    assert _counts(fakes, "method") == {("audio-driven",): 2, ("dffs",): 2, ("dfl",): 2, ("fo",): 3, ("fsgan",): 1}
    assert _counts(fakes, "method_type") == {("",): 2, ("face_swap",): 5, ("reenactment",): 3}
    by_id = df.set_index("video_id")
    assert by_id.loc["f05", "source_video"] == "r04" and "r04" in by_id.index  # ".mp4" stripped from ids
    for vid, row in fakes.set_index("video_id").iterrows():  # a fake and the original it was made from
        assert by_id.loc[row.source_video, "split"] == row.split, vid
    assert set(df[df.split == "test"].video_id) == {"r10", "r11", "f10", "f11", "f12"}  # the CP949 tables
    assert "f99" in _note(src, "not found below the root") and "1 .mp4 file(s)" in _note(src, "no metadata table")


# --- FakeAVCeleb ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def favc_root(tmp_path_factory) -> Path:
    return W.make_fakeavceleb(tmp_path_factory.mktemp("favc") / "FakeAVCeleb_v1.2")


def test_fakeavceleb_ten_field_rows_audio_only_reals_and_relative_path_keys(favc_root, tmp_path):
    src = FakeAVCeleb("favc", favc_root, tmp_path, all_test=True)
    df = src.build_index()
    assert _counts(df, "label", "method") == {
        (0, "RV-FA"): 2, (0, "RV-RA"): 4, (1, "FV-FA-faceswap-wav2lip"): 1, (1, "FV-FA-fsgan-wav2lip"): 1,
        (1, "FV-FA-wav2lip"): 1, (1, "FV-RA-faceswap"): 1, (1, "FV-RA-fsgan"): 1, (1, "FV-RA-wav2lip"): 1}
    assert _counts(df[df.label == 1], "method_type") == {("face_swap",): 4, ("lip_sync",): 2}
    assert set(df.split) == {"test"} and df.video_id.is_unique
    names = df.path.map(lambda p: Path(p).name)
    assert names.duplicated(keep=False).sum() == 5  # 00109.mp4 x3, 00109_wavtolip.mp4 x2: keyed by path
    assert "RealVideo-RealAudio/Asian (East)/women/id00077/00020" in set(df.video_id)
    assert "2 video(s) kept as real" in _note(src, "RealVideo-FakeAudio")
    assert W.FAVC_MISSING in _note(src, "not on disk")
    excl = FakeAVCeleb("favc", favc_root, tmp_path, all_test=True, audio_only="exclude")
    df2 = excl.build_index()
    assert (df2.label == 0).sum() == 4 and "2 video(s) excluded" in _note(excl, "RealVideo-FakeAudio")
    carved = FakeAVCeleb("favc", favc_root, tmp_path, all_test=False).build_index()
    ids = {s: set(g.identity) | set(g.target1[g.target1.str.startswith("id")]) for s, g in carved.groupby("split")}
    for a in ids:
        for b in ids:
            assert a == b or not ids[a] & ids[b], (a, b)


def test_fakeavceleb_renamed_race_folders_resolve(favc_root, tmp_path):
    root = L.copy_tree(favc_root, tmp_path / "favc")
    for cat in W.FAVC_TYPES.values():
        for race in (root / cat).iterdir():
            race.rename(race.with_name(race.name.replace(" (", "_").replace(")", "")))
    df = FakeAVCeleb("favc", root, tmp_path / "c", all_test=True).build_index()
    assert len(df) == 12 and "RealVideo-RealAudio/Asian_East/women/id00077/00020" in set(df.video_id)


# --- Celeb-DF++ -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cdfpp_root(tmp_path_factory) -> Path:
    return W.make_celebdf_pp(tmp_path_factory.mktemp("cdfpp") / "Celeb-DF++")


def test_celebdf_pp_protocols_and_method_types(cdfpp_root, tmp_path):
    gf = CelebDFPP("cdfpp", cdfpp_root, tmp_path, protocol="gf")
    df = gf.build_index()
    test = df[df.split == "test"]
    assert _counts(test, "label", "method") == {(0, "celeb-real"): 1, (0, "youtube-real"): 1, (1, "BlendFace"): 1,
                                                (1, "Celeb-DF"): 1, (1, "LIA"): 1, (1, "SadTalker"): 1}
    # The folder on disk is Celeb-DF-v2, the list says Celeb-DF: one method, read under the later name.
    assert "Celeb-synthesis/FaceSwap/Celeb-DF-v2/id0_id1_0000" in set(test.video_id)
    assert len(df) + len(gf.dropped) == 15 and set(df.split) == {"train", "val", "test"}
    assert _counts(df[df.label == 1], "scenario", "method_type") == {
        ("FaceReenact", "reenactment"): 2, ("FaceSwap", "face_swap"): 4 - _dropped(gf, "FaceSwap"),
        ("TalkingFace", "talking_face"): 3 - _dropped(gf, "TalkingFace")}
    held = df[df.split != "test"]
    assert not set(held[held.split == "val"].identity) & set(held[held.split == "train"].identity)
    gfd = CelebDFPP("cdfpp", cdfpp_root, tmp_path, protocol="gfd").build_index()
    assert len(gfd) == 6 and set(gfd.split) == {"test"}
    gfq = CelebDFPP("cdfpp", cdfpp_root, tmp_path, protocol="gfq")
    assert gfq.build_index().equals(df) and "robustness" in _note(gfq, "compressed copies")
    with pytest.raises(DatasetError, match=r"protocol must be one of gf\|gfq\|gfd"):
        CelebDFPP("cdfpp", cdfpp_root, tmp_path, protocol="gfx")


def _dropped(src, scenario: str) -> int:
    return sum(f"/{scenario}/" in v for v in src.dropped)


def test_celebdf_pp_leaves_celebdf_v2_fakes_out_when_runs_read_the_crops(cdfpp_root, tmp_path):
    src = CelebDFPP("cdfpp", cdfpp_root, tmp_path / "cache", protocol="gfd", exclude_celebdf_v2=True)
    index = src.build_index()
    assert (index.method == "Celeb-DF").sum() == 1  # indexed and extracted: one cache serves both settings
    assert "left out of every run" in _note(src, "exclude_celebdf_v2=true")
    _extract(index, cdfpp_root, src.cache_dir)
    full = read_manifest(src.manifest_path)
    used = read_manifest(src.prepare())
    assert set(full.method) - set(used.method) == {"Celeb-DF"} and len(used) == len(full) - 1
    keep = CelebDFPP("cdfpp", cdfpp_root, tmp_path / "cache", protocol="gfd")
    assert keep.prepare() == src.manifest_path


# --- DiFF ---------------------------------------------------------------------------------------------------------------
def test_diff_subsets_as_methods_labels_from_folders(tmp_path):
    src = DiFF("diff", W.make_diff(tmp_path / "DiFF"), tmp_path / "c")
    df = src.build_index()
    assert _counts(df, "split", "label") == {("val", 0): 2, ("val", 1): 3, ("test", 0): 3, ("test", 1): 7}
    assert _counts(df[df.label == 1], "method", "method_type") == {
        ("FE", "face_editing"): 1, ("FS", "face_swap"): 3, ("I2I", "diffusion"): 1, ("T2I", "diffusion"): 5}
    assert df[df.label == 0].path.str.startswith("DiFF_real/").all()  # never by alphabetical folder order
    by_id = df.set_index("video_id")
    assert by_id.loc["test/T2I/SDXL/t2i_1", "generator"] == "SDXL" and by_id.loc["test/FE/fe_0", "generator"] == ""
    assert set(df.kind) == {"image"} and "T2I/Midjourney 3" in _note(src, "fakes per subset")


# --- DeepSpeak ----------------------------------------------------------------------------------------------------------
def test_deepspeak_v1_1_split_definition_and_export_dict_cells(tmp_path):
    src = DeepSpeak("ds", W.make_deepspeak(tmp_path / "ds11"), tmp_path / "c", version="1.1")
    df = src.build_index()
    test = df[df.split == "test"]
    assert set(test.video_id) == {"videos/real/121-1801", "videos/fake/retalking--121-121--1801-1801--1"}
    assert len(df) + len(src.dropped) == 8
    fakes = df[df.label == 1].set_index("method")
    assert (fakes.method_type == "lip_sync").all() or "facefusion" in set(fakes.index)
    if "facefusion" in fakes.index:  # kept when 118 and 119 landed in one split
        assert fakes.loc["facefusion", "method_type"] == "face_swap"
    assert set(df[df.label == 1].fake_kind) <= {"face-swap", "lip-sync"}
    assert not set(df[df.split == "val"].identity) & set(df[df.split == "train"].identity)


def test_deepspeak_v2_flat_columns_and_unmapped_kinds(tmp_path):
    src = DeepSpeak("ds", W.make_deepspeak(tmp_path / "ds2", "v2"), tmp_path / "c", version="2")
    df = src.build_index()
    assert _counts(df.assign(split=_official(df)), "split", "label") == {
        ("train", 0): 2, ("train", 1): 2, ("test", 0): 1, ("test", 1): 1}
    mt = df[df.label == 1].set_index("method").method_type.to_dict()
    assert mt == {"diff2lip": "lip_sync", "hellomeme": "talking_face", "liveportrait": ""}
    assert "['talking-head']" in _note(src, "without a method_type")


# --- AV-Deepfake1M ------------------------------------------------------------------------------------------------------
def test_av_deepfake1m_visual_labels_segments_and_audio_only(tmp_path):
    root = W.make_av_deepfake1m(tmp_path / "av1m")
    src = AVDeepfake1M("av1m", root, tmp_path / "c")
    df = src.build_index()
    official = df.assign(split=_official(df))
    assert _counts(official, "split", "label") == {("train", 0): 5, ("train", 1): 3, ("test", 0): 2, ("test", 1): 1}
    by_id = df.set_index("video_id")
    both = by_id.loc["train/id00012/clipA/00001/fake_video_fake_audio"]
    assert json.loads(both.fake_segments) == [[0.1, 0.3]] and both.published_label == 1 and both.method_type == "lip_sync"
    assert both.source_video == "train/id00012/clipA/00001/real"
    audio = by_id.loc["train/id00012/clipA/00001/real_video_fake_audio"]
    assert (audio.label, audio.fake_segments, audio.published_label) == (0, "", 1)  # real pixels
    empty_visual = by_id.loc["train/id00056/clipC/00003/fake_video_real_audio"]
    assert json.loads(empty_visual.fake_segments) == [[0.2, 0.4]]  # no visual list: the fake segments
    assert (df[df.label == 0].fake_segments == "").all()
    assert "test: labels withheld" in _note(src, "withheld") and W.AV1M_MISSING in _note(src, "without their video")
    excl = AVDeepfake1M("av1m", root, tmp_path / "c", audio_only="exclude").build_index()
    assert len(excl) == len(df) - 2 and not excl.method.eq("audio_modified").any()
    by_split = df.groupby("split").identity.apply(set)
    assert not by_split.get("val", set()) & by_split["train"]


def test_av_deepfake1m_frames_inside_a_fake_segment_are_fake_to_the_frame(tmp_path):
    """A 40-frame, 10 fps face video faked in [1.0 s, 2.0 s): frames 10-19. dfd-extract samples 8 frames, four
    inside and four outside (9 and 10, 19 and 20 among them), and the manifest labels each by the segment."""
    from dfd.faces.contract import segment_indices
    from tests.media import write_face_video

    video, _ = write_face_video(tmp_path / "face.mp4", n_frames=40, size=256, canvas=256, fps=10)
    clip = video.read_bytes()
    root = tmp_path / "av1m"
    entries = [W.av1m_entry("id1/c/1/real.mp4", "real", frames=40),
               W.av1m_entry("id1/c/1/fake_video_real_audio.mp4", "visual_modified", [[1.0, 2.0]], [[1.0, 2.0]],
                            frames=40)]
    (root / "val").mkdir(parents=True)
    (root / "val_metadata.json").write_text(json.dumps(entries))
    for e in entries:
        L._video(root / "val" / e["file"], clip)
    src = AVDeepfake1M("av1m", root, tmp_path / "c")
    index = src.build_index()
    assert index.set_index("video_id").fake_segments.to_dict() == {"val/id1/c/1/real": "",
                                                                    "val/id1/c/1/fake_video_real_audio": "[[1.0, 2.0]]"}
    fake_row = index[index.label == 1]  # the real's frames are sampled by the plain rule (tested elsewhere)
    summary = _extract(fake_row, root, src.cache_dir, frames=8, size=32, inputs="frames")
    assert summary.videos_ok == 1
    m = read_manifest(summary.manifest_path)
    fake = m[m.video_id == "val/id1/c/1/fake_video_real_audio"].sort_values("frame")
    want = segment_indices(40, 8, 10.0, [(1.0, 2.0)])
    assert fake.frame.tolist() == want.tolist() == [0, 9, 10, 13, 16, 19, 29, 39]
    assert fake.frame_label.tolist() == [int(10 <= f < 20) for f in fake.frame]  # inside fake, outside real
    assert (fake.label == 1).all()  # the video's label as published
    # Training reads each frame's own label; the video keeps its label (validation and test score videos by it).
    from dfd.data.datasets import ManifestArrays

    arrays = ManifestArrays(summary.manifest_path, splits="test")
    assert arrays.train_on_frame_labels() == 4  # the four sampled frames outside the segment train as real
    assert arrays.label.tolist() == fake.frame_label.tolist() and arrays.video_labels.tolist() == [1]


def test_segment_sampling_rule_edges():
    from dfd.faces.contract import segment_indices, segment_labels

    assert segment_indices(10, 32, 25.0, [(0.0, 0.1)]).tolist() == list(range(10))  # short: every frame
    # A segment covering almost everything: the outside gives its unused share back.
    idx = segment_indices(100, 8, 10.0, [(0.1, 10.0)])
    assert len(idx) == 8 and segment_labels(idx, 10.0, [(0.1, 10.0)]).tolist() == [0, 1, 1, 1, 1, 1, 1, 1]
    assert segment_labels(np.array([4, 5, 14, 15]), 10.0, [(0.5, 1.5)]).tolist() == [0, 1, 1, 0]


def test_fake_segments_column_is_validated():
    from dfd.store.schema import SchemaError, validate_index

    rows = {"video_id": ["f"], "label": [1], "split": ["test"], "method": ["m"], "identity": [""], "path": ["f.mp4"],
            "kind": ["video"]}
    validate_index(pd.DataFrame({**rows, "fake_segments": ["[[0.5, 1.0]]"]}))
    with pytest.raises(SchemaError, match="start > end"):
        validate_index(pd.DataFrame({**rows, "fake_segments": ["[[2, 1]]"]}))


# --- RedFace --------------------------------------------------------------------------------------------------------------
def test_redface_levels_platform_and_type_and_fakes_only(tmp_path):
    root = W.make_redface_fakes_only(tmp_path / "RedFace")
    src = RedFace("redface", root, tmp_path / "c", mapping={"method_from": "platform"})
    df = src.build_index()
    assert len(df) == 9 and (df.label == 1).all()
    assert src.index_notes()[0].startswith("no real media in") and "fakes only" in src.index_notes()[0]
    assert _counts(df, "method") == {("PlatformA",): 5, ("PlatformB",): 2, ("PlatformC",): 2}
    assert _counts(df, "method_type") == {("entire_face_synthesis",): 3, ("face_editing",): 2, ("face_swap",): 2,
                                          ("reenactment",): 2}
    assert "level 2: 4 folder(s): Entire_Face_Synthesis (3), Face_Attribute_Manipulation (2)" in _note(src, "level 2:")
    assert "PlatformA (5)" in _note(src, "level 3:")
    by_type = RedFace("redface", root, tmp_path / "c", mapping={"method_from": "type"}).build_index()
    assert set(by_type.method) == {"Entire_Face_Synthesis", "Face_Attribute_Manipulation", "Face_Swapping",
                                   "Face_Reenactment"}
    # Levels named by depth when folder names say nothing: level 2 as the platform, level 3 as the type.
    swapped = RedFace("redface", root, tmp_path / "c",
                      mapping={"method_from": "platform", "platform_level": 2, "type_level": 3}).build_index()
    assert set(swapped.method) == set(by_type.method) and set(swapped.platform) == set(by_type.method)
    assert (swapped.method_type == "").all()  # platform names do not spell a manipulation type
    with pytest.raises(DatasetError, match="platform_level and type_level"):
        RedFace("redface", root, tmp_path, mapping={"type_level": 0})


def test_redface_with_reals_fills_method_type_from_the_type_folder(tmp_path):
    df = RedFace("redface", L.make_redface(tmp_path / "RedFace"), tmp_path / "c").build_index()
    by_method = df[df.label == 1].groupby("method").method_type.first().to_dict()
    assert by_method == {"PlatformA": "", "PlatformB": "", "face_swap/PlatformA": "face_swap",
                         "reenactment/PlatformC": "reenactment"}


# --- method_type of the older sources -------------------------------------------------------------------------------------
def test_older_sources_fill_method_type_where_the_dataset_says(tmp_path):
    from dfd.sources.celebdf import CelebDF
    from dfd.sources.df40 import DF40
    from dfd.sources.ffpp import FFPP
    from tests import layouts_more as M

    pairs = {"train": [["001", "002"]], "val": [["003", "004"]], "test": [["005", "006"]]}
    ff = FFPP("ffpp", L.make_ffpp(tmp_path / "ff", pairs=pairs), tmp_path / "c").build_index()
    assert ff.groupby("method").method_type.first().to_dict() == {
        "Deepfakes": "face_swap", "Face2Face": "reenactment", "FaceSwap": "face_swap", "NeuralTextures": "reenactment",
        "youtube": ""}
    cdf = CelebDF("cdf", L.make_celebdf(tmp_path / "cdf"), tmp_path / "c").build_index()
    assert set(cdf[cdf.label == 1].method_type) == {"face_swap"} and set(cdf[cdf.label == 0].method_type) == {""}
    paths = M.make_df40(tmp_path / "df40")
    df40 = DF40("df40", paths["root"], tmp_path / "c", train_root=paths["train_root"],
                real_roots={"ff": paths["ff"], "cdf": paths["cdf"]}).build_index()
    fakes = df40[df40.label == 1]
    assert (fakes.type.map({"FS": "face_swap", "FR": "reenactment", "EFS": "entire_face_synthesis",
                            "FE": "face_editing"}) == fakes.method_type).all()
    assert set(df40.method_type) <= {"", *METHOD_TYPES}


# --- The YAMLs ---------------------------------------------------------------------------------------------------------------
def _compose(name: str, overrides: list[str]):
    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("index", overrides=[f"dataset={name}", *overrides])
    return instantiate(cfg.dataset)


def test_new_yamls_index_their_layouts(tmp_path, de_root, favc_root, cdfpp_root):
    cases = {
        "deepfake_eval_2024": (de_root, [], 17),
        "kodf": (W.make_kodf(tmp_path / "kodf"), [], 18),
        "fakeavceleb": (favc_root, [], 12),
        "celebdf_pp": (cdfpp_root, ["dataset.protocol=gfd"], 6),
        "diff": (W.make_diff(tmp_path / "diff"), [], 15),
        "deepspeak": (W.make_deepspeak(tmp_path / "ds2", "v2"), ["dataset.version=v2"], 6),
        "av_deepfake1m": (W.make_av_deepfake1m(tmp_path / "av1m"), [], 11),
    }
    for name, (root, extra, n) in cases.items():
        src = _compose(name, [f"dataset.root={root}", f"paths.cache_dir={tmp_path / 'cache'}", *extra])
        df = src.build_index()
        assert len(df) == n, name
        assert set(df.method_type) <= {"", *METHOD_TYPES} and (df[df.label == 0].method_type == "").all(), name
    ds = _compose("deepspeak", [f"paths.data_dir={tmp_path}", "dataset.version=v2"])
    assert ds.name == "deepspeak_v2" and ds.root == tmp_path / "DeepSpeak_v2"
    cdf = _compose("celebdf_pp", [f"paths.cache_dir={tmp_path}", "dataset.protocol=gfd"])
    assert cdf.cache_dir.name.startswith("celebdf_pp_gfd-")
