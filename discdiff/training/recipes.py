"""Ready-made settings for the built-in data, shared by the CLI and the benchmarks."""

from typing import Any

from discdiff.data.synthetic import SyntheticLanguage
from discdiff.models.dit import DiT, DiTConfig
from discdiff.models.subs import SUBS
from discdiff.processes import MaskingProcess
from discdiff.training.trainer import TrainConfig

__all__ = ["synthetic_model", "synthetic_train_config"]


def synthetic_model(
    language: SyntheticLanguage, *, length: int = 64, **overrides: Any
) -> tuple[MaskingProcess, SUBS]:
    """The process and a small DiT denoiser sized for the synthetic language on a CPU.

    d 128, 4 blocks, 4 heads, cond 64, no dropout (the corpus is endless).
    """
    process = MaskingProcess(vocab_size=language.vocab_size)
    config = DiTConfig(
        **{
            "hidden_dim": 128,
            "cond_dim": 64,
            "n_blocks": 4,
            "n_heads": 4,
            "vocab_size": language.vocab_size + 1,
            "model_length": length,
            "dropout": 0.0,
            **overrides,
        }
    )
    return process, SUBS(DiT(config), process)


def synthetic_train_config(**overrides: Any) -> TrainConfig:
    """Settings that learn the synthetic language quickly on 2 CPU cores."""
    return TrainConfig(
        **{
            "batch_size": 64,
            "lr": 2e-3,
            "warmup": 50,
            "ema": 0.99,
            "grad_clip": 1.0,
            "eval_every": 50,
            "eval_sequences": 512,
            **overrides,
        }
    )
