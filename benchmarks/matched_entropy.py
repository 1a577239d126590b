"""ReMDM against MDLM at matched diversity: is a lower NLL gap better samples, or fewer kinds?

    python benchmarks/matched_entropy.py --table1 runs/table1 --out runs/matched-entropy

With the paper's nucleus (p = 0.9) every sampler's exact NLL gap on the
benchmark language falls below zero — samples more likely than data — and
ReMDM's falls further than MDLM's. A lower gap below zero is not better by
itself: truncating harder (a smaller p) lowers it too, by dropping diversity.
This script asks the two-sided question. It samples MDLM at $T = 4L$ on a grid
of nucleus masses (the trained model and the exact denoiser, the seeds and
samples of `discdiff scale --preset table1`, whose nucleus-0.9 rows it reads
for ReMDM),
and for each ReMDM row at $p = 0.9$ interpolates MDLM's gap at ReMDM's token
entropy: if ReMDM's gap is below MDLM's at the same diversity, ReMDM wins on
both sides; if not, its lower gap is the nucleus applied more often.

Prints one JSON line per MDLM cell and a Markdown table; writes the rows to
`--out` (`study.json`, `study.csv`, `matched.json`).
"""

import argparse
import itertools
import json
from pathlib import Path

from discdiff.evaluation.study import summarize, write_rows
from discdiff.presets import PAPER
from discdiff.runs import load_run
from discdiff.studies.settings import STUDY
from discdiff.studies.table1 import run_synthetic_study


def interpolate(points: list[tuple[float, float, float]], x: float) -> tuple[float, float] | None:
    """Linear interpolation of (y, half-width) at `x` through points (x, y, half), sorted by x."""
    points = sorted(points)
    for (x0, y0, h0), (x1, y1, h1) in itertools.pairwise(points):
        if x0 <= x <= x1:
            w = (x - x0) / (x1 - x0) if x1 > x0 else 0.0
            return y0 + w * (y1 - y0), max(h0, h1)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="hmm", help="the MDLM run of the table (hmm)")
    parser.add_argument("--table1", required=True, help="a `scale --preset table1` output folder")
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--top-p", type=float, nargs="+", default=[0.75, 0.8, 0.85, 0.9, 0.95, 0.98]
    )
    args = parser.parse_args()
    run = load_run(args.run)
    length = run.config.data.length
    steps = 4 * length
    rows, _ = run_synthetic_study(
        run.denoiser,
        args.out,
        language=run.config.data.language,
        process=run.process,
        length=length,
        steps=(steps,),
        samples=STUDY.table1_samples,
        top_p=tuple(args.top_p),
        seeds=tuple(range(STUDY.scale_seeds)),
        samplers=("MDLM",),
        perfect=("MDLM",),
    )
    metrics = ["nll_gap", "token_entropy"]
    mdlm = summarize(rows, metrics)
    for cell in mdlm:
        print(json.dumps(cell))
    part = Path(args.table1) / f"top_p={PAPER.top_p:g}" / "study.json"
    remdm = [
        c
        for c in summarize(json.loads(part.read_text()), metrics)
        if c["steps"] == steps and c["sampler"].startswith("ReMDM")
    ]
    matched = []
    print("| sampler (denoiser), p = 0.9, T = 4L | token entropy | NLL gap | MDLM's gap there |")
    print("| --- | ---: | ---: | ---: |")
    for cell in remdm:
        curve = [
            (c["token_entropy"], c["nll_gap"], c["nll_gap_ci95"])
            for c in mdlm
            if c["denoiser"] == cell["denoiser"]
        ]
        found = interpolate(curve, cell["token_entropy"])
        entry = {
            "sampler": cell["sampler"],
            "denoiser": cell["denoiser"],
            "token_entropy": cell["token_entropy"],
            "nll_gap": cell["nll_gap"],
            "nll_gap_ci95": cell["nll_gap_ci95"],
            "mdlm_gap_at_entropy": None if found is None else found[0],
            "mdlm_gap_ci95": None if found is None else found[1],
        }
        matched.append(entry)
        there = "outside the grid" if found is None else f"{found[0]:.3f} ± {found[1]:.3f}"
        print(
            f"| {cell['sampler']} ({cell['denoiser']}) | {cell['token_entropy']:.3f} | "
            f"{cell['nll_gap']:.3f} ± {cell['nll_gap_ci95']:.3f} | {there} |"
        )
    write_rows(mdlm, args.out, "mdlm_cells")
    Path(args.out, "matched.json").write_text(json.dumps(matched, indent=1))


if __name__ == "__main__":
    main()
