"""Tiny in-the-wild and 2024-25 datasets in their distributed layouts (see /work/shared/datasets-wild.md).

Deepfake-Eval-2024, KoDF, FakeAVCeleb, Celeb-DF++, DiFF, DeepSpeak v1.1/v2, AV-Deepfake1M and a RedFace without
reals, each with the quirks its users meet: Excel's ``#NAME?`` file names and ``########`` dates, capitalised
split names, a truncated JPEG, CP949 Korean tables, FakeAVCeleb's ten-field rows under a nine-name header,
race folders with spaces and brackets and repeated file names, Celeb-DF++'s ``Celeb-DF-v2`` folder, HF-export
dict cells, AV-Deepfake1M's audio-only fakes and copied segment lists. Videos are copies of one real H.264
clip (``tests.layouts._clip_bytes``); images are real PNG/JPEG/WebP files. Module constants say what was
written, so tests assert exact counts.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2

from tests.layouts import _clip_bytes, _png_bytes, _video
from tests.media import face_image


def _write(path: Path, data: bytes | str, encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode(encoding) if isinstance(data, str) else data)


def _image_bytes(ext: str, size: int = 16) -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(face_image(size), cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


# --- Deepfake-Eval-2024 ------------------------------------------------------------------------------------
# (file name as listed, Date, Ground Truth, Finetuning Set); files are written unless named in DE_MISSING.
DE_IMAGES = [
    ("PIL0v47Sw1bH3dI7Ob6k7GEFcPk.webp", "2024-05-01", "Fake", "Train"),
    ("a1.jpg", "########", "Fake", "Train"),
    ("a2.png", "2024-06-11", "Real", "Train"),
    ("a3.jpeg", "########", "Real", "Train"),
    ("a4.png", "2024-07-02", "Fake", "Train"),
    ("a5.png", "2024-07-03", "Real", "Train"),
    ("a6.jpg", "2024-07-04", "Fake", "Test"),
    ("a7.png", "########", "Real", "Test"),
    ("a8.webp", "2024-08-01", "Fake", "Test"),
    ("#NAME?", "2024-08-02", "Fake", "Train"),      # Excel formula artefacts
    ("#NAME?", "########", "Real", "Test"),
    ("c1DVk98VHjpJOPZFOPS9NgCBrRY.jpg", "2024-03-03", "Fake", "Train"),  # truncated JPEG
    ("gone.png", "2024-09-09", "Real", "Train"),    # listed, not on disk
]
DE_TRUNCATED = "c1DVk98VHjpJOPZFOPS9NgCBrRY.jpg"
DE_MISSING = {"gone.png", "#NAME?"}
# (file, Finetuning Set, Video Ground Truth, Audio Ground Truth, Media URL)
DE_VIDEOS = [
    ("0DOGSzwaUcyt9m0E4thYW8DCvRs.mp4", "Train", "Fake", "Fake", "https://x.com/p/1"),
    ("v2.mp4", "Train", "Fake", "Real", "https://x.com/p/1"),       # same post as the first
    ("v3.mp4", "Train", "Real", "Fake", "https://x.com/p/2"),       # real pixels, cloned voice: REAL
    ("v4.mp4", "Train", "Real", "Unknown", "https://x.com/p/3"),
    ("v5.mp4", "Train", "Real", "Real", "https://x.com/p/4"),
    ("v6.mp4", "Train", "Fake", "Unknown", "https://x.com/p/5"),
    ("v7.mp4", "Test", "Fake", "Real", "https://x.com/p/6"),
    ("v8.mp4", "Test", "Real", "Fake", "https://x.com/p/7"),
]
# Kept per split x label (before val is carved): images drop 2 #NAME?, the truncated JPEG, the missing file.
DE_IMAGE_COUNTS = {("train", 0): 3, ("train", 1): 3, ("test", 0): 1, ("test", 1): 2}
DE_VIDEO_COUNTS = {("train", 0): 3, ("train", 1): 3, ("test", 0): 1, ("test", 1): 1}


def make_deepfake_eval_2024(root: Path, image_size: int = 16) -> Path:
    """The HF release: image-data/ + image-metadata-publish.csv, video-data/ + only the -with-links video table.
    ``image_size``: side of the (astronaut) images; 256 for MTCNN to find the face."""
    png = _png_bytes(image_size)
    for name, _, _, _ in DE_IMAGES:
        if name in DE_MISSING:
            continue
        ext = Path(name).suffix.lower()
        data = _image_bytes(".jpg" if ext in (".jpg", ".jpeg") else ext, image_size) if ext != ".png" else png
        if name == DE_TRUNCATED:
            data = data[: len(data) // 2]
        _write(root / "image-data" / name, data)
    lines = ["Filename,Date,Ground Truth,Public Comments,Finetuning Set"]
    lines += [f"{n},{d},{g},\"a comment, with a comma\",{s}" for n, d, g, s in DE_IMAGES]
    _write(root / "image-metadata-publish.csv", "\n".join(lines) + "\n")
    clip = _clip_bytes(root.parent)
    for name, *_ in DE_VIDEOS:
        _video(root / "video-data" / name, clip)
    lines = ["Filename,Finetuning Set,Video Ground Truth,Audio Ground Truth,Media"]
    lines += [",".join(v) for v in DE_VIDEOS]
    _write(root / "video-metadata-publish-with-links.csv", "\n".join(lines) + "\n")
    return root


# --- KoDF (AI Hub) -------------------------------------------------------------------------------------------
# part -> (reals, fakes as (id, target, model)); ids as listed (one with .mp4, as some tables have).
KODF = {
    "training": (["r01", "r02", "r03", "r04.mp4", "r05", "r06"],
                 [("f01", "r01", "dfl"), ("f02", "r01", "dffs"), ("f03", "r02", "fsgan"), ("f04", "r03", "fo"),
                  ("f05", "r04.mp4", "audio-driven"), ("f06", "r05", "dfl"), ("f07", "r06", "fo"),
                  ("f99", "r06", "dfl")]),       # f99 listed, not on disk
    "validation": (["r10", "r11"], [("f10", "r10", "dffs"), ("f11", "r11", "audio-driven"), ("f12", "r10", "fo")]),
}
KODF_MISSING = {"f99"}
KODF_UNLISTED = "stray.mp4"


def make_kodf(root: Path) -> Path:
    """Four Korean-named tables (the validation ones CP949, as AI Hub's often are) and videos in nested folders."""
    clip = _clip_bytes(root.parent)
    for part, (reals, fakes) in KODF.items():
        enc = "utf-8-sig" if part == "training" else "cp949"
        real_lines = ["영상ID,업로더,감정"] + [f"{r},u{i},중립" for i, r in enumerate(reals)]
        _write(root / f"원본영상_{part}_메타데이터.csv", "\n".join(real_lines) + "\n", enc)
        fake_lines = ["영상ID,타겟영상,변조모델"] + [f"{f},{t},{m}" for f, t, m in fakes]
        _write(root / f"변조영상_{part}_메타데이터.csv", "\n".join(fake_lines) + "\n", enc)
        for r in reals:
            _video(root / "원본" / part / r.removesuffix(".mp4")[:2] / f"{r.removesuffix('.mp4')}.mp4", clip)
        for f, _, m in fakes:
            if f not in KODF_MISSING:
                _video(root / "변조" / m / f"{f}.mp4", clip)
    _video(root / "기타" / KODF_UNLISTED, clip)
    return root


# --- FakeAVCeleb v1.2 ----------------------------------------------------------------------------------------
# (source, target1, target2, method, category, race folder, gender, file)
FAVC_ROWS = [
    ("id00076", "-", "-", "real", "A", "African", "men", "00109.mp4"),
    ("id00077", "-", "-", "real", "A", "Asian (East)", "women", "00020.mp4"),
    ("id00078", "-", "-", "real", "A", "Caucasian (European)", "men", "00109.mp4"),
    ("id00079", "-", "-", "real", "A", "Asian (South)", "men", "00300.mp4"),
    ("id00076", "-", "-", "rtvc", "B", "African", "men", "00109.mp4"),
    ("id00077", "-", "-", "rtvc", "B", "Asian (East)", "women", "00021.mp4"),
    ("id00076", "id00166", "-", "faceswap", "C", "African", "men", "00109_id00166_faceswap.mp4"),
    ("id00077", "id00078", "-", "fsgan", "C", "Asian (East)", "women", "00020_id00078_fsgan.mp4"),
    ("id00078", "-", "-", "wav2lip", "C", "Caucasian (European)", "men", "00109_wavtolip.mp4"),
    ("id00079", "id00076", "-", "faceswap-wav2lip", "D", "Asian (South)", "men", "00300_2_id00076_wavtolip.mp4"),
    ("id00078", "-", "-", "wav2lip", "D", "Caucasian (European)", "men", "00109_wavtolip.mp4"),
    ("id00076", "id00079", "-", "fsgan-wav2lip", "D", "African", "men", "00109_2_id00079_wavtolip.mp4"),
    ("id00077", "-", "-", "wav2lip", "D", "Asian (East)", "women", "gone_wavtolip.mp4"),  # not on disk
]
FAVC_TYPES = {"A": "RealVideo-RealAudio", "B": "RealVideo-FakeAudio", "C": "FakeVideo-RealAudio",
              "D": "FakeVideo-FakeAudio"}
FAVC_MISSING = "gone_wavtolip.mp4"


def make_fakeavceleb(root: Path) -> Path:
    """``meta_data.csv`` as shipped (header of nine names + trailing comma, rows of ten fields) and the four trees."""
    clip = _clip_bytes(root.parent)
    lines = ["source,target1,target2,method,category,type,race,gender,path,"]
    for src, t1, t2, method, cat, race, gender, file in FAVC_ROWS:
        folder = f"{FAVC_TYPES[cat]}/{race}/{gender}/{src}"
        if file != FAVC_MISSING:
            _video(root / folder / file, clip)
        race_cell = f'"{race}"' if "," in race else race
        lines.append(f"{src},{t1},{t2},{method},{cat},{FAVC_TYPES[cat]},{race_cell},{gender},{file},"
                     f"FakeAVCeleb/{folder}")
    _write(root / "meta_data.csv", "\n".join(lines) + "\n")
    return root


# --- Celeb-DF++ ----------------------------------------------------------------------------------------------
CDFPP_REALS = {"Celeb-real": ["id0_0000", "id1_0000", "id2_0000", "id3_0000"], "YouTube-real": ["00001", "00002"]}
# scenario -> method folder (as on disk) -> videos
CDFPP_FAKES = {
    "FaceSwap": {"Celeb-DF-v2": ["id0_id1_0000", "id2_id3_0000"], "BlendFace": ["id0_id2_0000", "id1_id3_0000"]},
    "FaceReenact": {"LIA": ["id0_id3_0000", "id2_id1_0000"]},
    "TalkingFace": {"SadTalker": ["id1_0000", "id3_0000", "id0_0000"]},
}
# The test list names the first face-swap folder as the later README does ("Celeb-DF").
CDFPP_TEST_LIST = [
    "1 Celeb-real/id0_0000.mp4", "1 YouTube-real/00001.mp4",
    "0 Celeb-synthesis/FaceSwap/Celeb-DF/id0_id1_0000.mp4", "0 Celeb-synthesis/FaceSwap/BlendFace/id0_id2_0000.mp4",
    "0 Celeb-synthesis/FaceReenact/LIA/id0_id3_0000.mp4", "0 Celeb-synthesis/TalkingFace/SadTalker/id0_0000.mp4",
]


def make_celebdf_pp(root: Path) -> Path:
    clip = _clip_bytes(root.parent)
    for folder, names in CDFPP_REALS.items():
        for n in names:
            _video(root / folder / f"{n}.mp4", clip)
    for scenario, methods in CDFPP_FAKES.items():
        for method, names in methods.items():
            for n in names:
                _video(root / "Celeb-synthesis" / scenario / method / f"{n}.mp4", clip)
    _write(root / "List_of_testing_videos.txt", "\n".join(CDFPP_TEST_LIST) + "\n")
    return root


# --- DiFF ----------------------------------------------------------------------------------------------------
# split -> subset -> {sub-folder ("" = directly in the subset): images}
DIFF_FAKES = {
    "val": {"T2I": {"Midjourney": 2}, "FS": {"DiffFace": 1}},
    "test": {"T2I": {"Midjourney": 1, "SDXL": 2}, "I2I": {"LoRA": 1}, "FS": {"DCFace": 2}, "FE": {"": 1}},
}
DIFF_REALS = {"val": 2, "test": 3}


def make_diff(root: Path, image_size: int = 16) -> Path:
    """``image_size``: side of the (astronaut) images; 256 for MTCNN to find the face."""
    png, jpg = _png_bytes(image_size), _image_bytes(".jpg", image_size)
    for split, n in DIFF_REALS.items():
        for i in range(n):
            _write(root / "DiFF_real" / split / "celeba" / f"r{i}.png", png)
    for split, subsets in DIFF_FAKES.items():
        for subset, subs in subsets.items():
            for sub, n in subs.items():
                for i in range(n):
                    _write(root / split / subset / sub / f"{subset.lower()}_{i}.jpg", jpg)
    _write(root / "README.txt", "not media")
    return root


# --- DeepSpeak -----------------------------------------------------------------------------------------------
# v1.1: (type, video file relative to the root, identity (real) / (source, target) (fake), kind)
DS_V11 = [
    ("real", "videos/real/118-1626.mp4", "118", ""),
    ("real", "videos/real/119-1737.mp4", "119", ""),
    ("real", "videos/real/120-1800.mp4", "120", ""),
    ("real", "videos/real/121-1801.mp4", "121", ""),
    ("fake", "videos/fake/facefusion--118-119--1626-1737--0.mp4", ("118", "119"), "face-swap"),
    ("fake", "videos/fake/wav2lip--120-120--1800-1800--0.mp4", ("120", "120"), "lip-sync"),
    ("fake", "videos/fake/retalking--121-121--1801-1801--1.mp4", ("121", "121"), "lip-sync"),
    ("fake", "videos/fake/facefusion_gan--119-118--1737-1626--2.mp4", ("119", "118"), "face-swap"),
]
DS_SPLIT_DEF = {"118": "train", "119": "train", "120": "train", "121": "test"}
# v2: flat columns and a split column; file names without actor ids.
DS_V2 = [
    ("real", "train/6868.mp4", "a1", "", "", "train"),
    ("real", "train/6860.mp4", "a2", "", "", "train"),
    ("real", "test/7001.mp4", "a3", "", "", "test"),
    ("fake", "train/diff2lip-6868-6860-playht.mp4", "a1", "lip-sync", "diff2lip", "train"),
    ("fake", "train/hellomeme-6860-6868-playht.mp4", "a2", "avatar", "hellomeme", "train"),
    ("fake", "test/liveportrait-7001-7001-none.mp4", "a3", "talking-head", "liveportrait", "test"),
]


def make_deepspeak(root: Path, version: str = "v1_1") -> Path:
    """v1_1: annotations-v11.csv with HF-export dict cells + annotations-split-def.csv; v2: flat columns."""
    clip = _clip_bytes(root.parent)
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    if version == "v1_1":
        out.writerow(["type", "video-file", "metadata-real", "metadata-fake"])
        for typ, rel, ids, kind in DS_V11:
            _video(root / rel, clip)
            if typ == "real":
                out.writerow([typ, rel, json.dumps({"identity": ids}), ""])
            else:  # a Python literal, as an export of the HF dataset writes dict cells
                out.writerow([typ, rel, "", str({"kind": kind, "identity-source": ids[0], "identity-target": ids[1],
                                                 "recording-target-ai-generated": False})])
        _write(root / "annotations-v11.csv", buf.getvalue())
        _write(root / "annotations-split-def.csv",
               "identity,split\n" + "".join(f"{i},{s}\n" for i, s in DS_SPLIT_DEF.items()))
    else:
        out.writerow(["type", "video-file", "identity", "kind", "engine", "split"])
        for typ, rel, ident, kind, engine, split in DS_V2:
            _video(root / rel, clip)
            out.writerow([typ, rel, ident, kind, engine, split])
        _write(root / "annotations-v2.csv", buf.getvalue())
    return root


# --- AV-Deepfake1M -------------------------------------------------------------------------------------------
def av1m_entry(file: str, modify: str, segs: list | None = None, visual: list | None = None,
               audio: list | None = None, frames: int = 4) -> dict:
    original = None if modify == "real" else file.rsplit("/", 1)[0] + "/real.mp4"
    return {"file": file, "original": original, "split": "train", "modify_type": modify, "audio_model": "yourtts",
            "fake_segments": segs or [], "visual_fake_segments": visual if visual is not None else [],
            "audio_fake_segments": audio if audio is not None else [], "video_frames": frames, "audio_frames": 100}


AV1M = {
    "train": [
        av1m_entry("id00012/clipA/00001/real.mp4", "real"),
        av1m_entry("id00012/clipA/00001/fake_video_fake_audio.mp4", "both_modified", [[0.1, 0.3]], [[0.1, 0.3]],
                   [[0.1, 0.3]]),
        av1m_entry("id00012/clipA/00001/real_video_fake_audio.mp4", "audio_modified", [[0.1, 0.2]], [],
                   [[0.1, 0.2]]),
        av1m_entry("id00034/clipB/00002/real.mp4", "real"),
        # the visual list copies fake_segments for a visual-only fake (a known quirk): still the visual spans
        av1m_entry("id00034/clipB/00002/fake_video_real_audio.mp4", "visual_modified", [[0.0, 0.1]], [[0.0, 0.1]]),
        av1m_entry("id00056/clipC/00003/real.mp4", "real"),
        av1m_entry("id00056/clipC/00003/fake_video_real_audio.mp4", "visual_modified", [[0.2, 0.4]], []),
        av1m_entry("id00078/clipD/00004/real.mp4", "real"),
        av1m_entry("id00078/clipD/00004/gone.mp4", "visual_modified", [[0.0, 0.1]], [[0.0, 0.1]]),  # not on disk
    ],
    "val": [
        av1m_entry("id09999/clipZ/00009/real.mp4", "real"),
        av1m_entry("id09999/clipZ/00009/fake_video_fake_audio.mp4", "both_modified", [[0.0, 0.2]], [[0.0, 0.2]]),
        av1m_entry("id09999/clipZ/00009/real_video_fake_audio.mp4", "audio_modified", [[0.1, 0.2]], []),
    ],
}
AV1M_MISSING = "id00078/clipD/00004/gone.mp4"


def make_av_deepfake1m(root: Path, clip: bytes | None = None) -> Path:
    """``{train,val}_metadata.json`` + ``{train,val}/<id>/<clip>/<seg>/*.mp4`` and an unlabelled ``test/``."""
    clip = clip or _clip_bytes(root.parent)
    for subset, entries in AV1M.items():
        _write(root / f"{subset}_metadata.json", json.dumps(entries))
        for e in entries:
            if e["file"] != AV1M_MISSING:
                _video(root / subset / e["file"], clip)
    _video(root / "test/id1/c/1/x.mp4", clip)
    _write(root / "test_files.txt", "id1/c/1/x.mp4\n")
    return root


# --- RedFace without reals -----------------------------------------------------------------------------------
# fake folder / type folder / platform folder -> items
REDFACE_FAKES_ONLY = {
    ("fake_images", "Entire_Face_Synthesis", "PlatformA"): 3,
    ("fake_images", "Face_Attribute_Manipulation", "PlatformB"): 2,
    ("fake_images", "Face_Swapping", "PlatformA"): 2,
    ("fake_videos", "Face_Reenactment", "PlatformC"): 2,
}


def make_redface_fakes_only(root: Path) -> Path:
    png, clip = _png_bytes(), _clip_bytes(root.parent)
    for (top, kind, platform), n in REDFACE_FAKES_ONLY.items():
        for i in range(n):
            if top == "fake_videos":
                _video(root / top / kind / platform / f"v{i}.mp4", clip)
            else:
                _write(root / top / kind / platform / f"i{i}.png", png)
    return root
