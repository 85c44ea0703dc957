"""Every documented command runs as written (issue 13.2): a README that drifts from the code fails CI.

Every ``dfd-*`` line of a ```` ```bash ```` block in README.md and experiments/*/README.md (parsed by
tests/readme_commands.py) is run here as written, through bash, in one fresh folder that holds tiny copies of the
datasets in their official layouts under ``./data/<official folder>`` (the default ``paths.data_dir``), with the
user's defaults: W&B offline as when no key is set, no network (``HF_HUB_OFFLINE=1``, empty weight caches), no GPU.
Commands run grouped by tool in the order a user needs them (index, extract, pack, embed, train, eval, export, predict,
report, weights), document order within a tool, and each must exit 0 and leave what the text promises
(``PROMISES`` below: index.parquet, manifest.parquet, run folders with results.json ..., bundles, CSVs, reports).

Conventions for whoever documents a command (README.md, experiments/*/README.md):

* **GPU / SLURM lines** end with the comment ``# GPU`` or ``# SLURM`` (or start their comment with ``GPU:``).
  Here they must stop at once (no data or model work) with dfd's one-line error saying there is no GPU / no
  SLURM (or, for the hand merge of SLURM shard jobs, that no shards ran). ``trainer=gpu|ddp|ddp_multinode`` and ``hydra/launcher=slurm`` are recognised without the marker; a
  preset that implies a GPU needs it.
* **Pretrained backbones** need no marker: with no network they must stop at once with the one-line
  "pretrained weights ... cannot be downloaded" error (a user's machine downloads them); object storage
  (``s3://``) likewise with its one-line error.
* **Placeholders** (``<ckpt>``, ``/data/...``, ``outputs/train/<run>/...``) are mapped in ``PLACEHOLDERS``; a
  new one fails the test until it is added there.
* **The embedded synthetic set** runs at fixture size (``SYNTHETIC_FIXTURE`` is appended to commands whose
  dataset is synthetic, and the same size to each synthetic ``+dataset@test_sets`` entry: ``fixture_args``): its
  size is its data, as the real datasets' fixtures are a handful of videos.
* Anything that truly cannot run even to a one-line error goes into ``EXEMPT`` with the reason (none today: GPU,
  SLURM, hub and object-storage commands all end in dfd's one-line error).
* **What a command prints**: a ```` ```text ```` block right after its ```` ```bash ```` block shows output lines
  (``…`` for any text); each must be in what the command printed (tests/readme_commands.py ``shows``). The
  "Your own videos" walk-through shows every step's, run here on ``./my_videos`` (face videos in ``real/`` and
  ``fake/<method>/``) and ``./to_check``; ``outputs/train/<run>/checkpoints/<best>.ckpt`` there is the
  checkpoint of the run its own ``dfd-train`` line made.

Everything runs in ONE test (one fixture folder, one checkpoint reused by every command that needs one) so that
pytest-xdist never builds it twice; every problem is collected and reported together, with a timing table.
Consecutive commands expected to stop at once (GPU, SLURM, network: ``stops_at_once``) run two at a time; each is
still judged on its own exit, output and CPU time.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from dfd.store.schema import (
    INDEX_COLUMNS,
    MANIFEST_COLUMNS,
    MANIFEST_OPTIONAL_COLUMNS,
    MANIFEST_SOURCE_COLUMNS,
)
from tests import layouts as L
from tests import layouts_more as M
from tests import layouts_wild as W
from tests.layouts_images import make_shortcut_images
from tests.media import write_face_png, write_face_video
from tests.readme_commands import Command, all_commands, missing_output

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent

#: Commands not run at all: {regex on the command code: reason}. Only for what cannot even reach dfd's one-line
#: error here; the test fails when an entry no longer matches a documented command.
EXEMPT: dict[str, str] = {}

#: Appended to commands on the embedded synthetic set (its generated size is its data).
SYNTHETIC_FIXTURE = ["dataset.videos={train: 16, val: 8, test: 8}"]


def fixture_args(code: str) -> list[str]:
    """What :func:`prepare` appends to a dfd-train/dfd-eval/dfd-embed command: ``SYNTHETIC_FIXTURE`` when it runs on
    the synthetic set, and the same size for each synthetic ``+dataset@test_sets.<name>=synthetic`` entry (so an
    entry that reads a model's own training domain is its in-domain set, as at the default size)."""
    size = SYNTHETIC_FIXTURE[0].removeprefix("dataset.")
    return [*(SYNTHETIC_FIXTURE if is_synthetic(code) else []),
            *(f"test_sets.{name}.{size}" for name in re.findall(r"\+dataset@test_sets\.(\w+)=synthetic\b", code))]


def is_fixture_arg(arg: str) -> bool:
    return arg in SYNTHETIC_FIXTURE or bool(re.match(r"test_sets\.\w+\.videos=", arg))

#: The order a user runs the tools in (a command runs with its earliest tool).
PHASES = ("dfd-index", "dfd-extract", "dfd-pack", "dfd-embed", "dfd-train", "dfd-eval", "dfd-export", "dfd-predict",
          "dfd-sbi-grid", "dfd-report", "dfd-weights")

#: dfd's one-line errors for what this machine lacks (and a user's may have).
NEEDS = {
    "GPU": re.compile(r"^error: (trainer\S* trains on CUDA GPUs and this machine has none"
                      r"|extract\.device=cuda\S* but no CUDA GPU is visible here)"),
    # A SLURM line either submits (no sbatch/srun here) or merges what the submitted shard jobs made (none here).
    "SLURM": re.compile(r"^error: ('hydra/launcher=\S+' submits every run to SLURM, but .* not on this machine's PATH"
                        r"|nothing to merge: no shards of this index split \d+ ways)"),
    "network": re.compile(r"^error: (pretrained weights for '[^']+' are not on this machine and cannot be downloaded"
                          r"|.*(s3fs|object storage|cannot reach|unreachable))"),
}
#: Third-party noise no dfd command may print (issue 13.4): W&B, Lightning's tips, dependencies' deprecations.
NOISE = ("anonymous setting", "💡", "Tip:", "litlogger", "LitLogger", "litmodels", "LeafSpec", "_pytree",
         "TPU available", "HPU available", "FutureWarning", "DeprecationWarning", "UserWarning",
         "smaller than the logging interval", "Traceback")

# FF++ with one pair per official split: 6 originals + 4 methods x 6 fakes.
FFPP_PAIRS = {"train": [["071", "054"]], "val": [["720", "672"]], "test": [["953", "974"]]}


@dataclass
class Run:
    """One command as run: what it was, how it ended, what it wrote."""

    command: Command
    code: str
    rc: int | None = None
    out: str = ""
    err: str = ""
    seconds: float = 0.0
    cpu: float = 0.0  # CPU seconds of the command and every process it started
    outcome: str = ""  # ok | needs GPU | needs SLURM | needs network | exempt
    runs: list[Path] = field(default_factory=list)  # run folders it made (dfd-train, dfd-eval)


class Workspace:
    """The user's folder: fixtures under ./data, runs under ./outputs, crops under ./.cache/dfd."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.trained: list[tuple[str, Path]] = []  # (dfd-train arguments, run folder) of successful runs
        self.trained_at: dict[Path, tuple[str, int]] = {}  # run folder -> (document, line) of its dfd-train
        self.current: Command | None = None  # the command whose placeholders are being mapped
        self.fixture_runs: dict[str, Path] = {}  # paths.cache_dir=... -> run folder trained for <ckpt>
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "DFD_", "HYDRA_"))}
        self.env.update(PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", HF_HUB_OFFLINE="1",
                        HF_HOME=str(root / ".hf"), TORCH_HOME=str(root / ".torch"), COLUMNS="160")

    # ------------------------------------------------------------------------------------------- fixtures
    def build(self) -> None:
        clip, _ = write_face_video(self.root / ".clip.mp4", n_frames=2, size=256, canvas=288)
        with L.videos_of(clip.read_bytes()):  # a face MTCNN finds, so extraction keeps frames
            L.make_ffpp(self.data / "FaceForensics++", pairs=FFPP_PAIRS)
            # DeeperForensics-1.0 (its reals: FF++ youtube 000-004/999, which FF++'s own split files do not list).
            M.make_deeperforensics(self.data / "DeeperForensics-1.0", self.data / "FaceForensics++")
            L.make_celebdf(self.data / "Celeb-DF-v2")
            L.make_redface(self.data / "RedFace")
            # One train part (with its metadata.json) and the test folder: enough for index, extract.choice=all
            # and shards, at a third of the full fixture's videos.
            M.make_dfdc(self.data / "DFDC", parts={0: M.DFDC_PARTS[0]}, validation=False)
            # experiments/in_the_wild: the in-the-wild and 2024-25 sets (images at a size MTCNN finds faces in).
            W.make_deepfake_eval_2024(self.data / "Deepfake-Eval-2024", image_size=256)
            W.make_celebdf_pp(self.data / "Celeb-DF++")
            W.make_kodf(self.data / "KoDF")
            W.make_fakeavceleb(self.data / "FakeAVCeleb_v1.2")
            W.make_diff(self.data / "DiFF", image_size=256)
            for version in ("v1_1", "v2"):
                W.make_deepspeak(self.data / f"DeepSpeak_{version}", version)
        L.make_wilddeepfake(self.data / "WildDeepfake", size=224)  # 224 px face crops, as distributed
        M.make_deepfakebench(self.data / "DeepfakeBench")  # its rgb/ crops and dataset_json/ JSONs
        # README "Shortcut audit": face JPEGs whose resolution gives the label away (reals 1280x720, fakes 640x480).
        make_shortcut_images(self.data / "my_images")
        # The walk-through's own videos (README "Your own videos"): real/ and fake/<method>/, 2-frame face videos
        # (one per class and split once carved), and the files it predicts: a video, a photo, a faceless video.
        mine = self.root / "my_videos"
        for rel in ("real/interview_01", "real/interview_02", "real/street_03", "fake/faceswap/interview_01_swap",
                    "fake/faceswap/street_03_swap", "fake/lipsync/interview_02_sync"):
            (mine / rel).parent.mkdir(parents=True, exist_ok=True)
            (mine / f"{rel}.mp4").write_bytes(clip.read_bytes())
        check = self.root / "to_check"
        write_face_video(check / "call.mp4", n_frames=3, size=256, canvas=288)
        write_face_video(check / "screen" / "share.mp4", n_frames=3, canvas=288, faceless=True)
        write_face_png(check / "photo.png", size=256)
        clip.unlink()

    # ------------------------------------------------------------------------------------------- placeholders
    def checkpoint_run(self) -> Path:
        """The run whose checkpoint every command that needs one reuses: the first trained on extracted faces."""
        for args, run in self.trained:
            if "dataset=ffpp" in args.split() and (run / "checkpoints").is_dir():
                return run
        raise AssertionError(f"no dfd-train run on FF++ finished before a command needed its checkpoint: {self.trained}")

    def resumed_run(self, code: str) -> Path:
        """The run a ``ckpt_path=outputs/train/<run>/...`` resume continues: made by the same other arguments."""
        others = " ".join(a for a in dfd_args(code) if not a.startswith("ckpt_path=") and not is_fixture_arg(a))
        for args, run in self.trained:
            if args == others:
                return run
        return self.checkpoint_run()

    def best_checkpoint(self) -> Path:
        results = json.loads((self.checkpoint_run() / "results.json").read_text())
        return Path(results["checkpoint"])

    def shown_checkpoint(self) -> Path:
        """``outputs/train/<run>/checkpoints/<best>.ckpt``: the checkpoint selected by the run of the nearest
        dfd-train line above the command in its document (the walk-through evaluates and exports the model it
        has just trained), else :meth:`best_checkpoint`."""
        cmd = self.current
        above = [(line, run) for run, (doc, line) in self.trained_at.items()
                 if cmd is not None and doc == cmd.doc and line < cmd.line]
        if not above:
            return self.best_checkpoint()
        run = max(above, key=lambda lr: lr[0])[1]
        return Path(json.loads((run / "results.json").read_text())["checkpoint"])

    def checkpoint_for(self, code: str) -> Path:
        """``<ckpt>``: a checkpoint trained on the crops the command scores, i.e. from its ``paths.cache_dir``.

        The default cache's is :meth:`best_checkpoint`. Another cache (the recipes' ArcFace 256 px crops) is
        trained on only by GPU recipes here, so a tiny default model is trained once on FF++ from that cache (1
        epoch), as the user's GPU recipe would have: dfd refuses a checkpoint whose crops differ from the cache's.
        """
        cache = next((a for a in dfd_args(code) if a.startswith("paths.cache_dir=")), None)
        tested = set(re.findall(r"\+dataset@test_sets\.\w+=(\w+)", code))
        if cache is None and tested == {"synthetic"}:
            return self.synthetic_checkpoint()
        if cache is None:
            return self.best_checkpoint()
        if cache not in self.fixture_runs:
            args = ["dataset=ffpp", cache, "trainer.max_epochs=1", "logger=csv"]
            before = _folders(self)
            proc = subprocess.run([str(BIN / "dfd-train"), *args], cwd=self.root, env=self.env, capture_output=True,
                                  text=True, timeout=900)
            made = sorted(_folders(self) - before)
            assert proc.returncode == 0 and len(made) == 1, (
                f"the checkpoint for <ckpt> (dfd-train {' '.join(args)}) failed: {proc.stderr[-1500:]}")
            self.fixture_runs[cache] = made[0]
        results = json.loads((self.fixture_runs[cache] / "results.json").read_text())
        return Path(results["checkpoint"])

    def synthetic_checkpoint(self) -> Path:
        """``<ckpt>`` of a command that tests on the embedded synthetic set only (its 64 px crops; dfd refuses a
        checkpoint trained on other crops): the newest run trained on that set by the command's own document (a
        study's own multirun), else the first one trained on it."""
        runs = [run for args, run in self.trained if is_synthetic(f"dfd-train {args}") and (run / "checkpoints").is_dir()]
        assert runs, "no dfd-train run on the synthetic set finished before a command needed its checkpoint"
        own = [run for run in runs if self.current is not None and self.trained_at.get(run, ("",))[0] == self.current.doc]
        run = own[-1] if own else runs[0]
        return Path(json.loads((run / "results.json").read_text())["checkpoint"])

    def multirun(self) -> Path:
        """The newest multirun folder holding results (the synthetic-domains study)."""
        folders = sorted(p for p in (self.root / "outputs" / "multirun").glob("*") if any(p.glob("*/results.json")))
        assert folders, "no multirun with results finished before dfd-report needed one"
        return folders[-1]

    def substitute(self, code: str, cmd: Command | None = None) -> str:
        """The command with every placeholder mapped to the fixture it stands for (see PLACEHOLDERS)."""
        self.current = cmd
        for pattern, value in PLACEHOLDERS:
            if pattern in code:
                code = code.replace(pattern, str(value(self, code)))
        left = re.findall(r"<[A-Za-z][\w .-]*>", code)
        assert not left, f"unmapped placeholder(s) {left}: add them to PLACEHOLDERS in {__file__}"
        return code.replace(".venv/bin/", f"{BIN}/")


