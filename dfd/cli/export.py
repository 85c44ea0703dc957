"""``dfd-export CHECKPOINT OUT_DIR``: a trained checkpoint -> a bundle an organiser can run with torch only."""

from __future__ import annotations

import argparse
import logging

from dfd.cli._args import ArgumentParser, fail, user_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (argparse, not Hydra: the organiser-facing tools take plain paths)."""
    from dfd.inference.calibrate import METHODS
    from dfd.inference.export import DEFAULT_OPSET

    p = ArgumentParser(
        prog="dfd-export",
        description="Write model.torchscript.pt, model.onnx, model.safetensors, preprocess.json and README.md "
                    "for a training checkpoint (LoRA merged; labels 0 = real, 1 = fake).",
    )
    p.add_argument("checkpoint", help="a dfd-train checkpoint (.ckpt)")
    p.add_argument("out_dir", help="folder to write the bundle into (created if missing)")
    p.add_argument("--calibrate", choices=METHODS, default="eer",
                   help="choose the thresholds (video-level for videos, image-level for single images) on the "
                        "training dataset's val split: EER point, best accuracy, or none (0.5); default eer")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Export a checkpoint; a bad checkpoint or dataset ends with a one-line error, not a traceback."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from pathlib import Path

    from dfd.inference.export import export_bundle

    if not Path(args.checkpoint).is_file():
        fail(f"checkpoint not found: {args.checkpoint} (pass <run dir>/checkpoints/<file>.ckpt)")
    with user_errors():
        cfg = export_bundle(args.checkpoint, args.out_dir, calibrate=args.calibrate, opset=args.opset)
    files = [f for f in cfg["files"].values() if f]
    print(f"bundle written to {args.out_dir}: {', '.join(files)}, preprocess.json, README.md")
    for level, thr in cfg["thresholds"].items():
        unit = thr.get("on") or ("videos" if level == "video" else "frames")
        where = (f" on {thr.get('dataset')} val: {thr['n']} {unit}, "
                 f"accuracy {thr['val_accuracy']:.3f}") if "split" in thr else ""
        print(f"{level}-level threshold {thr['value']:.4f} ({thr['method']}{where})")
    print(f"crops: {cfg['crop_source']}; TorchScript matches the checkpoint within {cfg['verify_max_abs_diff']:.1e}")


if __name__ == "__main__":
    main()
