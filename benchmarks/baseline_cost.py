"""CPU cost of a training step and a validation pass: MDLM vs SEDD vs AR, one process.

Builds each `train.objective` of a run config (default: the built-in `hmm`
recipe; SEDD with `model.time_conditioning=true`, as SEDD's DiT), runs a few
warm-up steps, then measures the process CPU time (`time.process_time`, so
other jobs on a shared machine matter little) of `--steps` optimiser steps and
of one validation pass. Equal-budget runs take steps in inverse proportion to
the per-step cost (the AR run of the baselines table: 3950 steps vs 3600).

    python benchmarks/baseline_cost.py [--config hmm] [--steps 40]
"""

import argparse
import json
import time

import torch

from discdiff.runs import _FAMILIES, RunData, load_config
from discdiff.training.trainer import Trainer

SETTINGS = {
    "nelbo": [],
    "score-entropy": ["model.time_conditioning=true"],
    "autoregressive": [],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="hmm")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = {}
    for objective, extra in SETTINGS.items():
        config = load_config(args.config, [f"train.objective={objective}", *extra])
        data = RunData.from_config(config)
        process = config.process.build(data.vocab_size)
        family = _FAMILIES[objective]
        network = family.build(config, data.vocab_size)
        trainer = Trainer(
            process,
            family.wrap(network, process),
            data.source,
            config.train,
            validation=data.validation,
        )
        trainer.config.progress = False
        for _ in range(3):
            trainer.train_step()
        start = time.process_time()
        for _ in range(args.steps):
            trainer.train_step()
        step = (time.process_time() - start) / args.steps
        start = time.process_time()
        trainer.evaluate()
        report[objective] = {
            "cpu_seconds_per_step": step,
            "cpu_seconds_per_validation": time.process_time() - start,
            "parameters": sum(p.numel() for p in network.parameters()),
        }
        print(objective, json.dumps(report[objective]), flush=True)
    base = report["nelbo"]["cpu_seconds_per_step"]
    print(json.dumps({k: v["cpu_seconds_per_step"] / base for k, v in report.items()}))


if __name__ == "__main__":
    main()
