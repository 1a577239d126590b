"""The paper's experiments, built on the library: Table 1, Table 2 and the digits frontier.

The library (`discdiff` below this package) never imports it. Each study
composes the library's processes, samplers, trainers and metrics
(`discdiff.evaluation`) into one of the ReMDM paper's experiments at CPU
scale, with its presets (`STUDY`), its judges and its plots:

- `table1`: the scaling study on a language with exact likelihoods
  (`run_synthetic_study`, the job of `discdiff quickstart` and `discdiff
  scale`) and the paper's Table 1 (`run_table1`);
- `table2`: class-conditional digits scored by FID and the Inception Score
  on an independent scikit-learn judge (`run_table2`);
- `frontier`: the digits controllability study, accuracy against novelty
  under guidance (`run_digits_study`, the paper's Figure 4);
- `commands`: the `discdiff quickstart` and `discdiff scale` jobs;
- `settings`: what the studies run (`STUDY`).
"""

from discdiff.studies.commands import compared_runs, quickstart, reading, scale, study_report
from discdiff.studies.frontier import (
    DigitsJudge,
    digits_metrics,
    frontier_table,
    fudge_study,
    guidance_study,
    plot_frontier,
    plot_samples,
    run_digits_study,
)
from discdiff.studies.settings import STUDY, StudySettings
from discdiff.studies.table1 import (
    TABLE1_METRICS,
    Featurizer,
    run_synthetic_study,
    run_table1,
    score_strategies,
    strategies,
)
from discdiff.studies.table2 import (
    TABLE2_METRICS,
    FeatureJudge,
    balanced_subset,
    paired_differences,
    run_table2,
    table2_metrics,
)

__all__ = [
    "STUDY",
    "TABLE1_METRICS",
    "TABLE2_METRICS",
    "DigitsJudge",
    "FeatureJudge",
    "Featurizer",
    "StudySettings",
    "balanced_subset",
    "compared_runs",
    "digits_metrics",
    "frontier_table",
    "fudge_study",
    "guidance_study",
    "paired_differences",
    "plot_frontier",
    "plot_samples",
    "quickstart",
    "reading",
    "run_digits_study",
    "run_synthetic_study",
    "run_table1",
    "run_table2",
    "scale",
    "score_strategies",
    "strategies",
    "study_report",
    "table2_metrics",
]
