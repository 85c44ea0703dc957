"""How long does the README's "Your own videos in five minutes" walk-through take on the CPU?

Runs the walk-through's seven commands exactly as README.md writes them (read with tests/readme_commands.py) in a
fresh folder holding ``my_videos/`` — 40 short face videos (20 real, 20 fake in two method folders; 48 frames
at 25 fps, 360 px: skimage's astronaut moving across a grey canvas, the fakes' face a little smaller) — and
``to_check/`` (a video and a photo). Prints each step's wall time and CPU time (the command and every process
it started: ``os.wait4``), and the CPU time's bounds on wall time for 2 idle cores (all parallel .. all serial).

    .venv/bin/python tests/benchmarks/bench_walkthrough.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.media import write_face_png, write_face_video  # noqa: E402
from tests.readme_commands import REPO, commands  # noqa: E402

BIN = Path(sys.executable).parent


def make_videos(root: Path) -> None:
    for i in range(20):
        write_face_video(root / "my_videos" / "real" / f"clip_{i:02d}.mp4", n_frames=48, size=256, canvas=360, fps=25)
        method = "faceswap" if i % 2 else "lipsync"
        write_face_video(root / "my_videos" / "fake" / method / f"clip_{i:02d}.mp4", n_frames=48, size=240,
                         canvas=360, fps=25)
    write_face_video(root / "to_check" / "call.mp4", n_frames=48, size=256, canvas=360, fps=25)
    write_face_png(root / "to_check" / "photo.png", size=256)


def walkthrough() -> list[str]:
    """The seven commands of the README's walk-through, as written."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Your own videos"): text.index("## Installation notes")]
    return [c.code for c in commands(REPO / "README.md") if c.tools and c.text in section]


def run(code: str, cwd: Path, env: dict[str, str]) -> tuple[int, float, float, str]:
    start = time.monotonic()
    with open(cwd / "last.log", "w") as log:
        proc = subprocess.Popen(["bash", "-c", code], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    return (os.waitstatus_to_exitcode(status), time.monotonic() - start, usage.ru_utime + usage.ru_stime,
            (cwd / "last.log").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary folder)")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="dfd-walkthrough-"))
    root.mkdir(parents=True, exist_ok=True)
    make_videos(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "DFD_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1", COLUMNS="120")
    total_wall = total_cpu = 0.0
    checkpoint = None
    print(f"{'step':<12} {'wall s':>8} {'CPU s':>8}   (load average at start; folder {root})")
    for code in walkthrough():
        if "<best>.ckpt" in code:
            code = code.replace("outputs/train/<run>/checkpoints/<best>.ckpt", str(checkpoint))
        load = os.getloadavg()[0]
        rc, wall, cpu, out = run(code, root, env)
        if rc != 0:
            raise SystemExit(f"{code}: exit {rc}\n{out[-3000:]}")
        if code.startswith("dfd-train"):
            run_dir = max((root / "outputs" / "train").iterdir())
            checkpoint = json.loads((run_dir / "results.json").read_text())["checkpoint"]
        total_wall, total_cpu = total_wall + wall, total_cpu + cpu
        print(f"{code.split()[0]:<12} {wall:8.1f} {cpu:8.1f}   (load {load:.1f})")
    print(f"{'total':<12} {total_wall:8.1f} {total_cpu:8.1f}   -> on 2 idle cores {total_cpu / 2 / 60:.1f}-"
          f"{total_cpu / 60:.1f} min of wall time")


if __name__ == "__main__":
    main()
