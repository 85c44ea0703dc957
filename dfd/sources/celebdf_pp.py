"""Celeb-DF++ (OUC-VAS, arXiv 2507.18015): Celeb-DF's videos re-forged by 22 methods in three scenarios.

Layout (the authors' README)::

    Celeb-real/   YouTube-real/                                  Celeb-DF's reals
    Celeb-synthesis/FaceSwap/{Celeb-DF (or Celeb-DF-v2), BlendFace, GHOST, ...}/*.mp4
    Celeb-synthesis/FaceReenact/{DaGAN, FSRT, ...}/*.mp4
    Celeb-synthesis/TalkingFace/{AniTalker, EchoMimic, ...}/*.mp4
    List_of_testing_videos.txt                                   "<token> <relative path>" per line

Scenario and method folders are discovered (case-insensitive; ``FaceSwap/Celeb-DF-v2`` is read as
``Celeb-DF``, the name of the later README). A test-list line is labelled by its path, as the authors' code
does (``*-real/`` real, ``Celeb-synthesis/`` fake); its numeric token is ignored (its convention is not
documented). ``method`` is the method folder, ``scenario`` its scenario, ``method_type`` the scenario's kind
(face swap, reenactment, talking face).

Protocols (``dataset.protocol``):

* ``gf`` (GF-eval, the three scenarios): test = the test list (178 reals + 200/200/300 fakes per face-swap /
  reenactment / talking-face method); every other video trains, with an identity-disjoint val carved from it
  (the authors validate on the test list). The authors replicate the reals once per method for their headline
  number: AUC does not change when every real is repeated equally, so dfd does not.
* ``gfq`` (GFQ-eval, the same under compression): the ``gf`` index; the compression levels are not in the
  release, so compress at evaluation (``dfd-eval robustness='{h264: [23, 30, 38]}'``), which the summary says.
* ``gfd`` (GFD-eval, cross-dataset: train elsewhere): the test list alone, nothing else indexed.

Leak: the reals and ``FaceSwap/Celeb-DF`` *are* Celeb-DF v2's videos. ``exclude_celebdf_v2=true`` leaves that
method out of every run (use it when Celeb-DF v2 trains the model); the reals stay (Celeb-DF v2's test reals).
It is applied when runs read the crops, not in the index: one index and one extraction serve both settings.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from dfd import atomic
from dfd.errors import DatasetError
from dfd.sources import kinds
from dfd.sources.base import DatasetSource, index_frame
from dfd.sources.protocols import carve_identities, drop_blank_splits, split_counts

TEST_LIST = "List_of_testing_videos.txt"
PROTOCOLS = ("gf", "gfq", "gfd")
REALS = {"celeb-real": "celeb-real", "youtube-real": "youtube-real"}
SYNTHESIS = "celeb-synthesis"
_SCENARIOS = {k.lower(): k for k in kinds.CELEBDF_PP}
_IDS = re.compile(r"id\d+")
CELEBDF_V2_METHOD = "Celeb-DF"


def _method_name(folder: str) -> str:
    return CELEBDF_V2_METHOD if folder.lower() in ("celeb-df", "celeb-df-v2") else folder


class CelebDFPP(DatasetSource):
    """Celeb-DF++ under one of its evaluation protocols.

    Args:
        protocol: ``gf`` | ``gfq`` | ``gfd`` (see the module doc).
        exclude_celebdf_v2: leave out ``FaceSwap/Celeb-DF``, Celeb-DF v2's own fakes.
        val_fraction: share of non-test identities carved into val (``gf``, ``gfq``).
    """

    def __init__(
        self,
        name: str,
        root: str | Path | None,
        cache_dir: str | Path,
        protocol: str = "gf",
        exclude_celebdf_v2: bool = False,
        val_fraction: float = 0.1,
    ) -> None:
        super().__init__(name, root, cache_dir)
        if protocol not in PROTOCOLS:
            raise DatasetError(f"{name}: dataset.protocol must be one of {'|'.join(PROTOCOLS)}, got {protocol!r}")
        self.protocol = protocol
        self.exclude_celebdf_v2 = bool(exclude_celebdf_v2)
        self.val_fraction = val_fraction
        self.notes: list[str] = []
        self.skipped: list[str] = []
        self.dropped: list[str] = []

    def prepare(self) -> Path:
        """The crop manifest runs read: without Celeb-DF v2's own fakes when ``exclude_celebdf_v2`` (a filtered
        copy beside the full manifest, rewritten when that one changes), so one extraction serves both."""
        full = super().prepare()
        if not self.exclude_celebdf_v2:
            return full
        out = full.with_name("manifest-without-celebdf_v2.parquet")
        if not out.is_file() or out.stat().st_mtime_ns < full.stat().st_mtime_ns:
            import pyarrow.compute as pc
            import pyarrow.parquet as pq

            table = pq.read_table(full)
            table = table.filter(pc.invert(pc.equal(table["method"], CELEBDF_V2_METHOD)))
            with atomic.atomic_path(out) as tmp:
                pq.write_table(table, tmp)
        return out

    def _videos(self) -> list[dict]:
        """Every video of the layout: (relative path, label, method, scenario)."""
        out = []
        for top in sorted(p for p in self.root.iterdir() if p.is_dir()):
            low = top.name.lower()
            if low in REALS:
                out += [{"rel": p.relative_to(self.root).as_posix(), "label": 0, "method": REALS[low],
                         "scenario": ""} for p in sorted(top.rglob("*.mp4"))]
            elif low == SYNTHESIS:
                for scen in sorted(p for p in top.iterdir() if p.is_dir()):
                    scenario = _SCENARIOS.get(scen.name.lower())
                    if scenario is None:
                        self.notes.append(f"folder {scen.relative_to(self.root)} is not a scenario "
                                          f"({', '.join(kinds.CELEBDF_PP)}): not indexed")
                        continue
                    for method in sorted(p for p in scen.iterdir() if p.is_dir()):
                        out += [{"rel": p.relative_to(self.root).as_posix(), "label": 1,
                                 "method": _method_name(method.name), "scenario": scenario}
                                for p in sorted(method.rglob("*.mp4"))]
        if not any(v["label"] for v in out) or not any(not v["label"] for v in out):
            raise DatasetError(f"{self.name}: expected Celeb-real/, YouTube-real/ and Celeb-synthesis/<scenario>/"
                               f"<method>/ videos in {self.root}; set dataset.root to the Celeb-DF++ folder")
        return out

    def _test_list(self) -> list[tuple[int, str]]:
        path = self.root / TEST_LIST
        if not path.is_file():
            raise DatasetError(f"{self.name}: official test list {path} not found; it ships with Celeb-DF++ "
                               "(keep it in the dataset root)")
        out = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.strip().split(maxsplit=1)
            if not parts:
                continue
            rel = parts[-1].replace("\\", "/").strip()
            low = rel.lower()
            if "synthesis" not in low and "real" not in low:
                raise DatasetError(f"{self.name}: {path}:{n}: expected '<token> <folder>/.../<video>.mp4' under "
                                   f"a *-real or Celeb-synthesis folder, got {line!r}")
            out.append((n, rel))
        return out

    @staticmethod
    def _key(rel: str) -> str:
        parts = rel.lower().split("/")
        return "/".join(["celeb-df" if p == "celeb-df-v2" else p for p in parts])

    def _index_rows(self) -> pd.DataFrame:
        self.notes, self.skipped, self.dropped = [], [], []
        videos = self._videos()
        by_key = {self._key(v["rel"]): v for v in videos}
        listed, missing = set(), []
        for n, rel in self._test_list():
            v = by_key.get(self._key(rel))
            if v is None:
                missing.append(f"{TEST_LIST}:{n} {rel}")
            else:
                listed.add(v["rel"])
        if missing:
            self.notes.append(f"{len(missing)} test-list video(s) not on disk (dropped), e.g. {missing[:3]}")
            self.skipped += missing
        rows = []
        for v in videos:
            test = v["rel"] in listed
            if self.protocol == "gfd" and not test:
                continue
            ids = tuple(_IDS.findall(Path(v["rel"]).stem))
            if v["method"] == "youtube-real":
                ids = (f"youtube/{Path(v['rel']).stem}",)
            rows.append({
                "video_id": v["rel"][:-4], "label": v["label"], "split": "test" if test else "train",
                "method": v["method"], "identity": ids[0] if ids else "", "path": v["rel"], "kind": "video",
                "scenario": v["scenario"], "method_type": kinds.CELEBDF_PP.get(v["scenario"], "") if v["label"] else "",
                "_ids": ids,
            })
        excluded = sum(r["method"] == CELEBDF_V2_METHOD for r in rows)
        if self.exclude_celebdf_v2:
            self.notes.append(f"FaceSwap/{CELEBDF_V2_METHOD} (Celeb-DF v2's own fakes, {excluded} video(s)) is indexed and "
                              "extracted but left out of every run (dataset.exclude_celebdf_v2=true); the reals are "
                              "Celeb-DF v2's")
        else:
            self.notes.append(f"the reals and FaceSwap/{CELEBDF_V2_METHOD} are Celeb-DF v2's videos: a model trained on "
                              "Celeb-DF v2 has seen some of them (dataset.exclude_celebdf_v2=true leaves the fakes out)")
        if self.protocol == "gfd":
            self.notes.append(f"protocol gfd: the official test list only ({len(rows)} videos), for a model trained on "
                              "another dataset")
        else:
            self.dropped = carve_identities(rows, self.val_fraction, salt="celebdf-pp-val", within="train")
            rows = drop_blank_splits(rows)
            self.notes.append(f"protocol {self.protocol}: test = the official test list; val carved by identity from "
                              f"the other videos ({len(self.dropped)} dropped for showing a val and a train identity)")
        if self.protocol == "gfq":
            self.notes.append("protocol gfq: the release does not ship its compressed copies or levels; evaluate "
                              "under compression with dfd-eval robustness='{h264: [23, 30, 38]}'")
        counts = pd.Series([r["method"] for r in rows if r["label"]]).value_counts()
        self.notes.append(f"{len(counts)} methods: " + ", ".join(f"{m} {n}" for m, n in sorted(counts.items())))
        self.notes.append(f"splits: {split_counts(rows)}")
        return index_frame(rows, extra=("scenario", "method_type"))
