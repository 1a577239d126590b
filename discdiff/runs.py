r"""Run directories: train, sample and evaluate from a `RunConfig`.

A run directory holds everything one experiment produced::

    run.yaml            the full config (every default filled in)
    checkpoints/        resumable training state (`step-N/`, `latest`)
    model/              the EMA weights: config.json + model.safetensors
    history.json        training losses and validation records
    metrics.json        the final validation bound
    learning_curve.png  validation bits/token against steps
    alphabet.json       the character tokenizer (text data)
    samples/LABEL/      samples.json, samples.txt, metrics.json per sampler setting
    eval.json           `evaluate_run`'s table

Every file is written atomically, so an interrupted command never leaves a
half-written result, and a run directory is never reused for a different
data, model or process config. A command that writes a folder is its only
writer (`discdiff._io.writing`): a second `train` into the same folder stops
at once with a `FolderBusyError` naming the first one's pid, and a command
that fails before writing anything leaves no empty folder behind. The
model's weights carry the SHA-256 of their tensors (checked on loading), and
`metrics.json` records the SHA-256 of `model/model.safetensors` as written.

Reproducibility: every random part of a run derives from its config's seeds:
the model's initialisation from `derive_seed(train.seed, "init")`, dropout
and the training noise from `train.seed`, the training data from `data.seed`,
samples from `sampler.seed` (sequence $i$ has its own stream, so samples do
not depend on `sampler.batch_size`), and the validation set and its noise
from fixed seeds shared by every run. The same config on the same machine,
thread count and versions therefore gives bit-identical weights, history,
samples and tables in any process. Each result records its `provenance`
(settings, seed, versions, threads; see `discdiff.provenance`); wall-clock
figures (`seconds`, `tokens_per_second`, `timing` in `history.json`) are the
only values that change.

The built-in run `"synthetic"` (the checkpoint shipped for the quickstart and
its recipe) can be named wherever a run directory is expected.
"""

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from discdiff._io import (
    CorruptFileError,
    DiskFullError,
    FolderBusyError,
    atomic_write,
    locked,
    sha256,
    writing,
)
from discdiff.config import ConfigError, RunConfig, apply_overrides, choices
from discdiff.data.sources import BatchSource, BlockSource, LanguageSource
from discdiff.data.text import CharTokenizer, char_blocks, check_mask_id, read_text
from discdiff.evaluation.metrics import language_metrics, token_entropy
from discdiff.models.diffusion_llms import load_diffusion_llm
from discdiff.objectives import BlockNELBO, Method, held_out_bound
from discdiff.processes.base import ForwardProcess
from discdiff.processes.masking.decoders import ConfidenceDecoder
from discdiff.provenance import provenance
from discdiff.rng import derive_seed, seeded
from discdiff.sampling.autoregressive import AutoregressiveSampler
from discdiff.sampling.blocks import BlockSampler
from discdiff.training.lora import load_adapter, merge_lora
from discdiff.training.trainer import Trainer

__all__ = [
    "BUILTIN_RUNS",
    "MODEL_RULES",
    "DiskFullError",
    "FolderBusyError",
    "Run",
    "RunData",
    "config_from_overrides",
    "evaluate_run",
    "load_config",
    "load_run",
    "resolve_run",
    "sample_model",
    "sample_run",
    "train_run",
]

_ASSETS = Path(__file__).resolve().parent / "assets"

BUILTIN_RUNS: dict[str, Path] = {
    "synthetic": _ASSETS / "synthetic",
    "hmm": _ASSETS / "hmm",
    "hmm-uniform": _ASSETS / "hmm-uniform",
}
"""Runs shipped with the package (`discdiff/assets/NAME`, each with a README.md): their
`run.yaml` and EMA weights."""

_FIXED_SECTIONS = ("data", "model", "process")


def resolve_run(run: str | Path) -> Path:
    """The directory of a run: a path, or the name of a built-in run.

    Raises:
        FileNotFoundError: If it is neither, naming the built-in runs.
    """
    if str(run) in BUILTIN_RUNS and not Path(run).exists():
        return BUILTIN_RUNS[str(run)]
    path = Path(run)
    if not (path / "run.yaml").is_file():
        raise FileNotFoundError(
            f"run {str(run)!r} is not a run directory (no run.yaml) nor a built-in run "
            f"({', '.join(BUILTIN_RUNS)})"
        )
    return path


