"""Reliability: fuzzed configs and overrides, damaged run files, a full disk, concurrent sampling.

Issue 19's checks that the library fails cleanly: every bad input is a
`ConfigError` naming a key (never a traceback), a damaged file is a one-line
error naming it with nothing overwritten, a failed checkpoint write leaves
the previous checkpoint loadable, and two `discdiff sample` processes never
mix their files. (Killing `discdiff train` at random moments is tested with
the resume tests.)
"""

import dataclasses
import errno
import json
import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from cli_smoke import TINY_RUN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from discdiff._io import locked
from discdiff.cli import main
from discdiff.config import (
    NOISE_SCHEDULES,
    POSTERIORS,
    ConfigError,
    DataSpec,
    ProcessSpec,
    RunConfig,
    SamplerSpec,
)
from discdiff.models import checkpoints as model_files
from discdiff.models.dit import DiT, DiTConfig
from discdiff.training import checkpoints
from discdiff.training.checkpoints import CheckpointStore
from discdiff.training.trainer import TrainConfig

ROOT = Path(__file__).resolve().parent.parent

# -- fuzzing the config loader and the overrides ---------------------------------------

SECTIONS = [f.name for f in dataclasses.fields(RunConfig)]
KEYS = {
    name: [f.name for f in dataclasses.fields(spec)]
    for name, spec in (
        ("data", DataSpec),
        ("model", DiTConfig),
        ("process", ProcessSpec),
        ("train", TrainConfig),
        ("sampler", SamplerSpec),
    )
}
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


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.text(max_size=60),
        st.sampled_from(["data: [", "sampler: {steps: }", "train:\n\tsteps: 3", "- 1\n- 2", "{}"]),
        st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    )
)
def test_fuzzed_yaml_files_load_or_name_a_key(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "c.yaml"
    path.write_text(text)
    try:
        RunConfig.load(path)
    except ConfigError as error:
        assert str(error).startswith(f"{error.key}: ") and error.key
        assert str(path) in str(error)  # every error from a file names the file


# -- damaged files -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run with its model and a checkpoint (step 4)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--config", "synthetic", "--out", str(run), *TINY_RUN]) == 0
    return run


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


DAMAGES = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "garbage": lambda data: bytes(random.Random(0).getrandbits(8) for _ in range(len(data))),
    "flipped": lambda data: data[:8] + bytes(b ^ 0xFF for b in data[8:64]) + data[64:],
}
RESUME = ["train", "--config", "synthetic", *TINY_RUN]
FILES = {  # the damaged file and the command that has to read it
    "model/model.safetensors": ["sample", "--quiet"],
    "model/config.json": ["sample", "--quiet"],
    "run.yaml": ["sample", "--quiet"],
    "checkpoints/step-00000004/state.pt": RESUME,
    "checkpoints/step-00000004/model.safetensors": RESUME,
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("name", sorted(FILES))
def test_a_damaged_file_is_named_in_one_line_and_nothing_is_overwritten(
    trained, tmp_path, capsys, name, damage
):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    path = run / name
    path.write_bytes(DAMAGES[damage](path.read_bytes()))
    before = snapshot(run)
    command, *rest = FILES[name]
    flag = "--run" if command == "sample" else "--out"
    with pytest.raises(SystemExit) as exit_info:
        main([command, *rest[:3], flag, str(run), *rest[3:]])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err, err
    assert snapshot(run) == before


# -- a full disk -------------------------------------------------------------------------


def full_disk(write):
    """A writer that puts half its bytes down and then fails as a full disk does."""

    def failing(*args, **kwargs):
        path = next(a for a in args if isinstance(a, str | os.PathLike))
        write(*args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    return failing


@pytest.mark.parametrize("failing", ["model.safetensors", "state.pt", "latest"])
def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, failing):
    store = CheckpointStore(tmp_path / "checkpoints")
    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    store.save(1, weights, {"w": weights["w"] + 1}, {"step": 1, "rng": torch.get_rng_state()})
    before = snapshot(tmp_path)
    if failing == "model.safetensors":
        monkeypatch.setattr(checkpoints, "save_file", full_disk(checkpoints.save_file))
    elif failing == "state.pt":
        monkeypatch.setattr(checkpoints.torch, "save", full_disk(torch.save))
    else:
        write = checkpoints.atomic_write
        monkeypatch.setattr(checkpoints, "atomic_write", lambda path, w: write(path, full_disk(w)))
    with pytest.raises(OSError, match="No space left"):
        store.save(2, {"w": torch.zeros(2, 3)}, None, {"step": 2})
    monkeypatch.undo()
    if failing != "latest":  # the new checkpoint never appeared
        assert snapshot(tmp_path) == before
    assert not list(store.directory.glob(".*tmp*"))  # no partial files left behind
    assert store.latest().name == "step-00000001"
    loaded, ema, state = CheckpointStore(tmp_path / "checkpoints").load_latest()
    assert torch.equal(loaded["w"], weights["w"]) and torch.equal(ema["w"], weights["w"] + 1)
    assert state["step"] == 1


def test_a_full_disk_while_saving_a_model_keeps_the_previous_one(tmp_path, monkeypatch):
    net = DiT(DiTConfig.micro(vocab_size=5))
    net.save_pretrained(tmp_path / "model")
    before = snapshot(tmp_path)
    monkeypatch.setattr(model_files, "save_file", full_disk(model_files.save_file))
    with torch.no_grad():
        next(net.parameters()).add_(1.0)
    with pytest.raises(OSError, match="No space left"):
        net.save_pretrained(tmp_path / "model")
    assert snapshot(tmp_path) == before
    assert DiT.from_pretrained(tmp_path / "model").config == net.config


# -- two `discdiff sample` processes at once -------------------------------------------------


def sample_concurrently(cwd: Path, *overrides: str) -> list[subprocess.CompletedProcess]:
    """Start one `discdiff sample --run synthetic OVERRIDE` per override at once; wait for all."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "discdiff.cli", "sample", "--run", "synthetic", "--quiet"]
    small = ["sampler.samples=3", "sampler.batch_size=1", "sampler.steps=8"]
    processes = [
        subprocess.Popen([*base, *small, o], cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for o in overrides
    ]  # fmt: skip
    return [subprocess.CompletedProcess(p.args, p.wait(120), *p.communicate()) for p in processes]


def check_one_writer(folder: Path) -> dict:
    """The three files of a sample folder come from one process."""
    record = json.loads((folder / "samples.json").read_text())
    assert json.loads((folder / "metrics.json").read_text()) == record["metrics"]
    lines = (folder / "samples.txt").read_text().splitlines()
    assert lines == [t.replace("\n", "\\n") for t in record["texts"]]
    return record


@pytest.mark.slow
def test_two_sample_processes_on_one_run_keep_both_results(tmp_path):
    cap = "sampler.posterior={{name: cap, eta: {}}}"
    # Different settings (issue 19's example: cap at eta 0.01 and 0.02): two folders.
    done = sample_concurrently(tmp_path, cap.format(0.01), cap.format(0.02))
    assert all(d.returncode == 0 for d in done), [d.stderr for d in done]
    folders = sorted((tmp_path / "runs" / "synthetic" / "samples").iterdir())
    assert len(folders) == 2
    etas = {check_one_writer(f)["sampler"]["posterior"]["eta"] for f in folders}
    assert etas == {0.01, 0.02}
    # The same settings: one folder whose files all come from one of the two processes
    # (their timings differ, so a mix would show in metrics.json against samples.json).
    done = sample_concurrently(tmp_path, cap.format(0.03), cap.format(0.03))
    assert all(d.returncode == 0 for d in done), [d.stderr for d in done]
    (folder,) = (tmp_path / "runs" / "synthetic" / "samples").glob("cap-eta0.03-*")
    record = check_one_writer(folder)
    assert len(record["tokens"]) == 3
    written = [d.stdout.splitlines()[0] for d in done]
    assert json.dumps(record["metrics"]) in written  # one process's metrics, exactly


def test_the_folder_lock_makes_writers_take_turns(tmp_path):
    order, holding, release = [], threading.Event(), threading.Event()

    def first():
        with locked(tmp_path / "folder"):
            order.append("first in")
            holding.set()
            release.wait(30)
            order.append("first out")

    def second():
        holding.wait(30)
        with locked(tmp_path / "folder"):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    holding.wait(30)
    threads[1].join(0.3)
    assert threads[1].is_alive() and order == ["first in"]  # waiting for the lock
    release.set()
    for thread in threads:
        thread.join(30)
    assert order == ["first in", "first out", "second in"]
