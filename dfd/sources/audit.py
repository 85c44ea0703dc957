"""The shortcut audit: how well real and fake can be told apart from file metadata alone.

A dataset whose fakes come from another source than its reals (another resolution, frame rate, encoder, JPEG
writer, bit rate) lets a detector learn the source instead of the forgery, and its test split rewards that. The
audit measures it before any training: the cross-validated ROC AUC of a small classifier (shallow gradient
boosting, scikit-learn's ``HistGradientBoostingClassifier``, which takes missing values as they are) on the
metadata of each file (:mod:`dfd.store.probe`: resolution, aspect, frame rate, duration, frame count, codec, pixel
format, bit rate, bits and bytes per pixel, JPEG quantisation), stratified k-fold, grouped by identity (else by
a fake's source video, else by item) so that one person's or one source video's files never sit on both sides
of a fold. 0.5 means metadata says nothing; above ``audit.warn_auc`` (0.75) the audit warns, naming the features
that separate the classes best on their own (the AUC of each feature alone, direction-free).

Where it runs: every ``dfd-index`` summary (one line; ``--audit`` adds the per-feature and per-method tables),
and ``dfd-train`` on a mix (``train_mix``): the training data as a whole and every pair "reals of one source,
fakes of another", logged and recorded in results.json. Settings: :class:`AuditSettings` (``audit.*``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dfd.errors import ConfigError
from dfd.store import probe

#: Numeric features derived from the metadata, in the order tables list them.
NUMERIC_FEATURES = ("width", "height", "aspect", "megapixels", "fps", "duration", "frames", "bit_rate",
                    "bits_per_pixel", "bytes_per_pixel", "q_luma", "q_chroma")
CATEGORICAL_FEATURES = ("codec", "pix_fmt")
#: Single-feature AUCs below this are not named as "strongest" (they separate nothing worth a word).
NAMED_FEATURE_AUC = 0.6


@dataclass
class AuditSettings:
    """``audit.*``: the shortcut audit of ``dfd-index`` (every summary) and of ``dfd-train`` on a mix."""

    full: bool = False  # dfd-index --audit: per-feature and per-method tables under the one-line result
    warn_auc: float = 0.75  # warn at or above this cross-validated metadata-only AUC
    folds: int = 5  # stratified (grouped) k-fold; fewer when a class has fewer groups
    max_files: int = 2000  # per class: a seeded sample of the files is probed and classified (0: no audit)
    mix: bool = True  # dfd-train with train_mix: audit the mix once before training
    seed: int = 0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> AuditSettings:
        """Build from the ``audit:`` block, naming unknown keys instead of ignoring a typo."""
        values = dict(values or {})
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ConfigError(f"unknown audit settings {unknown}; valid: {valid}")
        out = cls(**values)
        if not 0.5 <= float(out.warn_auc) <= 1.0:
            raise ConfigError(f"audit.warn_auc={out.warn_auc} must be in [0.5, 1] (0.5: metadata says nothing)")
        if int(out.folds) < 2:
            raise ConfigError(f"audit.folds={out.folds} must be at least 2 (cross-validation)")
        return out

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return asdict(cls())


#: The ConfigStore name of the ``audit:`` defaults, outside any group (a group would be listed among the user's
#: choices in every command's ``--help``), as dfd.extract.config.CONFIG_NAME.
CONFIG_NAME = "dfd_audit_defaults"


def register_configs() -> None:
    """Register the ``audit:`` defaults with Hydra's ConfigStore (``dfd_audit_defaults@audit`` in conf/index.yaml's
    and conf/train.yaml's defaults lists): one home for them."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name=CONFIG_NAME, node=OmegaConf.create(AuditSettings.defaults()))