def dfd_args(code: str) -> list[str]:
    """The arguments after the first dfd-* tool of a command."""
    words = shlex.split(code)
    for i, w in enumerate(words):
        if re.search(r"(^|/)dfd-[a-z-]+$", w):
            rest = words[i + 1:]
            return rest[: rest.index("&&")] if "&&" in rest else rest
    return []


#: (text in a documented command, what it stands for here), most specific first.
PLACEHOLDERS = [
    ("outputs/train/<run>/checkpoints/<best>.ckpt", lambda ws, code: ws.shown_checkpoint()),
    ("outputs/train/<run>/checkpoints/last.ckpt",
     lambda ws, code: ws.resumed_run(code) / "checkpoints" / "last.ckpt"),
    ("<ckpt>", lambda ws, code: ws.checkpoint_for(code)),
    ("outputs/multirun/<date_time>", lambda ws, code: ws.multirun()),
    ("outputs/multirun/<date>_<time>", lambda ws, code: ws.multirun()),
    ("/data/", lambda ws, code: f"{ws.data}/"),
    ("/shared/weights", lambda ws, code: ws.root / "shared" / "weights"),
    ("<partition>", lambda ws, code: "gpu"),
]


def inferred_need(code: str) -> str | None:
    """What a command visibly needs without its marker (see the module docstring)."""
    if re.search(r"(^|\s)(-m|--multirun)(\s|$)", code) and re.search(r"hydra/launcher=\S*slurm", code):
        return "SLURM"
    if "trainer.accelerator=cpu" not in code and re.search(
            r"\btrainer=(gpu|ddp|ddp_multinode)\b|trainer\.accelerator=(gpu|cuda)\b", code):
        return "GPU"
    return None


