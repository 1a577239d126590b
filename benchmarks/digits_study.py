"""The full controllability study on scikit-learn digits (D-CFG with MDLM vs ReMDM; AR+FUDGE).

Trains a class-conditional DiT (d 64, 3 blocks) for `--minutes` (or
`--train-steps`) on CPU, then sweeps the guidance strength γ and the number
of steps T for MDLM and ReMDM-cap(0.02); an AR model and a prefix classifier
of the same size, each trained for half that budget, give the FUDGE rows
(T = L). Scores target-class accuracy with an independent judge and novelty
(distinct samples, distance to the nearest training image). Prints the table
and a JSON summary; writes `digits_frontier.png`, `.json`, `digits_table.md`
and `digits_samples.png` to `--out` (copy the PNGs to `docs/assets/`).

    python benchmarks/digits_study.py [--minutes 7 | --train-steps N] [--gammas 0,1,2,3]
        [--steps 16,64,256] [--no-fudge]
"""

import argparse
import json
import time

import torch

from discdiff.studies.frontier import frontier_table, run_digits_study


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=7.0)
    parser.add_argument("--train-steps", type=int, default=None, help="instead of --minutes")
    parser.add_argument("--no-fudge", action="store_true", help="leave out the AR+FUDGE rows")
    parser.add_argument("--gammas", default="0,1,2,3")
    parser.add_argument("--steps", default="16,64,256")
    parser.add_argument("--samples-per-class", type=int, default=16)
    parser.add_argument("--out", default="runs/digits-study")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="progress bars on stderr")
    args = parser.parse_args()
    start = time.perf_counter()
    report = run_digits_study(
        args.out,
        train_minutes=None if args.train_steps else args.minutes,
        train_steps=args.train_steps,
        fudge=not args.no_fudge,
        gammas=[float(g) for g in args.gammas.split(",")],
        steps=[int(s) for s in args.steps.split(",")],
        samples_per_class=args.samples_per_class,
        seed=args.seed,
        progress=args.progress,
    )
    print(frontier_table(report["rows"]))
    summary = {k: v for k, v in report.items() if k != "rows"}
    summary["threads"] = torch.get_num_threads()
    summary["wall_minutes"] = (time.perf_counter() - start) / 60
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
