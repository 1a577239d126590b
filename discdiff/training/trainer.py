r"""A generic ELBO trainer for masked diffusion models.

Generic over the process, the objective (continuous or discrete NELBO, any
posterior), the denoiser (any `nn.Module` `(z_t, t) -> logits`) and the data
(any deterministic `BatchSource`). AdamW with linear warm-up, gradient
clipping and accumulation, EMA weights, bf16 autocast on CUDA, periodic
validation, a progress bar with loss and tokens/s; under `torchrun` it trains
with PyTorch DDP or FSDP (`fully_shard`; gloo on CPU, NCCL on CUDA) on
per-rank slices of each global batch.

Frozen parameters (`requires_grad=False`, e.g. the base model under LoRA
adapters) are neither optimised, averaged (EMA) nor checkpointed: a
checkpoint holds the trainable parameters only, and resuming expects the
frozen ones to be in the model already.

Prompt/response data: a source may return `Prompted(tokens, padding_mask,
prompt_mask)` batches (e.g. `PromptedSource`); the objective is then the
conditional bound of each response given its prompt (prompts never noised,
never scored), normalised as `TrainConfig.normalise` says.

Labelled data: a source may return `(x, *side)` instead of `x` (e.g. class
labels for a conditional model or a noisy classifier). The side tensors,
one row per sequence, are sliced per rank and micro-batch like `x` and passed
to the objective's `loss` before its own noise (see `ConditionalNELBO`,
`NoisyClassification`).

Reproducibility: batch `k` and its noise depend only on `(seed, k)`;
dropout uses torch's global generator, seeded with `seed` and checkpointed.
A resumed run therefore continues the exact loss trajectory of an
uninterrupted one, and its history (losses and validation records) is
bit-identical to it; wall-clock minutes are kept apart (`_History.minutes`).
On CUDA, `deterministic=True` selects torch's deterministic kernels for the
run (the atomics of embedding and scatter backward passes are otherwise
nondeterministic); on the CPU every kernel discdiff uses is deterministic.
"""

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

import discdiff.baseline_objectives  # noqa: F401  (registers score-entropy and autoregressive)
from discdiff.data.sources import BatchSource, Padded, Prompted
from discdiff.objectives import (
    Bound,
    ConditionalNELBO,
    Method,
    Objective,
    held_out_bound,
)
from discdiff.processes.base import ForwardProcess
from discdiff.provenance import environment
from discdiff.registry import entries
from discdiff.training.checkpoints import CheckpointStore
from discdiff.training.distributed import Distributed

