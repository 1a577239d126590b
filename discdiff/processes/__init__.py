r"""Forward processes $q(z_t \mid x)$, one subpackage or module per process.

- `base`: the `ForwardProcess` protocol every process implements.
- `masking`: MDLM's masking process, ReMDM's remasking posteriors, the
  confidence decoders and SEDD's samplers.
- `uniform`: uniform-state noise and its posterior.
"""

from discdiff.processes.base import (
    NEG,
    ForwardProcess,
    StepState,
    Strategy,
    check_token_range,
    data_log_softmax,
)
from discdiff.processes.masking.process import MaskingProcess
from discdiff.processes.uniform import UniformPosterior, UniformProcess

__all__ = [
    "NEG",
    "ForwardProcess",
    "MaskingProcess",
    "StepState",
    "Strategy",
    "UniformPosterior",
    "UniformProcess",
    "check_token_range",
    "data_log_softmax",
]
