"""The face-crop contract: how a video frame or an image becomes the face crop a model sees.

One object, one home. ``dfd-extract`` builds crops with it and records it in the cache; training copies the
training cache's contract into the checkpoint; ``dfd-export`` writes it into ``preprocess.json``; ``dfd-predict``
reads it back and runs the very same detection, face choice, crop and frame sampling on raw media. Every
default lives in :class:`CropContract` below (``conf/extract.yaml`` composes its ``extract:`` block from these
fields, see :func:`dfd.extract.config.register_configs`), so training and inference cannot drift apart.

Frame sampling (which frames of a video are used: :func:`sample_indices`) lives here too, the rule
``sampling=uniform`` names, with its variant for partial fakes (videos with fake segments:
:func:`segment_indices`, and the frame labels those segments give: :func:`segment_labels`). Kept free of heavy imports (numpy only; no torch, cv2, albumentations): the organiser's
side reads it too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from dfd.errors import UserError

CHOICES = ("largest", "confident", "all")
# Fields that only matter with choice=all: left out of the record and the fingerprint otherwise, so adding them
# changed no single-face cache id and older dfd versions still read single-face bundles.
MULTI_FACE_FIELDS = ("min_face_ratio", "track_max_shift", "track_max_scale")
# Fields added after version 1, with the value that reproduces what version-1 records were made with: a record
# without the field is read with that value (its crops were made that way), and a contract holding it leaves the
# field out of its record and fingerprint, so version-1 caches and bundles keep their ids and older dfd reads them.
# All of them refine the per-video detection scale, so they matter only with face_px.
LEGACY_VALUES = {"scale_steps": 0, "probes": 1, "search_roi": 0.0}
# Fields that only matter when the search near the last face is on (search_roi > 0); roi_recheck only with
# choice=all. Left out of the record and fingerprint otherwise.
SEARCH_FIELDS = ("roi_recheck", "scene_cut")
# Heuristics that were constants in the code before contract version 3, with the value every earlier cache and
# bundle was made with. Each changes which faces or pixels end up in the crops, so each is a field, in the record
# and the fingerprint when it differs from that value; at that value it is left out, so caches and bundles made
# before keep their ids (and older dfd reads their records). Per-video-scale heuristics matter only with face_px,
# tracking gates only with choice=all.
HEURISTIC_VALUES: dict[str, Any] = {"probe_spacing": "even", "scale_cutoff": 0.9, "max_face_growth": 2.5,
                                    "track_max_shift": 1.0, "track_max_scale": 1.6, "interpolation": "auto",
                                    "decoder": "cpu"}
SCALE_FIELDS = ("probe_spacing", "scale_cutoff", "max_face_growth")
PROBE_SPACINGS = ("even",)
# How a face region is resized to the crop size: auto = area averaging when shrinking, bilinear when enlarging
# (the rule every dfd crop was made with); or one OpenCV filter for both.
INTERPOLATIONS = ("auto", "linear", "area", "cubic", "lanczos")
# Who turns the compressed video into RGB frames: FFmpeg on the CPU (decord; every cache before version 4) or
# NVIDIA's hardware decoder (PyNvVideoCodec, extract.device=cuda). H.264 decoding itself is exact, but the colour
# conversion to RGB may differ by a grey level or two, so crops of the two decoders are not mixed in one cache.
DECODERS = ("cpu", "nvdec")
ALIGNMENTS = ("box", "arcface")
INPUTS = ("frames", "crops")
SAMPLINGS = ("uniform",)
VERSION = 4
DETECTOR = "mtcnn (facenet-pytorch, all faces kept)"
SAMPLING_RULES = {"uniform": "numpy.linspace(0, n_frames - 1, frames).astype(int); every frame when n_frames <= frames"}
#: Videos whose index row has ``fake_segments`` (partial fakes): the rule above applied separately to the frames
#: inside the segments and to those outside, half of ``frames`` each (the rest to the other side when one side is
#: short); a frame is fake when its time, frame / fps, lies in [start, end) of a segment.
SEGMENT_SAMPLING_RULE = ("uniform over the frames inside the fake segments and, separately, over those outside, "
                         "ceil(frames / 2) inside; frame k is fake iff start <= k / fps < end for a segment")
#: The fields that decide which pixels of a face a model sees (framing and stored resolution). Crops that differ
#: in any of them are different inputs: training refuses to mix them and evaluation to test a model on them
#: unless told (``data.crop_mismatch=warn``). Detector settings and frame counts change which faces and frames
#: are kept, not how a face is framed, and are not compared.
GEOMETRY = ("align", "margin", "size")


class ContractError(UserError, ValueError):
    """A crop contract is invalid or does not match the one a cache or bundle was made with."""


@dataclass(frozen=True)
class CropContract:
    """Everything that decides which frames are used and which pixels a model sees.

    Detection (MTCNN):
        min_face_size: smallest face MTCNN searches for, in *detection* pixels (larger = shorter pyramid).
        thresholds: MTCNN's three stage thresholds.
        min_score: faces scoring below this are ignored.
        detect_size: frames whose longer side exceeds this are downscaled for detection only (boxes are mapped
            back; crops come from the full frame); ``None`` detects at full resolution.
        face_px: per video, frames are shrunk further so its face is about this tall for detection (0 = off).
        scale_steps: that per-video scale is rounded to a power of two in steps of 1/``scale_steps`` octave
            (8: 9 % apart), so the face is 0.96-1.04 x ``face_px``. MTCNN's boxes move by up to 20 % IoU when
            the detection size changes by one pixel; rounding keeps float noise in the probe detection (another
            GPU, kernel or batch) from choosing another size, and gives videos of one resolution the same
            detection size, which lets a GPU batch their frames together. 0: not rounded (version-1 contracts).
        probes: frames (spread over the video, detected at ``detect_size``) whose median face size sets that
            scale; one odd probe (a turned head, a box moved by float noise) then cannot set it. 1: the middle
            frame alone (version-1 contracts).
        search_roi: after the probes, each sampled frame is searched first only in a square region around the
            face found in its neighbouring sampled frame (searched outward from the probes), ``search_roi``
            face sides wide at the video's detection scale: MTCNN's pyramid then scans that region instead of the
            whole frame. A frame whose region yields no face passing ``min_score`` (or a face cut by the region's
            edge) is searched whole, as before. 0 (default) = every frame searched whole, the rule of every
            contract before version 4: measured on 2 CPU threads (tests/benchmarks/bench_extract.py, 4 videos of
            450 frames at 960 px) the region search saved 5-8 % of CPU per crop but no wall time (0.78-0.88x),
            so it is opt-in (``extract.search_roi=3``), for footage where the whole-frame pyramid dominates.
        roi_recheck: with ``choice=all``, every ``roi_recheck``-th sampled frame is searched whole, so a face
            entering mid-video is found (and tracked) within that many frames.
        scene_cut: a frame whose 32 x 32 grey thumbnail differs from its neighbour's by more than this mean
            absolute difference (0-1) is a cut: searched whole.
        probe_spacing: where the probes sit: ``even`` = frame ``(k + 1) * n // (probes + 1)`` for k < probes.
        scale_cutoff: the per-video scale is used only when it shrinks frames below this fraction of the
            ``detect_size`` scale; closer to it, there is no saving worth the risk and frames are detected at
            ``detect_size``.
        max_face_growth: at the per-video scale, boxes whose side exceeds this many times the probes' median
            face side are dropped (MTCNN at a coarse scale can take a head and shoulders for one giant face; a
            face does not grow that much between frames of one video) and the frame re-detected if emptied.
        full_res_fallback: a sampled frame where no face passes ``min_score`` at the reduced scale is detected
            again at full resolution before it is dropped, so the shortcut can never lose a face that full
            resolution finds (small or altered faces were lost more often in fakes than in reals).
    Face choice:
        choice: ``largest`` box or most ``confident`` face among those passing ``min_score`` (one face per
            frame), or ``all``: every face passing ``min_score`` whose box area is at least ``min_face_ratio``
            x the frame's largest face's (SBI's test rule), tracked across the video's sampled frames. Each crop
            then carries a ``track`` id, stable across the frames; track 0 is the video's main face (the track
            with the largest summed box area). Many-face datasets (DFDC, FFIW) need it: a fake's largest face
            may be a real bystander.
        min_face_ratio: with ``choice=all``, the smallest face kept as a fraction of the frame's largest face's
            area (0: every face; 1: the largest face(s) only).
        track_max_shift, track_max_scale: with ``choice=all``, the gates between a track's last box and a face
            in a later sampled frame: the centre may move at most ``track_max_shift`` face sides and the face
            side change by at most ``track_max_scale`` times (:func:`dfd.faces.track.track_faces`).
    Crop:
        align: ``box`` (square around the detector box) or ``arcface`` (5-point similarity alignment to the
            ArcFace 112 template, as DeepfakeBench and GenD do; ``margin`` is then their ``scale``).
        margin: crop side = longer box side x margin (``box``); template scale (``arcface``, 1.3 in both papers).
        size: crop side in pixels as stored (every backbone resizes from it).
        interpolation: the resize filter, one of :data:`INTERPOLATIONS` (``auto``: area when shrinking,
            bilinear when enlarging).
    Frames:
        frames: frames sampled per video (<= 0: all).
        sampling: the sampling rule (``uniform``: evenly spaced over the whole video, first and last included).
        decoder: ``cpu`` (FFmpeg through decord) or ``nvdec`` (NVIDIA's hardware decoder, PyNvVideoCodec).
    Inputs:
        inputs: ``frames`` (detect, choose, crop) or ``crops`` (the inputs are already face crops, distributed
            that way, e.g. WildDeepfake: only resized to ``size``).
        landmarks_for_crops: with ``inputs=crops``, still find the 5 landmarks with MTCNN (ADDNet, SBI).
    """

    min_face_size: int = 40
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    min_score: float = 0.9
    detect_size: int | None = 640
    face_px: int = 64
    scale_steps: int = 8
    probes: int = 3
    search_roi: float = 0.0
    roi_recheck: int = 8
    scene_cut: float = 0.2
    probe_spacing: str = "even"
    scale_cutoff: float = 0.9
    max_face_growth: float = 2.5
    full_res_fallback: bool = True
    choice: str = "largest"
    min_face_ratio: float = 0.5
    track_max_shift: float = 1.0
    track_max_scale: float = 1.6
    align: str = "box"
    margin: float = 1.3
    size: int = 320
    interpolation: str = "auto"
    frames: int = 32
    sampling: str = "uniform"
    decoder: str = "cpu"
    inputs: str = "frames"
    landmarks_for_crops: bool = True

    def __post_init__(self) -> None:
        def bad(key: str, value: Any, valid: str) -> ContractError:
            return ContractError(f"extract.{key}={value!r} is invalid; {valid}")

        # Normalise what YAML/JSON hands over (lists for tuples, ints for floats).
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        for key in ("margin", "min_score", "min_face_ratio", "scale_cutoff", "max_face_growth", "track_max_shift",
                    "track_max_scale", "search_roi", "scene_cut"):
            object.__setattr__(self, key, float(getattr(self, key)))
        for key in ("min_face_size", "face_px", "scale_steps", "probes", "size", "frames", "roi_recheck"):
            object.__setattr__(self, key, int(getattr(self, key)))
        if self.detect_size is not None:
            object.__setattr__(self, "detect_size", int(self.detect_size))
        if self.choice not in CHOICES:
            raise bad("choice", self.choice, f"choose one of {CHOICES}")
        if self.align not in ALIGNMENTS:
            raise bad("align", self.align, f"choose one of {ALIGNMENTS}")
        if self.inputs not in INPUTS:
            raise bad("inputs", self.inputs, f"choose one of {INPUTS}")
        if self.decoder not in DECODERS:
            raise bad("decoder", self.decoder, f"choose one of {DECODERS}")
        if self.sampling not in SAMPLINGS:
            raise bad("sampling", self.sampling, f"choose one of {SAMPLINGS}")
        if len(self.thresholds) != 3 or not all(0 < t < 1 for t in self.thresholds):
            raise bad("thresholds", list(self.thresholds), "give MTCNN's three stage thresholds in (0, 1)")
        if not 0 <= self.min_score <= 1:
            raise bad("min_score", self.min_score, "use a probability in [0, 1]")
        if not 0 <= self.min_face_ratio <= 1:
            raise bad("min_face_ratio", self.min_face_ratio, "use a fraction of the largest face's area in [0, 1]")
        if self.size < 8:
            raise bad("size", self.size, "use at least 8 pixels")
        if self.margin < 1.0:
            raise bad("margin", self.margin, "use 1.0 or more")
        if self.min_face_size < 4:
            raise bad("min_face_size", self.min_face_size, "use at least 4 pixels")
        if self.detect_size is not None and self.detect_size < 32:
            raise bad("detect_size", self.detect_size, "use null (full resolution) or at least 32 pixels")
        if self.face_px < 0:
            raise bad("face_px", self.face_px, "use 0 (off) or a face height in pixels")
        if self.scale_steps < 0:
            raise bad("scale_steps", self.scale_steps, "use 0 (scale not rounded) or steps per octave, e.g. 8")
        if self.probes < 1:
            raise bad("probes", self.probes, "use 1 or more probe frames per video")
        if self.search_roi != 0 and self.search_roi < 1.5:
            raise bad("search_roi", self.search_roi, "use 0 (search whole frames) or a region of >= 1.5 face sides")
        if self.roi_recheck < 1:
            raise bad("roi_recheck", self.roi_recheck, "use 1 or more sampled frames")
        if not 0 < self.scene_cut <= 1:
            raise bad("scene_cut", self.scene_cut, "use a mean absolute grey difference in (0, 1]")
        if self.probe_spacing not in PROBE_SPACINGS:
            raise bad("probe_spacing", self.probe_spacing, f"choose one of {PROBE_SPACINGS}")
        if not 0 < self.scale_cutoff <= 1:
            raise bad("scale_cutoff", self.scale_cutoff, "use a fraction in (0, 1]")
        if self.max_face_growth <= 1:
            raise bad("max_face_growth", self.max_face_growth, "use a factor above 1")
        if self.track_max_shift <= 0 or self.track_max_scale < 1:
            raise bad("track_max_shift" if self.track_max_shift <= 0 else "track_max_scale",
                      self.track_max_shift if self.track_max_shift <= 0 else self.track_max_scale,
                      "use a shift > 0 face sides and a scale factor >= 1")
        if self.interpolation not in INTERPOLATIONS:
            raise bad("interpolation", self.interpolation, f"choose one of {INTERPOLATIONS}")

    # ------------------------------------------------------------------------------------------- conversions
    @classmethod
    def keys(cls) -> list[str]:
        """The contract's field names (the ``extract.*`` keys it owns)."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, where: str = "crop contract") -> CropContract:
        """Build from a mapping (config block, JSON); unknown keys are named instead of ignored.

        A *record* (a mapping with ``version``, as :meth:`to_dict` writes) that lacks a field of
        :data:`LEGACY_VALUES` was made with that field's legacy value; a config block takes the defaults.
        """
        values = dict(values or {})
        record = "version" in values
        version = values.pop("version", VERSION)
        values.pop("detector", None)  # informational
        values.pop("sampling_rule", None)
        if int(version) > VERSION:
            raise ContractError(f"{where} has version {version}; this dfd reads up to {VERSION}: upgrade dfd")
        if record:
            values = {**{k: v for k, v in LEGACY_VALUES.items() if k not in values}, **values}
        unknown = sorted(set(values) - set(cls.keys()))
        if unknown:
            raise ContractError(f"unknown {where} keys {unknown}; valid: {sorted(cls.keys())}")
        return cls(**values)

    def _fields(self) -> dict[str, Any]:
        """The fields that decide the crops, JSON-ready: multi-face settings only with ``choice=all``, fields
        added after version 1 only when they differ from their legacy value and matter (with ``face_px``)."""
        d = asdict(self)
        d["thresholds"] = list(self.thresholds)
        if self.choice != "all":
            for key in MULTI_FACE_FIELDS:
                d.pop(key)
        for key, legacy in LEGACY_VALUES.items():
            if self.face_px == 0 or d[key] == legacy:
                d.pop(key)
        for key in SEARCH_FIELDS:
            if "search_roi" not in d or (key == "roi_recheck" and self.choice != "all"):
                d.pop(key)
        for key, value in HEURISTIC_VALUES.items():
            if key in d and (d[key] == value or (key in SCALE_FIELDS and self.face_px == 0)):
                d.pop(key)
        return d

    @property
    def multi_face(self) -> bool:
        """Whether a frame can give several crops (``choice=all`` on frames), told apart by ``track``."""
        return self.choice == "all" and self.inputs == "frames"

    @property
    def needs_detector(self) -> bool:
        """Whether extraction runs MTCNN: on frames, or on face crops whose landmarks are wanted."""
        return self.inputs == "frames" or self.landmarks_for_crops

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (with the contract version, the detector and the sampling rule spelled out)."""
        d = self._fields()
        # The oldest version that can hold the record, so older dfd versions still read what they can.
        version = (4 if "search_roi" in d else 3 if set(HEURISTIC_VALUES) & set(d)
                   else 2 if set(LEGACY_VALUES) & set(d) else 1)
        return {"version": version, "detector": DETECTOR, **d, "sampling_rule": SAMPLING_RULES[self.sampling]}

    def fingerprint(self) -> str:
        """A short stable id of the contract (caches, parts and bundles compare it)."""
        return hashlib.sha1(json.dumps(self._fields(), sort_keys=True).encode()).hexdigest()[:12]

    def replace(self, **changes: Any) -> CropContract:
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)

    def diff(self, other: CropContract) -> dict[str, tuple[Any, Any]]:
        """``{key: (self's value, other's value)}`` for every field that differs (and matters)."""
        a, b = asdict(self), asdict(other)
        return {k: (a[k], b[k]) for k in {**self._fields(), **other._fields()} if a[k] != b[k]}

    def geometry_diff(self, other: CropContract) -> dict[str, tuple[Any, Any]]:
        """``{key: (self's value, other's value)}`` for the :data:`GEOMETRY` fields that differ, when both sides
        cropped faces from frames themselves. A side holding a dataset's own face crops (``inputs=crops``,
        e.g. WildDeepfake) is framed by the dataset's authors, not by these fields: compare ``inputs`` instead."""
        if self.inputs != other.inputs:
            return {"inputs": (self.inputs, other.inputs)}
        if self.inputs == "crops":
            return {k: v for k, v in self.diff(other).items() if k == "size"}
        return {k: v for k, v in self.diff(other).items() if k in GEOMETRY}

    def describe(self) -> str:
        """One line for logs and READMEs."""
        if self.inputs == "crops":
            crop = f"inputs are face crops, resized to {self.size} px"
        elif self.align == "arcface":
            crop = f"5-point ArcFace alignment, scale {self.margin}, {self.size} px"
        else:
            crop = f"square box crop x{self.margin}, {self.size} px"
        faces = (f"every face >= {self.min_face_ratio:g} x the largest's area, tracked" if self.choice == "all"
                 else f"{self.choice} face")
        det = (f"MTCNN min face {self.min_face_size} px, score >= {self.min_score}, {faces}, detect at "
               f"{self.detect_size or 'full'} px" + (f" / face {self.face_px} px" if self.face_px else "")
               + (f" ({self._scale_rule()})" if self.face_px else "")
               + (" with full-resolution fallback" if self.full_res_fallback else ""))
        frames = f"{self.frames} {self.sampling} frames per video" if self.frames > 0 else "every frame"
        return f"{crop}; {det}; {frames}"

    def _scale_rule(self) -> str:
        probes = f"median of {self.probes} probes" if self.probes > 1 else "one probe"
        rule = f"{probes}, " + (f"in 1/{self.scale_steps} octaves" if self.scale_steps else "not rounded")
        if self.search_roi:
            rule += f", searched near the last face ({self.search_roi:g} face sides)"
        return rule

    @classmethod
    def from_legacy_bundle(cls, face: Mapping[str, Any], video: Mapping[str, Any]) -> CropContract:
        """The contract a format-1 bundle (``face``/``video`` sections) implied: dfd-predict detected at full
        resolution with the recorded face settings."""
        return cls(
            min_face_size=int(face.get("min_face_size", 20)),
            min_score=float(face.get("min_score", cls.min_score)),
            detect_size=None,
            face_px=0,
            choice=str(face.get("choice", cls.choice)),
            margin=float(face.get("margin", cls.margin)),
            size=int(face.get("crop_size", cls.size)),
            frames=int(video.get("frames", cls.frames)),
        )


