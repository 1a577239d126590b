r"""The study commands, `discdiff quickstart` and `discdiff scale`: from run folders to reports.

Each function does one command's work (load the runs, run the study, write
its files under `out` as the folder's only writer) and returns the text the
command prints: the table of exact NLL gaps with 95 % intervals and its
reading (`study_report`), or the written Markdown table of a preset.
`discdiff.cli` only parses the options and prints what these return.
"""

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from discdiff._io import writing
from discdiff.config import ConfigError
from discdiff.evaluation.study import summarize
from discdiff.models.score import ScoreModel
from discdiff.objectives import Method
from discdiff.presets import PAPER
from discdiff.runs import Run, load_config, load_run, train_run
from discdiff.studies.settings import STUDY
from discdiff.studies.table1 import run_synthetic_study, run_table1

__all__ = ["compared_runs", "quickstart", "reading", "scale", "study_report"]


def quickstart(
    out: str | Path,
    *,
    samples: int = STUDY.quickstart_samples,
    top_p: float | None = STUDY.quickstart_top_p,
    batch_size: int | None = None,
    from_scratch: bool = False,
    minutes: float = 5.0,
    compare: Sequence[str] = (),
) -> str:
    """`discdiff quickstart`: the small Table 1 on `STUDY.quickstart_run` (or a model trained now).

    Samples MDLM, ReMDM-cap and ReMDM-loop (`STUDY.quickstart_samplers`) at
    $T = L/4, L, 4L$ and writes `study.csv`, `study.json`, `study.png`, the
    samples and `provenance.json` to `out` (`run_synthetic_study`).

    Args:
        out: Output folder (its only writer while this runs).
        samples: Samples per cell.
        top_p: Nucleus mass with ReMDM's rule (`None` or 1: off).
        batch_size: Samples per sampler call; the results do not depend on it.
        from_scratch: Train the run first (into `out/train`) for `minutes`.
        minutes: Training time with `from_scratch`.
        compare: More runs on the same data (`compared_runs`).

    Returns:
        The report: `study_report` and the files written, with the wall time.

    Raises:
        ConfigError: If a `compare` run has other data.
        FolderBusyError: If another process is writing `out`.
    """
    with writing(out):
        out = Path(out)
        if from_scratch:
            overrides = ["train.steps=null", f"train.max_minutes={minutes}"]
            train_run(load_config(STUDY.quickstart_run, overrides), out / "train")
        run = load_run(out / "train" if from_scratch else STUDY.quickstart_run)
        length = run.config.data.length
        start = time.perf_counter()
        rows, reference = run_synthetic_study(
            run.denoiser,
            out,
            language=run.config.data.language,
            process=run.process,
            length=length,
            samples=samples,
            steps=STUDY.quickstart_steps(length),
            top_p=(None if top_p == 1.0 else top_p,),
            samplers=STUDY.quickstart_samplers,
            perfect=STUDY.quickstart_perfect,
            batch_size=batch_size,
            **compared_runs(compare, run),
        )
        return (
            study_report(rows, reference)
            + f"\nwrote {out / 'study.csv'}, {out / 'study.json'} and {out / 'study.png'} "
            f"({time.perf_counter() - start:.0f} s)"
        )


