"""``dfd-weights``: fetch pretrained backbone weights ahead of time, or check which are on this machine.

    dfd-weights efficientnet_b4 xception                 # into the HF / torch caches, as timm would
    dfd-weights vit_b16 arch=convnextv2_nano --out weights/   # as weights/<arch>.safetensors
    dfd-weights --check                                   # every pretrained preset: present / missing (offline)

Names are model presets (``conf/model/<name>.yaml``, or your own with ``--config-dir``), ``arch=<timm name>``
(``.tag`` suffixes included), or bare timm names. Lookups follow `dfd.models.weights.resolve_pretrained`, the
order training uses: ``model.weights``, ``<weights_dir>/<arch>.*``, the HF / torch hub caches, the hub.
Exit status: 0 all present (or fetched), 1 some missing (or failed), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Entry:
    """One thing to check or fetch: a preset (or a bare arch) and where its config says to look."""

    name: str
    arch: str | None
    pretrained: bool = True
    weights: str | None = None
    weights_dir: str | None = None
    problem: str | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from dfd.cli._args import ArgumentParser

    p = ArgumentParser(
        prog="dfd-weights",
        description="Fetch the pretrained weights of model presets into the local caches (or --out DIR), or "
                    "--check which are present, without touching the network.",
    )
    p.add_argument("names", nargs="*", help="model presets (conf/model/<name>.yaml), arch=<timm name>, or timm "
                                            "names; none: every preset (with --check or --all)")
    p.add_argument("--check", action="store_true", help="only list present / missing; never uses the network")
    p.add_argument("--all", action="store_true", help="every preset with pretrained: true")
    p.add_argument("--out", metavar="DIR", help="also write each as DIR/<arch>.safetensors (a weights_dir)")
    p.add_argument("--weights-dir", metavar="DIR",
                   help="paths.weights_dir to look in (default: as in conf/paths/default.yaml: $DFD_WEIGHTS or "
                        "./weights)")
    p.add_argument("--config-dir", metavar="DIR", action="append", default=[],
                   help="your own config folder (as in hydra.searchpath); its model/*.yaml are presets too")
    return p.parse_args(argv)


def _conf_dirs(extra: list[str]) -> list[Path]:
    from dfd.cli._hydra import config_dir

    return [Path(d).expanduser() for d in extra] + [config_dir()]


def preset_names(conf_dirs: list[Path]) -> list[str]:
    """Every model preset across the config folders (yours shadow dfd's)."""
    return sorted({p.stem for d in conf_dirs for p in (d / "model").glob("*.yaml")})


def _weights_dir(conf_dirs: list[Path], override: str | None) -> str:
    from omegaconf import OmegaConf

    if override:
        return str(Path(override).expanduser().absolute())
    paths = next(d / "paths" / "default.yaml" for d in conf_dirs if (d / "paths" / "default.yaml").is_file())
    return str(Path(str(OmegaConf.load(paths).weights_dir)).expanduser().absolute())


def make_entry(name: str, conf_dirs: list[Path], weights_dir: str) -> Entry:
    """Resolve one command-line name to an arch and its lookup settings."""
    import timm
    from omegaconf import OmegaConf

    from dfd.errors import ConfigError
    from dfd.models.weights import check_timm_name

    if name.startswith("arch="):
        try:
            check_timm_name(name.split("=", 1)[1])
        except ConfigError as e:
            return Entry(name, None, problem=str(e))
        return Entry(name, name.split("=", 1)[1], weights_dir=weights_dir)
    preset = next((d / "model" / f"{name}.yaml" for d in conf_dirs if (d / "model" / f"{name}.yaml").is_file()), None)
    if preset is None:
        if timm.is_model(name.partition(".")[0]):
            return Entry(name, name, weights_dir=weights_dir)
        valid = ", ".join(preset_names(conf_dirs))
        return Entry(name, None, problem=f"not a model preset ({valid}) nor a timm model name")
    cfg = OmegaConf.create({"paths": {"weights_dir": weights_dir}, "model": OmegaConf.load(preset)})
    model = cfg.model
    if OmegaConf.is_missing(model, "arch"):
        return Entry(name, None, problem=f"preset {name!r} needs an architecture: use arch=<timm name>")
    weights_dir_of = model.get("weights_dir", None)
    return Entry(name, str(model.arch), pretrained=bool(model.get("pretrained", False)),
                 weights=model.get("weights", None), weights_dir=str(weights_dir_of) if weights_dir_of else None)


def _row(name: str, arch: str, status: str, detail: str) -> str:
    return f"{name:<18} {arch:<34} {status:<8} {detail}"


def run(args: argparse.Namespace) -> int:
    from dfd.models.weights import MissingWeightsError, export_safetensors, locate_weights, resolve_pretrained

    conf_dirs = _conf_dirs(args.config_dir)
    weights_dir = _weights_dir(conf_dirs, args.weights_dir)
    names = list(args.names)
    if not names:
        if not (args.check or args.all):
            print("error: name the presets to fetch (e.g. dfd-weights efficientnet_b4 arch=resnet50), or --all; "
                  f"presets: {', '.join(preset_names(conf_dirs))}", file=sys.stderr)
            return 2
        names = [n for n in preset_names(conf_dirs) if n != "timm"]
    entries = [make_entry(n, conf_dirs, weights_dir) for n in names]
    bad = [e for e in entries if e.problem]
    if bad:
        print(f"error: {bad[0].name}: {bad[0].problem}", file=sys.stderr)
        return 2
    missing = present = 0
    for e in entries:
        assert e.arch is not None
        if not e.pretrained and not e.weights:
            print(_row(e.name, e.arch, "-", "random init (pretrained: false): nothing to fetch"))
            continue
        try:
            if args.check:
                src = locate_weights(e.arch, e.weights, e.weights_dir)
                if src is None:
                    missing += 1
                    print(_row(e.name, e.arch, "missing", f"not in {e.weights_dir}/{e.arch}.* nor the HF / torch "
                                                         f"hub caches: dfd-weights {e.arch}"))
                    continue
            else:
                src = resolve_pretrained(e.arch, e.weights, e.weights_dir, download=True)
            detail = f"{src.source}: {src.path}"
            if args.out:
                detail += f" -> {export_safetensors(src, args.out)}"
            print(_row(e.name, e.arch, "present", detail))
            present += 1
        except MissingWeightsError as err:
            missing += 1
            print(_row(e.name, e.arch, "missing", str(err)))
    verb = "present" if args.check else "present or fetched"
    print(f"{present} {verb}, {missing} missing (weights_dir {weights_dir})")
    return 1 if missing else 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``dfd-weights``."""
    from dfd.cli._args import user_errors

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse_args(argv)
    with user_errors():
        status = run(args)
    sys.exit(status)


if __name__ == "__main__":
    main()
