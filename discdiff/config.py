r"""Typed run configurations: YAML files that mirror the Python objects.

A run is described by five sections, each a typed mirror of the object it
builds::

    data:     {kind: synthetic, length: 64, seed: 1}          # DataSpec
    model:    {hidden_dim: 128, n_blocks: 4, ...}             # DiTConfig fields
    process:  {name: masking, schedule: loglinear}            # a ForwardProcess
    train:    {steps: 1800, lr: 0.002, ...}                   # TrainConfig
    sampler:  {posterior: {name: cap, eta: 0.02}, steps: 64}  # AncestralSampler

A *choice* (a noise schedule, a posterior, a remasking schedule) is a mapping
whose `name` picks the class and whose other keys are that class's
constructor arguments, or just the name: `schedule: cosine`. Values are
checked against the constructor's type annotations (an integer is accepted
for a float, and YAML 1.1's `1e-3`, which it reads as a string, as the
number), then the constructor checks its own ranges. Every error is a
`ConfigError` that names the key's full path and the allowed values, and it
is raised while parsing, before any work starts.

Example:
    >>> config = RunConfig.from_dict({"sampler": {"posterior": {"name": "cap", "eta": 0.02}}})
    >>> config.sampler.posterior
    RemaskPosterior(CapSchedule(eta=0.02))
    >>> RunConfig.from_dict({"sampler": {"posterior": "capp"}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    discdiff.config.ConfigError: sampler.posterior.name: unknown 'capp' (did you mean 'cap'?); ...
"""

import dataclasses
import difflib
import hashlib
import inspect
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from beartype.door import is_bearable

from discdiff._io import atomic_write
from discdiff.data import ExactLanguage, HMMLanguage, PCFGLanguage, SyntheticLanguage
from discdiff.models.dit import DiTConfig
from discdiff.posteriors import MaskingPosterior, RemaskPosterior
from discdiff.processes import ForwardProcess, MaskingProcess
from discdiff.remasking import (
    CapSchedule,
    ConfidenceSchedule,
    DFMCorrector,
    ForwardBackward,
    LoopSchedule,
    NoRemasking,
    RemaskingSchedule,
    RescaleSchedule,
)
from discdiff.sampling import (
    AncestralSampler,
    DilatedDecoder,
    DreamCount,
    EntropyDecoder,
    EvenCount,
    MarginDecoder,
    MaskGITDecoder,
    ScheduleCount,
    SEDDAnalytic,
    SEDDEuler,
    ThresholdCount,
    ThresholdDecoder,
)
from discdiff.sampling.ancestral import Nucleus, Strategy
from discdiff.sampling.decoders import ConfidenceDecoder, StepCount
from discdiff.schedules import (
    Cosine,
    CosineSquared,
    Geometric,
    Linear,
    LogLinear,
    NoiseSchedule,
    Polynomial,
)
from discdiff.training.trainer import TrainConfig
from discdiff.uniform import UniformPosterior, UniformProcess

__all__ = [
    "LANGUAGES",
    "MAX_STEPS",
    "NOISE_SCHEDULES",
    "POSTERIORS",
    "PROCESSES",
    "REMASKING_SCHEDULES",
    "STEP_COUNTS",
    "ConfigError",
    "DataSpec",
    "ProcessSpec",
    "RunConfig",
    "SamplerSpec",
    "build_strategy",
    "describe_config",
    "parse_override",
]

NOISE_SCHEDULES: dict[str, type[NoiseSchedule]] = {
    "loglinear": LogLinear,
    "cosine": Cosine,
    "cosine-squared": CosineSquared,
    "linear": Linear,
    "geometric": Geometric,
    "polynomial": Polynomial,
}
"""Names of the noise schedules $\\alpha_t$ in a config."""

PROCESSES: dict[str, type[ForwardProcess]] = {
    "masking": MaskingProcess,
    "uniform": UniformProcess,
}
"""Names of the forward processes (`process.name`), each built as `cls(schedule, vocab_size=V)`."""

REMASKING_SCHEDULES: dict[str, type[RemaskingSchedule]] = {
    "none": NoRemasking,
    "cap": CapSchedule,
    "rescale": RescaleSchedule,
    "conf": ConfidenceSchedule,
    "loop": LoopSchedule,
    "forward-backward": ForwardBackward,
    "dfm": DFMCorrector,
}
"""Names of the remasking schedules $\\sigma_t$ (e.g. the `base` of `conf`)."""

