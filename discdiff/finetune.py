r"""Supervised fine-tuning of a diffusion LM on prompt/response data, with or without LoRA.

The loss is the conditional bound of each response given its prompt (see
`discdiff.nelbo`'s `prompt_mask`): prompts are never noised or scored,
padding follows `SFTSettings.padding` (LLaDA's scored EOS by default), EOS
ends every response. Training is the library's `Trainer`: AdamW with
warm-up, gradient clipping, atomic checkpoints, exact resume (a killed run
started again continues the same trajectory), SIGTERM-safe, a progress bar,
validation on a held-out split, and DDP or FSDP under `torchrun`.

A fine-tuning run directory holds::

    finetune.json     base, data, LoRA and training settings
    checkpoints/      resumable training state (trainable parameters only under LoRA)
    metrics.jsonl     one line per step ({"step", "loss"}) and per validation
                      ({"step", "validation": {nats_per_token, ...}})
    metrics.json      the final validation bound and the wall time
    adapter/          LoRA: adapter_model.safetensors + adapter_config.json (peft's format)
    model/            full fine-tuning: the weights in the base's own layout
                      (a LLaDA / Dream directory, or a DiT run's model/ with run.yaml)

Bases: an open diffusion LLM (a LLaDA or Dream directory or Hub id, loaded
natively; data in tokenizer ids) or a discdiff DiT run (a run directory or a
built-in run such as `hmm`; records given as token id lists).
"""

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from discdiff._io import atomic_write
from discdiff.config import ConfigError, RunConfig, apply_overrides, construct
from discdiff.data.sft import PADDINGS, read_sft_jsonl, split_rows
from discdiff.data.sources import Prompted, PromptedSource
from discdiff.models.diffusion_llms import load_diffusion_llm, resolve_model, save_diffusion_llm
from discdiff.models.dit import DiT
from discdiff.models.subs import SUBS
from discdiff.processes.base import ForwardProcess
from discdiff.provenance import provenance
from discdiff.rng import derive_seed, seeded
from discdiff.runs import BUILTIN_RUNS, resolve_run
from discdiff.training.lora import LoraSpec, add_lora, load_adapter, merge_lora, save_adapter
from discdiff.training.trainer import TrainConfig, Trainer

__all__ = [
    "FINETUNE_TRAIN",
    "Base",
    "SFTSettings",
    "apply_adapter",
    "export",
    "finetune",
    "load_base",
]

FINETUNE_TRAIN = {
    "steps": 1000,
    "batch_size": 16,
    "lr": 1e-4,
    "warmup": 50,
    "ema": 0.0,
    "eval_every": 100,
    "checkpoint_every": 100,
}
"""`train.*` defaults of `discdiff finetune` where they differ from `TrainConfig`'s:
a smaller batch and learning rate, no EMA (as LLaDA's SFT), regular checkpoints."""


@dataclass(frozen=True)
class SFTSettings:
    """How the JSONL data becomes training rows (`sft.*` overrides).

    Args:
        max_length: Tokens per record at most; with `"eos"` padding, the row length
            (the generation canvas the model learns to fill).
        padding: `"eos"` (LLaDA: pads are EOS, attended and scored) or
            `"exclude"` (pads not attended, not scored); see `discdiff.data.sft`.
        validation: Fraction of the records held out for validation, in [0, 1).
        seed: Seed of the split and of the epochs' shuffling.
        bucket: Length bucketing over this many batches (`"exclude"` padding only); 0: off.
        gradient_checkpointing: Recompute each transformer layer in the backward
            pass instead of storing its activations (LLaDA / Dream).
    """

    max_length: int = 256
    padding: str = "eos"
    validation: float = 0.05
    seed: int = 0
    bucket: int = 0
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise ValueError(f"`max_length` must be at least 1; got {self.max_length}")
        if self.padding not in PADDINGS:
            raise ValueError(
                f"`padding` must be one of {', '.join(PADDINGS)}; got {self.padding!r}"
            )
        if not 0.0 <= self.validation < 1.0:
            raise ValueError(f"`validation` must lie in [0, 1); got {self.validation}")
        if self.bucket < 0 or (self.bucket and self.padding != "exclude"):
            raise ValueError(
                f"`bucket` must be 0, or positive with padding 'exclude'; got {self.bucket}"
            )


