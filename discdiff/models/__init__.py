"""Denoisers: protocol, SUBS, DiT and checkpoints, attention, HF adapters, LLaDA/Dream, oracles."""

from discdiff.models.attention import AttentionBackend, attention, resolve_backend
from discdiff.models.checkpoints import Opaque, load_torch_checkpoint
from discdiff.models.diffusion_llms import load_diffusion_llm
from discdiff.models.dit import DiT, DiTClassifier, DiTConfig
from discdiff.models.hf import HuggingFaceDenoiser
from discdiff.models.oracle import (
    EnumerableClassifier,
    EnumerableConditionalOracle,
    EnumerableOracle,
)
from discdiff.models.protocol import (
    ConditionalDenoiser,
    Denoiser,
    LabelledDenoiser,
    NoisyClassifier,
    is_time_conditioned,
    with_label,
)
from discdiff.models.subs import SUBS, ConditionalSUBS, subs_log_probs

__all__ = [
    "SUBS",
    "AttentionBackend",
    "ConditionalDenoiser",
    "ConditionalSUBS",
    "Denoiser",
    "DiT",
    "DiTClassifier",
    "DiTConfig",
    "EnumerableClassifier",
    "EnumerableConditionalOracle",
    "EnumerableOracle",
    "HuggingFaceDenoiser",
    "LabelledDenoiser",
    "NoisyClassifier",
    "Opaque",
    "attention",
    "is_time_conditioned",
    "load_diffusion_llm",
    "load_torch_checkpoint",
    "resolve_backend",
    "subs_log_probs",
    "with_label",
]
