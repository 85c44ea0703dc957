"""The exported model bundle: what a competition organiser loads, with torch (and numpy/opencv) only.

A bundle is a folder::

    model.torchscript.pt   TorchScript: normalised images (B,3,S,S) -> (B,) probability of "fake"
                           (clip models: (B,L,3,S,S); landmark models also take (B,5,2) / (B,L,5,2))
    model.onnx             the same graph for ONNX Runtime (dynamic batch axis)
    model.safetensors      plain weights (LoRA merged); rebuilding the network from them needs dfd + timm
    preprocess.json        everything needed to turn a video or image into the model's input: the input spec,
                           the crop contract the training crops were made with (dfd.faces.contract), the
                           video-score rule (``video_score``: how a video's face probabilities make its
                           probability, dfd.engine.video_score) and thresholds (video-level for videos,
                           image-level for single images; frame-level kept for older readers)
    README.md              how to load it with torch only

Why this module imports nothing beyond torch/numpy/opencv: a LoRA checkpoint once failed to load on an
organiser's server because of library versions. TorchScript needs no Python model code at all, so that path
stays free of Lightning, Hydra, OmegaConf, peft, wandb and timm (a test enforces it in a fresh process).
Nothing here unpickles: TorchScript archives are checked to *be* TorchScript before loading, and weights
come from safetensors.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dfd.engine.video_score import check_video_score
from dfd.errors import UserError
from dfd.faces.contract import CropContract
from dfd.faces.geometry import RESIZE_FLAGS

PREPROCESS = "preprocess.json"
TORCHSCRIPT = "model.torchscript.pt"
ONNX = "model.onnx"
SAFETENSORS = "model.safetensors"
FORMAT = "dfd-bundle"
# 2: the crop contract ("crop") and thresholds ("thresholds": video, frame, and since image thresholds image;
# readers fall back to frame for single images without it); 1: "face"/"video"/"threshold".
FORMAT_VERSION = 2
BACKENDS = ("torchscript", "safetensors")
# Every file of a bundle is readable by others: the organiser's server often runs as another user.
FILE_MODE = 0o644



class BundleError(UserError, ValueError):
    """A bundle folder is missing, incomplete, or holds something dfd refuses to load."""


class ProbabilityModel(nn.Module):
    """A detector whose output is the probability of "fake" (sigmoid of its logit): what bundles export."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B,) probabilities from normalised (B,3,S,S) images or (B,L,3,S,S) clips."""
        return torch.sigmoid(self.detector(images).float())


class LandmarkProbabilityModel(ProbabilityModel):
    """For detectors that need the 5 MTCNN landmarks (ADDNet): landmarks in model-input pixels, NaN unknown.

    The attention mask is built here at the bundle's fixed input size (a Python int) and handed to the
    detector: inside a trace, ``images.shape`` yields tensors, which the mask generator's size arithmetic
    cannot round.
    """

    def __init__(self, detector: nn.Module, size: int) -> None:
        super().__init__(detector)
        self.size = int(size)

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """(B,) probabilities from images and (B,5,2) (clips: (B,L,5,2)) landmarks."""
        if not hasattr(self.detector, "mask"):  # a landmark model without ADDNet's mask generator
            return torch.sigmoid(self.detector(images, landmarks).float())
        flat = landmarks.reshape(-1, 5, 2)
        mask = self.detector.mask(flat, self.size, self.size, flat.shape[0])
        mask = mask.reshape(*landmarks.shape[:-2], 1, self.size, self.size).to(images.dtype)
        return torch.sigmoid(self.detector(images, landmarks, mask=mask).float())


def probability_model(detector: nn.Module) -> ProbabilityModel:
    """Wrap a dfd Detector so its forward returns probabilities, with landmarks when it needs them."""
    if getattr(detector, "needs_landmarks", False):
        return LandmarkProbabilityModel(detector, detector.input_spec.size).eval()
    return ProbabilityModel(detector).eval()


