"""Reliability: fuzzed configs and overrides, damaged run files, a full disk, concurrent writers.

Checks that the library fails cleanly: every bad input is a `ConfigError`
naming a key (never a traceback), a damaged file is a one-line error naming
it with nothing overwritten, a failed checkpoint write leaves the previous
checkpoint loadable, two `discdiff sample` processes never mix their files,
and two `discdiff train` processes never share a run folder. The second part
reproduces each finding of an independent probe (bounded config input,
ranges checked at parse time, named errors for every CLI path, weights
checksums, the smaller ones) and fuzzes every config key with bad values.
(Killing `discdiff train` at random moments is tested with the resume tests
and measured by `benchmarks/kill_resume.py`.)
"""

import dataclasses
import errno
import json
import os
import random
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
import typing
from pathlib import Path

import pytest
import torch
from cli_smoke import TINY_RUN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import SafetensorError

from discdiff._io import DiskFullError, locked, sha256, writing
from discdiff.cli import main
from discdiff.config import (
    RANGES,
    ConfigError,
    DataSpec,
    ProcessSpec,
    RunConfig,
    SamplerSpec,
    choices,
)
from discdiff.models import pretrained as model_files
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
NAMES = [*choices("schedule"), *choices("strategy"), "none", "synthetic", "text"]
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
    with pytest.raises(DiskFullError, match=f"writing .*{failing}; kept: the previous checkpoint"):
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
    with pytest.raises(DiskFullError, match=r"model\.safetensors; kept: the previous version"):
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


