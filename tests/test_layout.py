"""The layout's promises, checked from the source: one package per stage, imports that run one way, no import
circle, modules short or of one concern, and commands whose resolved configs the move did not change."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dfd.compat import current_target, upgrade_targets
from dfd.faces.contract import HEURISTIC_VALUES

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "dfd"
GOLDEN = Path(__file__).parent / "golden" / "cfg_job"
#: Top-level keys added since the move, with the default that keeps runs as they were (explain: issue 26).
ADDED_SINCE = {"explain": 0}
MAX_LINES = 500
FEATURE_STORE_DEFAULTS = {"views": 0, "batch_size": 64, "chunk_rows": 2048, "rebuild": False, "dir": None}


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in PKG.rglob("*.py")}


def _imports(mod: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """dfd modules ``mod`` imports (anywhere in the file, lazy imports included; ``TYPE_CHECKING`` blocks not)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            while name and name not in mods:
                name = name.rsplit(".", 1)[0] if "." in name else ""
            if name and name != mod and not mod.startswith(name + "."):
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def _package(mod: str) -> str:
    """The stage a module belongs to: ``dfd.store.packed.reader`` -> ``dfd.store``; root modules -> ``dfd``."""
    parts = mod.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and (PKG / parts[1]).is_dir() else "dfd"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _allowed(init: Path) -> set[str] | None:
    """The packages a package's docstring says it may import (``May import: dfd, dfd.faces``)."""
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    m = re.search(r"^May import: (.+)$", doc, flags=re.M)
    if not m:
        return None
    text = m.group(1).strip()
    if text.startswith("every package"):
        return {_package(x) for x in _modules()}
    return {p.strip() for p in text.split(",") if p.strip().startswith("dfd")}


def test_no_import_circle_inside_dfd():
    cycles = _cycles(_graph())
    assert not cycles, f"import circles: {cycles}"


def test_the_graph_builder_sees_a_circle_and_a_lazy_import(tmp_path):
    # The check above must be able to fail: a lazy import inside a function counts, and a circle is found.
    a = "def f():\n    from dfd.b import g\n"
    mods = {"dfd.a": tmp_path / "a.py", "dfd.b": tmp_path / "b.py"}
    mods["dfd.a"].write_text(a)
    mods["dfd.b"].write_text("from dfd.a import f\ng = 1\n")
    graph = {m: _imports(m, p, mods) for m, p in mods.items()}
    assert graph == {"dfd.a": {"dfd.b"}, "dfd.b": {"dfd.a"}}
    assert _cycles(graph) == [["dfd.a", "dfd.b"]]


def test_every_package_states_its_role_and_what_it_may_import():
    for init in sorted(PKG.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.splitlines()[0]) > 20, f"{init.relative_to(ROOT)}: no docstring stating its role"
        if init.parent.parent == PKG or init.parent == PKG:  # stages (sub-packages inherit their stage's rule)
            assert _allowed(init) is not None, f"{init.relative_to(ROOT)}: no 'May import:' line"


def test_imports_run_one_way_as_each_package_declares():
    graph = _graph()
    stages = {p.parent.name: p for p in PKG.glob("*/__init__.py")}
    wrong = []
    for mod, deps in graph.items():
        pkg = _package(mod)
        # The root (errors, atomic, compat) is the foundation: it imports no stage.
        allowed = {"dfd"} if pkg == "dfd" else (_allowed(stages[pkg.split(".")[1]]) or set()) | {pkg}
        wrong += [f"{mod} -> {d}" for d in sorted(deps) if _package(d) not in allowed]
    assert not wrong, "imports against the layout:\n" + "\n".join(wrong)


def test_the_declared_layers_have_no_circle_either():
    stages = {f"dfd.{p.parent.name}": _allowed(p) or set() for p in PKG.glob("*/__init__.py")}
    graph = {s: {a for a in allowed if a != s and a in stages} for s, allowed in stages.items()
             if s != "dfd.cli"}
    assert not _cycles(graph), graph


