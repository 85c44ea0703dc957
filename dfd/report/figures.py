"""Which report section a figure belongs to: a small registry of figure kinds, matched on file names.

Every PNG a report folder holds (drawn by ``dfd-report``, or written there by another tool, e.g. ``dfd-embed``'s
``feature_map_<backbone>_<by>.png``) and every PNG at the top of a collected run's directory (``roc.png``,
reliability diagrams, robustness heatmaps) is embedded in report.md and report.html under the section of the
first kind whose pattern matches its name; names no kind claims go under "Other figures". A new figure kind
is one line here; a figure that is absent simply leaves its section out.
"""

from __future__ import annotations

import fnmatch
import shutil
from collections.abc import Sequence
from pathlib import Path

from dfd.report.plots import slug

#: (file-name pattern, section), first match wins; sections appear in this order.
FIGURE_KINDS: tuple[tuple[str, str], ...] = (
    ("heatmap_*.png", "Cross-dataset matrix"),
    ("gap_*.png", "Generalization gap"),
    ("roc_all_*.png", "ROC curves"),
    ("roc*.png", "ROC curves"),
    ("per_method*.png", "Per manipulation method"),
    ("auc_by_method*.png", "Per manipulation method"),
    ("reliability*.png", "Calibration"),
    ("calibration*.png", "Calibration"),
    ("robustness*.png", "Robustness"),
    ("*robustness*.png", "Robustness"),
    ("feature_map*.png", "Feature maps"),
    ("embed*.png", "Feature maps"),
    ("mix*.png", "Training mixes"),
)
OTHER = "Other figures"
#: Folders of a report that hold pictures but not figures (the failure galleries, a report run's W&B files).
NOT_FIGURES = ("gallery", "wandb")
RUN_FIGURES = "figures/runs"


def section_of(path: str | Path) -> str:
    """The section a figure file belongs to (``OTHER`` when no kind claims its name)."""
    name = Path(path).name
    for pattern, section in FIGURE_KINDS:
        if fnmatch.fnmatch(name, pattern):
            return section
    return OTHER


def sections() -> list[str]:
    """Every section name, in report order."""
    return [*dict.fromkeys(s for _, s in FIGURE_KINDS), OTHER]


def copy_run_figures(runs: Sequence[dict], out: Path) -> list[Path]:
    """Copy the PNGs at the top of each collected run's directory into ``out/figures/runs/<config>_s<seed>/``,
    so the report folder holds (and can be moved with) every figure it shows."""
    copied = []
    for run in runs:
        source = str(run.get("source", ""))
        if source.startswith("wandb:") or not source.endswith(".json"):
            continue
        folder = out / RUN_FIGURES / slug(f"{run['config']}_s{run.get('seed')}")
        for png in sorted(Path(source).parent.glob("*.png")):
            folder.mkdir(parents=True, exist_ok=True)
            copied.append(Path(shutil.copy2(png, folder / png.name)))
    return copied


def find_figures(out: Path) -> dict[str, list[Path]]:
    """Every figure under a report folder (galleries excluded), by section, sections in report order."""
    found: dict[str, list[Path]] = {s: [] for s in sections()}
    for png in sorted(out.rglob("*.png")):
        if png.relative_to(out).parts[0] in NOT_FIGURES:
            continue
        found[section_of(png)].append(png)
    return {s: paths for s, paths in found.items() if paths}