__all__ = ["TrainConfig", "Trainer"]


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings (MDLM's reference values in brackets).

    Args:
        steps: Optimiser steps; `None` trains until `max_minutes` (which is then needed).
        batch_size: Sequences per optimiser step, over all ranks [512].
        accumulate: Micro-batches per step on each rank.
        lr: Peak learning rate [3e-4].
        warmup: Linear warm-up steps [2500].
        weight_decay: AdamW weight decay [0].
        betas: AdamW betas.
        grad_clip: Gradient-norm clip [1.0]; 0 disables.
        ema: EMA decay [0.9999]; 0 disables.
        eval_every: Steps between validations; 0 disables.
        eval_sequences: Validation sequences per evaluation.
        checkpoint_every: Steps between checkpoints; 0 saves only at the end.
        keep_checkpoints: How many checkpoints to keep.
        seed: Seed of the noise and the dropout (`discdiff train` also seeds
            the model's initialisation with `derive_seed(seed, "init")`).
        max_minutes: Stop (and checkpoint) after this much wall time.
        progress: Show a progress bar on rank 0.
        fsdp: Shard the model with FSDP (`fully_shard`, on the CPU with gloo or
            on CUDA) instead of DDP; checkpoints gather the full state.
        deterministic: Use torch's deterministic kernels while training
            (bit-reproducible CUDA runs, somewhat slower; sets
            `CUBLAS_WORKSPACE_CONFIG`). The CPU is deterministic either way.
        objective: The loss, a registered objective name (`discdiff.register`): `nelbo` (MDLM),
            `score-entropy` (SEDD) or `autoregressive` (an AR model). It is the
            trainer's default objective (which validation reports).
        normalise: How the summed per-sequence losses of a global batch become
            the training loss. `"token"` (default, the library's convention and
            MDLM's): divided by the number of scored tokens of the global batch
            (real tokens; real response tokens for `Prompted` batches), so every
            scored token weighs the same and the loss is the bound in nats per
            token. `"sequence"`: LLaDA's SFT normalisation, each sequence's loss
            divided by its own number of scored tokens (its response length),
            then averaged over the batch: short responses weigh more per
            token. The two agree when every sequence has the same number of
            scored tokens. Validation always reports nats per scored token.
    """

    steps: int | None = 1000
    batch_size: int = 64
    accumulate: int = 1
    lr: float = 3e-4
    warmup: int = 100
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    ema: float = 0.9999
    eval_every: int = 200
    eval_sequences: int = 256
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    seed: int = 0
    max_minutes: float | None = None
    progress: bool = True
    fsdp: bool = False
    deterministic: bool = False
    objective: str = "nelbo"
    normalise: str = "token"

    def __post_init__(self) -> None:
        if self.normalise not in ("token", "sequence"):
            raise ValueError(f"`normalise` must be 'token' or 'sequence'; got {self.normalise!r}")
        if self.objective not in entries("objective"):
            raise ValueError(
                f"`objective` must be one of {', '.join(entries('objective'))}; "
                f"got {self.objective!r}"
            )
        if self.steps is None and self.max_minutes is None:
            raise ValueError("`steps` may be None only with `max_minutes` set")
        positive = ("batch_size", "accumulate", "keep_checkpoints") + (
            ("steps",) if self.steps is not None else ()
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1; got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"`lr` must be positive; got {self.lr}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"`ema` must lie in [0, 1); got {self.ema}")
        for name in ("warmup", "eval_every", "checkpoint_every", "grad_clip", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be non-negative; got {getattr(self, name)}")


@dataclass
class _History:
    """Losses per step and validation records (deterministic), and wall-clock minutes per record."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    minutes: list[float] = field(default_factory=list)

    def eval_at(self, step: float) -> dict[str, float] | None:
        """The validation record of `step`, if one was made."""
        return next((r for r in reversed(self.evals) if r["step"] == step), None)


class Trainer:
    r"""Train a denoiser by minimising a NELBO.

    Args:
        process: The forward process.
        model: The denoiser, an `nn.Module` called as `model(z_t, t)`.
        data: Training batches (`BatchSource`); batches may be `(x, *side)`
            tuples, e.g. `(tokens, labels)`, whose side tensors go to the objective,
            or `Padded(tokens, padding_mask)`: the loss is then averaged over the
            real tokens only.
        config: The settings.
        objective: Per-sequence loss; by default the one `config.objective`
            names (the continuous-time NELBO unless set).
        validation: Fixed validation sequences `(N, L)`, or `Padded` or
            `Prompted` ones, evaluated with the objective (EMA weights when enabled).
        run_dir: Where checkpoints go (`run_dir/checkpoints`); none if `None`.
        on_eval: Called with each validation record (step, nats/token…) and
            the wall-clock `minutes` since `fit` started.
    """

    def __init__(
        self,
        process: ForwardProcess,
        model: nn.Module,
        data: BatchSource,
        config: TrainConfig,
        *,
        objective: Objective | None = None,
        validation: Tensor | Padded | Prompted | None = None,
        run_dir: str | os.PathLike | None = None,
        on_eval: Callable[[dict[str, float]], None] | None = None,
    ) -> None:
        if data.vocab_size > process.vocab_size:
            raise ValueError(
                f"the data has {data.vocab_size} token ids but the process only "
                f"{process.vocab_size} data tokens"
            )
        self.process, self.data, self.config = process, data, config
        self.objective = objective or Method.named(config.objective).loss()
        self.validation = validation
        self.on_eval = on_eval
        self.dist = Distributed.from_environment()
        if config.batch_size % (self.dist.world_size * config.accumulate):
            raise ValueError(
                f"`batch_size` {config.batch_size} must split evenly over "
                f"{self.dist.world_size} ranks x {config.accumulate} micro-batches"
            )
        self.device = self.dist.device
        self.model = model.to(self.device)
        self.wrapped = self.dist.wrap(self.model, fsdp=config.fsdp)
        self.optimizer = torch.optim.AdamW(
            [p for p in self.wrapped.parameters() if p.requires_grad],
            lr=config.lr,
            betas=config.betas,
            weight_decay=config.weight_decay,
        )
        self.ema = (
            [p.detach().clone().float() for _, p in self._trainable()] if config.ema else None
        )
        self.step = 0
        self.store = (
            CheckpointStore(Path(run_dir) / "checkpoints", keep=config.keep_checkpoints)
            if run_dir is not None
            else None
        )
        self.history = _History()
        self._saved_step: int | None = None  # the step of the newest checkpoint
        self._signal: int | None = None
        torch.manual_seed(config.seed)

    def _trainable(self) -> list[tuple[str, nn.Parameter]]:
        """The model's trainable parameters, by name (what is optimised and saved)."""
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    @property
    def _frozen(self) -> bool:
        return any(not p.requires_grad for p in self.model.parameters())

    # -- schedule and EMA --------------------------------------------------------

    def learning_rate(self, step: int) -> float:
        """Linear warm-up to `lr`, then constant (MDLM)."""
        if self.config.warmup == 0:
            return self.config.lr
        return self.config.lr * min(1.0, (step + 1) / self.config.warmup)

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        decay = self.config.ema
        for shadow, (_, p) in zip(self.ema, self._trainable(), strict=True):
            shadow.lerp_(p.detach().float(), 1.0 - decay)

    @contextlib.contextmanager
    def ema_weights(self) -> Any:
        """Temporarily load the EMA weights into the model (no-op without EMA)."""
        if self.ema is None:
            yield
            return
        params = [p for _, p in self._trainable()]
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, shadow in zip(params, self.ema, strict=True):
                p.copy_(shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, value in zip(params, saved, strict=True):
                    p.copy_(value)

    # -- one step ------------------------------------------------------------------

    def _step_generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)

    def train_step(self) -> float:
        """One optimiser step on global batch `self.step`; returns its loss in nats/token."""
        config, dist = self.config, self.dist
        batch = self.data.batch(self.step, config.batch_size)
        masks: dict[str, Tensor] = {}
        if isinstance(batch, Prompted):
            batch, masks["padding_mask"], masks["prompt_mask"] = batch
        elif isinstance(batch, Padded):
            batch, masks["padding_mask"] = batch
        x, *side = (batch,) if isinstance(batch, Tensor) else batch
        noise = self.objective.noise(self.process, x, self._step_generator(self.step))
        noise = (*side, *noise)
        # the weight of each sequence's summed loss, from the global batch's scored
        # tokens: padding and prompts count neither in the loss nor here
        weights = self._weights(x, **masks)
        rank_slice = dist.shard(config.batch_size)
        x, noise = x[rank_slice], [n[rank_slice] for n in noise]
        weights = weights[rank_slice]
        masks = {k: v[rank_slice] for k, v in masks.items()}
        micro = x.shape[0] // config.accumulate
        total = torch.zeros((), device=self.device)
        for m in range(config.accumulate):
            part = slice(m * micro, (m + 1) * micro)
            sync = m == config.accumulate - 1
            with dist.maybe_no_sync(self.wrapped, sync), self._autocast():
                losses = self.objective.loss(
                    self.process,
                    self.wrapped,
                    x[part].to(self.device),
                    *(n[part].to(self.device) for n in noise),
                    **{k: v[part].to(self.device) for k, v in masks.items()},
                )
                loss = (losses * weights[part].to(self.device)).sum() * dist.world_size
            loss.backward()
            total += loss.detach() / dist.world_size  # this rank's share of the global loss
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.wrapped.parameters(), config.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._update_ema()
        self.step += 1
        return float(dist.sum(total))

    def _weights(
        self,
        x: Tensor,
        padding_mask: Tensor | None = None,
        prompt_mask: Tensor | None = None,
    ) -> Tensor:
        """`(B,)` factors turning the global batch's per-sequence sums into the loss."""
        scored = torch.ones_like(x, dtype=torch.bool)
        if padding_mask is not None:
            scored = scored & padding_mask
        if prompt_mask is not None:
            scored = scored & ~prompt_mask
        counts = scored.sum(-1).double()
        if self.config.normalise == "sequence":
            return (1.0 / (counts.clamp_min(1.0) * x.shape[0])).float()
        return torch.full((x.shape[0],), 1.0 / float(counts.sum().clamp_min(1.0)))

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- validation ------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, batch_size: int = 64) -> Bound:
        """The objective on the validation set (fixed noise; EMA weights if any).

        The configured objective is evaluated (the continuous NELBO by default);
        a `ConditionalNELBO` on unlabelled validation data gives its inner,
        unconditional bound.
        """
        if self.validation is None:
            raise ValueError("no `validation` data was given")
        self.model.eval()
        data, padding_mask, prompt_mask = self.validation, None, None
        if isinstance(data, Prompted):
            data, padding_mask, prompt_mask = data
        elif isinstance(data, Padded):
            data, padding_mask = data
        rows = slice(self.config.eval_sequences)
        objective = self.objective
        if isinstance(objective, ConditionalNELBO):  # validation rows carry no labels
            objective = objective.inner
        with self.ema_weights():
            bound = held_out_bound(
                self.process,
                self.model,
                data[rows],
                padding_mask=None if padding_mask is None else padding_mask[rows],
                prompt_mask=None if prompt_mask is None else prompt_mask[rows],
                batch_size=batch_size,
                device=self.device,
                autocast=self._autocast,
                objective=objective,
            )
        self.model.train()
        return bound

    # -- checkpoints -----------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything besides the weights that a resumed run needs.

        Under FSDP the optimiser state is gathered in full (a collective: every
        rank must call this).
        """
        return {
            "step": self.step,
            "data_position": self.step,  # batches are a function of their index
            "optimizer": self._optimizer_state(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "config": asdict(self.config),
            "history_steps": self.history.steps,
            "history_losses": self.history.losses,
            "history_evals": self.history.evals,
            "history_minutes": self.history.minutes,
            "provenance": environment(),
        }

    @property
    def _sharded(self) -> bool:
        return self.config.fsdp and self.dist.world_size > 1

    def _optimizer_state(self) -> dict[str, Any]:
        if not self._sharded:
            return self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.model, self.optimizer, options=options)

    def weights(self) -> dict[str, Tensor]:
        """The weights a checkpoint holds.

        The trainable parameters when some are frozen (e.g. LoRA adapters),
        else the whole state dict; full tensors under FSDP (a collective:
        every rank must call this).
        """
        state = dict(self._trainable()) if self._frozen else self.model.state_dict()
        return {name: _full(value) for name, value in state.items()}

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint atomically (rank 0); returns its directory.

        Under FSDP every rank takes part in gathering the state; rank 0 writes.
        """
        if self.store is None or (not self.dist.is_main and not self._sharded):
            return None
        self._saved_step = self.step
        weights, state = self.weights(), self.state()
        ema = None
        if self.ema is not None:
            names = [n for n, _ in self._trainable()]
            ema = {n: _full(shadow) for n, shadow in zip(names, self.ema, strict=True)}
        saved = self.store.save(self.step, weights, ema, state) if self.dist.is_main else None
        if self._sharded:
            self.dist.barrier()  # no rank reads checkpoints before rank 0 has written this one
        return saved

    def resume(self) -> bool:
        """Load the latest checkpoint if there is one; returns whether it did."""
        if self.store is None:
            return False
        loaded = self.store.load_latest()
        if loaded is None:
            return False
        weights, ema, state = loaded
        self._load_weights(weights)
        if self.ema is not None and ema is not None:
            self.ema = [
                _like(ema[n].to(self.device), shadow)
                for (n, _), shadow in zip(self._trainable(), self.ema, strict=True)
            ]
        if self._sharded:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_optimizer_state_dict,
            )

            set_optimizer_state_dict(
                self.model,
                self.optimizer,
                state["optimizer"],
                options=StateDictOptions(full_state_dict=True),
            )
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        torch.set_rng_state(state["rng_cpu"])
        if torch.cuda.is_available() and state["rng_cuda"]:
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.history.steps = list(state["history_steps"])
        self.history.losses = list(state["history_losses"])
        self.history.evals = list(state.get("history_evals", []))
        self.history.minutes = list(state.get("history_minutes", []))
        self._saved_step = self.step
        return True

    def _load_weights(self, weights: dict[str, Tensor]) -> None:
        """Load a checkpoint's weights: all of them, or the trainable ones over a frozen base."""
        expected = {n for n, _ in self._trainable()} if self._frozen else None
        if expected is not None and set(weights) != expected:
            raise ValueError(
                "the checkpoint's weights are not this model's trainable parameters: "
                f"missing {sorted(expected - set(weights))[:5]}, "
                f"unknown {sorted(set(weights) - expected)[:5]}"
            )
        if self._sharded:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
            )

            options = StateDictOptions(full_state_dict=True, strict=expected is None)
            set_model_state_dict(self.model, weights, options=options)
        else:
            self.model.load_state_dict(weights, strict=expected is None)

    # -- the loop --------------------------------------------------------------------

    def _handle(self, signum: int, frame: Any) -> None:
        self._signal = signum

    @contextlib.contextmanager
    def _signals(self) -> Any:
        """Turn SIGTERM/SIGINT into "checkpoint after this step, then exit"."""
        try:
            previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        except ValueError:  # not the main thread: leave signals alone
            yield
            return
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @contextlib.contextmanager
    def _deterministic(self) -> Any:
        """Deterministic kernels during `fit` when `config.deterministic` (then restored)."""
        if not self.config.deterministic:
            yield
            return
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous)

    def fit(self, *, resume: bool = True) -> _History:
        """Train until `config.steps` (or `max_minutes`), validating and checkpointing.

        Returns:
            The history: steps, training losses (nats/token) and validation records.

        Raises:
            SystemExit: After saving a checkpoint on SIGTERM or SIGINT.
        """
        if resume:
            self.resume()
        config = self.config
        start = time.perf_counter()
        seq_tokens = config.batch_size * self.data.length
        bar = tqdm(
            total=config.steps,
            initial=self.step,
            desc="training",
            unit="step",
            disable=not (config.progress and self.dist.is_main),
            mininterval=0.5,
        )
        self.wrapped.train()
        with self._signals(), self._deterministic():
            while config.steps is None or self.step < config.steps:
                tick = time.perf_counter()
                loss = self.train_step()
                self.history.steps.append(self.step)
                self.history.losses.append(loss)
                rate = seq_tokens / max(time.perf_counter() - tick, 1e-9)
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:,.0f}", refresh=False)
                bar.update()
                minutes = (time.perf_counter() - start) / 60
                if (
                    self.validation is not None
                    and config.eval_every
                    and (self.step % config.eval_every == 0 or self.step == config.steps)
                ):
                    self._record_eval(minutes)
                if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                    self.save_checkpoint()
                if self._signal is not None:
                    self.save_checkpoint()
                    bar.close()
                    raise SystemExit(128 + self._signal)
                if config.max_minutes is not None and minutes >= config.max_minutes:
                    if self.validation is not None:
                        self._record_eval(minutes)
                    break
        bar.close()
        if self._saved_step != self.step:  # a resumed, finished run has nothing new
            self.save_checkpoint()
        return self.history

    def final_bound(self) -> dict[str, float]:
        """The validation record at the current step: the history's, else a new evaluation.

        A finished run that is started again (or was killed after its last
        validation) does not evaluate again.
        """
        record = self.history.eval_at(float(self.step))
        if record is None:
            record = {"step": float(self.step), **self.evaluate().summary()}
        return record

    def _record_eval(self, minutes: float) -> None:
        if self.history.eval_at(float(self.step)) is not None:
            return  # already validated at this step (e.g. before a restart)
        bound = self.evaluate()
        record = {"step": float(self.step), **bound.summary()}
        self.history.evals.append(record)
        self.history.minutes.append(minutes)
        if self.on_eval is not None:
            self.on_eval({**record, "minutes": minutes})


def _full(value: Tensor) -> Tensor:
    """A plain tensor: an FSDP-sharded `DTensor` gathered (collective), detached."""
    full = getattr(value, "full_tensor", None)
    return (full() if full is not None else value).detach()


def _like(full: Tensor, reference: Tensor) -> Tensor:
    """`full` sharded like `reference` when that is a `DTensor` (FSDP), else itself."""
    mesh = getattr(reference, "device_mesh", None)
    if mesh is None:
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full, mesh, reference.placements)
