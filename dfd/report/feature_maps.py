"""Feature maps: 2-D projections of a backbone's stored features, coloured by real/fake, by dataset and by method.

The figure that shows whether a frozen backbone separates fakes across datasets before any head is trained.
Projection: scikit-learn's PCA (to 50 dimensions) then t-SNE (perplexity up to 30, PCA initialisation, seed 0).
scikit-learn is already a dependency (pinned), deterministic with a seed, and its t-SNE needs nothing compiled
beyond it; UMAP would add umap-learn and numba for a figure of the same purpose.

Points: the test split of each dataset's store (the split a cross-dataset report is about; the first split a
store holds otherwise), sampled evenly over its videos (``points`` in all, split equally between datasets).
Files: ``feature_map_<backbone>_<by>.png`` for ``by`` in label, dataset (with several datasets) and method.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dfd.data.datasets import ManifestArrays
from dfd.store.features import FeatureStore

BY = ("label", "dataset", "method")


def _manifest_of(store: FeatureStore) -> Path:
    # A store lives at <manifest folder>/features/<backbone> unless embed.dir moved it: then it names its cache.
    rec = store.record() or {}
    if rec.get("manifest"):
        return Path(rec["manifest"])
    return store.folder.parent.parent / "manifest.parquet"


def sample_points(stores: Mapping[str, str | Path], points: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """``{"features" (n, d) float32, "label", "dataset", "method"}`` from each dataset's store, ``points`` in all."""
    rng = np.random.default_rng(seed)
    per = max(1, int(points) // max(len(stores), 1))
    feats, labels, datasets, methods = [], [], [], []
    for name, folder in stores.items():
        store = FeatureStore(folder)
        rec = store.record()
        if rec is None:
            continue
        split = "test" if "test" in rec["splits"] and rec["splits"]["test"]["rows"] else next(
            (s for s, e in rec["splits"].items() if e["rows"]), None)
        if split is None:
            continue
        arrays = ManifestArrays(_manifest_of(store), splits=split)
        x = store.array(split)
        # Evenly over videos: every video's first (random) frame before any video's second, and so on.
        order = rng.permutation(len(arrays))
        take = np.sort(order[np.argsort(_rank_in_video(arrays, order), kind="stable")][:per])
        feats.append(np.asarray(x[take], np.float32))
        labels.append(arrays.label[take].astype(np.int64))
        datasets += [name] * len(take)
        methods += [arrays.method_names[m] for m in arrays.method[take]]
    if not feats:
        return {"features": np.zeros((0, 1), np.float32), "label": np.zeros(0, np.int64), "dataset": np.array([]),
                "method": np.array([])}
    return {"features": np.concatenate(feats), "label": np.concatenate(labels), "dataset": np.array(datasets),
            "method": np.array(methods)}


def _rank_in_video(arrays: ManifestArrays, order: np.ndarray) -> np.ndarray:
    """For the rows in ``order``: how many rows of the same video come before it (0 for a video's first)."""
    seen: dict[int, int] = {}
    out = np.empty(len(order), np.float64)
    for i, row in enumerate(order):
        v = int(arrays.video[row])
        out[i] = seen.get(v, 0)
        seen[v] = seen.get(v, 0) + 1
    return out


def project(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, 2) t-SNE coordinates of unit-normalised features (after PCA to at most 50 dimensions)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    n = len(x)
    if n < 4:
        return np.zeros((n, 2), np.float32)
    k = min(50, x.shape[1], n)
    x = PCA(n_components=k, random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def draw_feature_maps(stores: Mapping[str, str | Path], out_dir: str | Path, backbone: str | None = None,
                      points: int = 2000, seed: int = 0) -> list[Path]:
    """Project the stores' features together and draw one PNG per colouring; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = sample_points(stores, points, seed)
    if len(data["label"]) < 4:
        return []
    xy = project(data["features"], seed)
    name = backbone or "backbone"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    colours = {"label": np.where(data["label"] == 1, "fake", "real"), "dataset": data["dataset"],
               "method": data["method"]}
    for by in BY:
        values = colours[by]
        groups = sorted(set(values.tolist()))
        if by == "dataset" and len(groups) < 2:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=110)
        cmap = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
        for i, g in enumerate(groups):
            sel = values == g
            colour = {"real": "#1f77b4", "fake": "#d62728"}.get(g) if by == "label" else cmap(i % cmap.N)
            ax.scatter(xy[sel, 0], xy[sel, 1], s=8, alpha=0.7, color=colour, label=f"{g} ({int(sel.sum())})",
                       linewidths=0)
        ax.set_title(f"{name}: t-SNE of pooled features, by {by}")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=2, loc="best", frameon=False)
        fig.tight_layout()
        path = out / f"feature_map_{name}_{by}.png"
        fig.savefig(path)
        plt.close(fig)
        files.append(path)
    return files


def run_feature_stores(runs: list[dict]) -> dict[str, dict[str, str]]:
    """``{backbone: {dataset: store folder}}`` from collected runs' results.json ``features`` records."""
    import json

    out: dict[str, dict[str, str]] = {}
    for run in runs:
        source = str(run.get("source", ""))
        if not source.endswith(".json") or not Path(source).is_file():
            continue
        rec = json.loads(Path(source).read_text()).get("features") or {}
        for dataset, folder in (rec.get("stores") or {}).items():
            if Path(folder, "features.json").is_file():
                out.setdefault(str(rec.get("backbone", "backbone")), {}).setdefault(dataset, folder)
    return out
