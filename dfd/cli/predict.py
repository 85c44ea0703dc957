"""``dfd-predict MODEL INPUT... --out predictions.csv``: score images and videos with a bundle or checkpoint.

Faces are detected on the CPU (``--detect-device cpu``, as training caches are extracted); the model runs on
``--device``.
"""

from __future__ import annotations

import argparse
import sys

from dfd.cli._args import ArgumentParser, fail, user_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (argparse: an organiser's server should not need Hydra)."""
    p = ArgumentParser(
        prog="dfd-predict",
        description="Detect faces (MTCNN), crop and score them exactly as the training crops were made (the "
                    "bundle's crop contract); one CSV row per file with path, prob_fake, label (0 real, 1 fake), "
                    "faces, frames, status, reason, threshold, threshold_level (video | image), inputs.",
    )
    p.add_argument("model", help="a bundle folder from dfd-export, or a dfd-train checkpoint (.ckpt)")
    p.add_argument("inputs", nargs="+",
                   help="images, videos, folders (searched recursively) or .txt lists (one path per line)")
    p.add_argument("--out", default="predictions.csv", help="CSV to write (default predictions.csv)")
    p.add_argument("--frames", type=int, default=None, help="frames per video, uniformly spaced (default: bundle's)")
    p.add_argument("--inputs", dest="input_mode", choices=("auto", "frames", "crops"), default="auto",
                   help="frames: detect and crop faces; crops: inputs are face crops, taken as they are (resized); "
                        "auto (default): as the model was trained (crops for models trained on datasets shipped as "
                        "face crops, e.g. WildDeepfake)")
    p.add_argument("--save-crops", metavar="DIR", default=None,
                   help="also write every face crop scored, as DIR/<input path>/<frame:06d>.png, the input's path "
                        "relative to the inputs' common folder (the extra faces of a frame as "
                        "<frame:06d>_<track>.png)")
    p.add_argument("--explain", metavar="DIR", default=None,
                   help="also write Grad-CAM heatmaps of the fake score per file: DIR/<input path>/<frame:06d>.png, the "
                        "input's path as --save-crops writes it "
                        "(the crop with its heatmap), <frame:06d>_frame.png (laid back onto the frame) and cam.npz "
                        "(the maps); a bundle's network is rebuilt from its model.safetensors (needs dfd's models)")
    p.add_argument("--video-score", default=None, choices=("max_face_mean", "mean", "largest_face"),
                   help="how a video's face probabilities make its probability (default: the bundle's video_score): "
                        "max_face_mean = mean over frames of the max over each frame's faces; mean = of the mean; "
                        "largest_face = the video's main face only")
    p.add_argument("--batch-size", type=int, default=32, help="frames per MTCNN call and crops per model call")
    p.add_argument("--device", default="auto", help="the model's device: auto (GPU when present) | cpu | cuda[:N]")
    p.add_argument("--detect-device", default="cpu",
                   help="face detection's device: cpu (default: training caches are extracted on CPUs, and GPU boxes "
                        "can differ) | cuda[:N] (warns unless this GPU model has passed gpu_checks.sh extract)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Write predictions.csv; exit non-zero only when no model, no input, or not one file could be read."""
    args = parse_args(argv)
    from dfd.inference.predict import (
        PredictError,
        Predictor,
        collect_inputs,
        open_model,
        resolve_device,
        write_csv,
    )

    with user_errors():
        device = resolve_device(args.device)
        detect_device = resolve_device(args.detect_device, "--detect-device")
        paths = collect_inputs(args.inputs)
        if not paths:
            raise PredictError(f"no images or videos found in {' '.join(args.inputs)}")
        bundle = open_model(args.model, device)
        predictor = Predictor(bundle, frames=args.frames, batch_size=args.batch_size, device=device,
                              inputs=args.input_mode, save_crops=args.save_crops, video_score=args.video_score,
                              detect_device=detect_device, explain=args.explain)
        if predictor.notice:
            print(f"dfd-predict: note: {predictor.notice}", file=sys.stderr)
        if predictor.detect_notice:
            print(f"dfd-predict: warning: {predictor.detect_notice}", file=sys.stderr)
        results = predictor.predict(paths, progress=not args.no_progress)
    out = write_csv(results, args.out)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "no_face", "unreadable")}
    thr = bundle.thresholds
    print(f"{len(results)} files -> {out}: {counts['ok']} ok, {counts['no_face']} without a face, "
          f"{counts['unreadable']} unreadable (thresholds: videos {thr['video']:.4f}, images {thr['image']:.4f})")
    if counts["unreadable"] == len(results):
        first = results[0]
        fail(f"none of the {len(results)} inputs could be read (e.g. {first.path}: {first.reason}); every row of "
             f"{out} says why")


if __name__ == "__main__":
    main()
