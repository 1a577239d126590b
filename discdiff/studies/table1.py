r"""The ReMDM paper's Table 1 at CPU scale: the scaling study on a language with exact scores.

`run_synthetic_study` samples one grid (samplers × $T$ × nucleus × seeds; the
job of `discdiff quickstart` and `discdiff scale`), `run_table1` the paper's
rows and columns, one grid per nucleus setting, seeds pooled into cells.
Samples are scored by their exact negative log-likelihood per token under the
language, reported as the gap to the language's exact entropy (0 for typical
data; a sampler that lowers it below 0 does so by losing diversity), and by
their token-histogram entropy. The language's exact denoiser is included as
a "perfect model": what each sampler does when the model is not the bottleneck.

The paper's baselines join the same table when given: score models (SEDD,
`train.objective: score-entropy`) sampled with SEDD's analytic and Euler
samplers at the same $T$, and autoregressive models ("AR (T=L)" rows).
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from discdiff._io import atomic_write
from discdiff.config import build_strategy
from discdiff.data.synthetic import ExactLanguage, SyntheticLanguage
from discdiff.evaluation.metrics import language_metrics, mauve_score
from discdiff.evaluation.study import (
    autoregressive_study,
    format_table,
    plot_study,
    scaling_study,
    summarize,
    write_rows,
)
from discdiff.models.protocol import Denoiser
from discdiff.presets import PAPER
from discdiff.processes.base import Strategy
from discdiff.processes.masking.process import MaskingProcess
from discdiff.provenance import provenance
from discdiff.sampling.autoregressive import NextTokenModel
from discdiff.shaping import Nucleus
from discdiff.studies.settings import STUDY

__all__ = [
    "TABLE1_METRICS",
    "Featurizer",
    "run_synthetic_study",
    "run_table1",
    "score_strategies",
    "strategies",
]


def strategies(full: bool = False) -> dict[str, Strategy]:
    """The samplers of the study, built from `discdiff.studies.STUDY`.

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
    """SEDD's samplers for score models, built from `discdiff.studies.STUDY`.

    Args:
        full: Add the Euler sampler.
    """
    return {
        name: build_strategy(form, key=f"score_strategies[{name!r}]")
        for name, form in STUDY.score_strategies(full).items()
    }


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
    samplers: tuple[str, ...] | None = None,
    perfect: tuple[str, ...] = STUDY.quickstart_perfect,
    batch_size: int | None = None,
    progress: bool = True,
    denoisers: dict[str, Denoiser] | None = None,
    score_models: dict[str, Denoiser] | None = None,
    autoregressive: dict[str, NextTokenModel] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Run the study, write `study.csv`, `study.json`, `study.png` and `provenance.json` into `out`.

    The samples of row `i` of `study.json` go to `samples.safetensors`
    under the key `"i"`.

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
        samplers: Run only these of the study's samplers (by name, e.g.
            `STUDY.quickstart_samplers`); all by default.
        perfect: Samplers also run with the exact denoiser, with the same
            nucleus settings and seeds.
        batch_size: Samples per sampler call (all of a cell at once by
            default); the tables do not depend on it.
        progress: Show one progress bar over the whole study, in sampler steps
            (a cell of $T$ steps counts $T$; an AR row $L$), with the time left.
        denoisers: More denoisers (e.g. other MDLM runs) sampled like `model`.
        score_models: Named SEDD score models, sampled with `score_strategies(full)`
            at every $T$ and nucleus setting.
        autoregressive: Named causal models, one "AR (T=L)" row per nucleus
            setting and seed.

    Returns:
        The rows and the reference values (data's gap and token entropy).

    Raises:
        ValueError: If `process` and `language` disagree on the vocabulary, or
            `samplers` / `perfect` name a sampler the study does not have.
    """
    language = language or SyntheticLanguage()
    chosen = strategies(full)
    for key, names in (("samplers", samplers or ()), ("perfect", perfect)):
        unknown = [name for name in names if name not in chosen]
        if unknown:
            raise ValueError(f"`{key}` names unknown samplers {unknown}; known: {list(chosen)}")
    process = process or MaskingProcess(vocab_size=language.vocab_size)
    if process.vocab_size != language.vocab_size:
        raise ValueError(
            f"`process` has vocab_size={process.vocab_size}; the language has "
            f"{language.vocab_size} tokens"
        )
    metrics = language_metrics(language, length)
    tokens: list[torch.Tensor] = []
    sampled = {name: chosen[name] for name in samplers} if samplers else chosen
    sedd = score_strategies(full) if score_models else {}
    diffusion_rows = (1 + len(denoisers or {})) * len(sampled) + len(perfect)
    diffusion_rows += len(score_models or {}) * len(sedd)
    ar_steps = len(autoregressive or {}) * length
    total = (diffusion_rows * sum(steps) + ar_steps) * len(top_p) * len(seeds)
    bar = tqdm(total=total, desc="study", unit="step", disable=not progress)
    rows = scaling_study(
        process,
        {"model": model, **(denoisers or {})},
        sampled,
        steps,
        metrics,
        samples=samples,
        length=length,
        top_p=top_p,
        nucleus=nucleus,
        seeds=seeds,
        batch_size=batch_size,
        progress=bar,
        keep=tokens,
    )
    common = {"samples": samples, "length": length, "top_p": top_p, "nucleus": nucleus}
    common |= {"seeds": seeds, "batch_size": batch_size, "progress": bar, "keep": tokens}
    if score_models:
        rows += scaling_study(process, score_models, sedd, steps, metrics, **common)
    if autoregressive:
        rows += autoregressive_study(autoregressive, metrics, **common)
    if perfect:
        oracle = {"perfect": language.denoiser(process=process)}
        subset = {name: chosen[name] for name in perfect}
        rows += scaling_study(process, oracle, subset, steps, metrics, **common)
    bar.close()
    reference = _data_reference(language, length, samples)
    write_rows(rows, out, "study")
    named = {str(i): t.contiguous() for i, t in enumerate(tokens)}
    atomic_write(Path(out) / "samples.safetensors", lambda tmp: save_file(named, tmp))
    settings = _settings(
        model,
        language=language,
        length=length,
        steps=steps,
        samples=samples,
        top_p=top_p,
        nucleus=nucleus,
        seeds=seeds,
        strategies=sampled,
        perfect=perfect,
        denoisers=denoisers,
        score_models=score_models,
        autoregressive=autoregressive,
    )
    record = json.dumps(provenance(settings | {"batch_size": batch_size}, seeds[0]), indent=1)
    atomic_write(Path(out) / "provenance.json", lambda tmp: Path(tmp).write_text(record))
    plot_study(
        rows,
        Path(out) / "study.png",
        metric="nll_gap",
        label="exact NLL − entropy (nats/token)",
        references={"data": reference["nll_gap"]},
        title=f"{type(language).__name__}, L = {length}: sample quality vs sampling budget",
    )
    return rows, reference


@runtime_checkable
class Featurizer(Protocol):
    """A model whose mean-pooled hidden states are MAUVE's features (`CausalTransformer`)."""

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden states `(B, L, width)` of token ids `(B, L)`."""
        ...


TABLE1_METRICS = ("nll_gap", "exact_nll", "token_entropy")
"""The metrics `run_table1` pools over seeds (the first with intervals in the tables)."""


def run_table1(
    model: Denoiser,
    out: str | os.PathLike,
    *,
    language: ExactLanguage | None = None,
    process: MaskingProcess | None = None,
    length: int = 64,
    steps: tuple[int, ...] | None = None,
    samples: int = STUDY.table1_samples,
    seeds: int = STUDY.scale_seeds,
    top_p: tuple[float | None, ...] = STUDY.table1_top_p,
    nucleus: Nucleus = PAPER.nucleus,
    batch_size: int | None = None,
    progress: bool = True,
    denoisers: dict[str, Denoiser] | None = None,
    score_models: dict[str, Denoiser] | None = None,
    autoregressive: dict[str, NextTokenModel] | None = None,
    judge: Featurizer | None = None,
) -> list[dict[str, Any]]:
    r"""The ReMDM paper's Table 1 at CPU scale, on a language with exact likelihoods.

    Rows: MDLM, ReMDM-cap, ReMDM-loop, forward-backward, DFM and MaskGIT on
    `model` (and on `denoisers`), SEDD's analytic sampler on `score_models`,
    "AR (T=L)" on `autoregressive`, and the exact denoiser ("perfect") for
    `STUDY.scale_perfect`; columns $T \in \{L/4, L/2, L, 2L, 4L\}$; one table
    per nucleus setting (the paper's $p = 0.9$ with ReMDM's rule, then off).
    Every cell pools `seeds` seeds of `samples` samples (`summarize`): exact
    NLL gap to the entropy and token entropy with 95 % intervals, NFE and
    seconds per sample. With a `judge` (e.g. an `ARJudge` or any causal
    model with `hidden`, trained on the language apart from every row), also
    MAUVE of each seed's samples against 1024 held-out sequences in the
    judge's features (mean-pooled hidden states), its interval from the
    seeds' spread: the paper's headline metric, which, unlike the NLL gap,
    also falls when samples lose diversity.

    Each nucleus setting is one `run_synthetic_study` in its own folder of
    `out` (`top_p=0.9/`, `top_p=off/`: rows per seed, plot, provenance); a
    folder that already holds the rows of the same settings is read, not
    sampled again, so an interrupted run resumes at the setting it stopped in.

    Args:
        model: The trained MDLM denoiser.
        out: Output directory: `table1.md`, `table1.csv`, `table1.json`
            (cells), a plot per nucleus setting (`table1_0.9.png`,
            `table1_off.png`: the gap against $T$ and NFE with 95 % bands),
            `provenance.json` and the folders above.
        language: The language (the built-in synthetic one by default).
        process: The model's forward process.
        length: Sequence length $L$.
        steps: Step counts (default `STUDY.table1_steps(length)`).
        samples: Samples per seed.
        seeds: Number of sampling seeds ($0, \dots, k-1$).
        top_p: Nucleus settings, one table each.
        nucleus: The nucleus rule.
        batch_size: Samples per sampler call; the results do not depend on it.
        progress: Show progress bars.
        denoisers: More MDLM denoisers, sampled like `model`.
        score_models: SEDD score models.
        autoregressive: Causal models.
        judge: The featuriser of MAUVE (none: no MAUVE column).

    Returns:
        The cells, as written to `table1.json`.
    """
    out = Path(out)
    language = language or SyntheticLanguage()
    steps = steps or STUDY.table1_steps(length)
    rows: list[dict[str, Any]] = []
    for p in top_p:
        part = out / f"top_p={_tag(p)}"
        arguments = {
            "language": language,
            "process": process,
            "length": length,
            "steps": tuple(steps),
            "samples": samples,
            "top_p": (p,),
            "nucleus": nucleus,
            "seeds": tuple(range(seeds)),
            "perfect": STUDY.scale_perfect,
            "denoisers": denoisers,
            "score_models": score_models,
            "autoregressive": autoregressive,
        }
        done = _finished_part(part, model, arguments)
        if done is None:
            done, _ = run_synthetic_study(
                model, part, batch_size=batch_size, progress=progress, **arguments
            )
        if judge is not None:
            _add_mauve(done, load_file(part / "samples.safetensors"), judge, language, length)
        rows += done
    reference = _data_reference(language, length, samples)
    cells = summarize(rows, TABLE1_METRICS + (("mauve",) if judge is not None else ()))
    write_rows(cells, out, "table1")
    sections = []
    for p in top_p:
        chosen = [cell for cell in cells if cell["top_p"] == p]
        title = "no nucleus" if p is None else f"nucleus p = {p:g} ({nucleus} rule)"
        plot_study(
            [row for row in rows if row["top_p"] == p],
            out / f"table1_{_tag(p)}.png",
            metric="nll_gap",
            label="exact NLL − entropy (nats/token)",
            references={"data": reference["nll_gap"]},
            title=f"Table 1 at CPU scale, L = {length}, {title}: quality vs sampling budget",
        )
        sections.append(
            f"### {title}\n\nExact NLL gap to the entropy (nats/token) ± 95 % interval · "
            f"token entropy · NFE; {seeds} seeds × {samples} samples per cell.\n\n"
            + format_table(chosen, "nll_gap", second="token_entropy")
            + f"\n| data | {reference['nll_gap']:.3f} · {reference['token_entropy']:.3f} |"
        )
        if judge is not None:
            sections.append(
                f"MAUVE against held-out data in the judge's features ± 95 % interval (seeds) · "
                f"NFE, {title}:\n\n" + format_table(chosen, "mauve")
            )
        sections.append(
            f"Wall time: seconds per sample (mean of the seeds) · NFE, {title}:\n\n"
            + format_table(chosen, "seconds_per_sample", digits=4)
        )
    table = "\n\n".join(sections) + "\n"
    atomic_write(out / "table1.md", lambda tmp: Path(tmp).write_text(table))
    settings = {
        "length": length,
        "steps": list(steps),
        "samples": samples,
        "seeds": seeds,
        "top_p": list(top_p),
        "nucleus": nucleus,
        "language": repr(language),
        "denoisers": ["model", *(denoisers or {})],
        "score_models": list(score_models or {}),
        "autoregressive": list(autoregressive or {}),
        "perfect": list(STUDY.scale_perfect),
    }
    record = json.dumps(provenance(settings, 0), indent=1)
    atomic_write(out / "provenance.json", lambda tmp: Path(tmp).write_text(record))
    return cells


def _tag(top_p: float | None) -> str:
    return "off" if top_p is None else f"{top_p:g}"


def _finished_part(
    part: Path, model: Denoiser, arguments: dict[str, Any]
) -> list[dict[str, Any]] | None:
    """The rows of a finished `run_table1` part with the same settings and models, else `None`."""
    try:
        written = json.loads((part / "provenance.json").read_text())["settings"]
        rows = json.loads((part / "study.json").read_text())
    except (OSError, ValueError, KeyError):
        return None
    recorded = {key: value for key, value in arguments.items() if key != "process"}
    expected = _settings(model, strategies=strategies(), **recorded)
    return rows if all(written.get(key) == value for key, value in expected.items()) else None


def _settings(
    model: Denoiser,
    *,
    language: ExactLanguage,
    strategies: dict[str, Strategy],
    denoisers: dict[str, Denoiser] | None,
    score_models: dict[str, Denoiser] | None,
    autoregressive: dict[str, NextTokenModel] | None,
    **values: Any,
) -> dict[str, Any]:
    """A study's settings as its `provenance.json` stores them (JSON values), with model hashes."""
    models = {"model": model, **(denoisers or {}), **(score_models or {}), **(autoregressive or {})}
    settings = values | {
        "language": repr(language),
        "strategies": {name: repr(strategy) for name, strategy in strategies.items()},
        "denoisers": ["model", *(denoisers or {})],
        "score_models": list(score_models or {}),
        "autoregressive": list(autoregressive or {}),
        "fingerprints": _fingerprints(models),
    }
    return json.loads(json.dumps(settings))


def _data_reference(language: ExactLanguage, length: int, samples: int) -> dict[str, float]:
    """`language_metrics` of held-out data: `max(samples, 512)` sequences of seed 7."""
    data = language.sample(max(samples, 512), length, generator=torch.Generator().manual_seed(7))
    return language_metrics(language, length)(data)


def _fingerprints(models: dict[str, Any]) -> dict[str, str]:
    """A short SHA-256 of each model's weights (`state_dict`), to tell runs apart."""
    prints = {}
    for name, model in models.items():
        digest = hashlib.sha256()
        for key, value in sorted(getattr(model, "state_dict", dict)().items()):
            digest.update(key.encode())
            digest.update(
                value.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes()
            )
        prints[name] = digest.hexdigest()[:16]
    return prints


@torch.no_grad()
def _features(judge: Featurizer, tokens: torch.Tensor) -> np.ndarray:
    return torch.cat([judge.hidden(chunk).mean(1) for chunk in tokens.split(256)]).float().numpy()


def _add_mauve(
    rows: list[dict[str, Any]],
    samples: dict[str, torch.Tensor],
    judge: Featurizer,
    language: ExactLanguage,
    length: int,
) -> None:
    """Add `mauve` to every row: its samples against 1024 held-out sequences (seed 8)."""
    data = language.sample(1024, length, generator=torch.Generator().manual_seed(8))
    reference = _features(judge, data)
    for i, row in enumerate(rows):
        row["mauve"] = mauve_score(_features(judge, samples[str(i)]), reference)
