"""The example scripts and the command line run (in their smoke modes)."""

import subprocess
import sys
from pathlib import Path

import pytest

from discdiff.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script):
    subprocess.run([sys.executable, str(script), "--smoke"], check=True, cwd=ROOT, timeout=600)


def test_quickstart_prints_the_table(capsys):
    assert main(["quickstart", "--samples", "500", "--steps", "1,8"]) == 0
    out = capsys.readouterr().out
    assert "MDLM" in out and "T=8" in out and "floor" in out


def test_bad_options_name_the_option(capsys):
    with pytest.raises(SystemExit):
        main(["quickstart", "--steps", "0,4"])
    assert "--steps" in capsys.readouterr().err
