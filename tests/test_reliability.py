"""Reliability: fuzzed configs and overrides, damaged run files, a full disk, concurrent sampling.

Issue 19's checks that the library fails cleanly: every bad input is a
`ConfigError` naming a key (never a traceback), a damaged file is a one-line
error naming it with nothing overwritten, a failed checkpoint write leaves
the previous checkpoint loadable, and two `discdiff sample` processes never
mix their files. (Killing `discdiff train` at random moments is tested with
the resume tests.)
"""

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from discdiff.cli import main
from discdiff.config import NOISE_SCHEDULES, POSTERIORS, ConfigError, RunConfig
from discdiff.models.dit import DiTConfig
from discdiff.training.trainer import TrainConfig

# -- fuzzing the config loader and the overrides ---------------------------------------

SECTIONS = [f.name for f in dataclasses.fields(RunConfig)]
KEYS = {
    "data": ["kind", "length", "seed", "path", "val_fraction"],
    "model": [f.name for f in dataclasses.fields(DiTConfig)],
    "process": ["schedule"],
    "train": [f.name for f in dataclasses.fields(TrainConfig)],
    "sampler": [
        "posterior", "steps", "samples", "batch_size", "temperature", "top_k", "top_p",
        "float64", "noise_removal", "cache", "t_min", "seed",
    ],
}  # fmt: skip
NAMES = [*NOISE_SCHEDULES, *POSTERIORS, "none", "synthetic", "text"]
ARGUMENTS = ["name", "eta", "eps", "t_on", "t_off", "alpha_on", "base", "A", "tokens_per_step"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-2.0, 2.0),
    st.sampled_from(NAMES),
    st.text(max_size=8),
)
nested = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(ARGUMENTS) | st.text(max_size=4), inner, max_size=4),
    ),
    max_leaves=8,
)
values = st.one_of(scalars, st.integers(0, 70), st.floats(0.0, 1.0), nested)


@st.composite
def configs(draw):
    """Mostly well-formed section/key structure with arbitrary values, sometimes junk."""
    config = {}
    sections = draw(st.lists(st.sampled_from(SECTIONS), max_size=5, unique=True))
    sections += ["junk"] if draw(st.integers(0, 19)) == 0 else []
    for section in sections:
        if draw(st.integers(0, 9)) == 0:
            config[section] = draw(values)
            continue
        known = KEYS.get(section, ["x"])
        keys = draw(st.lists(st.sampled_from(known), max_size=4, unique=True))
        keys += ["typo"] if draw(st.integers(0, 19)) == 0 else []
        config[section] = {key: draw(values) for key in keys}
    return config


def check_names_a_key(error: ConfigError, given: dict) -> None:
    """The error names a key of the input (a section, a dotted path in it) or the whole config."""
    assert str(error).startswith(f"{error.key}: ") and error.key
    root = error.key.split(".")[0].split("[")[0]
    assert root in {*SECTIONS, *map(str, given), "<config>"}, error.key


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_fuzzed_configs_load_or_name_a_key(config):
    try:
        loaded = RunConfig.from_dict(config)
    except ConfigError as error:
        check_names_a_key(error, config)
        return
    assert RunConfig.from_dict(loaded.to_dict()).to_dict() == loaded.to_dict()


dotted = st.one_of(
    st.sampled_from(SECTIONS).flatmap(lambda s: st.sampled_from(KEYS[s]).map(lambda k: f"{s}.{k}")),
    st.sampled_from(["sampler.posterior.eta", "process.schedule.eps", "sampler.posterior.base"]),
    st.text(max_size=12),
)
yaml_values = st.one_of(
    st.sampled_from(["null", "1e-3", "[0.9, 0.98]", "{name: cap, eta: 0.01}", "{", "'", "- a"]),
    st.sampled_from(NAMES),
    st.integers(-5, 10**6).map(str),
    st.floats(allow_nan=True).map(str),
    st.text(max_size=10),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(dotted, st.sampled_from(["=", ""]), yaml_values), max_size=3))
def test_fuzzed_overrides_load_or_name_a_key(parts):
    overrides = [key + sep + value for key, sep, value in parts]
    try:
        RunConfig().replace(overrides)
    except ConfigError as error:
        assert str(error).startswith(f"{error.key}: ") and error.key
        named = {"<empty override>", *SECTIONS}
        assert any(error.key in o for o in overrides) or error.key.split(".")[0] in named


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(dotted, yaml_values), min_size=1, max_size=2))
def test_fuzzed_cli_overrides_never_end_in_a_traceback(tmp_path_factory, parts):
    out = tmp_path_factory.mktemp("dry")
    argv = ["train", "--config", "synthetic", "--out", str(out), "--dry-run"]
    try:
        code = main([*argv, *(f"{key}={value}" for key, value in parts)])
    except SystemExit as exit_info:  # argparse or a ConfigError: exit 2 with a message
        assert exit_info.code == 2
    else:
        assert code == 0
    assert not any(out.iterdir())  # a dry run writes nothing
