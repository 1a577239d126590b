r"""The ReMDM paper's sampler settings, in one place.

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
from it. What the library's own studies run (`discdiff quickstart`,
`discdiff scale`, the digits studies) is `discdiff.studies.STUDY`, built on
these.

This module holds numbers and names only (it imports nothing from
discdiff), so every layer can read it.

Example:
    >>> PAPER.cap_eta_for(steps=256, length=1024), PAPER.cap_eta_for(steps=1024, length=1024)
    (0.04, 0.008)
"""

from dataclasses import dataclass
from typing import Any

__all__ = ["PAPER", "PaperSettings"]


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
