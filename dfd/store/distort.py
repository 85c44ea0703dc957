"""Distortions of source frames: DeeperForensics-1.0's seven types x five levels, and the generic perturbations
of robustness sweeps, as pure numpy / OpenCV functions (H.264 through PyAV), deterministic per (video, kind, level).

Why here, in ``dfd.store``: a distortion turns decoded media into degraded media. Its codecs belong beside
``dfd.store.media``'s decoding and JPEG round trip, and DeeperForensics' video compression re-encodes a whole
video, which needs that decoder. Everything that applies distortions sits above ``store``: extraction (frames
distorted before face detection, :func:`read_distorted`), the DeeperForensics source (reals given their fakes'
distortion mix), and evaluation (``robustness.at=frame|crop``); ``dfd.faces`` may not import the decoder.

**DeeperForensics-1.0** (Jiang et al., CVPR 2020). Types, in its own codes, and the parameter of each level
1-5, from the authors' ``perturbation/add_distortion_to_video.py`` (``get_distortion_parameter``; MIT licence,
reimplemented here from those published numbers and the operations its ``distortions.py`` describes):

====  =============================================  ==========================  ============================
code  what                                           parameter, levels 1-5       operation
====  =============================================  ==========================  ============================
CS    colour saturation change                       0.4, 0.3, 0.2, 0.1, 0.0     chroma (Cb, Cr) x parameter
CC    colour contrast change                         0.85, 0.725, 0.6, 0.475,    every channel x parameter
                                                     0.35
BW    local block-wise occlusion                     16, 32, 48, 64, 80          that many 8x8 grey (128)
                                                                                 blocks per 256 px of the
                                                                                 shorter side, at random
GNC   white Gaussian noise in colour components      0.001, 0.002, 0.005, 0.01,  noise of that variance on
                                                     0.05                        YCbCr in [0, 1]
GB    Gaussian blur                                  7, 9, 13, 17, 21            kernel k x k, sigma k / 6
JPEG  "JPEG compression", implemented by the         2, 3, 4, 5, 6               shrink by the factor and
      authors as pixelation                                                      back (bilinear)
VC    video compression (H.264)                      CRF 30, 32, 35, 38, 40      libx264 at that CRF
====  =============================================  ==========================  ============================

Details, as its authors' script computes them (so dfd's distorted frames match the dataset's):

* Results are truncated to integers, not rounded (its ``astype(np.uint8)``); CS and CC never leave 0-255.
* GNC's variance applies to YCbCr scaled to [0, 1] in *studio* range (Y 16-235, Cb/Cr 16-240), so its noise has
  a standard deviation of sqrt(v) x 255 x 255/219 grey levels on Y (9.4 at level 1, 66.4 at level 5) and
  x 255/224 on Cb and Cr, converted to RGB with BT.601's coefficients (OpenCV's YCrCb), then clipped.
* BW: ``(shorter side // 256) x parameter`` blocks; frames under 256 px (face crops, small test media) get the
  count of a 256 px frame, where the script would place none. Blocks lie wholly inside the frame.
* VC re-encodes the *whole* video (ffmpeg's defaults the script relies on: libx264, preset medium, the source's
  pixel format and frame rate, x264 choosing the frame types), with one encoder thread and x264's macroblock-tree
  off: with it, this x264 build gave different bytes from run to run on the same frames (2-5 outputs of 8 runs at
  some frame sizes, even single-threaded); without it the result depends on the input alone. A still image or a
  frames folder is encoded frame by frame as I-frames.
* The authors wrote every distorted video through XVID and then ffmpeg (CRF 23) again; dfd distorts decoded
  frames and adds no such pass (``read_distorted`` says so in its notes).

Random draws (BW positions, GNC noise, generic ``noise``) come from a generator seeded by (video key, kind,
level, frame number): a rerun, another machine or another worker count gives the same pixels.

**Generic kinds** (``dfd-eval robustness``): ``jpeg`` quality, ``blur`` Gaussian sigma in pixels (kernel
2·round(3σ)+1), ``downscale`` factor (nearest down and up, as albumentations' Downscale), ``noise`` Gaussian std
in 0-255 units, ``h264`` CRF (each frame an I-frame), ``resize`` to N px on the shorter side (frames: and back).
"""

from __future__ import annotations

import hashlib
import io
import math
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from dfd.errors import UserError
from dfd.store.media import Frames, jpeg_roundtrip, read_frames_folder, read_image, read_video