# ----------------------------------------------------------------------------------------------- features
def feature_table(meta: pd.DataFrame) -> pd.DataFrame:
    """The audit's features of probed files (:func:`dfd.store.probe.probe_files` rows): numeric columns, NaN
    where a file does not say (an image has no frame rate), then the categorical ones as strings."""
    def num(c: str) -> pd.Series:
        return pd.to_numeric(meta[c], errors="coerce").astype("float64")

    w, h, fps, frames = num("width"), num("height"), num("fps"), num("frames")
    pixels = w * h
    out = pd.DataFrame(index=meta.index)
    out["width"], out["height"] = w, h
    out["aspect"] = w / h
    out["megapixels"] = pixels / 1e6
    out["fps"], out["duration"], out["frames"] = fps, num("duration"), frames
    out["bit_rate"] = num("bit_rate") / 1e6
    out["bits_per_pixel"] = num("bit_rate") / (pixels * fps)  # per pixel per frame: the encoder's budget
    out["bytes_per_pixel"] = num("size") / (pixels * frames.fillna(1.0).clip(lower=1.0))
    out["q_luma"], out["q_chroma"] = num("q_luma"), num("q_chroma")
    out = out.replace([np.inf, -np.inf], np.nan)
    for c in CATEGORICAL_FEATURES:
        out[c] = meta[c].fillna("").astype(str)
    return out


def feature_aucs(features: pd.DataFrame, y: np.ndarray) -> dict[str, float]:
    """Each feature's AUC on its own, direction-free (max(AUC, 1 - AUC)), strongest first: a missing value
    ranks lowest (that a class lacks a fact, a frame rate, is a signal too); a categorical feature scores each
    file by its category's share of fakes."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        return {}
    out = {}
    for c in features.columns:
        col = features[c]
        if c in CATEGORICAL_FEATURES:
            score = pd.Series(y, index=col.index).groupby(col).transform("mean").to_numpy(float)
        else:
            score = col.to_numpy(float).copy()
            known = ~np.isnan(score)
            score[~known] = (score[known].min() - 1.0) if known.any() else 0.0
        if len(np.unique(score)) < 2:
            continue
        a = float(roc_auc_score(y, score))
        out[c] = max(a, 1.0 - a)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _design(features: pd.DataFrame) -> np.ndarray:
    """The classifier's input: numeric features as they are (NaN kept), categoricals one-hot."""
    num = features[[c for c in NUMERIC_FEATURES if c in features]].to_numpy(float)
    cats = [pd.get_dummies(features[c], prefix=c).to_numpy(float) for c in CATEGORICAL_FEATURES if c in features]
    x = np.hstack([num, *cats]) if cats else num
    keep = [j for j in range(x.shape[1]) if len(np.unique(x[:, j][~np.isnan(x[:, j])])) > 1
            or (np.isnan(x[:, j]).any() and not np.isnan(x[:, j]).all())]
    return x[:, keep]


