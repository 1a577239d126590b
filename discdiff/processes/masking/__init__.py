r"""The masking (absorbing-state) process and everything that samples it.

- `process`: $q(z_t \mid x)$, MDLM's masking process.
- `remasking`: the remasking schedules $\sigma_t$ of ReMDM.
- `posteriors`: $q_\sigma(z_s \mid z_t, x)$, MDLM's posterior and ReMDM's.
- `decoders`: strategies that choose where to unmask (MaskGIT, LLaDA, Dream,
  dilated, threshold) and their per-step counts.
- `sedd`: SEDD's samplers for absorbing score models.
"""

from discdiff.processes.masking.decoders import (
    ConfidenceDecoder,
    DecoderInput,
    DilatedDecoder,
    DreamCount,
    EntropyDecoder,
    EvenCount,
    FactorCount,
    MarginDecoder,
    MaskGITDecoder,
    ScheduleCount,
    StepCount,
    ThresholdCount,
    ThresholdDecoder,
    dilated_order,
)
from discdiff.processes.masking.posteriors import (
    DecodeConfidence,
    MaskingPosterior,
    RemaskPosterior,
    decode_confidence,
)
from discdiff.processes.masking.process import MaskingProcess
from discdiff.processes.masking.remasking import (
    CapSchedule,
    ConfidenceSchedule,
    DFMCorrector,
    ForwardBackward,
    LoopSchedule,
    NoRemasking,
    RemaskingSchedule,
    RescaleSchedule,
    sigma_max,
)
from discdiff.processes.masking.sedd import ScorePosterior, SEDDAnalytic, SEDDEuler

__all__ = [
    "CapSchedule",
    "ConfidenceDecoder",
    "ConfidenceSchedule",
    "DFMCorrector",
    "DecodeConfidence",
    "DecoderInput",
    "DilatedDecoder",
    "DreamCount",
    "EntropyDecoder",
    "EvenCount",
    "FactorCount",
    "ForwardBackward",
    "LoopSchedule",
    "MarginDecoder",
    "MaskGITDecoder",
    "MaskingPosterior",
    "MaskingProcess",
    "NoRemasking",
    "RemaskPosterior",
    "RemaskingSchedule",
    "RescaleSchedule",
    "SEDDAnalytic",
    "SEDDEuler",
    "ScheduleCount",
    "ScorePosterior",
    "StepCount",
    "ThresholdCount",
    "ThresholdDecoder",
    "decode_confidence",
    "dilated_order",
    "sigma_max",
]