def extract_overrides(values: Mapping[str, Any]) -> str:
    """``extract.key=value ...`` as a Hydra command line writes them: the overrides that request ``values``."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, (list, tuple)):
            return "[" + ",".join(text(v) for v in value) + "]"
        return "null" if value is None else str(value)

    return " ".join(f"extract.{k}={text(v)}" for k, v in sorted(values.items()))


def contract_of(values: Mapping[str, Any] | CropContract | None) -> CropContract | None:
    """A CropContract from a contract, a mapping (e.g. a checkpoint's ``meta.crop``), or None."""
    if values is None or isinstance(values, CropContract):
        return values
    return CropContract.from_mapping(values)


def uniform_positions(n_available: int, n_wanted: int) -> np.ndarray:
    """The one "uniformly spaced frames" rule: ``linspace(0, n_available - 1, n_wanted)`` truncated to int.

    First and last always included (DeepfakeBench's 32-frame protocol, which covers the whole clip rather than
    its first second); exactly ``n_wanted`` positions, repeated in order when fewer are available (clips).
    """
    if n_available <= 0:
        raise ValueError("cannot sample frames from an empty video")
    return np.linspace(0, n_available - 1, int(n_wanted)).astype(np.int64)


def sample_indices(total: int, n: int | None) -> np.ndarray:
    """Frames a video contributes: ``n`` by :func:`uniform_positions`, or every frame when it has ``<= n``."""
    if total <= 0:
        return np.zeros(0, np.int64)
    if n is None or n <= 0 or total <= n:
        return np.arange(total, dtype=np.int64)
    return uniform_positions(total, n)


def segment_mask(total: int, fps: float, segments: Sequence[tuple[float, float]]) -> np.ndarray:
    """Per frame of a ``total``-frame video at ``fps``: True when its time ``k / fps`` lies in [start, end) of
    a segment (seconds)."""
    if fps <= 0:
        raise ValueError(f"cannot place fake segments in a video without a frame rate (fps={fps})")
    t = np.arange(max(int(total), 0), dtype=np.float64) / float(fps)
    inside = np.zeros(len(t), bool)
    for start, end in segments:
        inside |= (t >= start) & (t < end)
    return inside


def segment_labels(frames: np.ndarray, fps: float, segments: Sequence[tuple[float, float]]) -> np.ndarray:
    """int8 label (1 = fake) of each frame number in ``frames``: fake only inside a fake segment."""
    frames = np.asarray(frames, np.int64)
    total = int(frames.max(initial=-1)) + 1
    return segment_mask(total, fps, segments)[frames].astype(np.int8)


def segment_indices(total: int, n: int | None, fps: float, segments: Sequence[tuple[float, float]]) -> np.ndarray:
    """Frames a partial fake contributes (:data:`SEGMENT_SAMPLING_RULE`): ``n`` frames, about half inside its fake
    segments and half outside, each half by :func:`uniform_positions`; every frame when it has ``<= n``.

    Why: a partial fake's edits are short (a few words in AV-Deepfake1M), so frames spread over the whole video
    would be nearly all real; sampling both sides gives fake frames to learn from and real frames of the same
    video to tell them from.
    """
    if total <= 0:
        return np.zeros(0, np.int64)
    if n is None or n <= 0 or total <= n or not segments:
        return sample_indices(total, n)
    inside = np.flatnonzero(segment_mask(total, fps, segments))
    outside = np.flatnonzero(~segment_mask(total, fps, segments))
    n_in = min(len(inside), -(-int(n) // 2))
    n_out = min(len(outside), int(n) - n_in)
    n_in = min(len(inside), int(n) - n_out)  # a short outside gives its share back
    picked = [side[uniform_positions(len(side), k)] for side, k in ((inside, n_in), (outside, n_out)) if k > 0]
    return np.unique(np.concatenate(picked)) if picked else np.zeros(0, np.int64)
