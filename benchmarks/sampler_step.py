"""Per-step cost of each sampling strategy with the tiny DiT on CPU.

For every strategy it reports, per step: the denoiser's time, the sampler's own
overhead (everything else in the loop), overhead as a percentage of the
denoiser time, and the peak memory the sampler allocates beyond the denoiser's
output, as a multiple of that logits tensor (B, L, V) in float32. Memory is
counted exactly by intercepting every tensor allocation (a TorchDispatchMode),
so it works on the CPU. Prints a table and, with --json, JSON lines.
`--noise sequence` draws through a `SequenceGenerator` (per-sequence streams,
batch-size-independent samples) instead of one `torch.Generator`.

    python benchmarks/sampler_step.py [--length 256] [--vocab 1024] [--batch 4] [--steps 16]
        [--noise torch|sequence]
"""

import argparse
import json
import time

import torch
from memory import PeakMemory

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


STRATEGIES = {
    "MDLM": dd.MaskingPosterior(),
    "ReMDM-cap": dd.RemaskPosterior(dd.CapSchedule(0.04)),
    "ReMDM-rescale": dd.RemaskPosterior(dd.RescaleSchedule(0.015)),
    "ReMDM-conf": dd.RemaskPosterior(dd.ConfidenceSchedule()),
    "ReMDM-loop": dd.RemaskPosterior(dd.LoopSchedule()),
    "forward-backward": dd.RemaskPosterior(dd.ForwardBackward()),
    "DFM": dd.RemaskPosterior(dd.DFMCorrector()),
    "MaskGIT": dd.MaskGITDecoder(),
    "entropy": dd.EntropyDecoder(),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=1024, help="data tokens V")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--noise", choices=("torch", "sequence"), default="torch")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    process = dd.MaskingProcess(vocab_size=args.vocab)
    model = dd.DiT(dd.DiTConfig.tiny(args.vocab + 1, model_length=args.length)).eval()
    with torch.no_grad():
        model.output_layer.linear.weight.normal_(0, 0.02)  # non-uniform predictions
    denoiser = dd.SUBS(model, process)
    logits_bytes = args.batch * args.length * args.vocab * 4
    rows = []
    for top_p in (None, 0.9):
        for name, strategy in STRATEGIES.items():
            sampler = dd.AncestralSampler(
                process, strategy, steps=args.steps, cache=False, top_p=top_p
            )
            timed = Timed(denoiser)
            with torch.no_grad():
                start = time.perf_counter()
                if args.noise == "torch":
                    generator = torch.Generator().manual_seed(0)
                else:
                    generator = dd.rng.SequenceGenerator(0, args.batch)
                result = sampler.sample(timed, args.batch, args.length, generator=generator)
                total = time.perf_counter() - start
                fixed = denoiser(
                    torch.full((args.batch, args.length), process.mask_id), torch.ones(args.batch)
                )
                short = dd.AncestralSampler(process, strategy, steps=2, cache=False, top_p=top_p)
                with PeakMemory() as memory:
                    short.sample(lambda z, t, fixed=fixed: fixed, args.batch, args.length)
            rows.append(
                {
                    "strategy": name,
                    "top_p": top_p,
                    "steps": result.steps,
                    "nfe": result.nfe,
                    "denoiser_ms_per_step": 1e3 * timed.seconds / result.nfe,
                    "overhead_ms_per_step": 1e3 * (total - timed.seconds) / result.steps,
                    "overhead_pct": 100 * (total - timed.seconds) / timed.seconds,
                    "peak_extra_memory_x_logits": memory.peak / logits_bytes,
                }
            )
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    print(
        f"tiny DiT, B={args.batch}, L={args.length}, V={args.vocab}, T={args.steps}, "
        f"{torch.get_num_threads()} threads, {args.noise} noise"
    )
    print(
        f"{'strategy':17s} {'top_p':>5s} {'nfe':>4s} {'denoiser ms':>11s} "
        f"{'overhead ms':>11s} {'overhead %':>10s} {'peak mem':>9s}"
    )
    for r in rows:
        print(
            f"{r['strategy']:17s} {r['top_p'] or '-':>5} {r['nfe']:4d} "
            f"{r['denoiser_ms_per_step']:11.1f} {r['overhead_ms_per_step']:11.2f} "
            f"{r['overhead_pct']:10.1f} {r['peak_extra_memory_x_logits']:8.2f}x"
        )


if __name__ == "__main__":
    main()