POSTERIORS: dict[str, type] = {
    "mdlm": MaskingPosterior,
    **{name: cls for name, cls in REMASKING_SCHEDULES.items() if name != "none"},
    "maskgit": MaskGITDecoder,
    "entropy": EntropyDecoder,
    "margin": MarginDecoder,
    "threshold": ThresholdDecoder,
    "dilated": DilatedDecoder,
    "uniform": UniformPosterior,
    "sedd-analytic": SEDDAnalytic,
    "sedd-euler": SEDDEuler,
}
"""Names of the sampler strategies: MDLM, the ReMDM posteriors
`RemaskPosterior(schedule)` by their schedule's name, the confidence decoders,
the posterior of uniform-state noise, and SEDD's samplers for score models
(`train.objective: score-entropy`)."""


STEP_COUNTS: dict[str, type[StepCount]] = {
    "schedule": ScheduleCount,
    "even": EvenCount,
    "dream": DreamCount,
    "threshold": ThresholdCount,
}
"""Names of the decoders' count rules (`count` of `maskgit`, `entropy`, `margin`, `dilated`):
MDLM's expected count, LLaDA's even quota, Dream's floor(n (1 - s/t))."""


LANGUAGES: dict[str, type[ExactLanguage]] = {
    "synthetic": SyntheticLanguage,
    "hmm": HMMLanguage,
    "pcfg": PCFGLanguage,
}
"""Names of the exact-likelihood languages (`data.language` when `data.kind` is synthetic)."""


MAX_STEPS = 2**20
"""The most sampling steps a config may ask for (the time grid alone is 8 bytes a step)."""


