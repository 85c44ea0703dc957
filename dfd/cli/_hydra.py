"""Shared plumbing for dfd's Hydra entry points: where the configs are, and one-line errors for user mistakes.

One concern: how a dfd command meets Hydra — the config folders, the command line checked against them before
any work (choices, keys with or without ``+``, mandatory values, GPUs, SLURM), Hydra's own composition errors
turned into dfd's one line (exit 2), and the run folder a command that stops on a user error leaves behind
(none).

The configs ship inside the package (``dfd/conf`` in a wheel, the checkout's top-level ``conf/`` for editable
installs). Users add or override config groups from their own folders with Hydra's search path
(``hydra.searchpath=[file://my_conf]`` or ``--config-dir my_conf``); every pre-check here sees those too.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dfd.errors import UserError, one_line, user_error


# ----------------------------------------------------------------------------------------------- config folders
def config_dir() -> Path:
    """dfd's config tree: ``$DFD_CONFIG_DIR``, else the packaged ``dfd/conf`` (wheel), else the checkout's ``conf/``."""
    env = os.environ.get("DFD_CONFIG_DIR")
    candidates = [Path(env)] if env else []
    try:
        from importlib.resources import files

        candidates.append(Path(str(files("dfd") / "conf")))  # wheel / `pip install .`
    except (ModuleNotFoundError, TypeError):
        pass
    candidates.append(Path(__file__).resolve().parents[2] / "conf")  # editable install: conf/ beside dfd/
    for c in candidates:
        if (c / "paths" / "default.yaml").is_file():
            return c
    raise SystemExit(
        f"error: dfd's config tree (paths/default.yaml) not found in {[str(c) for c in candidates]}; "
        "reinstall dfd (`pip install .`) or set DFD_CONFIG_DIR=<checkout>/conf"
    )


def _search_dir(entry: str) -> Path | None:
    """A folder from a ``hydra.searchpath`` entry (``file://dir``, ``pkg://module``, or a plain path)."""
    entry = str(entry).strip().strip("'\"")
    if entry.startswith("pkg://"):
        import importlib.util

        try:
            spec = importlib.util.find_spec(entry[len("pkg://"):].replace("/", "."))
        except (ImportError, ValueError):
            return None
        locations = list(spec.submodule_search_locations or []) if spec else []
        return Path(locations[0]) if locations else None
    if entry.startswith("file://"):
        entry = entry[len("file://"):]
    return Path(entry).expanduser() if entry else None


def user_config_dirs(args: Sequence[str]) -> list[Path]:
    """The user's own config folders named on the command line (``hydra.searchpath=[...]``, ``--config-dir``)."""
    dirs: list[Path] = []
    for i, arg in enumerate(args):
        value = None
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            value = [args[i + 1]]
        elif arg.startswith("--config-dir="):
            value = [arg.split("=", 1)[1]]
        elif arg.lstrip("+").startswith("hydra.searchpath="):
            try:
                from hydra.core.override_parser.overrides_parser import OverridesParser

                parsed = OverridesParser.create().parse_override(arg).value()
            except Exception:  # Hydra reports bad syntax itself
                continue
            value = parsed if isinstance(parsed, list) else [parsed]
        for entry in value or []:
            folder = _search_dir(entry)
            if folder is not None:
                dirs.append(folder)
    return dirs


def _dirs(conf: Path | Iterable[Path]) -> list[Path]:
    return [conf] if isinstance(conf, Path | str) else list(conf)


def group_choices(conf: Path | Iterable[Path], group: str) -> list[str]:
    """Names of the options of a config group (``model`` -> ``['convnextv2', ...]``) across config folders."""
    return sorted({p.stem for d in _dirs(conf) for p in (Path(d) / group).glob("*.yaml")})


def is_group(conf: Path | Iterable[Path], name: str) -> bool:
    """Whether ``name`` (``model``, ``hydra/launcher``) is a config group in one of the folders."""
    return any((Path(d) / name).is_dir() for d in _dirs(conf))


def check_overrides(args: list[str], conf: Path | Iterable[Path]) -> str | None:
    """Return a one-line error for the first ``group=choice`` override naming an option that does not exist.

    Hydra reports these as a multi-line traceback-like block; users sweeping dozens of runs want one line
    that names the valid choices. Options in the user's search-path folders count as valid.
    """
    dirs = [*_dirs(conf), *user_config_dirs(args)]
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        group = key.split("@", 1)[0]
        if ("." in group or not is_group(dirs, group) or value == "null" or (value == "" and arg.startswith("~"))
                or value.lstrip().startswith("{")):
            continue  # {...}: a value for the node itself (robustness='{jpeg: [50]}'), not a group option
        for choice in value.split(",") if "," in value and not value.startswith("[") else [value]:
            choice = choice.strip()
            if choice.startswith(("range(", "choice(", "glob(", "interval(")):
                continue
            if not any((Path(d) / group / f"{choice}.yaml").is_file() for d in dirs):
                valid = ", ".join(group_choices(dirs, group))
                return f"error: '{arg}' is not a valid choice for '{group}'; valid choices: {valid}"
    return None


def _unchosen_groups(args: Sequence[str], conf: Path, config_name: str) -> list[str]:
    """Mandatory groups (``dataset: ???`` in the root config) the command line does not choose."""
    import yaml

    root = yaml.safe_load((conf / f"{config_name}.yaml").read_text()) or {}
    given = {a.split("=", 1)[0].lstrip("+~").split("@", 1)[0] for a in args if "=" in a}
    return [group for entry in root.get("defaults", []) if isinstance(entry, dict)
            for group, choice in entry.items() if choice == "???" and group not in given]


def missing_groups(args: list[str], conf: Path, config_name: str) -> str | None:
    """One-line error when a mandatory group (``dataset: ???`` in the root config) is not given."""
    for group in _unchosen_groups(args, conf, config_name):
        valid = ", ".join(group_choices([conf, *user_config_dirs(args)], group))
        return f"error: choose a {group}: add '{group}=<name>' to the command; valid choices: {valid}"
    return None


#: The option ``--help`` shows a mandatory group with when the command line chooses none (Hydra cannot compose
#: the config to print without one).
HELP_EXAMPLES = {"dataset": "synthetic"}


def help_choices(args: list[str], conf: Path, config_name: str) -> list[str]:
    """``group=option`` for each mandatory group ``--help`` must be shown with (announced on stdout)."""
    picks = [f"{g}={HELP_EXAMPLES.get(g) or group_choices(conf, g)[0]}" for g in _unchosen_groups(args, conf, config_name)]
    if picks:
        print(f"(the config below is shown with {' '.join(picks)}: choose yours on the command line)")
    return picks


# ----------------------------------------------------------------------------------------------- run checks
def accelerator_problem(cfg: DictConfig, preset: str | None = None) -> str | None:
    """One line when the run asks for GPUs this machine does not have (checked before any data or model work;
    Lightning would only say "No supported gpu backend found!" after building everything). ``preset``: the
    chosen ``trainer`` option, to name it in the message."""
    trainer = cfg.get("trainer") if isinstance(cfg, DictConfig) else None
    if not trainer or str(trainer.get("accelerator", "auto")).lower() not in ("gpu", "cuda"):
        return None
    import torch

    what = f"trainer={preset}" if preset else f"trainer.accelerator={trainer.accelerator}"
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        return (f"error: {what} trains on CUDA GPUs and this machine has none (torch.cuda.is_available() is False): "
                "run it on a GPU machine, or train on the CPU (leave out trainer=..., or CPU DDP: trainer=ddp "
                "trainer.accelerator=cpu trainer.devices=2)")
    devices = trainer.get("devices", 1)
    if str(devices).isdigit() and int(devices) > n and int(trainer.get("num_nodes", 1) or 1) == 1:
        return f"error: trainer.devices={devices} but this machine has {n} GPU(s): set trainer.devices={n} (or auto)"
    return None


def launcher_problem(args: Sequence[str], conf: Path | Iterable[Path]) -> str | None:
    """One line when a multirun would be submitted to SLURM from a machine without SLURM's commands.

    hydra-submitit-launcher would fail with a traceback ('Could not detect "srun"') after composing every job.
    """
    if not any(a in ("-m", "--multirun") for a in args):
        return None
    dirs = [*_dirs(conf), *user_config_dirs(list(args))]
    for arg in args:
        if not arg.startswith("hydra/launcher="):
            continue
        name = arg.split("=", 1)[1]
        files = [Path(d) / "hydra" / "launcher" / f"{name}.yaml" for d in dirs]
        text = "".join(f.read_text() for f in files if f.is_file())
        if "slurm" not in name and "submitit_slurm" not in text:
            continue
        import shutil

        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            return (f"error: '{arg}' submits every run to SLURM, but {' and '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} not on this machine's PATH: run the command on the "
                    "cluster's login node, or leave out hydra/launcher=... to run the jobs here one after another")
    return None


# ----------------------------------------------------------------------------------------------- resolvers
def _on_gpu(accelerator: object = "auto") -> bool:
    # Imported when a config needs it: this module loads in every spawned worker (it imports the command's
    # module again), which should not pay for torch before it can arm its parent watch (dfd.workers).
    from dfd.engine.hardware import on_gpu

    return on_gpu(accelerator)


def register_resolvers() -> None:
    """OmegaConf resolvers used across dfd's configs (idempotent)."""
    if not OmegaConf.has_resolver("dfd.wandb_offline"):
        # Offline unless the user explicitly asked for online logging (or logged in with a key).
        OmegaConf.register_new_resolver(
            "dfd.wandb_offline",
            lambda: os.environ.get("WANDB_MODE", "").lower() != "online" and not os.environ.get("WANDB_API_KEY"),
        )
    if not OmegaConf.has_resolver("dfd.on_gpu"):
        # SyncBatchNorm exists on GPUs only: CPU DDP over gloo must leave it off.
        OmegaConf.register_new_resolver("dfd.on_gpu", _on_gpu)
    if not OmegaConf.has_resolver("dfd.path_key"):
        from dfd.store.cache import path_key

        # ${dfd.path_key:${.root}}: a short key per dataset root, so default crop caches never mix two roots.
        OmegaConf.register_new_resolver("dfd.path_key", path_key)
    if not OmegaConf.has_resolver("dfd.unless"):
        # ${dfd.unless:${.x},default,text}: text unless x is its default (a name suffix only for a non-default x).
        OmegaConf.register_new_resolver("dfd.unless", lambda value, default, text: "" if str(value) == str(default)
                                        else str(text))
    from dfd.extract.config import register_configs
    from dfd.sources.audit import register_configs as register_audit

    register_configs()  # conf/extract.yaml's `extract:` block: the crop contract's defaults, one home
    register_audit()  # the `audit:` block of conf/index.yaml and conf/train.yaml


# ----------------------------------------------------------------------------------------------- strict configs
def _target_params(target: str) -> set[str] | None:
    """Keyword names a ``_target_`` accepts; None when it takes ``**kwargs`` or cannot be inspected."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
        sig = inspect.signature(obj)
    except Exception:
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {n for n, p in sig.parameters.items() if p.kind is not p.VAR_POSITIONAL}


#: Keys dfd itself reads from (and removes before instantiating) the entries of these nodes.
EXTRA_KEYS = {"train_mix": {"weight", "optional", "validate"}, "test_sets": {"display_name", "optional"}}


def _is_open(node: DictConfig) -> bool:
    """Nodes meant to be filled freely: empty dicts (test_sets, data.sbi) and collections of objects (callbacks,
    entries switched off with ``=null`` included)."""
    values = [v for v in (node._get_node(k) for k in node) if not v._is_none()]
    return not values or all(isinstance(v, DictConfig) and "_target_" in v for v in values)


def _closest(parts: Sequence[str], i: int, names: Iterable[str]) -> str | None:
    """The key with its ``i``-th part replaced by the closest valid name (``optim.lr`` for ``optim.lrr``)."""
    import difflib

    close = difflib.get_close_matches(parts[i], [str(n) for n in names], n=1, cutoff=0.6)
    return ".".join([*parts[:i], close[0], *parts[i + 1:]]) if close else None


def addition_problem(before: DictConfig, key: str) -> str | None:
    """Why adding ``key`` (``+optim.lrr=1``) to the composed config ``before`` is a typo, or None if it is fine.

    Keys may be added under an instantiated node when its ``_target_`` takes them (Trainer, optimizer, a
    dataset class), and anywhere under open nodes (``test_sets``, ``callbacks``, ``data.sbi``); elsewhere a
    key that dfd's configs do not define would be ignored silently, so it is refused.
    """
    parts = key.split(".")
    node: DictConfig = before
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "the config"
        if "_target_" in node:
            params = _target_params(str(node._get_node("_target_")._value()))
            special = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
            special |= EXTRA_KEYS.get(".".join(parts[:i - 1]), set()) if i >= 2 else set()
            if params is None or part in params or part in special:
                return None
            names = sorted((params | set(node.keys())) - {"self"})
            fix = _closest(parts, i, names)
            return (f"'{part}' is not an argument of {node._target_} ({where}{f'; did you mean {fix}?' if fix else ''})"
                    f"; valid: {', '.join(names)}")
        if part not in node:
            if _is_open(node):
                return None
            names = sorted(str(k) for k in node)
            fix = _closest(parts, i, names)
            return (f"'{part}' is not a key of {where}{f' (did you mean {fix}?)' if fix else ''}; "
                    f"valid keys: {', '.join(names)}")
        child = node._get_node(part)
        if not isinstance(child, DictConfig) or child._is_none() or child._is_missing():
            return None  # `++` on an existing value: an ordinary override
        node = child
    return None


def check_additions(config_name: str, task_overrides: Sequence[str], groups: Iterable[Path],
                    hydra_overrides: Sequence[str] = ()) -> str | None:
    """One line for the first ``+key=value`` / ``++key=value`` override adding an unknown key to dfd's config.

    Hydra accepts any such key and the code never reads it, so a typo (``+optim.lrr=1``) would pass silently.
    The config is recomposed without the additions (only when there are some) and each is checked against it.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    dirs = list(groups)
    parsed = OverridesParser.create().parse_overrides(list(task_overrides))
    additions = [o for o in parsed if (o.is_add() or o.is_force_add()) and not is_group(dirs, o.key_or_group)
                 and not o.key_or_group.startswith("hydra.")]
    if not additions:
        return None
    from hydra import compose

    rest = [o.input_line for o in parsed if o not in additions]
    # The user's search path (hydra.searchpath=[...]) is a hydra override: compose sees it only if passed on.
    rest += [h for h in hydra_overrides if h.lstrip("+").startswith("hydra.searchpath=")]
    try:
        before = compose(config_name, overrides=rest)
    except Exception:  # only composable with the additions (an override of an added key): nothing to compare
        return None
    for o in additions:
        problem = addition_problem(before, o.key_or_group)
        if problem:
            return f"error: '{o.input_line}': {problem}"
    return None


# ----------------------------------------------------------------------------------------------- Hydra's own errors
GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"


def override_problem(before: DictConfig, key: str, line: str) -> str:
    """Why the plain override ``line`` (``optim.lrr=1``) of a key missing from the composed config ``before``
    failed. Hydra's advice ("To append to your config use +optim.lrr=1") would lead a typo to a second error."""
    parts = key.split(".")
    node: DictConfig = before
    for i, part in enumerate(parts[:-1]):
        if part not in node:
            break
        child = node._get_node(part)
        if not isinstance(child, DictConfig):
            return f"'{'.'.join(parts[:i + 1])}' is a value ({child._value()!r}), not a group of keys"
        if child._is_none() or child._is_missing():
            break
        node = child
    return addition_problem(before, key) or f"{key} is not in the config yet: add it with '+{line}'"


def _compose_first_job(config_name: str, overrides: Sequence) -> DictConfig | None:
    """The config that ``overrides`` (Hydra ``Override`` objects) compose, sweeps taken at their first value."""
    from hydra import compose

    lines = []
    for o in overrides:
        if o.is_sweep_override():
            first = next(iter(o.sweep_string_iterator()), None)
            if first is None:
                continue
            lines.append(f"{o.get_key_element()}={first}")
        else:
            lines.append(o.input_line)
    try:
        return compose(config_name, overrides=lines)
    except Exception:
        return None


def composition_error(exc: BaseException, config_name: str, argv: Sequence[str]) -> str | None:
    """dfd's one line for an error Hydra raised while composing the config (an unknown key without ``+``, an
    override it cannot parse, a missing config folder), or None when ``exc`` is not one (a bug in the run)."""
    from hydra.errors import CompactHydraException, InstantiationException, OverrideParseException

    if not isinstance(exc, CompactHydraException) or isinstance(exc, InstantiationException):
        return None
    if isinstance(exc, OverrideParseException):
        reason = next((ln.strip() for ln in exc.message.splitlines() if ln.strip()), "bad syntax")
        return f"error: cannot read the override '{exc.override}': {reason} (syntax: {GRAMMAR})"
    cause = exc.__cause__
    key = getattr(cause, "full_key", None)
    if key and str(exc).startswith("Could not override"):  # ConfigAttributeError: not in struct
        from hydra._internal.utils import get_args_parser
        from hydra.core.override_parser.overrides_parser import OverridesParser

        given = OverridesParser.create().parse_overrides(get_args_parser().parse_known_args(list(argv))[0].overrides)
        bad = next((o for o in given if o.key_or_group == key and not (o.is_add() or o.is_force_add())), None)
        if bad is not None:
            before = _compose_first_job(config_name, [o for o in given if o is not bad])
            if before is None:  # another override fails too: compose from the group choices alone
                before = _compose_first_job(config_name, [o for o in given if o is not bad and "." not in o.key_or_group])
            problem = override_problem(before, key, bad.input_line) if before is not None else None
            return f"error: '{bad.input_line}': {problem or f'{key} is not a key of the config'}"
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    reason = str(cause).strip().splitlines()[0] if isinstance(cause, Exception) and str(cause).strip() else ""
    return one_line(UserError(f"{text}: {reason}" if reason and reason not in text else text))


@contextlib.contextmanager
def one_line_composition_errors(config_name: str) -> Iterator[None]:
    """Hydra prints its composition errors in up to six lines and exits 1; dfd's commands print one line and exit 2.

    Hydra reports them through ``hydra._internal.utils.run_and_report`` (no public hook); it is wrapped while the
    command runs. Anything that is not a composition error goes on to Hydra's own reporting unchanged.
    """
    try:
        from hydra._internal import utils as hydra_utils

        original = hydra_utils.run_and_report
    except (ImportError, AttributeError):  # another Hydra: its own messages
        yield
        return

    def reraise(exc: BaseException) -> None:
        raise exc

    def run_and_report(func: Callable[[], object]) -> object:
        try:
            return func()
        except Exception as exc:
            try:
                line = composition_error(exc, config_name, sys.argv[1:])
            except Exception:  # never hide Hydra's message behind a failure of this one
                line = None
            if line is None:
                return original(functools.partial(reraise, exc))
            print(line, file=sys.stderr)
            raise SystemExit(2) from None

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original


# ----------------------------------------------------------------------------------------------- run folders
#: Folders of this process's run (its output folder and those above it) that did not exist when it started.
_NEW_DIRS: list[Path] = []
#: What a run folder holds before the command's work starts: Hydra's config copies and multirun record, and the
#: resolved config.yaml dfd-train/dfd-eval write first (and the job's ``*.log``, while it holds a few lines only:
#: the log of a run that did work before failing is kept).
BOOKKEEPING = (".hydra", "multirun.yaml", "config.yaml")
SHORT_LOG_BYTES = 2048


def _note_new_dirs(run_dir: object) -> None:
    try:
        d = Path(str(run_dir)).absolute()
    except Exception:  # an output dir that does not resolve: Hydra reports it
        return
    _NEW_DIRS[:] = [p for p in (d, *d.parents) if not p.exists()]


class RunDirs(Callback):
    """Hydra callback (``hydra.callbacks`` of every root config): notes which folders the run is about to create,
    so that a run that fails before it starts can leave none of them behind (:func:`discard_unstarted_run`)."""

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        _note_new_dirs(OmegaConf.select(config, "hydra.run.dir"))

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        _note_new_dirs(OmegaConf.select(config, "hydra.sweep.dir"))


def _only_bookkeeping(folder: Path) -> bool:
    return folder.is_dir() and all(
        p.name in BOOKKEEPING or (p.suffix == ".log" and p.is_file() and p.stat().st_size <= SHORT_LOG_BYTES)
        for p in folder.iterdir())


def discard_unstarted_run() -> None:
    """Remove the run's output folder when it holds nothing but Hydra's bookkeeping (config copies, a log of a
    few lines), and the folders above it that this run created and left empty: a command that stops on a user
    error before its work starts writes nothing (a failed ``dfd-extract`` left ``<cache>/logs/<time>/``)."""
    import logging
    import shutil

    from hydra.core.hydra_config import HydraConfig

    if not _NEW_DIRS or not HydraConfig.initialized():
        return
    new = set(_NEW_DIRS)
    out = Path(HydraConfig.get().runtime.output_dir).absolute()
    if not (out in new or out.parent in new) or not _only_bookkeeping(out):
        return
    for handler in list(logging.root.handlers):  # Hydra's job log file, opened in that folder
        if Path(getattr(handler, "baseFilename", "/")).parent == out:
            logging.root.removeHandler(handler)
            handler.close()
    shutil.rmtree(out, ignore_errors=True)
    if out.parent in new and _only_bookkeeping(out.parent):  # a multirun's folder: its multirun.yaml only
        shutil.rmtree(out.parent, ignore_errors=True)
    for folder in sorted(new, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


# ----------------------------------------------------------------------------------------------- user errors
def missing_values(cfg: DictConfig) -> str | None:
    """One line naming every mandatory value (``???``) the command left unset (``model=timm`` needs an arch)."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if not missing:
        return None
    adds = " ".join(f"{k}=<value>" for k in missing)
    return f"error: {', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no value: add '{adds}' to the command"


def _friendly(fn: Callable[[DictConfig], object], config_name: str | None = None) -> Callable[[DictConfig], object]:
    """Bad input (unset value, unknown key, wrong root, missing weights or manifest) -> one line, exit 2."""

    @functools.wraps(fn)
    def run(cfg: DictConfig) -> object:
        problem = missing_values(cfg)
        if problem is None and config_name is not None:
            from hydra.core.hydra_config import HydraConfig

            hc = HydraConfig.get()
            problem = check_additions(config_name, list(hc.overrides.task),
                                      [config_dir(), *user_config_dirs(sys.argv[1:])], list(hc.overrides.hydra))
        if problem is None:
            from hydra.core.hydra_config import HydraConfig

            preset = HydraConfig.get().runtime.choices.get("trainer") if HydraConfig.initialized() else None
            problem = accelerator_problem(cfg, preset)
        if problem:
            discard_unstarted_run()
            print(problem, file=sys.stderr)
            raise SystemExit(2)
        try:
            return fn(cfg)
        except Exception as exc:
            user = user_error(exc)
            if user is None:
                raise
            discard_unstarted_run()
            print(one_line(user), file=sys.stderr)
            raise SystemExit(2) from None

    return run


def hydra_entry(config_name: str) -> Callable[[Callable[[DictConfig], object]], Callable[[], object]]:
    """Decorator turning ``fn(cfg)`` into a console-script ``main()`` over dfd's config tree."""

    def wrap(fn: Callable[[DictConfig], object]) -> Callable[[], object]:
        def main() -> object:
            import hydra

            conf = config_dir()
            helping = any(a in ("--help", "-h", "--hydra-help") for a in sys.argv[1:])
            error = (check_overrides(sys.argv[1:], conf)
                     or (None if helping else missing_groups(sys.argv[1:], conf, config_name))
                     or launcher_problem(sys.argv[1:], conf))
            if error:
                print(error, file=sys.stderr)
                raise SystemExit(2)
            if helping:
                sys.argv += help_choices(sys.argv[1:], conf, config_name)
            register_resolvers()
            task = _friendly(fn, config_name)
            with one_line_composition_errors(config_name):
                return hydra.main(version_base="1.3", config_path=str(conf), config_name=config_name)(task)()

        main.__doc__ = fn.__doc__
        return main

    return wrap
