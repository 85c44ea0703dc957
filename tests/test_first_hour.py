"""A newcomer's first hour (issue 23): what got in the way of someone with their own videos, the README and a CPU.

Cases 1-2: the README says how to call the commands and walks through ``dataset=folder`` (the walk-through itself
runs, as written, in tests/test_readme_commands.py). 3-4: one line and exit 2 for every user error, config typos
with or without ``+`` included, and nothing written by a run that stops before it starts. 5: dfd-eval's
robustness table. 6: an evaluation belongs to its training run in dfd-report. 7: the ACC note only when ACC is
off. 8: ``--save-crops`` mirrors the inputs' common folder; no internal config group in ``--help``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.readme_commands import REPO, bash_blocks, commands

BIN = Path(sys.executable).parent
README = REPO / "README.md"


def _cli(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DFD_", "HYDRA_"))}
    return subprocess.run([str(BIN / name), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _one_line(proc_or_err: subprocess.CompletedProcess | str, code: int | None = 2) -> str:
    if isinstance(proc_or_err, subprocess.CompletedProcess):
        assert proc_or_err.returncode == code, proc_or_err.stdout[-2000:] + proc_or_err.stderr[-3000:]
        err = proc_or_err.stderr
    else:
        err = proc_or_err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err[-3000:]
    return lines[0]


def _written(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# ----------------------------------------------------------------------------------------------- 1, 2: README
def test_readme_says_how_to_call_the_commands_before_the_first_bare_one():
    text = README.read_text()
    first_bare = min(start for start, lines in bash_blocks(text)
                     if any(re.match(r"\s*dfd-[a-z]", ln) for ln in lines))
    told = text.find("source .venv/bin/activate")
    assert told != -1 and ".venv/bin/dfd-train" in text[told - 400 : told + 400], "no 'source .venv/bin/activate'"
    assert text[:told].count("\n") < first_bare, "the first bare dfd-* command comes before it is said how to call it"


def test_readme_contents_walk_through_and_reference():
    text = README.read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    contents = text[text.index("**Contents**"): text.index("## Set up and run")]
    anchors = set(re.findall(r"\]\(#([^)]+)\)", contents))

    def anchor(h: str) -> str:  # GitHub's rule: lower case, punctuation dropped, spaces to dashes
        return re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-")

    assert {anchor(h) for h in headings} == anchors, "the Contents line and the ## sections differ"
    assert headings[:2] == ["Set up and run", "Your own videos in five minutes (CPU)"] and headings[-2:] == [
        "Benchmarks", "Layout"]
    # Exactly the two set-up commands before the walk-through: the main job and the tests.
    setup = text[: text.index("## Your own videos")]
    assert [lines for _, lines in bash_blocks(setup)] == [
        ['python3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && .venv/bin/dfd-train'],
        [".venv/bin/python -m pytest -n 2 --timeout 1200"]]
    # The walk-through: the folder layout drawn as a tree, then the seven steps on it, each showing its output.
    walk = text[text.index("## Your own videos"): text.index("## Installation notes")]
    assert "my_videos/\n├── real/" in walk and "└── fake/" in walk
    steps = [c for c in commands(README) if c.tools and walk.count(c.text)]
    assert [c.tools[0] for c in steps] == ["dfd-index", "dfd-extract", "dfd-train", "dfd-eval", "dfd-report",
                                           "dfd-export", "dfd-predict"]
    assert all(c.shows for c in steps) and all("trainer=gpu" not in c.code for c in steps)
    assert all("dataset=folder" in c.code for c in steps[:3])
    # Measurements live in Benchmarks: the GPU story left the extraction reference.
    bench = text[text.index("## Benchmarks"):]
    for fact in ("0.87x and 0.80x", "7 of 16 fake frames", "90x faster", "97.7 %"):
        assert text.count(fact) == 1 and fact in bench, fact


# ----------------------------------------------------------------------------------------------- 3, 4: errors
def test_key_typos_without_plus_are_one_line_with_the_closest_key(tmp_path):
    line = _one_line(_cli("dfd-train", ["optim.lrr=1"], tmp_path))
    assert line == ("error: 'optim.lrr=1': 'lrr' is not a key of optim (did you mean optim.lr?); valid keys: "
                    "cycle_epochs, decay_start, lr, min_lr_ratio, optimizer, sam, scheduler, warmup, warmup_epochs, "
                    "weight_decay")
    line = _one_line(_cli("dfd-extract", ["dataset=folder", f"dataset.root={tmp_path}", "extract.framez=3"], tmp_path))
    assert line.startswith("error: 'extract.framez=3': 'framez' is not a key of extract (did you mean "
                           "extract.frames?); valid keys: align, ")
    assert _written(tmp_path) == []


def test_hydra_composition_errors_in_process(tmp_path, monkeypatch, capsys):
    """Keys a target may take, values that are no group, unreadable overrides: one line each (no subprocess)."""
    from dfd.cli.train import main

    monkeypatch.chdir(tmp_path)
    for argv, expected in [
        (["trainer.limit_val_batches=5"], "error: 'trainer.limit_val_batches=5': trainer.limit_val_batches is not "
                                          "in the config yet: add it with '+trainer.limit_val_batches=5'"),
        (["optim.lr.x=1"], "error: 'optim.lr.x=1': 'optim.lr' is a value (0.001), not a group of keys"),
        (["optim.lr=[1"], "error: cannot read the override 'optim.lr=[1': no viable alternative at input '[1'"),
        (["optim="], "error: 'optim=' is not a valid choice for 'optim'; valid choices: adamw, sam, sgd"),
    ]:
        monkeypatch.setattr(sys, "argv", ["dfd-train", *argv])
        with pytest.raises(SystemExit) as done:
            main()
        assert done.value.code == 2, argv
        assert _one_line(capsys.readouterr().err).startswith(expected), argv
    assert _written(tmp_path) == []


def test_exit_2_and_nothing_written_for_a_wrong_root(tmp_path):
    missing = tmp_path / "nope"
    for tool in ("dfd-index", "dfd-extract"):
        line = _one_line(_cli(tool, ["dataset=folder", f"dataset.root={missing}"], tmp_path))
        assert f"dataset root {missing} is not a folder" in line, tool
    line = _one_line(_cli("dfd-eval", ["ckpt_path=gone.ckpt"], tmp_path))
    assert line.startswith("error: checkpoint not found: gone.ckpt")
    assert _written(tmp_path) == []  # no .cache/dfd/folder-<hash>/logs/<time>/, no outputs/index, outputs/eval


def test_argparse_commands_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from dfd.cli import export, predict, report, sbi_grid, weights

    monkeypatch.chdir(tmp_path)
    cases = [
        (export.main, ["--bogus"], "error: the following arguments are required: checkpoint, out_dir (see dfd-export"),
        (export.main, ["gone.ckpt", "bundle"], "error: checkpoint not found: gone.ckpt"),
        (predict.main, ["gone.ckpt", "x.mp4"], "error: model gone.ckpt not found"),
        (report.main, ["gone", "--out", "r"], "error: runs directory gone does not exist"),
        (report.main, [], "error: the following arguments are required: --out (see dfd-report --help)"),
        (weights.main, ["--bogus"], "error: unrecognized arguments: --bogus (see dfd-weights --help)"),
        (sbi_grid.main, ["--images", "gone"], "error: --images gone: not a folder or a .parquet frame manifest"),
        (sbi_grid.main, ["--n", "0"], "error: --n must be >= 1 and --tile >= 8 (see dfd-sbi-grid --help)"),
    ]
    for main, argv, expected in cases:
        try:
            code = main(argv)
        except SystemExit as done:
            code = done.code
        assert code == 2, (argv, code)
        assert _one_line(capsys.readouterr().err).startswith(expected), argv
    assert _written(tmp_path) == []


# ----------------------------------------------------------------------------------------------- 5: robustness table
def test_robustness_table_rows_per_kind_and_level(capsys):
    from dfd.engine.summary import print_robustness

    def rep(auc: float) -> dict:
        return {"video": {"auc": auc, "acc": 0.5}, "frame": {"auc": auc - 0.1}}

    reports = {"folder": rep(0.9)}
    sweep = {"folder": {"jpeg": [{"level": 70, **rep(0.85)}, {"level": 30, **rep(0.7)}],
                        "blur": [{"level": 2.0, **rep(0.6)}]}}
    print_robustness(reports, sweep)
    out = capsys.readouterr().out
    rows = [" ".join(ln.replace("│", " ").split()) for ln in out.splitlines() if "│" in ln]
    assert rows == ["folder none (clean) 0.9000 0.5000 0.8000", "jpeg 70 0.8500 -0.0500 0.5000 0.7500",
                    "jpeg 30 0.7000 -0.2000 0.5000 0.6000", "blur 2 0.6000 -0.3000 0.5000 0.5000"]


# ----------------------------------------------------------------------------------------------- 6: evaluations
def _results(kind: str, run_dir: Path, tests: dict[str, float], created: str, run_id: str | None,
             checkpoint: str, robustness: dict | None = None) -> dict:
    def metrics(auc: float) -> dict:
        return {"frame": {"auc": auc, "n": 8}, "video": {"auc": auc, "acc": 0.5, "n_real": 1, "n_fake": 1}}

    data = {"schema_version": 1, "kind": kind, "run_dir": str(run_dir), "created": created,
            "train": {"dataset": "folder", "model": "small_cnn", "finetune": "full", "seed": 42, "experiment": None,
                      "overrides": {"dataset": "folder"}},
            "checkpoint": checkpoint, "val": None,
            "test": {n: {"in_domain": n == "folder", **metrics(a)} for n, a in tests.items()},
            "robustness": robustness}
    if run_id:
        data["run_id"] = run_id
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps(data))
    return data


@pytest.mark.parametrize("linked_by", ["run_id", "checkpoint path"])
def test_report_attaches_an_evaluation_to_its_training_run(tmp_path, monkeypatch, linked_by):
    from dfd.report.build import build_report

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "outputs" / "train" / "t1"
    rid = "abc123" if linked_by == "run_id" else None
    _results("train", run, {"folder": 0.8}, "2026-12-01T10:00:00", rid, str(run / "checkpoints" / "e2.ckpt"))
    # Evaluated later from the folder the user works in (a relative checkpoint path), with a robustness sweep, an
    # extra test set, and the in-domain set measured anew (another number: other settings).
    jpeg = {"folder": {"jpeg": [{"level": 50, "video": {"auc": 0.7}, "frame": {"auc": 0.7}}]}}
    _results("eval", tmp_path / "outputs" / "eval" / "e1", {"folder": 0.75, "celebdf_v2": 0.6},
             "2026-12-01T11:00:00", rid, "outputs/train/t1/checkpoints/e2.ckpt", jpeg)
    result = build_report([tmp_path / "outputs"], tmp_path / "report")
    matrix = pd.read_csv(tmp_path / "report" / "matrix.csv", index_col="config")
    row = matrix.loc["folder/small_cnn/full"]
    assert (row["n_runs"], row["n_seeds"], row["folder"], row["celebdf_v2"]) == (1, 1, 0.8, 0.6)
    long = pd.read_csv(tmp_path / "report" / "results_long.csv")
    assert set(long.loc[long["section"] == "robustness", "value"]) == {0.7}
    assert not any("repeat" in d for d in result.duplicates)
    assert any("measured video AUC on folder 0.7500 vs the run's 0.8000" in d for d in result.duplicates)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| eval of `" in md and "1 (2 runs)" not in md


def test_two_training_runs_with_one_seed_are_still_a_repeat(tmp_path):
    from dfd.report.build import build_report

    for i, auc in enumerate((0.7, 0.9)):
        run = tmp_path / f"t{i}"
        _results("train", run, {"folder": auc}, f"2026-12-0{i + 1}T10:00:00", f"id{i}", str(run / "c.ckpt"))
    result = build_report([tmp_path], tmp_path / "report")
    matrix = pd.read_csv(tmp_path / "report" / "matrix.csv", index_col="config")
    assert matrix.loc["folder/small_cnn/full", "n_runs"] == 2 and matrix.loc["folder/small_cnn/full", "folder"] == 0.9
    assert any("exact repeat — 2 training runs" in d for d in result.duplicates)


# ----------------------------------------------------------------------------------------------- 7: the ACC note
def test_acc_note_only_when_acc_is_well_below_one_minus_eer():
    from dfd.engine.metrics import ACC_NOTE_MARGIN
    from dfd.engine.summary import run_notes

    def reports(acc: float, eer: float) -> dict:
        return {"folder": {"video": {"acc": acc, "eer": eer, "n_real": 50, "n_fake": 50}}}

    assert run_notes(reports(1.0, 0.0)) == []  # ACC 1.0: nothing to say
    assert run_notes(reports(0.9 - ACC_NOTE_MARGIN + 0.01, 0.1)) == []  # within the margin of 1 - EER
    (note,) = run_notes(reports(0.5, 0.05))
    assert "folder 0.500 vs 0.950" in note and "dfd-export" in note and "--calibrate" in note
    assert run_notes(reports(0.5, 0.05), calibrated=True) == []


# ----------------------------------------------------------------------------------------------- 8
def test_save_crops_mirror_the_inputs_common_folder(tmp_path):
    from dfd.inference.predict import crops_root

    root = tmp_path / "to_check"
    assert crops_root([str(root / "call.mp4"), str(root / "screen" / "share.mp4")]) == str(root)
    assert crops_root([str(root / "photo.png")]) == str(root)
    assert crops_root([str(tmp_path / "a" / "x.mp4"), str(tmp_path / "b" / "y.png")]) == str(tmp_path)


def test_help_lists_no_internal_config_group(tmp_path):
    for tool in ("dfd-train", "dfd-extract"):
        proc = _cli(tool, ["--help"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        groups = proc.stdout[proc.stdout.index("== Configuration groups =="): proc.stdout.index("== Config ==")]
        assert "dataset: " in groups and "model: " in groups and "dfd:" not in groups, groups
    assert _written(tmp_path) == []
