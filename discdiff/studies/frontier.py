r"""The controllability study on scikit-learn digits: accuracy against novelty.

A class-conditional model draws digits of a target class; an *independent*
judge (a logistic regression trained on clean training digits) says whether
each sample shows its target class, and two numbers measure how new the
samples are: the fraction of distinct samples and the mean Euclidean distance
(in intensity units, 0..16 per pixel) from each sample to its nearest
training image (`discdiff.evaluation.metrics.distinct_fraction` and
`nearest_distance`). Sweeping the guidance strength $\gamma$ and the number of
steps $T$ for MDLM and ReMDM traces the property–novelty frontier of the
ReMDM paper's Figure 4; FUDGE on an autoregressive model (a causal
transformer and a prefix classifier, `discdiff.guidance.FUDGE`) is the
paper's baseline there, one row per $\gamma$ at $T = L$.

scikit-learn is an optional dependency (`pip install discdiff[digits]`).
"""

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from discdiff._io import atomic_write
from discdiff.evaluation.metrics import distinct_fraction, nearest_distance
from discdiff.models.protocol import Denoiser
from discdiff.processes.base import Strategy
from discdiff.processes.masking.process import MaskingProcess
from discdiff.sampling.ancestral import AncestralSampler
from discdiff.studies.settings import STUDY

__all__ = [
    "DigitsJudge",
    "digits_metrics",
    "frontier_table",
    "fudge_study",
    "guidance_study",
    "plot_frontier",
    "plot_samples",
    "run_digits_study",
]


class DigitsJudge:
    """An independent digit classifier, trained on clean images.

    A multinomial logistic regression (scikit-learn) on intensities scaled to
    `[0, 1]`; it never sees a sample of the model.

    Args:
        tokens: Training images `(N, 64)`, intensities `0..16`.
        labels: Their digits `(N,)`.

    Raises:
        ImportError: Without scikit-learn.
    """

    def __init__(self, tokens: Int[Tensor, "n length"], labels: Int[Tensor, "n"]) -> None:
        try:
            from sklearn.linear_model import LogisticRegression
        except ImportError:
            raise ImportError(
                "the digits judge needs scikit-learn; install it with `pip install scikit-learn` "
                "(or `pip install discdiff[digits]`)"
            ) from None
        self.model = LogisticRegression(max_iter=5000)
        self.model.fit(_features(tokens), labels.numpy())

    def predict(self, tokens: Int[Tensor, "n length"]) -> Int[Tensor, "n"]:
        """The judge's digit for each image."""
        return torch.as_tensor(self.model.predict(_features(tokens)), dtype=torch.long)

    def accuracy(self, tokens: Int[Tensor, "n length"], labels: Int[Tensor, "n"]) -> float:
        """Fraction of `tokens` the judge assigns to `labels`."""
        return float((self.predict(tokens) == labels.cpu()).double().mean())


def _features(tokens: Tensor) -> Any:
    return (tokens.cpu().double() / 16.0).numpy()


def digits_metrics(
    samples: Int[Tensor, "n length"],
    targets: Int[Tensor, "n"],
    judge: DigitsJudge,
    train: Int[Tensor, "m length"],
) -> dict[str, float]:
    """Target-class accuracy, distinct fraction, nearest-training distance and copy rate."""
    distance = nearest_distance(samples, train)
    return {
        "accuracy": judge.accuracy(samples, targets),
        "distinct": distinct_fraction(samples),
        "nn_distance": float(distance.mean()),
        "copies": float((distance == 0).double().mean()),
    }


