r"""Particle steering: sequential Monte Carlo over the reverse chain (Feynman–Kac steering).

Each of the `batch_size` outputs comes from its own system of $K$ particles,
each running the wrapped sampler's chain $z_1 \to z_0$. After step $i$ a
particle carries a potential $\Phi_i$ built from the log-reward $r$ at the
denoiser's prediction $\hat x_i$ of the clean sequence (the argmax of
$x_\theta(z_i)$ at masked positions, $z_i$ elsewhere):

- `"difference"`: $\Phi_i = r(\hat x_i)$,
- `"max"`: $\Phi_i = \max_{j \le i} r(\hat x_j)$,
- `"sum"`: $\Phi_i = \sum_{j \le i} r(\hat x_j)$,

with $\Phi_0 = 0$ before the first step and $\Phi = r(x_0)$ on the finished
sequence $x_0$ whatever the rule. Step $i$ multiplies each particle's weight by
$G_i = \exp(\Phi_i - \Phi_{i-1})$, so the product of the potentials along a
path telescopes to $\exp(r(x_0))$ and the weighted particles target

$$
\pi(x_0) = \frac{q_T(x_0)\, e^{r(x_0)}}{Z}, \qquad Z = \mathbb{E}_{q_T}\big[e^{r(x_0)}\big],
$$

exactly as $K \to \infty$ ($q_T$: the wrapped sampler's own distribution),
while the intermediate potentials only decide where particles are spent.
With normalised weights $W^k$, each step adds
$\log \sum_k W^k G_i^k$ to $\log \hat Z$; when the effective sample size
$1 / \sum_k (W^k)^2$ falls below `ess_threshold` $\cdot K$ the system is
resampled and its weights reset to $1/K$. $\hat Z$ is unbiased for $Z$. The
output of each system is one particle drawn by its final weights.
`ess_threshold=0` never resamples before the end: plain importance resampling
of $K$ independent draws of $q_T$.
"""

import math
from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from discdiff._checks import validation
from discdiff.models.protocol import Denoiser, is_time_conditioned
from discdiff.processes.base import StepState
from discdiff.rng import RandomSource, SequenceGenerator, derive_seed, sampling_device, uniform
from discdiff.sampling.ancestral import AncestralSampler, SampleResult
from discdiff.typing import Tokens

__all__ = ["POTENTIALS", "RESAMPLING", "ParticleSampler", "resample"]

Reward = Callable[[Int[Tensor, "batch length"]], Float[Tensor, "batch"]]

POTENTIALS: dict[str, Callable[[Tensor | None, Tensor], Tensor]] = {
    "difference": lambda running, r: r,
    "max": lambda running, r: r if running is None else torch.maximum(running, r),
    "sum": lambda running, r: r if running is None else running + r,
}
r"""The potential rules: $\Phi_i$ from $\Phi$'s running value and $r(\hat x_i)$."""

RESAMPLING = ("systematic", "stratified", "multinomial")
"""The resampling schemes `resample` knows."""


def resample(
    log_weights: Float[Tensor, "systems particles"],
    u: Float[Tensor, "systems particles"],
    scheme: str = "systematic",
) -> Int[Tensor, "systems particles"]:
    r"""Ancestor indices for each system from its weights, by inverting the weights' CDF.

    With normalised weights $W^k$ and their CDF $C$, particle $j$'s ancestor is
    $C^{-1}(p_j)$ at the points $p_j = (j + u_1)/K$ (systematic: one uniform per
    system), $p_j = (j + u_j)/K$ (stratified) or $p_j = u_j$ (multinomial).
    Each scheme draws ancestor $k$ $K W^k$ times in expectation.

    Args:
        log_weights: Unnormalised log-weights `(B, K)`.
        u: Uniform numbers in $[0, 1)$ `(B, K)` (systematic reads the first column).
        scheme: One of `RESAMPLING`.

    Returns:
        Ancestor indices in `0..K-1`, `(B, K)`.

    Example:
        >>> log_w = torch.tensor([[0.0, -torch.inf, 0.0, -torch.inf]])
        >>> resample(log_w, torch.full((1, 4), 0.5))
        tensor([[0, 0, 2, 2]])
    """
    if scheme not in RESAMPLING:
        raise ValueError(f"`resample` must be one of {RESAMPLING}; got {scheme!r}")
    particles = log_weights.shape[-1]
    cdf = log_weights.double().softmax(-1).cumsum(-1)
    cdf = cdf / cdf[..., -1:]
    steps = torch.arange(particles, dtype=torch.float64, device=log_weights.device)
    if scheme == "systematic":
        points = (steps + u[..., :1].double()) / particles
    elif scheme == "stratified":
        points = (steps + u.double()) / particles
    else:
        points = u.double()
    return torch.searchsorted(cdf, points.contiguous(), right=True).clamp_max(particles - 1)


