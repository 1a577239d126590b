"""Learning curve on the built-in synthetic language: how much structure is learnt, how fast.

Trains the default small DiT with the default trainer settings on the built-in
language for `--minutes` of wall time and reports, at 2, 5 and 10 minutes (or
the marks given), the validation NELBO in nats/token and the fraction of the
distance from the unigram cross-entropy (a model that learnt only token
frequencies) to the exact entropy (a perfect model) that it has closed.

    python benchmarks/learning_curve.py [--minutes 10] [--marks 2,5,10] [--json out.json]
"""

import argparse
import json
import time

import torch

from discdiff.data import LanguageSource, SyntheticLanguage
from discdiff.training import TrainConfig, Trainer
from discdiff.training.recipes import synthetic_model, synthetic_train_config


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--marks", default="2,5,10")
    parser.add_argument("--json", default=None, help="also write the records here")
    args = parser.parse_args()
    marks = [float(m) for m in args.marks.split(",")]
    language = SyntheticLanguage()
    config = synthetic_train_config(steps=10**9, max_minutes=args.minutes)
    process, model = synthetic_model(language)
    length = model.backbone.config.model_length
    summary = language.summary(length)
    validation = language.sample(512, length, generator=torch.Generator().manual_seed(99))
    records = []

    def on_eval(record):
        record["fraction_closed"] = (summary["unigram"] - record["nats_per_token"]) / summary["gap"]
        records.append(record)
        print(json.dumps({k: round(v, 4) for k, v in record.items()}), flush=True)

    trainer = Trainer(
        process,
        model,
        LanguageSource(language, length, seed=1),
        TrainConfig(**{**config.__dict__, "progress": False}),
        validation=validation,
        on_eval=on_eval,
    )
    start = time.perf_counter()
    trainer.fit(resume=False)
    print(
        f"entropy {summary['entropy']:.4f}  unigram {summary['unigram']:.4f} nats/token; "
        f"{trainer.step} steps in {(time.perf_counter() - start) / 60:.1f} min, "
        f"{torch.get_num_threads()} threads"
    )
    table = []
    for mark in marks:
        reached = [r for r in records if r["minutes"] <= mark + 1e-9]
        if reached:
            r = reached[-1]
            table.append(
                {
                    "minutes": mark,
                    "step": r["step"],
                    "nats_per_token": r["nats_per_token"],
                    "fraction_closed": r["fraction_closed"],
                }
            )
            print(
                f"{mark:5.1f} min  step {int(r['step']):6d}  {r['nats_per_token']:.4f} nats/token  "
                f"closed {100 * r['fraction_closed']:.1f} %"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"summary": summary, "records": records, "marks": table}, handle, indent=1)


if __name__ == "__main__":
    main()
