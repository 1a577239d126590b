"""Sampling: the ancestral sampler, confidence-ordered decoders and SEDD's score samplers."""

from discdiff.sampling.ancestral import (
    AncestralSampler,
    Nucleus,
    SampleResult,
    Strategy,
    shape_probs,
)
from discdiff.sampling.decoders import (
    ConfidenceDecoder,
    EntropyDecoder,
    MarginDecoder,
    MaskGITDecoder,
    ThresholdDecoder,
)
from discdiff.sampling.sedd import ScorePosterior, SEDDAnalytic, SEDDEuler

__all__ = [
    "AncestralSampler",
    "ConfidenceDecoder",
    "EntropyDecoder",
    "MarginDecoder",
    "MaskGITDecoder",
    "Nucleus",
    "SEDDAnalytic",
    "SEDDEuler",
    "SampleResult",
    "ScorePosterior",
    "Strategy",
    "ThresholdDecoder",
    "shape_probs",
]
