"""Tiny datasets in their *official* layouts (see /work/shared/datasets.md), for any test that needs one.

Each ``make_*`` builds the tree under ``root`` and returns ``root``. Videos are copies of one real H.264 clip
(``tests.media.write_face_video``) so they decode; images are real PNGs unless noted. The module-level
constants say what was written, so tests can assert exact counts.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import cv2

from tests.media import face_image, write_face_video

# --- FaceForensics++ ----------------------------------------------------------------------------------------
FFPP_PAPER_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
# Official format: lists of pairs of zero-padded ids; ids of one split never appear in another.
FFPP_PAIRS = {
    "train": [["071", "054"], ["087", "081"], ["000", "003"], ["145", "222"], ["512", "495"], ["908", "903"]],
    "val": [["720", "672"], ["939", "115"]],
    "test": [["953", "974"], ["012", "026"]],
}
# DeepFakeDetection: actors' originals <actor>__<scene>.mp4 and fakes <t>_<s>__<scene>__<8-char id>.mp4.
FFPP_DFD_ACTORS = ("01", "02", "03", "04", "05", "06", "07", "08")
FFPP_DFD_SCENES = ("walking_down_street_outside_angry", "kitchen_pan")
FFPP_DFD_FAKES = [("01", "02"), ("02", "01"), ("03", "04"), ("05", "06"), ("07", "08"), ("08", "01"), ("04", "07")]

_CLIP_CACHE: dict[str, bytes] = {}


def _clip_bytes(tmp: Path) -> bytes:
    """One tiny real mp4 (written once per process) whose bytes every fixture video reuses."""
    if "clip" not in _CLIP_CACHE:
        path, _ = write_face_video(tmp / ".seed_clip.mp4", n_frames=4, size=48, canvas=64)
        _CLIP_CACHE["clip"] = path.read_bytes()
        path.unlink()
    return _CLIP_CACHE["clip"]


@contextlib.contextmanager
def videos_of(clip: bytes) -> Iterator[None]:
    """Inside the block, every fixture video is ``clip`` (e.g. one whose face MTCNN finds, for extraction)."""
    before = _CLIP_CACHE.get("clip")
    _CLIP_CACHE["clip"] = clip
    try:
        yield
    finally:
        if before is None:
            _CLIP_CACHE.pop("clip", None)
        else:
            _CLIP_CACHE["clip"] = before


def _video(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _png_bytes(size: int = 16) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(face_image(size), cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def make_ffpp(
    root: Path,
    methods: tuple[str, ...] = FFPP_PAPER_METHODS,
    compression: str = "c23",
    pairs: dict | None = None,
    with_dfd: bool = False,
    write_splits: bool = True,
    frames: int = 0,
) -> Path:
    """FF++ as the download script writes it, plus ``splits/{train,val,test}.json`` in the official format.

    ``frames`` > 0 also writes that many PNGs per video as the FF++ repo's extraction script does
    (``<comp>/images/<stem>/0000.png``, 0-based, 4 digits).
    """
    pairs = pairs or FFPP_PAIRS
    clip = _clip_bytes(root.parent)
    png = _png_bytes() if frames else b""

    def video(folder: Path, stem: str) -> None:
        _video(folder / compression / "videos" / f"{stem}.mp4", clip)
        for f in range(frames):
            _video(folder / compression / "images" / stem / f"{f:04d}.png", png)

    ids = sorted({v for split in pairs.values() for p in split for v in p})
    for vid in ids:
        video(root / "original_sequences/youtube", vid)
    for method in methods:
        for a, b in (p for split in pairs.values() for p in split):
            for stem in (f"{a}_{b}", f"{b}_{a}"):
                video(root / "manipulated_sequences" / method, stem)
                # Masks (no <comp> level) and Deepfakes' models must not be mistaken for videos to index.
                if method != "FaceShifter":
                    _video(root / "manipulated_sequences" / method / "masks/videos" / f"{stem}.mp4", b"mask")
                if method == "Deepfakes":
                    _video(root / "manipulated_sequences/Deepfakes/models" / stem / "encoder.h5", b"h5")
    if with_dfd:
        for actor in FFPP_DFD_ACTORS:
            for scene in FFPP_DFD_SCENES:
                video(root / "original_sequences/actors", f"{actor}__{scene}")
        for i, (t, s) in enumerate(FFPP_DFD_FAKES):
            name = f"{t}_{s}__{FFPP_DFD_SCENES[i % 2]}__{'ABCDEFGH'[i:] + 'XYZ0123'[: i]}"
            video(root / "manipulated_sequences/DeepFakeDetection", name)
    if write_splits:
        (root / "splits").mkdir(parents=True, exist_ok=True)
        for split, split_pairs in pairs.items():
            (root / "splits" / f"{split}.json").write_text(json.dumps(split_pairs, indent=1))
    return root


# --- Celeb-DF ------------------------------------------------------------------------------------------------
CELEBDF_IDS = range(6)
CELEBDF_REAL_PER_ID = 2  # Celeb-real/id<k>_0000.mp4, id<k>_0001.mp4
CELEBDF_YOUTUBE = ("00003", "00017", "00170", "00201", "00299")
# Celeb-synthesis/id<a>_id<b>_0000.mp4 for each target a and two sources b.
CELEBDF_SYNTH = [(a, (a + d) % 6) for a in CELEBDF_IDS for d in (1, 2)]
# In the official file 1 = real, 0 = fake.
CELEBDF_TEST_LIST = [
    "1 Celeb-real/id0_0000.mp4",
    "1 YouTube-real/00170.mp4",
    "1 Celeb-real/id1_0001.mp4",
    "0 Celeb-synthesis/id0_id1_0000.mp4",
    "0 Celeb-synthesis/id1_id2_0000.mp4",
    "0 Celeb-synthesis/id4_id0_0000.mp4",
]


def make_celebdf(root: Path, videos_level: bool = False, youtube_folder: str = "YouTube-real") -> Path:
    """Celeb-DF's three folders and ``List_of_testing_videos.txt`` (no newline after its last line)."""
    clip = _clip_bytes(root.parent)

    def folder(name: str) -> Path:
        return root / name / "videos" if videos_level else root / name

    for k in CELEBDF_IDS:
        for j in range(CELEBDF_REAL_PER_ID):
            _video(folder("Celeb-real") / f"id{k}_{j:04d}.mp4", clip)
    for n in CELEBDF_YOUTUBE:
        _video(folder(youtube_folder) / f"{n}.mp4", clip)
    for a, b in CELEBDF_SYNTH:
        _video(folder("Celeb-synthesis") / f"id{a}_id{b}_0000.mp4", clip)
    (root / "List_of_testing_videos.txt").write_text("\n".join(CELEBDF_TEST_LIST))
    return root


