"""Training throughput and peak memory per step on CPU, for both objectives.

For the micro and tiny DiT presets it times optimiser steps (forward, backward,
AdamW, EMA) with the continuous-time NELBO, the discrete NELBO in closed form
and the discrete NELBO with the generic KL from the posterior objects, and
counts the peak tensor memory of one step exactly. Prints JSON lines.

    python benchmarks/train_throughput.py [--batch 32] [--length 128] [--vocab 1024] [--steps 5]
"""

import argparse
import json
import time

import torch
from memory import PeakMemory

import discdiff as dd
from discdiff.data import BlockSource
from discdiff.objectives import ContinuousNELBO, DiscreteNELBO
from discdiff.training import TrainConfig, Trainer


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    process = dd.MaskingProcess(vocab_size=args.vocab)
    blocks = torch.randint(
        args.vocab, (256, args.length), generator=torch.Generator().manual_seed(0)
    )
    objectives = {
        "continuous": ContinuousNELBO(),
        "discrete-closed-form": DiscreteNELBO(dd.MaskingPosterior(), steps=1000),
        "discrete-generic-kl": DiscreteNELBO(dd.MaskingPosterior(), steps=1000, exact_kl=True),
    }
    for preset in ("micro", "tiny"):
        for name, objective in objectives.items():
            torch.manual_seed(0)
            config = getattr(dd.DiTConfig, preset)(args.vocab + 1, model_length=args.length)
            model = dd.SUBS(dd.DiT(config), process)
            trainer = Trainer(
                process,
                model,
                BlockSource(blocks, args.vocab),
                TrainConfig(steps=10**6, batch_size=args.batch, progress=False, eval_every=0),
                objective=objective,
            )
            trainer.train_step()  # warm-up
            start = time.perf_counter()
            for _ in range(args.steps):
                trainer.train_step()
            seconds = (time.perf_counter() - start) / args.steps
            with PeakMemory() as memory:
                trainer.train_step()
            params = sum(p.numel() for p in model.parameters())
            print(
                json.dumps(
                    {
                        "preset": preset,
                        "objective": name,
                        "parameters": params,
                        "batch": args.batch,
                        "length": args.length,
                        "vocab": args.vocab,
                        "threads": torch.get_num_threads(),
                        "seconds_per_step": round(seconds, 4),
                        "tokens_per_s": round(args.batch * args.length / seconds),
                        "peak_step_memory_mb": round(memory.peak / 2**20, 1),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
