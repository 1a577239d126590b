"""Uniform vs masking noise on the benchmark language at equal training: sample quality vs T.

    python benchmarks/uniform_vs_masking.py --masking hmm --uniform hmm-uniform --samples 256

Loads two runs of the same recipe and training budget (the built-in `hmm`,
trained with `process.name=masking`, and `hmm-uniform`, with
`process.name=uniform`), draws `--samples` sequences from each at
T ∈ {L/4, L, 4L} — MDLM's posterior for masking, `UniformPosterior` for uniform
noise — and the same from each process's exact denoiser (`perfect`), and
prints one JSON line per cell and a markdown table: the held-out NELBO of each
model, the exact NLL gap to the entropy with its 95 % interval, the
token-histogram entropy (the data's is printed too) and the NFE. `--top-p`
adds rows with the paper's nucleus (ReMDM's rule).
"""

import argparse
import json
import time

import torch

import discdiff as dd
from discdiff.evaluation.metrics import exact_nll, token_entropy
from discdiff.objectives import held_out_bound
from discdiff.presets import PAPER
from discdiff.runs import load_run


def cell(sampler, denoiser, language, entropy, samples, length, seed):
    """Samples of one cell and their metrics (gap with a 95 % interval)."""
    start = time.perf_counter()
    result = sampler.sample_batches(denoiser, samples, length, seed=seed, batch_size=64)
    seconds = time.perf_counter() - start
    nll = exact_nll(language.log_prob, result.tokens).double()
    half = 1.96 * float(nll.std()) / samples**0.5
    return {
        "nll_gap": float(nll.mean()) - entropy,
        "nll_gap_95": half,
        "token_entropy": float(token_entropy(result.tokens).mean()),
        "nfe": int(result.sequence_nfe.max()),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--masking", default="hmm", help="the masking run (dir or built-in)")
    parser.add_argument("--uniform", default="hmm-uniform", help="the uniform run")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for kind, name, strategy in (
        ("masking", args.masking, dd.MaskingPosterior()),
        ("uniform", args.uniform, dd.UniformPosterior()),
    ):
        run = load_run(name)
        language, length = run.config.data.language, run.config.data.length
        process = run.process
        entropy = float(language.entropy(length))
        bound = held_out_bound(process, run.denoiser, run.data.validation).nats_per_token
        denoisers = {"model": run.denoiser, "perfect": language.denoiser(process=process)}
        for label, denoiser in denoisers.items():
            for steps in (length // 4, length, 4 * length):
                for top_p in (None, args.top_p) if args.top_p else (None,):
                    sampler = dd.AncestralSampler(
                        process, strategy, steps=steps, top_p=top_p, nucleus=PAPER.nucleus
                    )
                    row = {
                        "process": kind,
                        "denoiser": label,
                        "steps": steps,
                        "top_p": top_p or 1.0,
                        "heldout_nelbo_minus_entropy": None
                        if label == "perfect"
                        else bound - entropy,
                        **cell(
                            sampler, denoiser, language, entropy, args.samples, length, args.seed
                        ),
                    }
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    data = language.sample(512, length, generator=torch.Generator().manual_seed(7))
    print(f"\ndata: token entropy {float(token_entropy(data).mean()):.3f}")
    print("\n| process | denoiser | T | top-p | NLL gap (95 %) | token entropy | NFE |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['process']} | {r['denoiser']} | {r['steps']} | {r['top_p']:g} | "
            f"{r['nll_gap']:.3f} ± {r['nll_gap_95']:.3f} | {r['token_entropy']:.3f} | {r['nfe']} |"
        )


if __name__ == "__main__":
    main()
