"""A hostile model folder: its code never runs, whatever it names and whatever stdin answers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from llm_fixtures import write_tiny_llada

from discdiff.data.text import HFTokenizer
from discdiff.models.hf import HuggingFaceDenoiser
from discdiff.tokenizer_loader import RemoteCodeError, load_tokenizer

CODE_FILES = ("tokenization_llada.py", "configuration_llada.py", "modeling_llada.py")


def hostile_folder(root: Path, tokenizer_class: str) -> tuple[Path, Path]:
    """A tiny LLaDA whose tokenizer exists only as code that leaves a marker file when imported."""
    directory = write_tiny_llada(root / "model")
    marker = root / "code-ran"
    for name in CODE_FILES:
        (directory / name).write_text(
            f"open({str(marker)!r}, 'w').write('ran')\n"
            "class LLaDATokenizer:\n    pass\nclass LLaDAConfig:\n    pass\n"
        )
    (directory / "tokenizer.json").unlink()
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = tokenizer_class
    config["auto_map"] = {"AutoTokenizer": ["tokenization_llada.LLaDATokenizer", None]}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    model_config = json.loads((directory / "config.json").read_text())
    model_config["auto_map"] = {"AutoConfig": "configuration_llada.LLaDAConfig"}
    (directory / "config.json").write_text(json.dumps(model_config))
    return directory, marker


@pytest.mark.parametrize("tokenizer_class", ["AutoTokenizer", "LLaDATokenizer", "AutoConfig"])
def test_a_tokenizer_that_exists_only_as_folder_code_is_refused(
    tmp_path: Path, tokenizer_class: str
) -> None:
    directory, marker = hostile_folder(tmp_path, tokenizer_class)
    for load in (load_tokenizer, HFTokenizer.from_pretrained, HuggingFaceDenoiser.from_pretrained):
        with pytest.raises(RemoteCodeError, match="runs no code from a model folder"):
            load(directory)
    assert not marker.exists()


def test_the_cli_runs_no_folder_code_with_stdin_answering_yes(tmp_path: Path) -> None:
    """`discdiff sample --model DIR` with stdin open and answering `y` to any question."""
    directory, marker = hostile_folder(tmp_path, "AutoTokenizer")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = ["sample", "--model", str(directory), "--prompt", "the cat", "--length", "2"]
    result = subprocess.run(
        [sys.executable, "-m", "discdiff.cli", *command, "--out", str(tmp_path / "out"), "--quiet"],
        input="y\n" * 50,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "runs no code from a model folder" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()
    # The code is live: importing it leaves the marker.
    subprocess.run([sys.executable, str(directory / "tokenization_llada.py")], check=True)
    assert marker.exists()


def test_trust_remote_code_cannot_be_asked_for(tmp_path: Path) -> None:
    directory = write_tiny_llada(tmp_path / "model")
    with pytest.raises(ValueError, match="never runs a checkpoint's code"):
        HuggingFaceDenoiser.from_pretrained(directory, trust_remote_code=True)
