"""Forward-pass throughput of the DiT presets for each attention backend.

Prints one JSON object per (preset, backend) with tokens/s. Usage:

    python benchmarks/denoiser_forward.py [--batch 8] [--length 256] [--repeats 5]
"""

import argparse
import json
import time

import torch

from discdiff.models import DiT, DiTConfig


def measure(config, batch, length, repeats, device):
    model = DiT(config).to(device).eval()
    tokens = torch.randint(config.vocab_size, (batch, length), device=device)
    sigma = torch.zeros(batch, device=device)
    with torch.no_grad():
        model(tokens, sigma)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model(tokens, sigma)
        if device.type == "cuda":
            torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    return seconds, batch * length / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vocab", type=int, default=1001, help="model vocabulary (V + 1)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backends = ["sdpa", "math"] + (["xformers"] if device.type == "cuda" else [])
    for preset in ("micro", "tiny"):
        for backend in backends:
            config = getattr(DiTConfig, preset)(
                args.vocab, attention=backend, model_length=max(256, args.length)
            )
            seconds, rate = measure(config, args.batch, args.length, args.repeats, device)
            print(
                json.dumps(
                    {
                        "preset": preset,
                        "backend": backend,
                        "device": device.type,
                        "threads": torch.get_num_threads(),
                        "batch": args.batch,
                        "length": args.length,
                        "vocab": args.vocab,
                        "seconds_per_forward": round(seconds, 5),
                        "tokens_per_s": round(rate),
                    }
                )
            )


if __name__ == "__main__":
    main()
