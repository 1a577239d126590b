"""Reproducibility: the same config and seed give the same weights, history, samples and tables.

Across processes (each run below is a fresh interpreter, whose torch global
seed is random), across batch sizes (per-sequence random streams), and
across SIGKILLs at random moments (checkpoints are never half-read).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import discdiff as dd
from discdiff.data import SyntheticLanguage
from discdiff.rng import SequenceGenerator, derive_seed, seeded, uniform
from discdiff.runs import load_run, sample_run
from discdiff.studies.settings import STUDY

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
TINY = [
    "data.length=16",
    "model.hidden_dim=32",
    "model.cond_dim=32",
    "model.n_blocks=1",
    "model.n_heads=2",
    "model.dropout=0.1",
    "train.steps=6",
    "train.batch_size=8",
    "train.eval_every=3",
    "train.eval_sequences=16",
    "train.progress=false",
]


def discdiff(*argv: str, cwd: Path) -> None:
    command = [sys.executable, "-m", "discdiff.cli", *argv]
    subprocess.run(command, check=True, env=ENV, cwd=cwd, timeout=300, capture_output=True)


def test_sequence_streams_do_not_depend_on_the_batch():
    whole = SequenceGenerator(5, 6)
    first = [whole.rand((6, 4), dtype=torch.float64), whole.rand((6, 2, 3))]
    for start, size in ((0, 1), (1, 3), (4, 2)):
        part = SequenceGenerator(5, size, start=start)
        rows = slice(start, start + size)
        assert torch.equal(part.rand((size, 4), dtype=torch.float64), first[0][rows])
        assert torch.equal(part.rand((size, 2, 3)), first[1][rows])
    other = SequenceGenerator(6, 6).rand((6, 4), dtype=torch.float64)
    assert not torch.equal(other, first[0])
    # batch_dim picks the dimension that indexes the sequences
    moved = uniform((3, 6, 4), generator=SequenceGenerator(5, 6), dtype=torch.float64, batch_dim=1)
    expected = SequenceGenerator(5, 6).rand((6, 3, 4), dtype=torch.float64).movedim(0, 1)
    assert torch.equal(moved, expected)
    with pytest.raises(ValueError, match="serves 6 sequences"):
        SequenceGenerator(5, 6).rand((5, 4))


def test_sequence_streams_are_uniform():
    """Kolmogorov-Smirnov against U(0, 1) on 20 000 numbers: the 0.001 critical value is 0.0138."""
    u = SequenceGenerator(0, 100).rand((100, 200), dtype=torch.float64).flatten().sort().values
    n = u.numel()
    grid = torch.arange(1, n + 1, dtype=torch.float64) / n
    assert float((grid - u).abs().max()) < 0.0138
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, "init") == derive_seed(0, "init")
    assert len({derive_seed(s, n) for s in (0, 1) for n in ("init", "noise")}) == 4
    assert 0 <= derive_seed(-3, "init") < 2**63


@pytest.mark.parametrize(
    "strategy",
    [dd.MaskingPosterior(), dd.RemaskPosterior(dd.CapSchedule(0.05)), dd.MaskGITDecoder()],
    ids=repr,
)
def test_samples_do_not_depend_on_the_batch_size(strategy):
    language = SyntheticLanguage(vocab_size=12, states=4, support=4, seed=0)
    process = dd.MaskingProcess(vocab_size=12)
    sampler = dd.AncestralSampler(process, strategy, steps=12)
    oracle = language.denoiser(process.mask_id)
    one = sampler.sample_batches(oracle, 10, 8, seed=3)
    chunked = sampler.sample_batches(oracle, 10, 8, seed=3, batch_size=3)
    assert torch.equal(one.tokens, chunked.tokens)
    assert torch.equal(one.sequence_nfe, chunked.sequence_nfe)
    assert not torch.equal(one.tokens, sampler.sample_batches(oracle, 10, 8, seed=4).tokens)


def test_the_cli_samples_do_not_depend_on_the_batch_size(tmp_path, monkeypatch):
    """The shipped DiT: batches of 16 and 48 (row counts that give the same float32 logits)."""
    monkeypatch.chdir(tmp_path)
    base = ["sampler.samples=48", "sampler.steps=8", "sampler.posterior=maskgit"]
    records = []
    for batch in (16, 48):
        folder = sample_run(
            "synthetic", [*base, f"sampler.batch_size={batch}"], out=f"b{batch}", progress=False
        )
        records.append(json.loads((folder / "samples.json").read_text()))
    assert records[0]["tokens"] == records[1]["tokens"]
    for record in records:  # wall-clock figures are the only ones that differ
        assert record["metrics"].pop("seconds") > 0
        assert record["metrics"].pop("tokens_per_second") > 0
    assert records[0]["metrics"] == records[1]["metrics"]
    made_by = records[0]["provenance"]
    assert made_by["seed"] == 0 and made_by["settings"]["sampler"]["batch_size"] == 16
    assert {"discdiff", "torch", "threads", "cpu_capability"} <= made_by.keys()


def test_seeded_blocks_repeat_and_leave_the_global_generator_alone():
    config = dd.DiTConfig.micro(vocab_size=13, model_length=16)
    state = torch.get_rng_state()
    with seeded(derive_seed(0, "init")):
        a = dd.DiT(config).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    with seeded(derive_seed(0, "init")):
        b = dd.DiT(config).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_training_twice_in_two_processes_gives_identical_weights_and_history(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        discdiff("train", "--config", "synthetic", "--out", str(run), *TINY, cwd=tmp_path)
    weights = [load_file(run / "model" / "model.safetensors") for run in runs]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    histories = [json.loads((run / "history.json").read_text()) for run in runs]
    for history in histories:
        assert len(history.pop("timing")["eval_minutes"]) == len(history["evals"]) == 2
    assert histories[0] == histories[1]
    assert histories[0]["provenance"]["seed"] == 0
    assert histories[0]["provenance"]["settings"]["model"]["hidden_dim"] == 32
    metrics = [json.loads((run / "metrics.json").read_text()) for run in runs]
    assert metrics[0] == metrics[1]
    assert metrics[0]["nats_per_token"] == histories[0]["evals"][-1]["nats_per_token"]
    # another train seed is another run, initialisation included
    other = tmp_path / "c"
    argv = ["train", "--config", "synthetic", "--out", str(other), *TINY, "train.seed=1"]
    discdiff(*argv, cwd=tmp_path)
    changed = load_file(other / "model" / "model.safetensors")
    assert any(not torch.equal(changed[k], weights[0][k]) for k in changed)


def test_a_finished_run_started_again_does_not_evaluate_again(tmp_path, monkeypatch):
    from discdiff.cli import main
    from discdiff.training.trainer import Trainer

    argv = ["train", "--config", "synthetic", "--out", str(tmp_path), *TINY]
    assert main(argv) == 0
    before = (tmp_path / "history.json").read_text()
    calls = []
    monkeypatch.setattr(Trainer, "evaluate", lambda self, *a, **k: calls.append(1))
    assert main(argv) == 0
    assert calls == []
    after = json.loads((tmp_path / "history.json").read_text())
    assert after["evals"] == json.loads(before)["evals"]


@pytest.mark.slow
def test_the_study_twice_in_two_processes_and_another_batch_size_gives_identical_tables(tmp_path):
    script = (
        "import sys\n"
        "from discdiff.studies.table1 import run_synthetic_study\n"
        "from discdiff.runs import load_run\n"
        "run_synthetic_study(load_run('synthetic').denoiser, sys.argv[1], steps=(4, 16),\n"
        "    samples=6, batch_size=int(sys.argv[2]) or None, progress=False)\n"
    )
    tables = []
    for name, batch in (("a", 0), ("b", 0), ("c", 4)):
        command = [sys.executable, "-c", script, str(tmp_path / name), str(batch)]
        subprocess.run(command, check=True, env=ENV, timeout=300, capture_output=True)
        rows = json.loads((tmp_path / name / "study.json").read_text())
        assert all(row.pop("seconds_per_sample") > 0 for row in rows)
        tables.append(rows)
    # Six samplers and the perfect-model rows, two T.
    assert len(tables[0]) == 2 * (6 + len(STUDY.quickstart_perfect))
    assert tables[0] == tables[1] == tables[2]
    made_by = json.loads((tmp_path / "c" / "provenance.json").read_text())
    assert made_by["settings"]["batch_size"] == 4 and made_by["threads"] == 1


@pytest.mark.slow
def test_sigkill_at_random_moments_resumes_to_the_uninterrupted_result():
    """20 kills landed on running jobs (seeded kill times); see benchmarks/kill_resume.py."""
    command = [sys.executable, str(ROOT / "benchmarks" / "kill_resume.py"), "--kills", "20"]
    done = subprocess.run(command, check=True, env=ENV, timeout=600, capture_output=True)
    figures = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert figures["kills_landed"] >= 20 and figures["restarts"] >= 20
    assert figures["partial_checkpoints_seen"] == 0
    assert figures["resume_went_back"] == 0
    assert figures["max_abs_weight_diff"] == 0.0
    assert figures["histories_equal"] is True


def test_a_loaded_run_samples_the_same_in_one_call_and_in_batches():
    run = load_run("synthetic")
    sampler = dd.AncestralSampler(run.process, dd.RemaskPosterior(dd.CapSchedule(0.02)), steps=6)
    with torch.no_grad():
        together = sampler.sample_batches(run.denoiser, 32, 64, seed=1)
        apart = sampler.sample_batches(run.denoiser, 32, 64, seed=1, batch_size=16)
    assert torch.equal(together.tokens, apart.tokens)
