"""The shortcut audit: metadata-only real/fake AUC from file headers (dfd.store.probe, dfd.sources.audit), in every
``dfd-index`` summary and, with ``--audit``, its tables; the metadata cache beside the index."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dfd.errors import ConfigError
from dfd.sources.audit import AuditSettings, audit_index, audit_items, cross_validated_auc
from dfd.sources.folder import Folder
from dfd.store import probe
from tests.layouts_images import make_alike_images, make_shortcut_images
from tests.media import write_corrupt_video, write_face_video

DFD_INDEX = Path(sys.executable).with_name("dfd-index")


def test_dfd_index_audit_flags_a_resolution_shortcut(tmp_path: Path) -> None:
    """Fakes all 640x480, reals all 1280x720: metadata alone gives the label away (AUC >= 0.95), the summary
    warns naming the resolution, --audit prints the per-feature and per-method tables, the cache is written."""
    root = make_shortcut_images(tmp_path / "shots", n=6)
    out = tmp_path / "idx" / "shots.parquet"
    proc = subprocess.run([str(DFD_INDEX), "dataset=folder", f"dataset.root={root}", f"index_path={out}", "--audit"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    warn = [ln for ln in proc.stdout.splitlines() if ln.startswith("warning: shortcut audit:")]
    assert len(warn) == 1, proc.stdout
    auc = float(warn[0].split("with AUC ")[1].split()[0])
    assert auc >= 0.95
    assert "18 files" in warn[0] and ">= audit.warn_auc 0.75" in warn[0] and "learn the source instead" in warn[0]
    strongest = warn[0].split("strongest alone: ")[1]
    assert {"width", "height"} & {f.split()[0] for f in strongest.split(", ")}
    table = {ln.split()[0]: ln.split()[1:] for ln in proc.stdout.splitlines() if ln.startswith("  ")}
    assert table["width"][:2] == ["1280", "640"] and table["height"][:2] == ["720", "480"]  # real / fake medians
    assert any(ln.strip().startswith("reals vs m1: metadata-only AUC") for ln in proc.stdout.splitlines())
    cache = probe.cache_path(out)
    assert cache == out.with_name("shots_media.parquet") and len(pd.read_parquet(cache)) == 18


def test_audit_of_alike_draws_says_nothing_and_reruns_from_the_cache(tmp_path: Path) -> None:
    root = make_alike_images(tmp_path / "alike", n=30, seed=1)
    index = Folder("folder", root, tmp_path / "c").build_index()
    cache = tmp_path / "index_media.parquet"
    res = audit_index(index, root, cache, AuditSettings())
    assert res.n_real == res.n_fake == 30 and res.folds == 5 and res.unreadable == 0
    assert res.auc <= 0.65, res.line(0.75)
    assert not res.warns(0.75) and "below audit.warn_auc 0.75" in res.line(0.75)
    # A re-run reads no file: the cached facts stand while size and mtime match (here: garbage of the same size).
    first = index["path"].iloc[0]
    f = root / first
    st = f.stat()
    f.write_bytes(b"\0" * st.st_size)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = audit_index(index, root, cache, AuditSettings())
    assert again.auc == res.auc and again.unreadable == 0
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a changed file is read again
    assert audit_index(index, root, cache, AuditSettings()).unreadable == 1


def test_probe_reads_headers_only_and_records_bad_files(tmp_path: Path) -> None:
    video, _ = write_face_video(tmp_path / "v.mp4", n_frames=5, size=96, canvas=128, fps=10)
    v = probe.probe(video, "video")
    assert (v["width"], v["height"], v["fps"], v["frames"], v["codec"], v["pix_fmt"]) == (128, 128, 10, 5, "h264",
                                                                                           "yuv420p")
    assert v["duration"] == pytest.approx(0.5) and v["bit_rate"] > 0 and v["size"] == video.stat().st_size
    jpg = tmp_path / "q.jpg"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(jpg, quality=50)
    with Image.open(jpg) as im:
        tables = im.quantization
    i = probe.probe(jpg, "image")
    assert (i["width"], i["height"], i["codec"], i["frames"]) == (40, 30, "jpeg", 1)
    assert i["q_luma"] == pytest.approx(np.mean(tables[0])) and i["q_chroma"] == pytest.approx(np.mean(tables[1]))
    assert np.isnan(i["fps"]) and np.isnan(i["bit_rate"])
    bad = probe.probe(write_corrupt_video(tmp_path / "bad.mp4"), "video")
    assert bad["error"].startswith("InvalidDataError") and np.isnan(bad["width"])
    assert probe.probe(tmp_path / "gone.mp4", "video")["error"].startswith("FileNotFoundError")


def test_small_sets_are_uninformative_not_inverted() -> None:
    """Out-of-fold scores are centred on each fold's training prior: features that say nothing give AUC 0.5,
    where raw probabilities of a tree-less model carry the held-out class's deficit (AUC 0)."""
    y = np.array([0, 0, 0, 1, 1, 1])
    auc, k = cross_validated_auc(np.zeros((6, 0)), y, np.arange(6).astype(str), folds=3)
    assert (auc, k) == (0.5, 3)
    auc, k = cross_validated_auc(np.ones((6, 1)), y, np.arange(6).astype(str), folds=3)
    assert auc == 0.5
    assert np.isnan(cross_validated_auc(np.zeros((3, 1)), np.array([0, 1, 1]), np.array(["a", "b", "c"]))[0])
    items = pd.DataFrame({"label": [0, 1], "group": ["a", "b"], "error": ["", "InvalidDataError: x"],
                          **{c: [1.0, np.nan] for c in probe.NUMERIC}, "codec": ["h264", ""], "pix_fmt": ["", ""]})
    res = audit_items(items, "tiny")
    assert (res.n_real, res.n_fake, res.unreadable) == (1, 0, 1)
    assert res.line(0.75) == "tiny: shortcut audit: 1 real / 0 fake files readable: nothing to tell apart"


def test_audit_settings_name_typos_and_bad_values() -> None:
    with pytest.raises(ConfigError, match=r"unknown audit settings \['warn_aucc'\]"):
        AuditSettings.from_mapping({"warn_aucc": 0.8})
    with pytest.raises(ConfigError, match="audit.warn_auc"):
        AuditSettings.from_mapping({"warn_auc": 1.5})
    assert AuditSettings.from_mapping({"max_files": 0}).max_files == 0
