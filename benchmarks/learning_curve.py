"""Learning curve on the built-in synthetic language: how much structure is learnt, how fast.

Trains with the recipe of the shipped quickstart model
(`discdiff/assets/synthetic/run.yaml`) for `--minutes` of wall time and
reports, at 2, 5 and 10 minutes (or the marks given), the validation NELBO in
nats/token and the fraction of the distance from the unigram cross-entropy (a
model that learnt only token frequencies) to the exact entropy (a perfect
model) that it has closed.

    python benchmarks/learning_curve.py [--minutes 10] [--marks 2,5,10] [--out runs/curve]
"""

import argparse
import json
from pathlib import Path

import torch

from discdiff.data import SyntheticLanguage
from discdiff.runs import load_config, train_run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--marks", default="2,5,10")
    parser.add_argument("--out", default="runs/learning-curve")
    args = parser.parse_args()
    overrides = ["train.steps=null", f"train.max_minutes={args.minutes}", "train.eval_every=50"]
    recipe = load_config("synthetic", [*overrides, "train.checkpoint_every=0"])
    train_run(recipe, args.out, progress=False)
    history = json.loads((Path(args.out) / "history.json").read_text())
    summary = SyntheticLanguage().summary(recipe.data.length)
    print(
        f"entropy {summary['entropy']:.4f}, unigram {summary['unigram']:.4f} nats/token, "
        f"{torch.get_num_threads()} threads"
    )
    timed = zip(history["evals"], history["timing"]["eval_minutes"], strict=True)
    for mark in (float(m) for m in args.marks.split(",")):
        reached = [r for r, minutes in timed if minutes <= mark + 1e-9]
        if reached:
            r = reached[-1]
            closed = (summary["unigram"] - r["nats_per_token"]) / summary["gap"]
            print(
                json.dumps(
                    {
                        "minutes": mark,
                        "step": int(r["step"]),
                        "nats_per_token": round(r["nats_per_token"], 4),
                        "fraction_closed": round(closed, 4),
                    }
                )
            )


if __name__ == "__main__":
    main()