#: DeeperForensics-1.0's distortion codes, in its order, and what they are.
DF_TYPES = ("CS", "CC", "BW", "GNC", "GB", "JPEG", "VC")
DF_NAMES = {"CS": "colour saturation", "CC": "colour contrast", "BW": "block-wise occlusion",
            "GNC": "Gaussian noise (YCbCr)", "GB": "Gaussian blur", "JPEG": "pixelation", "VC": "H.264 (CRF)"}
#: The parameter of levels 1-5 per type: ``get_distortion_parameter`` in DeeperForensics-1.0's
#: perturbation/add_distortion_to_video.py (EndlessSora/DeeperForensics-1.0, commit 4f6ecff).
DF_PARAMS: dict[str, tuple[float, ...]] = {
    "CS": (0.4, 0.3, 0.2, 0.1, 0.0),
    "CC": (0.85, 0.725, 0.6, 0.475, 0.35),
    "BW": (16, 32, 48, 64, 80),
    "GNC": (0.001, 0.002, 0.005, 0.01, 0.05),
    "GB": (7, 9, 13, 17, 21),
    "JPEG": (2, 3, 4, 5, 6),
    "VC": (30, 32, 35, 38, 40),
}
DF_LEVELS = (1, 2, 3, 4, 5)
#: Robustness kinds of the DeeperForensics types: ``df_<code in lower case>`` (``df_jpeg`` is its pixelation).
DF_KINDS = {f"df_{t.lower()}": t for t in DF_TYPES}
#: Generic kinds, with what their level means.
GENERIC_KINDS = {"jpeg": "JPEG quality (100 best)", "blur": "Gaussian sigma in pixels",
                 "downscale": "shrink factor (0.5 = half resolution)", "noise": "Gaussian std in 0-255 units",
                 "h264": "H.264 CRF, each frame an I-frame", "resize": "side in pixels (shorter side)"}
KINDS = (*GENERIC_KINDS, *DF_KINDS)

BLOCK = 8  # BW's block side in pixels
GREY = 128  # BW's block value
# BT.601 as OpenCV's YCrCb conversion: Y from RGB, and RGB from (Y, Cb, Cr) offsets.
_Y = np.array([0.299, 0.587, 0.114], np.float32)
_FROM_YCBCR = np.array([[1.0, 0.0, 1.403], [1.0, -0.344, -0.714], [1.0, 1.773, 0.0]], np.float32)  # R, G, B


class DistortionError(UserError, ValueError):
    """A distortion named in a config, an index or a meta list is not valid (one line naming the valid ones)."""


# ----------------------------------------------------------------------------------------------- operations
def _truncate(x: np.ndarray) -> np.ndarray:
    # The authors' astype(np.uint8) after float maths: truncation towards zero (values stay within 0-255 here).
    return np.clip(x, 0, 255).astype(np.uint8)


def color_saturation(image: np.ndarray, factor: float) -> np.ndarray:
    """CS: the chroma (Cb, Cr) scaled by ``factor`` around neutral, luma kept: ``Y + factor * (RGB - Y)``."""
    f = np.float32(factor)
    # Y + f (RGB - Y) is one linear map per pixel: f I + (1 - f) [Y; Y; Y] (cv2.transform: ~10x numpy's matmul).
    m = f * np.eye(3, dtype=np.float32) + (1 - f) * np.tile(_Y, (3, 1))
    return _truncate(cv2.transform(image.astype(np.float32), m))


def color_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """CC: every channel multiplied by ``factor`` (what the authors call a contrast change darkens too)."""
    return _truncate(image.astype(np.float32) * np.float32(factor))