def _train_config(code: str):
    """The config of (the first job of) a dfd-train/dfd-eval (or dfd-embed) command, composed as dfd would; None if
    it does not compose here (options from the user's own folder, etc.)."""
    from tests.conftest import compose

    args = [a for a in dfd_args(code) if a not in ("-m", "--multirun") and not a.startswith("hydra.")]
    args = [a.split(",")[0] if "=" in a and "[" not in a and "{" not in a else a for a in args]  # one multirun job
    try:
        return compose("embed" if re.search(r"(^|[\s/])dfd-embed\b", code) else "train", args)
    except Exception:
        return None


def is_synthetic(code: str) -> bool:
    """Whether a dfd-train/dfd-eval command trains on the embedded synthetic set (composed as dfd would)."""
    cfg = _train_config(code)
    return cfg is not None and str(cfg.dataset.get("_target_", "")).endswith("SyntheticSource")


def stops_at_once(cmd: Command, code: str) -> bool:
    """Whether a command is expected to stop before any work here (no GPU, SLURM, network or object storage),
    so it may run beside another such command. Scheduling only: :func:`judge` checks how each really ended."""
    if cmd.setup or not cmd.tools:
        return False
    if cmd.marker or inferred_need(code) or cmd.tools[0] == "dfd-weights" or "s3://" in code:
        return True
    if cmd.tools[0] == "dfd-train":
        cfg = _train_config(code)
        return cfg is not None and bool(cfg.model.get("pretrained"))  # no weights cached, no network
    return False


