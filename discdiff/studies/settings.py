r"""What the library's studies run: samplers, step counts, samples and seeds, in one place.

`STUDY` holds the settings of `discdiff quickstart`, `discdiff scale` (and its
Table 1 and Table 2 presets) and the digits studies: their strategies in the
config form of `run.yaml` (`{name: cap, eta: 0.02}`), which
`discdiff.config.build_strategy` turns into objects, the strategies also run
with the exact ("perfect") denoiser, and the step counts. The studies sweep
$T$ from $L/4$ to $4L$ with one cap $\eta = 0.02$, between the paper's
values for $T < L$ and $T = L$ (`discdiff.presets.PAPER`).

Example:
    >>> STUDY.strategies()["ReMDM-cap"]
    {'name': 'cap', 'eta': 0.02}
    >>> STUDY.table1_steps(64)
    (16, 32, 64, 128, 256)
"""

from dataclasses import dataclass
from typing import Any

from discdiff.presets import PAPER

__all__ = ["STUDY", "StudySettings"]


@dataclass(frozen=True)
class StudySettings:
    r"""What the library's studies run.

    Attributes:
        cap_eta: The cap $\eta$ of the studies (one value for every $T$).
        scale_steps: `discdiff scale`'s step counts $T$.
        scale_samples: `discdiff scale`'s samples per cell and seed.
        scale_seeds: `discdiff scale`'s seeds (and every table's).
        quickstart_samplers: The samplers of `discdiff quickstart` (the small
            Table 1): MDLM and ReMDM's two main schedules.
        quickstart_perfect: Strategies `discdiff quickstart` also runs with
            the exact denoiser (none: `discdiff scale` runs them).
        quickstart_top_p: `discdiff quickstart`'s nucleus mass: off, so that
            its exact gap reads one way (lower is better; a nucleus pushes
            samples below the data's gap, where lower means less diverse).
            `--top-p 0.9` runs the paper's setting.
        quickstart_samples: `discdiff quickstart`'s samples per cell (the
            quickstart stays within four CPU minutes).
        scale_perfect: Strategies `discdiff scale` (and Table 1) also runs
            with the exact denoiser.
        quickstart_run: The built-in run `discdiff quickstart` samples from
            (`hmm`: the default benchmark language, see `discdiff.data.HMMLanguage`).
        table_steps: Table 1's step counts as multiples of $L$:
            $T \in \{L/4, L/2, L, 2L, 4L\}$, the paper's columns.
        table1_top_p: Table 1's nucleus settings: the paper's $p = 0.9$, then off.
        table1_samples: Samples per seed (a cell pools its seeds: 288).
        table2_steps: Table 2's step counts on the digits ($L = 64$): $L/4$, $L$, $4L$.
        table2_samplers: Table 2's samplers (the paper's: MaskGIT, MDLM, ReMDM).
        table2_samples_per_class: Table 2's samples of each digit per seed.
    """

    cap_eta: float = 0.02
    quickstart_run: str = "hmm"
    scale_steps: tuple[int, ...] = (8, 16, 64, 256, 512)
    scale_samples: int = 256
    scale_seeds: int = 3
    quickstart_samplers: tuple[str, ...] = ("MDLM", "ReMDM-cap", "ReMDM-loop")
    quickstart_perfect: tuple[str, ...] = ()
    quickstart_top_p: float | None = None
    quickstart_samples: int = 64
    table_steps: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    table1_top_p: tuple[float | None, ...] = (PAPER.top_p, None)
    table1_samples: int = 96
    table2_steps: tuple[int, ...] = (16, 64, 256)
    table2_samplers: tuple[str, ...] = ("MaskGIT", "MDLM", "ReMDM-cap", "ReMDM-loop")
    table2_samples_per_class: int = 50
    scale_perfect: tuple[str, ...] = (
        "MDLM",
        "ReMDM-cap",
        "ReMDM-loop",
        "forward-backward",
        "DFM",
    )

    def strategies(self, full: bool = False) -> dict[str, dict[str, Any]]:
        """The studies' samplers, named, in config form (a fresh dict on every call).

        Args:
            full: Add ReMDM-rescale, ReMDM-conf and entropy ordering.

        Returns:
            `{display name: {name: ..., **arguments}}`.
        """
        chosen: dict[str, dict[str, Any]] = {
            "MDLM": {"name": "mdlm"},
            "ReMDM-cap": {"name": "cap", "eta": self.cap_eta},
            "ReMDM-loop": PAPER.loop(),
            "forward-backward": {"name": "forward-backward"},
            "DFM": {"name": "dfm"},
            "MaskGIT": {"name": "maskgit"},
        }
        if full:
            chosen |= {
                "ReMDM-rescale": {"name": "rescale", "eta": PAPER.rescale_eta},
                "ReMDM-conf": {"name": "conf"},
                "entropy order": {"name": "entropy"},
            }
        return chosen

    def score_strategies(self, full: bool = False) -> dict[str, dict[str, Any]]:
        """SEDD's samplers for score models (`train.objective: score-entropy`), config form.

        Args:
            full: Add the Euler sampler (the same steps as the analytic one
                under a log-linear schedule, see `discdiff.processes.masking.sedd`).
        """
        chosen = {"SEDD-analytic": {"name": "sedd-analytic"}}
        return chosen | ({"SEDD-Euler": {"name": "sedd-euler"}} if full else {})

    def quickstart_steps(self, length: int) -> tuple[int, ...]:
        """`discdiff quickstart`'s step counts: $T = L/4$, $L$ and $4L$."""
        return (max(1, length // 4), length, 4 * length)

    def table1_steps(self, length: int) -> tuple[int, ...]:
        """Table 1's step counts at $L$ = `length`: `table_steps` times $L$ (at least 1)."""
        return tuple(dict.fromkeys(max(1, round(f * length)) for f in self.table_steps))


STUDY = StudySettings()
"""The studies' settings."""