def guidance_study(
    process: MaskingProcess,
    guided: Callable[[float, Tensor], Denoiser],
    strategies: dict[str, Strategy],
    gammas: Sequence[float],
    steps: Sequence[int],
    judge: DigitsJudge,
    train: Int[Tensor, "m length"],
    *,
    samples_per_class: int,
    num_classes: int = 10,
    length: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Sample every (strategy, γ, T) cell for every class and score it.

    Args:
        process: The forward process.
        guided: `guided(gamma, labels)` returns the guided denoiser for `(B,)`
            per-sequence target labels (e.g. `ClassifierFreeGuidance(gamma)(model, labels)`).
        strategies: Named posteriors (e.g. MDLM and a ReMDM schedule).
        gammas: Guidance strengths.
        steps: Step counts $T$.
        judge: The independent classifier.
        train: Training images, for the novelty distance.
        samples_per_class: Samples of each class per cell.
        num_classes: Number of classes.
        length: Tokens per sample.
        seed: Sampling seed (the same in every cell).
        progress: Show a progress bar.

    Returns:
        One row per cell: strategy, gamma, steps, NFE, seconds and the metrics.
    """
    targets = torch.arange(num_classes).repeat_interleave(samples_per_class)
    rows = []
    cells = [(n, g, T) for n in strategies for T in steps for g in gammas]
    for name, gamma, T in tqdm(cells, desc="guidance study", disable=not progress):
        sampler = AncestralSampler(process, strategies[name], steps=T)
        start = time.perf_counter()
        result = sampler.sample(
            guided(gamma, targets),
            len(targets),
            length,
            generator=torch.Generator().manual_seed(seed),
        )
        seconds = time.perf_counter() - start
        row = {"strategy": name, "gamma": gamma, "steps": T, "nfe": result.nfe}
        row.update(digits_metrics(result.tokens, targets, judge, train))
        row["seconds"] = seconds
        rows.append(row)
    return rows


def fudge_study(
    model: Any,
    classifier: Any,
    gammas: Sequence[float],
    judge: DigitsJudge,
    train: Int[Tensor, "m length"],
    *,
    samples_per_class: int,
    num_classes: int = 10,
    length: int = 64,
    seed: int = 0,
    name: str = "AR+FUDGE",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """FUDGE on an autoregressive model for every γ, scored like `guidance_study`'s rows.

    Args:
        model: A causal model (`next_logits`), e.g. a `CausalTransformer`.
        classifier: A prefix classifier, e.g. a `PrefixClassifier`.
        gammas: FUDGE strengths ($0$: the unguided AR model).
        judge: The independent classifier.
        train: Training images, for the novelty distance.
        samples_per_class: Samples of each class per γ.
        num_classes: Number of classes.
        length: Tokens per sample ($T = L$ network calls).
        seed: Sampling seed.
        name: The rows' `strategy`.
        progress: Show a progress bar.

    Returns:
        One row per γ: strategy, gamma, steps ($L$), NFE ($L$ model calls,
        each with one batched classifier call), seconds and the metrics.
    """
    from discdiff.guidance import FUDGE
    from discdiff.sampling.autoregressive import AutoregressiveSampler

    targets = torch.arange(num_classes).repeat_interleave(samples_per_class)
    rows = []
    for gamma in tqdm(gammas, desc="FUDGE", disable=not progress):
        start = time.perf_counter()
        result = AutoregressiveSampler().sample(
            FUDGE(gamma)(model, classifier, targets),
            len(targets),
            length,
            generator=torch.Generator().manual_seed(seed),
        )
        row = {"strategy": name, "gamma": gamma, "steps": length, "nfe": result.nfe}
        row.update(digits_metrics(result.tokens, targets, judge, train))
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
    return rows


def plot_frontier(
    rows: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    *,
    title: str = "Guided digits: target accuracy vs novelty",
    data_accuracy: float | None = None,
) -> Path:
    """Accuracy against nearest-training distance, one line per (strategy, T) over γ.

    Written atomically as PNG (matplotlib's Agg backend); rows also go to
    `path` with suffix `.json`.

    Args:
        rows: `guidance_study` rows.
        path: The PNG file.
        title: Figure title.
        data_accuracy: The judge's held-out accuracy on real digits (a
            reference line), if known.

    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    steps = sorted({r["steps"] for r in rows})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = ["o", "s", "^", "D", "v", "P"]
    figure, axis = plt.subplots(figsize=(7.0, 4.8))
    for i, name in enumerate(strategies):
        for j, T in enumerate(steps):
            cell = sorted(
                (r for r in rows if r["strategy"] == name and r["steps"] == T),
                key=lambda r: r["gamma"],
            )
            if not cell:
                continue
            axis.plot(
                [r["nn_distance"] for r in cell],
                [r["accuracy"] for r in cell],
                marker=markers[j % len(markers)],
                color=colours[i % len(colours)],
                alpha=0.45 + 0.55 * (j + 1) / len(steps),
                label=f"{name}, T={T}",
            )
            for r in cell:
                axis.annotate(
                    f"γ={r['gamma']:g}",
                    (r["nn_distance"], r["accuracy"]),
                    fontsize=6,
                    xytext=(3, 2),
                    textcoords="offset points",
                )
    if data_accuracy is not None:
        axis.axhline(data_accuracy, color="grey", linestyle=":", label="judge on real test digits")
    axis.set_xlabel("novelty: mean L2 distance to the nearest training image (higher = newer)")
    axis.set_ylabel("target-class accuracy (independent judge)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    try:
        atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(figure)
    text = json.dumps(list(rows), indent=2)
    atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text))
    return path