class ConfigError(ValueError):
    """A configuration value that is unknown, of the wrong type or out of range.

    Args:
        key: The full dotted path of the offending key, e.g. `sampler.posterior.eta`.
        message: What is wrong and what is allowed.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


# -- generic typed construction ---------------------------------------------------------


def _allowed(names: Sequence[str], given: object) -> str:
    close = difflib.get_close_matches(str(given), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {given!r}{hint}; allowed: {', '.join(names)}"


def _parameters(cls: type) -> dict[str, Any]:
    """Constructor parameters of `cls` with their type annotations."""
    hints = typing.get_type_hints(cls.__init__)
    return {
        name: hints.get(name, Any)
        for name, p in inspect.signature(cls).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _construct(key: str, cls: type, values: object, **fixed: Any) -> Any:
    """`cls(**values, **fixed)` with every value checked against its annotation."""
    if not isinstance(values, Mapping):
        raise ConfigError(key, f"must be a mapping; got {values!r}")
    parameters = {k: v for k, v in _parameters(cls).items() if k not in fixed}
    for name in values:
        if name not in parameters:
            raise ConfigError(f"{key}.{name}" if key else name, _allowed(list(parameters), name))
    kwargs = {
        name: _coerce(f"{key}.{name}" if key else name, value, parameters[name])
        for name, value in values.items()
    }
    try:
        return cls(**kwargs, **fixed)
    except (ValueError, TypeError) as error:
        # Constructors name the argument as `name`; report its full path.
        named = re.search(r"`(\w+)`", str(error))
        where = f"{key}.{named.group(1)}" if named and named.group(1) in parameters else key
        raise ConfigError(where or cls.__name__, str(error)) from None


def _choice(key: str, value: Any, registry: Mapping[str, type]) -> Any:
    """Build the registry entry named by `value` (a name or `{name: ..., **arguments}`)."""
    values = {"name": value} if isinstance(value, str) else value
    if not isinstance(values, Mapping) or "name" not in values:
        raise ConfigError(key, f"must be a name or a mapping with `name`; got {value!r}")
    arguments = {k: v for k, v in values.items() if k != "name"}
    if values["name"] not in registry:
        raise ConfigError(f"{key}.name", _allowed(list(registry), values["name"]))
    built = _construct(key, registry[values["name"]], arguments)
    return RemaskPosterior(built) if isinstance(built, RemaskingSchedule) else built


def build_strategy(form: str | Mapping[str, Any], key: str = "sampler.posterior") -> Strategy:
    """The sampler strategy of a config form: a name from `POSTERIORS`, or `{name: ..., **args}`.

    Example:
        >>> build_strategy({"name": "cap", "eta": 0.02})
        RemaskPosterior(CapSchedule(eta=0.02))

    Raises:
        ConfigError: Naming `key` (or its argument) for an unknown name or a bad argument.
    """
    return _choice(key, form, POSTERIORS)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check (and lightly convert) one value against a type annotation."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = typing.get_args(hint) if union else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(key, "may not be null")
    concrete = [o for o in options if o is not type(None)]
    if len(concrete) > 1 and all(
        inspect.isclass(o) and issubclass(o, (RemaskPosterior, ConfidenceDecoder)) for o in concrete
    ):  # a choice among strategies (a threshold decoder's base)
        built = _choice(key, value, POSTERIORS)
        if not isinstance(built, tuple(concrete)):
            names = " or ".join(o.__name__ for o in concrete)
            raise ConfigError(key, f"must name a {names}; got {value!r}")
        return built
    if len(concrete) == 1:
        hint = concrete[0]
    if hint is Strategy:
        return _choice(key, value, POSTERIORS)
    if inspect.isclass(hint) and issubclass(hint, RemaskPosterior):
        built = _choice(key, value, POSTERIORS)
        if not isinstance(built, hint):
            raise ConfigError(key, f"must name a posterior ({hint.__name__}); got {value!r}")
        return built
    for base, registry in (
        (NoiseSchedule, NOISE_SCHEDULES),
        (RemaskingSchedule, REMASKING_SCHEDULES),
        (ExactLanguage, LANGUAGES),
        (StepCount, STEP_COUNTS),
    ):
        if inspect.isclass(hint) and issubclass(hint, base):
            built = _choice(key, value, registry)
            return built.schedule if isinstance(built, RemaskPosterior) else built
    if hint is float and not isinstance(value, bool):
        if isinstance(value, int):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        items = typing.get_args(hint)
        if len(items) != len(value):
            raise ConfigError(key, f"needs {len(items)} values; got {value!r}")
        pairs = enumerate(zip(value, items, strict=True))
        return tuple(_coerce(f"{key}[{i}]", v, h) for i, (v, h) in pairs)
    if typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
        raise ConfigError(key, _allowed([str(a) for a in typing.get_args(hint)], value))
    if not is_bearable(value, hint):
        name = getattr(hint, "__name__", str(hint))
        raise ConfigError(key, f"expected {name}; got {value!r}")
    return value


def _plain(value: Any) -> Any:
    """The config form of a built object (the inverse of `_coerce`)."""
    if type(value) in (RemaskPosterior, MaskingPosterior):  # not a subclass with its own name
        mdlm = isinstance(value, MaskingPosterior) or isinstance(value.schedule, NoRemasking)
        return {"name": "mdlm"} if mdlm else _plain(value.schedule)
    for registry in (NOISE_SCHEDULES, POSTERIORS, REMASKING_SCHEDULES, LANGUAGES, STEP_COUNTS):
        for name, cls in registry.items():
            if type(value) is cls:
                return {"name": name} | {p: _plain(getattr(value, p)) for p in _parameters(cls)}
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _section(name: str, value: object) -> Mapping[str, Any]:
    """A section's mapping; an empty or absent section takes every default."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(name, f"must be a mapping of keys; got {value!r}")
    return value


