"""A stand-in SLURM for tests: ``sbatch``, ``sacct``, ``srun`` and ``scancel`` on a temporary PATH.

``sbatch`` reads the job script submitit writes (``#SBATCH --array=0-N%P`` and the ``srun ... python -m
submitit.core._submit <folder>`` line), answers with a job id at once (submitit moves its pickles into place
only then) and starts a detached runner that executes every array task as a separate process on this machine,
all at once, with the environment SLURM gives a task (``SLURM_ARRAY_JOB_ID``, ``SLURM_ARRAY_TASK_ID``, ...).
``sacct`` reports the tasks' states from the runner's state files. So ``hydra/launcher=slurm`` runs unchanged:
the array submission, the pickled jobs, the per-task logs, the polling for results.

    write_fake_slurm(bin_dir, spool_dir) -> environment additions (PATH first)
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

_SHIM = """#!/bin/sh
exec {python} {module} {command} {spool} "$@"
"""


def write_fake_slurm(bin_dir: Path, spool: Path) -> dict[str, str]:
    """Install the fake commands into ``bin_dir``; return environment variables to use them."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    spool.mkdir(parents=True, exist_ok=True)
    for command in ("sbatch", "sacct", "srun", "scancel"):
        shim = bin_dir / command
        shim.write_text(_SHIM.format(python=shlex.quote(sys.executable), module=shlex.quote(__file__),
                                     command=command, spool=shlex.quote(str(spool))))
        shim.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def _sbatch(spool: Path, script: str) -> None:
    ids = sorted(int(p.stem) for p in spool.glob("*.job"))
    job = (ids[-1] + 1) if ids else 4242
    (spool / f"{job}.job").write_text(Path(script).read_text())
    subprocess.Popen([sys.executable, __file__, "run", str(spool), str(job)], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"Submitted batch job {job}")


def _run(spool: Path, job: str) -> None:
    text = (spool / f"{job}.job").read_text()
    m = re.search(r"^#SBATCH --array=(\d+)-(\d+)", text, re.M)
    tasks = range(int(m.group(1)), int(m.group(2)) + 1) if m else [None]
    exports = dict(s[len("export "):].split("=", 1) for s in text.splitlines() if s.startswith("export "))
    line = next(s for s in text.splitlines() if s.startswith("srun "))
    args = shlex.split(line)[1:]
    opts: dict[str, str] = {}
    while args and args[0].startswith("--"):
        key = args.pop(0)
        if key in ("--output", "--error"):
            opts[key] = args.pop(0)
    procs = []
    for task in tasks:
        tid = f"{job}_{task}" if task is not None else job

        def fill(s: str, task=task, tid=tid) -> str:
            return s.replace("%A", job).replace("%a", str(task)).replace("%t", "0").replace("%j", tid)

        cmd = [fill(a) for a in args]
        pickle = Path(fill(cmd[-1])) / f"{tid}_submitted.pkl"
        deadline = time.time() + 60
        while not pickle.exists() and time.time() < deadline:  # submitit moves it in after sbatch returns
            time.sleep(0.05)
        env = dict(os.environ, **exports, SLURM_JOB_ID=tid, SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0",
                   SLURM_JOB_NODELIST="localhost", SLURM_PROCID="0", SLURM_LOCALID="0")
        if task is not None:
            env.update(SLURM_ARRAY_JOB_ID=job, SLURM_ARRAY_TASK_ID=str(task))
        out = Path(fill(opts.get("--output", os.devnull)))
        err = Path(fill(opts.get("--error", os.devnull)))
        out.parent.mkdir(parents=True, exist_ok=True)
        (spool / f"{tid}.state").write_text("RUNNING")
        procs.append((tid, subprocess.Popen(cmd, env=env, stdout=out.open("ab"), stderr=err.open("ab"))))
    for tid, proc in procs:
        state = "COMPLETED" if proc.wait() == 0 else "FAILED"
        (spool / f"{tid}.state").write_text(state)


def _sacct(spool: Path, args: list[str]) -> None:
    print("JobID|State|NodeList")
    for state in sorted(spool.glob("*.state")):
        print(f"{state.stem}|{state.read_text()}|localhost")


def main(argv: list[str]) -> None:
    command, spool, rest = argv[0], Path(argv[1]), argv[2:]
    if command == "sbatch":
        _sbatch(spool, rest[-1])
    elif command == "run":
        _run(spool, rest[0])
    elif command == "sacct":
        _sacct(spool, rest)
    # srun (submitit only checks that it exists) and scancel: nothing to do


if __name__ == "__main__":
    main(sys.argv[1:])
