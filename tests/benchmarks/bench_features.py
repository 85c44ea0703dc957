"""Benchmark a linear-probe learning-rate sweep: end to end on the crops vs ``dfd-embed`` once + heads on stored
features (``data.features=cached``), in one run, on the same data, model, seed and settings.

    end to end   for each lr: dfd-train finetune=linear_probe (the frozen backbone runs forward on every crop of
                 every epoch, validation and test included)
    features     dfd-embed once (the store: every crop's feature), then for each lr: dfd-train
                 finetune=linear_probe data.features=cached (the head on the stored features)

Printed: both wall times (the embedding pass included on the features side), the ratio, and the parity of the
first learning rate's two runs (same selected epoch? largest logit difference on the test crops, end to end;
the end-to-end probe here keeps fp32 features, the feature-trained one rounds them to fp16 as stored).

Defaults (the issue's setting): ViT-B/16 at 224 px, random init, 8 learning rates, 3 epochs, ~2,000 crops of the
synthetic set (train 1,440 / val 280 / test 280), batch 32, the CPU. Both sides read crops with
``data.num_workers=0`` so that they draw the same batches (the parity check needs them).

``--e2e-runs K`` times only K of the end-to-end runs and scales their mean to the sweep (every run costs the
same: same data, epochs and model; only the lr differs): the printout says so. On a GPU, ``--gpu``: CLIP
ViT-L/14 (random init unless ``--pretrained``) at batch 256, bf16 (trainer=gpu).

Run: ``.venv/bin/python tests/benchmarks/bench_features.py``
     ``.venv/bin/python tests/benchmarks/bench_features.py --e2e-runs 1``      (a busy CPU)
     ``.venv/bin/python tests/benchmarks/bench_features.py --gpu``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (loader workers): the measure a busy machine's
    load does not distort as much as wall time."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]


def _compose(name: str, overrides: list[str]):
    from tests.conftest import compose

    return compose(name, runtime=name == "train", overrides=overrides)


def main() -> None:
    """Parse flags, run both sides, print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model preset (default vit_b16; --gpu: clip_vit_l14)")
    ap.add_argument("--lrs", type=int, default=8, help="learning rates in the sweep (the first N of 1e-4..3e-1)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--videos", default="360,70,70", help="synthetic train,val,test videos (4 crops each)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 32; --gpu: 256)")
    ap.add_argument("--e2e-runs", type=int, default=None, help="end-to-end runs timed (default: all)")
    ap.add_argument("--gpu", action="store_true", help="CLIP ViT-L/14, batch 256, trainer=gpu (bf16)")
    ap.add_argument("--pretrained", action="store_true", help="the preset's pretrained weights (else random init)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()

    import pandas as pd
    import torch

    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("error: --gpu needs CUDA (torch.cuda.is_available() is False)")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model or ("clip_vit_l14" if args.gpu else "vit_b16")
    batch = args.batch or (256 if args.gpu else 32)
    lrs = LRS[: args.lrs]
    e2e_runs = min(args.e2e_runs or len(lrs), len(lrs))
    tr, va, te = (int(v) for v in args.videos.split(","))
    work = Path(args.out or tempfile.mkdtemp(prefix="bench_features_"))
    common = [f"paths.cache_dir={work / 'cache'}", f"dataset.videos={{train: {tr}, val: {va}, test: {te}}}",
              f"model={model}", f"model.pretrained={str(args.pretrained).lower()}", "finetune=linear_probe",
              "augment=none", "logger=none", "data.num_workers=0", f"trainer.max_epochs={args.epochs}",
              f"data.batch_size={batch}", f"embed.batch_size={batch}", "seed=0",
              *(["trainer=gpu"] if args.gpu else ["trainer=cpu"])]

    from hydra.utils import instantiate

    from dfd.engine.embed import embed
    from dfd.engine.train import train

    source = instantiate(_compose("train", common).dataset)
    t = time.perf_counter()
    source.prepare()
    splits = pd.read_parquet(source.manifest_path, columns=["split"])["split"]
    crops = {s: int((splits == s).sum()) for s in ("train", "val", "test")}
    print(f"data: synthetic, {sum(crops.values())} crops ({crops}), generated in {time.perf_counter() - t:.1f} s; "
          f"{model} ({'pretrained' if args.pretrained else 'random init'}), batch {batch}, {args.epochs} epochs, "
          f"{len(lrs)} learning rates, {'cuda' if args.gpu else f'cpu, {torch.get_num_threads()} threads'}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    cpu: dict[str, list[float]] = {"embed": [], "features": [], "crops": []}

    def run(kind: str, lr: float) -> tuple[float, dict]:
        extra = [f"optim.lr={lr}", f"paths.run_dir={work / kind / str(lr)}"]
        if kind == "features":
            extra.append("data.features=cached")
        t0, c0 = time.perf_counter(), cpu_seconds()
        res = train(_compose("train", [*common, *extra]))
        cpu[kind].append(cpu_seconds() - c0)
        return time.perf_counter() - t0, res

    t0, c0 = time.perf_counter(), cpu_seconds()
    embed_args = [a for a in common if a.split("=")[0].split(".")[0] in ("paths", "dataset", "model", "seed", "trainer",
                                                                        "embed", "augment")]
    store = embed(_compose("embed", [*embed_args, "embed.num_workers=2", "progress=false"]))
    t_embed = time.perf_counter() - t0
    cpu["embed"].append(cpu_seconds() - c0)
    print(f"dfd-embed: {t_embed:.1f} s ({store['rows']} crops -> {store['store']})", flush=True)
    t_heads, feats = [], {}
    for lr in lrs:
        dt, feats[lr] = run("features", lr)
        t_heads.append(dt)
        print(f"  head on stored features, lr {lr:g}: {dt:.1f} s", flush=True)
    t_e2e, e2e = [], {}
    for lr in lrs[:e2e_runs]:
        dt, e2e[lr] = run("crops", lr)
        t_e2e.append(dt)
        print(f"  end to end, lr {lr:g}: {dt:.1f} s", flush=True)

    side_features = t_embed + sum(t_heads)
    side_e2e = sum(t_e2e) / len(t_e2e) * len(lrs)
    scaled = "" if e2e_runs == len(lrs) else f" ({e2e_runs} of {len(lrs)} runs timed, mean x {len(lrs)})"
    print(f"\nend to end: {side_e2e:.1f} s{scaled}")
    print(f"features:   {side_features:.1f} s (dfd-embed {t_embed:.1f} s + {len(lrs)} heads {sum(t_heads):.1f} s)")
    print(f"ratio:      {side_e2e / side_features:.1f}x  (goal >= 20x)")
    cpu_e2e = sum(cpu["crops"]) / len(cpu["crops"]) * len(lrs)
    cpu_features = cpu["embed"][0] + sum(cpu["features"])
    print(f"CPU time:   end to end {cpu_e2e:.1f} s{scaled}, features {cpu_features:.1f} s (dfd-embed "
          f"{cpu['embed'][0]:.1f} s + heads {sum(cpu['features']):.1f} s): {cpu_e2e / cpu_features:.1f}x; load "
          f"average now {os.getloadavg()[0]:.1f}")

    # Parity of the first lr: selection and test logits, end to end on the test crops, of the two checkpoints.
    from dfd.data.datasets import FrameDataset, ManifestArrays
    from dfd.data.transforms import Pipeline, Spec
    from dfd.engine.evaluate import load_module

    lr = lrs[0]
    a, b = load_module(e2e[lr]["checkpoint"]).eval(), load_module(feats[lr]["checkpoint"]).eval()
    ds = FrameDataset(ManifestArrays(source.manifest_path, splits="test"), Pipeline(Spec.of(a.model.input_spec)))
    diffs, scale = [], []
    with torch.no_grad():
        for start in range(0, len(ds), batch):
            x = torch.stack([ds[i]["image"] for i in range(start, min(start + batch, len(ds)))])
            la, lb = a(x).float(), b(x).float()
            diffs.append(float((la - lb).abs().max()))
            scale.append(float(la.abs().max()))
    same = e2e[lr]["selection"]["epoch"] == feats[lr]["selection"]["epoch"]
    auc = [r["test"][source.name]["video"]["auc"] for r in (e2e[lr], feats[lr])]
    print(f"parity (lr {lr:g}): selected epoch {e2e[lr]['selection']['epoch']} vs {feats[lr]['selection']['epoch']}"
          f" ({'same' if same else 'DIFFERENT'}); test video AUC {auc[0]:.4f} vs {auc[1]:.4f}; max |logit "
          f"difference| {max(diffs):.2e} (largest |logit| {max(scale):.3f})")
    print(json.dumps({"model": model, "crops": sum(crops.values()), "lrs": len(lrs), "epochs": args.epochs,
                      "embed_s": round(t_embed, 1), "heads_s": [round(x, 1) for x in t_heads],
                      "e2e_s": [round(x, 1) for x in t_e2e], "e2e_sweep_s": round(side_e2e, 1),
                      "features_sweep_s": round(side_features, 1), "ratio": round(side_e2e / side_features, 2),
                      "max_logit_diff": max(diffs), "load_avg": os.getloadavg()[0],
                      "cpu_s": {k: [round(x, 1) for x in v] for k, v in cpu.items()},
                      "cpu_ratio": round(cpu_e2e / cpu_features, 2)}))


if __name__ == "__main__":
    main()
