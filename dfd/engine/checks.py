"""Config checks that run before any model work, each failing in one line that names the fix: self-blend
arguments, robustness sweeps, crop contracts of mixed-in and test sets, the crops a preset's method needs
(``data.require_crop``), a validation split without both classes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from omegaconf import DictConfig

from dfd.errors import ConfigError
from dfd.faces.contract import GEOMETRY, ContractError, CropContract, extract_overrides
from dfd.sources.base import DatasetSource

log = logging.getLogger(__name__)


def check_sbi_keys(cfg: DictConfig) -> None:
    """``data.sbi`` holds SelfBlend's arguments: a typo fails now, in one line naming the valid keys."""
    given = (cfg.get("data") or {}).get("sbi") or {}
    if not given:
        return
    import inspect

    from dfd.data.sbi import SelfBlend

    valid = [n for n in inspect.signature(SelfBlend).parameters if n != "self"]
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ConfigError(f"data.sbi: {', '.join(map(repr, unknown))} {'is not an argument' if len(unknown) == 1 else 'are not arguments'} "
                          f"of SelfBlend; valid keys: {', '.join(valid)}")


#: robustness.at: where a sweep's distortions act. ``crop``: the stored face crop before the model's resize
#: (dfd.data.transforms.perturbation); ``frame``: the test set's source frames before face detection, re-extracted
#: by dfd-extract's code (dfd.extract.distorted). Keys of ``robustness`` that are settings, not kinds:
ROBUSTNESS_AT = ("crop", "frame")
ROBUSTNESS_SETTINGS = ("at", "workers")


@dataclass(frozen=True)
class RobustnessPlan:
    """A checked robustness sweep: where it acts, its (kind, level) pairs in order, extraction workers (frame)."""

    at: str = "crop"
    pairs: tuple[tuple[str, float], ...] = ()
    workers: int | None = None


def robustness_plan(robustness: Mapping | None) -> RobustnessPlan:
    """``robustness`` (a preset, ``conf/robustness/<name>.yaml``, or ``{kind: [levels], at: crop|frame}``) checked
    before any model work: a wrong kind, level or setting is one line."""
    robustness = robustness or {}
    at = str(robustness.get("at") or "crop")
    if at not in ROBUSTNESS_AT:
        raise ConfigError(f"robustness.at={at!r} is not valid; choose one of {', '.join(ROBUSTNESS_AT)} (crop: the "
                          "stored face crops; frame: the source frames, before face detection)")
    workers = robustness.get("workers")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"robustness.workers={workers!r} must be a whole number >= 1 (or null: dfd-extract's default)")
    kinds = {k: v for k, v in robustness.items() if k not in ROBUSTNESS_SETTINGS}
    return RobustnessPlan(at, tuple(check_robustness(kinds)), workers)


def check_robustness(robustness: Mapping | None) -> list[tuple[str, float]]:
    """The robustness sweep's kinds as (kind, level) pairs, checked before any model work (one line when wrong)."""
    from dfd.data.transforms import perturbation

    pairs = []
    for kind, levels in (robustness or {}).items():
        if kind in ROBUSTNESS_SETTINGS:
            continue
        if levels is None or isinstance(levels, str | int | float):
            raise ConfigError(f"robustness.{kind} must be a list of levels, e.g. robustness='{{{kind}: [..]}}'")
        for level in levels:
            try:
                perturbation(str(kind), float(level))  # an unknown kind: ConfigError naming the valid ones
            except ConfigError:
                raise
            except (TypeError, ValueError) as e:
                raise ConfigError(f"robustness.{kind}: level {level!r} is invalid ({str(e).strip().splitlines()[0]})"
                                  ) from e
            pairs.append((str(kind), float(level)))
    return pairs


#: data.crop_mismatch: what a run does with a cache whose crop geometry differs from the run's.
CROP_MISMATCH = ("refuse", "warn")


def _geometry(c: CropContract) -> str:
    if c.inputs == "crops":
        return f"the dataset's own face crops at {c.size} px"
    return f"{c.align} x{c.margin:g}, {c.size} px"


def check_crop_contracts(run: CropContract | None, sources: Mapping[str, DatasetSource], role: str, against: str,
                         policy: str = "refuse") -> list[str]:
    """Compare every source's cache contract with the run's (``run``: the training set's, or the checkpoint's).

    Crops framed differently (:data:`dfd.faces.contract.GEOMETRY`: alignment, margin, size) are different model
    inputs: refused by default, in one line naming both and the fix; ``data.crop_mismatch=warn`` keeps them
    for a deliberate cross-preprocessing study, with a note. A dataset distributed as face crops (WildDeepfake)
    next to crops cut from frames is framed by its authors: allowed, with a note. Returns the notes.
    """
    if policy not in CROP_MISMATCH:
        raise ConfigError(f"data.crop_mismatch={policy!r} is not valid; choose one of {', '.join(CROP_MISMATCH)}")
    if run is None:
        return []
    notes = []
    for name, src in sources.items():
        theirs = src.crop_contract()
        if theirs is None:
            continue
        diff = run.geometry_diff(theirs)
        if not diff:
            continue
        if set(diff) == {"inputs"}:
            notes.append(f"{role} '{name}' holds {_geometry(theirs)}, {against} {_geometry(run)}: framed "
                         "differently" + (" (re-extract it with extract.inputs=frames to crop its faces the same way)"
                                          if theirs.inputs == "crops" else ""))
            continue
        what = ", ".join(f"{k}={b} (vs {a})" for k, (a, b) in diff.items())
        if policy == "warn":
            notes.append(f"{role} '{name}' was cropped differently from {against} {_geometry(run)}: {what}; used "
                         "anyway (data.crop_mismatch=warn)")
            continue
        fix = extract_overrides({k: a for k, (a, _) in diff.items()})
        root = f" dataset.root={src.root}" if src.root is not None else ""
        raise ConfigError(
            f"{role} '{name}' was cropped differently from {against} {_geometry(run)}: {what} in its cache "
            f"{src.cache_dir}; re-extract it to match (`dfd-extract dataset={src._config_name()}{root} {fix}`), "
            "or set data.crop_mismatch=warn to compare across preprocessing on purpose"
        )
    for note in notes:
        log.warning(note)
    return notes