def block_wise(image: np.ndarray, blocks: int, rng: np.random.Generator) -> np.ndarray:
    """BW: ``max(1, shorter side // 256) * blocks`` grey 8x8 blocks at random positions, wholly inside the frame."""
    h, w = image.shape[:2]
    out = image.copy()
    if h <= BLOCK or w <= BLOCK:
        return out
    n = max(1, min(h, w) // 256) * int(blocks)
    xs = rng.integers(0, w - BLOCK, n)
    ys = rng.integers(0, h - BLOCK, n)
    for x, y in zip(xs, ys, strict=True):
        out[y : y + BLOCK, x : x + BLOCK] = GREY
    return out


def noise_std(variance: float) -> tuple[float, float]:
    """GNC's noise standard deviation in grey levels on (Y, Cb/Cr) for a variance on studio-range YCbCr."""
    s = math.sqrt(variance) * 255.0
    return s * 255.0 / 219.0, s * 255.0 / 224.0


def gaussian_noise_color(image: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    """GNC: white Gaussian noise of ``variance`` added to Y, Cb and Cr (see :func:`noise_std`), back to RGB."""
    sy, sc = noise_std(variance)
    h, w = image.shape[:2]
    n = rng.standard_normal((h, w, 3), dtype=np.float32)  # Y, Cb, Cr
    return _truncate(image.astype(np.float32) + cv2.transform(n, _FROM_YCBCR * np.array([sy, sc, sc], np.float32)))


def gaussian_blur(image: np.ndarray, kernel: int) -> np.ndarray:
    """GB: a ``kernel`` x ``kernel`` Gaussian with sigma ``kernel / 6``."""
    k = int(kernel)
    return cv2.GaussianBlur(image, (k, k), k / 6.0)


def pixelation(image: np.ndarray, factor: int) -> np.ndarray:
    """DeeperForensics' "JPEG": shrunk to ``1/factor`` (integer division of the sides) and back, bilinear."""
    h, w = image.shape[:2]
    f = int(factor)
    small = cv2.resize(image, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def h264_roundtrip(image: np.ndarray, crf: int, preset: str = "medium") -> np.ndarray:
    """Encode an RGB image as one H.264 frame at ``crf`` (libx264 via PyAV, yuv420p) and decode it back.

    What an upload to a video platform does to a face: block transform quantisation, chroma subsampling and
    YUV conversion. Odd sizes are edge-padded to even (4:2:0 needs it) and cropped back.
    """
    import av

    h, w = image.shape[:2]
    padded = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if (h % 2 or w % 2) else image
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="h264") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height = padded.shape[1], padded.shape[0]
        stream.pix_fmt = "yuv420p"
        # One thread: x264's output then depends on nothing but the input and the settings.
        stream.options = {"crf": str(int(crf)), "preset": preset, "threads": "1"}
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(padded), format="rgb24")):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    buf.seek(0)
    with av.open(buf, mode="r", format="h264") as inp:
        frame = next(inp.decode(video=0)).to_ndarray(format="rgb24")
    return np.ascontiguousarray(frame[:h, :w])


def blur_sigma(image: np.ndarray, sigma: float) -> np.ndarray:
    """Generic ``blur``: Gaussian of ``sigma`` pixels, kernel 2·round(3σ)+1 (as the crop-level sweep)."""
    k = int(2 * round(3 * sigma) + 1)
    return cv2.GaussianBlur(image, (k, k), float(sigma))


def downscale(image: np.ndarray, factor: float) -> np.ndarray:
    """Generic ``downscale``: shrunk by ``factor`` and back, nearest neighbour both ways."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_NEAREST)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def gaussian_noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Generic ``noise``: Gaussian noise of ``std`` grey levels per pixel and channel, rounded and clipped."""
    n = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(std)
    return np.clip(np.rint(image.astype(np.float32) + n), 0, 255).astype(np.uint8)


def resize_to(image: np.ndarray, side: int) -> np.ndarray:
    """Generic ``resize``: the shorter side to ``side`` pixels (aspect kept), bilinear."""
    h, w = image.shape[:2]
    s = int(side) / min(h, w)
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_LINEAR)


