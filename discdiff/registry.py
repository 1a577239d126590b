r"""Names of the library's extension points, registered where each class is defined.

Every part a run configuration can name is a class that carries its name in a
decorator on its own definition, as Pyro's `register_kl` sits on the function
it registers::

    @discdiff.register("remasking", "mine")
    class Mine(RemaskingSchedule):
        def _sigma(self, t, s, alpha_t, alpha_s, confidence): ...

After that, `sampler.posterior: mine` works in YAML and on the command line
(`sampler.posterior=mine`), with no other edit. The kinds:

| kind | what | config key |
|---|---|---|
| `schedule` | noise schedules $\alpha_t$ (`NoiseSchedule`) | `process.schedule` |
| `remasking` | remasking schedules $\sigma_t$ (`RemaskingSchedule`) | `sampler.posterior` |
| `strategy` | posteriors and decoders a sampler runs (`Strategy`) | `sampler.posterior` |
| `count` | positions a decoder unmasks per step (`StepCount`) | a decoder's `count` |
| `process` | forward processes (`ForwardProcess`) | `process.name` |
| `objective` | training methods (`Objective`) | `train.objective` |
| `language` | languages with exact likelihoods (`ExactLanguage`) | `data.language` |

A remasking schedule's name also names the strategy
`RemaskPosterior(schedule)`; a process is built as `cls(schedule, vocab_size=V)`.

An objective registers with its network family (`network=`, a class with
`from_settings` and `from_pretrained`; `wrap=`, how the network becomes what
the loss and the sampler call) and `sampler=`, the strategy that samples it
(see `discdiff.objectives.Method`).

The base classes declare their kind with `extension_point(kind)`, so the
configuration reader finds the kind of a constructor argument from its type
annotation. This module imports nothing else from the library: every layer
may register.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypeVar, get_args

__all__ = [
    "KINDS",
    "Entry",
    "Kind",
    "RegistryError",
    "entries",
    "extension_point",
    "kind_of",
    "lookup",
    "name_of",
    "register",
]

Kind = Literal["schedule", "remasking", "strategy", "count", "process", "objective", "language"]
"""The kinds of extension points."""

KINDS: tuple[str, ...] = get_args(Kind)
"""Every kind, in the order a type annotation is matched against their base classes."""

T = TypeVar("T")


class RegistryError(ValueError):
    """A name registered twice, an unknown kind, or an unknown name."""


@dataclass(frozen=True)
class Entry:
    """One registered name.

    Attributes:
        name: The name a configuration uses.
        cls: The class it builds.
        options: What the registration said besides the name (an objective's
            `network`, `wrap` and `sampler`).
    """

    name: str
    cls: type
    options: Mapping[str, Any] = field(default_factory=dict)


_ENTRIES: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
_BASES: dict[str, type] = {}
_SHARED = {"remasking": ("remasking", "strategy"), "strategy": ("strategy", "remasking")}
"""Kinds whose names share one namespace: a remasking schedule's name is also a strategy's."""


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise RegistryError(f"`kind` must be one of {', '.join(KINDS)}; got {kind!r}")


def _same(a: type, b: type) -> bool:
    """The same class, or the same definition imported again (a reloaded module)."""
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def register(kind: str, name: str, **options: Any) -> Callable[[type[T]], type[T]]:
    """A class decorator that makes the class usable by `name` wherever `kind` is configured.

    Args:
        kind: One of `KINDS`.
        name: The name in configurations: non-empty, without `=`, `.` or spaces.
        **options: Extra facts about the entry (for an objective: `network`,
            `wrap`, `sampler`; see `discdiff.objectives.Method`).

    Returns:
        The decorator; it returns the class unchanged.

    Raises:
        RegistryError: For an unknown kind, a malformed name, or a name that
            is already registered for this kind by another class.

    Example:
        >>> from discdiff import RemaskingSchedule, sigma_max
        >>> @register("remasking", "half-cap")
        ... class HalfCap(RemaskingSchedule):
        ...     def _sigma(self, t, s, alpha_t, alpha_s, confidence):
        ...         return 0.5 * sigma_max(alpha_t, alpha_s)
        >>> lookup("remasking", "half-cap") is HalfCap
        True
    """
    _check_kind(kind)
    if not isinstance(name, str) or not name or any(c in name for c in "=. \t\n"):
        raise RegistryError(f"`name` must be a word without '=', '.' or spaces; got {name!r}")

    def decorate(cls: type[T]) -> type[T]:
        held = next(
            (_ENTRIES[k][name] for k in _SHARED.get(kind, (kind,)) if name in _ENTRIES[k]), None
        )
        if held is not None and not _same(held.cls, cls):
            raise RegistryError(
                f"{kind} {name!r} is already registered (by {held.cls.__module__}."
                f"{held.cls.__qualname__}); pick another name"
            )
        base = _BASES.get(kind)
        if base is not None and isinstance(cls, type) and not _fits(cls, base):
            raise RegistryError(f"{kind} {name!r}: {cls.__qualname__} is not a {base.__name__}")
        _ENTRIES[kind][name] = Entry(name, cls, MappingProxyType(dict(options)))
        return cls

    return decorate


def _fits(cls: type, base: type, unknown: bool = True) -> bool:
    """`issubclass(cls, base)`; `unknown` for a protocol with data members, which cannot say."""
    try:
        return issubclass(cls, base)
    except TypeError:
        return unknown


def extension_point(kind: Kind) -> Callable[[type[T]], type[T]]:
    """A class decorator for the base class (or protocol) of a kind.

    Registered classes must derive from it (or satisfy it), and a constructor
    argument annotated with it is read from a configuration as a name of this kind.

    Raises:
        RegistryError: For an unknown kind, or a kind that has a base already.
    """
    _check_kind(kind)

    def decorate(base: type[T]) -> type[T]:
        if kind in _BASES and not _same(_BASES[kind], base):
            raise RegistryError(f"{kind} already has the base class {_BASES[kind].__name__}")
        _BASES[kind] = base
        return base

    return decorate


def entries(kind: Kind) -> Mapping[str, Entry]:
    """Every entry of `kind` by name, in registration order (a read-only live view)."""
    _check_kind(kind)
    return MappingProxyType(_ENTRIES[kind])


def lookup(kind: Kind, name: str) -> type:
    """The class registered as `name`.

    Raises:
        RegistryError: Naming the kind and the registered names, if there is none.
    """
    found = entries(kind).get(name)
    if found is None:
        raise RegistryError(f"unknown {kind} {name!r}; registered: {', '.join(_ENTRIES[kind])}")
    return found.cls


def name_of(kind: Kind, cls: type) -> str | None:
    """The name `cls` itself (not a subclass) is registered under, or `None`."""
    return next((e.name for e in entries(kind).values() if e.cls is cls), None)


def kind_of(hint: Any) -> str | None:
    """The kind whose base class `hint` is (or derives from), or `None`.

    A class that a protocol base cannot judge (one with data members) is of a
    kind when it is a base of, or derives from, a class registered there
    (`RemaskPosterior` is a strategy: `MaskingPosterior` derives from it).
    """
    if not isinstance(hint, type):
        return None
    for kind in KINDS:
        base = _BASES.get(kind)
        if base is not None and (hint is base or _fits(hint, base, unknown=False)):
            return kind
    for kind in KINDS:
        for entry in _ENTRIES[kind].values():
            if isinstance(entry.cls, type) and (
                issubclass(entry.cls, hint) or issubclass(hint, entry.cls)
            ):
                return kind
    return None
