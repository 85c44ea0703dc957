"""What a heatmap costs: Grad-CAM (dfd.models.explain) per crop against plain scoring of the same crops.

    .venv/bin/python tests/benchmarks/bench_explain.py                 # small_cnn and tiny at 64 px
    .venv/bin/python tests/benchmarks/bench_explain.py --large         # + ViT-B/16 at 224, EfficientNet-B4 at 380

Both sides run the same random-init model on the same batch in this process (process CPU seconds, best of
``--repeats``), so the ratio holds on a busy machine where wall time does not.
"""

from __future__ import annotations

import argparse
import time

import torch


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--large", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from dfd.models import create_model
    from dfd.models.explain import Explainer

    models = [("small_cnn (resnet10t)", dict(arch="resnet10t", img_size=64)),
              ("tiny (test_vit)", dict(arch="test_vit", img_size=64))]
    if args.large:
        models += [("vit_b16", dict(arch="vit_base_patch16_224", img_size=224)),
                   ("efficientnet_b4", dict(arch="efficientnet_b4", img_size=380))]
    print(f"batch {args.batch}, {args.threads} thread(s), CPU seconds per crop (best of {args.repeats})")
    for name, kw in models:
        model = create_model(name="timm", **kw).eval()
        x = torch.randn(args.batch, 3, kw["img_size"], kw["img_size"])
        explainer = Explainer(model)

        def score(model=model, x=x) -> None:
            with torch.inference_mode():
                model(x)

        def explain(explainer=explainer, x=x) -> None:
            explainer(x, batch_size=args.batch)

        score()
        explain()  # warm-up both
        s, e = best(score, args.repeats) / args.batch, best(explain, args.repeats) / args.batch
        print(f"{name:24s} score {s * 1e3:8.2f} ms/crop   explain {e * 1e3:8.2f} ms/crop   ratio {e / s:5.2f}x")


if __name__ == "__main__":
    main()
