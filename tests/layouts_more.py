"""Tiny datasets in the layouts of the cross-dataset test bed (see /work/shared/datasets-more.md).

DFDC, DFDC-Preview, DeeperForensics-1.0, FFIW-10K, UADFV, DF40 and DeepfakeBench's pre-processed crops + JSONs,
each with the quirks its users meet: unpadded part numbers, upper/lower-case labels, missing metadata and
missing files, frame files named by original frame index (``1485.png`` sorts after ``990.png``), videos with
fewer than 32 crops, DeepfakeBench's leaky splits and machine-specific path prefixes. Videos are copies of one
real H.264 clip (``tests.layouts._clip_bytes``); crops are real PNGs; landmark files are real ``.npy`` arrays.
Module constants say what was written so tests assert exact counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.layouts import _clip_bytes, _png_bytes, _video


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)


# --- DFDC --------------------------------------------------------------------------------------------------
# part number (as on disk, not zero-padded) -> {file: (LABEL, original)}; part 3 has no metadata.json.
DFDC_PARTS = {
    0: {"r0a.mp4": ("REAL", None), "r0b.mp4": ("REAL", None), "f0a.mp4": ("FAKE", "r0a.mp4"),
        "f0b.mp4": ("FAKE", "r0a.mp4"), "f0c.mp4": ("FAKE", "r0b.mp4")},
    7: {"r7a.mp4": ("REAL", None), "f7a.mp4": ("FAKE", "r7a.mp4"),
        "f7b.mp4": ("FAKE", "r0b.mp4"),  # its original sits in another part
        "m7.mp4": ("FAKE", "r7a.mp4")},  # listed, missing on disk
    12: {"r12a.mp4": ("REAL", None), "f12a.mp4": ("FAKE", "r12a.mp4")},
}
DFDC_MISSING = {"dfdc_train_part_7/m7.mp4"}
DFDC_UNLISTED = {"dfdc_train_part_0/zzz.mp4"}  # on disk, absent from metadata.json
DFDC_NO_METADATA = {"dfdc_train_part_3": ("a3.mp4", "b3.mp4")}
DFDC_TEST = {"t1.mp4": 0, "t2.mp4": 1, "t3.mp4": 1, "t4.mp4": 0}  # t4 listed, missing on disk
DFDC_VALIDATION = {"v1.mp4": 0, "v2.mp4": 1}


def make_dfdc(root: Path, parts: dict | None = None, validation: bool = True) -> Path:
    clip = _clip_bytes(root.parent)
    parts = DFDC_PARTS if parts is None else parts
    for k, meta in parts.items():
        d = root / "train" / f"dfdc_train_part_{k}"
        entries = {f: {"label": lab, "split": "train", "original": orig} for f, (lab, orig) in meta.items()}
        _write(d / "metadata.json", json.dumps(entries))
        for f in meta:
            if f"{d.name}/{f}" not in DFDC_MISSING:
                _video(d / f, clip)
    if parts is DFDC_PARTS:
        _video(root / "train/dfdc_train_part_0/zzz.mp4", clip)
        for part, files in DFDC_NO_METADATA.items():
            for f in files:
                _video(root / "train" / part / f, clip)
    lines = ["filename,label"] + [f"{f},{v}" for f, v in DFDC_TEST.items()]
    _write(root / "test/labels.csv", "\n".join(lines) + "\n")
    meta = {f: {"is_fake": v, "augmentations": {}} for f, v in DFDC_TEST.items()}
    _write(root / "test/metadata.json", json.dumps(meta))
    for f in DFDC_TEST:
        if f != "t4.mp4":
            _video(root / "test" / f, clip)
    if validation:
        _write(root / "validation/labels.csv", "filename,label\n" + "".join(f"{f},{v}\n" for f, v in DFDC_VALIDATION.items()))
        for f in DFDC_VALIDATION:
            _video(root / "validation" / f, clip)
    return root


# --- DFDC Preview --------------------------------------------------------------------------------------------
# Train identities 100001..100006: each has two real clips; each fake pastes identity i+1's face onto i's clip A.
DFDCP_TRAIN_IDS = [str(100001 + i) for i in range(6)]


def dfdcp_entries() -> dict[str, dict]:
    """dataset.json content: lower-case labels, set train/test, target_id/swapped_id (source_video on some)."""
    e: dict[str, dict] = {}
    ids = DFDCP_TRAIN_IDS
    for i, t in enumerate(ids):
        for scene in ("A", "B"):
            e[f"original_videos/{t}/{t}_{scene}_001.mp4"] = {"label": "real", "set": "train", "target_id": t}
        s = ids[(i + 1) % len(ids)]
        e[f"method_B/{t}/{t}_A/{s}_{t}_A_001.mp4"] = {
            "label": "fake", "set": "train", "target_id": t, "swapped_id": s, "augmentations": []}
    # A method_A fake whose name says nothing: pairing only through source_video.
    e[f"method_A/{ids[0]}/{ids[0]}_B/qwerty.mp4"] = {
        "label": "fake", "set": "train", "target_id": ids[0], "swapped_id": ids[0],
        "source_video": f"original_videos/{ids[0]}/{ids[0]}_B_001.mp4"}
    e["original_videos/777777/777777_A_001.mp4"] = {"label": "real", "set": "test", "target_id": "777777"}
    e["method_B/777777/777777_A/888888_777777_A_001.mp4"] = {
        "label": "fake", "set": "test", "target_id": "777777", "swapped_id": "888888"}
    e["method_A/888888/888888_B/zz.mp4"] = {  # its real is not in the set: the given name is kept
        "label": "fake", "set": "test", "target_id": "888888", "swapped_id": "777777", "source_video": "888888_B_001.mp4"}
    e["method_B/100002/100002_B/100003_100002_B_001.mp4"] = {"label": "fake", "set": "train"}  # missing on disk
    return e


DFDCP_MISSING = "method_B/100002/100002_B/100003_100002_B_001.mp4"


def make_dfdcp(root: Path) -> Path:
    clip = _clip_bytes(root.parent)
    entries = dfdcp_entries()
    _write(root / "dataset.json", json.dumps(entries))
    for rel in entries:
        if rel != DFDCP_MISSING:
            _video(root / rel, clip)
    return root


# --- DeeperForensics-1.0 -------------------------------------------------------------------------------------
DRF_SPLITS = {"train": ["000_M101.mp4", "001_W102.mp4"], "val": ["002_M103"], "test": ["003_W104", "004_M105", "005_M106"]}
DRF_ON_DISK = ["000_M101", "001_W102", "002_M103", "003_W104", "004_M105", "006_M107"]  # 005 missing, 006 unlisted
DRF_VARIANTS = ("end_to_end", "end_to_end_level_2")
# lists/manipulated_videos_distortions_meta of the perturbed variant, as the authors' script writes it (its output
# path, then <TYPE>:<level> per distortion applied); 006 is unlisted like the video itself.
DRF_META = {"end_to_end_level_2": {"000_M101": "CS:2", "001_W102": "GB:2", "002_M103": "VC:2", "003_W104": "BW:2",
                                   "004_M105": "GNC:2"}}


def make_deeperforensics(root: Path, ffpp_root: Path | None = None) -> Path:
    clip = _clip_bytes(root.parent)
    for variant in DRF_VARIANTS:
        for stem in DRF_ON_DISK:
            _video(root / "manipulated_videos" / variant / f"{stem}.mp4", clip)
    for split, names in DRF_SPLITS.items():
        _write(root / "lists/splits" / f"{split}.txt", "\n".join(names) + "\n")
    for variant, meta in DRF_META.items():
        lines = [f"manipulated_videos/{variant}/{stem}.mp4 {chain}" for stem, chain in meta.items()]
        _write(root / "lists/manipulated_videos_distortions_meta" / f"manipulated_videos_{variant}_meta.txt",
               "\n".join(lines) + "\n")
    _video(root / "source_videos/M101/BlendShape/camera_down/M101_BlendShape_camera_down.mp4", clip)
    if ffpp_root is not None:
        for vid in ("000", "001", "002", "003", "004", "999"):
            _video(ffpp_root / "original_sequences/youtube/c23/videos" / f"{vid}.mp4", clip)
    return root


# --- FFIW-10K ------------------------------------------------------------------------------------------------
FFIW_PAIRS = {"train": 3, "val": 2}  # source/<split> and target/<split>, same names
FFIW_TEST_PAIRS = 1  # in the separate test release


def make_ffiw(root: Path, test_root: Path | None = None) -> Path:
    clip = _clip_bytes(root.parent)
    for split, n in FFIW_PAIRS.items():
        for i in range(n):
            for folder in ("source", "target"):
                _video(root / folder / split / f"{split}_{i:08d}.mp4", clip)
    _video(root / "target/train/train_00000003.mp4", clip)  # a fake without its real
    _video(root / "target_mask/train/train_00000000_mask.mp4", clip)
    if test_root is not None:
        for i in range(FFIW_TEST_PAIRS):
            for folder in ("source", "target"):
                _video(test_root / folder / "test" / f"test_{i:08d}.mp4", clip)
    return root


# --- UADFV ---------------------------------------------------------------------------------------------------
UADFV_PAIRS = 10


def make_uadfv(root: Path) -> Path:
    clip = _clip_bytes(root.parent)
    for i in range(UADFV_PAIRS):
        _video(root / "real" / f"{i:04d}.mp4", clip)
        _video(root / "fake" / f"{i:04d}_fake.mp4", clip)
    return root


# --- DeepfakeBench-format crops ------------------------------------------------------------------------------
# Frame files are named by original frame index: numeric order differs from string order ("1485" < "495").
DB_FRAMES = ("000.png", "495.png", "990.png", "1485.png")
DB_SHORT_FRAMES = ("000.png", "1485.png")  # dlib missed the middle frames: fewer than 32 (and than 4)
# Points 36-41 average to (10, 20), 42-47 to (30, 20), nose tip 30 = (20, 30), mouth corners (12, 40), (28, 40).
LM81 = np.zeros((81, 2), np.int64)
LM81[36:42] = [[9, 19], [11, 21], [10, 20], [10, 20], [9, 21], [11, 19]]
LM81[42:48] = [[30, 20]] * 6
LM81[30], LM81[48], LM81[54] = [20, 30], [12, 40], [28, 40]
LM5 = [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]]


def write_crops(root: Path, folder: str, names=DB_FRAMES, landmarks: bool = True) -> list[str]:
    """``<root>/<folder>/<name>.png`` crops and, next to ``frames/``, ``landmarks/.../<name>.npy``."""
    png = _png_bytes()
    out = []
    for n in names:
        _write(root / folder / n, png)
        if landmarks:
            lm = root / folder.replace("/frames/", "/landmarks/") / n.replace(".png", ".npy")
            lm.parent.mkdir(parents=True, exist_ok=True)
            np.save(lm, LM81)
        out.append(f"{folder}/{n}")
    return out


# How DeepfakeBench JSONs write paths on the machine that made them (each fixture JSON mixes several).
PREFIXES = (
    "D:\\DeepfakeBench\\datasets\\rgb\\",  # Windows, backslashes throughout
    "./datasets\\rgb\\",  # rgb mode: ./{rgb_dir}\ joined with a literal backslash
    "/data/home/someone/DeepfakeBench/datasets/rgb/",  # an absolute path on the preparer's machine
)


def _as_written(rel: str, k: int) -> str:
    prefix = PREFIXES[k % len(PREFIXES)]
    return prefix + (rel.replace("/", "\\") if prefix.startswith("D:") else rel)


def write_db_json(json_dir: Path, name: str, tree: dict, rgb: Path, short: set[str] = frozenset(),
                  missing: set[str] = frozenset(), extra: dict | None = None) -> Path:
    """``<json_dir>/<name>.json`` from ``tree = {sub_label: {split: {[comp:] {video: folder}}}}``.

    Every folder's crops are written under ``rgb`` (``short``: 2 frames only; ``missing``: not written), and the
    JSON lists them with machine-specific prefixes, as DeepfakeBench's downloads do.
    """
    counter = [0]

    def videos(mapping: dict, label: str) -> dict:
        out = {}
        for vname, folder in mapping.items():
            names = DB_SHORT_FRAMES if folder in short else DB_FRAMES
            if folder not in missing and not (rgb / folder).is_dir():
                write_crops(rgb, folder, names)
            counter[0] += 1
            out[vname] = {"label": label, "frames": [_as_written(f"{folder}/{n}", counter[0]) for n in names]}
        return out

    data: dict = {}
    for label, splits in tree.items():
        data[label] = {}
        for split, content in splits.items():
            if content and all(k in ("c23", "c40") for k in content):
                data[label][split] = {c: videos(v, label) for c, v in content.items()}
            else:
                data[label][split] = videos(content, label)
    for label, splits in (extra or {}).items():
        for split, content in splits.items():
            data[label].setdefault(split, {}).update(content)
    path = json_dir / f"{name}.json"
    _write(path, json.dumps({name: data}))
    return path


def db_ffpp(rgb: Path, json_dir: Path) -> dict:
    """FaceForensics++ with c23 and c40 levels; official pairs train (000,003), val (001,002), test (004,005)."""
    pairs = {"train": ("000", "003"), "val": ("001", "002"), "test": ("004", "005")}
    ff = "FaceForensics++"

    def level(comp: str, real: bool, split: str) -> dict:
        a, b = pairs[split]
        if real:
            return {v: f"{ff}/original_sequences/youtube/{comp}/frames/{v}" for v in (a, b)}
        return {s: f"{ff}/manipulated_sequences/Deepfakes/{comp}/frames/{s}" for s in (f"{a}_{b}", f"{b}_{a}")}

    tree = {lab: {s: {"c23": level("c23", lab == "FF-real", s), "c40": level("c40", lab == "FF-real", s)}
                  for s in pairs} for lab in ("FF-real", "FF-DF")}
    short = {f"{ff}/original_sequences/youtube/c23/frames/000"}
    c40 = {f for lab in tree.values() for s in lab.values() for f in s["c40"].values()}
    write_db_json(json_dir, ff, tree, rgb, short=short, missing=c40)
    return tree


# Celeb-DF-v2 as rearrange.py builds it: train = every video (test ones included), test = val = the list.
DB_CELEB_TEST = {"CelebDFv2_real": ["Celeb-real/id0_0000", "YouTube-real/00000"],
                 "CelebDFv2_fake": ["Celeb-synthesis/id0_id1_0000"]}
DB_CELEB_ALL = {"CelebDFv2_real": [f"Celeb-real/id{i}_0000" for i in range(6)] + ["YouTube-real/00000", "YouTube-real/00001"],
                "CelebDFv2_fake": ["Celeb-synthesis/id0_id1_0000", "Celeb-synthesis/id1_id0_0000",
                                   "Celeb-synthesis/id2_id3_0000", "Celeb-synthesis/id3_id2_0000",
                                   "Celeb-synthesis/id4_id5_0000", "Celeb-synthesis/id5_id4_0000"]}


def db_celebdf(rgb: Path, json_dir: Path) -> None:
    def folders(vids):
        return {v.split("/")[1]: "Celeb-DF-v2/{}/frames/{}".format(*v.split("/")) for v in vids}

    tree = {lab: {"train": folders(DB_CELEB_ALL[lab]), "test": folders(DB_CELEB_TEST[lab]),
                  "val": folders(DB_CELEB_TEST[lab])} for lab in DB_CELEB_ALL}
    write_db_json(json_dir, "Celeb-DF-v2", tree, rgb, short={"Celeb-DF-v2/Celeb-real/frames/id3_0000"})


# DFDC: train parts 0, 5, 11 (not zero-padded), the test set, and a val that rearrange.py corrupts.
DB_DFDC_TRAIN = {0: ["r0", "f0a", "f0b"], 5: ["r5", "f5"], 11: ["r11", "f11"]}
DB_DFDC_TEST = ["t1", "t2", "tf1"]


def db_dfdc(rgb: Path, json_dir: Path) -> None:
    def label(v):
        return "DFDC_Fake" if v.startswith(("f", "tf")) else "DFDC_Real"

    tree: dict = {"DFDC_Real": {"train": {}, "test": {}, "val": {}}, "DFDC_Fake": {"train": {}, "test": {}, "val": {}}}
    for k, vids in DB_DFDC_TRAIN.items():
        for v in vids:
            tree[label(v)]["train"][v] = f"DFDC/train/dfdc_train_part_{k}/frames/{v}"
            tree[label(v)]["val"][v] = f"DFDC/train/dfdc_train_part_{k}/frames/{v}"  # val "filled with every train video"
    for v in DB_DFDC_TEST:
        tree[label(v)]["test"][v] = f"DFDC/test/frames/{v}"
    # The part folder still holds metadata.json: fakes' originals (the pairing DeepfakeBench's JSON drops).
    _write(rgb / "DFDC/train/dfdc_train_part_0/metadata.json",
           json.dumps({"f0a.mp4": {"label": "FAKE", "original": "r0.mp4"}, "f0b.mp4": {"label": "FAKE", "original": "r0.mp4"},
                       "r0.mp4": {"label": "REAL", "original": None}}))
    # rearrange.py overwrites DFDC's val with one {label, frames} dict before filling it.
    extra = {"DFDC_Real": {"val": {"label": "DFDC_Real", "frames": ["DFDC/test/frames/t1/000.png"]}}}
    write_db_json(json_dir, "DFDC", tree, rgb, extra=extra)


# UADFV and DeepFakeDetection: every video copied into train, val and test.
def db_uadfv(rgb: Path, json_dir: Path, pairs: int = 6) -> None:
    reals = {f"{i:04d}": f"UADFV/real/frames/{i:04d}" for i in range(pairs)}
    fakes = {f"{i:04d}_fake": f"UADFV/fake/frames/{i:04d}_fake" for i in range(pairs)}
    tree = {"UADFV_Real": dict.fromkeys(("train", "val", "test"), reals),
            "UADFV_Fake": dict.fromkeys(("train", "val", "test"), fakes)}
    write_db_json(json_dir, "UADFV", tree, rgb)


DB_DFD_REALS = [f"{a:02d}__kitchen" for a in range(1, 7)]
DB_DFD_FAKES = ["01_02__kitchen__AAAAAAAA", "03_04__kitchen__BBBBBBBB", "05_06__kitchen__CCCCCCCC",
                "02_01__kitchen__DDDDDDDD"]


def db_dfd(rgb: Path, json_dir: Path) -> None:
    ff = "FaceForensics++"
    reals = {v: f"{ff}/original_sequences/actors/c23/frames/{v}" for v in DB_DFD_REALS}
    fakes = {v: f"{ff}/manipulated_sequences/DeepFakeDetection/c23/frames/{v}" for v in DB_DFD_FAKES}
    tree = {"DFD_real": {s: {"c23": reals} for s in ("train", "val", "test")},
            "DFD_fake": {s: {"c23": fakes} for s in ("train", "val", "test")}}
    write_db_json(json_dir, "DeepFakeDetection", tree, rgb)


# DeeperForensics: fakes split by the official lists; reals (actors' source_videos) copied into every split.
DB_DRF_FAKES = {"train": ["000_M101", "001_W102"], "val": ["002_M103"], "test": ["003_W104"]}
DB_DRF_REALS = {"M101": 2, "W102": 1, "M103": 1, "W104": 1, "M999": 1}  # actor -> clips (M999 in no fake)


def db_deeperforensics(rgb: Path, json_dir: Path) -> None:
    d = "DeeperForensics-1.0"
    reals = {f"{a}_light_down_happy_camera_{c}": f"{d}/source_videos/{a}/frames/{a}_light_down_happy_camera_{c}"
             for a, n in DB_DRF_REALS.items() for c in ("front", "left")[:n]}
    tree = {"DF_real": dict.fromkeys(("train", "val", "test"), reals),
            "DF_fake": {s: {v: f"{d}/manipulated_videos/end_to_end/frames/{v}" for v in vids}
                        for s, vids in DB_DRF_FAKES.items()}}
    write_db_json(json_dir, "DeeperForensics-1.0", tree, rgb)


# DFDCP: train/test from dataset.json's set; val = test.
DB_DFDCP = {
    "DFDCP_Real": {"train": [f"original_videos/frames/{t}_A_001" for t in ("100001", "100002", "100003", "100004")],
                   "test": ["original_videos/frames/777777_A_001"]},
    "DFDCP_FakeB": {"train": ["method_B/frames/100002_100001_A_001", "method_B/frames/100001_100002_A_001",
                              "method_B/frames/100004_100003_A_001", "method_B/frames/100003_100004_A_001"],
                    "test": ["method_B/frames/888888_777777_A_001"]},
}


def db_dfdcp(rgb: Path, json_dir: Path) -> None:
    tree = {lab: {s: {Path(f).name: f"DFDCP/{f}" for f in fs} for s, fs in splits.items()}
            for lab, splits in DB_DFDCP.items()}
    for lab in tree:
        tree[lab]["val"] = dict(tree[lab]["test"])
    write_db_json(json_dir, "DFDCP", tree, rgb)


def make_deepfakebench(base: Path) -> tuple[Path, Path]:
    """``base/rgb`` (the crops) and ``base/dataset_json`` (the JSONs) for every dataset above."""
    rgb, json_dir = base / "rgb", base / "dataset_json"
    for build in (db_ffpp, db_celebdf, db_dfdc, db_uadfv, db_dfd, db_deeperforensics, db_dfdcp):
        build(rgb, json_dir)
    return rgb, json_dir


# --- DF40 ----------------------------------------------------------------------------------------------------
# (tree, method folder, domain folder) -> video folders (relative to the domain folder) with crops.
DF40_TEST = {
    ("DF40", "simswap", "ff"): ["frames/004_005", "frames/005_004"],
    ("DF40", "simswap", "cdf"): ["frames/id0_id1_0000"],
    ("DF40", "inswap", "ff"): ["frames/004_005"],
    ("DF40", "danet", "ff"): ["frames/005_004"],
    ("DF40", "StyleGAN2", "ff"): ["004", "005"],  # EFS: images binned in folders, no frames/ level
    ("DF40", "e4e", "fake"): ["frames/a1"],
    ("DF40", "e4e", "real"): ["frames/b1"],
}
DF40_TRAIN = {
    ("DF40_train", "simswap", "ff"): ["frames/000_003", "frames/003_000", "frames/006_007", "frames/007_006",
                                      "frames/008_009", "frames/009_008"],
    ("DF40_train", "inswap", "ff"): ["frames/000_003", "frames/006_007"],
}
DF40_EMPTY = [("DF40", "sd2.1", "ff"), ("DF40", "ddim", "ff", "frames/empty_video")]
# FF++ reals in DeepfakeBench format and FF++'s official pairs.
DF40_FF_PAIRS = {"train": [["000", "003"], ["006", "007"], ["008", "009"]], "val": [["001", "002"]],
                 "test": [["004", "005"]]}
DF40_CDF_REALS = ["Celeb-real/id0_0000", "Celeb-real/id1_0000", "YouTube-real/00001"]
DF40_CDF_TEST_LIST = ["1 Celeb-real/id0_0000.mp4", "0 Celeb-synthesis/id0_id1_0000.mp4"]


def make_df40(base: Path) -> dict[str, Path]:
    """``base/DF40``, ``base/DF40_train`` and the reals ``base/rgb/{FaceForensics++,Celeb-DF-v2}``."""
    for (tree, method, dom), folders in {**DF40_TEST, **DF40_TRAIN}.items():
        for f in folders:
            names = ("seed0001.png", "seed0417.png") if method == "StyleGAN2" else DB_FRAMES
            write_crops(base, f"{tree}/{method}/{dom}/{f}", names, landmarks=f.startswith("frames/"))
    for tree, method, dom, *rest in DF40_EMPTY:
        (base / tree / method / dom / (rest[0] if rest else "")).mkdir(parents=True, exist_ok=True)
    ff = base / "rgb/FaceForensics++"
    for vid in sorted({v for ps in DF40_FF_PAIRS.values() for p in ps for v in p}):
        write_crops(base, f"rgb/FaceForensics++/original_sequences/youtube/c23/frames/{vid}")
    for split, pairs in DF40_FF_PAIRS.items():
        _write(ff / f"{split}.json", json.dumps(pairs))  # DeepfakeBench keeps them in the FF++ root
    cdf = base / "rgb/Celeb-DF-v2"
    for v in DF40_CDF_REALS:
        folder, name = v.split("/")
        write_crops(base, f"rgb/Celeb-DF-v2/{folder}/frames/{name}")
    _write(cdf / "List_of_testing_videos.txt", "\n".join(DF40_CDF_TEST_LIST))
    return {"root": base / "DF40", "train_root": base / "DF40_train", "ff": ff, "cdf": cdf}