def read_config(path: str | Path) -> dict:
    """The bundle's preprocess.json, checked for the fields predict and load rely on."""
    folder = Path(path)
    file = folder / PREPROCESS
    if not folder.is_dir():
        raise BundleError(f"model bundle {folder} is not a folder; pass the OUT_DIR written by dfd-export")
    if not file.is_file():
        raise BundleError(f"{file} not found: {folder} is not a dfd bundle (re-export it with dfd-export)")
    try:
        cfg = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"{file} is not valid JSON ({e}); re-export the bundle with dfd-export") from e
    if cfg.get("format") != FORMAT:
        raise BundleError(f"{file} is not a dfd bundle description (format={cfg.get('format')!r})")
    if int(cfg.get("format_version", 0)) > FORMAT_VERSION:
        raise BundleError(f"{file} has format_version {cfg['format_version']}; this dfd reads up to "
                          f"{FORMAT_VERSION}: upgrade dfd")
    needed = ("input", "crop", "thresholds") if int(cfg.get("format_version", 1)) >= 2 else (
        "input", "face", "video", "threshold")
    for key in needed:
        if key not in cfg:
            raise BundleError(f"{file} lacks the {key!r} section; re-export the bundle with dfd-export")
    return cfg


def bundle_contract(cfg: dict) -> CropContract:
    """The crop contract of a bundle (format 1 bundles: the one their face/video sections implied)."""
    if "crop" in cfg:
        return CropContract.from_mapping(cfg["crop"], where="preprocess.json crop contract")
    return CropContract.from_legacy_bundle(cfg["face"], cfg["video"])


def bundle_thresholds(cfg: dict) -> dict[str, float]:
    """``{"video": t, "frame": t, "image": t}`` (bundles exported before image thresholds: ``image`` is their
    ``frame`` threshold, the one they applied to single images; format 1 bundles have one threshold for all)."""
    if "thresholds" in cfg:
        out = {level: float(cfg["thresholds"][level]["value"]) for level in ("video", "frame")}
        return {**out, "image": float(cfg["thresholds"].get("image", cfg["thresholds"]["frame"])["value"])}
    t = float(cfg["threshold"]["value"])
    return {"video": t, "frame": t, "image": t}


def image_threshold_level(cfg: dict) -> str:
    """Which threshold a bundle applies to single images: ``image`` (calibrated on still images, or said why
    not), or ``frame`` for bundles exported before image thresholds."""
    return "image" if "image" in (cfg.get("thresholds") or {}) else "frame"


def check_torchscript(path: Path) -> None:
    """Refuse anything that is not a TorchScript archive (above all a ``torch.save`` pickle of a module)."""
    if not path.is_file():
        raise BundleError(f"{path} not found; re-export the bundle with dfd-export")
    if not zipfile.is_zipfile(path):
        raise BundleError(f"{path} is not a TorchScript archive (not a zip file); dfd loads only TorchScript "
                          "or safetensors, never pickles: re-export the bundle with dfd-export")
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    # torch.jit.save writes the model's code under <archive>/code/; torch.save of a module writes only a
    # pickle (data.pkl) that would run arbitrary code when loaded.
    if not any("/code/" in n for n in names):
        raise BundleError(f"{path} is a pickled object (torch.save), not TorchScript; dfd refuses to unpickle "
                          "models, which can run arbitrary code: re-export the bundle with dfd-export")


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Weights from a safetensors file, with a clear error when the file is something else (e.g. a pickle)."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise BundleError(f"{path} not found; re-export the bundle with dfd-export")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises SafetensorError/OSError with terse messages
        raise BundleError(f"{path} is not a valid safetensors file ({e}); dfd never unpickles weights: "
                          "re-export the bundle with dfd-export") from e


