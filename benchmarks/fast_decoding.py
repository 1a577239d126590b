"""Quality vs network calls on the benchmark language: MDLM, threshold (± remasking), dilated.

Samples the shipped `hmm` checkpoint (HMMLanguage, L = 64) with MDLM at several
step counts T and with confidence-threshold decoding (`ThresholdDecoder`, a
budget of T = L steps, the cache making unused steps free) at several τ, alone and
with ReMDM-cap remasking. For each it reports the mean number of network calls
per sequence (`sequence_nfe`, batch-size independent) and the exact NLL gap to
the language's entropy (nats/token) with its 95 % interval (1.96 standard
errors over samples), and the samples' mean token entropy (a sharpened sampler
lowers both; the data's is 2.796). Dilated decoding (`DilatedDecoder`) runs
at T = L/2 ... L/16. Writes JSON lines (`--out`) and a frontier plot (`--plot`).

    python benchmarks/fast_decoding.py [--samples 512] [--out fast_decoding.jsonl]
        [--plot docs/assets/fast_decoding.png] [--perfect] [--only NAME ...]

`--perfect` samples with the language's exact denoiser instead of the checkpoint.
"""

import argparse
import json
import time
from pathlib import Path

import torch

import discdiff as dd
from discdiff.evaluation.metrics import exact_nll, token_entropy
from discdiff.runs import load_run


def configurations(length):
    """(name, strategy, steps) of every point of the frontier."""
    rows = [(f"MDLM T={t}", dd.MaskingPosterior(), t) for t in (length, length // 2, length // 4)]
    for tau in (0.99, 0.95, 0.9, 0.8, 0.7, 0.5):
        rows.append((f"threshold τ={tau}", dd.ThresholdDecoder(tau), length))
    for tau in (0.9, 0.7):
        for steps in (length // 2, length // 4):
            rows.append((f"threshold τ={tau} T={steps}", dd.ThresholdDecoder(tau), steps))
    cap = dd.RemaskPosterior(dd.CapSchedule(0.02))
    rows.append((f"ReMDM-cap T={length // 2}", cap, length // 2))
    rows.append(
        (f"threshold τ=0.9 + cap T={length // 2}", dd.ThresholdDecoder(0.9, cap), length // 2)
    )
    rows.append((f"MaskGIT T={length // 2}", dd.MaskGITDecoder(), length // 2))
    for divisor in (2, 4, 8, 16):
        rows.append((f"dilated T={length // divisor}", dd.DilatedDecoder(), length // divisor))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON lines file")
    parser.add_argument("--plot", default=None, help="frontier plot (png)")
    parser.add_argument("--only", nargs="*", default=None, help="run samplers named in this list")
    parser.add_argument("--read", nargs="*", default=(), help="JSON lines of earlier runs to add")
    parser.add_argument(
        "--perfect", action="store_true", help="the language's exact denoiser, not the checkpoint"
    )
    args = parser.parse_args()
    run = load_run("hmm")
    language, length = run.config.data.language, run.config.data.length
    denoiser = language.denoiser(process=run.process) if args.perfect else run.denoiser
    entropy = language.entropy(length)
    rows = [json.loads(line) for path in args.read for line in Path(path).read_text().splitlines()]
    for name, strategy, steps in configurations(length):
        if args.only is not None and name not in args.only:
            continue
        sampler = dd.AncestralSampler(run.process, strategy, steps=steps)
        start = time.perf_counter()
        with torch.no_grad():
            result = sampler.sample_batches(
                denoiser, args.samples, length, seed=args.seed, batch_size=args.batch
            )
        seconds = time.perf_counter() - start
        nll = exact_nll(language.log_prob, result.tokens).double()
        half = 1.96 * float(nll.std()) / args.samples**0.5
        row = {
            "sampler": name,
            "denoiser": "perfect" if args.perfect else "hmm",
            "samples": args.samples,
            "steps": steps,
            "nfe": float(result.sequence_nfe.double().mean()),
            "nll_gap": float(nll.mean()) - entropy,
            "nll_gap_ci95": half,
            "token_entropy": float(token_entropy(result.tokens).double().mean()),
            "seconds": seconds,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        # One colour a family; a family's step counts joined by a line (threshold: τ = 0.7).
        families = (
            ("MDLM T=", "o", "tab:blue"),
            ("threshold τ=0.7", "^", "tab:green"),
            ("dilated", "D", "tab:red"),
            ("ReMDM-cap", "s", "tab:purple"),
            ("BD n=32 MDLM", "v", "tab:orange"),  # with --read of block_cache.py's rows
            ("BD n=32 dilated", "P", "tab:brown"),
        )
        unique = {r["sampler"]: r for r in reversed(rows) if "cache=none" not in r["sampler"]}
        for prefix, marker, colour in families:
            points = sorted(
                (r for r in unique.values() if r["sampler"].startswith(prefix)),
                key=lambda r: r["nfe"],
            )
            if not points:
                continue
            ax.errorbar(
                [r["nfe"] for r in points],
                [r["nll_gap"] for r in points],
                yerr=[r["nll_gap_ci95"] for r in points],
                fmt=marker + "-",
                color=colour,
                label=prefix.removesuffix(" T=").replace("BD ", "block diffusion "),
                capsize=2,
            )
            for r in points:
                ax.annotate(
                    f"T={r['steps']}",
                    (r["nfe"], r["nll_gap"]),
                    fontsize=7,
                    xytext=(4, 4),
                    textcoords="offset points",
                )
        mdlm = next(r for r in rows if r["sampler"] == f"MDLM T={length}")
        ax.axhspan(
            mdlm["nll_gap"] - mdlm["nll_gap_ci95"],
            mdlm["nll_gap"] + mdlm["nll_gap_ci95"],
            alpha=0.2,
            label="MDLM T=L interval",
        )
        ax.set_xlabel("network calls per sequence")
        ax.set_ylabel("exact NLL gap to the entropy (nats/token)")
        ax.set_title(f"benchmark language (HMM), L={length}, {args.samples} samples")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
