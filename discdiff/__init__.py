"""discdiff: masked discrete diffusion language models, MDLM and ReMDM.

The objects a user composes are re-exported here::

    from discdiff import CapSchedule, LogLinear, MaskingProcess, RemaskPosterior

    process = MaskingProcess(schedule=LogLinear(), vocab_size=V)
    posterior = RemaskPosterior(CapSchedule(eta))

or, for uniform-state noise, `UniformProcess(schedule=LogLinear(), vocab_size=V)`
with `UniformPosterior()`; both are `ForwardProcess`es.
"""

from discdiff.baseline_objectives import AutoregressiveNLL, ScoreEntropy, score_entropy
from discdiff.distributions import FactorizedCategorical, MaskedCategorical
from discdiff.guidance import ClassifierFreeGuidance, ClassifierGuidance, Guidance
from discdiff.models import (
    SUBS,
    CausalConfig,
    CausalTransformer,
    ConditionalDenoiser,
    ConditionalSUBS,
    Denoiser,
    DiT,
    DiTClassifier,
    DiTConfig,
    EnumerableClassifier,
    EnumerableConditionalOracle,
    EnumerableOracle,
    HuggingFaceDenoiser,
    NoisyClassifier,
    ScoreModel,
    load_diffusion_llm,
    with_label,
)
from discdiff.objectives import (
    BlockNELBO,
    ConditionalNELBO,
    NoisyClassification,
    discrete_nelbo,
    nelbo,
)
from discdiff.processes import ForwardProcess, MaskingProcess
from discdiff.processes.masking import (
    DilatedDecoder,
    DreamCount,
    EntropyDecoder,
    EvenCount,
    FactorCount,
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
from discdiff.rng import SequenceGenerator
from discdiff.sampling import (
    AncestralSampler,
    BlockSampler,
    ParticleSampler,
    ReverseChain,
    SampleResult,
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

__all__ = [
    "SUBS",
    "AncestralSampler",
    "AutoregressiveNLL",
    "BlockNELBO",
    "BlockSampler",
    "CapSchedule",
    "CausalConfig",
    "CausalTransformer",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "ConditionalDenoiser",
    "ConditionalNELBO",
    "ConditionalSUBS",
    "ConfidenceSchedule",
    "Cosine",
    "CosineSquared",
    "DFMCorrector",
    "Denoiser",
    "DiT",
    "DiTClassifier",
    "DiTConfig",
    "DilatedDecoder",
    "DreamCount",
    "EntropyDecoder",
    "EnumerableClassifier",
    "EnumerableConditionalOracle",
    "EnumerableOracle",
    "EvenCount",
    "FactorCount",
    "FactorizedCategorical",
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
    "MaskedCategorical",
    "MaskingPosterior",
    "MaskingProcess",
    "NoRemasking",
    "NoiseSchedule",
    "NoisyClassification",
    "NoisyClassifier",
    "ParticleSampler",
    "Polynomial",
    "RemaskPosterior",
    "RemaskingSchedule",
    "RescaleSchedule",
    "ReverseChain",
    "SEDDAnalytic",
    "SEDDEuler",
    "SampleResult",
    "ScheduleCount",
    "ScoreEntropy",
    "ScoreModel",
    "SequenceGenerator",
    "ThresholdCount",
    "ThresholdDecoder",
    "UniformPosterior",
    "UniformProcess",
    "discrete_nelbo",
    "load_diffusion_llm",
    "nelbo",
    "score_entropy",
    "sigma_max",
    "with_label",
]

__version__ = "0.1.0"
