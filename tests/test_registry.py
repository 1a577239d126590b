"""Extension points register where they are defined: user classes work by name from YAML and CLI."""

import json

import pytest
import torch
from cli_smoke import TINY_RUN

import discdiff
from discdiff import (
    CapSchedule,
    MaskingProcess,
    NoiseSchedule,
    RemaskingSchedule,
    RemaskPosterior,
    sigma_max,
)
from discdiff.cli import main
from discdiff.config import ConfigError, RunConfig, choices
from discdiff.objectives import ContinuousNELBO
from discdiff.registry import RegistryError, entries, lookup, name_of
from discdiff.runs import load_run


@discdiff.register("remasking", "test-half-cap")
class HalfCap(RemaskingSchedule):
    """Half of the largest valid remasking probability."""

    def _sigma(self, t, s, alpha_t, alpha_s, confidence):
        return 0.5 * sigma_max(alpha_t, alpha_s)


CALLS = {"loss": 0}


@discdiff.register("objective", "test-counted-nelbo")
class CountedNELBO(ContinuousNELBO):
    """MDLM's NELBO, counting its evaluations."""

    def loss(self, *args, **kwargs):
        CALLS["loss"] += 1
        return super().loss(*args, **kwargs)


@discdiff.register("process", "test-masking")
class OwnMasking(MaskingProcess):
    """The masking process under another name."""


@discdiff.register("schedule", "test-square")
class Square(NoiseSchedule):
    r"""$\alpha_t = 1 - t^2$."""

    def _alpha(self, t):
        return 1.0 - t**2

    def _alpha_prime(self, t):
        return -2.0 * t

    def _inverse(self, alpha):
        return (1.0 - alpha).sqrt()


def test_a_user_remasking_schedule_is_a_posterior_name_in_yaml():
    config = RunConfig.from_dict({"sampler": {"posterior": "test-half-cap"}})
    posterior = config.sampler.posterior
    assert type(posterior) is RemaskPosterior and isinstance(posterior.schedule, HalfCap)
    assert config.to_dict()["sampler"]["posterior"] == {"name": "test-half-cap"}
    assert "test-half-cap" in choices("strategy") and "test-half-cap" in choices("remasking")
    assert RunConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


def test_a_user_process_and_schedule_build_from_yaml():
    values = {"process": {"name": "test-masking", "schedule": "test-square"}}
    process = RunConfig.from_dict(values).process.build(5)
    assert type(process) is OwnMasking and isinstance(process.schedule, Square)
    assert float(process.schedule.alpha(torch.tensor(0.5))) == pytest.approx(0.75)
    with pytest.raises(ConfigError, match=r"process\.name"):
        RunConfig.from_dict({"process": {"name": "test-nonesuch"}})


def test_a_user_objective_and_posterior_run_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    before = CALLS["loss"]
    argv = ["train", "--config", "synthetic", "--out", str(run), *TINY_RUN]
    assert main([*argv, "train.objective=test-counted-nelbo"]) == 0
    assert CALLS["loss"] > before  # the registered loss trained the model
    assert load_run(run).config.train.objective == "test-counted-nelbo"

    argv = ["sample", "--run", str(run), "--quiet", "sampler.posterior=test-half-cap"]
    assert main([*argv, "sampler.samples=2", "sampler.steps=4"]) == 0
    (folder,) = (run / "samples").glob("test-half-cap-T4-*")
    record = json.loads((folder / "samples.json").read_text())
    assert record["sampler"]["posterior"] == {"name": "test-half-cap"}
    assert len(record["tokens"]) == 2


def test_a_name_registered_twice_is_a_named_error():
    with pytest.raises(RegistryError, match="remasking 'cap' is already registered"):
        discdiff.register("remasking", "cap")(HalfCap)
    with pytest.raises(RegistryError, match="already registered"):
        # a remasking name is also a strategy name: the two kinds share names
        discdiff.register("remasking", "maskgit")(HalfCap)
    assert lookup("remasking", "cap") is CapSchedule  # the first registration stays


def test_bad_registrations_are_named_errors():
    with pytest.raises(RegistryError, match="`kind` must be one of"):
        discdiff.register("sampler", "x")
    with pytest.raises(RegistryError, match="`name` must be a word"):
        discdiff.register("remasking", "a.b")
    with pytest.raises(RegistryError, match="is not a RemaskingSchedule"):
        discdiff.register("remasking", "test-not-a-schedule")(Square)
    with pytest.raises(RegistryError, match="unknown remasking 'nonesuch'; registered: none, cap"):
        lookup("remasking", "nonesuch")


def test_every_library_name_is_registered_on_its_class():
    assert name_of("strategy", discdiff.MaskGITDecoder) == "maskgit"
    assert name_of("objective", discdiff.baseline_objectives.ScoreEntropy) == "score-entropy"
    assert set(entries("process")) >= {"masking", "uniform"}
    assert set(entries("language")) >= {"synthetic", "hmm", "pcfg"}
    assert set(entries("count")) >= {"schedule", "even", "dream", "threshold"}
