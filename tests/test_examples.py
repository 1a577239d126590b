"""The example scripts run (in their smoke modes) and the CLI explains bad options."""

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


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["quickstart", "--samples", "0"], "--samples"),
        (["quickstart", "--minutes", "-1"], "--minutes"),
        (["scale", "--model", "m", "--out", "o", "--steps", "0,4"], "--steps"),
        (["train", "--out", "o"], "--config"),
    ],
)
def test_bad_options_name_the_option(capsys, argv, option):
    with pytest.raises(SystemExit):
        main(argv)
    assert option in capsys.readouterr().err


@pytest.mark.parametrize("command", ["quickstart", "train", "scale"])
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: discdiff " + command in capsys.readouterr().out