def load_config(config: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> RunConfig:
    """Read a config file, or the `run.yaml` of a built-in run named `config`.

    Raises:
        FileNotFoundError: If `config` is neither a file nor a built-in name.
        ConfigError: For bad keys or values.
    """
    path = Path(config)
    if not path.exists() and str(config) in BUILTIN_RUNS:
        path = BUILTIN_RUNS[str(config)] / "run.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"config {str(config)!r} is neither a file nor a built-in config "
            f"({', '.join(BUILTIN_RUNS)})"
        )
    return RunConfig.load(path, overrides)


def config_from_overrides(overrides: tuple[str, ...] | list[str]) -> RunConfig:
    """The default config changed by `KEY=VALUE` overrides (e.g. `sampler.steps=64`).

    Example:
        >>> config_from_overrides(["sampler.steps=64"]).sampler.steps
        64

    Raises:
        ConfigError: For a bad key or value, naming the override that set it.
    """
    return RunConfig.from_dict(apply_overrides({}, overrides), overrides=overrides)


@dataclass
class RunData:
    """The data side of a run: training batches, validation, decoding and sample metrics.

    Attributes:
        vocab_size: Data tokens $V$ (the mask id is $V$).
        source: Training batches.
        validation: Held-out sequences `(N, L)`.
        decode: Token ids of one sequence to text.
        metrics: Per-sample-set metrics (exact NLL for the synthetic language,
            token entropy always).
        alphabet: The character alphabet (text data), else `None`.
    """

    vocab_size: int
    source: BatchSource
    validation: Tensor
    decode: Callable[[list[int]], str]
    metrics: Callable[[Tensor], dict[str, float]]
    alphabet: str | None = None

    @classmethod
    def from_config(cls, config: RunConfig, alphabet: str | None = None) -> "RunData":
        """Build the data of `config` (reusing a run's saved `alphabet` for text)."""
        spec = config.data
        if spec.kind == "synthetic":
            language = spec.language
            return cls(
                vocab_size=language.vocab_size,
                source=LanguageSource(language, spec.length, seed=spec.seed),
                validation=language.sample(
                    512, spec.length, generator=torch.Generator().manual_seed(99)
                ),
                decode=lambda ids: " ".join(map(str, ids)),
                metrics=language_metrics(language, spec.length),
            )
        try:
            tokenizer, train, validation = char_blocks(
                read_text(spec.path), spec.length, alphabet=alphabet, val_fraction=spec.val_fraction
            )
        except UnicodeDecodeError as error:
            raise ConfigError(
                "data.path",
                f"{spec.path} is not UTF-8 text (byte {error.object[error.start]:#04x} at "
                f"offset {error.start})",
            ) from None
        except ValueError as error:  # empty, or too short for a training and validation split
            raise ConfigError("data.path", str(error)) from None
        return cls(
            vocab_size=tokenizer.vocab_size,
            source=BlockSource(train, tokenizer.vocab_size, seed=spec.seed),
            validation=validation,
            decode=tokenizer.decode,
            metrics=lambda tokens: {"token_entropy": float(token_entropy(tokens).mean())},
            alphabet=tokenizer.alphabet,
        )


def _objective(config: RunConfig) -> Any:
    """The run's loss: its `train.objective`, the block NELBO for a block diffusion DiT."""
    block = config.block_size
    return BlockNELBO(block) if block else Method.named(config.train.objective).loss()


