"""dfd as a normal package: a wheel built from the repository, installed into a fresh environment, carries its
configs and runs from any directory (the checkout is nowhere on the path)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel` of a copy of the repository (so no build files land in the checkout), offline."""
    import setuptools

    if tuple(int(p) for p in setuptools.__version__.split(".")[:2]) < (77, 0):
        pytest.fail(f"setuptools>=77 is needed to build dfd (found {setuptools.__version__}): pip install -e '.[dev]'")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("dfd", "conf"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(tmp / "dist"), str(src)], cwd=tmp)
    (whl,) = (tmp / "dist").glob("dfd-*.whl")
    return whl


def test_wheel_holds_every_module_and_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "dfd").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules and not modules - names, f"not packaged (add the package to pyproject.toml): {modules - names}"
    configs = {"dfd/conf/" + p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    assert "dfd/conf/train.yaml" in configs and "dfd/conf/hydra/launcher/slurm.yaml" in configs
    assert not configs - names, f"not packaged (add the config group to pyproject.toml): {configs - names}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    for cli in ("dfd-train", "dfd-eval", "dfd-weights", "dfd-predict", "dfd-export", "dfd-report"):
        assert f"{cli} = " in scripts


def test_wheel_in_a_fresh_environment_trains_from_an_unrelated_directory(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path).stdout.strip())
    # Dependencies without a 6.8 GB install: this interpreter's site-packages, appended after the fresh ones
    # (path lines in a .pth do not run that folder's own .pth files, so an editable dfd there stays inert).
    deps = [p for p in sys.path if p.rstrip("/").endswith("site-packages") and Path(p).is_dir()]
    deps.append(sysconfig.get_paths()["purelib"])
    (site / "_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
         cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DFD_CONFIG_DIR", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    probe = _run([str(py), "-c", "import dfd, dfd.cli._hydra as h; print(dfd.__file__); print(h.config_dir())"],
                 cwd=elsewhere, env=env)
    module, conf = (Path(line) for line in probe.stdout.split())
    assert module.is_relative_to(site) and conf == site / "dfd" / "conf", probe.stdout
    assert not module.is_relative_to(REPO)

    proc = _run([str(venv / "bin" / "dfd-train"), "debug=fast_dev_run"], cwd=elsewhere, env=env)
    (results,) = elsewhere.glob("outputs/train/*/results.json")
    assert json.loads(results.read_text())["test"]["synthetic_a"]["frame"]["n"] > 0
    assert "test metrics" in proc.stdout
    assert (elsewhere / ".cache" / "dfd" / "synthetic").is_dir()  # relative paths are the user's directory
