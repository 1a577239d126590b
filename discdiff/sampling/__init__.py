"""Sampling: the ancestral sampler and confidence-ordered decoders."""

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

__all__ = [
    "AncestralSampler",
    "ConfidenceDecoder",
    "EntropyDecoder",
    "MarginDecoder",
    "MaskGITDecoder",
    "Nucleus",
    "SampleResult",
    "Strategy",
    "ThresholdDecoder",
    "shape_probs",
]