def _wanted(required: Mapping) -> str:
    parts = [str(required["align"])] if "align" in required else []
    if "margin" in required:
        parts.append(f"x{float(required['margin']):g}")
    text = " ".join(parts)
    if "size" in required:
        text = f"{text}, {int(required['size'])} px" if text else f"{int(required['size'])} px"
    return text


def check_required_crop(required: Mapping | None, sources: Mapping[str, DatasetSource], who: str,
                        policy: str = "refuse", cache_dir: str | None = None) -> list[str]:
    """The crops a preset's method needs (``data.require_crop``: some of align, margin, size; GenD and Effort:
    ArcFace-aligned, x1.3, 256 px) against every training source's cache.

    Crops made otherwise are refused (one line naming the ``dfd-extract`` that makes the right cache, into its
    own ``paths.cache_dir``: a cache holds one contract); ``data.crop_mismatch=warn`` trains on them with a
    note. A source whose cache records no contract is not judged. Returns the notes.
    """
    if policy not in CROP_MISMATCH:
        raise ConfigError(f"data.crop_mismatch={policy!r} is not valid; choose one of {', '.join(CROP_MISMATCH)}")
    if not required:
        return []
    required = dict(required)
    unknown = sorted(set(required) - set(GEOMETRY))
    if unknown:
        raise ConfigError(f"data.require_crop: {', '.join(map(repr, unknown))} not a crop geometry key; valid keys: "
                          f"{', '.join(GEOMETRY)}")
    try:
        want = CropContract().replace(**required)  # validated and normalised (margin float, size int)
    except (ContractError, TypeError, ValueError) as e:
        raise ConfigError(f"data.require_crop: {str(e).replace('extract.', '')}") from None
    want_text = _wanted(required)
    notes = []
    for name, src in sources.items():
        theirs = src.crop_contract()
        if theirs is None:
            continue
        diff = {k: (getattr(want, k), getattr(theirs, k)) for k in GEOMETRY
                if k in required and getattr(want, k) != getattr(theirs, k)}
        if not diff:
            continue
        what = ", ".join(f"{k}={b} (vs {a})" for k, (a, b) in diff.items())
        if policy == "warn":
            notes.append(f"{who} needs {want_text} crops (data.require_crop), but the training set '{name}' was "
                         f"cropped {_geometry(theirs)}: {what}; trained on them anyway (data.crop_mismatch=warn)")
            continue
        values = {k: a for k, (a, _) in diff.items()}
        if theirs.inputs == "crops":
            values["inputs"] = "frames"  # the dataset's own crops: detect and crop its faces the required way
        suffix = "".join(str(required[k]) for k in ("align", "size") if k in required) or "crops"
        new = f"{cache_dir}-{suffix}" if cache_dir else f"<a cache folder for {want_text} crops>"
        root = f" dataset.root={src.root}" if src.root is not None else ""
        raise ConfigError(
            f"{who} needs {want_text} crops (data.require_crop), but the training set '{name}' was cropped "
            f"{_geometry(theirs)}: {what} in its cache {src.cache_dir}; make that cache (`dfd-extract "
            f"dataset={src._config_name()}{root} paths.cache_dir={new} {extract_overrides(values)}`) and train "
            f"with paths.cache_dir={new}, or set data.crop_mismatch=warn to train on these crops anyway"
        )
    for note in notes:
        log.warning(note)
    return notes


def validation_class_note(src: DatasetSource, monitor: str) -> str | None:
    """A one-line warning when the training set's validation split holds one class (AUC undefined)."""
    from dfd.data.datasets import ManifestArrays

    labels = ManifestArrays(src.prepare(), splits="val").video_labels
    n_fake = int((labels == 1).sum())
    n_real = len(labels) - n_fake
    if len(labels) == 0 or (n_real and n_fake):
        return None
    missing = "real" if n_fake else "fake"
    return (f"the validation split of '{src.name}' has {n_real} real / {n_fake} fake videos (no {missing}): "
            f"validation AUC is undefined, so {monitor} selects the checkpoint (and early stopping) by the lowest "
            f"validation log loss alone; give the split both classes (the dataset's split files or val_fraction)")
