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

Every numeric setting has one declared range (`RANGES`: finite, a sane upper
bound, counts at least 1, seeds below $2^{63}$), checked at parse time; any
other number must be finite and fit 64 bits. Input is bounded before it is
parsed: a document of at most `MAX_CONFIG_BYTES`, nested at most
`MAX_DEPTH` deep, of at most `MAX_NODES` values once YAML aliases are
expanded, so a small file cannot cost minutes or gigabytes. Error messages
show values shortened.

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
import functools
import hashlib
import inspect
import json
import math
import re
import reprlib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from beartype.door import is_bearable

import discdiff.baseline_objectives  # registers its objectives
import discdiff.data.pcfg  # noqa: F401  (registers the PCFG language)
from discdiff._io import atomic_write
from discdiff.data import ExactLanguage, SyntheticLanguage
from discdiff.models.dit import DiTConfig
from discdiff.processes.base import ForwardProcess, Strategy
from discdiff.processes.masking.posteriors import MaskingPosterior, RemaskPosterior
from discdiff.processes.masking.process import MaskingProcess
from discdiff.processes.masking.remasking import NoRemasking, RemaskingSchedule
from discdiff.registry import entries, kind_of, lookup, name_of
from discdiff.sampling import AncestralSampler
from discdiff.sampling.blocks import BlockCache
from discdiff.schedules import LogLinear, NoiseSchedule
from discdiff.shaping import UNSHAPED, Nucleus, Shaping
from discdiff.training.trainer import TrainConfig

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_PARAMETERS",
    "MAX_STEPS",
    "RANGES",
    "ConfigError",
    "DataSpec",
    "ProcessSpec",
    "Range",
    "RunConfig",
    "SamplerSpec",
    "apply_overrides",
    "build_strategy",
    "choices",
    "construct",
    "describe_config",
    "parse_override",
]


def choices(kind: str) -> dict[str, type]:
    """Every name a config can use for `kind` (see `discdiff.registry`), with its class.

    Read from the registry when called, so names registered after import are
    included. For `"strategy"` (`sampler.posterior`) the names of the
    remasking schedules follow the strategies' own: a schedule's name stands
    for `RemaskPosterior(schedule)` (`none` is `mdlm`).
    """
    found = {name: entry.cls for name, entry in entries(kind).items()}
    if kind == "strategy":
        found |= {n: e.cls for n, e in entries("remasking").items() if n != "none"}
    return found


MAX_STEPS = 2**20
"""The most sampling steps a config may ask for (the time grid alone is 8 bytes a step)."""


MAX_CONFIG_BYTES = 1 << 20
"""The largest config document (a file or one override's value), in bytes."""

MAX_DEPTH = 24
"""The deepest nesting of mappings and lists a config may have."""

MAX_NODES = 10_000
"""The most values (keys, items, scalars) a config may have once YAML aliases are expanded."""

MAX_PARAMETERS = 10**10
"""The largest DiT a config may describe, in parameters ($12 d^2$ per block, estimated)."""

_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 60, 60, 40
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxtuple = 4
_SHORT.maxlevel = 2


def _show(value: object) -> str:
    """`repr(value)` cut short (the whole of a huge value is never built)."""
    return _SHORT.repr(value)


class ConfigError(ValueError):
    """A configuration value that is unknown, of the wrong type or out of range.

    Args:
        key: The full dotted path of the offending key, e.g. `sampler.posterior.eta`.
        message: What is wrong and what is allowed.

    Both are cut to a few hundred characters, so the error stays one short line.
    """

    def __init__(self, key: str, message: str) -> None:
        key = key if len(key) <= 120 else key[:100] + "..."
        message = message if len(message) <= 600 else message[:580] + "..."
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


@dataclass(frozen=True)
class Range:
    """The allowed values of one numeric setting: `low <= x <= high` (or `<` where open).

    Args:
        low: The least value.
        high: The largest value.
        low_open: Exclude `low` itself.
        high_open: Exclude `high` itself.
        zero: Also allow exactly 0 (below a `low` > 0, e.g. a greedy temperature).
    """

    low: int | float
    high: int | float
    low_open: bool = False
    high_open: bool = False
    zero: bool = False

    def check(self, key: str, value: int | float) -> None:
        """Raise a `ConfigError` naming `key` if `value` is outside the range."""
        if self.zero and value == 0:
            return
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        if not (above and below):
            raise ConfigError(key, f"must lie in {self}; got {_show(value)}")

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        text = f"{'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        return f"{{0}} or {text}" if self.zero else text