# == the second hardening pass: one test per finding ========================================


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    """`discdiff ARGV` in this process: its exit code and its stderr."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capsys.readouterr().err


def one_line_error(err: str, *named: str) -> None:
    """A single short line that names every string in `named`."""
    assert err.count("\n") == 1 and len(err) < 1000, err
    assert "Traceback" not in err
    for text in named:
        assert text in err, (text, err)


# -- finding 2: one writer per run folder ------------------------------------------------


def test_a_second_writer_of_a_run_folder_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    with writing(out):  # as another `discdiff train` would hold it
        code, err = run_cli(capsys, ["train", "--config", "synthetic", "--out", str(out)])
        assert code == 2
        one_line_error(err, str(out), f"process {os.getpid()}")
        assert {p.name for p in out.iterdir()} == {".lock"}  # nothing was written
        for command in (["eval", "--run", "synthetic", "--out", str(out / "eval.json")],
                        ["scale", "--run", "synthetic", "--out", str(out)],
                        ["quickstart", "--out", str(out)]):  # fmt: skip
            code, err = run_cli(capsys, command)
            assert code == 2
            one_line_error(err, f"process {os.getpid()}")
    assert (out / ".lock").read_text() == ""  # released, and no stale pid left in it


def train_process(out: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "discdiff.cli", "train", "--config", "synthetic"]
    small = [o for o in TINY_RUN if not o.startswith(("train.steps", "train.checkpoint_every"))]
    return subprocess.Popen(
        [*argv, "--out", str(out), *small, "train.checkpoint_every=5", *overrides],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_two_concurrent_trains_into_one_folder_one_is_refused_and_the_run_is_consistent(
    tmp_path,
):
    # The probe's case (lr 0.003 and lr 0.0005 into one --out), with fewer steps.
    out = tmp_path / "run"
    runs = {
        "a": ("train.lr=0.003", "train.steps=150"),
        "b": ("train.lr=0.0005", "train.steps=100"),
    }
    processes = {name: train_process(out, *o) for name, o in runs.items()}
    done = {name: (p.wait(300), *p.communicate()) for name, p in processes.items()}
    codes = sorted(code for code, _, _ in done.values())
    assert codes == [0, 2], done
    (winner,) = [name for name, (code, _, _) in done.items() if code == 0]
    (loser,) = [name for name, (code, _, _) in done.items() if code == 2]
    err = done[loser][2]
    pid = processes[winner].pid
    assert err.count("\n") == 1 and f"process {pid}" in err and str(out) in err, err
    saved = RunConfig.load(out / "run.yaml", complete=True)
    lr, steps = (float(o.split("=")[1]) for o in runs[winner])
    assert saved.train.lr == lr and saved.train.steps == steps
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == steps
    weights = out / "model" / "model.safetensors"
    assert metrics["provenance"]["weights_sha256"]["model/model.safetensors"] == sha256(weights)
    assert not list((out / "checkpoints").glob(".tmp-*"))


def test_checkpoint_temp_folders_are_cleared_only_when_their_writer_is_gone(tmp_path):
    store = CheckpointStore(tmp_path)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            "own": f".tmp-{os.getpid()}-a",
            "gone": f".tmp-{finished.stdout.strip()}-b",
            "live": f".tmp-{live.pid}-c",
        }
        for name in names.values():
            (tmp_path / name).mkdir()
            (tmp_path / name / "model.safetensors").write_bytes(b"\0" * 10)
        store.save(1, {"w": torch.zeros(2)}, None, {"step": 1})
        left = {p.name for p in tmp_path.glob(".tmp-*")}
        assert left == {names["live"]}  # another process's write in progress is left alone
    finally:
        live.kill()
        live.wait()


# -- finding 3: a few hundred bytes of config cost nothing ---------------------------------

ANCHOR_BOMB = "\n".join(
    [
        "a: &a [x, x, x, x, x, x, x, x, x]",
        *(
            f"{b}: &{b} [{', '.join(['*' + a] * 9)}]"
            for a, b in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        "train: {steps: *i}",
    ]
)


def test_an_anchor_bomb_is_refused_at_once(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(ANCHOR_BOMB)
    assert len(ANCHOR_BOMB) < 500  # 9^9 values once expanded
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="more than 10000 values") as error:
        RunConfig.load(path)
    assert str(path) in str(error.value)
    value = ANCHOR_BOMB.replace("\n", ", ").replace("train: {steps: *i}", "steps: *i")
    code, err = run_cli(capsys, ["train", "--config", "synthetic", "--out", str(tmp_path / "o"),
                                 "--dry-run", f"train={{{value}}}"])  # fmt: skip
    assert code == 2
    one_line_error(err, "more than 10000 values")
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "override, named",
    [
        ("train.steps=" + "[" * 5000 + "]" * 5000, "nested deeper than"),
        ("train." + "a." * 5000 + "b=1", "nested deeper than"),
        ("train.steps='" + "x" * 250 + "'", "expected int"),
        ("train.steps=" + "x" * (2 << 20), "longer than"),
        ("model.n_blocks=" + str(10**30), "model.n_blocks"),
        ("model.hidden_dim=16384", "parameters"),
        ("sampler.samples=" + str(10**30), "sampler.samples"),
        ("data.language={name: hmm, states: 1000000}", "data.language.states"),
    ],
)
def test_huge_or_deep_values_are_short_named_errors(tmp_path, capsys, override, named):
    start = time.perf_counter()
    argv = ["train", "--config", "synthetic", "--out", str(tmp_path / "o"), "--dry-run"]
    code, err = run_cli(capsys, [*argv, override])
    assert code == 2 and time.perf_counter() - start < 5
    one_line_error(err, named)


def test_deep_python_values_are_named_errors():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ConfigError, match="nested deeper than"):
        RunConfig.from_dict({"train": {"steps": deep}})
    shared = ["x"] * 10
    for _ in range(8):  # aliases built in Python: 10^9 values once expanded
        shared = [shared] * 10
    with pytest.raises(ConfigError, match="more than 10000 values"):
        RunConfig.from_dict({"train": {"steps": shared}})


# -- finding 4: every value checked before any work ----------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        "train.eval_sequences=0",
        "train.grad_clip=.nan",
        "train.weight_decay=.nan",
        "train.lr=.inf",
        "train.betas=[1, 2]",
        f"train.seed={2**64}",
        f"data.seed={2**63}",
        f"sampler.seed={2**64}",
        "sampler.temperature=1e-320",
        "train.max_minutes=-1",
        "train.max_minutes=0",
    ],
)
def test_values_that_failed_late_stop_the_command_before_any_work(tmp_path, capsys, override):
    out = tmp_path / "run"
    code, err = run_cli(capsys, ["train", "--config", "synthetic", "--out", str(out), override])
    assert code == 2
    one_line_error(err, override.split("=")[0].replace("train.betas", "train.betas[0]"))
    assert not out.exists()


def is_numeric(hint) -> bool:
    """Whether a type annotation admits an int or a float (alone, in a union or a tuple)."""
    return hint in (int, float) or any(is_numeric(h) for h in typing.get_args(hint))


def test_every_numeric_setting_has_one_declared_range_and_it_is_used():
    fixed = {"vocab_size", "model_length", "num_classes", "label_dropout"}
    specs = {"data": DataSpec, "train": TrainConfig, "sampler": SamplerSpec, "model": DiTConfig}
    numeric = {
        f"{section}.{name}"
        for section, spec in specs.items()
        for name, hint in typing.get_type_hints(spec).items()
        if is_numeric(hint) and name not in fixed and hint is not bool
    }
    assert len(numeric) > 30
    shaping = {f"sampler.{name}" for name in ("temperature", "top_k", "top_p")}
    undeclared = {k for k in numeric if k not in RANGES and not k.endswith(".seed")}
    assert undeclared == shaping, undeclared  # the sampler's Shaping owns and checks these
    for key, bad in zip(sorted(shaping), ["1e4", "0", "1.5"], strict=True):
        with pytest.raises(ConfigError, match=re.escape(key)):
            RunConfig().replace([f"{key}={bad}"])
    for key, allowed in RANGES.items():
        if key.startswith(("*", "data.language")):
            continue
        bad = allowed.high * 2 + 1
        value = f"[{bad}, {bad}]" if key == "train.betas" else bad
        with pytest.raises(ConfigError, match=re.escape(key)):
            RunConfig().replace([f"{key}={value}"])


# -- finding 5: every CLI error a named line; weights checked --------------------------------


def test_a_full_disk_while_training_is_one_line_naming_the_file_and_what_was_kept(
    tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    monkeypatch.setattr(checkpoints, "save_file", full_disk(checkpoints.save_file))
    code, err = run_cli(capsys, ["train", "--config", "synthetic", "--out", str(out), *TINY_RUN])
    assert code == 2
    one_line_error(err, "no space left", "step-00000004/model.safetensors", "kept: no checkpoint")
    assert not list((out / "checkpoints").glob(".tmp-*"))


def test_safetensors_own_disk_full_error_is_named_too(tmp_path, monkeypatch, capsys):
    def failing(tensors, path, *args, **kwargs):
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
            'space left on device" }) (os error 28)'
        )

    net = DiT(DiTConfig.micro(vocab_size=5))
    net.save_pretrained(tmp_path / "model")
    before = snapshot(tmp_path)
    monkeypatch.setattr(model_files, "save_file", failing)
    with pytest.raises(DiskFullError, match=r"model\.safetensors; kept: the previous version"):
        net.save_pretrained(tmp_path / "model")
    assert snapshot(tmp_path) == before


TEXTS = {
    "empty": b"",
    "blank": b"\n\n  \n",
    "binary": bytes(range(256)) * 4,
    "too short": b"ab",
}


@pytest.mark.parametrize("kind", sorted(TEXTS))
def test_unusable_training_text_is_a_named_error_leaving_no_folder(tmp_path, capsys, kind):
    text = tmp_path / "corpus.txt"
    text.write_bytes(TEXTS[kind])
    out = tmp_path / "run"
    argv = ["train", "--config", "synthetic", "--out", str(out), "data.kind=text"]
    code, err = run_cli(capsys, [*argv, f"data.path={text}", "data.length=16"])
    assert code == 2
    one_line_error(err, "data.path")
    assert not out.exists()


SAMPLE_FILES = {
    "a list": [],
    "no sampler": {"metrics": {"nfe": 8}, "tokens": [[1] * 16]},
    "sampler a number": {"sampler": 3, "metrics": {"nfe": 8}, "tokens": [[1] * 16]},
    "no nfe": {"sampler": {"steps": 8}, "metrics": {}, "tokens": [[1] * 16]},
    "short rows": {"sampler": {"steps": 8}, "metrics": {"nfe": 8}, "tokens": [[1, 2]]},
    "ids too large": {"sampler": {"steps": 8}, "metrics": {"nfe": 8}, "tokens": [[99] * 16]},
    "text ids": {"sampler": {"steps": 8}, "metrics": {"nfe": 8}, "tokens": [["a"] * 16]},
}


@pytest.mark.parametrize("kind", sorted(SAMPLE_FILES))
def test_a_samples_file_of_the_wrong_shape_is_named(trained, tmp_path, capsys, kind):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    folder = run / "samples" / "odd"
    folder.mkdir(parents=True)
    (folder / "samples.json").write_text(json.dumps(SAMPLE_FILES[kind]))
    code, err = run_cli(capsys, ["eval", "--run", str(run), "--sequences", "8"])
    assert code == 2
    one_line_error(err, str(folder / "samples.json"))
    assert not (run / "eval.json").exists()
    code, err = run_cli(capsys, ["sample", "--run", str(run), "--out", str(folder), "--quiet",
                                 "sampler.samples=1", "sampler.steps=2"])  # fmt: skip
    if kind in ("a list", "no sampler", "sampler a number"):  # the settings cannot be compared
        assert code == 2
        one_line_error(err, str(folder / "samples.json"))


def flip_bit(data: bytes, at: float = 0.75) -> bytes:
    index = int(len(data) * at)
    return data[:index] + bytes([data[index] ^ 0x10]) + data[index + 1 :]


@pytest.mark.parametrize(
    "name",
    [
        "model/model.safetensors",
        "checkpoints/step-00000004/model.safetensors",
        "checkpoints/step-00000004/ema.safetensors",
        "checkpoints/step-00000004/state.pt",
    ],
)
def test_a_flipped_bit_in_weights_is_named_on_loading(trained, tmp_path, capsys, name):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    path = run / name
    path.write_bytes(flip_bit(path.read_bytes()))
    before = snapshot(run)
    command = ["sample", "--run", str(run), "--quiet", "sampler.samples=1", "sampler.steps=2"]
    if name.startswith("checkpoints"):
        command = ["train", "--config", "synthetic", "--out", str(run), *TINY_RUN]
    code, err = run_cli(capsys, command)
    assert code == 2
    one_line_error(err, str(path), "SHA-256")
    assert snapshot(run) == before


def test_the_trained_model_records_its_checksum(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    recorded = metrics["provenance"]["weights_sha256"]["model/model.safetensors"]
    assert recorded == sha256(trained / "model" / "model.safetensors")
    stored = json.loads((trained / "checkpoints" / "step-00000004" / "checksums.json").read_text())
    assert set(stored) == {"model.safetensors", "ema.safetensors", "state.pt"}


# -- finding 6: the smaller ones -----------------------------------------------------------


def test_a_model_path_ending_in_dotdot_writes_under_samples(tmp_path, monkeypatch, capsys):
    from llm_fixtures import write_tiny_llada

    write_tiny_llada(tmp_path / "a")
    (tmp_path / "a" / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    argv = ["sample", "--model", "a/sub/..", "--length", "2", "--quiet", "sampler.steps=2"]
    assert main([*argv, "--device", "cpu"]) == 0
    (folder,) = (tmp_path / "samples" / "a").iterdir()
    assert (folder / "samples.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "samples"]


def test_output_files_get_the_umask_mode(trained):
    mask = os.umask(0o022)
    os.umask(mask)
    files = [p for p in trained.rglob("*") if p.is_file() and p.name != ".lock"]
    folders = [p for p in trained.rglob("*") if p.is_dir()]
    assert len(files) > 8 and len(folders) >= 3
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path
    for path in folders:
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~mask, path


def test_an_error_in_an_override_is_reported_as_the_overrides(tmp_path, capsys):
    argv = ["train", "--config", "synthetic", "--out", str(tmp_path / "o"), "--dry-run"]
    code, err = run_cli(capsys, [*argv, "train.lr=-1"])
    assert code == 2
    one_line_error(err, "train.lr", "in the override 'train.lr=-1'")
    assert "run.yaml" not in err
    config = tmp_path / "bad.yaml"
    config.write_text("train: {lr: -1}\n")
    code, err = run_cli(capsys, ["train", "--config", str(config), "--out", str(tmp_path / "o"),
                                 "--dry-run", "train.steps=5"])  # fmt: skip
    assert code == 2
    one_line_error(err, "train.lr", f"in {config}")


# -- fuzzing every config key with bad values -------------------------------------------------

BAD_VALUES = {
    "string": "'x'",
    "long string": "'" + "x" * 5000 + "'",
    "bool": "true",
    "null": "null",
    "list": "[1, 2]",
    "mapping": "{a: 1}",
    "nan": ".nan",
    "inf": ".inf",
    "-inf": "-.inf",
    "zero": "0",
    "negative": "-1",
    "tiny": "1e-320",
    "huge int": str(10**30),
    "2^64": str(2**64),
    "huge float": "1e300",
    "deep": "[" * 100 + "]" * 100,
    "alias": "&a [1, *a]",
    "anchor bomb": "{" + ANCHOR_BOMB.replace("\n", ", ") + "}",
}


def config_keys() -> list[str]:
    """Every key of every section, and the arguments of the default choices."""
    keys = [f"{section}.{key}" for section, names in KEYS.items() for key in names]
    keys = [k for k in keys if k not in ("model.vocab_size", "model.model_length")]
    arguments = ["data.language.states", "data.language.seed", "process.schedule.eps"]
    return [*keys, *arguments, "sampler.posterior.eta", "sampler.posterior.t_on"]


@pytest.mark.slow
@pytest.mark.parametrize("section", SECTIONS)
def test_every_config_key_times_every_bad_value_is_a_named_error_or_loads(section):
    outcomes = {"ConfigError": 0, "loaded": 0}
    keys = [key for key in config_keys() if key.startswith(f"{section}.")]
    for key in keys:
        for kind, text in BAD_VALUES.items():
            override = f"{key}={text}"
            if key == "sampler.posterior.eta":  # an argument needs its choice
                overrides = ["sampler.posterior=cap", override]
            elif key == "sampler.posterior.t_on":
                overrides = ["sampler.posterior=loop", override]
            else:
                overrides = [override]
            start = time.perf_counter()
            try:
                RunConfig().replace(overrides)
            except ConfigError as error:
                assert len(str(error)) < 1000, (override[:80], str(error)[:200])
                assert "\n" not in str(error)
                outcomes["ConfigError"] += 1
            else:
                outcomes["loaded"] += 1
            assert time.perf_counter() - start < 3, (key, kind)
    cases = len(keys) * len(BAD_VALUES)
    assert keys and sum(outcomes.values()) == cases
    print(f"{section}: {cases} cases ({len(keys)} keys x {len(BAD_VALUES)} values): {outcomes}")
