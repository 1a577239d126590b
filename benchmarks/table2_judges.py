"""Does Table 2's verdict depend on the judge? Rescore a table2 folder's samples under other judges.

`discdiff scale --preset table2` scores its samples with one `FeatureJudge`
(64 hidden units, seed 0). This script rescores the samples it kept
(`table2_samples.safetensors`) with judges of other widths and seeds, all
trained on the same clean training digits, and prints per judge: the data
floor, each cell's FID (mean over the seeds), each sampler's paired FID
difference from MDLM at every T (mean ± 95 % interval over seeds), and
whether the samplers' FID ranking at each T is the one the default judge
gives.

    python benchmarks/table2_judges.py runs/table2 --widths 32 64 128 --judge-seeds 0 1 2
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from discdiff.data.digits import split_digits
from discdiff.evaluation.metrics import frechet_distance
from discdiff.studies.table2 import (
    FeatureJudge,
    balanced_subset,
    paired_differences,
    table2_metrics,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a `discdiff scale --preset table2` output")
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--judge-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    stored = json.loads((args.folder / "table2_rows.json").read_text())
    samples = load_file(args.folder / "table2_samples.safetensors")
    rows, targets = stored["rows"], samples["targets"]
    (train_x, train_y), (test_x, test_y) = split_digits(seed=0)
    cells = list(dict.fromkeys((r["sampler"], r["steps"]) for r in rows))
    results = []
    rankings = {}
    for width in args.widths:
        for seed in args.judge_seeds:
            start = time.perf_counter()
            judge = FeatureJudge(train_x, train_y, width=width, seed=seed)
            reference = judge.features(test_x)
            scored = [
                r | table2_metrics(samples[str(i)], targets, judge, reference)
                for i, r in enumerate(rows)
            ]
            per_class = len(targets) // int(targets.max() + 1)
            draws = len(stored["data"]["fid_per_seed"])
            floor = np.mean(
                [
                    frechet_distance(
                        judge.features(train_x[balanced_subset(train_y, per_class, s)]), reference
                    )
                    for s in range(draws)
                ]
            )
            fid = {
                cell: float(
                    np.mean([r["fid"] for r in scored if (r["sampler"], r["steps"]) == cell])
                )
                for cell in cells
            }
            paired = paired_differences(scored, "fid")
            ranking = {
                T: [
                    s
                    for s, _ in sorted(
                        ((s, fid[(s, t)]) for s, t in cells if t == T), key=lambda x: x[1]
                    )
                ]
                for T in sorted({t for _, t in cells})
            }
            rankings[(width, seed)] = ranking
            result = {
                "width": width,
                "judge_seed": seed,
                "judge_accuracy": judge.accuracy(test_x, test_y),
                "data_fid": float(floor),
                "fid": {f"{s} T={t}": v for (s, t), v in fid.items()},
                "paired_fid_vs_mdlm": {
                    f"{d['sampler']} T={d['steps']}": [d["difference"], d["ci95"]] for d in paired
                },
                "ranking": {str(T): order for T, order in ranking.items()},
                "seconds": time.perf_counter() - start,
            }
            results.append(result)
            print(
                f"judge width {width} seed {seed}: test accuracy {result['judge_accuracy']:.3f}, "
                f"data FID {floor:.2f}"
            )
            for T, order in ranking.items():
                print(f"  T={T}: " + " < ".join(f"{s} {fid[(s, T)]:.2f}" for s in order))
            for d in paired:
                print(
                    f"  ΔFID {d['sampler']:>10s} − MDLM, T={d['steps']:>3d}: "
                    f"{d['difference']:+.2f} ± {d['ci95']:.2f}"
                )
    default = rankings.get((64, 0))
    if default is not None:
        same = sum(r == default for r in rankings.values())
        print(f"{same} of {len(rankings)} judges rank the samplers as the default judge at every T")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