@dataclass
class Base:
    """A base model loaded for fine-tuning.

    Attributes:
        name: How it was named (directory, Hub id or run).
        kind: `"llm"` (LLaDA / Dream) or `"dit"` (a discdiff run).
        network: The module that is trained (LoRA goes into it).
        denoiser: The network as a denoiser (process ids in, log-probabilities out).
        process: The forward process.
        tokenizer: The tokenizer (`None` for a DiT run: records are id lists).
        directory: Where its files are.
    """

    name: str
    kind: str
    network: nn.Module
    denoiser: nn.Module
    process: ForwardProcess
    tokenizer: Any
    directory: Path

    def rows(self, path: str | Path, settings: SFTSettings) -> Prompted:
        """Read the JSONL file into rows of process ids."""
        if self.kind == "llm":
            mask = self.denoiser.model_mask_id
            rows = read_sft_jsonl(
                path,
                self.tokenizer,
                max_length=settings.max_length,
                padding=settings.padding,
                vocab_size=self.denoiser.vocab_size + 1,
                forbidden=[mask],
            )
            return Prompted(self.denoiser.encode(rows.tokens), *rows[1:])
        length = self.network.config.model_length
        if settings.max_length > length:
            raise ValueError(
                f"`sft.max_length` {settings.max_length} exceeds the DiT's model_length {length}"
            )
        if settings.padding == "eos":
            raise ValueError("a DiT run's vocabulary has no EOS: use sft.padding=exclude")
        return read_sft_jsonl(
            path,
            None,
            max_length=settings.max_length,
            padding="exclude",
            pad_id=0,
            vocab_size=self.process.vocab_size,
        )


def load_base(
    name: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Base:
    """Load a LLaDA / Dream model (directory or Hub id) or a discdiff DiT run.

    Args:
        name: A model directory with a `config.json` of `model_type` llada or
            dream, a Hub id, or a run directory / built-in run.
        device: Where to put it.
        dtype: The LLM's weight dtype (float32 to train them; bf16 for a
            frozen base under LoRA, whose adapters peft keeps in float32).

    Returns:
        The `Base`.
    """
    path = Path(name)
    if str(name) in BUILTIN_RUNS or (path / "run.yaml").is_file():
        directory = resolve_run(name)
        config = RunConfig.load(directory / "run.yaml", complete=True)
        model_dir = directory / "model" if (directory / "model").is_dir() else directory
        if config.train.objective != "nelbo" or config.block_size:
            raise ValueError(f"`model`: {name!s} is not a DiT run trained with the NELBO")
        network = DiT.from_pretrained(model_dir).to(device)
        process = config.process.build(network.config.vocab_size - 1)
        if process.mask_id is None:
            raise ValueError(f"`model`: {name!s} is not a masking run")
        return Base(str(name), "dit", network, SUBS(network, process), process, None, directory)
    directory = resolve_model(name)
    denoiser = load_diffusion_llm(directory, dtype=dtype, device=device)
    process, tokenizer = denoiser.process(), denoiser.tokenizer
    return Base(str(name), "llm", denoiser.model, denoiser, process, tokenizer, directory)


def _settings(overrides: list[str] | tuple[str, ...]) -> tuple[TrainConfig, SFTSettings]:
    for override in overrides:
        if not override.startswith(("train.", "sft.")):
            raise ConfigError(override, "only train.* and sft.* keys can be set when fine-tuning")
    values = apply_overrides({"train": dict(FINETUNE_TRAIN), "sft": {}}, overrides)
    return (
        construct("train", TrainConfig, values["train"]),
        construct("sft", SFTSettings, values["sft"]),
    )


_RESUMABLE = ("steps", "max_minutes", "progress")
"""`train.*` keys a run may change between starts (it resumes all the same)."""


def _identity(record: dict[str, Any]) -> dict[str, Any]:
    train = {k: v for k, v in record["train"].items() if k not in _RESUMABLE}
    return {**record, "train": train}


class _FinetuneTrainer(Trainer):
    """The `Trainer`, writing `metrics.jsonl` with every checkpoint (from its history)."""

    metrics_path: Path

    def save_checkpoint(self) -> Path | None:
        saved = super().save_checkpoint()
        if saved is not None:
            self.write_metrics()
        return saved

    def write_metrics(self) -> None:
        if not self.dist.is_main:
            return
        lines = [
            json.dumps({"step": s, "loss": loss})
            for s, loss in zip(self.history.steps, self.history.losses, strict=True)
        ]
        for record in self.history.evals:
            step = int(record["step"])
            values = {k: v for k, v in record.items() if k != "step"}
            lines.insert(
                sum(1 for s in self.history.steps if s <= step),
                json.dumps({"step": step, "validation": values}),
            )
        text = "\n".join(lines) + "\n"
        atomic_write(self.metrics_path, lambda tmp: Path(tmp).write_text(text))


def finetune(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    lora: LoraSpec | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
) -> Path:
    """Fine-tune `model` on the prompt/response records of `data`; resumes from `out`.

    Args:
        model: The base: a LLaDA / Dream directory or Hub id, or a DiT run.
        data: A JSONL file of chat or prompt/response records (`discdiff.data.sft`).
        out: The run directory.
        lora: Train LoRA adapters with these settings (the base frozen); `None`:
            full fine-tuning.
        overrides: `train.*` (`TrainConfig`) and `sft.*` (`SFTSettings`) values.
        progress: Show the progress bar.

    Returns:
        `out`.

    Raises:
        ConfigError: For a bad override.
        FileExistsError: If `out` holds a run with other settings.
        SFTDataError: For a bad record (file and line named).
    """
    train, sft = _settings(list(overrides))
    if not progress:
        train = replace(train, progress=False)
    out = Path(out)
    record = {
        "model": str(model),
        "data": str(Path(data).resolve()),
        "lora": None if lora is None else {**asdict(lora), "targets": list(lora.targets)},
        "sft": asdict(sft),
        "train": {**asdict(train), "betas": list(train.betas)},
    }
    saved = out / "finetune.json"
    if saved.is_file():
        old = json.loads(saved.read_text())
        if _identity(old) != _identity(record):
            changed = sorted(k for k in record if _identity(old)[k] != _identity(record)[k])
            raise FileExistsError(
                f"{out} holds a fine-tuning run with other {', '.join(changed)} settings; "
                "use a new --out (nothing was changed)"
            )
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda and lora is not None else torch.float32
    base = load_base(model, device="cuda" if cuda else "cpu", dtype=dtype)
    rows = base.rows(data, sft)
    training, validation = split_rows(rows, sft.validation, seed=sft.seed)
    source = PromptedSource(
        *training, vocab_size=base.process.vocab_size, seed=sft.seed, bucket=sft.bucket
    )
    if lora is not None:
        with seeded(derive_seed(train.seed, "lora")):
            add_lora(base.network, lora)
    if sft.gradient_checkpointing and hasattr(base.network, "gradient_checkpointing"):
        base.network.gradient_checkpointing = True
    base.network.train()
    if validation is not None:
        train = replace(train, eval_sequences=max(train.eval_sequences, len(validation.tokens)))
    trainer = _FinetuneTrainer(
        base.process,
        base.denoiser,
        source,
        train,
        validation=validation,
        run_dir=out,
    )
    trainer.metrics_path = out / "metrics.jsonl"
    trainer.resume()  # reads (and checks) the last checkpoint before anything is written
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(saved, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)))
    start = time.perf_counter()
    trainer.fit(resume=False)
    seconds = time.perf_counter() - start
    trainer.write_metrics()
    final = trainer.final_bound() if validation is not None else {}  # every rank (FSDP)
    with trainer.ema_weights():
        # under FSDP the shards are gathered on every rank; rank 0 writes a plain copy
        gathered = trainer.weights() if trainer.dist.world_size > 1 else None
    if trainer.dist.is_main:
        summary = {
            "step": trainer.step,
            **{k: v for k, v in final.items() if k != "step"},
            "seconds_this_start": seconds,
            "provenance": provenance(record, train.seed),
        }
        atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(summary)))
        if gathered is None:
            with trainer.ema_weights():
                _write_result(base, out, lora is not None)
        else:
            plain = load_base(model)
            if lora is not None:
                add_lora(plain.network, lora)
            plain.denoiser.load_state_dict(gathered, strict=lora is None)
            _write_result(plain, out, lora is not None)
    if trainer.dist.world_size > 1:
        torch.distributed.barrier()  # every rank returns once rank 0 has written the result
    return out


