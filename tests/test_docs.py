"""Every code block in the README and the docs runs as written.

The blocks of one page run in order, in one namespace and one temporary
working directory, as a reader following the page would run them, so a
tutorial can build on its earlier blocks. Python blocks run as they are.
Bash blocks made only of `discdiff ...` commands run through the CLI with
`cli_smoke.SMOKE` appended (a tiny model, a few samples), so the commands are
checked as written without a tutorial's minutes of training; other bash
blocks (installs, `torchrun`) and blocks fenced as `python no-run` (a hub
download) are shown only, and the page names what mirrors them in CI. A block
with a title (```yaml title="run.yaml"```) is also written to that file, so
the commands after it can read it.
"""

import re
import shlex
from pathlib import Path

import pytest
from cli_smoke import SMOKE

from discdiff.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r'```(\w+)(?: title="([^"]+)")?\n(.*?)```', re.DOTALL)


def _commands(code: str) -> list[list[str]]:
    """The `discdiff` command lines of a bash block, or none if it has other commands."""
    lines = [line for line in code.replace("\\\n", " ").splitlines() if line.strip()]
    lines = [line for line in lines if not line.lstrip().startswith("#")]
    if not lines or not all(line.startswith("discdiff ") for line in lines):
        return []
    return [shlex.split(line, comments=True)[1:] for line in lines]


def _pages():
    for page in PAGES:
        blocks = BLOCK.findall(page.read_text())
        if any(kind == "python" or _commands(code) for kind, _, code in blocks):
            yield pytest.param(blocks, id=str(page.relative_to(ROOT)))


PAGES_WITH_CODE = list(_pages())


def test_pages_have_code():
    assert sum(len(p.values[0]) for p in PAGES_WITH_CODE) >= 4


@pytest.mark.parametrize("blocks", PAGES_WITH_CODE)
def test_code_blocks_run(blocks, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__doc__"}
    for i, (kind, title, code) in enumerate(blocks):
        if title:
            Path(title).write_text(code)
        if kind == "python":
            exec(compile(code, f"<block {i}>", "exec"), namespace)
            continue
        for argv in _commands(code) if kind == "bash" else ():
            assert main([*argv, *SMOKE.get(argv[0], [])]) == 0, argv