class ParticleSampler:
    r"""Feynman–Kac steering of any `AncestralSampler` towards $q_T(x)\, e^{r(x)} / Z$.

    Args:
        sampler: The chain each particle runs (any strategy; its temperature,
            nucleus, cache and noise removal apply).
        reward: The log-reward $r$: `(N, L)` token ids to `(N,)` finite floats.
        particles: Particles per output, $K \ge 1$.
        potential: How intermediate potentials are built: `"difference"`,
            `"max"` or `"sum"` (see the module).
        resample: Resampling scheme: `"systematic"`, `"stratified"` or `"multinomial"`.
        ess_threshold: Resample a system when its effective sample size falls
            below this fraction of $K$, in $[0, 1]$; 0 never resamples before
            the end (importance resampling), 1 at every step.

    Example:
        >>> from discdiff import EnumerableOracle, MaskingPosterior, MaskingProcess
        >>> process = MaskingProcess(vocab_size=3)
        >>> oracle = EnumerableOracle(torch.ones(3, 3, 3))
        >>> zeros = lambda x: (x == 0).sum(-1).double()
        >>> steered = ParticleSampler(
        ...     AncestralSampler(process, MaskingPosterior(), steps=3), zeros, particles=8
        ... )
        >>> result = steered.sample(oracle, 2, 3, generator=torch.Generator().manual_seed(0))
        >>> result.tokens.shape, result.log_evidence.shape, result.ess.shape
        (torch.Size([2, 3]), torch.Size([2]), torch.Size([3, 2]))
    """

    def __init__(
        self,
        sampler: AncestralSampler,
        reward: Reward,
        particles: int,
        *,
        potential: str = "difference",
        resample: str = "systematic",
        ess_threshold: float = 0.5,
    ) -> None:
        if not callable(reward):
            raise TypeError(f"`reward` must be callable (tokens -> log-rewards); got {reward!r}")
        if isinstance(particles, bool) or not isinstance(particles, int) or particles < 1:
            raise ValueError(f"`particles` must be an integer >= 1; got {particles!r}")
        if potential not in POTENTIALS:
            raise ValueError(f"`potential` must be one of {tuple(POTENTIALS)}; got {potential!r}")
        if resample not in RESAMPLING:
            raise ValueError(f"`resample` must be one of {RESAMPLING}; got {resample!r}")
        if not 0.0 <= ess_threshold <= 1.0:
            raise ValueError(f"`ess_threshold` must lie in [0, 1]; got {ess_threshold}")
        self.sampler, self.reward, self.particles = sampler, reward, particles
        self.potential, self.scheme, self.ess_threshold = potential, resample, ess_threshold

    def __repr__(self) -> str:
        return (
            f"ParticleSampler(particles={self.particles}, potential={self.potential!r}, "
            f"resample={self.scheme!r}, ess_threshold={self.ess_threshold})"
        )

    def log_reward(self, tokens: Tokens) -> Float[Tensor, "batch"]:
        """The reward of `tokens` `(N, L)` as float64 `(N,)`, its shape checked.

        Raises:
            ValueError: If `reward` returns another shape than `(N,)`.
        """
        r = self.reward(tokens)
        if not isinstance(r, Tensor) or tuple(r.shape) != (tokens.shape[0],):
            shape = tuple(r.shape) if isinstance(r, Tensor) else type(r).__name__
            raise ValueError(
                f"`reward` must return one float per sequence, shape ({tokens.shape[0]},); "
                f"got {shape}"
            )
        return r.to(torch.float64)

    @torch.no_grad()
    def sample(
        self,
        denoiser: Denoiser,
        batch_size: int,
        length: int,
        *,
        prompt: Int[Tensor, "prompt_batch prompt_length"] | None = None,
        generator: RandomSource = None,
        device: torch.device | str | None = None,
    ) -> SampleResult:
        r"""Draw `batch_size` sequences, each from its own system of $K$ particles.

        Args:
            denoiser: Any `(z_t, t) -> logits` callable; it sees the
                $B K$ particles as one batch.
            batch_size: Number of outputs (particle systems) $B$.
            length: Tokens per sequence $L$.
            prompt: A prefix `(B or 1, P)` kept fixed in every particle.
            generator: Random generator. A `SequenceGenerator` of `batch_size`
                sequences gives each system its own streams (its particles draw
                from streams derived from the system's), so an output does not
                depend on the batch size.
            device: Where to sample (default: the generator's device, else CPU).

        Returns:
            A `SampleResult` with `tokens` `(B, L)`; `nfe` the denoiser calls
            (each on $BK$ rows); `sequence_nfe` `(B,)` the network evaluations
            spent on each output: the sum over its $K$ particles of the calls
            each needed (with the cache, a particle whose tokens did not change
            since its last evaluation, or the copy of one, reuses it), the count
            that best-of-$K$ sampling reports for its $K$ draws;
            `log_evidence` `(B,)`, $\log \hat Z$; `ess` `(S, B)`, the effective
            sample size after each of the $S$ reweightings (the last one at the
            finished sequences), before any resampling.

        Raises:
            ValueError: On a bad `batch_size`, `length`, `prompt` or generator
                size, a reward of the wrong shape, or a non-finite reward.
        """
        sampler, process, posterior = self.sampler, self.sampler.process, self.sampler.posterior
        device = sampling_device(batch_size, length, generator, device)
        k = self.particles
        n = batch_size * k
        if prompt is not None:
            if prompt.dim() != 2 or prompt.shape[0] not in (1, batch_size):
                raise ValueError(
                    f"`prompt` must have shape (B or 1, P) with B = batch_size = {batch_size}; "
                    f"got {tuple(prompt.shape)}"
                )
            prompt = prompt.repeat_interleave(k, 0) if prompt.shape[0] > 1 else prompt
        values, given = sampler._given(n, length, prompt, None, device)
        walkers, systems = _generators(generator, batch_size, k)
        z = torch.where(
            given, values, process.sample_prior(n, length, generator=walkers, device=device)
        )
        memory = posterior.start(process, z)
        grid = sampler.grid.to(device)
        run = _Particles(self, denoiser, batch_size, device)
        x = run.x_theta(z, grid[0], None)
        for i in range(len(grid) - 1):
            t, s = grid[i].expand(n), grid[i + 1].expand(n)
            with validation(not run.checked):
                z_s = posterior.draw(
                    process,
                    z,
                    x,
                    t,
                    s,
                    state=memory,
                    generator=walkers,
                    dtype=sampler.shaping.dtype,
                )
            run.checked = True
            z_s = torch.where(given, z, z_s)
            if memory is not None:
                memory.observe(x, z, z_s)
            changed, z = (z_s != z).any(-1), z_s
            last = i == len(grid) - 2
            if (not last or sampler.noise_removal) and (not run.use_cache or bool(changed.any())):
                x = run.x_theta(z, grid[i + 1], changed)
            if last:
                break
            predicted = torch.where(process.is_masked(z), x.argmax(-1), z)
            ancestors = run.reweight(run.potential(self.log_reward(predicted)), systems)
            z, x, memory = z[ancestors], x[ancestors], _select(memory, ancestors, n)
        if sampler.noise_removal:
            z = torch.where(given, z, process.remove_noise(z, x, grid[-1].expand(n)))
        run.reweight(self.log_reward(z) - run.phi, systems, last=True)
        return run.result(z, length, systems, steps=len(grid) - 1 + int(sampler.noise_removal))