def plot_samples(
    panels: dict[str, Int[Tensor, "n 64"]],
    labels: Int[Tensor, "n"],
    path: str | os.PathLike,
    *,
    per_class: int = 8,
) -> Path:
    """Draw sample grids side by side: one panel per setting, a row per target digit.

    Args:
        panels: Samples of each setting (e.g. `{"MDLM": tokens}`), images
            `(N, 64)` with intensities `0..16`, in the order of `labels`.
        labels: The target digit of each sample `(N,)`.
        path: PNG file to write (atomically).
        per_class: Samples shown per digit.

    Returns:
        `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = sorted(set(labels.tolist()))
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for axis, (name, tokens) in zip(axes[0], panels.items(), strict=True):
        rows = []
        for digit in classes:
            images = tokens[labels == digit][:per_class].reshape(-1, 8, 8)
            rows.append(torch.cat(list(images), dim=1))
        axis.imshow(torch.cat(rows, dim=0).numpy(), cmap="gray_r", vmin=0, vmax=16)
        axis.set_title(name, fontsize=9)
        axis.set_yticks([8 * i + 3.5 for i in range(len(classes))], [str(c) for c in classes])
        axis.set_xticks([])
    figure.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    plt.close(figure)
    return path


def frontier_table(rows: Sequence[dict[str, Any]]) -> str:
    """The study's rows as a Markdown table."""
    lines = [
        "| sampler | T | γ | accuracy | distinct | NN distance | copies | NFE | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {r['steps']} | {r['gamma']:g} | {r['accuracy']:.3f} | "
            f"{r['distinct']:.3f} | {r['nn_distance']:.2f} | {r['copies']:.3f} | {r['nfe']} | "
            f"{r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def run_digits_study(
    out: str | os.PathLike,
    *,
    config: Any = None,
    train_steps: int | None = None,
    train_minutes: float | None = None,
    batch_size: int = 64,
    lr: float = 2e-3,
    gammas: Sequence[float] = (0.0, 1.0, 2.0, 3.0),
    steps: Sequence[int] = (16, 64, 256),
    strategies: dict[str, Strategy] | None = None,
    samples_per_class: int = 20,
    seed: int = 0,
    fudge: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a class-conditional DiT on digits, then run the D-CFG study and plot it.

    Trains `ConditionalSUBS(DiT(config))` with `ConditionalNELBO` and label
    dropout on the training split (80 %), fits the judge on the same split
    and reports its accuracy on the held-out 20 %, then sweeps
    `ClassifierFreeGuidance(γ)` over `gammas`, `steps` and `strategies`
    (default: MDLM and ReMDM-cap at `STUDY.cap_eta`, 0.02).

    With `fudge`, the AR baseline of the paper's Figure 4 joins the table and
    the frontier: an unconditional `CausalTransformer` (`AutoregressiveNLL`)
    and a `PrefixClassifier` (`PrefixClassification`) of the DiT's width and
    depth, each trained for half the DiT's budget (steps or minutes), sampled
    with `FUDGE(γ)` for every γ at $T = L$.

    Args:
        out: Directory for `digits_frontier.png`, `.json`, `digits_table.md`,
            `digits_samples.png` (a grid per strategy at the largest γ and T)
            and the trained model (`model/`, EMA weights, `DiT.from_pretrained`).
        config: A `DiTConfig` (default: d 64, 3 blocks, 4 heads, 10 classes).
        train_steps: Optimiser steps (or give `train_minutes`).
        train_minutes: Wall-clock training budget.
        batch_size: Sequences per step.
        lr: Peak learning rate.
        gammas: Guidance strengths.
        steps: Sampling step counts $T$.
        strategies: Named sampler strategies.
        samples_per_class: Samples of each digit per cell.
        seed: Seed of training and sampling.
        fudge: Add the AR + FUDGE rows.
        progress: Show progress bars.

    Returns:
        `{"rows": [...], "judge_accuracy": ..., "train": {...}, "seconds": ...}`.
    """
    from discdiff.data.digits import DIGITS_CLASSES, DIGITS_VOCAB, LabelledSource, split_digits
    from discdiff.guidance import FUDGE, ClassifierFreeGuidance
    from discdiff.models.dit import DiT, DiTConfig
    from discdiff.models.subs import ConditionalSUBS
    from discdiff.objectives import ConditionalNELBO
    from discdiff.processes.masking.posteriors import MaskingPosterior, RemaskPosterior
    from discdiff.processes.masking.remasking import CapSchedule
    from discdiff.sampling.autoregressive import AutoregressiveSampler
    from discdiff.training.trainer import TrainConfig, Trainer

    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    (train_x, train_y), (test_x, test_y) = split_digits(seed=seed)
    judge = DigitsJudge(train_x, train_y)
    judge_accuracy = judge.accuracy(test_x, test_y)
    process = MaskingProcess(vocab_size=DIGITS_VOCAB)
    if config is None:
        config = DiTConfig(
            hidden_dim=64,
            cond_dim=64,
            n_blocks=3,
            n_heads=4,
            vocab_size=DIGITS_VOCAB + 1,
            model_length=64,
            num_classes=DIGITS_CLASSES,
        )
    model = ConditionalSUBS(DiT(config), process)
    trainer = Trainer(
        process,
        model,
        LabelledSource(train_x, train_y, DIGITS_VOCAB, DIGITS_CLASSES, seed=seed),
        TrainConfig(
            steps=train_steps,
            max_minutes=train_minutes,
            batch_size=batch_size,
            lr=lr,
            warmup=100,
            ema=0.999,
            eval_every=0,
            seed=seed,
            progress=progress,
        ),
        objective=ConditionalNELBO(),
        validation=test_x,
    )
    history = trainer.fit(resume=False)
    with trainer.ema_weights():
        model.backbone.save_pretrained(out / "model")
    train_minutes_taken = (time.perf_counter() - start) / 60
    with trainer.ema_weights():
        bound = trainer.evaluate()
        model.eval()
        strategies = strategies or {
            "MDLM": MaskingPosterior(),
            f"ReMDM-cap({STUDY.cap_eta:g})": RemaskPosterior(CapSchedule(STUDY.cap_eta)),
        }
        rows = guidance_study(
            process,
            lambda gamma, labels: ClassifierFreeGuidance(gamma)(model, labels),
            strategies,
            gammas,
            steps,
            judge,
            train_x,
            samples_per_class=samples_per_class,
            seed=seed,
            progress=progress,
        )
        # One grid of samples per strategy at the strongest setting swept.
        gamma, T = max(gammas), max(steps)
        targets = torch.arange(DIGITS_CLASSES).repeat_interleave(min(samples_per_class, 8))
        panels = {
            f"{name}, γ={gamma:g}, T={T}": AncestralSampler(process, strategy, steps=T)
            .sample(
                ClassifierFreeGuidance(gamma)(model, targets),
                len(targets),
                64,
                generator=torch.Generator().manual_seed(seed),
            )
            .tokens
            for name, strategy in strategies.items()
        }
    tail = history.losses[-50:]
    train_info = {
        "steps": trainer.step,
        "final_loss": sum(tail) / len(tail),
        "test_nelbo_unconditional": bound.nats_per_token,
        "minutes": train_minutes_taken,
    }
    if fudge:
        ar, classifier, train_info["fudge"] = _train_fudge(
            config,
            (train_x, train_y),
            test_x,
            train_steps,
            train_minutes,
            batch_size,
            lr,
            seed,
            progress,
        )
        rows += fudge_study(
            ar,
            classifier,
            gammas,
            judge,
            train_x,
            samples_per_class=samples_per_class,
            seed=seed,
            progress=progress,
        )
        fudge_targets = targets
        panels[f"AR+FUDGE, γ={gamma:g}, T=64"] = (
            AutoregressiveSampler()
            .sample(
                FUDGE(gamma)(ar, classifier, fudge_targets),
                len(fudge_targets),
                64,
                generator=torch.Generator().manual_seed(seed),
            )
            .tokens
        )
    plot_samples(panels, targets, out / "digits_samples.png")
    plot_frontier(rows, out / "digits_frontier.png", data_accuracy=judge_accuracy)
    table = frontier_table(rows)
    atomic_write(out / "digits_table.md", lambda tmp: Path(tmp).write_text(table + "\n"))
    return {
        "rows": rows,
        "judge_accuracy": judge_accuracy,
        "train": train_info,
        "seconds": time.perf_counter() - start,
    }


def _train_fudge(
    config: Any,
    train: tuple[Tensor, Tensor],
    test_x: Tensor,
    train_steps: int | None,
    train_minutes: float | None,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool,
) -> tuple[Any, Any, dict[str, float]]:
    """An AR model and a prefix classifier for FUDGE, each with half the DiT's budget."""
    from discdiff.baseline_objectives import PrefixClassification
    from discdiff.data.digits import DIGITS_CLASSES, DIGITS_VOCAB, LabelledSource
    from discdiff.models.causal import CausalConfig, CausalTransformer, PrefixClassifier
    from discdiff.training.trainer import TrainConfig, Trainer

    start = time.perf_counter()
    causal = CausalConfig(
        vocab_size=DIGITS_VOCAB,
        model_length=64,
        hidden_dim=config.hidden_dim,
        n_blocks=config.n_blocks,
        n_heads=config.n_heads,
    )
    settings = TrainConfig(
        steps=None if train_steps is None else max(1, train_steps // 2),
        max_minutes=None if train_minutes is None else train_minutes / 2,
        batch_size=batch_size,
        lr=lr,
        warmup=100,
        ema=0.999,
        eval_every=0,
        seed=seed,
        progress=progress,
        objective="autoregressive",
    )
    process = MaskingProcess(vocab_size=DIGITS_VOCAB)
    source = LabelledSource(*train, DIGITS_VOCAB, DIGITS_CLASSES, seed=seed)
    ar = CausalTransformer(causal)
    ar_trainer = Trainer(process, ar, _Unlabelled(source), settings, validation=test_x)
    ar_trainer.fit(resume=False)
    classifier = PrefixClassifier(causal, DIGITS_CLASSES)
    classifier_trainer = Trainer(
        process, classifier, source, settings, objective=PrefixClassification()
    )
    classifier_trainer.fit(resume=False)
    for trainer in (ar_trainer, classifier_trainer):  # keep the EMA weights
        with trainer.ema_weights():
            state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.model.load_state_dict(state)
        trainer.model.eval()
    test_nll = ar_trainer.evaluate().nats_per_token  # the exact NLL of the held-out digits
    info = {
        "ar_steps": ar_trainer.step,
        "classifier_steps": classifier_trainer.step,
        "ar_test_nll": test_nll,
        "minutes": (time.perf_counter() - start) / 60,
    }
    return ar, classifier, info


class _Unlabelled:
    """The images of a `LabelledSource` without their labels (for the unconditional AR model)."""

    def __init__(self, source: Any) -> None:
        self.source, self.vocab_size, self.length = source, source.vocab_size, source.length

    def batch(self, index: int, size: int) -> Tensor:
        return self.source.batch(index, size)[0]
