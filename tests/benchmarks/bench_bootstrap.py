"""How long does the video-AUC bootstrap interval take? dfd's vectorised bootstrap vs the plain loop.

Both draw 1,000 stratified resamples (reals and fakes resampled separately) of the same scores:

* baseline: a Python loop, one resample at a time, AUC of each by torchmetrics' ``binary_auroc``
  (what one would write first);
* dfd: ``dfd.engine.metrics.bootstrap_auc_ci`` (multiplicity vectors, AUC read off cumulative counts).

    .venv/bin/python tests/benchmarks/bench_bootstrap.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

from dfd.engine.metrics import bootstrap_auc_ci

RESAMPLES = 1000


def loop_bootstrap(s: np.ndarray, y: np.ndarray, resamples: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    pos, neg = np.where(y == 1)[0], np.where(y == 0)[0]
    target = torch.from_numpy(np.r_[np.ones(len(pos)), np.zeros(len(neg))].astype(np.int64))
    aucs = []
    for _ in range(resamples):
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        aucs.append(float(binary_auroc(torch.from_numpy(s[idx]), target)))
    lo, hi = np.quantile(aucs, [0.025, 0.975])
    return float(lo), float(hi)


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'videos':>7} {'loop s':>8} {'dfd s':>8} {'speed-up':>9}  interval (loop | dfd)")
    for n in (500, 2000, 5000, 20000):
        y = rng.integers(0, 2, n)
        s = np.clip(0.3 * y + rng.normal(0.4, 0.2, n), 0, 1)
        loop_t = best_of(lambda s=s, y=y: loop_bootstrap(s, y, RESAMPLES), repeats=1)
        dfd_t = best_of(lambda s=s, y=y: bootstrap_auc_ci(s, y, resamples=RESAMPLES))
        a, b = loop_bootstrap(s, y, 200), bootstrap_auc_ci(s, y)
        print(f"{n:>7} {loop_t:>8.3f} {dfd_t:>8.3f} {loop_t / dfd_t:>8.0f}x  "
              f"[{a[0]:.3f}, {a[1]:.3f}] | [{b[0]:.3f}, {b[1]:.3f}]")


if __name__ == "__main__":
    main()
