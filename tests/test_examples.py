"""The example scripts run (in their smoke modes)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script):
    subprocess.run([sys.executable, str(script), "--smoke"], check=True, cwd=ROOT, timeout=600)
