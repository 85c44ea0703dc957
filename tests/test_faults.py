"""Real machines, real faults (issue 22): datasets on two disks linked into one folder, caches behind links,
trees moved after extraction, bad files that must not move other videos between splits, partial downloads.

Every tree is built in its dataset's official layout (tests/layouts*.py) and run through the real commands'
code: index -> extract (real MTCNN, real decord) -> train -> eval -> export -> predict.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dfd.cli.extract import _index_for
from dfd.data.datasets import ManifestArrays
from dfd.extract.config import ExtractConfig
from dfd.extract.run import extract_faces
from dfd.extract.verify import UNREADABLE_FILE, check_crops
from dfd.sources.report import index_report
from tests import layouts as L
from tests import layouts_more as M
from tests.conftest import compose
from tests.media import write_corrupt_video, write_face_video

EXTRACT = ["extract.frames=2", "extract.size=32", "extract.workers=1", "extract.probes=1", "progress=false"]
TINY = ["model=tiny", "logger=none", "trainer.max_epochs=1", "data.num_workers=0", "data.batch_size=4",
        "data.eval_batch_size=8", "seed=1"]


def _source(config: str, overrides: list[str]):
    cfg = compose(config, overrides)
    return cfg, instantiate(cfg.dataset)


def extract(overrides: list[str]) -> tuple[object, Path]:
    """What ``dfd-extract <overrides>`` does (index reused or rebuilt, then extraction), in this process."""
    cfg, source = _source("extract", [*overrides, *EXTRACT])
    if getattr(source, "writes_manifest", False):
        return source, source.prepare()
    index = _index_for(source, Path(cfg.index_path))
    settings = ExtractConfig.from_mapping(OmegaConf.to_container(cfg.extract, resolve=True))
    extract_faces(index, source.roots(), source.cache_dir, settings, source.faces_are_cropped, False, source.name)
    return source, source.manifest_path


def _link(link: Path, target: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)
    return link


def _folder_dataset(root: Path, clip: bytes) -> Path:
    for rel in ("real/a.mp4", "real/b.mp4", "fake/Tint/d.mp4", "fake/Blur/f.mp4"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(clip)
    return root


def _readable(arrays: ManifestArrays) -> bool:
    return all(arrays.path(i).is_file() for i in range(len(arrays)))


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict:
    """The same datasets twice: in plain folders, and on two "disks" at different depths linked into one data
    folder with the cache behind a link to a third depth. Everything extracted (or prepared in place)."""
    base = tmp_path_factory.mktemp("faults")
    clip, _ = write_face_video(base / "clip.mp4", n_frames=2, size=160, canvas=192)
    face = clip.read_bytes()
    plain = base / "plain" / "data"
    with L.videos_of(face):
        M.make_deeperforensics(plain / "DeeperForensics-1.0", plain / "FaceForensics++")
    _folder_dataset(plain / "folder", face)
    rgb, json_dir = M.make_deepfakebench(base / "plain" / "DeepfakeBench")
    disk1, disk2 = base / "vol1" / "a" / "b", base / "vol2"
    shutil.copytree(plain / "DeeperForensics-1.0", disk1 / "DeeperForensics-1.0")
    shutil.copytree(plain / "FaceForensics++", disk2 / "FaceForensics++")
    shutil.copytree(plain / "folder", disk2 / "x" / "folder")
    linked = base / "home" / "data"
    _link(linked / "DeeperForensics-1.0", disk1 / "DeeperForensics-1.0")
    _link(linked / "FaceForensics++", disk2 / "FaceForensics++")
    _link(linked / "folder", disk2 / "x" / "folder")
    (base / "scratch" / "x" / "y" / "z").mkdir(parents=True)
    cache = _link(base / "home" / "cache", base / "scratch" / "x" / "y" / "z")
    out = {"base": base, "plain": plain, "linked": linked, "cache": cache, "rgb": rgb, "json_dir": json_dir}
    for kind, data, caches in (("plain", plain, base / "plain" / "cache"), ("linked", linked, cache)):
        paths = [f"paths.data_dir={data}", f"paths.cache_dir={caches}"]
        out[kind] = {
            "drf": (paths, *extract(["dataset=deeperforensics", *paths])),
            "folder": (paths, *extract(["dataset=folder", *paths])),
            # DeepfakeBench's rgb folder where it is; the cache behind a link at another depth (or plain).
            "db": (paths, *extract(["dataset=deepfakebench", f"dataset.root={rgb}", f"dataset.json_dir={json_dir}",
                                    f"paths.cache_dir={caches}"])),
        }
        out[kind]["data"] = data
    return out


def test_linked_disks_and_cache_give_the_same_manifest_rows(trees):
    """Case 1 and 2: every FF++ real of DeeperForensics is found behind its link; in-place crops resolve behind a
    linked cache at another depth; the manifests are the rows the plain trees give."""
    for name in ("drf", "folder", "db"):
        _, src_p, man_p = trees["plain"][name]
        _, src_l, man_l = trees["linked"][name]
        a, b = pd.read_parquet(man_p), pd.read_parquet(man_l)
        pd.testing.assert_frame_equal(a, b, obj=name)
        arrays = ManifestArrays(man_l, roots=src_l.roots())
        assert len(arrays) == len(a) and _readable(arrays), name
    drf = pd.read_parquet(trees["linked"]["drf"][2])
    reals = drf[drf.label == 0]
    assert reals.video_id.nunique() == 5 and set(reals.path_root) == {"ffpp_root"}
    assert not any(p.startswith("..") for p in drf.source_path)
    db = pd.read_parquet(trees["linked"]["db"][2])
    assert set(db.crop_root) == {"root"} and not any(p.startswith("..") for p in db.crop_path)
    # Nothing failed, and the cache records every root resolved (what it was made from).
    fails = pd.read_parquet(trees["linked"]["drf"][1].cache_dir / "failures.parquet")
    assert fails.empty, fails
    record = json.loads((trees["linked"]["drf"][1].cache_dir / "cache.json").read_text())
    assert record["roots"]["ffpp_root"] == str((trees["base"] / "vol2" / "FaceForensics++").resolve())


def test_an_index_with_dotdot_paths_still_resolves(trees, capsys):
    """An index written before named roots (reals as ../FaceForensics++/...) is read correctly behind links,
    and says it was built by an older dfd."""
    paths, source, _ = trees["linked"]["drf"]
    index_path = source.cache_dir / "index.parquet"
    old = pd.read_parquet(index_path)
    real = old.path_root == "ffpp_root"
    old.loc[real, "path"] = "../FaceForensics++/" + old.loc[real, "path"]
    legacy = index_path.with_name("index-old.parquet")
    old.drop(columns="path_root").to_parquet(legacy)  # no dfd.cache metadata: no rules recorded
    assert len(_index_for(source, legacy)) == len(old)
    out = capsys.readouterr().out
    assert "using video index" in out and "built by an older dfd" in out and "re-indexing" not in out


def test_the_chain_reads_the_same_through_links(trees, tmp_path):
    """Train on the linked tree; evaluate the checkpoint on the linked and the plain tree in one run; export
    (threshold calibrated on the linked val crops) and predict a video reached through a link and directly."""
    from dfd.engine.evaluate import evaluate
    from dfd.engine.train import train
    from dfd.inference.bundle import load_bundle
    from dfd.inference.export import export_bundle
    from dfd.inference.predict import Predictor

    paths = trees["linked"]["drf"][0]
    results = train(compose("train", ["dataset=deeperforensics", *paths, *TINY, f"paths.run_dir={tmp_path / 'run'}"]))
    assert results["bad_crops"]["train"] == {"real": 0, "fake": 0}  # every crop read
    plain = trees["plain"]["data"]
    evaluated = evaluate(compose("eval", [
        f"ckpt_path={results['checkpoint']}", *paths, "logger=none", "data.num_workers=0",
        f"paths.run_dir={tmp_path / 'eval'}", "+dataset@test_sets.plain=deeperforensics",
        f"test_sets.plain.root={plain / 'DeeperForensics-1.0'}", f"test_sets.plain.ffpp_root={plain / 'FaceForensics++'}",
        f"test_sets.plain.cache_dir={trees['plain']['drf'][1].cache_dir}"]))
    linked_m, plain_m = evaluated["test"]["deeperforensics_end_to_end"], evaluated["test"]["plain"]
    for level in ("frame", "video"):
        for key in ("auc", "acc", "ap", "logloss", "n", "n_real", "n_fake"):
            assert linked_m[level][key] == plain_m[level][key], (level, key)
    preds = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")
    by = {s: g.set_index("video_id").prob_fake for s, g in preds.groupby("test_set")}
    pd.testing.assert_series_equal(by["plain"], by["deeperforensics_end_to_end"], check_names=False)
    export_bundle(results["checkpoint"], tmp_path / "bundle", calibrate="eer")
    video = "FaceForensics++/original_sequences/youtube/c23/videos/000.mp4"
    got = Predictor(load_bundle(tmp_path / "bundle"), frames=2).predict(
        [str(trees["linked"]["data"] / video), str(plain / video)], progress=False)
    assert [r.status for r in got] == ["ok", "ok"] and got[0].prob_fake == pytest.approx(got[1].prob_fake, abs=1e-6)


def test_moved_trees_need_one_override(trees, tmp_path):
    """The trees moved to another folder after extraction: dataset.root (+ the cache's new place) and every
    crop is read; a root holding other files is still refused."""
    from dfd.errors import DatasetError

    moved = tmp_path / "elsewhere" / "deeper"
    shutil.copytree(trees["plain"]["data"], moved / "data", symlinks=True)  # copy2: sizes and mtimes kept
    cache = trees["plain"]["drf"][1].cache_dir
    shutil.copytree(cache, moved / "cache" / cache.name)
    over = [f"paths.data_dir={moved / 'data'}", f"dataset.cache_dir={moved / 'cache' / cache.name}"]
    _, src = _source("train", ["dataset=deeperforensics", *over])
    arrays = ManifestArrays(src.prepare(), roots=src.roots())  # the cache records the old root: accepted
    assert len(arrays) == len(pd.read_parquet(trees["plain"]["drf"][2])) and _readable(arrays)
    # The folder dataset: its root and its cache moved.
    folder = trees["plain"]["folder"][1]
    shutil.copytree(folder.cache_dir, moved / "fcache")
    _, fsrc = _source("train", ["dataset=folder", f"dataset.root={moved / 'data' / 'folder'}",
                                f"dataset.cache_dir={moved / 'fcache'}"])
    assert _readable(ManifestArrays(fsrc.prepare(), roots=fsrc.roots()))
    # DeepfakeBench: its rgb folder moved; the in-place manifest is rewritten at the new place.
    shutil.copytree(trees["rgb"], moved / "rgb")
    _, db = _source("train", ["dataset=deepfakebench", f"dataset.root={moved / 'rgb'}",
                              f"dataset.json_dir={trees['json_dir']}", f"paths.cache_dir={moved / 'dbcache'}"])
    arrays = ManifestArrays(db.prepare(), roots=db.roots())
    assert _readable(arrays) and all(str(arrays.path(i)).startswith(str(moved / "rgb")) for i in range(3))
    # Other files under the new root: refused in one line naming both roots.
    (moved / "data" / "folder" / "real" / "a.mp4").write_bytes(b"another file")
    with pytest.raises(DatasetError, match="holds crops of .* but dataset.root is .*other files"):
        _source("train", ["dataset=folder", f"dataset.root={moved / 'data' / 'folder'}",
                          f"dataset.cache_dir={moved / 'fcache'}"])[1].prepare()


def test_bad_files_move_no_other_video_and_say_which_split_they_held(trees, tmp_path):
    """Case 5: an empty and a corrupt video added to a folder dataset move no other video between splits;
    extraction lists them with the split they held, and counts videos per split and label after skipping."""
    from dfd.sources.folder import Folder

    big = tmp_path / "big"
    for i in range(20):  # index only (names, not contents): every carve filled by the draws themselves
        for rel in (f"real/clip_{i:02d}.mp4", f"fake/Tint/clip_{i:02d}.mp4"):
            (big / rel).parent.mkdir(parents=True, exist_ok=True)
            (big / rel).write_bytes(b"x")
    src = Folder("folder", big, tmp_path / "c", val_fraction=0.2, test_fraction=0.2)
    before = src.build_index().set_index("video_id").split
    assert not any("nearest draw" in n for n in src.notes) and before.nunique() == 3
    (big / "real" / "empty.mp4").write_bytes(b"")
    write_corrupt_video(big / "fake" / "Blur" / "corrupt.mp4")
    after = src.build_index().set_index("video_id").split
    pd.testing.assert_series_equal(after.drop(["real/empty", "fake/Blur/corrupt"]), before)
    # Extraction reuses the four extracted videos; the two bad ones are listed with the split they held.
    root = shutil.copytree(trees["plain"]["data"] / "folder", tmp_path / "folder")
    (root / "real" / "empty.mp4").write_bytes(b"")
    write_corrupt_video(root / "fake" / "Blur" / "corrupt.mp4")
    index = Folder("folder", root, tmp_path / "cache").build_index()
    held = index.set_index("video_id").split
    shutil.copytree(trees["plain"]["folder"][1].cache_dir, tmp_path / "cache")
    summary = extract_faces(index, root, tmp_path / "cache",
                            ExtractConfig.create(frames=2, size=32, workers=1, probes=1), progress=False, dataset="folder")
    assert (summary.videos_resumed, summary.videos_failed) == (4, 2)  # the cache copy: same files, root moved
    fails = pd.read_parquet(tmp_path / "cache" / "failures.parquet").set_index("video_id")
    assert sorted(fails.index) == ["fake/Blur/corrupt", "real/empty"]
    assert fails.loc["real/empty", "split"] == held["real/empty"] and fails.loc["real/empty", "label"] == "0"
    assert f"real/empty ({held['real/empty']}, real): empty" in str(summary)
    kept = {s: sum(c) for s, c in summary.kept.items()}
    assert kept == held.drop(["real/empty", "fake/Blur/corrupt"]).value_counts().to_dict()


def test_a_missing_method_folder_is_a_warning_naming_where_it_looked(trees, tmp_path):
    """Case 4: FF++ without its NeuralTextures folder; DeepfakeBench's FF++ without its fakes' frames and with a
    frame its JSON lists gone: counted found vs listed, warned with the folder looked in, each reason once."""
    from dfd.sources.deepfakebench import DeepfakeBench
    from dfd.sources.ffpp import FFPP

    ff = L.make_ffpp(tmp_path / "FaceForensics++")
    shutil.rmtree(ff / "manipulated_sequences" / "NeuralTextures")
    src = FFPP("ffpp", ff, tmp_path / "c")
    df = src.build_index()
    lines, warnings = index_report(df, src.skipped, (), str(src.root))
    n = 2 * sum(len(p) for p in L.FFPP_PAIRS.values())
    assert f"NeuralTextures (fake) 0/{n}" in lines[0] and f"Deepfakes (fake) {n}/{n}" in lines[0]
    assert warnings == [f"no NeuralTextures (fake) video found of {n} listed: looked in "
                        f"{ff}/manipulated_sequences/NeuralTextures/c23/videos"]
    assert lines[1] == (f"skipped {n} (method folder missing), e.g. NeuralTextures (fake) "
                        f"{src.skipped[0].path}") and len(lines) == 2

    rgb = shutil.copytree(trees["rgb"], tmp_path / "rgb")
    shutil.rmtree(rgb / "FaceForensics++" / "manipulated_sequences" / "Deepfakes" / "c23")
    (rgb / "FaceForensics++" / "original_sequences" / "youtube" / "c23" / "frames" / "001" / "495.png").unlink()
    db = DeepfakeBench("db", rgb, tmp_path / "c2", json_name="FaceForensics++", json_dir=trees["json_dir"])
    df = db.build_index()
    lines, warnings = index_report(df, db.skipped, db.frames_missing, str(db.root))
    fakes = len(db.skipped)
    assert fakes == 6 and {(s.method, s.label) for s in db.skipped} == {("FF-DF", 1)}
    assert warnings == [f"no fake video found of {fakes} listed: looked in "
                        f"{rgb}/FaceForensics++/manipulated_sequences/Deepfakes/c23/frames"]
    assert [line for line in lines if line.startswith("skipped")] == [
        f"skipped {fakes} (frames folder missing), e.g. FF-DF (fake) {db.skipped[0].path}"]
    assert db.frames_missing == [("FaceForensics++/original_sequences/youtube/c23/frames/001", 1)]
    assert lines[-1].startswith("frames listed but missing on disk: 1 in 1 video(s)")


def test_verify_lists_exactly_the_bad_crops_and_training_skips_and_counts_them(trees, tmp_path):
    """Case 3: 0-byte, truncated and not-an-image crops in a cache and in place: --verify lists exactly them;
    training finishes and counts them per split and label; above the cap it stops in one line."""
    from dfd.data.bad_crops import BadCropError
    from dfd.engine.train import train

    paths, src, manifest = trees["plain"]["drf"]
    cache = shutil.copytree(src.cache_dir, tmp_path / "cache")
    m = pd.read_parquet(cache / "manifest.parquet")
    train_rows = m[m.split == "train"]
    victims = [train_rows.crop_path.iloc[0], train_rows.crop_path.iloc[3], m[m.split == "val"].crop_path.iloc[0]]
    (cache / victims[0]).write_bytes(b"")
    (cache / victims[1]).write_bytes((cache / victims[1]).read_bytes()[:60])
    (cache / victims[2]).write_text("not an image")
    check = check_crops(cache / "manifest.parquet")
    assert check.checked == len(m) and sorted(r[4] for r in check.unreadable) == sorted(str(cache / v) for v in victims)
    assert [r[5].split(":")[0] for r in sorted(check.unreadable, key=lambda r: victims.index(
        str(Path(r[4]).relative_to(cache))))] == ["empty", "corrupt", "corrupt"]
    assert check.write(cache) == cache / UNREADABLE_FILE
    # In place: DeepfakeBench's crops, one emptied.
    db_src, db_manifest = trees["plain"]["db"][1:]
    rgb = shutil.copytree(trees["rgb"], tmp_path / "rgb")
    one = pd.read_parquet(db_manifest).crop_path.iloc[2]
    (rgb / one).write_bytes(b"")
    roots = {"root": rgb}
    assert [r[4] for r in check_crops(db_manifest, roots).unreadable] == [str(rgb / one)]

    base = ["dataset=deeperforensics", *paths, f"dataset.cache_dir={cache}", *TINY]
    with pytest.raises(BadCropError, match=r"^1 of 8 train crops are unreadable so far \(. real / . fake; above "
                                            r"data.max_bad_fraction=0.001\): list them with `dfd-extract "
                                            r"dataset=deeperforensics .*--verify`"):
        train(compose("train", [*base, f"paths.run_dir={tmp_path / 'stopped'}"]))
    results = train(compose("train", [*base, "data.max_bad_fraction=0.5", f"paths.run_dir={tmp_path / 'run'}"]))
    labels = m.set_index("crop_path").label
    expect = {s: {"real": int(sum(labels[v] == 0 for v in victims if v in set(m[m.split == s].crop_path))),
                  "fake": int(sum(labels[v] == 1 for v in victims if v in set(m[m.split == s].crop_path)))}
              for s in ("train", "val")}
    assert results["bad_crops"]["train"] == expect["train"] and results["bad_crops"]["val"] == expect["val"]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["bad_crops"]["train"] == expect["train"]
    assert any(n.startswith("unreadable face crops: train 2") and "--verify" in n for n in results["notes"])
    assert np.isfinite(results["test"]["deeperforensics_end_to_end"]["frame"]["logloss"])