# --- WildDeepfake --------------------------------------------------------------------------------------------
# split folder -> archive number -> sequence ids inside it. Sequence ids repeat across archives (0, 1) and
# archive numbers repeat across folders (1): only (folder, archive, sequence) is unique.
WILDDEEPFAKE_LAYOUT = {
    "real_train": {1: [0, 1], 2: [5], 7: [0, 3]},
    "fake_train": {1: [0, 2, 9], 4: [1], 6: [0, 1]},
    "real_test": {11: [0, 1]},
    "fake_test": {12: [3]},
}
WILDDEEPFAKE_FRAMES = (2, 10, 33)  # not zero-padded, not contiguous


def make_wilddeepfake(root: Path, spaces: bool = False, extracted: bool = False, corrupt: bool = False,
                      size: int = 16) -> Path:
    """``deepfake_in_the_wild/<split>/<N>.tar.gz`` holding ``./N/<real|fake>/<seq>/<frame>.png`` (or extracted);
    ``size``: side of the face crops (the dataset's are 224 px)."""
    png = _png_bytes(size)
    for split, archives in WILDDEEPFAKE_LAYOUT.items():
        folder = root / "deepfake_in_the_wild" / (split.replace("_", " ") if spaces else split)
        folder.mkdir(parents=True, exist_ok=True)
        kind = split.split("_")[0]
        for n, seqs in archives.items():
            members = [f"./{n}/{kind}/{s}/{f}.png" for s in seqs for f in WILDDEEPFAKE_FRAMES]
            if extracted:
                for m in members:
                    _video(folder / m[2:], png)
                continue
            with tarfile.open(folder / f"{n}.tar.gz", "w:gz") as tar:
                dirs = [f"./{n}", f"./{n}/{kind}", *(f"./{n}/{kind}/{s}" for s in seqs)]
                for d in dirs:
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                for m in members:
                    info = tarfile.TarInfo(m)
                    info.size = len(png)
                    tar.addfile(info, io.BytesIO(png))
    if corrupt:
        (root / "deepfake_in_the_wild" / ("fake train" if spaces else "fake_train") / "99.tar.gz").write_bytes(
            b"\x1f\x8b\x08\x00 this is not a gzip stream"
        )
    return root


