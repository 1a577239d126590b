r"""The ReMDM paper's Table 2 at CPU scale: class-conditional digits, FID and IS.

The paper's Table 2 draws class-conditional ImageNet images with MaskGIT,
MDLM and ReMDM at a few step counts and scores them by FID and Inception
Score. Here the images are the built-in digits ($L = 64$ pixels, 17
intensities, 10 classes), the model a class-conditional DiT
(`ConditionalSUBS`, the one the digits guidance study trains), and the
Inception network an *independent judge*: a one-hidden-layer classifier
trained only on clean training digits (`FeatureJudge`). Its hidden
activations are FID's features and its class probabilities the Inception
Score's (`discdiff.evaluation.metrics.frechet_distance` and
`inception_score`):

$$
\mathrm{FID} = \lVert \mu_s - \mu_d \rVert^2 + \operatorname{tr}\big(\Sigma_s + \Sigma_d
  - 2 (\Sigma_s^{1/2} \Sigma_d \Sigma_s^{1/2})^{1/2}\big),
$$

$$
\mathrm{IS} = \exp \mathbb{E}_x \, \mathrm{KL}\big(p(y \mid x)
  \,\Vert\, \textstyle\mathbb{E}_x p(y \mid x)\big),
$$

with $(\mu_s, \Sigma_s)$ the samples' feature mean and covariance and
$(\mu_d, \Sigma_d)$ the held-out test digits'. FID is biased upwards at small
sample sizes, so every row uses the same number of samples, and a data row
(training digits of the same size against the same test digits) gives the
floor.

scikit-learn is an optional dependency (`pip install discdiff[digits]`).
"""

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from discdiff._io import atomic_write
from discdiff.evaluation.metrics import frechet_distance, inception_score
from discdiff.evaluation.study import format_table, plot_study, student_t975, summarize, write_rows
from discdiff.processes.masking.process import MaskingProcess
from discdiff.provenance import provenance
from discdiff.sampling.ancestral import AncestralSampler
from discdiff.studies.settings import STUDY

__all__ = [
    "TABLE2_METRICS",
    "FeatureJudge",
    "balanced_subset",
    "paired_differences",
    "run_table2",
    "table2_metrics",
]

TABLE2_METRICS = ("fid", "inception_score", "accuracy")
"""The metrics of `run_table2`'s cells."""


class FeatureJudge:
    r"""An independent digit classifier with one hidden layer: FID's features, IS's classes.

    A scikit-learn `MLPClassifier` (ReLU, `width` units, Adam, fixed seed) on
    intensities scaled to $[0, 1]$, trained on clean training digits only.

    Args:
        tokens: Training images `(N, 64)`, intensities `0..16`.
        labels: Their digits `(N,)`.
        width: Hidden units (the feature dimension).
        seed: Seed of the initialisation and batches.

    Raises:
        ImportError: Without scikit-learn.
    """

    def __init__(
        self,
        tokens: Int[Tensor, "n length"],
        labels: Int[Tensor, "n"],
        *,
        width: int = 64,
        seed: int = 0,
    ) -> None:
        try:
            from sklearn.neural_network import MLPClassifier
        except ImportError:
            raise ImportError(
                "the digits judge needs scikit-learn; install it with `pip install scikit-learn` "
                "(or `pip install discdiff[digits]`)"
            ) from None
        self.model = MLPClassifier(hidden_layer_sizes=(width,), max_iter=2000, random_state=seed)
        self.model.fit(_scaled(tokens), labels.numpy())

    def features(self, tokens: Int[Tensor, "n length"]) -> Float[np.ndarray, "n width"]:
        r"""The hidden layer's activations, $\max(0, x W_1 + b_1)$."""
        hidden = _scaled(tokens) @ self.model.coefs_[0] + self.model.intercepts_[0]
        return np.maximum(hidden, 0.0)

    def probabilities(self, tokens: Int[Tensor, "n length"]) -> Float[np.ndarray, "n classes"]:
        r"""The judge's class probabilities $p(y \mid x)$."""
        return self.model.predict_proba(_scaled(tokens))

    def accuracy(self, tokens: Int[Tensor, "n length"], labels: Int[Tensor, "n"]) -> float:
        """Fraction of `tokens` the judge assigns to `labels`."""
        predicted = self.probabilities(tokens).argmax(-1)
        return float((predicted == labels.cpu().numpy()).mean())