def cross_validated_auc(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0
                        ) -> tuple[float, int]:
    """Out-of-fold ROC AUC of shallow gradient boosting on ``x`` (stratified k-fold grouped by ``groups``) and
    the number of folds used (fewer when a class has fewer groups; NaN and 0 when under two).

    Each fold's scores are its log-odds minus its training prior's: a fold whose trees found nothing then scores
    all its files alike, where raw probabilities would carry the prior, which is lower for the class a fold
    holds out more of, and turn a metadata-blind classifier into a spuriously inverted AUC on small sets.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold
    from threadpoolctl import threadpool_limits

    y = np.asarray(y).astype(int)
    groups = np.asarray(groups)
    k = min(int(folds), len(set(groups[y == 0])), len(set(groups[y == 1])))
    if k < 2:
        return math.nan, 0
    if x.shape[1] == 0:  # every file says the same: nothing to learn
        return 0.5, k
    oof = np.zeros(len(y))
    leaf = max(2, min(20, len(y) // 10))
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    # One thread: the fits are tiny, and OpenMP's worker threads cost more than they save (6x slower on a busy
    # 2-core machine).
    with threadpool_limits(limits=1):
        for train, test in splitter.split(x, y, groups):
            prior = float(np.mean(y[train]))
            if not 0.0 < prior < 1.0:
                continue
            clf = HistGradientBoostingClassifier(max_depth=3, max_iter=50, learning_rate=0.1, min_samples_leaf=leaf,
                                                 random_state=seed)
            clf.fit(x[train], y[train])
            oof[test] = clf.decision_function(x[test]) - math.log(prior / (1.0 - prior))
    return float(roc_auc_score(y, oof)), k


# ----------------------------------------------------------------------------------------------- results
@dataclass
class AuditResult:
    """One audit: what was audited, the metadata-only AUC and what drives it."""

    name: str
    n_real: int = 0
    n_fake: int = 0
    unreadable: int = 0
    error: str = ""  # one unreadable file's reason
    auc: float = math.nan
    folds: int = 0
    grouped_by: str = "item"
    features: dict[str, float] = field(default_factory=dict)  # AUC of each feature alone, strongest first
    per_method: dict[str, float] = field(default_factory=dict)  # reals vs one fake method (dfd-index --audit)
    medians: dict[str, tuple[float, float]] = field(default_factory=dict)  # (real, fake) per numeric feature
    sampled_from: int = 0  # files in the data before sampling (0: none were left out)
    seconds: float = 0.0

    def strongest(self, k: int = 3) -> list[tuple[str, float]]:
        """The features that separate the classes best on their own (AUC >= NAMED_FEATURE_AUC), at most k."""
        return [(n, a) for n, a in self.features.items() if a >= NAMED_FEATURE_AUC][:k]

    def warns(self, warn_auc: float) -> bool:
        return self.auc == self.auc and self.auc >= warn_auc

    def line(self, warn_auc: float) -> str:
        """One line: the result, or why there is none."""
        n = self.n_real + self.n_fake
        where = f"{self.name}: " if self.name else ""
        if n == 0:
            reason = f", e.g. {self.error}" if self.error else ""
            return f"{where}shortcut audit: no file metadata could be read ({self.unreadable} unreadable{reason})"
        if self.n_real == 0 or self.n_fake == 0:
            return f"{where}shortcut audit: {self.n_real} real / {self.n_fake} fake files readable: nothing to tell apart"
        if self.auc != self.auc:
            return (f"{where}shortcut audit: too few files to cross-validate ({self.n_real} real / {self.n_fake} fake "
                    f"in {self.folds or 'under 2'} groups per class)")
        strong = ", ".join(f"{f} {a:.2f}" for f, a in self.strongest()) or "none above 0.60"
        how = (f"{self.folds}-fold CV over {n} files grouped by {self.grouped_by}"
               + (f", sampled from {self.sampled_from}" if self.sampled_from else "")
               + (f", {self.unreadable} unreadable" if self.unreadable else ""))
        if self.warns(warn_auc):
            return (f"{where}shortcut audit: metadata alone tells real from fake with AUC {self.auc:.2f} ({how}) >= "
                    f"audit.warn_auc {warn_auc:g}: a model can learn the source instead of the forgery; strongest "
                    f"alone: {strong}")
        return (f"{where}shortcut audit: metadata alone tells real from fake with AUC {self.auc:.2f} ({how}), below "
                f"audit.warn_auc {warn_auc:g}; strongest alone: {strong}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["medians"] = {k: list(v) for k, v in self.medians.items()}
        return out


def audit_items(items: pd.DataFrame, name: str = "", settings: AuditSettings | None = None,
                per_method: bool = False) -> AuditResult:
    """Audit probed items: ``label``, ``group`` (and ``method`` for ``per_method``) plus the metadata columns
    of :mod:`dfd.store.probe`. Unreadable files (``error`` set) are counted and left out."""
    import time

    settings = settings or AuditSettings()
    start = time.perf_counter()
    bad = items["error"].fillna("").astype(str) != ""
    res = AuditResult(name=name, unreadable=int(bad.sum()),
                      error=str(items.loc[bad, "error"].iloc[0]) if bad.any() else "")
    ok = items.loc[~bad].reset_index(drop=True)
    y = ok["label"].to_numpy(int)
    res.n_fake = int(y.sum())
    res.n_real = len(y) - res.n_fake
    res.grouped_by = str(items.attrs.get("grouped_by", "item"))
    if res.n_real == 0 or res.n_fake == 0:
        return res
    feats = feature_table(ok)
    res.features = feature_aucs(feats, y)
    for c in NUMERIC_FEATURES:
        real, fake = feats.loc[y == 0, c].median(), feats.loc[y == 1, c].median()
        if real == real or fake == fake:
            res.medians[c] = (float(real), float(fake))
    x = _design(feats)
    res.auc, res.folds = cross_validated_auc(x, y, ok["group"].astype(str).to_numpy(), settings.folds, settings.seed)
    if per_method and "method" in ok:
        fakes = ok.loc[y == 1, "method"].astype(str)
        if fakes.nunique() > 1:
            for m in sorted(fakes.unique()):
                rows = (y == 0) | (ok["method"].astype(str) == m).to_numpy()
                auc, _ = cross_validated_auc(_design(feats[rows]), y[rows], ok.loc[rows, "group"].astype(str).to_numpy(),
                                             settings.folds, settings.seed)
                res.per_method[m] = auc
    res.seconds = time.perf_counter() - start
    return res


# ----------------------------------------------------------------------------------------------- index -> items
def _groups(index: pd.DataFrame) -> tuple[pd.Series, str]:
    """A CV group per row: identity where known, else the source video a fake was made from (a real is its
    own source), else the item itself."""
    ident = index["identity"].fillna("").astype(str)
    src = index["source_video"].fillna("").astype(str) if "source_video" in index else pd.Series("", index.index)
    vid = index["video_id"].astype(str)
    if (ident != "").mean() >= 0.5:
        return ident.where(ident != "", "item:" + vid), "identity"
    if (src != "").any():
        return src.where(src != "", vid), "source video"
    return vid, "item"


def sample_index(index: pd.DataFrame, max_files: int, seed: int = 0) -> pd.DataFrame:
    """At most ``max_files`` rows per class, drawn with ``seed`` (the same rows on every run)."""
    parts = []
    for label in (0, 1):
        part = index[index["label"] == label]
        if len(part) > max_files:
            part = part.sample(n=max_files, random_state=seed)
        parts.append(part)
    return pd.concat(parts).sort_index()


def probed_items(index: pd.DataFrame, root: str | Path, cache: str | Path | None, settings: AuditSettings,
                 trust_cache: bool = False) -> pd.DataFrame:
    """The index rows to audit (a per-class sample of ``audit.max_files``) with their metadata and CV groups."""
    groups, by = _groups(index)
    index = index.assign(group=groups)
    chosen = sample_index(index, settings.max_files, settings.seed)
    meta = probe.probe_files(zip(chosen["path"].astype(str), chosen["kind"].astype(str), strict=True), root, cache,
                             trust_cache=trust_cache)
    cols = ["video_id", "label", "split", "method", "group"]
    items = pd.concat([chosen[cols].reset_index(drop=True), meta.drop(columns=["path", "kind"])], axis=1)
    items.attrs["grouped_by"] = by
    items.attrs["sampled_from"] = len(index) if len(chosen) < len(index) else 0
    return items


def audit_index(index: pd.DataFrame, root: str | Path, cache: str | Path | None, settings: AuditSettings,
                name: str = "") -> AuditResult | None:
    """The audit of one dataset's index (every split), None with ``audit.max_files=0``."""
    if settings.max_files <= 0 or index.empty:
        return None
    items = probed_items(index, root, cache, settings)
    res = audit_items(items, name, settings, per_method=settings.full)
    res.sampled_from = int(items.attrs.get("sampled_from", 0))
    return res


