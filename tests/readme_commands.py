"""The command lines the documentation shows, as data: extracted from README.md and experiments/*/README.md.

Used by tests/test_readme_commands.py (which runs them). Kept apart so the parsing rules are testable on their own
and so whoever documents a command can check how it is read:
``.venv/bin/python -m tests.readme_commands`` lists every documented dfd-* command with its marker.

Rules
-----
* Commands are the lines of ```` ```bash ```` blocks that invoke a ``dfd-*`` tool; a line ending in ``\\``
  continues on the next. Text after an unquoted ``#`` is a comment.
* Markers, as the comment's first word (``# GPU``, ``# GPU: bf16 on one GPU``) or after the last ``#`` on the line
  (``dfd-train trainer=gpu   # bf16-mixed  # GPU``):
  ``GPU``   the command needs CUDA GPUs: without one it must stop at once with dfd's one-line "no GPU" error;
  ``SLURM`` the command submits to SLURM: without sbatch/srun it must stop at once with dfd's one-line error.
* Shell set-up around a command is kept (``mkdir``/``cp`` lines, ``for`` loops, ``&&`` chains); the install steps
  of the quick start (``python3 -m venv``, ``pip install``) are dropped: CI's ``.ci/run`` has just done them.
* What a command prints: a ```` ```text ```` block after a ```` ```bash ```` block (before the next ```bash block or
  heading) shows lines the block's last command prints (``Command.shows``). Each non-empty line must appear in
  its output, ``…`` standing for any text and runs of blanks for any blanks (tables keep their alignment in the
  README and match whatever widths the numbers take).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKERS = ("GPU", "SLURM")
#: Set-up lines that are run (in the fixture folder) before the commands that follow them.
SETUP_WORDS = ("mkdir", "cp")
#: `&&` segments of a documented line that are not run, with the reason.
DROPPED_SEGMENTS = {
    r"^python3? -m venv\b": "installing: CI's .ci/run creates the venv and installs dfd before the tests",
    r"\bpip install\b": "installing: CI's .ci/run creates the venv and installs dfd before the tests",
}
TOOL = re.compile(r"(?<![\w/.-])(?:\.venv/bin/)?(dfd-[a-z][a-z0-9-]*)")


def documents() -> list[Path]:
    """The documentation whose commands must run: the README and every study's README."""
    return [REPO / "README.md", *sorted((REPO / "experiments").glob("**/README.md"))]


@dataclass
class Command:
    """One documented command line (continuations joined)."""

    doc: str
    line: int
    text: str  # as written (continuations joined), comment included
    code: str  # the shell code, comment removed, install segments dropped
    comment: str = ""
    marker: str | None = None
    tools: list[str] = field(default_factory=list)
    setup: bool = False  # a set-up line (mkdir/cp) with no dfd-* tool
    shows: list[str] = field(default_factory=list)  # lines the README shows it printing (see the module docstring)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def split_comment(line: str) -> tuple[str, str]:
    """(code, comment) of a shell line: the comment starts at the first unquoted ``#`` after a blank."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def marker_of(comment: str) -> str | None:
    """``GPU``/``SLURM`` when the comment starts with it or its last ``#`` part is it."""
    if not comment:
        return None
    first = re.match(r"(\w+)\s*(?::|$)", comment)
    last = comment.rsplit("#", 1)[-1].strip()
    for word in (first.group(1) if first else None, last):
        if word in MARKERS:
            return word
    return None


def drop_install(code: str) -> str:
    """The code without the install segments of an ``&&`` chain."""
    parts = [p.strip() for p in code.split("&&")]
    kept = [p for p in parts if not any(re.search(rx, p) for rx in DROPPED_SEGMENTS)]
    return " && ".join(kept)


def fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of every fenced block, and ``("#", n, [heading])`` for every heading
    outside them (a heading ends what a ```text block can show)."""
    blocks, current, start, lang = [], None, 0, ""
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if current is None and stripped.startswith("```"):
            current, start, lang = [], n + 1, stripped[3:].strip()
        elif current is not None and stripped.startswith("```"):
            blocks.append((lang, start, current))
            current = None
        elif current is not None:
            current.append(line)
        elif line.startswith("#"):
            blocks.append(("#", n, [line]))
    return blocks


def bash_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of every ```bash block."""
    return [(start, lines) for lang, start, lines in fenced_blocks(text) if lang == "bash"]


def shown_output(text: str) -> dict[int, list[str]]:
    """{first line of a ```bash block: the non-empty lines of the ```text block that follows it}."""
    shown: dict[int, list[str]] = {}
    last_bash = None
    for lang, start, lines in fenced_blocks(text):
        if lang == "bash":
            last_bash = start
        elif lang == "#":
            last_bash = None
        elif lang == "text" and last_bash is not None:
            shown[last_bash] = [ln for ln in lines if ln.strip()]
            last_bash = None
    return shown


def shown_pattern(line: str) -> re.Pattern:
    """A shown output line as a regex: ``…`` is any text (blanks are collapsed here and in the output)."""
    return re.compile(".*".join(re.escape(part) for part in " ".join(line.split()).split("…")))


def missing_output(shows: list[str], output: str) -> list[str]:
    """The shown lines that appear on no line of ``output``."""
    lines = [" ".join(ln.split()) for ln in output.splitlines()]
    return [s for s in shows if not any(shown_pattern(s).search(ln) for ln in lines)]


def commands(path: Path) -> list[Command]:
    """Every command line (dfd-* invocations and the set-up lines around them) of one document."""
    doc = path.relative_to(REPO).as_posix()
    out: list[Command] = []
    source = path.read_text()
    shown = shown_output(source)
    for start, lines in bash_blocks(source):
        block_start = len(out)
        i = 0
        while i < len(lines):
            first = i
            code_parts, comment = [], ""
            while True:
                code, comment = split_comment(lines[i])
                if code.endswith("\\") and i + 1 < len(lines):
                    code_parts.append(code[:-1].strip())
                    i += 1
                    continue
                code_parts.append(code.strip())
                break
            i += 1
            code = " ".join(p for p in code_parts if p)
            if not code:
                continue
            text = " ".join(ln.strip().rstrip("\\").strip() for ln in lines[first:i])
            tools = TOOL.findall(code)
            setup = not tools and code.split()[0] in SETUP_WORDS
            if tools or setup:
                out.append(Command(doc, start + first, text, drop_install(code), comment, marker_of(comment),
                                   tools, setup))
        if start in shown and len(out) > block_start:
            out[-1].shows = shown[start]
    return out


def all_commands() -> list[Command]:
    return [c for doc in documents() for c in commands(doc)]


if __name__ == "__main__":
    for c in all_commands():
        print(f"{c.where:42s} {c.marker or '-':6s} {c.code}")
