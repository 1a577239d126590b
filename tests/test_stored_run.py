"""A run folder and a config written by discdiff 0.1.0 (before the registries) still load and work.

`tests/data/stored-run/` was written by version 0.1.0's own commands on the
built-in synthetic data (a 1-block DiT trained 4 steps, then `sample` with
`sampler.posterior={name: cap, eta: 0.02} sampler.top_p=0.9 sampler.steps=8
sampler.samples=4`), and `default-config.yaml` by its `RunConfig().dump`.
"""

import json
import shutil
from pathlib import Path

import yaml

from discdiff.cli import main
from discdiff.config import RunConfig
from discdiff.runs import load_run

STORED = Path(__file__).parent / "data" / "stored-run"
LABEL = "cap-eta0.02-T8-p0.9-s0-56e17e2d"


def test_a_stored_config_loads_and_writes_back_the_same_form():
    for name in ("default-config.yaml", "run.yaml"):
        written = yaml.safe_load((STORED / name).read_text())
        config = RunConfig.load(STORED / name, complete=True)
        assert config.to_dict() == written, name
    assert RunConfig.load(STORED / "default-config.yaml").to_dict() == RunConfig().to_dict()


def test_a_stored_run_loads_and_samples_the_same_tokens_into_the_same_folder(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(STORED, run)
    loaded = load_run(run)
    assert loaded.config.sampler.posterior.schedule.eta == 0.02
    stored = json.loads((run / "samples" / LABEL / "samples.json").read_text())

    (run / "samples" / LABEL / "samples.json").unlink()  # draw them again, same settings
    argv = ["sample", "--run", str(run), "--quiet", "sampler.samples=4", "sampler.batch_size=4"]
    argv += ["sampler.steps=8", "sampler.posterior={name: cap, eta: 0.02}", "sampler.top_p=0.9"]
    assert main(argv) == 0
    again = json.loads((run / "samples" / LABEL / "samples.json").read_text())
    assert again["sampler"] == stored["sampler"]
    assert again["tokens"] == stored["tokens"]

    assert main(["eval", "--run", str(run), "--sequences", "8"]) == 0
    assert LABEL in json.loads((run / "eval.json").read_text())["samples"]
