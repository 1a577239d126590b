r"""The reverse chain as a Pyro program: one sample site per step, potentials as factors.

For a sampler's time grid $1 = t_T > \dots > t_0$, the model is

$$
p_\theta(z_{t_T}, \dots, z_{t_0}) = p(z_{t_T}) \prod_{i=T}^{1}
q_\sigma\big(z_{t_{i-1}} \mid z_{t_i}, x_\theta(z_{t_i})\big),
$$

written with one `pyro.sample` site per state, named `z_T, ..., z_0` (`z_i` at
$t_i$), inside a `pyro.plate("sequences")`; each site's distribution is the
strategy's own posterior object (a `MaskedCategorical` for every masking
strategy). With noise removal the returned sequence is a `pyro.deterministic`
site `x`. `poutine.trace` of the model gives the log-probability of a whole
path, and `poutine.condition` on every site scores a given one
(`ReverseChain.path_log_prob`).

Given a log-reward $r$, `pyro.factor` sites `G_{T-1}, ..., G_0` carry the
steering potentials $\log G_i = \Phi_i - \Phi_{i+1}$ of `ParticleSampler` (the
last one $r(x_0) - \Phi$): along any path they add up to $r(x_0)$, so
importance weights of the program with its own sites as proposal give the
tilted target $q_T(x)\, e^{r(x)} / Z$.

With data $x$ observed at `z_0` (a grid that ends at $t_0 = 0$, no noise
removal) and `forward_guide` (the forward process: $z_{t_T} \sim q(z_{t_T}
\mid x)$, then $q_\sigma(z_{t_{i-1}} \mid z_{t_i}, x)$) as guide, Pyro's
`Trace_ELBO` estimates

$$
-\mathrm{ELBO} = \mathrm{KL}\big(q(z_1 \mid x) \,\|\, p(z_1)\big)
+ \sum_{i=1}^{T} \mathbb{E}_q\, \mathrm{KL}\big(q_\sigma(z_{t_{i-1}} \mid z_{t_i}, x)
\,\|\, p_\theta(z_{t_{i-1}} \mid z_{t_i})\big),
$$

the discrete NELBO of `discrete_nelbo` when $\alpha_1 = 0$ (the first KL vanishes).
"""

import pyro
import torch
from jaxtyping import Float, Int
from pyro import poutine
from torch import Tensor

from discdiff.models.protocol import Denoiser
from discdiff.sampling.ancestral import AncestralSampler
from discdiff.sampling.particles import POTENTIALS, Reward
from discdiff.typing import Tokens

__all__ = ["ReverseChain"]