def details(res: AuditResult) -> list[str]:
    """``dfd-index --audit``: one line per feature (real and fake medians, AUC alone), then per fake method."""
    lines = [f"{'feature':<16}{'real median':>14}{'fake median':>14}{'AUC alone':>11}"]
    for f in [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES]:
        if f not in res.features and f not in res.medians:
            continue
        real, fake = res.medians.get(f, (math.nan, math.nan))
        auc = res.features.get(f, 0.5)
        lines.append(f"{f:<16}{_num(real):>14}{_num(fake):>14}{auc:>11.2f}")
    for m, auc in res.per_method.items():
        lines.append(f"reals vs {m}: metadata-only AUC {'n/a' if auc != auc else f'{auc:.2f}'}")
    return lines


def _num(v: float) -> str:
    if v != v:
        return "-"
    return f"{v:.4g}"


# ----------------------------------------------------------------------------------------------- mixes
def source_items(source: Any, settings: AuditSettings, split: str | None = "train") -> pd.DataFrame | str:
    """A dataset source's files to audit (its ``split``), with metadata read through the cache beside its index
    (``<cache_dir>/index.parquet``); a string saying why when neither its files nor a metadata cache are here."""
    from dfd.store.cache import manifest_record, normalize_root
    from dfd.store.schema import read_index

    media = source.media_root() if hasattr(source, "media_root") else getattr(source, "root", None)
    root = Path(media) if media is not None else None
    index_path = Path(source.cache_dir) / "index.parquet"
    have_root = root is not None and root.is_dir()
    index = None
    if index_path.is_file():  # dfd-index's, unless it describes another dataset root than this one
        recorded = (manifest_record(index_path) or {}).get("root")
        ds_root = getattr(source, "root", None)
        if recorded is None or ds_root is None or recorded == normalize_root(ds_root) or not have_root:
            index = read_index(index_path)
    if index is None and have_root:
        try:
            index = source.build_index()
        except Exception as e:  # a source that cannot index here is skipped by the audit, not fatal to training
            return f"{source.name}: cannot index {root} ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    if index is None:
        return f"{source.name}: no index and no dataset root on this machine (run dfd-index dataset=... first)"
    cache = probe.cache_path(index_path)
    if not have_root and not cache.is_file():
        return f"{source.name}: its files are not on this machine and no metadata cache is at {cache}"
    if split is not None:
        index = index[index["split"] == split]
    if index.empty:
        return f"{source.name}: no '{split}' files"
    return probed_items(index.reset_index(drop=True), root or Path("."), cache, settings, trust_cache=not have_root)