# --- RedFace (layout unverified: these are plausible shapes the loader must discover) ------------------------
def make_redface(root: Path, layout: str = "platforms") -> Path:
    """``platforms``: ``images/<platform>/{real,fake}/*.png`` plus ``videos/real`` beside
    ``videos/<type>/<platform>/*.mp4``; ``unlabelled``: folders whose names say nothing about real/fake."""
    if layout == "unlabelled":
        for batch in ("batch_a", "batch_b"):
            for i in range(3):
                _video(root / batch / f"img{i}.png", b"png")
        return root
    clip = _clip_bytes(root.parent)
    for platform, n_real, n_fake in (("PlatformA", 3, 4), ("PlatformB", 2, 5)):
        for i in range(n_real):
            _video(root / "images" / platform / "real" / f"r{i}.png", b"png")
        for i in range(n_fake):
            _video(root / "images" / platform / "fake" / f"f{i}.png", b"png")
    for i in range(3):
        _video(root / "videos" / "real" / f"v{i}.mp4", clip)
    for kind, platform, n in (("face_swap", "PlatformA", 2), ("reenactment", "PlatformC", 3)):
        for i in range(n):
            _video(root / "videos" / kind / platform / f"v{i}.mp4", clip)
    (root / "README.txt").write_text("not media")
    return root


# --- Generic folders and tables ------------------------------------------------------------------------------
def make_folder(root: Path, splits: bool = False) -> Path:
    """``real/`` and ``fake/`` (or ``<split>/{real,fake}/``) holding images, videos and a frames folder."""
    clip, png = _clip_bytes(root.parent), _png_bytes()
    tops = [root / s for s in ("train", "test")] if splits else [root]
    for top in tops:
        for i in range(4):
            _video(top / "real" / f"img{i}.png", png)
            _video(top / "fake" / "gan" / f"img{i}.jpg", png)
        _video(top / "real" / "clip.mp4", clip)
        _video(top / "fake" / "swap" / "clip.mp4", clip)
        _video(top / "fake" / "f.mp4", clip)
        for f in (0, 7, 12):  # one video as a folder of frames
            _video(top / "real" / "talk" / f"{f}.png", png)
    return root


def make_csv(root: Path, with_split: bool = True, fmt: str = "csv") -> Path:
    """Media under ``root/media`` and ``root/labels.<fmt>`` with ``path,label[,split]`` relative to the table."""
    clip, png = _clip_bytes(root.parent), _png_bytes()
    lines = ["path,label" + (",split" if with_split else "")]
    for i in range(6):
        label = "real" if i % 2 else "1"
        rel = f"media/{i}.mp4" if i < 3 else f"media/{i}.png"
        _video(root / rel, clip if i < 3 else png)
        lines.append(f"{rel},{label}" + (f",{('train', 'val', 'test')[i % 3]}" if with_split else ""))
    table = root / f"labels.{fmt}"
    if fmt == "csv":
        table.write_text("\n".join(lines) + "\n")
    else:
        import pandas as pd

        pd.read_csv(io.StringIO("\n".join(lines)), dtype=str).to_parquet(table)
    return root


def copy_tree(src: Path, dst: Path) -> Path:
    """Copy a fixture tree (cheaper than rebuilding when a test mutates it)."""
    shutil.copytree(src, dst)
    return dst
