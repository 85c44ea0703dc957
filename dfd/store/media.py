"""Frame sampling and decoding for the four kinds of index rows: video, frames folder, image, tar.gz archive.

Only the sampled frames are decoded (decord ``get_batch`` for videos), and archives are streamed once so a
72 GB dataset never has to be unpacked to disk or held in memory.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dfd.faces.contract import sample_indices, segment_indices

# A corrupt crop is reported by dfd (typed errors below); OpenCV's own warnings about it would only be noise.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

# The one list of media extensions every dfd tool uses (index, extraction, predict, SBI grid): OpenCV decodes
# all of these images, decord (FFmpeg) all of these videos.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
KINDS = ("video", "frames", "image", "archive")


def media_kind(path: str | Path) -> str | None:
    """``"video"`` or ``"image"`` from a file's extension, None for anything else (masks, models, notes)."""
    ext = Path(path).suffix.lower()
    return "video" if ext in VIDEO_EXTENSIONS else "image" if ext in IMAGE_EXTENSIONS else None


class MediaError(RuntimeError):
    """A video or image cannot be used; ``reason`` is a short category for the failures table."""

    reason = "unreadable"

    def __init__(self, path: str | Path, detail: str) -> None:
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.reason}: {path}: {detail}")


class MissingMedia(MediaError):
    """The file or folder the index points at does not exist."""

    reason = "missing"


class EmptyMedia(MediaError):
    """The file exists but holds no frames (zero bytes, zero frames, empty folder or sequence)."""

    reason = "empty"


class CorruptMedia(MediaError):
    """The file exists but cannot be decoded."""

    reason = "corrupt"


