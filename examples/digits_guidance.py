r"""Guided generation of handwritten digits: D-CFG with MDLM and ReMDM.

Trains a small class-conditional DiT (label dropout 0.1) on scikit-learn's
8 × 8 digits, then samples every digit with discrete classifier-free guidance
at several strengths γ and step counts T, with MDLM and ReMDM-cap. An
independent logistic-regression judge, trained on clean digits, scores the
target-class accuracy; novelty is the distance to the nearest training
image. Writes `digits_frontier.png` (accuracy vs novelty), its `.json` and a
Markdown table to `--out`.

    python examples/digits_guidance.py [--minutes 5] [--out runs/digits] [--smoke]

The full study (with the numbers in the docs) is `benchmarks/digits_study.py`.
"""

import argparse
import json
import tempfile

from discdiff.models import DiTConfig
from discdiff.studies.frontier import frontier_table, run_digits_study


def main() -> None:
    parser = argparse.ArgumentParser(description="guided digits: accuracy vs novelty")
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget")
    parser.add_argument("--samples-per-class", type=int, default=20)
    parser.add_argument("--out", default=None, help="default: runs/digits (smoke: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a tiny run (CI)")
    args = parser.parse_args()
    if args.samples_per_class < 1:
        parser.error(f"--samples-per-class must be at least 1; got {args.samples_per_class}")
    if args.out is None:
        args.out = tempfile.mkdtemp(prefix="digits-") if args.smoke else "runs/digits"
    if args.smoke:
        config = DiTConfig.micro(vocab_size=18, model_length=64, num_classes=10)
        report = run_digits_study(
            args.out,
            config=config,
            train_steps=20,
            gammas=(0.0, 2.0),
            steps=(4,),
            samples_per_class=2,
            seed=args.seed,
            progress=False,
        )
    else:
        report = run_digits_study(
            args.out,
            train_minutes=args.minutes,
            samples_per_class=args.samples_per_class,
            seed=args.seed,
        )
    print(frontier_table(report["rows"]))
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
