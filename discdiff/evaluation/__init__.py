"""Evaluation: sample-quality metrics, judges and the inference-time scaling study."""

from discdiff.evaluation.judges import ARJudge, AutoregressiveNLL, HFCausalJudge
from discdiff.evaluation.metrics import Judge, exact_nll, gen_ppl, mauve_score, token_entropy
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
    "exact_nll",
    "format_table",
    "gen_ppl",
    "mauve_score",
    "plot_study",
    "scaling_study",
    "summarize",
    "token_entropy",
    "write_rows",
]