def _scaled(tokens: Tensor) -> np.ndarray:
    return tokens.cpu().double().numpy() / 16.0


def balanced_subset(labels: Int[Tensor, "n"], per_class: int, seed: int) -> Int[Tensor, "k"]:
    """Indices of `per_class` random items of every class of `labels` (the data row's draw).

    Classes in order `0..max(labels)`, each class's items in the order of a
    seeded permutation.

    Example:
        >>> balanced_subset(torch.tensor([0, 1, 0, 1, 1]), 1, seed=0).tolist()
        [0, 4]
    """
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    classes = int(labels.max()) + 1
    return torch.cat([order[labels[order] == c][:per_class] for c in range(classes)])


def table2_metrics(
    tokens: Int[Tensor, "n length"],
    targets: Int[Tensor, "n"],
    judge: FeatureJudge,
    reference: Float[np.ndarray, "m width"],
) -> dict[str, float]:
    """A set of samples' FID against `reference` features, Inception Score and target accuracy.

    Args:
        tokens: Samples `(n, 64)`, intensities `0..16`.
        targets: The digit each sample was drawn for `(n,)`.
        judge: The independent judge.
        reference: `judge.features` of the held-out digits.

    Returns:
        `{"fid": ..., "inception_score": ..., "accuracy": ...}` (`TABLE2_METRICS`).
    """
    return {
        "fid": frechet_distance(judge.features(tokens), reference),
        "inception_score": inception_score(judge.probabilities(tokens)),
        "accuracy": judge.accuracy(tokens, targets),
    }


def paired_differences(
    rows: Sequence[dict[str, Any]], metric: str, *, baseline: str = "MDLM"
) -> list[dict[str, Any]]:
    r"""Each sampler minus `baseline` at the same $T$ and seed: mean difference and interval.

    Seed $i$ of every sampler uses the same targets and generator seed, so
    the per-seed differences $d_i = m_i - m_i^{\mathrm{base}}$ are $k$
    independent draws; their mean $\bar d$ gets the 95 % interval
    $\bar d \pm t_{k-1}\, s_d / \sqrt k$ (Student's $t$). Variation common
    to both samplers at a seed (the same labels, correlated random streams)
    cancels, so this interval is the one to read when asking whether two
    samplers differ; the cells' own intervals overlap more easily.

    Args:
        rows: `run_table2`'s per-seed rows (`sampler`, `steps`, `seed`, `metric`).
        metric: The row key to compare, e.g. `"fid"`.
        baseline: The sampler to subtract.

    Returns:
        One dict per (sampler, steps) other than the baseline, in first-seen
        order: `sampler`, `steps`, `seeds` (paired), `metric`,
        `difference` ($\bar d$), `ci95` (NaN with one seed), `per_seed`.

    Raises:
        ValueError: If no row has sampler `baseline`.

    Example:
        >>> rows = [{"sampler": s, "steps": 4, "seed": i, "fid": f}
        ...         for s, fids in (("MDLM", (5.0, 6.0)), ("ReMDM", (3.0, 3.5)))
        ...         for i, f in enumerate(fids)]
        >>> (only,) = paired_differences(rows, "fid")
        >>> only["sampler"], only["difference"], only["per_seed"]
        ('ReMDM', -2.25, [-2.0, -2.5])
    """
    base = {(r["steps"], r["seed"]): float(r[metric]) for r in rows if r["sampler"] == baseline}
    if not base:
        raise ValueError(f"`baseline` {baseline!r} names no sampler of `rows`")
    pairs: dict[tuple[str, int], list[float]] = {}
    for r in rows:
        key = (r["steps"], r["seed"])
        if r["sampler"] != baseline and key in base:
            pairs.setdefault((r["sampler"], r["steps"]), []).append(float(r[metric]) - base[key])
    out = []
    for (sampler, steps), d in pairs.items():
        k, mean = len(d), float(np.mean(d))
        ci = student_t975(k - 1) * float(np.std(d, ddof=1)) / np.sqrt(k) if k > 1 else float("nan")
        out.append(
            {
                "sampler": sampler,
                "steps": steps,
                "seeds": k,
                "metric": metric,
                "difference": mean,
                "ci95": ci,
                "per_seed": d,
            }
        )
    return out


