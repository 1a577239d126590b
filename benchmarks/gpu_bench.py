"""CUDA measurements (benchmarks/gpu.sh; not in CI): forward tokens/s and MFU, T = L sampling.

1. MDLM-small forward (bf16 autocast, as the DiT runs on CUDA): tokens/s and
   model FLOPs utilisation for each attention backend (xformers, SDPA). FLOPs per
   token: $2 P + 4 n_\\text{blocks} L d$ ($P$ the parameters outside the
   embedding, the second term the attention matmuls); MFU against `--peak-tflops`
   (H100/H200 dense bf16: 989).
2. Sampling at T = L: MDLM with and without the $x_\\theta$ cache, and threshold
   decoding (τ = 0.9) with the cache; wall time, NFE and time per call.

The output layer gets random weights with logits of standard deviation 4 (a
zero-initialised one would predict uniform rows). JSON lines on stdout.

    python benchmarks/gpu_bench.py [--device cuda] [--length 1024] [--batch 16]
"""

import argparse
import json
import time

import torch

import discdiff as dd
from discdiff.models.attention import xformers_available


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(args, backend, device):
    config = dd.DiTConfig.small(
        args.vocab,
        model_length=args.length,
        attention=backend,
        hidden_dim=args.hidden,
        n_blocks=args.blocks,
        n_heads=max(1, args.hidden // 64),
    )
    torch.manual_seed(0)
    model = dd.DiT(config).to(device).eval()
    with torch.no_grad():
        model.output_layer.linear.weight.normal_(0, 4.0 / args.hidden**0.5)
    return config, model


def forward_row(args, backend, device):
    config, model = build(args, backend, device)
    tokens = torch.randint(args.vocab, (args.batch, args.length), device=device)
    sigma = torch.zeros(args.batch, device=device)
    with torch.no_grad():
        for _ in range(2):
            model(tokens, sigma)
        sync(device)
        start = time.perf_counter()
        for _ in range(args.repeats):
            model(tokens, sigma)
        sync(device)
    seconds = (time.perf_counter() - start) / args.repeats
    embedding = model.vocab_embed.embedding.numel() if hasattr(model, "vocab_embed") else 0
    params = sum(p.numel() for p in model.parameters()) - embedding
    flops_per_token = 2 * params + 4 * config.n_blocks * args.length * config.hidden_dim
    tokens_per_s = args.batch * args.length / seconds
    return {
        "measure": "forward",
        "backend": backend,
        "batch": args.batch,
        "length": args.length,
        "tokens_per_s": tokens_per_s,
        "mfu": tokens_per_s * flops_per_token / (args.peak_tflops * 1e12),
    }


def sampling_rows(args, device):
    _, model = build(args, "auto", device)
    process = dd.MaskingProcess(vocab_size=args.vocab - 1)
    denoiser = dd.SUBS(model, process)
    runs = {
        "MDLM T=L, no cache": (dd.MaskingPosterior(), False),
        "MDLM T=L, x_theta cache": (dd.MaskingPosterior(), True),
        "threshold 0.9 T=L, x_theta cache": (dd.ThresholdDecoder(0.9), True),
    }
    for name, (strategy, cache) in runs.items():
        sampler = dd.AncestralSampler(process, strategy, steps=args.length, cache=cache)
        generator = torch.Generator(device).manual_seed(0)
        sync(device)
        start = time.perf_counter()
        result = sampler.sample(
            denoiser, args.sample_batch, args.length, generator=generator, device=device
        )
        sync(device)
        seconds = time.perf_counter() - start
        yield {
            "measure": "sampling",
            "sampler": name,
            "batch": args.sample_batch,
            "length": args.length,
            "nfe": result.nfe,
            "seconds": seconds,
            "seconds_per_call": seconds / result.nfe,
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--vocab", type=int, default=50258, help="V + 1")
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--sample-batch", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    args = parser.parse_args()
    device = torch.device(args.device)
    backends = ["sdpa"] + (["xformers"] if device.type == "cuda" and xformers_available() else [])
    for backend in backends:
        print(json.dumps(forward_row(args, backend, device)), flush=True)
    for row in sampling_rows(args, device):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
