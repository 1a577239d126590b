"""Denoisers: the protocol, SUBS, MDLM's DiT, attention backends, Hugging Face adapters."""

from discdiff.models.attention import AttentionBackend, attention, resolve_backend
from discdiff.models.checkpoints import Opaque, load_torch_checkpoint
from discdiff.models.dit import DiT, DiTConfig
from discdiff.models.hf import HuggingFaceDenoiser
from discdiff.models.oracle import EnumerableOracle
from discdiff.models.protocol import Denoiser, is_time_conditioned
from discdiff.models.subs import SUBS, subs_log_probs

__all__ = [
    "SUBS",
    "AttentionBackend",
    "Denoiser",
    "DiT",
    "DiTConfig",
    "EnumerableOracle",
    "HuggingFaceDenoiser",
    "Opaque",
    "attention",
    "is_time_conditioned",
    "load_torch_checkpoint",
    "resolve_backend",
    "subs_log_probs",
]
