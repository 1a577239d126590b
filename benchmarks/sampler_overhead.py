"""Sampler time / (NFE × one forward) on MDLM-small, with and without nucleus, two vocabularies.

For V+1 = 1 025 and 50 258 it builds the MDLM-small DiT (d 768, 12 blocks; `--hidden`
and `--blocks` shrink it), gives its output layer random weights with logits of
standard deviation `--logit-std` (4 by default: peaked, language-model-like
rows; a zero-initialised output layer would give uniform rows), and samples
B = 4, L = 256 with T steps (cache off, so NFE = T + 1) by MDLM and ReMDM-cap,
without nucleus and with top_p = 0.9. The ratio is the whole sampling time over
the time spent inside the network in the same run (the sum of the NFE forwards,
timed one by one); 1.00 means the sampler costs nothing beyond the network.
It also prints the median nucleus size of the first step's rows. JSON lines with --json.

    python benchmarks/sampler_overhead.py [--vocab 1025 50258] [--steps 8] [--threads 1]
"""

import argparse
import json
import time

import torch

import discdiff as dd


class Timed:
    def __init__(self, denoiser):
        self.denoiser, self.seconds = denoiser, 0.0
        self.time_conditioned = dd.models.is_time_conditioned(denoiser)

    def __call__(self, z, t):
        start = time.perf_counter()
        out = self.denoiser(z, t)
        self.seconds += time.perf_counter() - start
        return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[1025, 50258], help="V + 1")
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--logit-std", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    strategies = {
        "MDLM": dd.MaskingPosterior(),
        "ReMDM-cap": dd.RemaskPosterior(dd.CapSchedule(0.04)),
    }
    for width in args.vocab:
        torch.manual_seed(0)
        process = dd.MaskingProcess(vocab_size=width - 1)
        heads = max(1, args.hidden // 64)
        config = dd.DiTConfig.small(
            width,
            hidden_dim=args.hidden,
            n_blocks=args.blocks,
            n_heads=heads,
            model_length=args.length,
        )
        model = dd.DiT(config).eval()
        with torch.no_grad():
            model.output_layer.linear.weight.normal_(0, args.logit_std / args.hidden**0.5)
        denoiser = dd.SUBS(model, process)
        with torch.no_grad():
            z = torch.full((args.batch, args.length), process.mask_id)
            probs = denoiser(z, torch.ones(args.batch)).softmax(-1).reshape(-1, width - 1)
            ordered = probs.sort(-1, descending=True).values.cumsum(-1)
            nucleus_size = float((ordered < 0.9).sum(-1).add(1).float().median())
        for top_p in (None, 0.9):
            for name, strategy in strategies.items():
                sampler = dd.AncestralSampler(
                    process, strategy, steps=args.steps, cache=False, top_p=top_p
                )
                timed = Timed(denoiser)
                with torch.no_grad():
                    start = time.perf_counter()
                    result = sampler.sample(
                        timed, args.batch, args.length, generator=torch.Generator().manual_seed(0)
                    )
                    total = time.perf_counter() - start
                row = {
                    "vocab_plus_mask": width,
                    "strategy": name,
                    "top_p": top_p,
                    "nfe": result.nfe,
                    "forward_s": timed.seconds / result.nfe,
                    "overhead_ms_per_step": 1e3 * (total - timed.seconds) / result.nfe,
                    "ratio": total / timed.seconds,
                    "median_nucleus_size": nucleus_size,
                    "threads": torch.get_num_threads(),
                }
                if args.json:
                    print(json.dumps(row), flush=True)
                else:
                    print(
                        f"V+1={width:6d} {name:10s} top_p={top_p or '-':>4} nfe={result.nfe:3d} "
                        f"forward={row['forward_s']:.3f}s overhead/step="
                        f"{row['overhead_ms_per_step']:7.1f}ms ratio={row['ratio']:.3f} "
                        f"(nucleus ~{nucleus_size:.0f} tokens)",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