# ----------------------------------------------------------------------------------------------- promises
def _compose_dataset(ws: Workspace, args: list[str]):
    from tests.conftest import compose

    cwd = os.getcwd()
    os.chdir(ws.root)  # relative defaults (./data, ./.cache/dfd) resolve as in the user's folder
    try:
        cfg = compose("index", [a for a in args if a.startswith(("dataset", "paths."))])
        return Path(cfg.dataset.cache_dir).resolve()
    finally:
        os.chdir(cwd)


def _datasets(code: str) -> list[list[str]]:
    """The dataset arguments of each dataset a command (or a `for d in ...` loop over it) works on."""
    args = dfd_args(code)
    loop = re.match(r"for (\w+) in ([^;]+);", code)
    if loop and f"dataset=${loop.group(1)}" in args:
        return [[f"dataset={d}", *(a for a in args if a.startswith("dataset."))] for d in loop.group(2).split()]
    return [[a for a in args if a.startswith(("dataset=", "dataset.", "paths."))]]


#: What dfd-extract adds to the manifest's columns: each video's source fingerprint (README: "the cache records ...
#: each video's source fingerprint").
SOURCE_FINGERPRINT = tuple(MANIFEST_SOURCE_COLUMNS)


def _cache_files(ws: Workspace, run: Run, name: str, problems: list[str]) -> Iterator[tuple[Path, Path]]:
    """(cache, cache / name) of each dataset the command works on whose file exists; the others are problems."""
    for args in _datasets(run.code):
        cache = _compose_dataset(ws, args)
        if (cache / name).is_file():
            yield cache, cache / name
        else:
            problems.append(f"no {name} at {cache}")


def promise_index(ws: Workspace, run: Run) -> list[str]:
    problems: list[str] = []
    for _, index in _cache_files(ws, run, "index.parquet", problems):
        if not set(INDEX_COLUMNS) <= set(pd.read_parquet(index)):
            problems.append(f"{index} lacks the documented columns")
    if "wrote " not in run.out:
        problems.append("no counts table / 'wrote N videos' line")
    return problems


def promise_extract(ws: Workspace, run: Run) -> list[str]:
    problems: list[str] = []
    for cache, manifest in _cache_files(ws, run, "manifest.parquet", problems):
        df = pd.read_parquet(manifest)
        required = list(MANIFEST_COLUMNS)
        if list(df.columns[: len(required)]) != required or not set(SOURCE_FINGERPRINT) <= set(df.columns):
            problems.append(f"{manifest} columns {list(df.columns)} are not the documented ones "
                            f"({required} first, then {list(MANIFEST_OPTIONAL_COLUMNS)} and {list(SOURCE_FINGERPRINT)})")
        if "extract.choice=all" in run.code and "track" not in df.columns:
            problems.append(f"{manifest}: extract.choice=all wrote no 'track' column")
        if df.empty or not any((cache / "crops").rglob("*.png")):
            problems.append(f"{cache}: no crops extracted")
        if not (cache / "cache.json").is_file():
            problems.append(f"{cache}: no cache.json record")
    return problems