def _read_json(path: Path) -> Any:
    """A JSON file this library wrote; a damaged one is a `CorruptFileError` naming it."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptFileError(path, "JSON file", error) from None


def _write_json(path: Path, value: Any) -> Path:
    text = json.dumps(value, indent=1, allow_nan=True)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _check_same_run(out: Path, config: RunConfig) -> None:
    previous = out / "run.yaml"
    if not previous.is_file():
        return
    old, new = RunConfig.load(previous, complete=True).to_dict(), config.to_dict()
    changed = [name for name in _FIXED_SECTIONS if old[name] != new[name]]
    if changed:
        raise FileExistsError(
            f"{out} already holds a run with different {', '.join(changed)} section(s); "
            "use a new --out (nothing was changed)"
        )


def _plot_learning_curve(evals: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot([e["step"] for e in evals], [e["bits_per_token"] for e in evals], marker="o")
    axis.set_xlabel("step")
    axis.set_ylabel("validation NELBO (bits/token)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)


def train_run(config: RunConfig, out: str | Path, *, progress: bool = True) -> Path:
    """Train the run's network with its `train.objective`; resumes from `out/checkpoints`.

    `nelbo` trains a DiT denoiser (SUBS), `score-entropy` a DiT score model
    (`ScoreModel`, SEDD), `autoregressive` a `CausalTransformer` of the model
    section's width, depth and heads.

    Writes `run.yaml`, checkpoints, `history.json`, `metrics.json`,
    `learning_curve.png` and the EMA model in `out/model` (returned).

    Raises:
        FileExistsError: If `out` holds a run with other data/model/process sections.
        FolderBusyError: If another process is writing `out`.
        ConfigError: If the text file of `data.path` is empty, not UTF-8 or too short.
        DiskFullError: If the disk fills up, naming the file and what was kept.
    """
    out = Path(out)
    if config.data.path is not None:  # later commands may run from elsewhere
        config = replace(
            config, data=replace(config.data, path=str(Path(config.data.path).resolve()))
        )
    with writing(out):
        return _train(config, out, progress)


def _train(config: RunConfig, out: Path, progress: bool) -> Path:
    """`train_run`'s work, as the only writer of `out`."""
    _check_same_run(out, config)
    saved = out / "alphabet.json"
    data = RunData.from_config(config, _read_json(saved) if saved.is_file() else None)
    process = config.process.build(data.vocab_size)
    if data.alphabet is not None and process.mask_id is not None:
        check_mask_id(CharTokenizer(data.alphabet), process.mask_id)
    method = Method.named(config.train.objective)
    with seeded(derive_seed(config.train.seed, "init")):
        network = method.network.from_settings(
            config.model, process=process, model_length=config.data.length
        )
    settings = config.train if progress else replace(config.train, progress=False)
    trainer = Trainer(
        process,
        method.wrap(network, process),
        data.source,
        settings,
        validation=data.validation,
        run_dir=out,
        objective=_objective(config),
    )
    trainer.resume()  # reads (and checks) the last checkpoint before anything is written
    config.dump(out / "run.yaml")
    if data.alphabet is not None and not saved.is_file():
        _write_json(saved, data.alphabet)
    history = trainer.fit(resume=False)
    made_by = provenance(config.to_dict(), config.train.seed)
    record = {
        "losses": history.losses,
        "evals": history.evals,
        "train": asdict(settings),
        "provenance": made_by,
        "timing": {"eval_minutes": history.minutes},
    }
    _write_json(out / "history.json", record)
    final = {k: v for k, v in trainer.final_bound().items() if k != "step"}
    if history.evals:
        _plot_learning_curve(history.evals, out / "learning_curve.png")
    with trainer.ema_weights():
        model = network.save_pretrained(out / "model")
    weights = {"model/model.safetensors": sha256(model / "model.safetensors")}
    made_by = {**made_by, "weights_sha256": weights}
    _write_json(out / "metrics.json", {"step": trainer.step, **final, "provenance": made_by})
    return model


@dataclass
class Run:
    """A trained run, loaded: its directory, config, EMA model and data.

    Attributes:
        directory: The run directory (or the built-in run's folder).
        config: Its `run.yaml`.
        model: The network with the EMA weights, in eval mode (a `DiT`, or a
            `CausalTransformer` for an autoregressive run).
        data: Its data (the saved alphabet for text).
    """

    directory: Path
    config: RunConfig
    model: torch.nn.Module
    data: RunData

    @property
    def process(self) -> ForwardProcess:
        """The run's forward process."""
        return self.config.process.build(self.data.vocab_size)

    @property
    def objective(self) -> str:
        """The run's `train.objective`: `nelbo`, `score-entropy` or `autoregressive`."""
        return self.config.train.objective

    @property
    def network(self) -> torch.nn.Module:
        r"""The trained model as its objective sees it.

        A `SUBS` denoiser, a `ScoreModel` (log-scores; normalised, a denoiser
        too) or the `CausalTransformer`.
        """
        return Method.named(self.objective).wrap(self.model, self.process)

    @property
    def denoiser(self) -> torch.nn.Module:
        r"""The model as a denoiser, $x_\theta(z_t, t)$: SUBS, or the normalised scores.

        Raises:
            ValueError: For an autoregressive run, which has no denoiser.
        """
        if Method.named(self.objective).sampler is None:
            raise ValueError(
                f"run {str(self.directory)!r} is autoregressive: it has no denoiser "
                "(sample it with discdiff.sampling.AutoregressiveSampler)"
            )
        return self.network


