"""The scaling study on the built-in synthetic language, where every score is exact.

Samples are scored by their exact negative log-likelihood per token under the
language, reported as the gap to the language's exact entropy (0 for typical
data; a sampler that lowers it below 0 does so by losing diversity), and by
their token-histogram entropy. The language's exact denoiser is included as
a "perfect model": what each sampler does when the model is not the bottleneck.

The paper's baselines join the same table when given: score models (SEDD,
`train.objective: score-entropy`) sampled with SEDD's analytic and Euler
samplers at the same $T$, and autoregressive models ("AR (T=L)" rows).
"""

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from discdiff._io import atomic_write
from discdiff.config import build_strategy
from discdiff.data.synthetic import ExactLanguage, SyntheticLanguage
from discdiff.evaluation.metrics import exact_nll, token_entropy
from discdiff.evaluation.study import (
    autoregressive_study,
    plot_study,
    scaling_study,
    write_rows,
)
from discdiff.models.protocol import Denoiser
from discdiff.presets import PAPER, STUDY
from discdiff.processes import MaskingProcess
from discdiff.provenance import provenance
from discdiff.sampling.ancestral import Nucleus, Strategy
from discdiff.sampling.autoregressive import NextTokenModel

__all__ = ["ASSET", "language_metrics", "run_synthetic_study", "score_strategies", "strategies"]

ASSET = Path(__file__).resolve().parent.parent / "assets" / "synthetic"
"""The shipped checkpoint trained on the built-in language (see its README.md)."""


def strategies(full: bool = False) -> dict[str, Strategy]:
    """The samplers of the study, built from `discdiff.presets.STUDY`.

    Args:
        full: Add ReMDM-rescale, ReMDM-conf and entropy ordering.

    Returns:
        Named strategies (posteriors and decoders).
    """
    return {
        name: build_strategy(form, key=f"strategies[{name!r}]")
        for name, form in STUDY.strategies(full).items()
    }


def score_strategies(full: bool = False) -> dict[str, Strategy]:
    """SEDD's samplers for score models, built from `discdiff.presets.STUDY`.

    Args:
        full: Add the Euler sampler.
    """
    return {
        name: build_strategy(form, key=f"score_strategies[{name!r}]")
        for name, form in STUDY.score_strategies(full).items()
    }


def language_metrics(
    language: ExactLanguage, length: int
) -> Callable[[torch.Tensor], dict[str, float]]:
    """Exact NLL per token, its gap to the entropy, and the token-histogram entropy.

    Args:
        language: The language the samples should follow.
        length: Sequence length $L$ (for the exact entropy).

    Returns:
        A function from samples `(N, L)` to `{"exact_nll", "nll_gap", "token_entropy"}`.
    """
    entropy = language.entropy(length)

    def metrics(tokens: torch.Tensor) -> dict[str, float]:
        nll = float(exact_nll(language.log_prob, tokens).mean())
        return {
            "exact_nll": nll,
            "nll_gap": nll - entropy,
            "token_entropy": float(token_entropy(tokens).mean()),
        }

    return metrics


def run_synthetic_study(
    model: Denoiser,
    out: str | os.PathLike,
    *,
    language: ExactLanguage | None = None,
    process: MaskingProcess | None = None,
    length: int = 64,
    steps: tuple[int, ...] = (16, 64, 256),
    samples: int = 128,
    top_p: tuple[float | None, ...] = (None,),
    nucleus: Nucleus = PAPER.nucleus,
    seeds: tuple[int, ...] = (0,),
    full: bool = False,
    perfect: tuple[str, ...] = STUDY.quickstart_perfect,
    batch_size: int | None = None,
    progress: bool = True,
    denoisers: dict[str, Denoiser] | None = None,
    score_models: dict[str, Denoiser] | None = None,
    autoregressive: dict[str, NextTokenModel] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Run the study, write `study.csv`, `study.json`, `study.png` and `provenance.json` into `out`.

    Args:
        model: The trained denoiser.
        out: Output directory.
        language: The language (the built-in one by default).
        process: The forward process the model was trained with (its noise
            schedule times the samplers); default `MaskingProcess(V)` with the
            log-linear schedule.
        length: Sequence length $L$.
        steps: Step counts $T$.
        samples: Samples per cell.
        top_p: Nucleus settings.
        nucleus: The nucleus rule (ReMDM's by default, as in the paper).
        seeds: Sampling seeds.
        full: Include every sampler.
        perfect: Samplers also run with the exact denoiser.
        batch_size: Samples per sampler call (all of a cell at once by
            default); the tables do not depend on it.
        progress: Show progress bars.
        denoisers: More denoisers (e.g. other MDLM runs) sampled like `model`.
        score_models: Named SEDD score models, sampled with `score_strategies(full)`
            at every $T$ and nucleus setting.
        autoregressive: Named causal models, one "AR (T=L)" row per nucleus
            setting and seed.

    Returns:
        The rows and the reference values (data's gap and token entropy).

    Raises:
        ValueError: If `process` and `language` disagree on the vocabulary.
    """
    language = language or SyntheticLanguage()
    process = process or MaskingProcess(vocab_size=language.vocab_size)
    if process.vocab_size != language.vocab_size:
        raise ValueError(
            f"`process` has vocab_size={process.vocab_size}; the language has "
            f"{language.vocab_size} tokens"
        )
    metrics = language_metrics(language, length)
    chosen = strategies(full)
    rows = scaling_study(
        process,
        {"model": model, **(denoisers or {})},
        chosen,
        steps,
        metrics,
        samples=samples,
        length=length,
        top_p=top_p,
        nucleus=nucleus,
        seeds=seeds,
        batch_size=batch_size,
        progress=progress,
    )
    common = {"samples": samples, "length": length, "top_p": top_p, "nucleus": nucleus}
    common |= {"seeds": seeds, "batch_size": batch_size, "progress": progress}
    if score_models:
        sedd = score_strategies(full)
        rows += scaling_study(process, score_models, sedd, steps, metrics, **common)
    if autoregressive:
        rows += autoregressive_study(autoregressive, metrics, **common)
    if perfect:
        oracle = {"perfect": language.denoiser(process=process)}
        subset = {name: chosen[name] for name in perfect}
        rows += scaling_study(
            process,
            oracle,
            subset,
            steps,
            metrics,
            samples=samples,
            length=length,
            seeds=seeds[:1],
            batch_size=batch_size,
            progress=progress,
        )
    data = language.sample(max(samples, 512), length, generator=torch.Generator().manual_seed(7))
    reference = metrics(data)
    write_rows(rows, out, "study")
    settings = {
        "length": length,
        "steps": list(steps),
        "samples": samples,
        "top_p": list(top_p),
        "nucleus": nucleus,
        "language": repr(language),
        "seeds": list(seeds),
        "strategies": {name: repr(strategy) for name, strategy in chosen.items()},
        "perfect": list(perfect),
        "batch_size": batch_size,
        "denoisers": ["model", *(denoisers or {})],
        "score_models": list(score_models or {}),
        "autoregressive": list(autoregressive or {}),
    }
    record = json.dumps(provenance(settings, seeds[0]), indent=1)
    atomic_write(Path(out) / "provenance.json", lambda tmp: Path(tmp).write_text(record))
    plot_study(
        rows,
        Path(out) / "study.png",
        metric="nll_gap",
        label="exact NLL − entropy (nats/token)",
        references={"data": reference["nll_gap"]},
        title=f"Synthetic language, L = {length}: sample quality vs sampling budget",
    )
    return rows, reference