def promise_pack(ws: Workspace, run: Run) -> list[str]:
    cache = _compose_dataset(ws, _datasets(run.code)[0])
    shards = cache / "shards"
    missing = [n for n in ("shards.json", "manifest.parquet") if not (shards / n).is_file()]
    if not list(shards.rglob("*.tar")):
        missing.append("*.tar")
    return [f"{shards}: missing {missing}"] if missing else []


def _run_folder_problems(folder: Path, kind: str) -> list[str]:
    problems = []
    for name in ("results.json", "config.yaml", "predictions.parquet"):
        if not (folder / name).is_file():
            problems.append(f"{folder}: no {name}")
    if problems:
        return problems
    import yaml

    config = yaml.safe_load((folder / "config.yaml").read_text())
    fast = (config.get("trainer") or {}).get("fast_dev_run")
    if kind == "train" and not fast:
        if not (folder / "checkpoints" / "last.ckpt").is_file() or len(list((folder / "checkpoints").glob("*.ckpt"))) < 2:
            problems.append(f"{folder}: no best + last checkpoints")
        if not (folder / "roc.png").is_file():
            problems.append(f"{folder}: no roc.png")
    logger = config.get("logger") or {}
    if "wandb" in logger and not list((folder / "wandb").glob("offline-run-*")):
        problems.append(f"{folder}: W&B (the default logger) wrote no wandb/offline-run-*")
    if "csv" in logger and not list(folder.glob("csv/**/metrics.csv")):
        problems.append(f"{folder}: logger=csv wrote no metrics.csv")
    return problems


def _test_sets(code: str) -> set[str]:
    return set(re.findall(r"\+dataset@test_sets\.(\w+)=", code))


def _run_results(folder: Path, kind: str, code: str, problems: list[str]) -> dict | None:
    """The run folder's results.json (None when absent), after checking the folder and the documented test sets."""
    problems += _run_folder_problems(folder, kind)
    if not (folder / "results.json").is_file():
        return None
    res = json.loads((folder / "results.json").read_text())
    missing = _test_sets(code) - set(res["test"])
    if missing:
        problems.append(f"{folder}: test sets {sorted(missing)} not in results.json")
    return res


def promise_train(ws: Workspace, run: Run) -> list[str]:
    if not run.runs:
        return ["no run folder under outputs/train or outputs/multirun"]
    problems: list[str] = []
    for folder in run.runs:
        res = _run_results(folder, "train", run.code, problems)
        if res is not None and "+dataset@train_mix." in run.code and "+" not in res["train"]["dataset"]:
            problems.append(f"{folder}: the training mix is not recorded ({res['train']['dataset']})")
        rule = re.search(r"\beval\.no_face=(\w+)", run.code)
        if res is not None and rule:  # README: results.json no_face records the rule per test set
            got = {name: (t.get("no_face") or {}).get("rule") for name, t in res["test"].items()}
            if set(got.values()) != {rule.group(1)}:
                problems.append(f"{folder}: eval.no_face={rule.group(1)} but results.json no_face rules are {got}")
    if "test metrics (" not in run.out:
        problems.append("no table of test metrics printed")
    if "ckpt_path=" in run.code:  # resume: the same W&B run continues
        resumed = ws.resumed_run(run.code)
        ids = {p.name.rsplit("-", 1)[-1] for p in (resumed / "wandb").glob("offline-run-*")}
        now = {p.name.rsplit("-", 1)[-1] for f in run.runs for p in (f / "wandb").glob("offline-run-*")}
        if not now or not now <= ids:
            problems.append(f"resume did not continue the W&B run of {resumed} ({ids} vs {now})")
    return problems


def promise_eval(ws: Workspace, run: Run) -> list[str]:
    if not run.runs:
        return ["no run folder under outputs/eval"]
    problems: list[str] = []
    for folder in run.runs:
        res = _run_results(folder, "eval", run.code, problems)
        if res is None:
            continue
        explain = re.search(r"\bexplain=(\d+)", run.code)
        if explain and int(explain.group(1)) > 0 and (
                "explain" not in res or not list((folder / "explain").rglob("cam.npz"))):
            problems.append(f"{folder}: explain={explain.group(1)} but no results.json 'explain' or explain/**/cam.npz")
        sweep = re.search(r"robustness='([^']+)'", run.code)
        if sweep:
            import yaml

            # The sweep's kinds and levels (other keys are settings: at, workers).
            wanted = {k: v for k, v in yaml.safe_load(sweep.group(1)).items() if isinstance(v, list)}
            for name in res["test"]:
                got = {k: len(v) for k, v in ((res.get("robustness") or {}).get(name) or {}).items()}
                if got != {k: len(v) for k, v in wanted.items()}:
                    problems.append(f"{folder}: robustness of '{name}' in results.json is {got}, asked {wanted}")
            # The console table: a row per test set and kind x level (README: "prints ... the robustness table").
            rows = [ln for ln in run.out.splitlines() if re.search(r"│\s*(" + "|".join(wanted) + r")\s*│", ln)]
            if "robustness (" not in run.out or len(rows) != len(res["test"]) * sum(map(len, wanted.values())):
                problems.append(f"no robustness table with {sum(map(len, wanted.values()))} rows per test set printed")
    return problems


def promise_embed(ws: Workspace, run: Run) -> list[str]:
    # README: a store <cache>/features/<backbone>/ with features.json written last; embed.plot=true adds the maps.
    stores = re.findall(r"^feature store (\S+?):", run.out, re.M)
    problems = [] if stores else ["no 'feature store <folder>: ...' line"]
    for store in stores:
        folder = ws.root / store
        if not (folder / "features.json").is_file():
            problems.append(f"{folder}: no features.json")
        if "embed.plot=true" in run.code and not list(folder.glob("feature_map_*.png")):
            problems.append(f"{folder}: embed.plot=true drew no feature_map_*.png")
    return problems


