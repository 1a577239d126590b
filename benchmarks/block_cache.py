"""Block diffusion and KV caches on the benchmark language: quality, network calls, time.

In one run, on HMMLanguage (L = 64), with `--samples` sequences each:

- MDLM at T = L and T = L/2, and threshold decoding, on the shipped `hmm`
  checkpoint (full attention): the reference points;
- semi-autoregressive block decoding of the same `hmm` checkpoint (blocks of
  `--block` positions, S steps per block, MDLM's random order or the dilated
  order of `DilatedDecoder`) without a cache and with Fast-dLLM's approximate
  prefix and dual caches: the caches' quality cost;
- the language's exact denoiser sampled block by block (`--perfect-blocks`):
  what a perfect block diffusion model of that block size would give;
- block diffusion checkpoints (`--bd-run`, trained with
  `discdiff train --config hmm model.block_size=16 ...`) sampled block by
  block (MDLM and dilated) without a cache and with the exact KV cache (the
  samples must be identical; the script checks it).

For each: mean network calls per sequence (`sequence_nfe`), positions the
network processed per sequence, wall time, and the exact NLL gap to the
language's entropy (nats/token) with its 95 % interval (1.96 standard errors),
and the mean token entropy of the samples (a sharpened sampler lowers both).

    python benchmarks/block_cache.py [--samples 512] [--bd-run runs/hmm-bd16 runs/hmm-bd32]
        [--perfect-blocks 16 32] [--skip-hmm] [--out block_cache.jsonl]
"""

import argparse
import json
import time
from pathlib import Path

import torch

import discdiff as dd
from discdiff.evaluation.metrics import exact_nll, token_entropy
from discdiff.runs import load_run

STRATEGIES = {"MDLM": dd.MaskingPosterior(), "dilated": dd.DilatedDecoder()}


def draw(sampler, denoiser, samples, length, batch, seed):
    """Sequences `0..samples-1` with their own streams; (tokens, calls/seq, positions/call, s)."""
    tokens, calls, processed, nfe = [], [], 0, 0
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, samples, batch):
            size = min(batch, samples - first)
            generator = dd.rng.SequenceGenerator(seed, size, start=first)
            result = sampler.sample(denoiser, size, length, generator=generator)
            tokens.append(result.tokens)
            calls.append(result.sequence_nfe)
            processed += getattr(result, "tokens_processed", None) or result.nfe * length
            nfe += result.nfe
    seconds = time.perf_counter() - start
    return torch.cat(tokens), torch.cat(calls).double().mean(), processed / nfe, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block", type=int, default=16)
    parser.add_argument("--bd-run", nargs="*", default=["runs/hmm-bd16"], help="BD runs")
    parser.add_argument(
        "--perfect-blocks",
        type=int,
        nargs="*",
        default=[16, 32],
        help="block sizes sampled with the language's exact denoiser (block diffusion's ceiling)",
    )
    parser.add_argument("--out", default=None, help="JSON lines file")
    parser.add_argument("--skip-hmm", action="store_true", help="only the block diffusion rows")
    args = parser.parse_args()
    run = load_run("hmm")
    language, length = run.config.data.language, run.config.data.length
    entropy = language.entropy(length)
    blocks = length // args.block

    def per_block_samplers(n=args.block):
        """(strategy, steps per block): MDLM at n, n/2, n/4; dilated at n/4, n/8."""
        mdlm = [("MDLM", n // d) for d in (1, 2, 4)]
        return mdlm + [("dilated", n // d) for d in (4, 8)]

    rows, samples = [], {}

    def report(name, sampler, denoiser, model, steps):
        tokens, nfe, per_call, seconds = draw(
            sampler, denoiser, args.samples, length, args.batch, args.seed
        )
        nll = exact_nll(language.log_prob, tokens).double()
        row = {
            "model": model,
            "sampler": name,
            "steps": steps,  # in all: per block times the blocks
            "nfe": float(nfe),
            "positions_per_call": per_call,
            "nll_gap": float(nll.mean()) - entropy,
            "nll_gap_ci95": 1.96 * float(nll.std()) / args.samples**0.5,
            "token_entropy": float(token_entropy(tokens).double().mean()),
            "seconds": seconds,
        }
        rows.append(row)
        samples[(model, name)] = tokens
        print(json.dumps(row), flush=True)

    process = run.process
    if not args.skip_hmm:
        for steps in (length, length // 2):
            report(
                f"MDLM T={steps}",
                dd.AncestralSampler(process, dd.MaskingPosterior(), steps),
                run.denoiser,
                "hmm",
                steps,
            )
        report(
            f"threshold τ=0.7 T={length}",
            dd.AncestralSampler(process, dd.ThresholdDecoder(0.7), length),
            run.denoiser,
            "hmm",
            length,
        )
        for name, per_block in per_block_samplers():
            inner = dd.AncestralSampler(process, STRATEGIES[name], per_block)
            for cache in ("none", "prefix", "dual"):
                sampler = dd.BlockSampler(inner, args.block, cache=cache)
                report(
                    f"semi-AR n={args.block} {name} S={per_block} cache={cache}",
                    sampler,
                    run.denoiser,
                    "hmm",
                    per_block * blocks,
                )
    for n in args.perfect_blocks:
        exact = language.denoiser(process=process)
        for strategy, per_block in per_block_samplers(n):
            inner = dd.AncestralSampler(process, STRATEGIES[strategy], per_block)
            report(
                f"exact n={n} {strategy} S={per_block}",
                dd.BlockSampler(inner, n),
                exact,
                "exact",
                per_block * (length // n),
            )
    for path in args.bd_run:
        if not Path(path, "run.yaml").is_file():
            print(f"no run at {path}: skipped")
            continue
        bd = load_run(path)
        n = bd.model.config.block_size
        for strategy, per_block in per_block_samplers(n):
            inner = dd.AncestralSampler(bd.process, STRATEGIES[strategy], per_block)
            names = []
            for cache in ("none", "exact"):
                name = f"BD n={n} {strategy} S={per_block} cache={cache}"
                sampler = dd.BlockSampler(inner, cache=cache)
                report(name, sampler, bd.denoiser, f"bd{n}", per_block * (length // n))
                names.append(name)
            same = torch.equal(samples[(f"bd{n}", names[0])], samples[(f"bd{n}", names[1])])
            print(json.dumps({"identical_cached_and_uncached": same, "sampler": names[1]}))
            rows[-1]["identical_to_uncached"] = same
        tau = dd.ThresholdDecoder(0.7)
        report(
            f"BD n={n} threshold τ=0.7 S={n} cache=exact",
            dd.BlockSampler(dd.AncestralSampler(bd.process, tau, n), cache="exact"),
            bd.denoiser,
            f"bd{n}",
            length,
        )
    print(f"blocks per sequence: {blocks}")
    if args.out:
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
