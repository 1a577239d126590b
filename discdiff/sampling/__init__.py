"""Sampling: the ancestral sampler, block sampling with KV caches, decoders, SEDD samplers."""

from discdiff.sampling.ancestral import (
    AncestralSampler,
    Nucleus,
    SampleResult,
    Strategy,
    shape_probs,
)
from discdiff.sampling.blocks import BlockCache, BlockSampler, BlockSampleResult
from discdiff.sampling.decoders import (
    ConfidenceDecoder,
    DecoderInput,
    DilatedDecoder,
    DreamCount,
    EntropyDecoder,
    EvenCount,
    MarginDecoder,
    MaskGITDecoder,
    ScheduleCount,
    StepCount,
    ThresholdCount,
    ThresholdDecoder,
)
from discdiff.sampling.sedd import ScorePosterior, SEDDAnalytic, SEDDEuler

__all__ = [
    "AncestralSampler",
    "BlockCache",
    "BlockSampleResult",
    "BlockSampler",
    "ConfidenceDecoder",
    "DecoderInput",
    "DilatedDecoder",
    "DreamCount",
    "EntropyDecoder",
    "EvenCount",
    "MarginDecoder",
    "MaskGITDecoder",
    "Nucleus",
    "SEDDAnalytic",
    "SEDDEuler",
    "SampleResult",
    "ScheduleCount",
    "ScorePosterior",
    "StepCount",
    "Strategy",
    "ThresholdCount",
    "ThresholdDecoder",
    "shape_probs",
]
