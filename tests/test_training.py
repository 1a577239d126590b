"""The trainer: exact resume, atomic checkpoints, signals, accumulation, EMA, DDP."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training_setup import LANGUAGE, capture_gradients, make_trainer

from discdiff.data import BlockSource, LanguageSource
from discdiff.training import CheckpointStore, TrainConfig

HERE = Path(__file__).resolve().parent


def test_resume_continues_the_exact_loss_trajectory(tmp_path):
    uninterrupted = make_trainer(steps=8).fit(resume=False).losses
    make_trainer(tmp_path, steps=3).fit()  # stops at step 3 with a checkpoint
    resumed = make_trainer(tmp_path, steps=8)
    history = resumed.fit()
    assert resumed.step == 8
    assert history.losses == uninterrupted  # bit-for-bit, dropout included
    assert history.losses[3:] == uninterrupted[3:]


def test_a_crash_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, steps=2)
    trainer.fit()
    store = CheckpointStore(tmp_path / "checkpoints")
    before = store.latest()
    weights_before = (before / "model.safetensors").read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("discdiff.training.checkpoints.torch.save", crash)
    trainer.config.steps = 4
    with pytest.raises(OSError, match="disk full"):
        trainer.fit(resume=False)
    assert store.latest() == before
    assert (before / "model.safetensors").read_bytes() == weights_before
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    monkeypatch.undo()
    assert make_trainer(tmp_path, steps=4).resume()


def test_a_stale_partial_checkpoint_is_ignored(tmp_path):
    make_trainer(tmp_path, steps=2).fit()
    (tmp_path / "checkpoints" / ".tmp-killed").mkdir()
    (tmp_path / "checkpoints" / ".tmp-killed" / "model.safetensors").write_bytes(b"\0" * 10)
    trainer = make_trainer(tmp_path, steps=3)
    assert trainer.resume() and trainer.step == 2
    trainer.fit()
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


class Interrupting(LanguageSource):
    """Sends this process SIGTERM while batch `at` is being fetched."""

    def __init__(self, at):
        super().__init__(LANGUAGE, 16, seed=0)
        self.at = at

    def batch(self, index, size):
        if index == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().batch(index, size)


def test_sigterm_saves_a_checkpoint_then_exits(tmp_path):
    trainer = make_trainer(tmp_path, steps=10, source=Interrupting(at=2))
    with pytest.raises(SystemExit) as exit_info:
        trainer.fit()
    assert exit_info.value.code == 128 + signal.SIGTERM
    latest = CheckpointStore(tmp_path / "checkpoints").latest()
    assert latest.name == "step-00000003"
    assert make_trainer(tmp_path, steps=10).resume()


def test_gradient_accumulation_matches_one_big_batch():
    one = capture_gradients(make_trainer(dropout=0.0, accumulate=1))
    two = capture_gradients(make_trainer(dropout=0.0, accumulate=2))
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-6, rtol=1e-5)


def test_ema_follows_its_formula():
    trainer = make_trainer(ema=0.75)
    start = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_step()
    for shadow, p0, p1 in zip(trainer.ema, start, trainer.model.parameters(), strict=True):
        torch.testing.assert_close(shadow, 0.75 * p0 + 0.25 * p1.detach())


def test_validation_reports_a_bound():
    trainer = make_trainer(eval_every=3)
    history = trainer.fit(resume=False)
    assert [int(r["step"]) for r in history.evals] == [3, 6]
    record = history.evals[-1]
    assert 0 < record["nats_per_token"] < 10
    assert abs(record["bits_per_token"] * 0.6931471805599453 - record["nats_per_token"]) < 1e-9


def test_bad_data_and_settings_are_rejected():
    with pytest.raises(ValueError, match=r"outside 0\.\.11"):
        BlockSource(torch.tensor([[0, 12]]), vocab_size=12)
    long = LanguageSource(LANGUAGE, 40, seed=0)
    with pytest.raises(ValueError, match="model_length"):
        make_trainer(source=long).train_step()
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="split evenly"):
        make_trainer(batch_size=6, accumulate=4)


@pytest.mark.slow
def test_ddp_with_two_processes_matches_one_process(tmp_path):
    """torchrun, gloo on CPU: each rank trains on half of the same global batch; the
    gradients and the reported (all-reduced) loss equal a single process's."""
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(HERE / "ddp_worker.py"),
            str(out),
        ],
        check=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    ddp = torch.load(out, weights_only=True)
    single = capture_gradients(make_trainer(batch_size=8, grad_clip=0.0, dropout=0.0))
    assert ddp.keys() == single.keys()
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], atol=1e-6, rtol=1e-5)