def test_long_modules_are_one_concern_and_say_which():
    long = {}
    for path in PKG.rglob("*.py"):
        n = len(path.read_text().splitlines())
        if n > MAX_LINES:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            long[str(path.relative_to(ROOT))] = (n, "One concern:" in doc)
    assert all(ok for _, ok in long.values()), {k: v for k, v in long.items() if not v[1]}


def test_targets_moved_by_the_layout_still_name_a_class():
    import importlib

    for old in ("dfd.data.sources.ffpp.FFPP", "dfd.data.synthetic.SyntheticSource", "dfd.data.sources.csv.CsvTable"):
        module, name = current_target(old).rsplit(".", 1)
        assert isinstance(getattr(importlib.import_module(module), name), type), old
    assert upgrade_targets({"a": [{"_target_": "dfd.data.sources.dfdc.DFDC"}], "_target_": "torch.nn.Identity"}) == {
        "a": [{"_target_": "dfd.sources.dfdc.DFDC"}], "_target_": "torch.nn.Identity"}


def _cfg_job(command: str) -> dict:
    exe = Path(sys.executable).parent / command.split()[0]
    out = subprocess.run([str(exe), *command.split()[1:], "--cfg", "job"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return yaml.safe_load(out.stdout)


@pytest.mark.slow
def test_resolved_configs_are_those_before_the_layout_change():
    """``--cfg job`` of dfd-train/eval/extract/index/pack, recorded before the move (tests/golden/cfg_job), equals
    today's once module paths are renamed as dfd.compat renames them for old checkpoints; the one addition is the
    crop-contract fields that name former constants, at the values those constants had, and the keys added since
    (issue 25: the no-face rule, ``eval``, and the crops a preset needs, ``data.require_crop``; issue 24: the
    shortcut audit's ``audit:`` block of dfd-index and dfd-train) at their defaults."""
    from dfd.sources.audit import AuditSettings

    rows = [line.split("\t") for line in (GOLDEN / "commands.tsv").read_text().splitlines() if line.strip()]
    assert len(rows) >= 10
    arcface = {"align": "arcface", "size": 256, "margin": 1.3}
    for file, command in rows:
        before = upgrade_targets(yaml.safe_load((GOLDEN / file).read_text()))
        now = _cfg_job(command)
        if "extract" in now:
            added = {k: now["extract"].pop(k) for k in HEURISTIC_VALUES}
            # extract.decoder=auto resolves to the contract's decoder when extraction starts (cpu unless nvdec can run).
            assert added == {**HEURISTIC_VALUES, "decoder": "auto"}, command
            # Added since (issue 28): the search near the last face, its rechecks and cut test, and the worker kind.
            speed = {k: now["extract"].pop(k) for k in ("search_roi", "roi_recheck", "scene_cut", "parallel")}
            assert speed == {"search_roi": 0.0, "roi_recheck": 8, "scene_cut": 0.2, "parallel": "auto"}, command
        if command.startswith(("dfd-train", "dfd-eval")):
            assert now.pop("eval") == {"no_face": "drop", "no_face_score": 0.5}, command
        if command.startswith("dfd-train"):
            assert now["data"].pop("require_crop") == (arcface if "gend" in command else None), command
        dfdf = (now.get("test_sets") or {}).get("deeperforensics")
        if dfdf is not None:  # added since: DeeperForensics' reals may take their fakes' distortions (issue 25)
            assert (dfdf.pop("real_perturbation"), dfdf.pop("meta_dir")) == (
                "clean", "${.root}/lists/manipulated_videos_distortions_meta"), command
            assert dfdf["name"] == "deeperforensics_${.variant}${dfd.unless:${.real_perturbation},clean,_reals_match}"
            dfdf["name"] = "deeperforensics_${.variant}"
        if command.startswith("dfd-train"):  # added since: the feature-store keys, at their defaults (issue 27)
            assert now["data"].pop("features") == "none", command
            assert now.pop("embed") == FEATURE_STORE_DEFAULTS, command
        if command.split()[0] in ("dfd-index", "dfd-train"):
            assert now.pop("audit") == AuditSettings.defaults(), command
        for key, value in ADDED_SINCE.items():  # dfd-eval's explain (issue 26), at a value that changes nothing
            if key in now and key not in before:
                assert now.pop(key) == value, command
        assert now == before, command
