r"""Presets: the ReMDM paper's sampler settings and this library's study settings, in one place.

The paper (Wang et al. 2025, OpenWebText, $L = 1024$) samples with nucleus
$p = 0.9$ under the rule of its code (keep the tokens whose cumulative mass is
at most $p$, and always the top one: `nucleus="remdm"`) and tunes each
remasking schedule $\sigma_t$ separately:

- ReMDM-cap, $\sigma_t = \min\{\eta, \sigma_t^{\max}\}$: $\eta = 0.008$ at
  $T = L$ (the $T = 1024$ scripts), $\eta = 0.04$ for $T < L$;
- ReMDM-rescale, $\sigma_t = \eta\,\sigma_t^{\max}$: $\eta = 0.015$;
- ReMDM-loop: $t_{\mathrm{on}} = 0.55$, $t_{\mathrm{off}} = 0.05$,
  $\alpha_{\mathrm{on}} = 0.9$, $\eta = 0.02$.

`PAPER` holds those numbers; the remasking schedules take their defaults
from it. `STUDY` holds what the library's own studies run (`discdiff
quickstart`, `discdiff scale`, the digits guidance study): its strategies in
the config form of `run.yaml` (`{name: cap, eta: 0.02}`), which
`discdiff.config.build_strategy` turns into objects, the strategies also run
with the exact ("perfect") denoiser, and the step counts. The studies sweep
$T$ from $L/4$ to $4L$ with one cap $\eta = 0.02$, between the paper's
values for $T < L$ and $T = L$.

This module holds numbers and names only (it imports nothing from
discdiff), so every layer can read it.

Example:
    >>> PAPER.cap_eta_for(steps=256, length=1024), PAPER.cap_eta_for(steps=1024, length=1024)
    (0.04, 0.008)
    >>> STUDY.strategies()["ReMDM-cap"]
    {'name': 'cap', 'eta': 0.02}
"""

from dataclasses import dataclass
from typing import Any

__all__ = ["PAPER", "STUDY", "PaperSettings", "StudySettings"]


@dataclass(frozen=True)
class PaperSettings:
    r"""The ReMDM paper's sampler settings (OpenWebText, $L = 1024$).

    Attributes:
        top_p: Nucleus mass $p$ of every sample in the paper's tables.
        nucleus: The nucleus rule of its code (`discdiff.shape_probs`).
        cap_eta: ReMDM-cap's $\eta$ at $T \ge L$ (the $T = 1024$ scripts).
        cap_eta_few_steps: ReMDM-cap's $\eta$ for $T < L$.
        rescale_eta: ReMDM-rescale's $\eta$.
        loop_t_on: ReMDM-loop's $t_{\mathrm{on}}$, where the loop starts.
        loop_t_off: ReMDM-loop's $t_{\mathrm{off}}$, where it ends.
        loop_alpha_on: ReMDM-loop's $\alpha_{\mathrm{on}}$, held during the loop.
        loop_eta: ReMDM-loop's remasking probability $\eta$ in the loop.
    """

    top_p: float = 0.9
    nucleus: str = "remdm"
    cap_eta: float = 0.008
    cap_eta_few_steps: float = 0.04
    rescale_eta: float = 0.015
    loop_t_on: float = 0.55
    loop_t_off: float = 0.05
    loop_alpha_on: float = 0.9
    loop_eta: float = 0.02

    def cap_eta_for(self, steps: int, length: int) -> float:
        r"""ReMDM-cap's $\eta$ for $T$ = `steps` at $L$ = `length`: 0.04 if $T < L$, else 0.008."""
        return self.cap_eta_few_steps if steps < length else self.cap_eta

    def loop(self) -> dict[str, Any]:
        """ReMDM-loop's settings in config form, `{name: loop, t_on: ..., ...}`."""
        return {
            "name": "loop",
            "t_on": self.loop_t_on,
            "t_off": self.loop_t_off,
            "alpha_on": self.loop_alpha_on,
            "eta": self.loop_eta,
        }


PAPER = PaperSettings()
"""The paper's settings."""


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
