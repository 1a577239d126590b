"""TV to the exact tilted target against the number of particles: steering and resampling alone.

The enumerable case of the tests: a random joint over 3^4 sequences (seed 0), its
exact denoiser, MDLM with 4 steps (q_T enumerated with `sample_distribution`),
r(x) = number of token 0, target q_T e^r / Z. For K = 1 ... 64 particles, 6000
outputs each of `ParticleSampler` with resampling when the ESS falls below K/2
("difference", "max" and "sum" potentials) and with `ess_threshold=0` (plain
importance resampling of K independent draws); the TV of the 6000 draws to the
target, beside the TV of 6000 exact draws (the floor).

    python benchmarks/steering_exact.py
"""

import itertools
import time

import torch

import discdiff as dd
from discdiff.testing import sample_distribution

V, L, N = 3, 4, 6000


def main() -> None:
    torch.set_num_threads(1)
    start = time.time()
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand((V,) * L, generator=generator) ** 3
    oracle = dd.EnumerableOracle(probs / probs.sum())
    states = torch.tensor(list(itertools.product(range(V + 1), repeat=L)))
    table = oracle(states, torch.ones(len(states)))
    base = (V + 1) ** torch.arange(L - 1, -1, -1)

    def denoiser(z, t):  # the oracle, tabulated over every noisy state
        return table[(z * base).sum(-1)]

    sampler = dd.AncestralSampler(dd.MaskingProcess(vocab_size=V), dd.MaskingPosterior(), steps=4)
    sequences, q = sample_distribution(sampler, oracle, L)
    weighted = q * (sequences == 0).sum(-1).double().exp()
    target = weighted / weighted.sum()
    digits = V ** torch.arange(L - 1, -1, -1)

    def reward(x):
        return (x == 0).sum(-1).double()

    def tv(tokens):
        empirical = torch.bincount((tokens * digits).sum(-1), minlength=V**L).double() / N
        return 0.5 * float((empirical - target).abs().sum())

    exact = sequences[
        torch.multinomial(target, N, True, generator=torch.Generator().manual_seed(0))
    ]
    print(f"TV(q_T, target) = {0.5 * float((q - target).abs().sum()):.3f}; floor {tv(exact):.3f}")
    runs = {
        "steering (difference)": {},
        "steering (max)": {"potential": "max"},
        "steering (sum)": {"potential": "sum"},
        "importance resampling": {"ess_threshold": 0.0},
    }
    counts = (1, 2, 4, 8, 16, 32, 64)
    print("| sampler | " + " | ".join(f"K={k}" for k in counts) + " |")
    print("|---|" + "---|" * len(counts))
    for name, options in runs.items():
        cells = []
        for k in counts:
            steered = dd.ParticleSampler(sampler, lambda x: (x == 0).sum(-1).double(), k, **options)
            tokens = steered.sample(
                denoiser, N, L, generator=torch.Generator().manual_seed(1)
            ).tokens
            cells.append(f"{tv(tokens):.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"wall time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