def scale(
    out: str | Path,
    *,
    run: str | None = None,
    preset: str | None = None,
    model: str | None = None,
    steps: Sequence[int] | None = None,
    samples: int | None = None,
    seeds: int | None = None,
    batch_size: int | None = None,
    nucleus: bool = False,
    compare: Sequence[str] = (),
    judge: str | None = None,
) -> str:
    """`discdiff scale`: the full scaling study of a run, or a preset (Table 1, Table 2).

    Without a preset: every sampler (`STUDY.strategies(full=True)`) × $T$ ×
    nucleus × seed and the perfect-model rows (`run_synthetic_study`).
    `preset="table1"`: `run_table1` (with MAUVE when `judge` names an
    autoregressive run). `preset="table2"`: `run_table2` on the digits DiT
    folder `model`. Unset sizes take `STUDY`'s values for the chosen job.

    Args:
        out: Output folder (its only writer while this runs).
        run: A run on synthetic data (a folder or a built-in run); not for table2.
        preset: `None`, `"table1"` or `"table2"`.
        model: table2: a class-conditional digits DiT folder.
        steps: Step counts.
        samples: Samples per cell and seed (table2: per class).
        seeds: Number of seeds.
        batch_size: Samples per sampler call; the results do not depend on it.
        nucleus: Also run with the paper's `top_p` (no preset).
        compare: More runs on the same data (`compared_runs`).
        judge: table1: an autoregressive run whose features give MAUVE.

    Returns:
        The report: `study_report`, or the preset's Markdown table and the
        file written, with the wall time.

    Raises:
        ConfigError: For a missing `run` or `model`, a run without exact
            likelihoods, a `judge` that is not autoregressive, a `model` that
            is not a 10-class digits DiT, or a `compare` run with other data.
        FileNotFoundError: If `model` holds no `model.safetensors`.
        FolderBusyError: If another process is writing `out`.
    """
    with writing(out):
        if preset == "table2":
            return _table2(out, model, steps, samples, seeds)
        if run is None:
            raise ConfigError("--run", "the scaling study needs a run (a folder or a built-in run)")
        loaded = load_run(run)
        if loaded.config.data.kind != "synthetic":
            raise ConfigError(
                "data.kind",
                "the scaling study needs exact likelihoods: a run on 'synthetic' data",
            )
        common = {
            "language": loaded.config.data.language,
            "process": loaded.process,
            "length": loaded.config.data.length,
            "batch_size": batch_size,
            **compared_runs(compare, loaded),
        }
        if preset == "table1":
            start = time.perf_counter()
            featurizer = None
            if judge is not None:
                judged = load_run(judge)
                if judged.objective != "autoregressive":
                    raise ConfigError(
                        "train.objective", f"--judge {judge}: needs an autoregressive run"
                    )
                featurizer = judged.network.eval()
            run_table1(
                loaded.denoiser,
                out,
                steps=tuple(steps) if steps else None,
                samples=samples or STUDY.table1_samples,
                seeds=seeds or STUDY.scale_seeds,
                judge=featurizer,
                **common,
            )
            return _written(Path(out) / "table1.md", start)
        rows, reference = run_synthetic_study(
            loaded.denoiser,
            out,
            samples=samples or STUDY.scale_samples,
            steps=tuple(steps or STUDY.scale_steps),
            top_p=(None, PAPER.top_p) if nucleus else (None,),
            seeds=tuple(range(seeds or STUDY.scale_seeds)),
            full=True,
            perfect=STUDY.scale_perfect,
            **common,
        )
        return study_report(rows, reference)


def _table2(
    out: str | Path,
    model: str | None,
    steps: Sequence[int] | None,
    samples: int | None,
    seeds: int | None,
) -> str:
    """`scale(preset="table2")`: `run_table2` on the digits DiT folder `model`."""
    from discdiff.data.digits import DIGITS_VOCAB
    from discdiff.models.dit import DiT
    from discdiff.models.subs import ConditionalSUBS
    from discdiff.processes.masking.process import MaskingProcess
    from discdiff.studies.table2 import run_table2

    if model is None:
        raise ConfigError(
            "--model",
            "--preset table2 needs a class-conditional digits DiT folder (the model/ "
            "that benchmarks/digits_study.py writes)",
        )
    if not (Path(model) / "model.safetensors").is_file():
        raise FileNotFoundError(f"--model {model}: no model.safetensors in that folder")
    network = DiT.from_pretrained(model)
    if network.config.num_classes != 10 or network.config.vocab_size != DIGITS_VOCAB + 1:
        raise ConfigError("--model", f"{model} is not a 10-class digits DiT")
    denoiser = ConditionalSUBS(network, MaskingProcess(vocab_size=DIGITS_VOCAB)).eval()
    start = time.perf_counter()
    with torch.no_grad():
        run_table2(
            denoiser,
            out,
            steps=tuple(steps or STUDY.table2_steps),
            seeds=seeds or STUDY.scale_seeds,
            samples_per_class=samples or STUDY.table2_samples_per_class,
        )
    return _written(Path(out) / "table2.md", start)


def _written(table: Path, start: float) -> str:
    """A preset's report: its Markdown table, then where it went and the wall time."""
    return table.read_text() + f"wrote {table} ({time.perf_counter() - start:.0f} s)"


def compared_runs(runs: Sequence[str], base: Run) -> dict[str, dict[str, Any]]:
    """The `--compare` runs, by kind, for `run_synthetic_study` (named by their folder).

    Args:
        runs: Run folders (or built-in runs) on the same data as `base`.
        base: The study's run.

    Returns:
        `{"denoisers": ..., "score_models": ..., "autoregressive": ...}`: the
        networks by folder name, by their training method
        (`discdiff.objectives.Method`): one that samples itself token by
        token is autoregressive, one wrapped as a `ScoreModel` a score model
        (SEDD), any other a denoiser (MDLM).

    Raises:
        ConfigError: If a run's data (language, length) differs from the base run's.
    """
    kinds: dict[str, dict[str, Any]] = {"denoisers": {}, "score_models": {}, "autoregressive": {}}
    for name in runs:
        run = load_run(name)
        if run.config.to_dict()["data"] != base.config.to_dict()["data"]:
            raise ConfigError("data", f"--compare {name}: other data than the study's run")
        method = Method.named(run.objective)
        if method.sampler is None:  # samples itself, token by token
            kind = "autoregressive"
        else:
            kind = "score_models" if method.wrap is ScoreModel else "denoisers"
        kinds[kind][Path(name).name] = run.network
    return kinds