@dataclass
class Frames:
    """Sampled frames of one video: frame numbers (source numbering) and RGB uint8 images."""

    numbers: np.ndarray  # int64, one per image
    images: list[np.ndarray]  # H x W x 3 uint8 RGB; sizes may differ between images (frame folders)
    fps: float = 0.0  # the video's average frame rate (0 when unknown: images, frame folders)


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Send this process's file descriptor 2 to a temporary file while the block runs; yield its lines.

    decord and FFmpeg print from C++ straight to fd 2 ("moov atom not found", "ERROR opening: ..."), which
    Python's ``sys.stderr`` never sees. Captured, the text becomes the failure reason instead of noise in
    every run over a dataset with a few bad files. (fd 2 is process-wide: other threads' writes during the
    block land in the reason too, which is why only the decoder calls are wrapped.)
    """
    lines: list[str] = []
    with suppress(AttributeError, ValueError, OSError):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 to redirect (a daemon): nothing would be printed anyway
        yield lines
        return
    try:
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                yield lines
            finally:
                os.dup2(saved, 2)
                tmp.seek(0)
                lines.extend(_decoder_lines(tmp.read().decode("utf-8", errors="replace")))
    finally:
        os.close(saved)


def _decoder_lines(text: str) -> list[str]:
    # "[04:44:00] /src/video/video_reader.cc:83: ERROR opening: x.mp4, Invalid data ..." -> "ERROR opening: ..."
    # "[mov,mp4,m4a @ 0x55f1] moov atom not found" -> "moov atom not found"
    out = []
    for line in text.splitlines():
        line = re.sub(r"^\[\d\d:\d\d:\d\d\]\s*\S+:\d+:\s*", "", line.strip())
        line = re.sub(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", line)
        if line and line not in out:
            out.append(line)
    return out


def _reason(e: BaseException, captured: list[str]) -> str:
    text = "; ".join([*captured, _first_line(e)]) if captured else _first_line(e)
    return text[:300]


def nvdec_problem(device: str = "cuda") -> str | None:
    """Why NVIDIA's hardware decoder cannot decode here (None when it can): PyNvVideoCodec missing, no CUDA
    device, or no NVDEC driver library."""
    import importlib.util

    if importlib.util.find_spec("PyNvVideoCodec") is None:
        return 'PyNvVideoCodec is not installed (pip install "dfd[gpu]")'
    import torch

    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return f"no CUDA device ({device})"
    try:
        import PyNvVideoCodec  # noqa: F401  (loads libnvcuvid: fails without NVIDIA's driver)
    except Exception as e:  # its loader raises OSError / RuntimeError with several lines
        return f"PyNvVideoCodec cannot load: {_first_line(e)}"
    return None


def read_video(path: str | Path, n: int | None, segments: list[tuple[float, float]] | None = None, *,
               decoder: str = "cpu", device: str = "cuda") -> Frames:
    """Decode ``n`` uniformly sampled frames of a video file (only those frames): with decord on the CPU, or with
    NVIDIA's hardware decoder (``decoder="nvdec"``, on ``device``; frames come back to host memory as RGB).

    ``segments`` (a partial fake's fake spans, seconds): sample inside and outside them instead
    (:func:`dfd.faces.contract.segment_indices`, at the video's own frame rate). The decoder's own messages on
    a bad file are captured into the error's reason, not printed.
    """
    path = Path(path)
    _check_file(path)
    if decoder == "nvdec" and not segments:  # partial fakes are placed by the container's frame rate: decord's
        return _read_video_nvdec(path, n, device)
    import decord

    with captured_stderr() as said:
        try:
            vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
            err = None
        except Exception as e:  # decord raises DECORDError / RuntimeError with C++ messages
            vr, err = None, e
    if err is not None:
        raise CorruptMedia(path, f"cannot open video ({_reason(err, said)}); re-download or re-encode it") from err
    total = len(vr)
    if total == 0:
        raise EmptyMedia(path, "video has no frames")
    fps = float(vr.get_avg_fps() or 0.0)
    if segments:
        if fps <= 0:
            raise CorruptMedia(path, "no frame rate in the container: cannot place its fake segments")
        idx = segment_indices(total, n, fps, segments)
    else:
        idx = sample_indices(total, n)
    with captured_stderr() as said:
        try:
            batch, err = vr.get_batch(idx.tolist()).asnumpy(), None
        except Exception as e:
            batch, err = None, e
    if err is not None:
        raise CorruptMedia(path, f"cannot decode frames ({_reason(err, said)})") from err
    return Frames(idx, list(batch), fps)


def _read_video_nvdec(path: Path, n: int | None, device: str) -> Frames:
    """``n`` sampled frames decoded by NVDEC (PyNvVideoCodec's SimpleDecoder: it seeks to each wanted frame),
    as interleaved RGB on the GPU, then copied to host memory for the crops."""
    import PyNvVideoCodec as nvc
    import torch

    gpu = torch.device(device).index or 0
    try:
        dec = nvc.SimpleDecoder(str(path), gpu_id=gpu, use_device_memory=True,
                                output_color_type=nvc.OutputColorType.RGB)
        total = len(dec)
    except Exception as e:
        raise CorruptMedia(path, f"cannot open video with NVDEC ({_first_line(e)}); re-download or re-encode it, or "
                           "decode it on the CPU (extract.decoder=cpu)") from e
    if total == 0:
        raise EmptyMedia(path, "video has no frames")
    idx = sample_indices(total, n)
    try:
        frames = dec.get_batch_frames_by_index(idx.tolist())
        images = [torch.as_tensor(f, device=device).cpu().numpy() for f in frames]
    except Exception as e:
        raise CorruptMedia(path, f"cannot decode frames with NVDEC ({_first_line(e)})") from e
    if len(images) != len(idx):
        raise CorruptMedia(path, f"NVDEC returned {len(images)} of {len(idx)} frames")
    return Frames(idx, images)


def frame_number(name: str) -> int | None:
    """The frame number in a file name (``0042.png`` -> 42, ``frame_7.jpg`` -> 7), or None."""
    digits = re.findall(r"\d+", Path(name).stem)
    return int(digits[-1]) if digits else None


def sort_frame_names(names: Iterable[str]) -> list[str]:
    """Frame file names in numeric order (``2.png`` before ``10.png``); names without digits go last."""
    return sorted(names, key=lambda s: (frame_number(s) is None, frame_number(s) or 0, s))


def _numbers_for(names: list[str]) -> np.ndarray:
    # Use the numbers in the file names when they identify frames uniquely (WildDeepfake's are sparse and
    # meaningful); otherwise fall back to positions.
    nums = [frame_number(s) for s in names]
    if None not in nums and len(set(nums)) == len(nums):
        return np.asarray(nums, np.int64)
    return np.arange(len(names), dtype=np.int64)


def read_frames_folder(path: str | Path, n: int | None) -> Frames:
    """Read ``n`` uniformly sampled images from a folder of frames, sorted numerically."""
    path = Path(path)
    if not path.is_dir():
        raise MissingMedia(path, "frames folder not found; check dataset.root and the index's path column")
    names = sort_frame_names(p.name for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not names:
        raise EmptyMedia(path, f"no images ({', '.join(IMAGE_EXTENSIONS)}) in frames folder")
    idx = sample_indices(len(names), n)
    chosen = [names[i] for i in idx]
    return Frames(_numbers_for(names)[idx], [read_image(path / s) for s in chosen])


def read_image(path: str | Path) -> np.ndarray:
    """Read one image file as RGB uint8, with a typed error when it is missing, empty or corrupt.

    The one RGB reader (extraction, training's crop loader, predict, the SBI grid). The file is read first
    and diagnosed only when that fails, so the training hot path costs one open, no extra stat calls.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        _check_file(path)  # raises the typed error (missing, folder, permissions)
        raise
    return decode_image(data, path)


def decode_image(data: bytes | np.ndarray, where: str | Path) -> np.ndarray:
    """Decode encoded image bytes (PNG/JPEG/...) to RGB uint8."""
    buf = np.frombuffer(data, np.uint8) if isinstance(data, bytes | bytearray) else data
    if buf.size == 0:
        raise EmptyMedia(where, "image file is empty")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise CorruptMedia(where, "cannot decode image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def encode_image(image: np.ndarray, ext: str = ".png", quality: int = 95, rgb: bool = True) -> bytes:
    """RGB uint8 -> encoded ``.png`` / ``.jpg`` bytes (``quality`` for JPEG): the one encoder of crops and frames.

    ``rgb=False`` encodes the array's channels as they are (the synthetic generator's frames, see
    :func:`jpeg_roundtrip`).
    """
    ext = ext if ext.startswith(".") else f".{ext}"
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if rgb else image, params)
    if not ok:
        raise ValueError(f"cannot encode a {image.shape} {image.dtype} image as {ext}")
    return buf.tobytes()


def jpeg_roundtrip(image: np.ndarray, quality: int, rgb: bool = True) -> np.ndarray:
    """``image`` compressed as JPEG at ``quality`` and decoded again (SBI's frequency augmentation, the synthetic
    generator's compression).

    ``rgb=False`` passes the channels to the codec as they are: the synthetic generator has always compressed its
    RGB frames that way (the codec subsamples the chroma of swapped channels), and keeps doing so because its
    datasets and the committed reports made from them are regenerated byte for byte.
    """
    data = np.frombuffer(encode_image(image, ".jpg", quality, rgb=rgb), np.uint8)
    out = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB) if rgb else out


def iter_archive_sequences(
    archive: str | Path, members: Iterable[str], n: int | None
) -> Iterator[tuple[str, Frames | MediaError]]:
    """Stream a tar.gz once and yield ``(member, frames)`` for each wanted sequence folder inside it.

    ``members`` are folder prefixes as stored in the archive (``./12/fake/3``). Only the wanted folders'
    encoded bytes are buffered, one folder at a time: tar files written by walking a tree keep a folder's
    files together, so a sequence is complete as soon as the stream leaves its folder. Sequences the archive
    does not hold (or that cannot be decoded) are yielded with a ``MediaError`` instead of frames.
    """
    archive = Path(archive)
    _check_file(archive)
    wanted = {_norm_member(m): m for m in members}
    done: set[str] = set()
    current: str | None = None
    buffer: list[tuple[str, bytes]] = []

    def flush() -> tuple[str, Frames | MediaError]:
        key = current
        done.add(key)
        return wanted[key], _decode_sequence(archive, wanted[key], buffer, n)

    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for info in tar:
                if not info.isfile() or not info.name.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                folder = _norm_member(info.name.rsplit("/", 1)[0]) if "/" in info.name else ""
                if folder != current and current is not None:
                    yield flush()
                    buffer = []
                    current = None
                if folder not in wanted or folder in done:
                    continue
                current = folder
                f = tar.extractfile(info)
                buffer.append((info.name.rsplit("/", 1)[-1], f.read() if f else b""))
    except (tarfile.TarError, OSError, EOFError) as e:
        err = CorruptMedia(archive, f"cannot read archive ({_first_line(e)}); re-download it")
        for key, m in wanted.items():
            if key not in done:
                yield m, err
        return
    if current is not None:
        yield flush()
    for key, m in wanted.items():
        if key not in done:
            yield m, MissingMedia(f"{archive}:{m}", "sequence folder not found in archive")


def _decode_sequence(
    archive: Path, member: str, files: list[tuple[str, bytes]], n: int | None
) -> Frames | MediaError:
    if not files:
        return EmptyMedia(f"{archive}:{member}", "sequence has no images")
    names = sort_frame_names(name for name, _ in files)
    data = dict(files)
    idx = sample_indices(len(names), n)
    try:
        images = [decode_image(data[names[i]], f"{archive}:{member}/{names[i]}") for i in idx]
    except MediaError as e:
        return e
    return Frames(_numbers_for(names)[idx], images)


def _norm_member(name: str) -> str:
    # "./12/fake/3/", "12/fake/3" and "/12/fake/3" all name the same folder.
    name = name.strip("/")
    while name.startswith("./"):
        name = name[2:]
    return "" if name == "." else name


def read_source(kind: str, path: str | Path, n: int | None, segments: list[tuple[float, float]] | None = None, *,
                decoder: str = "cpu", device: str = "cuda") -> Frames:
    """Sampled frames of one non-archive index row (``video``, ``frames`` or ``image``); ``segments``: the
    row's fake spans in seconds (videos only: a frame rate places them); videos decoded by ``decoder``
    (:func:`read_video`)."""
    if segments and kind != "video":
        raise ValueError(f"fake_segments on a {kind!r} row ({path}): only videos carry a frame rate to place them")
    if kind == "video":
        return read_video(path, n, segments, decoder=decoder, device=device)
    if kind == "frames":
        return read_frames_folder(path, n)
    if kind == "image":
        return Frames(np.zeros(1, np.int64), [read_image(path)])
    raise ValueError(f"unknown index kind {kind!r} for {path}; expected one of {KINDS}")


def fingerprint(path: str | Path, kind: str = "video", content: bool = False) -> dict | None:
    """What identifies a source's content without reading it: size and modification time (ns); ``content``
    adds a SHA-1 of the bytes. A frames folder: its image files' count, total size and latest mtime. None when
    the source does not exist. Caches store it per video and redo (or report) a video whose source changed.
    """
    p = Path(path)
    try:
        if kind == "frames" or p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
            stats = [f.stat() for f in files]
            fp = {"files": len(files), "size": int(sum(s.st_size for s in stats)),
                  "mtime_ns": int(max((s.st_mtime_ns for s in stats), default=0))}
        else:
            st = p.stat()
            files = [p]
            fp = {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}
    except (FileNotFoundError, NotADirectoryError):
        return None
    if content:
        h = hashlib.sha1()
        for f in files:
            h.update(f.name.encode() if len(files) > 1 else b"")
            with open(f, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(block)
        fp["sha1"] = h.hexdigest()
    return fp


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MissingMedia(path, "file not found; check dataset.root and the index's path column")
    if not path.is_file():
        raise MissingMedia(path, "expected a file, found a folder")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise MediaError(path, f"cannot stat file ({e})") from e
    if size == 0:
        raise EmptyMedia(path, "file is empty (0 bytes); re-download it")
    if not os.access(path, os.R_OK):
        raise MediaError(path, "no read permission; fix the file's permissions")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
