"""Kill `discdiff train` with SIGKILL at random moments; its result must equal an uninterrupted run.

A tiny run (checkpoint after every step, validation every few steps,
dropout on) is trained once without interruption. Then, trial after trial,
the same run is started in a fresh directory and killed with SIGKILL after a
random delay (seeded) drawn over the uninterrupted run's duration, restarted,
killed again, ..., until it finishes. After every kill the checkpoint
directory is inspected: the checkpoint a restart would read (`latest`) and
every `step-*` directory must be complete and loadable. Trials continue until
`--kills` kills have landed on a running job. At the end of each trial the
final weights (raw and EMA) and the history are compared with the
uninterrupted run's, bit for bit.

Each job is `discdiff train` run in a child process forked from this one
after the imports, so a restart costs milliseconds rather than the
interpreter's start-up and kills land across the whole job, checkpoint
writes included.

Prints one JSON object: trials, kills that landed, restarts, kills that left
a half-written temporary checkpoint behind, partial checkpoints seen (must be
0), max |Δweight| and whether every history matched.

    python benchmarks/kill_resume.py [--kills 20] [--seed 0] [--steps 24]
"""

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from discdiff.cli import main as discdiff_main
from discdiff.training.checkpoints import CheckpointStore

TINY = [
    "data.length=16",
    "model.hidden_dim=32",
    "model.cond_dim=32",
    "model.n_blocks=1",
    "model.n_heads=2",
    "model.dropout=0.1",
    "train.batch_size=8",
    "train.lr=0.003",
    "train.warmup=4",
    "train.ema=0.9",
    "train.eval_every=8",
    "train.eval_sequences=16",
    "train.checkpoint_every=1",
    "train.keep_checkpoints=2",
    "train.progress=false",
]


def start_job(out: Path, steps: int) -> int:
    """Fork a child that runs `discdiff train` into `out`; returns its pid."""
    pid = os.fork()
    if pid == 0:  # the child: train, then leave without running the parent's cleanup
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        code = 1
        try:
            argv = ["train", "--config", "synthetic", "--out", str(out), *TINY]
            code = discdiff_main([*argv, f"train.steps={steps}"])
        finally:
            os._exit(code)
    return pid


def run_to_end(out: Path, steps: int) -> float:
    """An uninterrupted job; returns its wall time in seconds."""
    start = time.perf_counter()
    _, status = os.waitpid(start_job(out, steps), 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the uninterrupted job failed with status {status}")
    return time.perf_counter() - start


def check_checkpoints(directory: Path) -> tuple[int, int, int]:
    """(partial checkpoints seen, temporary leftovers, step a restart resumes from)."""
    partial, leftovers = 0, len(list(directory.glob(".tmp-*")))
    for checkpoint in directory.glob("step-*"):
        try:
            load_file(checkpoint / "model.safetensors")
            load_file(checkpoint / "ema.safetensors")
            state = torch.load(checkpoint / "state.pt", weights_only=True)
            partial += int(state["step"]) != int(checkpoint.name.removeprefix("step-"))
        except Exception:  # missing or truncated file
            partial += 1
    latest = CheckpointStore(directory).latest()
    return partial, leftovers, int(latest.name.removeprefix("step-")) if latest else 0


def weights(run: Path) -> dict[str, torch.Tensor]:
    latest = CheckpointStore(run / "checkpoints").latest()
    return {
        **{f"ema/{k}": v for k, v in load_file(run / "model" / "model.safetensors").items()},
        **{f"raw/{k}": v for k, v in load_file(latest / "model.safetensors").items()},
    }


def history(run: Path) -> dict:
    record = json.loads((run / "history.json").read_text())
    record.pop("timing")  # wall-clock minutes: the one thing allowed to differ
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="kills that must land (20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times (0)")
    parser.add_argument("--steps", type=int, default=24, help="training steps per job (24)")
    parser.add_argument("--max-trials", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import matplotlib.pyplot  # noqa: F401  (imported once here, not in every child)

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference"
        duration = run_to_end(reference, args.steps)
        expected_weights, expected_history = weights(reference), history(reference)
        figures = {
            "trials": 0,
            "kills_landed": 0,
            "restarts": 0,
            "kills_leaving_temporary_files": 0,
            "partial_checkpoints_seen": 0,
            "resume_went_back": 0,
            "max_abs_weight_diff": 0.0,
            "histories_equal": True,
            "uninterrupted_seconds": round(duration, 3),
        }
        while figures["kills_landed"] < args.kills and figures["trials"] < args.max_trials:
            figures["trials"] += 1
            out = Path(tmp) / f"trial-{figures['trials']}"
            resumed_from = 0
            while True:
                pid = start_job(out, args.steps)
                time.sleep(rng.uniform(0.0, duration))
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                if not os.WIFSIGNALED(status):  # it finished before the kill
                    if os.waitstatus_to_exitcode(status) != 0:
                        raise RuntimeError(f"job failed with status {status}")
                    break
                figures["kills_landed"] += 1
                figures["restarts"] += 1
                partial, leftovers, step = check_checkpoints(out / "checkpoints")
                figures["partial_checkpoints_seen"] += partial
                figures["kills_leaving_temporary_files"] += int(leftovers > 0)
                figures["resume_went_back"] += int(step < resumed_from)
                resumed_from = step
            got = weights(out)
            for name, value in expected_weights.items():
                diff = (got[name].double() - value.double()).abs().max().item()
                figures["max_abs_weight_diff"] = max(figures["max_abs_weight_diff"], diff)
            figures["histories_equal"] &= history(out) == expected_history
    print(json.dumps(figures))
    sys.exit(0)


if __name__ == "__main__":
    main()