# -- the sections -------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSpec:
    """The training data.

    Args:
        kind: `"synthetic"`, a language with exact likelihoods (`language`), or
            `"text"`, a UTF-8 file tokenised by characters.
        language: The exact language for `kind: synthetic`: a name from
            `LANGUAGES` and its arguments (`synthetic`, the built-in unifilar
            HMM, by default; `hmm`, `pcfg`).
        length: Sequence length $L$ (the model's length).
        seed: Seed of the synthetic language's training stream.
        path: The text file (for `kind: text`).
        val_fraction: Share of the text's blocks held out for validation.
    """

    kind: Literal["synthetic", "text"] = "synthetic"
    language: ExactLanguage = field(default_factory=SyntheticLanguage)
    length: int = 64
    seed: int = 1
    path: str | None = None
    val_fraction: float = 0.05

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ValueError(f"`length` must be at least 1; got {self.length}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"`val_fraction` must lie in (0, 1); got {self.val_fraction}")
        if self.kind == "text" and self.path is None:
            raise ValueError("`path` is needed when kind is 'text'")
        if self.kind == "text" and not Path(self.path).is_file():
            raise ValueError(f"`path` {self.path!r} is not a file")


@dataclass(frozen=True)
class ProcessSpec:
    r"""The forward process $q(z_t \mid x)$.

    Args:
        name: The process, a name from `PROCESSES`: `masking` (MDLM, the mask
            id is $V$) or `uniform` (uniform-state noise; needs a
            time-conditioned model and `sampler.posterior: uniform`).
        schedule: The noise schedule $\alpha_t$ (a name from `NOISE_SCHEDULES`
            and its arguments).
    """

    name: str = "masking"
    schedule: NoiseSchedule = field(default_factory=LogLinear)

    def __post_init__(self) -> None:
        if self.name not in PROCESSES:
            raise ValueError(f"`name`: {_allowed(list(PROCESSES), self.name)}")

    def build(self, vocab_size: int) -> ForwardProcess:
        """The process over $V$ data tokens (masking: mask id $V$)."""
        return PROCESSES[self.name](self.schedule, vocab_size=vocab_size)


@dataclass(frozen=True)
class SamplerSpec:
    r"""The ancestral sampler and what to draw with it.

    Args:
        posterior: The strategy: a name from `POSTERIORS` and its arguments
            (e.g. `{name: cap, eta: 0.02}`).
        steps: Sampling steps $T$.
        samples: Sequences to draw.
        batch_size: Sequences per sampler call.
        temperature: Softmax temperature of $x_\theta$.
        top_k: Keep the $k$ most likely tokens (`null`: all).
        top_p: Nucleus mass $p \in (0, 1]$ (`null`: no nucleus).
        nucleus: The nucleus rule: `standard` (textbook) or `remdm` (ReMDM's
            code and the paper's numbers); see `discdiff.shape_probs`.
        float64: Draw categories in float64 (MDLM's fix for low-entropy samples).
        noise_removal: Decode every remaining mask at the last step.
        cache: Reuse $x_\theta$ when nothing changed (time-unconditioned models).
        t_min: The last time of the grid.
        seed: Seed of the draws.
    """

    posterior: Strategy = field(default_factory=MaskingPosterior)
    steps: int = 64
    samples: int = 16
    batch_size: int = 16
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    nucleus: Nucleus = "standard"
    float64: bool = True
    noise_removal: bool = True
    cache: bool = True
    t_min: float = 1e-5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("samples", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1; got {getattr(self, name)}")
        if not 1 <= self.steps <= MAX_STEPS:  # the time grid alone would fill the memory
            raise ValueError(f"`steps` must lie in [1, {MAX_STEPS}]; got {self.steps}")
        process_type = getattr(self.posterior, "process_type", MaskingProcess)
        self.build(process_type(vocab_size=2))  # the sampler checks the rest

    def build(self, process: ForwardProcess, *, progress: bool = False) -> AncestralSampler:
        """The `AncestralSampler` this section describes."""
        return AncestralSampler(
            process,
            self.posterior,
            self.steps,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            nucleus=self.nucleus,
            float64=self.float64,
            noise_removal=self.noise_removal,
            cache=self.cache,
            t_min=self.t_min,
            progress=progress,
        )

    @property
    def label(self) -> str:
        """The output folder name of these settings, e.g. `cap-eta0.02-T64-s0-1b2c3d4e`.

        The strategy and its arguments, $T$, the nucleus and the seed, then
        the first 8 hex digits of the SHA-256 of every setting (`to_dict()`
        form), so two specs that can draw different samples never share a
        label.
        """
        nucleus = "" if self.top_p is None else f"-p{self.top_p:g}"
        return f"{_tag(_plain(self.posterior))}-T{self.steps}{nucleus}-s{self.seed}-{self.digest}"

    @property
    def digest(self) -> str:
        """SHA-256 (first 8 hex digits) of every setting, in their config form."""
        text = json.dumps(_plain(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]


def _tag(form: Mapping[str, Any]) -> str:
    """`{name: cap, eta: 0.02}` as `cap-eta0.02`; nested choices by their own tag."""
    parts = [str(form["name"])]
    for key, value in form.items():
        if isinstance(value, Mapping):
            parts.append(_tag(value))
        elif key != "name" and value is not None:
            parts.append(f"{key}{value:g}" if isinstance(value, float) else f"{key}{value}")
    return "-".join(parts)


_MODEL_FIXED = {
    "vocab_size": "is set by the data; remove it",
    "model_length": "is set by the data; remove it",
    "num_classes": "needs labelled data, which run configs do not have (see discdiff.guidance)",
    "label_dropout": "needs labelled data, which run configs do not have (see discdiff.guidance)",
}


@dataclass(frozen=True)
class RunConfig:
    """A whole run: data, model, process, trainer and sampler.

    Args:
        data: The data section.
        model: `DiTConfig` fields except `vocab_size` and `model_length`, which
            follow the data, and the label fields (`num_classes`, `label_dropout`).
        process: The forward process.
        train: The trainer settings.
        sampler: The sampler settings.
    """

    data: DataSpec = field(default_factory=DataSpec)
    model: dict[str, Any] = field(default_factory=dict)
    process: ProcessSpec = field(default_factory=ProcessSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampler: SamplerSpec = field(default_factory=SamplerSpec)

    @classmethod
    def from_dict(cls, values: Mapping[Any, Any]) -> "RunConfig":
        """Parse and check a config mapping (missing keys take their defaults).

        Raises:
            ConfigError: Naming the first unknown, mistyped or out-of-range key.
        """
        if not isinstance(values, Mapping):
            raise ConfigError("<config>", f"must be a mapping of sections; got {values!r}")
        sections = [f.name for f in dataclasses.fields(cls)]
        for name in values:
            if name not in sections:
                raise ConfigError(str(name), _allowed(sections, name))
        given = {name: _section(name, values.get(name)) for name in sections}
        data = _construct("data", DataSpec, given["data"])
        model = dict(given["model"])
        for name, reason in _MODEL_FIXED.items():
            if name in model:
                raise ConfigError(f"model.{name}", reason)
        built = _construct("model", DiTConfig, model, vocab_size=2, model_length=data.length)
        model = {name: getattr(built, name) for name in model}  # the checked, converted values
        process = _construct("process", ProcessSpec, given["process"])
        sampler = _construct("sampler", SamplerSpec, given["sampler"])
        example = process.build(2)
        if example.needs_time:
            if model.get("time_conditioning") is False:
                raise ConfigError(
                    "model.time_conditioning",
                    f"must be true for process.name {process.name!r} (its z_t does not reveal t)",
                )
            model["time_conditioning"] = True
        process_type = getattr(sampler.posterior, "process_type", MaskingProcess)
        if not isinstance(example, process_type):
            # a σ-schedule's name stands for RemaskPosterior(schedule), a masking strategy
            fits = [
                n
                for n, c in POSTERIORS.items()
                if isinstance(example, getattr(c, "process_type", MaskingProcess))
            ]
            raise ConfigError(
                "sampler.posterior",
                f"works with a {process_type.__name__}, not process.name {process.name!r}; "
                f"use one of {', '.join(fits)}",
            )
        train = _construct("train", TrainConfig, given["train"])
        block = model.get("block_size")
        if block is not None:  # block diffusion: the BD3-LM NELBO of a masking DiT
            if train.objective != "nelbo" or example.mask_id is None:
                raise ConfigError(
                    "model.block_size",
                    "needs train.objective 'nelbo' and a masking process (block diffusion)",
                )
            if data.length % block:
                raise ConfigError(
                    "model.block_size", f"must divide data.length={data.length}; got {block}"
                )
        return cls(data=data, model=model, process=process, train=train, sampler=sampler)

    @classmethod
    def load(
        cls, path: str | Path, overrides: Sequence[str] = (), *, complete: bool = False
    ) -> "RunConfig":
        """Read a YAML (or JSON) file and apply `key.path=value` overrides.

        Args:
            path: The file.
            overrides: `key.path=value` overrides, applied in order.
            complete: Require every section (a run's saved `run.yaml` has all
                five, so a missing one means the file was cut short).

        Raises:
            FileNotFoundError: If `path` does not exist.
            ConfigError: For a file that is not YAML, a missing section (with
                `complete`), unknown keys or bad values (see `from_dict`); the
                message names the key and the file.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} not found")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            reason = " ".join(str(error).split())[:200]
            raise ConfigError(str(path), f"not a readable YAML file ({reason})") from None
        if not isinstance(values, Mapping):
            raise ConfigError(
                "<config>", f"must be a mapping of sections; got {values!r} (in {path})"
            )
        if complete:
            missing = [f.name for f in dataclasses.fields(cls) if f.name not in values]
            if missing:
                raise ConfigError(
                    missing[0], f"section missing from {path} (the file is incomplete)"
                )
        try:
            for override in overrides:
                parse_override(values, override)
            return cls.from_dict(values)
        except ConfigError as error:
            raise ConfigError(error.key, f"{error.message} (in {path})") from None

    def to_dict(self) -> dict[str, Any]:
        """The plain mapping form (every default filled in); `from_dict` inverts it."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def dump(self, path: str | Path) -> Path:
        """Write the full config as YAML (atomically)."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        return atomic_write(path, lambda tmp: Path(tmp).write_text(text))

    def replace(self, overrides: Sequence[str]) -> "RunConfig":
        """A copy with `key.path=value` overrides applied and checked."""
        values = self.to_dict()
        for override in overrides:
            parse_override(values, override)
        return RunConfig.from_dict(values)

    def model_config(self, vocab_size: int) -> DiTConfig:
        """The `DiTConfig` for $V$ data tokens: the process's states (masking: $V + 1$)."""
        states = self.process.build(vocab_size).num_states
        return DiTConfig(**self.model, vocab_size=states, model_length=self.data.length)


def parse_override(values: dict[str, Any], override: str) -> None:
    """Apply one `key.path=value` override to a config mapping in place.

    The value is read as YAML: `train.steps=100`, `sampler.top_p=null`,
    `sampler.posterior=loop`, `sampler.posterior={name: cap, eta: 0.01}`.

    Raises:
        ConfigError: If the override is not of the form `key=value`, its value
            is not YAML, or it descends into a value.
    """
    if not isinstance(values, dict):
        raise ConfigError("<config>", f"must be a mapping of sections; got {values!r}")
    key, sep, text = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            override or "<empty override>", "an override must look like section.key=value"
        )
    *parents, leaf = key.split(".")
    node = values
    for depth, part in enumerate(parents):
        child = node.get(part)
        if isinstance(child, str) and depth == len(parents) - 1:
            child = {"name": child}  # `posterior: cap` then `posterior.eta=...`
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise ConfigError(".".join(parents[: depth + 1]), "is a value, not a section")
        node[part] = child
        node = child
    try:
        node[leaf] = yaml.safe_load(text)
    except yaml.YAMLError as error:
        reason = " ".join(str(error).split())[:200]
        raise ConfigError(key, f"the value {text!r} is not YAML ({reason})") from None


def describe_config() -> str:
    """A plain-text reference of every section, key, default and choice (for `--help`)."""
    defaults = RunConfig().to_dict()
    defaults["model"] = {
        f.name: f.default for f in dataclasses.fields(DiTConfig) if f.name not in _MODEL_FIXED
    }
    lines = ["config sections, keys and [defaults]:"]
    for section, values in defaults.items():
        keys = ", ".join(
            f"{k} [{v['name'] if isinstance(v, dict) else json.dumps(v)}]"
            for k, v in values.items()
        )
        lines.append(f"  {section}: {keys}")
    for title, registry in (
        ("process.name", PROCESSES),
        ("process.schedule", NOISE_SCHEDULES),
        ("sampler.posterior", POSTERIORS),
        ("conf base", {k: v for k, v in REMASKING_SCHEDULES.items() if k != "conf"}),
    ):
        choices = ", ".join(
            f"{name}({', '.join(_parameters(cls))})" for name, cls in registry.items()
        )
        lines.append(f"  {title} names (arguments): {choices}")
    return "\n".join(lines)