def promise_export(ws: Workspace, run: Run) -> list[str]:
    out = ws.root / [a for a in dfd_args(run.code) if not a.startswith("-")][1]
    problems = []
    for name in ("model.safetensors", "model.torchscript.pt", "model.onnx", "preprocess.json"):
        path = out / name
        if not path.is_file():
            problems.append(f"bundle {out}: no {name}")
        elif stat.S_IMODE(path.stat().st_mode) != 0o644:
            problems.append(f"bundle {out}: {name} is not readable by others (0644)")
    if (out / "preprocess.json").is_file():
        pre = json.loads((out / "preprocess.json").read_text())
        if not pre.get("crop") or set(pre.get("thresholds") or {}) != {"video", "frame", "image"} or "weights" not in pre:
            problems.append(f"bundle {out}: preprocess.json lacks crop / thresholds.video+frame+image / weights")
    return problems


def promise_predict(ws: Workspace, run: Run) -> list[str]:
    args = dfd_args(run.code)
    out = ws.root / args[args.index("--out") + 1]
    if not out.is_file():
        return [f"no {out}"]
    df = pd.read_csv(out)
    want = ["path", "prob_fake", "label", "faces", "frames", "status", "reason", "threshold", "threshold_level", "inputs"]
    # The inputs: the positional arguments after the model (an option's value is not one), from the user's folder.
    values = {i + 1 for i, a in enumerate(args) if a.startswith("--") and a != "--no-progress"}
    inputs = [ws.root / a for i, a in enumerate(args[1:], 1) if not a.startswith("-") and i not in values]
    n_media = sum(len([p for p in i.rglob("*") if p.is_file()]) if i.is_dir() else 1 for i in inputs)
    problems = [] if list(df.columns) == want else [f"{out} columns {list(df.columns)}, documented {want}"]
    if len(df) != n_media:
        problems.append(f"{out}: {len(df)} rows for {n_media} inputs")
    if not set(df["status"]) <= {"ok", "no_face", "unreadable"} or "ok" not in set(df["status"]):
        problems.append(f"{out}: statuses {sorted(set(df['status']))}")
    for option, wanted in (("--save-crops", "[0-9]*.png"), ("--explain", "cam.npz")):
        if option in args:  # README: crops (heatmaps) mirror the inputs below their common folder
            saved = ws.root / args[args.index(option) + 1]
            common = os.path.commonpath([os.path.dirname(os.path.abspath(ws.root / p)) for p in df["path"]])
            for path in df.loc[df["status"] == "ok", "path"]:
                folder = saved / os.path.relpath(ws.root / path, common)
                if not list(folder.glob(wanted)) or not list(folder.glob("[0-9]*.png")):
                    problems.append(f"{option}: no {wanted} in {folder} for {path}")
    return problems


def promise_report(ws: Workspace, run: Run) -> list[str]:
    args = dfd_args(run.code)
    out = ws.root / args[args.index("--out") + 1]
    names = ["matrix.csv", "matrix_std.csv", "gap.csv", "results_long.csv", "report.md", "report.html"]
    if "--metric" not in args or args[args.index("--metric") + 1] == "video_auc":
        names.append("matrix_ci.csv")  # bootstrap intervals exist for video AUC
    missing = [n for n in names if not (out / n).is_file()]
    if not list((out / "figures").glob("*.png")):
        missing.append("figures/*.png")
    if missing:
        return [f"report {out}: missing {missing}"]
    # README: an evaluation of a training run's checkpoint joins that run's row, never a repeat.
    found = [json.loads(f.read_text()) for a in args if not a.startswith("-") and (ws.root / a).is_dir()
             for f in (ws.root / a).rglob("results.json") if "wandb" not in f.parts]
    # README: report.md adds a reliability diagram per test set (runs record their reliability bins).
    calibrated = any("calibration" in (t or {}) for r in found for t in (r.get("test") or {}).values())
    if calibrated and ("## Calibration" not in (out / "report.md").read_text()
                       or not list((out / "figures").glob("reliability_*.png"))):
        return [f"report {out}: runs with reliability bins, but no Calibration section or reliability figure"]
    trained = {r.get("run_id") for r in found if r.get("kind") == "train"}
    attached = any(r.get("kind") == "eval" and r.get("run_id") in trained for r in found)
    if attached and "| eval of `" not in (out / "report.md").read_text():
        return [f"report {out}: an evaluation of a training run it collected is not attached to that run"]
    return []


def promise_weights(ws: Workspace, run: Run) -> list[str]:
    # Exit status (README): 0 all present or fetched, 1 some missing. --check never fetches.
    if not re.search(r"^\d+ present, \d+ missing", run.out.strip().splitlines()[-1]):
        return ["no 'N present, M missing' summary"]
    return []


PROMISES = {"dfd-index": promise_index, "dfd-extract": promise_extract, "dfd-pack": promise_pack,
            "dfd-embed": promise_embed, "dfd-train": promise_train, "dfd-eval": promise_eval, "dfd-export": promise_export,
            "dfd-predict": promise_predict, "dfd-report": promise_report, "dfd-weights": promise_weights}


