"""The shell blocks of README.md and docs/*.md, run as a first-time user would run them.

Every ```bash (or sh, shell) block is split into commands: one per line, a line ending in `\\`
continuing on the next; comment lines are skipped. Each document's commands run with bash, in order,
in one fresh folder (with `tasks/` and `trainers/` linked to the repository's, as in a clone), with
this interpreter's virtual environment first on PATH and no model hub (HF_HUB_OFFLINE=1). A command
passes when it exits 0 and the files it says it writes are there: the folder it names with --out,
-o, --output_path or `out=` (or, without one, the path it prints as `run directory:` / `report:`)
exists, is not empty and holds the files its command documents (`WRITES`). Exit codes alone are not
enough: lmms-eval exits 0 when the evaluation fails.

A command that cannot run here says so in a marker at the end of its trailing comment (users read the
comment; the test reads the marker):

    lmms-eval ...             # compare with ...; doc-test: skip (REASON)
    vopd-bench train ...      # CPU demo; doc-test: append steps=2 eval_limit=8

- `doc-test: skip (REASON)`: not run; REASON is required (it needs the Hub, a GPU, a server, several
  processes, your own files, or is too long for CI). Every command must either run or say why not.
- `doc-test: append ARGS`: run with ARGS appended: the same command, shortened for CI.

New blocks and commands are picked up automatically.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?:bash|sh|shell)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"doc-test:\s*(?P<what>\S+)\s*(?P<rest>.*?)\s*$")
# The files each command documents, as globs under the folder it writes (see its --help / the README).
WRITES: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("vopd-bench", "eval"): ("config.json", "results.json", "samples/*/full.jsonl"),
    ("vopd-bench", "gap"): ("config.json", "results.json", "samples/*/full.jsonl"),
    ("vopd-bench", "synth"): ("items.jsonl", "meta.json", "images/*.png"),
    ("vopd-bench", "train"): ("config.json", "curve.jsonl", "checkpoints/*/config.json"),
    ("vopd-bench", "report"): ("report.md", "figures/*.png", "tables/*.md"),
    ("vopd-bench", "export-lmms-eval"): ("vopd_*/utils.py", "vopd_*/vopd_*_full.yaml"),
    ("vopd-bench", "parity"): ("parity.json",),
    ("lmms-eval", None): ("**/*_results.json", "**/*_samples_*.jsonl"),
}
OUT_FLAGS = ("--out", "-o", "--output_path")
PRINTED = re.compile(r"^(?:run directory|report): (\S+)\s*$", re.M)
TIMEOUT_S = 300


@dataclass
class Command:
    """One command of a document: where it is, what runs, and its marker."""

    doc: str
    line: int
    code: str
    skip: str | None = None  # the reason, when marked `doc-test: skip (REASON)`
    append: str = ""

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def split_comment(line: str) -> tuple[str, str]:
    """(code, comment) of a shell line: the comment starts at the first `#` outside quotes that begins a word."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def commands(doc: Path) -> list[Command]:
    """The commands of every shell block of `doc`, with their markers (a malformed marker is an error)."""
    text = doc.read_text()
    name = str(doc.relative_to(ROOT)) if doc.is_relative_to(ROOT) else doc.name
    out = []
    for block in FENCE.finditer(text):
        first = text.count("\n", 0, block.start(1)) + 1
        lines = block.group(1).splitlines()
        i = 0
        while i < len(lines):
            start, parts = i, []
            while lines[i].rstrip().endswith("\\") and i + 1 < len(lines):
                parts.append(lines[i].rstrip()[:-1])
                i += 1
            parts.append(lines[i])
            i += 1
            code, comment = split_comment(" ".join(p.strip() for p in parts))
            if not code:
                continue
            cmd = Command(name, first + start, code)
            m = MARKER.search(comment)
            if m and m["what"] == "skip" and re.fullmatch(r"\(.+\)", m["rest"]):
                cmd.skip = m["rest"][1:-1]
            elif m and m["what"] == "append" and m["rest"]:
                cmd.append = m["rest"]
            elif m:
                raise ValueError(f"{cmd.where}: malformed marker {m.group(0)!r}: "
                                 "use `doc-test: skip (REASON)` or `doc-test: append ARGS`")
            out.append(cmd)
    return out