def _number(value: int | float) -> str:
    """A bound as people write it: `2^63`, `1048576`, `0.001`, `1e+06`."""
    if value == 2**63:
        return "2^63"
    if float(value).is_integer() and abs(value) < 10**7:
        return str(int(value))
    return f"{value:g}"


_COUNT = Range(1, 2**20)
_EVERY = Range(0, 10**9)
_SEED = Range(0, 2**63, high_open=True)
_UNIT = Range(0, 1, high_open=True)
_LANGUAGE_SIZE = Range(1, 4096)

RANGES: dict[str, Range] = {
    "*.seed": _SEED,
    "data.length": Range(1, 2**16),
    "data.val_fraction": Range(0, 1, low_open=True, high_open=True),
    "data.language.vocab_size": _LANGUAGE_SIZE,
    "data.language.states": _LANGUAGE_SIZE,
    "data.language.support": _LANGUAGE_SIZE,
    "data.language.successors": _LANGUAGE_SIZE,
    "data.language.nonterminals": _LANGUAGE_SIZE,
    "data.language.preterminals": _LANGUAGE_SIZE,
    "data.language.rules": _LANGUAGE_SIZE,
    "model.hidden_dim": Range(1, 2**14),
    "model.cond_dim": Range(1, 2**14),
    "model.n_blocks": Range(1, 1024),
    "model.n_heads": Range(1, 1024),
    "model.dropout": _UNIT,
    "model.block_size": Range(1, 2**16),
    "train.steps": Range(1, 10**9),
    "train.batch_size": _COUNT,
    "train.accumulate": Range(1, 2**16),
    "train.lr": Range(0, 10, low_open=True),
    "train.warmup": _EVERY,
    "train.weight_decay": Range(0, 100),
    "train.betas": _UNIT,
    "train.grad_clip": Range(0, 1e6),
    "train.ema": _UNIT,
    "train.eval_every": _EVERY,
    "train.eval_sequences": _COUNT,
    "train.checkpoint_every": _EVERY,
    "train.keep_checkpoints": Range(1, 1000),
    "train.max_minutes": Range(0, 10**7, low_open=True),
    "sampler.steps": Range(1, MAX_STEPS),
    "sampler.samples": _COUNT,
    "sampler.batch_size": _COUNT,
    "sampler.t_min": Range(0, 0.5, low_open=True),
}
"""The range of every numeric setting, by its dotted key (`*.seed`: any seed).

The sampler's shaping settings (`temperature`, `top_k`, `top_p`) are
checked by `discdiff.shaping.Shaping` itself, the one place that owns them.

A list setting (`train.betas`) applies its range to each item. A number
without an entry must still be finite and lie in $[-2^{63}, 2^{63})$; the
classes the config builds check the rest of their arguments themselves.
"""


def _check_number(key: str, value: Any) -> None:
    """Check a parsed number against `RANGES` (and finiteness, 64-bit size)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number; got {value}")
    path = re.sub(r"\[\d+\]", "", key)
    found = RANGES.get(path) or RANGES.get("*." + path.rsplit(".", 1)[-1])
    if found is not None:
        found.check(key, value)
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise ConfigError(key, f"must lie in [-2^63, 2^63) (64 bits); got {_show(value)}")


def _check_tree(key: str, value: Any) -> None:
    """Refuse a value nested deeper than `MAX_DEPTH` or with more than `MAX_NODES` parts.

    Shared parts (YAML aliases) count once per use, as their expansion would,
    and the walk stops as soon as the limit is passed, so it is cheap on any input.
    """
    nodes, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ConfigError(key, f"more than {MAX_NODES} values (YAML aliases expanded)")
        if depth > MAX_DEPTH:
            raise ConfigError(key, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, Mapping):
            stack.extend((v, depth + 1) for pair in item.items() for v in pair)
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)


def _load_yaml(text: str, key: str) -> Any:
    """`yaml.safe_load(text)` of a bounded document: its size, depth and expanded size.

    The bounds are checked on the parser's events, before anything is built:
    an alias counts the values of what it names, so an "anchor bomb" is
    refused after reading a few hundred bytes.

    Raises:
        ConfigError: Naming `key`, for a document over `MAX_CONFIG_BYTES`,
            `MAX_DEPTH` or `MAX_NODES`, or one that is not YAML.
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(key, f"longer than {MAX_CONFIG_BYTES} characters; got {len(text)}")
    sizes: dict[str, int] = {}  # values each anchor stands for
    frames: list[list[Any]] = []  # [values so far, anchor] of every open collection
    total = 0

    def grow(count: int) -> None:
        nonlocal total
        total += count
        if total > MAX_NODES:
            raise ConfigError(key, f"more than {MAX_NODES} values once YAML aliases are expanded")
        for frame in frames:
            frame[0] += count

    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                grow(sizes.get(event.anchor, 1))
            elif isinstance(event, yaml.ScalarEvent):
                grow(1)
                if event.anchor:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                if len(frames) >= MAX_DEPTH:
                    raise ConfigError(key, f"nested deeper than {MAX_DEPTH} levels")
                grow(1)
                frames.append([1, event.anchor])
            elif isinstance(event, yaml.CollectionEndEvent):
                size, anchor = frames.pop()
                if anchor:
                    sizes[anchor] = size
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        reason = " ".join(str(error).split())[:200]
        raise ConfigError(key, f"not readable YAML ({reason})") from None