# ----------------------------------------------------------------------------------------------- running
def _folders(ws: Workspace) -> set[Path]:
    out = ws.root / "outputs"
    return {*out.glob("train/*"), *out.glob("eval/*"), *out.glob("multirun/*/*")} - {*out.glob("multirun/*/.*")}


def prepare(ws: Workspace, cmd: Command) -> Run:
    """The command as it will run: placeholders mapped, the synthetic set at fixture size."""
    code = ws.substitute(cmd.code, cmd)
    extra = fixture_args(code) if cmd.tools and cmd.tools[0] in ("dfd-train", "dfd-eval", "dfd-embed") else []
    if extra:
        code += " " + " ".join(shlex.quote(a) for a in extra)
    return Run(cmd, code)


def execute(ws: Workspace, run: Run, log: Path) -> Run:
    """Run it through bash in the user's folder; its own CPU time from wait4 (right when two run at once)."""
    log.parent.mkdir(exist_ok=True)
    out, err = log.with_suffix(".out"), log.with_suffix(".err")
    start = time.monotonic()
    with out.open("w") as fo, err.open("w") as fe:
        proc = subprocess.Popen(["bash", "-c", run.code], cwd=ws.root, env=ws.env, stdout=fo, stderr=fe,
                                start_new_session=True)
        timer = threading.Timer(900, os.killpg, (proc.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    run.seconds = time.monotonic() - start
    run.cpu = usage.ru_utime + usage.ru_stime
    run.rc, run.out, run.err = proc.returncode, out.read_text(), err.read_text()
    out.unlink()
    err.unlink()
    # What each command printed, for a look after a failure.
    log.write_text(f"$ {run.code}\n(exit {run.rc})\n{run.out}\n--- stderr\n{run.err}")
    return run


def run_all(ws: Workspace, batch: list[Run]) -> list[Run]:
    """Run one command, or commands that all stop at once two at a time; each gets the run folders made meanwhile
    (none for commands that stop at once: judge() flags any)."""
    logs = ws.root / "logs"
    first = len(list(logs.glob("*.txt"))) if logs.is_dir() else 0
    before = _folders(ws)
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda ir: execute(ws, ir[1], logs / f"{first + ir[0]:02d}.txt"), enumerate(batch)))
    made = sorted(p for p in _folders(ws) - before if p.is_dir() and not p.name.startswith("."))
    for run in batch:
        run.runs = made
    return batch


def judge(ws: Workspace, run: Run) -> list[str]:
    """What is wrong with how a command ended (empty: it kept its promise)."""
    cmd, log = run.command, run.out + run.err
    noise = [s for s in NOISE if s in log]
    problems = [f"third-party noise or traceback in its output: {noise}"] if noise else []
    need = cmd.marker or inferred_need(run.code)
    err_lines = [ln for ln in run.err.splitlines() if ln.strip()]
    one_line = err_lines[-1] if len(err_lines) == 1 else None
    # Stopped before any model or training work: no model built (its parameter count is logged), no Trainer.
    fast = not re.search(r"parameters trainable|GPU available:", run.out) and not any(
        (f / "checkpoints").exists() for f in run.runs)
    if need:
        ok = run.rc == 2 and one_line is not None and NEEDS[need].match(one_line) and fast
        run.outcome = f"needs {need}" if ok else "FAILED"
        if ok:
            return problems
        if run.rc == 0:
            return [*problems, f"marked/recognised as needing {need} but ran here; drop the marker"]
        return [*problems, f"needs {need}: expected exit 2 with dfd's one-line error before any work "
                           f"(/{NEEDS[need].pattern}/), got exit {run.rc}: {run.err.strip()[-1500:] or run.out[-1500:]}"]
    tool = cmd.tools[0] if cmd.tools else None
    if tool == "dfd-weights" and "--check" not in run.code:
        # Fetching with no network: exit 1, every name listed with the one-line reason.
        rows = [ln for ln in run.out.splitlines() if "  missing  " in ln]
        ok = run.rc == 1 and rows and all("cannot be downloaded" in ln for ln in rows)
        run.outcome = "needs network" if ok else "FAILED"
        return problems if ok else [*problems, f"expected exit 1 and 'cannot be downloaded' per name, got "
                                               f"exit {run.rc}: {run.out[-1500:]} {run.err[-1500:]}"]
    if run.rc == 2 and one_line and NEEDS["network"].match(one_line):
        run.outcome = "needs network"
        return problems if fast else [*problems, f"the network error came after data or model work: {run.out[-1500:]}"]
    if run.rc != 0 and not (tool == "dfd-weights" and run.rc == 1):
        run.outcome = "FAILED"
        if one_line and NEEDS["GPU"].match(one_line):
            return [*problems, "it needs a GPU: end the line with `# GPU`"]
        return [*problems, f"exit {run.rc}: {run.err.strip()[-2500:] or run.out[-2500:]}"]
    run.outcome = "ok"
    if cmd.setup:
        return problems
    for t in dict.fromkeys(cmd.tools):
        if t in PROMISES:
            problems += PROMISES[t](ws, run)
    unseen = missing_output(cmd.shows, run.out + "\n" + run.err)
    if unseen:
        problems.append(f"the README shows it printing {unseen}, not in its output:\n{(run.out + run.err)[-3000:]}")
    if problems:
        run.outcome = "FAILED"
    return problems