def audit_mix(sources: Mapping[str, Any], settings: AuditSettings, split: str = "train") -> dict[str, Any]:
    """The audit of a training mix: every source's ``split`` together (what the model trains on) and every pair
    "reals of one source, fakes of another" (and each source alone). Returns ``{"mix": AuditResult | None,
    "pairs": {real source: {fake source: auc}}, "skipped": [reasons], "seconds"}``."""
    import time

    start = time.perf_counter()
    items: dict[str, pd.DataFrame] = {}
    skipped: list[str] = []
    for name, src in sources.items():
        got = source_items(src, settings, split)
        if isinstance(got, str):
            skipped.append(got)
        else:
            items[name] = got.assign(group=name + "/" + got["group"].astype(str))
    out: dict[str, Any] = {"mix": None, "pairs": {}, "skipped": skipped}
    if not items:
        out["seconds"] = time.perf_counter() - start
        return out
    union = pd.concat(list(items.values()), ignore_index=True)
    union.attrs["grouped_by"] = "/".join(dict.fromkeys(str(i.attrs.get("grouped_by", "item")) for i in items.values()))
    out["mix"] = audit_items(union, "+".join(items), settings)
    for real_src, reals in items.items():
        for fake_src, fakes in items.items():
            pair = pd.concat([reals[reals["label"] == 0], fakes[fakes["label"] == 1]], ignore_index=True)
            res = audit_items(pair, f"{real_src} reals / {fake_src} fakes", settings)
            out["pairs"].setdefault(real_src, {})[fake_src] = res.auc
    out["seconds"] = time.perf_counter() - start
    return out


def mix_lines(result: Mapping[str, Any], warn_auc: float) -> tuple[list[str], list[str]]:
    """(info lines, warning lines) of a mix audit, one line each."""
    info: list[str] = []
    warn: list[str] = []
    mix = result.get("mix")
    if mix is not None:
        (warn if mix.warns(warn_auc) else info).append(f"training mix {mix.line(warn_auc)}")
    high = [f"{r} reals / {f} fakes {a:.2f}" for r, row in result.get("pairs", {}).items() for f, a in row.items()
            if a == a and a >= warn_auc]
    if high:
        warn.append(f"shortcut audit of the training mix: reals of one source vs fakes of another told apart by "
                    f"metadata alone at AUC >= audit.warn_auc {warn_auc:g}: {'; '.join(high)}")
    for reason in result.get("skipped", []):
        info.append(f"shortcut audit skipped {reason}")
    return info, warn
