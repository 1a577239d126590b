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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from discdiff._io import atomic_write
from discdiff.models.protocol import Denoiser
from discdiff.presets import PAPER
from discdiff.processes.base import ForwardProcess, Strategy
from discdiff.sampling.ancestral import AncestralSampler
from discdiff.sampling.autoregressive import AutoregressiveSampler, NextTokenModel
from discdiff.shaping import Nucleus, Shaping

__all__ = [
    "AR_SAMPLER",
    "CELL",
    "autoregressive_study",
    "format_table",
    "plot_study",
    "scaling_study",
    "student_t975",
    "summarize",
    "write_rows",
]

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
    progress: bool | tqdm = True,
    keep: list[torch.Tensor] | None = None,
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
        progress: Show a progress bar over the cells, or advance this bar
            (a `tqdm` of a whole job) by each cell's $T$.
        keep: If given, every row's samples `(samples, L)` are appended to
            it, in row order.

    Returns:
        One dict per cell: denoiser, sampler, steps, the `Shaping`'s fields
        (temperature, top_k, top_p, nucleus, float64; `top_p` `None`: off), seed, nfe
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
    for d, s, T, p, seed in _advancing(cells, progress, "scaling study", lambda cell: cell[2]):
        shaping = Shaping(top_p=p, nucleus=nucleus)
        sampler = AncestralSampler(process, strategies[s], steps=T, shaping=shaping)
        run = {"denoiser": d, "sampler": s, "steps": T, **shaping.to_dict()}
        rows.append(
            _scored(sampler, denoisers[d], run, seed, samples, length, batch_size, metrics, keep)
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
    progress: bool | tqdm = True,
    keep: list[torch.Tensor] | None = None,
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
        progress: Show a progress bar over the rows, or advance this bar
            (a `tqdm` of a whole job) by $L$ per row.
        keep: If given, every row's samples are appended to it, in row order.

    Returns:
        One dict per (model, top_p, seed): `sampler` is `AR_SAMPLER`,
        `steps` and `nfe` are $L$.
    """
    cells = [(m, p, seed) for m in models for p in top_p for seed in seeds]
    rows = []
    for m, p, seed in _advancing(cells, progress, "AR rows", lambda cell: length):
        shaping = Shaping(top_p=p, nucleus=nucleus)
        sampler = AutoregressiveSampler(shaping=shaping)
        run = {"denoiser": m, "sampler": AR_SAMPLER, "steps": length, **shaping.to_dict()}
        rows.append(
            _scored(sampler, models[m], run, seed, samples, length, batch_size, metrics, keep)
        )
    return rows


def _advancing(
    cells: list[tuple], progress: bool | tqdm, desc: str, steps: Callable[[tuple], int]
) -> Iterator[tuple]:
    """The cells, with a bar of their own, or advancing the job's bar by `steps(cell)` each."""
    if isinstance(progress, bool):
        yield from tqdm(cells, desc=desc, disable=not progress)
        return
    for cell in cells:
        yield cell
        progress.update(steps(cell))


def _scored(
    sampler: Any,
    model: Any,
    run: dict[str, Any],
    seed: int,
    samples: int,
    length: int,
    batch_size: int | None,
    metrics: Metrics,
    keep: list[torch.Tensor] | None,
) -> dict[str, Any]:
    """Draw one cell's samples with `sampler.sample_batches`, time and score them: its row."""
    start = time.perf_counter()
    result = sampler.sample_batches(model, samples, length, seed=seed, batch_size=batch_size)
    seconds = time.perf_counter() - start
    if keep is not None:
        keep.append(result.tokens)
    return run | {
        "seed": seed,
        "samples": samples,
        "nfe": int(result.sequence_nfe.max()),
        "seconds_per_sample": seconds / samples,
        **metrics(result.tokens),
    }


CELL = ("denoiser", "sampler", "steps", "top_p", "nucleus")
"""The fields that name a cell of a study table (rows of one cell differ by seed)."""


def summarize(rows: list[dict[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    r"""Pool the seeds of every cell: means, standard errors and 95 % intervals.

    A cell's $k$ seeds draw disjoint random streams of $n$ samples each, so
    its mean $\bar m = \frac1k \sum_i m_i$ has the standard error
    $\sqrt{\sum_i \mathrm{se}_i^2}/k$ from the seeds' own errors (a metric
    `m` of the rows with an `m_se` field), and the 95 % interval
    $\bar m \pm 1.96\,\mathrm{se}$ (the normal quantile: every cell pools
    hundreds of samples). A metric without a per-seed error (e.g. MAUVE of
    each seed's samples) gets its error from the seeds' spread,
    $s/\sqrt k$, and Student's $t_{k-1}$ quantile. The seed-to-seed
    standard deviation $s$ is kept beside every metric as a check.

    Args:
        rows: `scaling_study` / `autoregressive_study` rows.
        metrics: Row keys to pool.

    Returns:
        One dict per cell, in first-seen order: the `CELL` fields, `seeds`,
        `samples` (all seeds), `nfe` (the most over seeds),
        `seconds_per_sample` (mean), and per metric `m`, `m_se`, `m_ci95`,
        `m_seed_sd` (a metric without `m_se` in the rows and only one seed
        gets the mean only).
    """
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        cells.setdefault(tuple(row[k] for k in CELL), []).append(row)
    out = []
    for key, members in cells.items():
        k = len(members)
        cell = dict(zip(CELL, key, strict=True))
        cell |= {
            "seeds": k,
            "samples": sum(row.get("samples", 0) for row in members),
            "nfe": max(row["nfe"] for row in members),
            "seconds_per_sample": sum(row["seconds_per_sample"] for row in members) / k,
        }
        for metric in metrics:
            values = [float(row[metric]) for row in members]
            mean = sum(values) / k
            spread = (
                math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1)) if k > 1 else math.nan
            )
            cell[metric] = mean
            if f"{metric}_se" in members[0]:
                se = math.sqrt(sum(float(row[f"{metric}_se"]) ** 2 for row in members)) / k
                quantile = 1.96
            elif k > 1:
                se, quantile = spread / math.sqrt(k), student_t975(k - 1)
            else:
                continue
            cell |= {f"{metric}_se": se, f"{metric}_ci95": quantile * se}
            cell[f"{metric}_seed_sd"] = spread
        out.append(cell)
    return out


_STUDENT_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def student_t975(df: int) -> float:
    """Student's $t$ 97.5 % quantile at `df` degrees of freedom (tabled to 10; then ±0.3 %).

    Example:
        >>> student_t975(2)
        4.303
    """
    return _STUDENT_T975[df - 1] if df <= len(_STUDENT_T975) else 1.96 + 2.4 / df


def format_table(
    cells: list[dict[str, Any]], metric: str, *, second: str | None = None, digits: int = 3
) -> str:
    """A Markdown table of `summarize` cells: one row per (denoiser, sampler), one column per $T$.

    Each entry reads `metric ± 95 % interval · second · NFE` (the interval
    where the cells have one, `second` when given).

    Args:
        cells: `summarize` output for one nucleus setting.
        metric: The main number.
        second: A second number shown after it (e.g. `token_entropy`).
        digits: Decimals.

    Returns:
        The table, with a header line naming the columns.
    """
    steps = sorted({cell["steps"] for cell in cells})
    names = list(dict.fromkeys((cell["sampler"], cell["denoiser"]) for cell in cells))
    lines = [
        "| sampler (denoiser) | " + " | ".join(f"T = {T}" for T in steps) + " |",
        "| --- |" + " ---: |" * len(steps),
    ]
    for sampler, denoiser in names:
        entries = []
        for T in steps:
            found = [
                c
                for c in cells
                if (c["sampler"], c["denoiser"], c["steps"]) == (sampler, denoiser, T)
            ]
            if not found:
                entries.append("")
                continue
            cell = found[0]
            text = f"{cell[metric]:.{digits}f}"
            if f"{metric}_ci95" in cell:
                text += f" ± {cell[f'{metric}_ci95']:.{digits}f}"
            if second is not None:
                text += f" · {cell[second]:.{digits}f}"
            entries.append(f"{text} · {cell['nfe']}")
        lines.append(f"| {sampler} ({denoiser}) | " + " | ".join(entries) + " |")
    return "\n".join(lines)


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

    Seeds are pooled by `summarize`; where the rows carry `metric_se`, a band
    shows each point's 95 % interval. The NFE of a point is the most over its
    seeds.

    Args:
        rows: Output of `scaling_study`.
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

    cells = summarize([row for row in rows if math.isfinite(row[metric])], [metric])
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault((cell["denoiser"], cell["sampler"], cell["top_p"]), []).append(cell)
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    # One colour per sampler (and nucleus setting), one line style per denoiser.
    colours = {
        key: f"C{i % 10}" for i, key in enumerate(dict.fromkeys((s, p) for _, s, p in groups))
    }
    for (denoiser, sampler, top_p), members in groups.items():
        members.sort(key=lambda cell: cell["steps"])
        values = [cell[metric] for cell in members]
        name = f"{sampler} ({denoiser})" + ("" if top_p is None else f", p={top_p}")
        style = "--" if denoiser != next(iter(groups))[0] else "-"
        for axis, x in zip(axes, ("steps", "nfe"), strict=True):
            xs = [cell[x] for cell in members]
            colour = colours[sampler, top_p]
            (line,) = axis.plot(xs, values, style, color=colour, marker="o", label=name)
            if f"{metric}_ci95" in members[0]:
                ci = [cell[f"{metric}_ci95"] for cell in members]
                low = [v - c for v, c in zip(values, ci, strict=True)]
                high = [v + c for v, c in zip(values, ci, strict=True)]
                axis.fill_between(xs, low, high, color=line.get_color(), alpha=0.15, lw=0)
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