def ordered(commands: list[Command]) -> list[Command]:
    """Commands in the order a user needs them; a set-up line goes with the command after it."""
    phase: list[int] = []
    for i, c in enumerate(commands):
        if c.setup:
            nxt = next((d for d in commands[i + 1:] if d.tools), None)
            tools = nxt.tools if nxt else []
        else:
            tools = c.tools
        phase.append(min((PHASES.index(t) if t in PHASES else len(PHASES)) for t in tools) if tools else 0)
    return [c for _, _, c in sorted(zip(phase, range(len(commands)), commands, strict=True))]


def test_marker_and_placeholder_rules():
    """How documented lines are read: comments, markers, continuations, install steps."""
    from tests.readme_commands import commands, marker_of, split_comment

    assert split_comment("dfd-train trainer=gpu   # bf16 on one GPU  # GPU") == (
        "dfd-train trainer=gpu", "bf16 on one GPU  # GPU")
    assert split_comment("dfd-eval robustness='{a: 1} # not a comment'") == (
        "dfd-eval robustness='{a: 1} # not a comment'", "")
    assert marker_of("bf16 on one GPU  # GPU") == "GPU" and marker_of("GPU: bf16-mixed") == "GPU"
    assert marker_of("SLURM") == "SLURM" and marker_of("one SLURM job per run") is None
    assert marker_of("DDP on 4 GPUs") is None
    assert inferred_need("dfd-train -m hydra/launcher=slurm seed=1,2") == "SLURM"
    assert inferred_need("dfd-train trainer=ddp trainer.accelerator=cpu trainer.devices=2") is None
    assert inferred_need("dfd-train trainer=ddp_multinode trainer.num_nodes=2") == "GPU"
    cmds = {c.where: c for c in all_commands()}
    quick = next(c for c in cmds.values() if c.doc == "README.md" and c.tools == ["dfd-train"])
    assert quick.code == ".venv/bin/dfd-train"  # the quick start without its install steps
    multi = next(c for c in commands(Path(L.__file__).parents[1] / "experiments/standard_protocol/README.md")
                 if "finetune=full,lora" in c.code)
    assert "\\" not in multi.code and "seed=1,2,3" in multi.code  # continuation lines joined
    for pattern in EXEMPT:
        assert any(re.search(pattern, c.code) for c in cmds.values()), f"stale EXEMPT entry {pattern!r}"
    # What a command prints (a ```text block after its ```bash block): every step of the walk-through shows some.
    # The walk-through: the commands of README.md's "Your own videos" section (up to the next ## heading).
    readme = (Path(L.__file__).parents[1] / "README.md").read_text().splitlines()
    first = next(n for n, ln in enumerate(readme, 1) if ln.startswith("## Your own videos"))
    last = next(n for n, ln in enumerate(readme, 1) if n > first and ln.startswith("## "))
    walk = [c for c in cmds.values() if c.doc == "README.md" and first < c.line < last and c.tools]
    assert [c.tools[0] for c in walk] == ["dfd-index", "dfd-extract", "dfd-train", "dfd-eval", "dfd-report",
                                          "dfd-export", "dfd-predict"] and all(c.shows for c in walk), walk
    table = "│ folder   │ none (clean) │       │         … │"
    assert missing_output([table, "wrote … videos"], "│ folder │ none (clean) │  │   0.5 │\nwrote 6 videos") == []
    assert missing_output(["wrote … videos"], "wrote 6 frames") == ["wrote … videos"]


# Over a hundred commands run one after the other (about 1,300 CPU seconds): more than the suite's per-test
# limit (--timeout 1200) allows on a loaded machine.
@pytest.mark.timeout(3600)
def test_every_documented_command_runs_as_written(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("user"))
    ws.build()
    commands = all_commands()
    assert len([c for c in commands if c.tools]) >= 30, "the README lost its commands?"
    failures, runs = [], []
    pending: list[Run] = []  # consecutive commands that stop at once: run two at a time

    def flush() -> None:
        for run in run_all(ws, pending) if pending else []:
            record(run)
        pending.clear()

    def record(run: Run) -> None:
        runs.append(run)
        problems = judge(ws, run)
        if run.outcome == "ok" and run.command.tools and run.command.tools[0] == "dfd-train":
            ws.trained += [(" ".join(a for a in dfd_args(run.code) if not is_fixture_arg(a)), f) for f in run.runs]
            ws.trained_at.update({f: (run.command.doc, run.command.line) for f in run.runs})
        if problems:
            failures.append(f"{run.command}\n    ran: {run.code}\n    " + "\n    ".join(problems))

    for cmd in ordered(commands):
        if any(re.search(p, cmd.code) for p in EXEMPT):
            runs.append(Run(cmd, cmd.code, outcome="exempt: " + next(r for p, r in EXEMPT.items() if re.search(p, cmd.code))))
            continue
        try:
            run = prepare(ws, cmd)
        except AssertionError as e:  # a placeholder with nothing to stand for
            failures.append(f"{cmd}\n    {e}")
            continue
        if stops_at_once(cmd, run.code):
            pending.append(run)
            continue
        flush()
        record(run_all(ws, [run])[0])
    flush()
    table = "\n".join(f"{r.seconds:6.1f} s {r.cpu:6.1f} cpu-s  {r.outcome:14s} {r.command.where:42s} "
                      f"{r.command.text[:80]}" for r in runs)
    print(f"\n{table}\ntotal {sum(r.seconds for r in runs):.0f} s, {sum(r.cpu for r in runs):.0f} CPU-s, for "
          f"{len(runs)} commands (logs: {ws.root / 'logs'})")
    assert not failures, f"{len(failures)} documented command(s) do not run as written:\n" + "\n".join(failures)
