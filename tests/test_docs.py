"""Every Python block in the README and the docs runs as written.

The blocks of one page run in order in one namespace, as a reader pasting them
into a session would run them, so a tutorial can build on its earlier blocks.
A block fenced as ```python no-run``` is shown but not executed (used for
commands that need a GPU or a network); the page says what mirrors it in CI.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _pages():
    for page in PAGES:
        blocks = BLOCK.findall(page.read_text())
        if blocks:
            yield pytest.param(blocks, id=str(page.relative_to(ROOT)))


PAGES_WITH_CODE = list(_pages())


def test_pages_have_code():
    assert sum(len(p.values[0]) for p in PAGES_WITH_CODE) >= 4


@pytest.mark.parametrize("blocks", PAGES_WITH_CODE)
def test_code_blocks_run(blocks, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__doc__"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"<block {i}>", "exec"), namespace)