def written(argv: list[str], stdout: str) -> Path | None:
    """The folder (or file) a command says it writes: its --out-style argument, else the path it prints."""
    for i, a in enumerate(argv):
        if a in OUT_FLAGS and i + 1 < len(argv):
            return Path(argv[i + 1])
        if a.startswith(tuple(f"{f}=" for f in (*OUT_FLAGS, "out"))):  # --out=X, or a `train` override out=X
            return Path(a.split("=", 1)[1])
    m = PRINTED.findall(stdout)
    return Path(m[-1]) if m else None


def check_files(cmd: Command, argv: list[str], stdout: str, cwd: Path) -> None:
    """The folder the command writes exists, is not empty and holds the files its command documents."""
    while len(argv) > 1 and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):  # VAR=value before the program
        argv = argv[1:]
    prog = Path(argv[0]).name
    sub = next((a for a in argv[1:] if not a.startswith("-")), None) if prog == "vopd-bench" else None
    target = written(argv, stdout)
    if target is None:
        return
    path = cwd / target.expanduser()
    assert path.exists(), f"{cmd.where}: `{cmd.code}` exited 0 but wrote no {target}"
    if path.is_file():
        return
    assert any(path.iterdir()), f"{cmd.where}: `{cmd.code}` left {target} empty"
    for pattern in WRITES.get((prog, sub), ()):
        assert glob.glob(str(path / pattern), recursive=True), f"{cmd.where}: `{cmd.code}` wrote no {target}/{pattern}"


def run(cmd: Command, cwd: Path) -> float:
    """Run one command in `cwd` (bash, offline, this venv first on PATH); returns its wall time."""
    code = f"{cmd.code} {cmd.append}".strip()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    p = subprocess.run(["bash", "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"{cmd.where}: `{code}` exited {p.returncode}:\n{out[-3000:]}"
    check_files(cmd, shlex.split(code), out, cwd)
    return time.perf_counter() - t0


def _with_blocks() -> list[Path]:
    return [d for d in DOCS if FENCE.search(d.read_text())]


def test_every_doc_command_runs_or_says_why_not(tmp_path: Path) -> None:
    """Markers are well formed (a command runs, or says why not), and the parser finds what it should."""
    cmds = [c for doc in _with_blocks() for c in commands(doc)]  # raises on a malformed marker
    assert any(c.doc == "README.md" and c.skip is None for c in cmds)
    assert any(c.doc == "docs/lmms_eval.md" and c.code.startswith("lmms-eval ") and c.skip is None for c in cmds)
    doc = tmp_path / "doc.md"
    doc.write_text("x\n```bash\na --b 'c # d' \\\n   --e f   # g; doc-test: append --limit 2\n# note\n"
                   "h  # doc-test: skip (why)\n```\n")
    assert [(c.line, c.code, c.append, c.skip) for c in commands(doc)] == [
        (3, "a --b 'c # d' --e f", "--limit 2", None), (6, "h", "", "why")]
    doc.write_text("```bash\nmake demo   # the demo; doc-test: skip\n```\n")
    with pytest.raises(ValueError, match="doc.md:2: malformed marker"):  # a skip must say why
        commands(doc)


@pytest.mark.slow
@pytest.mark.parametrize("doc", _with_blocks(), ids=lambda d: d.name)
def test_doc_commands_run(doc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for link in ("tasks", "trainers", "examples"):
        (tmp_path / link).symlink_to(ROOT / link)
    times = []
    for cmd in commands(doc):
        if cmd.skip is None:
            times.append((cmd.where, run(cmd, tmp_path)))
    with capsys.disabled():
        print(f"\n{doc.name}: " + ", ".join(f"{w} {t:.0f}s" for w, t in times))
