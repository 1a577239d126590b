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
        config = RunConfig.load(STORED / name, complete=True).to_dict()
        # 0.1.0's boolean `sampler.cache` (reuse x_theta) is now `sampler.reuse`;
        # `sampler.cache` names the block cache, off by default.
        assert config["sampler"].pop("reuse") == written["sampler"].pop("cache") is True
        assert config["sampler"].pop("cache") is None
        assert config == written, name
    assert RunConfig.load(STORED / "default-config.yaml").to_dict() == RunConfig().to_dict()


def test_a_stored_run_loads_and_samples_the_same_tokens_again(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(STORED, run)
    loaded = load_run(run)
    assert loaded.config.sampler.posterior.schedule.eta == 0.02
    stored = json.loads((run / "samples" / LABEL / "samples.json").read_text())

    argv = ["sample", "--run", str(run), "--quiet", "sampler.samples=4", "sampler.batch_size=4"]
    argv += ["sampler.steps=8", "sampler.posterior={name: cap, eta: 0.02}", "sampler.top_p=0.9"]
    assert main(argv) == 0
    # The settings gained `reuse` and `cache`, so they land beside the stored folder.
    (folder,) = (f for f in (run / "samples").glob("cap-eta0.02-T8-p0.9-s0-*") if f.name != LABEL)
    again = json.loads((folder / "samples.json").read_text())
    assert again["tokens"] == stored["tokens"]
    assert again["sampler"]["reuse"] == stored["sampler"]["cache"] is True

    assert main(["eval", "--run", str(run), "--sequences", "8"]) == 0
    evaluated = json.loads((run / "eval.json").read_text())["samples"]
    assert {LABEL, folder.name} <= set(evaluated)
