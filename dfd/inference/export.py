"""Checkpoint -> self-contained bundle (TorchScript, ONNX, safetensors, preprocess.json, README).

Export may use the whole training stack (Lightning to read the checkpoint, Hydra to rebuild the training
dataset for threshold calibration); what it writes needs none of it (see ``dfd.inference.bundle``).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dfd import __version__
from dfd.engine.video_score import DEFAULT_VIDEO_SCORE, DESCRIPTIONS, check_video_score
from dfd.errors import UserError
from dfd.faces.contract import CropContract
from dfd.inference.bundle import (
    FILE_MODE,
    FORMAT,
    FORMAT_VERSION,
    ONNX,
    PREPROCESS,
    SAFETENSORS,
    TORCHSCRIPT,
    Bundle,
    ProbabilityModel,
    load_bundle,
    probability_model,
)
from dfd.inference.calibrate import METHODS, choose_threshold, small_sample_warning

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17


class ExportError(UserError, ValueError):
    """The checkpoint cannot be exported as asked (message says what and how to fix)."""


# ----------------------------------------------------------------------------------------------- config
def rebuild_config(model_cfg: dict) -> dict:
    """The model config stored in a bundle: rebuilds the architecture only (never looks for pretrained files)."""
    cfg = {k: v for k, v in dict(model_cfg).items() if k not in ("weights_dir",)}
    cfg["pretrained"] = False
    cfg["weights"] = None
    return cfg


def _instantiate_source(dataset_cfg: dict | None) -> object | None:
    if not dataset_cfg:
        return None
    from dfd.engine.build import build_dataset

    return build_dataset(dataset_cfg)


def training_contract(meta: dict, source: object | None) -> tuple[CropContract, str]:
    """The crop contract the model was trained on, and where it was read: the checkpoint (training copies
    the training cache's contract there), else the training cache's record, else dfd-extract's defaults."""
    if meta.get("crop"):
        return CropContract.from_mapping(meta["crop"], where="checkpoint crop contract"), "checkpoint"
    found = source.crop_contract() if source is not None and hasattr(source, "crop_contract") else None
    if found is not None:
        manifest = Path(getattr(source, "manifest_path", ""))
        where = manifest.relative_to(source.cache_dir).as_posix() if manifest.is_relative_to(source.cache_dir) else manifest.name
        return found, f"training cache ({getattr(source, 'name', '')}: <dataset.cache_dir>/{where})"
    log.warning("neither the checkpoint nor its training cache records a crop contract: the bundle assumes "
                "dfd-extract's defaults (re-extract and retrain to record the real one)")
    return CropContract(), "dfd-extract defaults (not recorded by the checkpoint or its training cache)"


# ----------------------------------------------------------------------------------------------- calibration
@torch.inference_mode()
def validation_scores(model: ProbabilityModel, source: object, spec: dict, batch_size: int = 64,
                      video_score: str = DEFAULT_VIDEO_SCORE) -> dict:
    """Scores on the source's val split as predict computes them, per kind of item: ``video`` (per video by the
    video-score rule), ``frame`` (per face crop of the videos; None for clip models) and ``image`` (per still
    image: its faces by the rule's frame step, as evaluation's image level and dfd-predict score an image), each
    ``(probs, labels)`` or None when the split has no such item; ``videos`` and ``images``: (real, fake) counts."""
    from torch.utils.data import DataLoader

    from dfd.data.bad_crops import collate, empty
    from dfd.data.datasets import ClipDataset, FrameDataset, ManifestArrays
    from dfd.data.transforms import Pipeline, Spec
    from dfd.engine.metrics import video_aggregate

    arrays = ManifestArrays(source.prepare(), splits="val", roots=source.roots())
    if len(arrays) == 0:
        raise ExportError(f"{source.name}: no 'val' frames in {source.manifest_path}; export with --calibrate none "
                          "or extract the dataset's validation split")
    pipe = Pipeline(Spec.of(spec))
    ds = ClipDataset(arrays, pipe, spec["clip_len"]) if spec.get("clip_len") else FrameDataset(arrays, pipe)
    probs, labels, videos, frames, tracks = [], [], [], [], []
    needs_lm = isinstance(model, nn.Module) and getattr(model.detector, "needs_landmarks", False)
    # An unreadable crop is replaced by another frame of its video, or its sample dropped (dfd.data.bad_crops).
    for batch in DataLoader(ds, batch_size=batch_size, num_workers=0, collate_fn=collate):
        if empty(batch):
            continue
        args = (batch["image"], batch["landmarks"]) if needs_lm else (batch["image"],)
        probs.append(model(*args).float())
        labels.append(batch["label"])
        videos.append(batch["video"])
        frames.append(batch["frame"])
        tracks.append(batch["track"])
    prob, label, video = torch.cat(probs), torch.cat(labels), torch.cat(videos)
    frame, track = torch.cat(frames), torch.cat(tracks)
    is_image = torch.as_tensor(arrays.video_is_image, dtype=torch.bool)[video]
    out: dict = {"video": None, "frame": None, "image": None, "videos": (0, 0), "images": (0, 0)}
    for kind, rows in (("video", ~is_image), ("image", is_image)):
        if not bool(rows.any()):
            continue
        iprob, ilabel, _ = video_aggregate(prob[rows], label[rows], video[rows], torch.zeros_like(video[rows]),
                                           frame[rows], track[rows], video_score)
        ilabel = ilabel.long().numpy()
        out[kind] = (iprob.double().numpy(), ilabel)
        out[f"{kind}s"] = (int((ilabel == 0).sum()), int((ilabel == 1).sum()))
        if kind == "video" and not spec.get("clip_len"):
            out["frame"] = (prob[rows].double().numpy(), label[rows].long().numpy())
    return out


#: What each threshold applies to in dfd-predict (preprocess.json ``applies_to``).
_APPLIES_TO = {"frame": "single images in bundles without an 'image' threshold (dfd-predict before image "
                        "thresholds); per-frame probabilities of videos",
               "image": "single images"}


def calibrate_thresholds(model: ProbabilityModel, source: object | None, spec: dict, method: str,
                         video_score: str = DEFAULT_VIDEO_SCORE) -> dict:
    """``{"video", "frame", "image"}`` thresholds on the training dataset's val split (0.5 for ``none``).

    ``video`` on video scores made by ``video_score`` (the rule dfd-predict applies to videos); ``image`` on the
    val split's still images (their scores as dfd-predict scores an image), applied to single images; ``frame``
    on per-frame probabilities of the val videos (what single images got before image thresholds existed). A
    split without videos calibrates ``video`` and ``frame`` on its images, one without images takes ``image``
    from ``frame``; each says so in a ``note``.
    """
    if method == "none":
        none = choose_threshold(np.zeros(0), np.zeros(0), "none")
        return {level: {**none, "level": level} for level in ("video", "frame", "image")}
    if source is None:
        raise ExportError("the checkpoint records no training dataset (hparams meta.dataset) to calibrate on; "
                          "pass --calibrate none to export with thresholds 0.5")
    scores = validation_scores(model, source, spec, video_score=video_score)
    name = getattr(source, "name", None)
    out: dict = {}
    for level in ("video", "frame", "image"):
        data, note, unit = scores[level], None, "videos" if level != "image" else "images"
        if data is None and level == "frame" and scores["video"] is not None:
            # Clip model: an image is scored as a clip of one repeated face, like a video.
            out[level] = {**out["video"], "level": level,
                          "note": "clip model: images are scored as clips of one repeated face; video threshold"}
            continue
        if data is None and level == "image":
            out[level] = {**out["frame"], "level": level, "applies_to": _APPLIES_TO["image"],
                          "note": "no still images in the validation split: the frame threshold (per-frame "
                                  "probabilities of its videos)"}
            continue
        if data is None:  # no validation videos: the images are the only evidence
            data, unit = scores["image"], "images"
            note = f"no videos in the validation split: calibrated on its {scores['images'][0] + scores['images'][1]} images"
        n_real, n_fake = scores[unit]
        thr = choose_threshold(*data, method, videos=n_real + n_fake if level == "frame" else None)
        thr.update(split="val", dataset=name, level=level, on="frames" if level == "frame" and unit == "videos" else unit,
                   applies_to=f"videos ({DESCRIPTIONS[video_score]})" if level == "video" else _APPLIES_TO[level])
        if note:
            thr["note"] = note
        warning = small_sample_warning(level, n_real, n_fake, method, unit)
        if warning:
            thr["warning"] = warning
            log.warning("%s", warning)
        log.info("%s-level threshold %.4f (%s on %s val, %d %s)", level, thr["value"], thr["method"], name, thr["n"],
                 thr["on"])
        out[level] = thr
    return out


# ----------------------------------------------------------------------------------------------- build
def _example_inputs(model: ProbabilityModel, spec: dict, batch: int) -> tuple[torch.Tensor, ...]:
    s = int(spec["size"])
    shape = (batch, int(spec["clip_len"]), 3, s, s) if spec.get("clip_len") else (batch, 3, s, s)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(shape, generator=gen)
    if not getattr(model.detector, "needs_landmarks", False):
        return (images,)
    # A plausible frontal face (eyes, nose, mouth corners) so tracing follows the landmark path.
    face = torch.tensor([[0.36, 0.42], [0.64, 0.42], [0.5, 0.57], [0.4, 0.72], [0.6, 0.72]]) * s
    return images, face.expand(*shape[:-3], 5, 2).contiguous()


def load_for_export(checkpoint: str | Path) -> tuple[ProbabilityModel, dict]:
    """The checkpoint's network with LoRA merged, wrapped to output probabilities, and its hparams."""
    from dfd.engine.evaluate import load_module
    from dfd.models.finetune import merge_for_export

    module = load_module(checkpoint)
    detector = merge_for_export(module.model).float().eval()
    for p in detector.parameters():
        p.requires_grad_(False)
    hparams = dict(module.hparams)
    hparams["run_id"] = module.run_id
    return probability_model(detector), hparams


def describe(checkpoint: str | Path, model: ProbabilityModel, hparams: dict, calibrate: str) -> dict:
    """preprocess.json for a checkpoint: input spec, crop contract, thresholds, model config."""
    if calibrate not in METHODS:
        raise ExportError(f"--calibrate {calibrate!r} is not one of {METHODS}")
    meta = dict(hparams.get("meta") or {})
    dataset_cfg = meta.get("dataset")
    try:
        source = _instantiate_source(dataset_cfg)
    except Exception as e:  # an old or moved dataset class: export still works from the checkpoint's record
        if calibrate != "none":
            raise ExportError(f"cannot rebuild the training dataset from the checkpoint ({e}); "
                              "pass --calibrate none to export with threshold 0.5") from e
        source = None
    spec = model.detector.input_spec.to_dict()
    spec["mean"], spec["std"] = list(spec["mean"]), list(spec["std"])
    contract, origin = training_contract(meta, source)
    # The rule evaluation used (checkpoints older than the rule: the default, identical with one face per frame).
    video_score = check_video_score(meta.get("video_score"), "checkpoint meta.video_score")
    thresholds = calibrate_thresholds(model, source, spec, calibrate, video_score)
    needs_lm = bool(getattr(model.detector, "needs_landmarks", False))
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dfd_version": __version__,
        "torch_version": torch.__version__,
        "labels": {"0": "real", "1": "fake"},
        "output": "probability that the face is fake (sigmoid inside the model); label = prob_fake >= threshold",
        "inputs": ["images", "landmarks"] if needs_lm else ["images"],
        "input": {
            **spec,
            "layout": "(B,L,3,S,S) clips" if spec.get("clip_len") else "(B,3,S,S)",
            "dtype": "float32",
            "colour": "RGB",
            "normalise": "(pixel / 255 - mean) / std, after resizing the face crop to size x size",
            "landmarks": ("5 MTCNN points (eyes, nose, mouth corners) as (x, y) in model-input pixels; NaN unknown"
                          if needs_lm else None),
        },
        # How a frame becomes the face crop this model was trained on (dfd.faces.contract.CropContract): what
        # dfd-predict runs on raw media.
        "crop": contract.to_dict(),
        "crop_source": origin,
        # How a video's face probabilities become its probability (dfd.engine.video_score), as in evaluation.
        "video_score": video_score,
        "video_score_rule": DESCRIPTIONS[video_score],
        # The pretrained weights the model was fine-tuned from (file, hub id, revision, sha256; None: trained from
        # scratch), from the checkpoint's meta["weights"]: their licence and origin travel with the model.
        "weights": meta.get("weights"),
        "thresholds": thresholds,
        "model": rebuild_config(hparams["model"]),
        "files": {"torchscript": TORCHSCRIPT, "onnx": ONNX, "safetensors": SAFETENSORS},
        "source": {**_checkpoint_where(checkpoint), "run_id": hparams.get("run_id"), "run": meta.get("run"),
                   "finetune": dict(hparams.get("finetune") or {})},
    }


