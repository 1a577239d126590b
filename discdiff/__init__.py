"""discdiff: masked discrete diffusion language models, MDLM and ReMDM.

The objects a user composes are re-exported here::

    from discdiff import CapSchedule, LogLinear, MaskingProcess, RemaskPosterior

    process = MaskingProcess(schedule=LogLinear(), vocab_size=V)
    posterior = RemaskPosterior(CapSchedule(eta))

or, for uniform-state noise, `UniformProcess(schedule=LogLinear(), vocab_size=V)`
with `UniformPosterior()`; both are `ForwardProcess`es.
"""

import discdiff.baseline_objectives
import discdiff.data.pcfg  # noqa: F401  (registers its language)
from discdiff.guidance import ClassifierFreeGuidance, ClassifierGuidance, Guidance
from discdiff.models import (
    SUBS,
    CausalConfig,
    CausalTransformer,
    Denoiser,
    DiT,
    DiTConfig,
    EnumerableOracle,
    HuggingFaceDenoiser,
    ScoreModel,
    load_diffusion_llm,
)
from discdiff.objectives import nelbo
from discdiff.processes import ForwardProcess, MaskingProcess
from discdiff.processes.masking import (
    DilatedDecoder,
    DreamCount,
    EntropyDecoder,
    EvenCount,
    MarginDecoder,
    MaskGITDecoder,
    ScheduleCount,
    SEDDAnalytic,
    SEDDEuler,
    ThresholdCount,
    ThresholdDecoder,
)
from discdiff.processes.masking.posteriors import MaskingPosterior, RemaskPosterior
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
from discdiff.processes.uniform import UniformPosterior, UniformProcess
from discdiff.registry import register
from discdiff.sampling import (
    AncestralSampler,
    BlockSampler,
    ParticleSampler,
    ReverseChain,
)
from discdiff.schedules import (
    Cosine,
    CosineSquared,
    Geometric,
    Linear,
    LogLinear,
    NoiseSchedule,
    Polynomial,
)
from discdiff.shaping import Shaping

__all__ = [
    "SUBS",
    "AncestralSampler",
    "BlockSampler",
    "CapSchedule",
    "CausalConfig",
    "CausalTransformer",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "ConfidenceSchedule",
    "Cosine",
    "CosineSquared",
    "DFMCorrector",
    "Denoiser",
    "DiT",
    "DiTConfig",
    "DilatedDecoder",
    "DreamCount",
    "EntropyDecoder",
    "EnumerableOracle",
    "EvenCount",
    "ForwardBackward",
    "ForwardProcess",
    "Geometric",
    "Guidance",
    "HuggingFaceDenoiser",
    "Linear",
    "LogLinear",
    "LoopSchedule",
    "MarginDecoder",
    "MaskGITDecoder",
    "MaskingPosterior",
    "MaskingProcess",
    "NoRemasking",
    "NoiseSchedule",
    "ParticleSampler",
    "Polynomial",
    "RemaskPosterior",
    "RemaskingSchedule",
    "RescaleSchedule",
    "ReverseChain",
    "SEDDAnalytic",
    "SEDDEuler",
    "ScheduleCount",
    "ScoreModel",
    "Shaping",
    "ThresholdCount",
    "ThresholdDecoder",
    "UniformPosterior",
    "UniformProcess",
    "load_diffusion_llm",
    "nelbo",
    "register",
    "sigma_max",
]

__version__ = "0.1.0"
