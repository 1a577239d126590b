"""Sampling: ancestral, block, decoder, SEDD and particle samplers; the chain as a Pyro program."""

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
from discdiff.sampling.particles import ParticleSampler, resample
from discdiff.sampling.program import ReverseChain
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
    "ParticleSampler",
    "ReverseChain",
    "SEDDAnalytic",
    "SEDDEuler",
    "SampleResult",
    "ScheduleCount",
    "ScorePosterior",
    "StepCount",
    "Strategy",
    "ThresholdCount",
    "ThresholdDecoder",
    "resample",
    "shape_probs",
]