def study_report(rows: list[dict[str, Any]], reference: dict[str, float]) -> str:
    """The table of gaps with 95 % intervals and NFE, then its reading in three lines.

    Args:
        rows: `run_synthetic_study` rows.
        reference: Its data reference (`nll_gap`, `nll_gap_se`, `token_entropy`).

    Returns:
        The lines, joined by newlines.
    """
    cells = summarize(rows, ["nll_gap", "token_entropy"])
    steps = sorted({c["steps"] for c in cells})
    seen = dict.fromkeys((c["denoiser"], c["sampler"], c["top_p"]) for c in cells)
    nucleus = any(p is not None for _, _, p in seen)
    width = max(24, *(len(f"{s} ({d}) p={p}") + 1 for d, s, p in seen))
    column = 25 if nucleus else 20
    lines = [
        "exact NLL gap to the language's entropy, nats/token: lower is better, 0 is as "
        "likely as the language's own samples",
        f"± 95 % interval ({cells[0]['samples']} samples per cell) · "
        + ("token entropy · " if nucleus else "")
        + "NFE (the most network calls a sequence needed)",
    ]
    if nucleus:
        lines.append(
            "with a nucleus (p < 1) gaps fall below 0 and token entropy below the data's: "
            "there a lower gap is less diverse, not better"
        )
    lines.append(f"{'sampler':{width}s}" + "".join(f"{'T=' + str(T):>{column}s}" for T in steps))
    for denoiser, sampler, top_p in seen:
        by_steps = {
            c["steps"]: c
            for c in cells
            if (c["denoiser"], c["sampler"], c["top_p"]) == (denoiser, sampler, top_p)
        }
        name = f"{sampler} ({denoiser})" + ("" if top_p is None else f" p={top_p}")
        line = "".join(
            f"{c['nll_gap']:>9.3f} ±{c.get('nll_gap_ci95', math.nan):6.3f}"
            + (f"{c['token_entropy']:6.2f}" if nucleus else "")
            + f"{c['nfe']:5d}"
            if (c := by_steps.get(T))
            else " " * column
            for T in steps
        )
        lines.append(f"{name:{width}s}{line}")
    data = f"{reference['nll_gap']:>9.3f} ±{1.96 * reference.get('nll_gap_se', math.nan):6.3f}"
    data += f"{reference['token_entropy']:6.2f}" if nucleus else ""
    lines.append(f"{'data':{width}s}{data}")
    return "\n".join(lines + reading(cells, reference))


def reading(cells: list[dict[str, Any]], reference: dict[str, float]) -> list[str]:
    """The table's reading in three lines (none without no-nucleus MDLM and ReMDM rows).

    How each sampler's gap moves from the second-largest $T$ to the largest;
    whether the best ReMDM beats MDLM there beyond the intervals (the paper's
    claim); how far the best cell stays from data.

    Args:
        cells: `summarize` cells of `nll_gap`.
        reference: The data reference (`nll_gap`).

    Returns:
        Three lines, or none.
    """
    model = {
        (c["sampler"], c["steps"]): c
        for c in cells
        if c["denoiser"] == "model" and c["top_p"] is None
    }
    steps = sorted({T for _, T in model})
    remdm = sorted({s for s, _ in model if s.startswith("ReMDM")})
    if len(steps) < 2 or not remdm or ("MDLM", steps[-1]) not in model:
        return []
    mid, top = steps[-2], steps[-1]
    moves = [
        f"{s} {model[s, mid]['nll_gap']:.3f} → {model[s, top]['nll_gap']:.3f}"
        for s in ["MDLM", *remdm]
        if (s, mid) in model and (s, top) in model
    ]
    best = min(remdm, key=lambda s: model[s, top]["nll_gap"])
    mdlm, winner = model["MDLM", top], model[best, top]
    gain = mdlm["nll_gap"] - winner["nll_gap"]
    ci = math.hypot(mdlm.get("nll_gap_ci95", math.nan), winner.get("nll_gap_ci95", math.nan))
    if gain - ci > 0:
        verdict = "the paper's claim shows: remasking keeps improving where MDLM stalls"
    elif gain + ci < 0:
        verdict = "MDLM is better here: the paper's claim does not hold on this model"
    else:
        verdict = (
            f"within the noise of {mdlm['samples']} samples per cell: the paper's claim is "
            "not resolved (the full Table 1, `discdiff scale --preset table1`, pools 288)"
        )
    return [
        f"from T={mid} to T={top} (no nucleus): " + "; ".join(moves) + ".",
        f"at T={top}, {best} − MDLM = {-gain:+.3f} ± {ci:.3f} nats/token (95 %): {verdict}.",
        f"the best cell ({best}, T={top}) stays {winner['nll_gap'] - reference['nll_gap']:.3f} "
        "nats/token less likely than the language's own samples (data row).",
    ]