def load_run(run: str | Path) -> Run:
    """Load a run directory (or a built-in run) that has a trained model.

    Raises:
        FileNotFoundError: If it is not a run, or has no model yet.
    """
    directory = resolve_run(run)
    config = RunConfig.load(directory / "run.yaml", complete=True)
    saved = directory / "alphabet.json"
    alphabet = _read_json(saved) if saved.is_file() else None
    model_dir = directory / "model" if (directory / "model").is_dir() else directory
    if not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"run {str(directory)!r} has no trained model yet")
    model = Method.named(config.train.objective).network.from_pretrained(model_dir).eval()
    return Run(directory, config, model, RunData.from_config(config, alphabet))


def _output(directory: Path, run: str | Path, *parts: str) -> Path:
    """Where a command writes: inside the run, or `runs/NAME/` for a built-in run."""
    base = Path("runs") / str(run) if directory in BUILTIN_RUNS.values() else directory
    return base.joinpath(*parts)


def sample_run(
    run: str | Path,
    overrides: tuple[str, ...] | list[str] = (),
    *,
    out: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Draw `sampler.samples` sequences from a run's model with its `sampler` section.

    Args:
        run: A run directory or a built-in run name.
        overrides: `sampler.key=value` overrides of the run's config.
        out: Output folder; default `RUN/samples/LABEL` (`SamplerSpec.label`, e.g.
            `cap-eta0.02-T64-s0-1b2c3d4e`); a folder holding other settings is refused.
        progress: Show the sampler's progress bar.

    Returns:
        The folder holding `samples.json` (config, tokens, texts, metrics),
        `samples.txt` (one sample per line) and `metrics.json`.

    The three files are written under a lock on the folder, so two processes
    with the same settings leave one consistent set, never a mix.

    Raises:
        ConfigError: For an override outside the `sampler` section, or a bad value.
        FileExistsError: If the folder holds samples drawn with other settings.
    """
    for override in overrides:
        if not override.startswith("sampler."):
            raise ConfigError(override, "only sampler.* keys can change when sampling")
    loaded = load_run(run)
    config, data = loaded.config.replace(overrides), loaded.data
    spec = config.sampler
    settings = config.to_dict()["sampler"]
    folder = Path(out) if out is not None else _output(loaded.directory, run, "samples", spec.label)
    _check_same_samples(folder, settings)  # before the work, and again under the lock
    if Method.named(loaded.objective).sampler is None:  # the same shaping, token by token
        sampler: Any = AutoregressiveSampler(shaping=spec.shaping)
        model = loaded.model
    else:
        sampler, model = spec.build(loaded.process, progress=progress), loaded.denoiser
        if config.block_size:  # block diffusion: block by block
            sampler = BlockSampler(sampler, cache=spec.cache)
        elif spec.cache not in (None, "none"):
            raise ConfigError(
                "sampler.cache",
                f"{spec.cache!r} needs block-by-block sampling: a block-causal model "
                "(model.block_size), or an open LLM with --block-length (discdiff sample --model)",
            )
    start = time.perf_counter()
    with torch.no_grad():
        result = sampler.sample_batches(
            model,
            spec.samples,
            config.data.length,
            seed=spec.seed,
            batch_size=spec.batch_size,
        )
    seconds = time.perf_counter() - start
    tokens = result.tokens
    metrics = {
        "nfe": int(result.sequence_nfe.max()),
        "seconds": seconds,
        "tokens_per_second": tokens.numel() / seconds,
        **data.metrics(tokens),
    }
    texts = [data.decode(row) for row in tokens.tolist()]
    record = {
        "sampler": settings,
        "metrics": metrics,
        "tokens": tokens.tolist(),
        "texts": texts,
        "provenance": provenance(config.to_dict(), spec.seed),
    }
    lines = "\n".join(t.replace("\n", "\\n") for t in texts) + "\n"
    with locked(folder):  # the three files come from one process, whoever else writes here
        _check_same_samples(folder, settings)
        _write_json(folder / "samples.json", record)
        atomic_write(folder / "samples.txt", lambda tmp: Path(tmp).write_text(lines))
        _write_json(folder / "metrics.json", metrics)
    return folder


def _check_same_samples(folder: Path, settings: dict[str, Any]) -> None:
    """Refuse a folder that holds samples drawn with other sampler settings.

    `batch_size` is not compared: the samples do not depend on it.
    """
    saved = folder / "samples.json"
    if not saved.is_file():
        return
    record = _read_json(saved)
    previous = record.get("sampler") if isinstance(record, dict) else None
    if not isinstance(previous, dict):
        raise CorruptFileError(saved, "samples file", "no `sampler` mapping of settings")
    changed = sorted(
        k
        for k in set(settings) | set(previous)
        if k != "batch_size" and previous.get(k) != json.loads(json.dumps(settings.get(k)))
    )
    if changed:
        raise FileExistsError(
            f"{folder} holds samples drawn with other sampler settings "
            f"({', '.join(changed) or 'unknown'} differ); use another --out (nothing was changed)"
        )


def evaluate_run(run: str | Path, *, sequences: int = 256, out: str | Path | None = None) -> Path:
    """Score a run: its validation bound and every sample set in `RUN/samples/`.

    Sample sets are re-scored from their tokens with the run's data metrics
    (exact NLL and its gap to the entropy for the synthetic language, token
    entropy always), so the table is comparable across sampler settings.

    Returns:
        The written `eval.json` (`{"validation": ..., "samples": {label: metrics}}`).

    Raises:
        CorruptFileError: For a `samples.json` that is damaged or of the wrong shape.
        FolderBusyError: If another process is writing the folder of `eval.json`.
    """
    loaded = load_run(run)
    held_out = loaded.data.validation[:sequences]
    objective = _objective(loaded.config)
    bound = held_out_bound(loaded.process, loaded.network, held_out, objective=objective)
    table: dict[str, Any] = {
        "validation": bound.summary(),
        "samples": {},
        "provenance": provenance({"run": str(loaded.directory), "sequences": sequences}, None),
    }
    for folder in sorted(_output(loaded.directory, run, "samples").glob("*/samples.json")):
        record = _read_samples(folder, loaded.data.vocab_size, loaded.config.data.length)
        table["samples"][folder.parent.name] = {
            "steps": record["sampler"]["steps"],
            "nfe": record["metrics"]["nfe"],
            **loaded.data.metrics(torch.tensor(record["tokens"])),
        }
    path = Path(out) if out is not None else _output(loaded.directory, run, "eval.json")
    with writing(path.parent):
        return _write_json(path, table)


def _read_samples(path: Path, vocab_size: int, length: int) -> dict[str, Any]:
    """A run's `samples.json`, checked to be the shape `sample_run` writes.

    Raises:
        CorruptFileError: Naming the file and what is wrong with it.
    """
    record = _read_json(path)

    def wrong(detail: str) -> CorruptFileError:
        return CorruptFileError(path, "samples file", detail)

    if not isinstance(record, dict):
        raise wrong(f"a {type(record).__name__}, not a mapping")
    sampler, metrics, tokens = record.get("sampler"), record.get("metrics"), record.get("tokens")
    if not isinstance(sampler, dict) or type(sampler.get("steps")) is not int:
        raise wrong("`sampler` is not a mapping with an integer `steps`")
    if not isinstance(metrics, dict) or type(metrics.get("nfe")) is not int:
        raise wrong("`metrics` is not a mapping with an integer `nfe`")
    rows_ok = (
        isinstance(tokens, list)
        and tokens
        and all(
            isinstance(row, list)
            and len(row) == length
            and all(type(t) is int and 0 <= t < vocab_size for t in row)
            for row in tokens
        )
    )
    if not rows_ok:
        raise wrong(f"`tokens` is not a non-empty list of {length} token ids in [0, {vocab_size})")
    return record


def _label(model: str | Path) -> str:
    """The folder name of a model: its directory's own name (`a/sub/..` is `a`), or a Hub name."""
    path = Path(model)
    name = path.resolve().name if path.exists() else path.name
    return name if name not in ("", ".", "..") else "model"


MODEL_RULES: dict[str, dict[str, str]] = {
    "llada": {"posterior": "maskgit", "count": "even"},
    "dream": {"posterior": "entropy", "count": "dream"},
}
"""Each open model's own decoding: its default strategy, and the count rule its confidence
decoders use unless `count` is given (LLaDA: low-confidence remasking with `generate.py`'s even
per-block quota; Dream: `diffusion_generate`'s count, entropy ordering)."""


def _model_rules(values: dict[str, Any], kind: str) -> None:
    """Fill in the model's own strategy and count rule where the overrides leave them open."""
    rules = MODEL_RULES.get(kind)
    if rules is None:
        return
    sampler = values.setdefault("sampler", {})
    form = sampler.get("posterior", rules["posterior"])
    if isinstance(form, str):
        form = {"name": form}
    decoder = choices("strategy").get(form.get("name")) if isinstance(form, dict) else None
    takes_count = isinstance(decoder, type) and issubclass(decoder, ConfidenceDecoder)
    if takes_count and "count" not in form:
        form = {**form, "count": rules["count"]}
    sampler["posterior"] = form


def sample_model(
    model: str | Path,
    overrides: tuple[str, ...] | list[str] = (),
    *,
    prompt: str | list[str] | None = None,
    length: int = 64,
    blocks: int = 1,
    block_length: int | None = None,
    chat: bool = False,
    out: str | Path | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    adapter: str | Path | None = None,
) -> Path:
    """Complete prompts with an open diffusion LLM (LLaDA, Dream) and a `sampler` section.

    The model is loaded natively (`load_diffusion_llm`; no checkpoint code runs).
    The sampler section starts from its defaults with `samples: 1, batch_size: 1`
    and the model's own decoding rule (`MODEL_RULES`: LLaDA's `maskgit` with the
    even per-block quota, Dream's `entropy` with its count; a decoder named
    without `count` gets the model's), and takes `sampler.*` overrides, e.g.
    `sampler.posterior=loop sampler.steps=128`. `sampler.steps` is the total
    over all blocks, as LLaDA's `steps`.

    Several prompts are completed together (`sampler.batch_size` at a time),
    left-padded, each as it would be alone: prompt $i$ draws from stream
    $(seed, i)$, so its completion does not depend on the others or on the
    batch size.

    Args:
        model: A model directory, or a Hub id (fetched only when no such path exists).
        overrides: `sampler.key=value` overrides.
        prompt: The text to complete (kept fixed), or a list of texts; none:
            unconditional.
        length: Tokens to generate after each prompt.
        blocks: Generate the `length` tokens left to right in this many equal blocks.
        block_length: Tokens per block instead (LLaDA's `block_length`); it must
            divide `length`, and the number of blocks must divide `sampler.steps`.
        chat: Wrap each prompt in the tokenizer's chat template (instruct models).
        out: Output folder (default `samples/MODEL/LABEL`); a folder holding other
            settings is refused.
        dtype: Cast the weights (default: as stored).
        device: Where to run (default: CUDA when available).
        progress: Show the sampler's progress bar.
        adapter: A fine-tuning run (or its `adapter/` folder) whose LoRA adapter
            is merged into the model (see `discdiff.finetune`).

    Returns:
        The folder holding `samples.json` (settings, tokens, texts, completions in
        the order of the prompts, `sampler.samples` each, metrics), `samples.txt`
        (one completion per line) and `metrics.json`.

    Raises:
        ConfigError: For an override outside the `sampler` section, or a bad value.
        ValueError: For `length` below 1, blocks that do not divide `length` or
            `sampler.steps`, an empty prompt, a prompt that leaves no room for
            `length` tokens in the model's context, or `chat` with a tokenizer
            without a template.
    """
    for override in overrides:
        if not override.startswith("sampler."):
            raise ConfigError(override, "only sampler.* keys can be set when sampling a model")
    if length < 1 or blocks < 1:
        raise ValueError(f"`length` and `blocks` must be at least 1; got {length} and {blocks}")
    if block_length is not None and (block_length < 1 or length % block_length):
        raise ValueError(f"`block_length` ({block_length}) must divide `length` ({length})")
    if length % blocks:
        raise ValueError(f"`blocks` ({blocks}) must divide `length` ({length})")
    texts = [prompt] if isinstance(prompt, str) else list(prompt or [])
    for i, text in enumerate(texts):
        if not text:
            raise ValueError(f"`prompt` {i + 1} is empty: give some text, or no prompt")
    values = apply_overrides({"sampler": {"samples": 1, "batch_size": 1}}, overrides)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    denoiser = load_diffusion_llm(model, dtype=dtype, device=device)
    if adapter is not None:
        folder = Path(adapter) / "adapter" if (Path(adapter) / "adapter").is_dir() else adapter
        merge_lora(load_adapter(denoiser.model, folder))
    _model_rules(values, denoiser.kind)
    config = RunConfig.from_dict(values, overrides=overrides)
    spec = config.sampler
    tokenizer = denoiser.tokenizer
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"`chat`: the tokenizer of {model!s} has no chat template")
    prompt_ids: list[list[int]] = []
    for text in texts:
        if chat:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        prompt_ids.append(list(tokenizer(text, add_special_tokens=not chat)["input_ids"]))
    context = denoiser.model.config.context_length
    for i, ids in enumerate(prompt_ids):
        if not ids:
            raise ValueError(f"`prompt` {i + 1} is empty after tokenisation")
        if context is not None and len(ids) + length > context:
            raise ValueError(
                f"`prompt` {i + 1} has {len(ids)} tokens: with `length` {length} that is past "
                f"the model's context of {context} tokens"
            )
    if not texts and context is not None and length > context:
        raise ValueError(f"`length` ({length}) is past the model's context of {context} tokens")
    process = denoiser.process()
    settings = {
        **config.to_dict()["sampler"],
        "model": str(model),
        "prompt": prompt,
        "chat": chat,
        "length": length,
        "blocks": blocks,
        "block_length": block_length,
        **({} if adapter is None else {"adapter": str(Path(adapter).resolve())}),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    folder = Path(out) if out is not None else Path("samples") / _label(model) / spec.label
    if out is None:
        folder = folder.with_name(f"{spec.label}-{digest}")
    _check_same_samples(folder, settings)
    sampler = spec.build(process, progress=progress)
    batching = {"seed": spec.seed, "batch_size": spec.batch_size, "device": device}
    if spec.cache in (None, "none"):
        batching |= {"blocks": blocks, "block_length": block_length}
    else:  # a key/value cache: block by block over the new tokens (one block by default)
        sampler = BlockSampler(sampler, block_length or length // blocks, cache=spec.cache)
        if not prompt_ids:
            raise ValueError(f"`sampler.cache` {spec.cache!r} completes prompts: give a `prompt`")
    start = time.perf_counter()
    with torch.no_grad():
        if prompt_ids:
            rows = [
                denoiser.encode(torch.tensor(ids, dtype=torch.long))
                for ids in prompt_ids
                for _ in range(spec.samples)
            ]
            result = sampler.complete_batches(denoiser, rows, length, **batching)
        else:
            result = sampler.sample_batches(denoiser, spec.samples, length, **batching)
    seconds = time.perf_counter() - start
    generated = denoiser.decode(result.tokens).tolist()
    prefixes = [ids for ids in prompt_ids for _ in range(spec.samples)] or [[]] * len(generated)
    model_ids = [ids + row for ids, row in zip(prefixes, generated, strict=True)]
    completions = [tokenizer.decode(row, skip_special_tokens=True) for row in generated]
    metrics = {
        "nfe": int(result.sequence_nfe.max()),
        "sequence_nfe": result.sequence_nfe.tolist(),
        "seconds": seconds,
        "tokens_per_second": len(generated) * length / seconds,
    }
    record = {
        "sampler": settings,
        "metrics": metrics,
        "tokens": model_ids,
        "texts": [tokenizer.decode(row) for row in model_ids],
        "completions": completions,
        "provenance": provenance(settings, spec.seed),
    }
    lines = "\n".join(c.replace("\n", "\\n") for c in completions) + "\n"
    with locked(folder):
        _check_same_samples(folder, settings)
        _write_json(folder / "samples.json", record)
        atomic_write(folder / "samples.txt", lambda tmp: Path(tmp).write_text(lines))
        _write_json(folder / "metrics.json", metrics)
    return folder
