"""Denoisers: the protocol, SUBS, MDLM's DiT, attention backends, Hugging Face adapters."""

from discdiff.models.attention import AttentionBackend, attention, resolve_backend
from discdiff.models.checkpoints import Opaque, load_torch_checkpoint
from discdiff.models.dit import DiT, DiTClassifier, DiTConfig
from discdiff.models.hf import HuggingFaceDenoiser
from discdiff.models.oracle import EnumerableOracle
from discdiff.models.protocol import (
    ConditionalDenoiser,
    Denoiser,
    LabelledDenoiser,
    NoisyClassifier,
    is_time_conditioned,
    with_label,
)
from discdiff.models.subs import SUBS, subs_log_probs

__all__ = [
    "SUBS",
    "AttentionBackend",
    "ConditionalDenoiser",
    "Denoiser",
    "DiT",
    "DiTClassifier",
    "DiTConfig",
    "EnumerableOracle",
    "HuggingFaceDenoiser",
    "LabelledDenoiser",
    "NoisyClassifier",
    "Opaque",
    "attention",
    "is_time_conditioned",
    "load_torch_checkpoint",
    "resolve_backend",
    "subs_log_probs",
    "with_label",
]
