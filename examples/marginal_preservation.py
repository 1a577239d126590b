r"""Marginal preservation, watched: the forward-conditioned reverse chain.

For every remasking strategy, run $z_1 \to z_0$ with $q_\sigma(z_s \mid z_t, x)$ on
a fixed random token sequence and report how far the masked fraction ever
strays from $1 - \alpha_s$ (only sampling noise, if the marginals are
preserved) and how many tokens the strategy remasked on the way. ReMDM-conf,
whose weights depend on which positions are masked, is the exception.

    python examples/marginal_preservation.py [--steps 256] [--smoke]
"""

import argparse
import itertools
import time

import torch
from tqdm.auto import tqdm

from discdiff import (
    CapSchedule,
    ConfidenceSchedule,
    ForwardBackward,
    LogLinear,
    LoopSchedule,
    MaskingPosterior,
    MaskingProcess,
    RemaskPosterior,
    RescaleSchedule,
)


def _strategies() -> dict[str, RemaskPosterior]:
    return {
        "MDLM": MaskingPosterior(),
        "ReMDM-cap(0.04)": RemaskPosterior(CapSchedule(0.04)),
        "ReMDM-rescale(0.5)": RemaskPosterior(RescaleSchedule(0.5)),
        "ReMDM-conf": RemaskPosterior(ConfidenceSchedule()),
        "ReMDM-loop": RemaskPosterior(LoopSchedule(t_on=0.55, t_off=0.05, alpha_on=0.9, eta=0.02)),
        "forward-backward": RemaskPosterior(ForwardBackward()),
    }


def run(
    *, steps: int = 256, batch: int = 64, length: int = 256, vocab: int = 64, seed: int = 0
) -> list[dict[str, float | str]]:
    """Run the core demo and return one row per strategy.

    Args:
        steps: Number of reverse steps $T$.
        batch: Sequences per strategy.
        length: Tokens per sequence.
        vocab: Data vocabulary size.
        seed: Random seed.

    Returns:
        Rows with the strategy, the largest masked-fraction error, the number
        of remasked tokens per sequence and the wall time.
    """
    generator = torch.Generator().manual_seed(seed)
    process = MaskingProcess(schedule=LogLinear(), vocab_size=vocab)
    x = torch.randint(vocab, (batch, length), generator=generator)
    x_probs = torch.nn.functional.one_hot(x, vocab).to(torch.float64)
    grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    rows = []
    strategies = _strategies()
    progress = tqdm(
        total=steps * len(strategies), desc="reverse chains", unit="step", mininterval=0.5
    )
    for name, posterior in strategies.items():
        start = time.perf_counter()
        # Decode confidences: ψ = +inf (weight 0) at masked positions, 1 once decoded
        # (x is the data, so every decoded token has probability 1).
        z = process.sample(x, 1.0, generator=generator)
        worst, remasked = 0.0, 0
        for t, s in itertools.pairwise(grid):
            t_b, s_b = t.expand(batch), s.expand(batch)
            psi = torch.where(process.is_masked(z), torch.inf, 1.0).to(torch.float64)
            z_next = posterior(process, z, x_probs, t_b, s_b, confidence=psi).sample(
                generator=generator
            )
            remasked += int((~process.is_masked(z) & process.is_masked(z_next)).sum())
            z = z_next
            _, alpha_s = posterior.alphas(process, t_b, s_b)
            masked = process.is_masked(z).to(torch.float64).mean()
            worst = max(worst, abs(float(masked - (1 - alpha_s[0]))))
            progress.update()
        rows.append(
            {
                "strategy": name,
                "max |masked - (1-alpha_s)|": worst,
                "remasked / sequence": remasked / batch,
                "seconds": time.perf_counter() - start,
            }
        )
    progress.close()
    return rows


def _print_table(rows: list[dict[str, float | str]]) -> None:
    keys = list(rows[0])
    cells = [[f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print(" | ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for c in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description="marginal preservation of every strategy")
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--smoke", action="store_true", help="a tiny run (CI)")
    args = parser.parse_args()
    size = dict(steps=8, batch=4, length=32) if args.smoke else dict(steps=args.steps)
    _print_table(run(**size))


if __name__ == "__main__":
    main()