class Bundle:
    """A loaded model plus its preprocessing facts; call it on normalised tensors to get probabilities.

    Args:
        model: a module mapping (images[, landmarks]) to (B,) probabilities.
        config: the preprocess.json contents.
        path: the bundle folder (None for a model built in memory from a checkpoint).
    """

    def __init__(self, model: nn.Module, config: dict, path: Path | None = None) -> None:
        self.model = model.eval()
        self.config = config
        self.path = path
        inp = config["input"]
        self.size = int(inp["size"])
        self.mean = np.asarray(inp["mean"], np.float32)
        self.std = np.asarray(inp["std"], np.float32)
        self.interpolation = str(inp.get("interpolation", "bilinear"))
        self.clip_len = int(inp["clip_len"]) if inp.get("clip_len") else None
        self.needs_landmarks = "landmarks" in config.get("inputs", ["images"])
        self.contract = bundle_contract(config)
        self.thresholds = bundle_thresholds(config)
        self.threshold = self.thresholds["video"]  # videos; single images use thresholds[image_level]
        self.image_level = image_threshold_level(config)
        # Bundles older than the rule hold one face per frame, where every rule is the plain mean.
        self.video_score = check_video_score(config.get("video_score"), "preprocess.json video_score")
        self.device = torch.device("cpu")

    def to(self, device: str | torch.device) -> Bundle:
        """Move the model to a device (inputs passed to ``__call__`` are moved too)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) probabilities of "fake" (on the CPU) for normalised images/clips."""
        images = images.to(self.device, torch.float32)
        if self.needs_landmarks:
            if landmarks is None:  # unknown landmarks: the model falls back to its default mask
                landmarks = torch.full((*images.shape[:-3], 5, 2), float("nan"))
            return self.model(images, landmarks.to(self.device, torch.float32)).float().cpu()
        return self.model(images).float().cpu()

    def preprocess(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """Face crops (uint8 RGB HxWx3) -> normalised (N,3,S,S) float tensor, exactly as in training."""
        return preprocess_crops(crops, self.size, self.mean, self.std, self.interpolation)

    def scale_landmarks(self, landmarks: np.ndarray, crop_size: int) -> np.ndarray:
        """Landmarks in crop pixels -> model-input pixels (the resize maps them like any keypoint)."""
        return np.asarray(landmarks, np.float32) * (self.size / float(crop_size))


def preprocess_crops(
    crops: Sequence[np.ndarray], size: int, mean: Sequence[float], std: Sequence[float], interpolation: str
) -> torch.Tensor:
    """Resize (cv2, the interpolation training used) and normalise face crops into an (N,3,S,S) tensor."""
    import cv2

    flag = RESIZE_FLAGS.get(interpolation, cv2.INTER_LINEAR)
    if not len(crops):
        return torch.zeros((0, 3, size, size))
    batch = np.stack([
        c if c.shape[:2] == (size, size) else cv2.resize(c, (size, size), interpolation=flag) for c in crops
    ]).astype(np.float32)
    m = np.asarray(mean, np.float32) * 255.0
    inv = 1.0 / (np.asarray(std, np.float32) * 255.0)
    return torch.from_numpy(np.ascontiguousarray(((batch - m) * inv).transpose(0, 3, 1, 2)))


def load_bundle(path: str | Path, device: str = "cpu", backend: str = "torchscript") -> Bundle:
    """Load a bundle written by ``dfd-export``: TorchScript (torch only) or safetensors (rebuilds with dfd+timm)."""
    folder = Path(path)
    cfg = read_config(folder)
    if backend not in BACKENDS:
        raise BundleError(f"unknown bundle backend {backend!r}; choose one of {BACKENDS}")
    if backend == "torchscript":
        file = folder / cfg.get("files", {}).get("torchscript", TORCHSCRIPT)
        check_torchscript(file)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 marks jit deprecated; it still loads
            model = torch.jit.load(str(file), map_location="cpu")
    else:
        model = rebuild_from_safetensors(folder, cfg)
    return Bundle(model, cfg, folder).to(device)


def rebuild_from_safetensors(folder: Path, cfg: dict) -> nn.Module:
    """The eager network from model.safetensors and the model config (needs dfd.models and timm)."""
    from dfd.models import create_model

    state = load_safetensors(folder / cfg.get("files", {}).get("safetensors", SAFETENSORS))
    model_cfg = {k: v for k, v in cfg["model"].items() if k != "_target_"}
    detector = create_model(**model_cfg)
    missing, unexpected = detector.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BundleError(f"{folder / SAFETENSORS} does not match the model config in {PREPROCESS}: "
                          f"missing {missing[:5]}, unexpected {unexpected[:5]}; re-export the bundle")
    return probability_model(detector)