# ----------------------------------------------------------------------------------------------- one distortion
@dataclass(frozen=True)
class Distortion:
    """One kind at one level: a DeeperForensics type (``df_cs`` ... ``df_vc``, levels 1-5) or a generic kind."""

    kind: str
    level: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DistortionError(f"unknown distortion {self.kind!r}; valid kinds: {', '.join(KINDS)} (or "
                                  f"DeeperForensics' codes {', '.join(DF_TYPES)} in a chain)")
        level = float(self.level)
        if not math.isfinite(level):
            raise DistortionError(f"distortion {self.kind}: level {self.level!r} is not a number")
        if self.kind in DF_KINDS and level not in DF_LEVELS:
            raise DistortionError(f"distortion {self.kind}: level {self.level!r} is not one of DeeperForensics' "
                                  f"levels {', '.join(map(str, DF_LEVELS))}")
        bad = {"jpeg": not 1 <= level <= 100, "blur": level <= 0, "downscale": not 0 < level < 1,
               "noise": level < 0, "h264": not 0 <= level <= 51, "resize": level < 8}.get(self.kind, False)
        if bad:
            raise DistortionError(f"distortion {self.kind}: level {self.level!r} is out of range "
                                  f"({GENERIC_KINDS[self.kind]})")
        object.__setattr__(self, "level", level)

    @property
    def df_type(self) -> str | None:
        """The DeeperForensics code (``CS`` ...), None for a generic kind."""
        return DF_KINDS.get(self.kind)

    @property
    def param(self) -> float:
        """The operation's parameter: DeeperForensics' table value for its level, else the level itself."""
        t = self.df_type
        return DF_PARAMS[t][int(self.level) - 1] if t else self.level

    @property
    def whole_video(self) -> bool:
        """Whether it needs the whole video (DeeperForensics' VC re-encodes every frame with inter prediction)."""
        return self.kind == "df_vc"

    @property
    def random(self) -> bool:
        return self.kind in ("df_bw", "df_gnc", "noise")

    def __str__(self) -> str:
        return f"{self.kind}:{self.level:g}"

    def apply(self, image: np.ndarray, key: str = "", frame: int = 0) -> np.ndarray:
        """Distort one RGB uint8 frame; ``key`` (the video) and ``frame`` seed the random draws. ``df_vc`` on a
        single frame encodes it as an I-frame (videos: :func:`read_distorted` re-encodes the whole video)."""
        rng = seeded_rng(key, self, frame) if self.random else None
        p = self.param
        op: Callable[[], np.ndarray] = {
            "df_cs": lambda: color_saturation(image, p),
            "df_cc": lambda: color_contrast(image, p),
            "df_bw": lambda: block_wise(image, int(p), rng),
            "df_gnc": lambda: gaussian_noise_color(image, p, rng),
            "df_gb": lambda: gaussian_blur(image, int(p)),
            "df_jpeg": lambda: pixelation(image, int(p)),
            "df_vc": lambda: h264_roundtrip(image, int(p)),
            "jpeg": lambda: jpeg_roundtrip(image, int(p)),
            "blur": lambda: blur_sigma(image, p),
            "downscale": lambda: downscale(image, p),
            "noise": lambda: gaussian_noise(image, p, rng),
            "h264": lambda: h264_roundtrip(image, int(p)),
            "resize": lambda: cv2.resize(resize_to(image, int(p)), (image.shape[1], image.shape[0]),
                                         interpolation=cv2.INTER_LINEAR),
        }[self.kind]
        return op()


