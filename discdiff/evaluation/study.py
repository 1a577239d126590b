r"""The inference-time scaling study: samplers × steps × nucleus × seeds.

For every denoiser (a trained model, and optionally a perfect one), every
sampling strategy, step count $T$, nucleus setting and seed, draw samples,
time them, and score them with a metrics function. `autoregressive_study`
adds the rows of autoregressive models ("AR (T=L)": one network call per
token, the same nucleus rule and the same random streams). Rows go to CSV and
JSON; `plot_study` draws quality against $T$ and against the number of
network calls, with reference lines (data).
"""

import csv
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from discdiff._io import atomic_write
from discdiff.models.protocol import Denoiser
from discdiff.presets import PAPER
from discdiff.processes import ForwardProcess
from discdiff.sampling.ancestral import AncestralSampler, Nucleus, Strategy
from discdiff.sampling.autoregressive import AutoregressiveSampler, NextTokenModel

__all__ = ["AR_SAMPLER", "autoregressive_study", "plot_study", "scaling_study", "write_rows"]

AR_SAMPLER = "AR (T=L)"
"""The `sampler` of autoregressive rows."""

Metrics = Callable[[torch.Tensor], dict[str, float]]


def scaling_study(
    process: ForwardProcess,
    denoisers: dict[str, Denoiser],
    strategies: dict[str, Strategy],
    steps: Sequence[int],
    metrics: Metrics,
    *,
    samples: int,
    length: int,
    top_p: Sequence[float | None] = (None,),
    nucleus: Nucleus = PAPER.nucleus,
    seeds: Sequence[int] = (0,),
    batch_size: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Sample and score every combination.

    Args:
        process: The forward process.
        denoisers: Named denoisers (e.g. `{"model": ..., "perfect": ...}`).
        strategies: Named posteriors or decoders.
        steps: Step counts $T$.
        metrics: Scores a `(N, L)` tensor of samples, returning named numbers.
        samples: Samples per cell.
        length: Tokens per sample.
        top_p: Nucleus settings (`None` = off).
        nucleus: The nucleus rule; ReMDM's (the paper's numbers) by default.
        seeds: Sampling seeds.
        batch_size: Samples per sampler call (all at once by default); the
            results do not depend on it.
        progress: Show a progress bar.

    Returns:
        One dict per cell: denoiser, sampler, steps, top_p, nucleus, seed, nfe
        (the most denoiser calls any sample needed), seconds_per_sample and
        the metrics. Sample $i$ of a cell uses the random stream $(seed, i)$,
        so every column but the wall-clock `seconds_per_sample` is the same
        for any `batch_size`.
    """
    cells = [
        (d, s, T, p, seed)
        for d in denoisers
        for s in strategies
        for T in steps
        for p in top_p
        for seed in seeds
    ]
    rows = []
    for d, s, T, p, seed in tqdm(cells, desc="scaling study", disable=not progress):
        sampler = AncestralSampler(process, strategies[s], steps=T, top_p=p, nucleus=nucleus)
        start = time.perf_counter()
        result = sampler.sample_batches(
            denoisers[d], samples, length, seed=seed, batch_size=batch_size
        )
        seconds = time.perf_counter() - start
        rows.append(
            {
                "denoiser": d,
                "sampler": s,
                "steps": T,
                "top_p": p or 1.0,
                "nucleus": nucleus if p else "off",
                "seed": seed,
                "nfe": int(result.sequence_nfe.max()),
                "seconds_per_sample": seconds / samples,
                **metrics(result.tokens),
            }
        )
    return rows


def autoregressive_study(
    models: dict[str, NextTokenModel],
    metrics: Metrics,
    *,
    samples: int,
    length: int,
    top_p: Sequence[float | None] = (None,),
    nucleus: Nucleus = PAPER.nucleus,
    seeds: Sequence[int] = (0,),
    batch_size: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """The rows of autoregressive models, in `scaling_study`'s format.

    Args:
        models: Named causal models (`next_logits`), e.g. `CausalTransformer`s.
        metrics: Scores a `(N, L)` tensor of samples.
        samples: Samples per cell.
        length: Tokens per sample.
        top_p: Nucleus settings (`None` = off).
        nucleus: The nucleus rule (the diffusion rows' one).
        seeds: Sampling seeds.
        batch_size: Samples per call; the results do not depend on it.
        progress: Show a progress bar.

    Returns:
        One dict per (model, top_p, seed): `sampler` is `AR_SAMPLER`,
        `steps` and `nfe` are $L$.
    """
    cells = [(m, p, seed) for m in models for p in top_p for seed in seeds]
    rows = []
    for m, p, seed in tqdm(cells, desc="AR rows", disable=not progress):
        sampler = AutoregressiveSampler(top_p=p, nucleus=nucleus)
        start = time.perf_counter()
        result = sampler.sample_batches(
            models[m], samples, length, seed=seed, batch_size=batch_size
        )
        seconds = time.perf_counter() - start
        rows.append(
            {
                "denoiser": m,
                "sampler": AR_SAMPLER,
                "steps": length,
                "top_p": p or 1.0,
                "nucleus": nucleus if p else "off",
                "seed": seed,
                "nfe": int(result.sequence_nfe.max()),
                "seconds_per_sample": seconds / samples,
                **metrics(result.tokens),
            }
        )
    return rows


def write_rows(rows: list[dict[str, Any]], directory: str | os.PathLike, name: str) -> Path:
    """Write `name.csv` and `name.json` into `directory` (each atomically).

    Args:
        rows: The records (keys become columns, in first-seen order).
        directory: Where to write; created if needed.
        name: File stem.

    Returns:
        The path of the CSV file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    csv_path = directory / f"{name}.csv"

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(csv_path, write_csv)
    atomic_write(
        directory / f"{name}.json", lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=1))
    )
    return csv_path