def _write_result(base: Base, out: Path, adapted: bool) -> None:
    network = base.network
    if adapted:
        save_adapter(network, out / "adapter")
    elif base.kind == "llm":
        save_diffusion_llm(network, base.directory, out / "model")
    else:
        _write_dit_run(network, base.directory, out)


def _write_dit_run(network: nn.Module, base: Path, out: Path) -> None:
    """A DiT run directory: model/ plus the base run's run.yaml (and alphabet)."""
    network.save_pretrained(out / "model")
    for name in ("run.yaml", "alphabet.json"):
        if (base / name).is_file():
            shutil.copyfile(base / name, out / name)


def _adapter_directory(run: str | Path) -> Path:
    run = Path(run)
    return run / "adapter" if (run / "adapter").is_dir() else run


def apply_adapter(network: nn.Module, run: str | Path, *, merge: bool = True) -> nn.Module:
    """Load a fine-tuning run's LoRA adapter into `network` (in place), merged by default.

    Args:
        network: The base network (the LLM module or the DiT).
        run: A fine-tuning run directory, or its `adapter/` directory.
        merge: Fold the adapter into the weights (same outputs, faster).

    Returns:
        `network`.
    """
    load_adapter(network, _adapter_directory(run))
    return merge_lora(network) if merge else network


def export(run: str | Path, out: str | Path) -> Path:
    """Merge a LoRA run's adapter into its base and write a stand-alone model.

    A LLaDA / Dream base gives a model directory in the base's own layout
    (`discdiff sample --model OUT`); a DiT base gives a run directory
    (`discdiff sample --run OUT`).

    Args:
        run: A fine-tuning run with an adapter.
        out: The new directory.

    Returns:
        `out`.

    Raises:
        FileNotFoundError: If `run` is not a fine-tuning run with an adapter.
    """
    run, out = Path(run), Path(out)
    settings = run / "finetune.json"
    if not settings.is_file():
        raise FileNotFoundError(f"{run} is not a fine-tuning run (no finetune.json)")
    if not (run / "adapter").is_dir():
        raise FileNotFoundError(f"{run} has no adapter/ (full fine-tuning writes model/ itself)")
    base = load_base(json.loads(settings.read_text())["model"])
    apply_adapter(base.network, run)
    if base.kind == "llm":
        return save_diffusion_llm(base.network, base.directory, out)
    _write_dit_run(base.network, base.directory, out)
    return out
