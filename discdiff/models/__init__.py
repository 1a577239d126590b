"""Networks: denoisers, SEDD score models, the causal transformer, LLaDA/Dream, oracles."""

from discdiff.models.attention import AttentionBackend, attention, resolve_backend
from discdiff.models.causal import CausalConfig, CausalTransformer, next_token_nll
from discdiff.models.diffusion_llms import load_diffusion_llm
from discdiff.models.dit import DiT, DiTClassifier, DiTConfig, KVCache, block_attention_mask
from discdiff.models.hf import HuggingFaceDenoiser
from discdiff.models.oracle import (
    EnumerableClassifier,
    EnumerableConditionalOracle,
    EnumerableOracle,
)
from discdiff.models.pretrained import Opaque, load_torch_checkpoint
from discdiff.models.protocol import (
    ConditionalDenoiser,
    Denoiser,
    LabelledDenoiser,
    NoisyClassifier,
    is_time_conditioned,
    with_label,
)
from discdiff.models.score import DenoiserScores, ScoreModel, log_score_ratio
from discdiff.models.subs import SUBS, ConditionalSUBS, subs_log_probs

__all__ = [
    "SUBS",
    "AttentionBackend",
    "CausalConfig",
    "CausalTransformer",
    "ConditionalDenoiser",
    "ConditionalSUBS",
    "Denoiser",
    "DenoiserScores",
    "DiT",
    "DiTClassifier",
    "DiTConfig",
    "EnumerableClassifier",
    "EnumerableConditionalOracle",
    "EnumerableOracle",
    "HuggingFaceDenoiser",
    "KVCache",
    "LabelledDenoiser",
    "NoisyClassifier",
    "Opaque",
    "ScoreModel",
    "attention",
    "block_attention_mask",
    "is_time_conditioned",
    "load_diffusion_llm",
    "load_torch_checkpoint",
    "log_score_ratio",
    "next_token_nll",
    "resolve_backend",
    "subs_log_probs",
    "with_label",
]