def plot_study(
    rows: list[dict[str, Any]],
    path: str | os.PathLike,
    *,
    metric: str,
    label: str,
    references: dict[str, float] | None = None,
    title: str = "",
) -> Path:
    """Plot `metric` against $T$ and against NFE, one line per (denoiser, sampler, top_p).

    Args:
        rows: Output of `scaling_study` (averaged over seeds here).
        path: PNG file to write (atomically).
        metric: Row key to plot.
        label: Its axis label.
        references: Horizontal reference lines, e.g. `{"data": 0.0}`.
        title: Figure title.

    Returns:
        The path of the PNG file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    groups: dict[tuple, dict[int, list[tuple[float, float]]]] = {}
    for row in rows:
        if not math.isfinite(row[metric]):
            continue
        key = (row["denoiser"], row["sampler"], row["top_p"])
        groups.setdefault(key, {}).setdefault(row["steps"], []).append((row["nfe"], row[metric]))
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for (denoiser, sampler, top_p), by_steps in groups.items():
        steps = sorted(by_steps)
        values = [sum(v for _, v in by_steps[T]) / len(by_steps[T]) for T in steps]
        nfe = [sum(n for n, _ in by_steps[T]) / len(by_steps[T]) for T in steps]
        name = f"{sampler} ({denoiser})" + ("" if top_p == 1.0 else f", p={top_p}")
        style = "--" if denoiser != next(iter(groups))[0] else "-"
        axes[0].plot(steps, values, style, marker="o", label=name)
        axes[1].plot(nfe, values, style, marker="o", label=name)
    for axis, xlabel in zip(axes, ("sampling steps T", "network calls (NFE)"), strict=True):
        for ref_name, value in (references or {}).items():
            axis.axhline(value, color="grey", linestyle=":", linewidth=1)
            axis.annotate(
                ref_name,
                (1.0, value),
                xycoords=("axes fraction", "data"),
                ha="right",
                va="bottom",
                fontsize=8,
                color="grey",
            )
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.set_xlabel(xlabel)
        axis.grid(alpha=0.3)
    axes[0].set_xticks(sorted({row["steps"] for row in rows}))
    axes[0].set_ylabel(label)
    axes[1].legend(fontsize=7, loc="best")
    figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(figure)
    return path