def _checkpoint_where(checkpoint: str | Path) -> dict[str, str]:
    """Where the bundle's checkpoint was: relative to its run folder (named), never an absolute path of the
    exporting machine that means nothing where the bundle goes."""
    ck = Path(checkpoint)
    run = ck.parent.parent if ck.parent.name == "checkpoints" else ck.parent
    return {"checkpoint": ck.relative_to(run).as_posix(), "run_folder": run.name}


# ----------------------------------------------------------------------------------------------- writers
def write_safetensors(model: ProbabilityModel, path: Path) -> None:
    """Plain weights (LoRA already merged); clones so tied tensors never share storage in the file."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.detector.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt", "dfd_version": __version__})


def write_torchscript(model: ProbabilityModel, spec: dict, path: Path) -> None:
    """Trace the probability model (tracing works for every timm backbone; scripting does not)."""
    example = _example_inputs(model, spec, 2)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-derived Python ints are expected
        traced = torch.jit.trace(model, example, check_trace=False)
    traced.save(str(path))


def write_onnx(model: ProbabilityModel, spec: dict, path: Path, opset: int) -> None:
    """ONNX graph with a dynamic batch axis (TorchScript-based exporter: needs no onnxscript)."""
    example = _example_inputs(model, spec, 2)
    names = ["images", "landmarks"][: len(example)]
    axes = {n: {0: "batch"} for n in [*names, "prob_fake"]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(path), input_names=names, output_names=["prob_fake"],
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
    import onnx

    onnx.checker.check_model(str(path))


def verify(bundle_dir: Path, model: ProbabilityModel, spec: dict, atol: float = 1e-4) -> float:
    """Reload the written TorchScript and compare it with the eager model on a batch size it was not traced at."""
    bundle = load_bundle(bundle_dir)
    example = _example_inputs(model, spec, 3)
    with torch.no_grad():
        want = model(*example)
    got = bundle(*example)
    diff = float((want - got).abs().max())
    if not math.isfinite(diff) or diff > atol:
        raise ExportError(f"the exported TorchScript differs from the checkpoint by {diff:.2e} (> {atol}); "
                          "this architecture does not trace faithfully: report it with the model config")
    return diff


def export_bundle(checkpoint: str | Path, out_dir: str | Path, calibrate: str = "eer",
                  opset: int = DEFAULT_OPSET) -> dict:
    """Write a bundle for ``checkpoint`` into ``out_dir`` and return its preprocess.json contents."""
    out = Path(out_dir)
    model, hparams = load_for_export(checkpoint)
    config = describe(checkpoint, model, hparams, calibrate)
    out.mkdir(parents=True, exist_ok=True)
    spec = config["input"]
    write_safetensors(model, out / SAFETENSORS)
    write_torchscript(model, spec, out / TORCHSCRIPT)
    try:
        write_onnx(model, spec, out / ONNX, opset)
    except Exception as e:  # e.g. an operator without an ONNX mapping: the other formats still serve
        (out / ONNX).unlink(missing_ok=True)
        config["files"]["onnx"] = None
        config["onnx_error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e) else ''}"
        log.warning("ONNX export failed (%s); the bundle has TorchScript and safetensors only", config["onnx_error"])
    (out / PREPROCESS).write_text(json.dumps(config, indent=2) + "\n")
    (out / "README.md").write_text(bundle_readme(config))
    # Readable by others whatever the umask or the writers (temporary files of the exporters) chose: the
    # organiser's server usually runs under another account.
    out.chmod(0o755)
    for f in out.iterdir():
        if f.is_file():
            f.chmod(FILE_MODE)
    config["verify_max_abs_diff"] = verify(out, model, spec)
    return config


def checkpoint_bundle(checkpoint: str | Path) -> Bundle:
    """A checkpoint as an in-memory bundle (threshold 0.5, uncalibrated): lets dfd-predict take a .ckpt."""
    model, hparams = load_for_export(checkpoint)
    return Bundle(model, describe(checkpoint, model, hparams, "none"))


def _weights_line(weights: dict | None) -> str:
    if not weights:
        return "random initialisation (no pretrained weights)"
    origin = weights.get("hub_id") or weights.get("url") or Path(str(weights.get("path", "a local file"))).name
    rev = f" @ {weights['revision']}" if weights.get("revision") else ""
    return f"{weights.get('arch', 'the backbone')}'s pretrained weights, {origin}{rev} (see `weights` in preprocess.json)"


def bundle_readme(cfg: dict) -> str:
    """The bundle's README: what the files are and how to run the model with torch only."""
    inp, thr = cfg["input"], cfg["thresholds"]
    image = thr.get("image") or thr["frame"]
    image_basis = ("on the validation images' probabilities" if "image" in thr and not image.get("note") else
                   "on per-frame probabilities of the validation videos, which spread wider")
    contract = CropContract.from_mapping(cfg["crop"])
    lm = "landmarks" in cfg["inputs"]
    call = "model(x, landmarks)" if lm else "model(x)"
    shape = "(B, L, 3, S, S)" if inp.get("clip_len") else "(B, 3, S, S)"
    if contract.inputs == "crops":
        faces = (f"this model was trained on face crops as its dataset distributes them: give it face crops "
                 f"(resized to {contract.size} px, then to S); `dfd-predict --inputs crops` does.")
    else:
        faces = f"{contract.describe()} (dfd-predict runs exactly this)."
    return f"""# dfd model bundle

Exported by dfd {cfg['dfd_version']} (torch {cfg['torch_version']}) from `{cfg['source']['checkpoint']}`.
Labels: **0 = real, 1 = fake**. The model outputs the **probability of fake**; label = prob >= threshold.

| file | what | needs |
|---|---|---|
| `model.torchscript.pt` | TorchScript, {shape} float32 -> (B,) probability | torch only |
| `model.onnx` | same graph, dynamic batch axis, input `images`{', `landmarks`' if lm else ''}, output `prob_fake` | onnxruntime |
| `model.safetensors` | plain weights (LoRA merged); `load_bundle(folder, backend="safetensors")` rebuilds the network from `preprocess["model"]` | dfd + timm |
| `preprocess.json` | input size/mean/std, the crop contract (`crop`), thresholds per level (`thresholds`), the pretrained weights it was fine-tuned from (`weights`) | - |

Input: S = {inp['size']}, RGB, resized with {inp['interpolation']} interpolation, then `(pixel/255 - mean)/std`
with mean {inp['mean']} and std {inp['std']}.{f" Clips of L = {inp['clip_len']} frames." if inp.get('clip_len') else ''}
Faces: {faces}
A video's probability: {DESCRIPTIONS[check_video_score(cfg.get("video_score"))]} (`video_score` in preprocess.json).
Fine-tuned from: {_weights_line(cfg.get("weights"))}.

Thresholds (chosen on the training set's validation split): **videos** {thr['video']['value']:.6g}
({thr['video']['method']}, on per-video probabilities), **single images** {image['value']:.6g}
({image['method']}, {image_basis}).

## Load with torch only

```python
import json, torch
cfg = json.load(open("preprocess.json"))
model = torch.jit.load("model.torchscript.pt", map_location="cpu").eval()
x = torch.zeros({shape.replace('B', '1').replace('L', str(inp.get('clip_len'))).replace('S', str(inp['size']))})  # normalised face crops
{"landmarks = torch.full((*x.shape[:-3], 5, 2), float('nan'))  # MTCNN points in model pixels; NaN = unknown" + chr(10) if lm else ""}with torch.no_grad():
    prob_fake = {call}                    # (B,)
label = (prob_fake >= cfg["thresholds"]["image"]["value"]).long()   # one image: 0 real, 1 fake (videos: "video")
```

Or with dfd installed: `dfd-predict <this folder> video.mp4 images/ --out predictions.csv`
(the same face detection, crop and frame sampling as training), or `dfd.inference.bundle.load_bundle(<folder>)`.

## Face detection on a GPU

{_gpu_detection_text()}
"""


def _gpu_detection_text() -> str:
    """What the bundle's README says about detecting faces on a GPU: the models with a PASS record."""
    from dfd.faces.gpu_passes import CHECK, read_passes

    passes = read_passes()
    head = ("The training crops were cut from faces MTCNN found on a CPU, and `dfd-predict` detects on the CPU by "
            "default (`--device` moves only the model). MTCNN on a GPU can move boxes (float noise through its "
            f"cascade); `--detect-device cuda` is verified on the GPU models where `{CHECK}` passed (every box within "
            "IoU 0.95 of the CPU's on the same frames, none found by one side only)")
    if not passes:
        return head + ": none yet, so detect on the CPU (on other models dfd-predict warns in one line)."
    rows = "\n".join(f"| {r['gpu']} | {r.get('date', '')} | torch {r.get('torch', '?')}, CUDA {r.get('cuda', '?')} | "
                     f"{r.get('frames', '?')} frames, min IoU {r.get('min_iou', '?')} |" for r in passes)
    return (head + " (on other models dfd-predict warns in one line):\n\n| GPU | date | software | check |\n"
            "|---|---|---|---|\n" + rows)