class _Particles:
    """The weights, potentials and counters of one `ParticleSampler.sample` call."""

    def __init__(
        self, steered: ParticleSampler, denoiser: Denoiser, systems: int, device: torch.device
    ) -> None:
        self.steered, self.denoiser = steered, denoiser
        self.sampler = steered.sampler
        self.k, self.systems = steered.particles, systems
        self.use_cache = self.sampler.cache and not is_time_conditioned(denoiser)
        self.checked = False
        self.nfe = 0
        self.calls = torch.zeros(systems, dtype=torch.long, device=device)
        shape = (systems, self.k)
        self.log_w = torch.full(shape, -math.log(self.k), dtype=torch.float64, device=device)
        self.log_z = torch.zeros(systems, dtype=torch.float64, device=device)
        self.phi = torch.zeros(systems * self.k, dtype=torch.float64, device=device)
        self.running: Tensor | None = None
        self.finite = torch.ones((), dtype=torch.bool, device=device)
        self.ess: list[Tensor] = []
        self.offsets = torch.arange(systems, device=device).unsqueeze(-1) * self.k

    def x_theta(self, z: Tensor, t: Tensor, changed: Tensor | None) -> Tensor:
        r"""$x_\theta(z)$, counting an evaluation for every particle that needed one."""
        self.nfe += 1
        if changed is None or not self.use_cache:
            self.calls += self.k
        else:
            self.calls += changed.view(self.systems, self.k).sum(-1)
        with validation(not self.checked):
            return self.sampler._x_theta(self.denoiser, z, t.expand(z.shape[0]).float())

    def potential(self, r: Tensor) -> Tensor:
        r"""$\Phi_i - \Phi_{i-1}$ for this step's rewards $r(\hat x_i)$; updates $\Phi$."""
        self.running = POTENTIALS[self.steered.potential](self.running, r)
        increment, self.phi = self.running - self.phi, self.running
        return increment

    def reweight(self, increment: Tensor, u_source: RandomSource, *, last: bool = False) -> Tensor:
        r"""Multiply the weights by $e^{increment}$, add to $\log \hat Z$, resample if needed.

        Returns:
            Flat ancestor indices `(B K,)` (the identity where no system resampled).
        """
        if not self.ess:  # the first reward: check it eagerly (one synchronisation)
            _check_finite(increment)
        self.finite &= torch.isfinite(increment).all()
        log_w = self.log_w + increment.view(self.systems, self.k)
        total = log_w.logsumexp(-1)
        self.log_z += total
        self.log_w = log_w - total.unsqueeze(-1)
        self.ess.append(1.0 / self.log_w.mul(2).exp().sum(-1))
        u = uniform(
            (self.systems, self.k),
            generator=u_source,
            dtype=torch.float64,
            device=self.log_w.device,
        )
        if last:
            return self.offsets.squeeze(-1)
        identity = torch.arange(self.k, device=self.log_w.device).expand(self.systems, -1)
        low = (self.ess[-1] < self.steered.ess_threshold * self.k).unsqueeze(-1)
        ancestors = torch.where(low, resample(self.log_w, u, self.steered.scheme), identity)
        self.log_w = torch.where(low, -math.log(self.k), self.log_w)
        flat = (ancestors + self.offsets).reshape(-1)
        self.phi = self.phi[flat]
        if self.running is not None:
            self.running = self.running[flat]
        return flat

    def result(self, z: Tensor, length: int, u_source: RandomSource, *, steps: int) -> SampleResult:
        if not bool(self.finite):
            _check_finite(torch.tensor(float("nan")))
        u = uniform((self.systems, 1), generator=u_source, dtype=torch.float64, device=z.device)
        pick = resample(self.log_w, u.expand(-1, self.k), "multinomial")[:, 0]
        tokens = z.view(self.systems, self.k, length)[torch.arange(self.systems), pick]
        return SampleResult(
            tokens=tokens,
            nfe=self.nfe,
            steps=steps,
            sequence_nfe=self.calls,
            log_evidence=self.log_z,
            ess=torch.stack(self.ess),
        )


def _check_finite(values: Tensor) -> None:
    if not bool(torch.isfinite(values).all()):
        raise ValueError(
            "`reward` must be finite (a log-reward in (-inf, inf)); got NaN or infinite values"
        )


def _generators(
    generator: RandomSource, systems: int, particles: int
) -> tuple[RandomSource, RandomSource]:
    """The particles' source and the systems' one (resampling and the final pick).

    A `SequenceGenerator` of the systems gives particle $k$ of system $b$ the
    stream $(b K + k)$ of a seed derived from the systems' seed.
    """
    if not isinstance(generator, SequenceGenerator):
        return generator, generator
    walkers = SequenceGenerator(
        derive_seed(generator.seed, "particles", particles),
        systems * particles,
        start=generator.start * particles,
        device=generator.device,
    )
    return walkers, generator


def _select(state: StepState | None, index: Tensor, rows: int) -> StepState | None:
    """Reorder a strategy's per-run state (its per-row tensors) by the ancestors `index`."""
    if state is None:
        return None
    for name, value in vars(state).items():
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == rows:
            setattr(state, name, value[index])
    return state