class ReverseChain:
    r"""An `AncestralSampler`'s reverse process as a Pyro model (and its forward guide).

    Args:
        sampler: The chain: its process, strategy (a posterior, called as
            `posterior(process, z_t, x, t, s)`), grid, shaping and noise removal.

    Raises:
        TypeError: If the strategy is not a posterior (a decoder's draw has no
            distribution object).

    Example:
        >>> from pyro import poutine
        >>> from discdiff import EnumerableOracle, MaskingPosterior, MaskingProcess
        >>> process = MaskingProcess(vocab_size=2)
        >>> chain = ReverseChain(AncestralSampler(process, MaskingPosterior(), steps=2))
        >>> oracle = EnumerableOracle(torch.ones(2, 2, 2))
        >>> trace = poutine.trace(chain.model).get_trace(oracle, 4, 3)
        >>> chain.sites, trace.log_prob_sum().shape
        (['z_2', 'z_1', 'z_0'], torch.Size([]))
    """

    def __init__(self, sampler: AncestralSampler) -> None:
        if not callable(sampler.posterior):
            raise TypeError(
                f"`sampler` must use a posterior (called as posterior(process, z_t, x, t, s)); "
                f"got {type(sampler.posterior).__name__}, whose draw has no distribution"
            )
        self.sampler = sampler
        points = len(sampler.grid)
        self.sites = [f"z_{i}" for i in range(points - 1, -1, -1)]
        """The sample sites from $z_{t_T}$ to $z_{t_0}$."""

    def _step(self, z: Tensor, x: Tensor, t: Tensor, s: Tensor, memory: object) -> object:
        sampler = self.sampler
        confidence = {} if memory is None else {"confidence": memory.psi}
        batch = z.shape[0]
        return sampler.posterior(
            sampler.process, z, x, t.expand(batch), s.expand(batch), **confidence
        )

    def model(
        self,
        denoiser: Denoiser,
        batch_size: int,
        length: int,
        *,
        observed: Int[Tensor, "batch length"] | None = None,
        reward: Reward | None = None,
        potential: str = "difference",
    ) -> Tokens:
        r"""The reverse chain: sites `z_T ... z_0`, factors `G_i` when a reward is given.

        Args:
            denoiser: Any `(z_t, t) -> logits` callable.
            batch_size: Sequences in the plate $B$.
            length: $L$.
            observed: Data `(B, L)` observed at `z_0` (needs a chain without
                noise removal whose grid ends at $t = 0$).
            reward: A log-reward `(N, L) -> (N,)`: adds the steering factors.
            potential: `"difference"`, `"max"` or `"sum"` (see `ParticleSampler`).

        Returns:
            The finished sequences `(B, L)`.

        Raises:
            ValueError: If `observed` is given to a chain with noise removal, or
                `potential` is unknown.
        """
        sampler, process = self.sampler, self.sampler.process
        if observed is not None and sampler.noise_removal:
            raise ValueError(
                "`observed` is the last sample site `z_0`; use a sampler with "
                "noise_removal=False and t_min=0"
            )
        if potential not in POTENTIALS:
            raise ValueError(f"`potential` must be one of {tuple(POTENTIALS)}; got {potential!r}")
        grid = sampler.grid
        with pyro.plate("sequences", batch_size):
            z = pyro.sample(self.sites[0], process.prior(batch_size, length))
            memory = sampler.posterior.start(process, z)
            running, phi = None, 0.0
            x = sampler._x_theta(denoiser, z, grid[0].expand(batch_size).float())
            for i in range(len(grid) - 1):
                last = i == len(grid) - 2
                q = self._step(z, x, grid[i], grid[i + 1], memory)
                z_s = pyro.sample(self.sites[i + 1], q, obs=observed if last else None)
                if memory is not None:
                    memory.observe(x, z, z_s)
                z = z_s
                if not last or sampler.noise_removal:
                    x = sampler._x_theta(denoiser, z, grid[i + 1].expand(batch_size).float())
                if reward is not None and not last:
                    predicted = torch.where(process.is_masked(z), x.argmax(-1), z)
                    running = POTENTIALS[potential](running, reward(predicted).double())
                    pyro.factor(f"G_{len(grid) - 2 - i}", running - phi)
                    phi = running
            if sampler.noise_removal:
                done = process.remove_noise(z, x, grid[-1].expand(batch_size))
                z = pyro.deterministic("x", done, event_dim=1)
            if reward is not None:
                pyro.factor("G_0", reward(z).double() - phi)
        return z

    def forward_guide(
        self,
        denoiser: Denoiser,
        batch_size: int,
        length: int,
        *,
        observed: Int[Tensor, "batch length"],
        **unused: object,
    ) -> None:
        r"""The forward process given data: $q(z_{t_T} \mid x)$, then $q_\sigma(z_s \mid z_t, x)$.

        The guide of every latent site `z_T ... z_1` of `model(..., observed=x)`.

        Args:
            denoiser: Unused (the model's argument).
            batch_size: $B$, the rows of `observed`.
            length: $L$.
            observed: The data $x$ `(B, L)`.
            **unused: The model's other arguments.
        """
        sampler, process = self.sampler, self.sampler.process
        x = torch.nn.functional.one_hot(observed, process.vocab_size).float()
        grid = sampler.grid
        with pyro.plate("sequences", batch_size):
            z = pyro.sample(self.sites[0], process.marginal(observed, grid[0].expand(batch_size)))
            memory = sampler.posterior.start(process, z)
            for i in range(len(grid) - 2):
                z_s = pyro.sample(self.sites[i + 1], self._step(z, x, grid[i], grid[i + 1], memory))
                if memory is not None:
                    memory.observe(x, z, z_s)
                z = z_s

    def path_log_prob(
        self, denoiser: Denoiser, path: Int[Tensor, "states batch length"]
    ) -> Float[Tensor, "batch"]:
        r"""$\log p_\theta(z_{t_T}, \dots, z_{t_0})$ of given paths, from the conditioned trace.

        Args:
            denoiser: Any `(z_t, t) -> logits` callable.
            path: One state per site, `(len(sites), B, L)`.

        Returns:
            The log-probability of each path `(B,)` ($-\infty$ if impossible).
        """
        if path.shape[0] != len(self.sites):
            raise ValueError(
                f"`path` must hold one state per site ({len(self.sites)}); got {path.shape[0]}"
            )
        data = dict(zip(self.sites, path, strict=True))
        batch, length = path.shape[1:]
        trace = poutine.trace(poutine.condition(self.model, data=data)).get_trace(
            denoiser, batch, length
        )
        trace.compute_log_prob(site_filter=lambda name, site: name in self.sites)
        return sum(trace.nodes[name]["log_prob"] for name in self.sites)