def seeded_rng(key: str, d: Distortion, frame: int) -> np.random.Generator:
    """The generator of one frame's random draws: a content hash of (video key, kind, level, frame number)."""
    digest = hashlib.sha256(f"{key}\0{d.kind}\0{d.level:g}\0{int(frame)}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


# ----------------------------------------------------------------------------------------------- chains
Chain = tuple[Distortion, ...]


def parse_chain(text: str | Iterable[str] | None) -> Chain:
    """``"CS:3 GB:2"`` (DeeperForensics' meta-list form), ``"df_cs:3 jpeg:50"`` or tokens -> distortions, in order.

    An empty text is the clean chain. Tokens are ``<kind or DeeperForensics code>:<level>``; the codes are upper
    case as in the meta lists (``JPEG:2`` is its pixelation, ``jpeg:50`` the generic JPEG quality).
    """
    if text is None:
        return ()
    tokens = text.split() if isinstance(text, str) else [t for s in text for t in str(s).split()]
    out = []
    for tok in tokens:
        kind, sep, level = tok.partition(":")
        if not sep:
            raise DistortionError(f"distortion {tok!r} has no level; write <kind>:<level>, e.g. GB:3 or jpeg:50")
        kind = f"df_{kind.lower()}" if kind in DF_TYPES else kind  # the meta lists' upper-case codes; jpeg != JPEG
        try:
            value = float(level)
        except ValueError:
            raise DistortionError(f"distortion {tok!r}: level {level!r} is not a number") from None
        out.append(Distortion(kind, value))
    return tuple(out)


def chain_text(chain: Sequence[Distortion]) -> str:
    """The canonical text of a chain (``"df_cs:3 df_gb:2"``; ``""`` when clean): what indexes store."""
    return " ".join(str(d) for d in chain)


def apply_chain(images: Sequence[np.ndarray], numbers: Sequence[int], chain: Sequence[Distortion],
                key: str) -> list[np.ndarray]:
    """Each frame through the chain, in order (``df_vc`` as I-frames: frames that are not one video's)."""
    out = []
    for img, number in zip(images, numbers, strict=True):
        for d in chain:
            img = d.apply(img, key, int(number))
        out.append(np.ascontiguousarray(img))
    return out


def read_distorted(kind: str, path: str | Path, n: int | None, chain: Sequence[Distortion], key: str) -> Frames:
    """The sampled frames of one index row (``video``, ``frames`` or ``image``) after ``chain``, in order.

    Frame-local distortions act on the sampled frames only (each frame's result does not depend on the others).
    A video whose chain holds ``df_vc`` is re-encoded whole at that CRF (every frame, with the distortions before
    it applied to every frame), then sampled by the same rule as a clean video; distortions after the last
    ``df_vc`` act on the sampled frames.
    """
    chain = tuple(chain)
    last_vc = max((i for i, d in enumerate(chain) if d.whole_video), default=-1)
    if kind != "video" or last_vc < 0:
        frames = (read_video(path, n) if kind == "video" else read_frames_folder(path, n) if kind == "frames"
                  else Frames(np.zeros(1, np.int64), [read_image(path)]))
        return Frames(frames.numbers, apply_chain(frames.images, frames.numbers, chain, key))
    read_video(path, 1)  # a missing, empty or corrupt file: dfd.store.media's typed error, before any encoding
    with tempfile.TemporaryDirectory(prefix="dfd-distort-") as tmp:
        encoded = reencode_video(path, chain[: last_vc + 1], key, Path(tmp))
        frames = read_video(encoded, n)
    rest = chain[last_vc + 1 :]
    return Frames(frames.numbers, apply_chain(frames.images, frames.numbers, rest, key))


def reencode_video(path: str | Path, chain: Sequence[Distortion], key: str, folder: Path) -> Path:
    """Every frame of a video through ``chain`` (ending with ``df_vc``), each ``df_vc`` a whole-video H.264 pass.

    Returns the last pass's file (an mp4 in ``folder``). Frames go through the encoder as they are decoded, so
    memory does not grow with the video.
    """
    src = Path(path)
    pending: list[Distortion] = []
    for i, d in enumerate(chain):
        if not d.whole_video:
            pending.append(d)
            continue
        out = folder / f"pass{i}.mp4"
        _encode_pass(src, out, pending, int(d.param), key)
        src, pending = out, []
    return src


def _encode_pass(src: Path, out: Path, before: Sequence[Distortion], crf: int, key: str) -> None:
    """One libx264 pass at ``crf`` over every frame of ``src`` (after ``before``), as ffmpeg's defaults encode."""
    import av

    with av.open(str(src)) as inp, av.open(str(out), mode="w") as dst:
        vin = inp.streams.video[0]
        rate = Fraction(vin.average_rate or vin.guessed_rate or 25)
        enc = dst.add_stream("libx264", rate=rate)
        enc.width, enc.height = vin.codec_context.width, vin.codec_context.height
        fmt = vin.codec_context.pix_fmt or "yuv420p"
        enc.pix_fmt = fmt if fmt in ("yuv420p", "yuvj420p", "yuv422p", "yuv444p") else "yuv420p"
        # ffmpeg's defaults except the macroblock-tree: with it, this x264 gave 2-5 different outputs in 8 runs on
        # the same frames (some frame sizes, even with one thread); without, one (bench: closing note of issue 25).
        enc.options = {"crf": str(crf), "preset": "medium", "threads": "1", "x264-params": "mbtree=0"}
        for number, frame in enumerate(inp.decode(vin)):
            if before:
                img = apply_chain([frame.to_ndarray(format="rgb24")], [number], before, key)[0]
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            # Renumbered at the stream's rate: x264's rate control reads frame durations (decoded frames reset
            # to pts=None all reach the muxer at 0, and CRF then drifts frame to frame).
            frame.pts, frame.time_base = number, 1 / rate
            # x264 would keep the source's frame types (libavcodec forces them from pict_type); ffmpeg, which
            # the authors' script runs, clears them and lets x264 decide.
            frame.pict_type = 0
            for packet in enc.encode(frame):
                dst.mux(packet)
        for packet in enc.encode():
            dst.mux(packet)


# ----------------------------------------------------------------------------------------------- measures
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images in dB (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