# -- generic typed construction ---------------------------------------------------------


def _allowed(names: Sequence[str], given: object) -> str:
    close = difflib.get_close_matches(_show(given).strip("'"), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {_show(given)}{hint}; allowed: {', '.join(names)}"


def _parameters(cls: type) -> dict[str, Any]:
    """Constructor parameters of `cls` with their type annotations."""
    hints = typing.get_type_hints(cls.__init__)
    return {
        name: hints.get(name, Any)
        for name, p in inspect.signature(cls).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def construct(key: str, cls: type, values: object, **fixed: Any) -> Any:
    """`cls(**values, **fixed)`, every value checked against its constructor annotation.

    A registered class's annotation (`discdiff.registry`) reads its value as
    a name of that kind; the constructor then checks its own ranges.

    Args:
        key: The section's dotted path, for errors (e.g. `train`).
        cls: The class to build.
        values: Its arguments from the config.
        **fixed: Arguments the config does not set.

    Raises:
        ConfigError: Naming the full key of an unknown, mistyped or out-of-range value.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(key, f"must be a mapping; got {_show(values)}")
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
    except ConfigError:
        raise
    except Exception as error:  # a constructor's own check (ValueError, TypeError, ...)
        # Constructors name the argument as `name`; report its full path.
        named = re.search(r"`(\w+)`", str(error))
        where = f"{key}.{named.group(1)}" if named and named.group(1) in parameters else key
        raise ConfigError(where or cls.__name__, str(error)) from None


def _choice(key: str, value: Any, kind: str) -> Any:
    """Build the `kind` named by `value` (a name or `{name: ..., **arguments}`).

    A remasking schedule named as a strategy is built as `RemaskPosterior(schedule)`.
    """
    values = {"name": value} if isinstance(value, str) else value
    if not isinstance(values, Mapping) or "name" not in values:
        raise ConfigError(key, f"must be a name or a mapping with `name`; got {_show(value)}")
    arguments = {k: v for k, v in values.items() if k != "name"}
    names = choices(kind)
    if not isinstance(values["name"], str) or values["name"] not in names:
        raise ConfigError(f"{key}.name", _allowed(list(names), values["name"]))
    built = construct(key, names[values["name"]], arguments)
    return (
        RemaskPosterior(built)
        if kind == "strategy" and isinstance(built, RemaskingSchedule)
        else built
    )


def build_strategy(form: str | Mapping[str, Any], key: str = "sampler.posterior") -> Strategy:
    """The sampler strategy of a config form: a name, or `{name: ..., **arguments}`.

    The names are `choices("strategy")`: the strategies' and the remasking schedules'.

    Example:
        >>> build_strategy({"name": "cap", "eta": 0.02})
        RemaskPosterior(CapSchedule(eta=0.02))

    Raises:
        ConfigError: Naming `key` (or its argument) for an unknown name or a bad argument.
    """
    return _choice(key, form, "strategy")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check (and lightly convert) one value against a type annotation.

    An annotation whose class is an extension point's (`discdiff.registry`), or
    a union of such classes of one kind, reads the value as a choice of that kind.
    """
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = typing.get_args(hint) if union else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(key, "may not be null")
    concrete = [o for o in options if o is not type(None)]
    kinds = {kind_of(o) for o in concrete}
    if len(kinds) == 1 and None not in kinds:
        kind = kinds.pop()
        built = _choice(key, value, kind)
        wanted = tuple(o for o in concrete if o is not Strategy)
        if wanted and not isinstance(built, wanted):
            names = " or ".join(o.__name__ for o in wanted)
            raise ConfigError(key, f"must name a {names}; got {_show(value)}")
        return built
    if len(concrete) == 1:
        hint = concrete[0]
    if hint is float and isinstance(value, int | str) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            raise ConfigError(key, f"must be a finite number; got {_show(value)}") from None
        except ValueError:  # not a number: the type check below names it
            pass
        else:
            _check_number(key, number)
            return number
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        items = typing.get_args(hint)
        if len(items) != len(value):
            raise ConfigError(key, f"needs {len(items)} values; got {_show(value)}")
        pairs = enumerate(zip(value, items, strict=True))
        return tuple(_coerce(f"{key}[{i}]", v, h) for i, (v, h) in pairs)
    if typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
        raise ConfigError(key, _allowed([str(a) for a in typing.get_args(hint)], value))
    if not is_bearable(value, hint):
        name = getattr(hint, "__name__", str(hint))
        raise ConfigError(key, f"expected {name}; got {_show(value)}")
    _check_number(key, value)
    return value


def _plain(value: Any) -> Any:
    """The config form of a built object (the inverse of `_coerce`)."""
    if type(value) in (RemaskPosterior, MaskingPosterior):  # not a subclass with its own name
        mdlm = isinstance(value, MaskingPosterior) or isinstance(value.schedule, NoRemasking)
        return {"name": "mdlm"} if mdlm else _plain(value.schedule)
    kind = kind_of(type(value))
    name = None if kind is None else name_of(kind, type(value))
    if name is not None:
        return {"name": name} | {p: _plain(getattr(value, p)) for p in _parameters(type(value))}
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
        raise ConfigError(name, f"must be a mapping of keys; got {_show(value)}")
    return value


# -- the sections -------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSpec:
    """The training data.

    Args:
        kind: `"synthetic"`, a language with exact likelihoods (`language`), or
            `"text"`, a UTF-8 file tokenised by characters.
        language: The exact language for `kind: synthetic`: a name from
            `choices("language")` and its arguments (`synthetic`, the built-in unifilar
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
            raise ValueError(f"`path` {_show(self.path)} is not a file")


@dataclass(frozen=True)
class ProcessSpec:
    r"""The forward process $q(z_t \mid x)$.

    Args:
        name: The process, a registered name (`choices("process")`): `masking`
            (MDLM, the mask id is $V$) or `uniform` (uniform-state noise; needs
            a time-conditioned model and `sampler.posterior: uniform`).
        schedule: The noise schedule $\alpha_t$ (a registered name and its
            arguments).
    """

    name: str = "masking"
    schedule: NoiseSchedule = field(default_factory=LogLinear)

    def __post_init__(self) -> None:
        if self.name not in entries("process"):
            raise ValueError(f"`name`: {_allowed(list(entries('process')), self.name)}")

    @property
    def cls(self) -> type:
        """The process's class (its class attributes, e.g. `needs_time`, need no instance)."""
        return lookup("process", self.name)

    def build(self, vocab_size: int) -> ForwardProcess:
        """The process over $V$ data tokens (masking: mask id $V$)."""
        return self.cls(self.schedule, vocab_size=vocab_size)


@dataclass(frozen=True)
class SamplerSpec:
    r"""The ancestral sampler and what to draw with it.

    Args:
        posterior: The strategy: a registered name (`choices("strategy")`) and
            its arguments (e.g. `{name: cap, eta: 0.02}`).
        steps: Sampling steps $T$.
        samples: Sequences to draw.
        batch_size: Sequences per sampler call.
        temperature: Softmax temperature of $x_\theta$ (0: greedy).
        top_k: Keep the $k$ most likely tokens (`null`: all).
        top_p: Nucleus mass $p \in (0, 1]$ (`null`: no nucleus).
        nucleus: The nucleus rule: `standard` (textbook) or `remdm` (ReMDM's
            code and the paper's numbers).
        float64: Draw categories in float64 (MDLM's fix for low-entropy samples).
            These five are the sampler's `Shaping` (`shaping`), which checks them.
        noise_removal: Decode every remaining mask at the last step.
        reuse: Reuse $x_\theta$ when nothing changed (time-unconditioned models).
            Configs written before this key had `cache: true/false` for it; they
            load with that value here.
        cache: The key/value cache of block-by-block sampling (`BlockSampler`):
            `none`, `exact` (block-causal models; their default), `prefix` or
            `dual` (Fast-dLLM's approximate caches of full-attention models,
            e.g. LLaDA and Dream with `--block-length`); `null`: the model's default.
        t_min: The last time of the grid.
        seed: Seed of the draws.
    """

    posterior: Strategy = field(default_factory=MaskingPosterior)
    steps: int = 64
    samples: int = 16
    batch_size: int = 16
    temperature: float = UNSHAPED.temperature  # the five `Shaping` settings, its defaults
    top_k: int | None = UNSHAPED.top_k
    top_p: float | None = UNSHAPED.top_p
    nucleus: Nucleus = UNSHAPED.nucleus
    float64: bool = UNSHAPED.float64
    noise_removal: bool = True
    reuse: bool = True
    cache: BlockCache | None = None
    t_min: float = 1e-5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("samples", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1; got {getattr(self, name)}")
        _ = self.shaping  # the Shaping checks its settings
        self.posterior.time_grid(self.steps, self.t_min)  # the strategy checks steps and t_min

    @functools.cached_property
    def shaping(self) -> Shaping:
        """Temperature, top-k, nucleus and draw precision, as one checked `Shaping`."""
        return Shaping(self.temperature, self.top_k, self.top_p, self.nucleus, self.float64)

    def build(self, process: ForwardProcess, *, progress: bool = False) -> AncestralSampler:
        """The `AncestralSampler` this section describes."""
        return AncestralSampler(
            process,
            self.posterior,
            self.steps,
            shaping=self.shaping,
            noise_removal=self.noise_removal,
            cache=self.reuse,
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


def _reuse_key(sampler: Mapping[str, Any]) -> Mapping[str, Any]:
    """The sampler section with a boolean `cache` (the x_θ reuse, as first named) as `reuse`."""
    if not isinstance(sampler, Mapping) or not isinstance(sampler.get("cache"), bool):
        return sampler
    if "reuse" in sampler:
        raise ConfigError("sampler.cache", "is a cache name (none/exact/prefix/dual) with `reuse`")
    values = {k: v for k, v in sampler.items() if k != "cache"}
    return {**values, "reuse": sampler["cache"]}


def _works_with(strategy: type) -> type:
    """The process class a strategy named in a config works with."""
    if issubclass(strategy, RemaskingSchedule):  # it names RemaskPosterior(schedule)
        return RemaskPosterior.process_type
    return strategy.process_type


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
    def from_dict(
        cls, values: Mapping[Any, Any], *, overrides: Sequence[str] = (), source: str | None = None
    ) -> "RunConfig":
        """Parse and check a config mapping (missing keys take their defaults).

        Args:
            values: The sections.
            overrides: The `key=value` overrides already applied to `values`
                (`apply_overrides`): an error in a value one of them set names it.
            source: Where the other values came from (e.g. a file), for errors.

        Raises:
            ConfigError: Naming the first unknown, mistyped or out-of-range key
                (and the override or source it came from).
        """
        try:
            return cls._parse(values)
        except ConfigError as error:
            origin = _origin(error.key, overrides, source)
            if origin is None:
                raise
            raise ConfigError(error.key, f"{error.message} ({origin})") from None

    @classmethod
    def _parse(cls, values: Mapping[Any, Any]) -> "RunConfig":
        if not isinstance(values, Mapping):
            raise ConfigError("<config>", f"must be a mapping of sections; got {_show(values)}")
        _check_tree("<config>", values)
        sections = [f.name for f in dataclasses.fields(cls)]
        for name in values:
            if name not in sections:
                raise ConfigError(str(name), _allowed(sections, name))
        given = {name: _section(name, values.get(name)) for name in sections}
        data = construct("data", DataSpec, given["data"])
        model = dict(given["model"])
        for name, reason in _MODEL_FIXED.items():
            if name in model:
                raise ConfigError(f"model.{name}", reason)
        built = construct("model", DiTConfig, model, vocab_size=2, model_length=data.length)
        parameters = 12 * built.hidden_dim**2 * built.n_blocks
        if parameters > MAX_PARAMETERS:
            raise ConfigError(
                "model",
                f"hidden_dim={built.hidden_dim} and n_blocks={built.n_blocks} make about "
                f"{parameters:.3g} parameters (12 d^2 per block); at most {MAX_PARAMETERS:.0e}",
            )
        model = {name: getattr(built, name) for name in model}  # the checked, converted values
        process = construct("process", ProcessSpec, given["process"])
        sampler = construct("sampler", SamplerSpec, _reuse_key(given["sampler"]))
        kind = process.cls
        if kind.needs_time:
            if model.get("time_conditioning") is False:
                raise ConfigError(
                    "model.time_conditioning",
                    f"must be true for process.name {process.name!r} (its z_t does not reveal t)",
                )
            model["time_conditioning"] = True
        if not issubclass(kind, sampler.posterior.process_type):
            fits = [n for n, c in choices("strategy").items() if issubclass(kind, _works_with(c))]
            raise ConfigError(
                "sampler.posterior",
                f"works with a {sampler.posterior.process_type.__name__}, not process.name "
                f"{process.name!r}; use one of {', '.join(fits)}",
            )
        train = construct("train", TrainConfig, given["train"])
        block = model.get("block_size")
        if block is not None:  # block diffusion: the BD3-LM NELBO of a masking DiT
            if train.objective != "nelbo" or not issubclass(kind, MaskingProcess):
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
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(str(path), f"a config file has at most {MAX_CONFIG_BYTES} bytes")
        try:
            values = _load_yaml(path.read_text(), str(path)) or {}
        except UnicodeDecodeError as error:
            raise ConfigError(str(path), f"not a readable YAML file ({error})") from None
        except ConfigError as error:
            raise ConfigError(str(path), error.message) from None
        if not isinstance(values, Mapping):
            raise ConfigError(
                "<config>", f"must be a mapping of sections; got {_show(values)} (in {path})"
            )
        if complete:
            missing = [f.name for f in dataclasses.fields(cls) if f.name not in values]
            if missing:
                raise ConfigError(
                    missing[0], f"section missing from {path} (the file is incomplete)"
                )
        apply_overrides(values, overrides)
        return cls.from_dict(values, overrides=overrides, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The plain mapping form (every default filled in); `from_dict` inverts it."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def dump(self, path: str | Path) -> Path:
        """Write the full config as YAML (atomically)."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        return atomic_write(path, lambda tmp: Path(tmp).write_text(text))

    def replace(self, overrides: Sequence[str]) -> "RunConfig":
        """A copy with `key.path=value` overrides applied and checked."""
        values = apply_overrides(self.to_dict(), overrides)
        return RunConfig.from_dict(values, overrides=overrides)

    @property
    def block_size(self) -> int | None:
        """Positions per block of a block diffusion run (`model.block_size`), else `None`."""
        return self.model.get("block_size")


def _origin(key: str, overrides: Sequence[str], source: str | None) -> str | None:
    """Where `key`'s value came from: the last override of it (or above it), or `source`."""
    for override in reversed(overrides):
        target = override.partition("=")[0]
        if (
            key == target
            or key.startswith((f"{target}.", f"{target}["))
            or target.startswith(f"{key}.")
        ):
            return f"in the override {_show(override)}"
    return None if source is None else f"in {source}"


def apply_overrides(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `key.path=value` overrides in order to a config mapping (in place, and return it).

    Raises:
        ConfigError: For a malformed override, naming it as the override.
    """
    for override in overrides:
        try:
            parse_override(values, override)
        except ConfigError as error:
            raise ConfigError(error.key, f"{error.message} (in the override)") from None
    return values


def parse_override(values: dict[str, Any], override: str) -> None:
    """Apply one `key.path=value` override to a config mapping in place.

    The value is read as YAML: `train.steps=100`, `sampler.top_p=null`,
    `sampler.posterior=loop`, `sampler.posterior={name: cap, eta: 0.01}`.

    Raises:
        ConfigError: If the override is not of the form `key=value`, its value
            is not YAML, or it descends into a value.
    """
    if not isinstance(values, dict):
        raise ConfigError("<config>", f"must be a mapping of sections; got {_show(values)}")
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
        node[leaf] = _load_yaml(text, key)
    except ConfigError as error:
        raise ConfigError(key, f"the value {_show(text)}: {error.message}") from None


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
    for title, kind in (
        ("process.name", "process"),
        ("process.schedule", "schedule"),
        ("sampler.posterior", "strategy"),
        ("conf base", "remasking"),
        ("train.objective", "objective"),
    ):
        names = {k: v for k, v in choices(kind).items() if title != "conf base" or k != "conf"}
        found = ", ".join(f"{name}({', '.join(_parameters(cls))})" for name, cls in names.items())
        lines.append(f"  {title} names (arguments): {found}")
    return "\n".join(lines)