def run_table2(
    model: Any,
    out: str | os.PathLike,
    *,
    steps: Sequence[int] = STUDY.table2_steps,
    samplers: Sequence[str] = STUDY.table2_samplers,
    seeds: int = STUDY.scale_seeds,
    samples_per_class: int = STUDY.table2_samples_per_class,
    gamma: float = 1.0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    r"""Table 2 on digits: class-conditional samples by each sampler and $T$, FID and IS.

    For every sampler (by name, from `discdiff.studies.STUDY.strategies()`),
    step count and seed, draws `samples_per_class` digits of each class from
    `ClassifierFreeGuidance(gamma)(model, labels)` ($\gamma = 1$: the
    conditional model itself, no guidance) and scores them with a
    `FeatureJudge` trained on the training split (`split_digits(seed=0)`):
    FID against the test split, Inception Score and the judge's accuracy on
    the target classes. Cells pool the seeds (`summarize`: mean and a 95 %
    interval from the seeds' spread, Student's $t$).

    Args:
        model: A class-conditional denoiser (`ConditionalSUBS` over a DiT with
            `num_classes = 10`, in eval mode).
        out: Output directory: `table2.json`/`.csv` (cells), `table2_rows.json`
            (per seed), `table2.md`, `table2.png` (FID against $T$ and NFE,
            with interval bands), `table2_samples.safetensors` (row `i` of
            `table2_rows.json` under the key `"i"`, the target digits under
            `"targets"`, for rescoring) and `provenance.json`. With `MDLM`
            among `samplers`, `table2.md` and `table2_rows.json` also hold
            every other sampler's per-seed FID, IS and accuracy differences
            from MDLM (`paired_differences`). The data row: FID of
            as many training digits (per seed, balanced) against the same
            test digits, IS and accuracy of the test digits (which the
            judge never saw).
        steps: Step counts $T$ (default $L/4$, $L$, $4L$).
        samplers: Sampler names.
        seeds: Sampling seeds per cell ($0, \dots, k-1$).
        samples_per_class: Digits of each class per seed.
        gamma: Guidance strength ($1$: none).
        progress: Show a progress bar.

    Returns:
        The cells, as written to `table2.json`.

    Raises:
        ValueError: If `samplers` names an unknown sampler, `seeds` is below
            1, or `samples_per_class` is not in `1..` the rarest training class.
    """
    from discdiff.config import build_strategy
    from discdiff.data.digits import DIGITS_CLASSES, DIGITS_LENGTH, DIGITS_VOCAB, split_digits
    from discdiff.guidance import ClassifierFreeGuidance

    known = STUDY.strategies(full=True)
    unknown = [name for name in samplers if name not in known]
    if unknown:
        raise ValueError(f"`samplers` names unknown samplers {unknown}; known: {list(known)}")
    (train_x, train_y), (test_x, test_y) = split_digits(seed=0)
    rarest = int(train_y.bincount(minlength=DIGITS_CLASSES).min())
    if seeds < 1 or not 1 <= samples_per_class <= rarest:
        raise ValueError(
            f"`seeds` must be at least 1 and `samples_per_class` in [1, {rarest}] (the rarest "
            f"training class); got seeds={seeds}, samples_per_class={samples_per_class}"
        )
    out = Path(out)
    judge = FeatureJudge(train_x, train_y)
    reference = judge.features(test_x)
    process = MaskingProcess(vocab_size=DIGITS_VOCAB)
    targets = torch.arange(DIGITS_CLASSES).repeat_interleave(samples_per_class)
    denoiser = ClassifierFreeGuidance(gamma)(model, targets)

    cells = [(name, T, seed) for name in samplers for T in steps for seed in range(seeds)]
    rows, tokens = [], []
    for name, T, seed in tqdm(cells, desc="table 2", disable=not progress):
        strategy = build_strategy(known[name], key=f"samplers[{name!r}]")
        sampler = AncestralSampler(process, strategy, steps=T)
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(seed)
        result = sampler.sample(denoiser, len(targets), DIGITS_LENGTH, generator=generator)
        seconds = time.perf_counter() - start
        tokens.append(result.tokens.contiguous())
        rows.append(
            {
                "denoiser": "model",
                "sampler": name,
                "steps": T,
                **sampler.shaping.to_dict(),
                "seed": seed,
                "samples": len(targets),
                "nfe": result.nfe,
                "seconds_per_sample": seconds / len(targets),
                **table2_metrics(result.tokens, targets, judge, reference),
            }
        )
    # The floor: FID of training digits (as many, balanced like the samples);
    # IS and accuracy of the test digits, which the judge never saw.
    floor = [
        frechet_distance(
            judge.features(train_x[balanced_subset(train_y, samples_per_class, seed)]), reference
        )
        for seed in range(seeds)
    ]
    data = {
        "fid": float(np.mean(floor)),
        "fid_per_seed": floor,
        "inception_score": inception_score(judge.probabilities(test_x)),
        "accuracy": judge.accuracy(test_x, test_y),
    }
    summary = summarize(rows, TABLE2_METRICS)
    write_rows(summary, out, "table2")
    paired = (
        {metric: paired_differences(rows, metric) for metric in TABLE2_METRICS}
        if "MDLM" in samplers and len(samplers) > 1
        else {}
    )
    stored = json.dumps({"rows": rows, "data": data, "paired_with_mdlm": paired}, indent=1)
    atomic_write(out / "table2_rows.json", lambda tmp: Path(tmp).write_text(stored))
    named = {str(i): t for i, t in enumerate(tokens)} | {"targets": targets.contiguous()}
    atomic_write(out / "table2_samples.safetensors", lambda tmp: save_file(named, tmp))
    sections = [
        f"{title} ± 95 % interval ({seeds} seeds × {len(targets)} samples) · NFE:\n\n"
        + format_table(summary, metric, digits=digits)
        + f"\n| data | {data[metric]:.{digits}f} |"
        for metric, title, digits in (
            ("fid", "FID on the judge's features (lower is better)", 2),
            ("inception_score", "Inception Score from the judge (higher is better)", 2),
            ("accuracy", "The judge's accuracy on the target class", 3),
        )
    ]
    if paired:
        lines = [
            f"Paired against MDLM (same T and seed; mean difference ± 95 % interval over "
            f"{seeds} seeds, Student's t):\n",
            "| sampler | T | ΔFID | ΔIS | Δaccuracy |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for i, fid in enumerate(paired["fid"]):
            entries = [
                f"{d['difference']:+.{digits}f} ± {d['ci95']:.{digits}f}"
                for d, digits in (
                    (fid, 2),
                    (paired["inception_score"][i], 2),
                    (paired["accuracy"][i], 3),
                )
            ]
            lines.append(f"| {fid['sampler']} | {fid['steps']} | " + " | ".join(entries) + " |")
        sections.append("\n".join(lines))
    table = "\n\n".join(sections) + "\n"
    atomic_write(out / "table2.md", lambda tmp: Path(tmp).write_text(table))
    plot_study(
        rows,
        out / "table2.png",
        metric="fid",
        label="FID on the judge's features",
        references={"data": data["fid"]},
        title="Class-conditional digits (Table 2 at CPU scale): FID vs sampling budget",
    )
    settings = {
        "steps": list(steps),
        "samplers": {name: known[name] for name in samplers},
        "seeds": seeds,
        "samples_per_class": samples_per_class,
        "gamma": gamma,
        "judge": repr(judge.model),
        "data": data,
    }
    record = json.dumps(provenance(settings, 0), indent=1)
    atomic_write(out / "provenance.json", lambda tmp: Path(tmp).write_text(record))
    return summary
