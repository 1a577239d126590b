r"""LoRA adapters through `peft`, on any `nn.Module` (the native LLaDA / Dream modules, the DiT).

A LoRA adapter replaces a frozen linear map $W$ by

$$
W' = W + \frac{\alpha}{r} B A, \qquad A \in \mathbb{R}^{r \times d_{in}},\;
B \in \mathbb{R}^{d_{out} \times r},
$$

training only $A$ and $B$ ($B = 0$ at the start, so the adapted model starts
as the base model). `peft` does the work: `add_lora` injects its LoRA layers
into the named linear maps and freezes everything else; `save_adapter`
writes `adapter_model.safetensors` and `adapter_config.json` (peft's own
format, so `peft` reads them too); `merge_lora` folds $\frac{\alpha}{r} B A$
into $W$ and removes the adapter layers, giving a plain model with the same
outputs.
"""

import enum
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "DEFAULT_TARGETS",
    "LoraSpec",
    "add_lora",
    "has_lora",
    "load_adapter",
    "merge_lora",
    "save_adapter",
]

ADAPTER_WEIGHTS = "adapter_model.safetensors"
"""The adapter's weights file (peft's name)."""

DEFAULT_TARGETS = {
    "BidirectionalTransformer": ("q", "k", "v", "o"),
    "DiT": ("attn_qkv", "attn_out"),
}
"""The linear maps adapted by default, per model class: the attention projections."""


@dataclass(frozen=True)
class LoraSpec:
    r"""LoRA settings: rank $r$, scale $\alpha$, target module names, dropout.

    Args:
        r: The rank $r \ge 1$.
        alpha: $\alpha > 0$; the update is scaled by $\alpha / r$.
        targets: Names of the linear modules to adapt (a module matches when
            its dotted name ends with one); empty: the model's `DEFAULT_TARGETS`.
        dropout: Dropout on the adapter's input, in $[0, 1)$.

    Raises:
        ValueError: For a value out of range.
    """

    r: int = 16
    alpha: float = 32.0
    targets: tuple[str, ...] = ()
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"LoRA `r` must be a positive integer; got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"LoRA `alpha` must be positive; got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA `dropout` must lie in [0, 1); got {self.dropout!r}")

    @classmethod
    def parse(cls, text: str) -> "LoraSpec":
        """Read `r=16,alpha=32,targets=q,k,v,dropout=0.05` (targets may list several names).

        A comma-separated item without `=` continues the list of the key
        before it, so `targets=q,k,v` names three modules.

        Args:
            text: The settings.

        Returns:
            The spec.

        Raises:
            ValueError: For an unknown key or a bad value, naming it.
        """
        values: dict[str, list[str]] = {}
        key = None
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            if "=" in item:
                key, value = (s.strip() for s in item.split("=", 1))
                if key not in ("r", "alpha", "targets", "dropout"):
                    raise ValueError(
                        f"--lora: unknown key {key!r}; expected r, alpha, targets, dropout"
                    )
                values[key] = [value] if value else []
            elif key == "targets":
                values[key].append(item)
            else:
                raise ValueError(f"--lora: {item!r} is not KEY=VALUE")
        try:
            return cls(
                r=int(values.get("r", ["16"])[0]),
                alpha=float(values.get("alpha", ["32"])[0]),
                targets=tuple(values.get("targets", [])),
                dropout=float(values.get("dropout", ["0"])[0]),
            )
        except (ValueError, IndexError) as error:
            raise ValueError(f"--lora {text!r}: {error}") from None

    def targets_for(self, model: nn.Module) -> tuple[str, ...]:
        """The target names for `model`: the spec's, or the class's defaults.

        Raises:
            ValueError: If neither names any module of `model`.
        """
        targets = self.targets or DEFAULT_TARGETS.get(type(model).__name__, ())
        if not targets:
            raise ValueError(
                f"LoRA: no default targets for {type(model).__name__}; give targets=..."
            )
        names = [name for name, _ in model.named_modules()]
        missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
        if missing:
            raise ValueError(f"LoRA targets {missing} name no module of {type(model).__name__}")
        return tuple(targets)


def _config(spec: LoraSpec, model: nn.Module) -> object:
    from peft import LoraConfig

    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.targets_for(model)),
    )


def _plain_json(value: object) -> object:
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def add_lora(model: nn.Module, spec: LoraSpec) -> nn.Module:
    """Inject LoRA layers (peft) into `model` in place and freeze everything else.

    Args:
        model: Any module holding the target linear maps.
        spec: The settings.

    Returns:
        `model`, with only the adapters' $A$ and $B$ trainable, in float32
        (also over a bf16 base).
    """
    from peft import inject_adapter_in_model

    inject_adapter_in_model(_config(spec, model), model)
    for p in model.parameters():  # adapters train in float32 over a bf16 / fp16 base
        if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16):
            p.data = p.data.float()
    return model


def has_lora(model: nn.Module) -> bool:
    """Whether `model` holds peft adapter layers."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


def save_adapter(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write the adapter (`adapter_model.safetensors`, `adapter_config.json`) to `directory`.

    Args:
        model: A model with adapters from `add_lora` or `load_adapter`.
        directory: Where to write (created).

    Returns:
        The directory.

    Raises:
        ValueError: If the model has no adapter.
    """
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from discdiff._io import atomic_write

    if not has_lora(model):
        raise ValueError("the model has no LoRA adapter to save")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    atomic_write(
        directory / ADAPTER_WEIGHTS,
        lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}),
    )
    text = json.dumps(model.peft_config["default"].to_dict(), indent=2, default=_plain_json)
    atomic_write(directory / "adapter_config.json", lambda tmp: Path(tmp).write_text(text))
    return directory


def load_adapter(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Inject the adapter saved in `directory` into `model` (in place) and load its weights.

    Args:
        model: The base model the adapter was trained on.
        directory: Holds `adapter_config.json` and `adapter_model.safetensors`.

    Returns:
        `model` with the adapter (unmerged; see `merge_lora`).

    Raises:
        FileNotFoundError: If the files are missing.
        ValueError: If the adapter does not fit the model.
    """
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    directory = Path(directory)
    for name in ("adapter_config.json", ADAPTER_WEIGHTS):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"no {name} in {directory}")
    config = LoraConfig.from_pretrained(str(directory))
    config.inference_mode = True
    state = load_file(directory / ADAPTER_WEIGHTS)
    inject_adapter_in_model(config, model)
    result = set_peft_model_state_dict(model, state)
    expected = {k for k in model.state_dict() if "lora_" in k}
    loaded = {k for k in expected if k not in set(getattr(result, "missing_keys", []))}
    if getattr(result, "unexpected_keys", None) or loaded != expected:
        raise ValueError(
            f"the adapter in {directory} does not fit {type(model).__name__}: "
            f"unexpected {list(getattr(result, 'unexpected_keys', []))[:5]}, "
            f"missing {sorted(expected - loaded)[:5]}"
        )
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    r"""Fold every adapter into its base weight and put the plain linear maps back.

    In place: $W \leftarrow W + \frac{\alpha}{r} B A$ for every adapted map.

    Args:
        model: A model with adapters.

    Returns:
        `model` without adapter layers, every parameter trainable again.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    for p in model.parameters():
        p.requires_grad_(True)
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model
