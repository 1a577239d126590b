"""Evaluation: sample-quality metrics, judges, the inference-time scaling study.

The paper's experiments built on these (Table 1, Table 2, the digits
frontier) are `discdiff.studies`.
"""

from discdiff.evaluation.judges import ARJudge, AutoregressiveNLL, HFCausalJudge
from discdiff.evaluation.metrics import (
    Judge,
    distinct_fraction,
    exact_nll,
    frechet_distance,
    gen_ppl,
    inception_score,
    language_metrics,
    mauve_score,
    nearest_distance,
    token_entropy,
)
from discdiff.evaluation.study import (
    autoregressive_study,
    format_table,
    plot_study,
    scaling_study,
    summarize,
    write_rows,
)

__all__ = [
    "ARJudge",
    "AutoregressiveNLL",
    "HFCausalJudge",
    "Judge",
    "autoregressive_study",
    "distinct_fraction",
    "exact_nll",
    "format_table",
    "frechet_distance",
    "gen_ppl",
    "inception_score",
    "language_metrics",
    "mauve_score",
    "nearest_distance",
    "plot_study",
    "scaling_study",
    "summarize",
    "token_entropy",
    "write_rows",
]
