r"""Every sampler with a perfect model, against the exact truth.

On a random joint distribution over $3^4 = 81$ short sequences, sample with
every strategy at several step counts $T$ using the exact conditional
denoiser, and report the total-variation distance between the samples'
empirical distribution and the truth, next to the floor that sampling noise
alone sets.

    python examples/exact_oracle_study.py [--samples 20000] [--steps 1,4,16,64] [--smoke]
"""

import argparse
import time
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from discdiff import EnumerableOracle
from discdiff.processes import MaskingProcess
from discdiff.processes.masking import EntropyDecoder, MaskGITDecoder
from discdiff.processes.masking.posteriors import MaskingPosterior, RemaskPosterior
from discdiff.processes.masking.remasking import (
    CapSchedule,
    ConfidenceSchedule,
    DFMCorrector,
    ForwardBackward,
    LoopSchedule,
    RescaleSchedule,
)
from discdiff.sampling import AncestralSampler

VOCAB, LENGTH = 3, 4


def _strategies() -> dict[str, object]:
    return {
        "MDLM": MaskingPosterior(),
        "ReMDM-cap(0.02)": RemaskPosterior(CapSchedule(0.02)),
        "ReMDM-rescale(0.2)": RemaskPosterior(RescaleSchedule(0.2)),
        "ReMDM-conf": RemaskPosterior(ConfidenceSchedule()),
        "ReMDM-loop": RemaskPosterior(LoopSchedule()),
        "forward-backward": RemaskPosterior(ForwardBackward()),
        "DFM": RemaskPosterior(DFMCorrector()),
        "MaskGIT": MaskGITDecoder(),
        "entropy order": EntropyDecoder(),
    }


def _total_variation(tokens: torch.Tensor, joint: torch.Tensor) -> float:
    index = (tokens * VOCAB ** torch.arange(LENGTH - 1, -1, -1)).sum(-1)
    empirical = torch.bincount(index, minlength=VOCAB**LENGTH).double() / len(tokens)
    return 0.5 * float((empirical - joint.flatten().double()).abs().sum())


def study(
    *, samples: int = 20_000, steps: Sequence[int] = (1, 4, 16, 64), seed: int = 0
) -> tuple[float, list[dict[str, object]]]:
    """Run the study; return the noise floor and one row per strategy.

    Args:
        samples: Samples per (strategy, T) cell.
        steps: The step counts $T$ to try.
        seed: Seed of the joint distribution and the samplers.

    Returns:
        The TV of `samples` exact draws (the floor), and rows with the strategy
        name, then `(TV, NFE)` for each `T`.
    """
    generator = torch.Generator().manual_seed(seed)
    joint = torch.rand((VOCAB,) * LENGTH, generator=generator) ** 3
    joint = joint / joint.sum()
    oracle = EnumerableOracle(joint)
    process = MaskingProcess(vocab_size=VOCAB)
    exact = oracle.sequences[
        torch.multinomial(joint.flatten(), samples, replacement=True, generator=generator)
    ]
    floor = _total_variation(exact, joint)
    strategies = _strategies()
    rows = []
    with tqdm(total=len(strategies) * len(steps), desc="quickstart", unit="run") as bar:
        for name, strategy in strategies.items():
            row: dict[str, object] = {"strategy": name}
            for T in steps:
                sampler = AncestralSampler(process, strategy, steps=T)
                result = sampler.sample(
                    oracle, samples, LENGTH, generator=torch.Generator().manual_seed(seed + 1)
                )
                row[f"T={T}"] = (_total_variation(result.tokens, joint), result.nfe)
                bar.update()
            rows.append(row)
    return floor, rows


def _print_table(floor: float, rows: list[dict[str, object]]) -> None:
    keys = list(rows[0])
    cells = [
        [str(r[k]) if k == "strategy" else f"{r[k][0]:.3f} ({r[k][1]})" for k in keys] for r in rows
    ]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("TV distance to the true distribution (NFE); exact oracle denoiser")
    print(" | ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for c in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
    print(f"sampling-noise floor (exact samples): {floor:.3f}")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {value}")
    return value


def _step_list(text: str) -> list[int]:
    try:
        return [_positive(part) for part in text.split(",")]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"a comma-separated list of integers: {error}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description="every sampler against the exact truth")
    parser.add_argument("--samples", type=_positive, default=20_000)
    parser.add_argument("--steps", type=_step_list, default=[1, 4, 16, 64])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a tiny run (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.samples, args.steps = 200, [1, 4]
    start = time.perf_counter()
    floor, rows = study(samples=args.samples, steps=args.steps, seed=args.seed)
    _print_table(floor, rows)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
