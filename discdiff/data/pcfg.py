r"""A probabilistic context-free language with exact likelihood, on torch-struct's CKY.

A PCFG in Chomsky normal form with nonterminals $N$ (the start symbol drawn
from $\rho$), preterminals $P$ that each emit one token from $E[p]$, and
binary rules $A \to B\,C$ with $B, C \in N \cup P$, weights $R[A, B, C]$. Strings
of a fixed length $L$ are drawn from the grammar conditioned on the length:

$$
p(x \mid L) = \frac{\sum_{\text{trees } \tau \text{ of } x} p(\tau)}{Z_L}, \qquad
Z_L = \sum_{|x| = L} \sum_\tau p(\tau) = \sum_A \rho(A)\, \beta_L(A),
$$

where $\beta_k(A)$, the probability that $A$ derives some string of length
$k$, obeys $\beta_1(p) = 1$ for preterminals and
$\beta_k(A) = \sum_{m=1}^{k-1} \sum_{B, C} R[A, B, C]\, \beta_m(B)\, \beta_{k-m}(C)$.

- $\log p(x \mid L)$: torch-struct's `SentCFG` log-partition (the inside
  algorithm) with emission scores $\log E[p, x_\ell]$, minus $\log Z_L$;
- sampling: top-down, each node of span length $k$ choosing its split and
  children with probability $R[A, B, C]\, \beta_m(B)\, \beta_{k-m}(C) / \beta_k(A)$
  — exact draws of $p(x \mid L)$;
- the exact denoiser: `SentCFG`'s preterminal marginals with the masked
  positions' emissions summed out (score 0), then
  $p(x_\ell = v \mid \cdot) = \sum_p \mu_\ell(p)\, E[p, v]$;
- the unigram cross-entropy exactly (the same marginals with every position
  masked) and the entropy by Monte Carlo with its standard error.
"""

import torch
from jaxtyping import Float, Int
from torch import Tensor

from discdiff.data.synthetic import (
    EntropyEstimate,
    ExactLanguage,
    _check_ids,
    _dirichlet,
    _sparse_row,
    _structured,
    monte_carlo_entropy,
)
from discdiff.registry import register

__all__ = ["PCFGLanguage"]

_CHUNK = 2048  # tree nodes expanded per vectorised draw


@register("language", "pcfg")
class PCFGLanguage(ExactLanguage):
    r"""A seeded PCFG over `vocab_size` tokens, conditioned on the string length.

    Each nonterminal has `rules` binary rules over random children (Dirichlet
    weights); each preterminal emits mostly from its own random subset of
    `support` tokens, with a `floor` of mass on every token so that every
    string of a derivable length is possible.

    Args:
        vocab_size: Number of tokens $V$.
        nonterminals: Number of nonterminals $|N|$.
        preterminals: Number of preterminals $|P|$.
        rules: Binary rules per nonterminal.
        support: Tokens each preterminal emits (before the floor); `None`:
            $\min(6, V)$.
        concentration: Dirichlet concentration of rule and emission weights.
        floor: Emission mass spread over all tokens, in $[0, 1)$.
        seed: Seed of the grammar (not of its samples).

    Example:
        >>> language = PCFGLanguage(vocab_size=4, seed=0)
        >>> x = language.sample(3, 4, generator=torch.Generator().manual_seed(0))
        >>> language.log_prob(x).shape
        torch.Size([3])
    """

    def __init__(
        self,
        vocab_size: int = 32,
        nonterminals: int = 6,
        preterminals: int = 8,
        rules: int = 6,
        support: int | None = None,
        concentration: float = 1.0,
        floor: float = 1e-3,
        seed: int = 0,
    ) -> None:
        if nonterminals < 1 or preterminals < 1:
            raise ValueError(
                f"`nonterminals` and `preterminals` must be at least 1; "
                f"got {nonterminals}, {preterminals}"
            )
        self.rules, self.support, self.seed = rules, support, seed
        self.concentration, self.floor = concentration, floor
        support = min(6, vocab_size) if support is None else support
        symbols = nonterminals + preterminals
        if not 1 <= rules <= symbols * symbols:
            raise ValueError(f"`rules` must lie in [1, {symbols * symbols}]; got {rules}")
        if not 1 <= support <= vocab_size:
            raise ValueError(f"`support` must lie in [1, vocab_size={vocab_size}]; got {support}")
        if not 0.0 <= floor < 1.0:
            raise ValueError(f"`floor` must lie in [0, 1); got {floor}")
        with torch.random.fork_rng(devices=[]):  # seeded without touching the global RNG
            torch.manual_seed(seed)
            rule = torch.stack(
                [_sparse_row(symbols * symbols, rules, concentration) for _ in range(nonterminals)]
            )
            emission = torch.stack(
                [_sparse_row(vocab_size, support, concentration) for _ in range(preterminals)]
            )
            root = _dirichlet(1.0, nonterminals)
        self.rule = rule.view(nonterminals, symbols, symbols)
        self.emission = (1.0 - floor) * emission + floor / vocab_size
        self.root = root
        self.vocab_size = vocab_size
        self.nonterminals, self.preterminals = nonterminals, preterminals
        self._tables: dict[int, tuple[Tensor, Tensor]] = {}

    @property
    def symbols(self) -> int:
        """Nonterminals and preterminals together, $|N| + |P|$."""
        return self.nonterminals + self.preterminals

    # -- the length-conditioned inside weights --------------------------------------------

    def inside(self, length: int) -> Float[Tensor, "span symbols"]:
        r"""$\beta_k(A)$ for $k = 0..L$ (row 0 unused): the chance that $A$ derives $k$ tokens.

        Args:
            length: $L$.

        Returns:
            `(L + 1, |N| + |P|)` float64.
        """
        beta = torch.zeros(length + 1, self.symbols, dtype=torch.float64)
        beta[1, self.nonterminals :] = 1.0
        for k in range(2, length + 1):
            left, right = beta[1:k], beta[1:k].flip(0)  # β_m and β_{k-m}, m = 1..k-1
            beta[k, : self.nonterminals] = torch.einsum("abc,mb,mc->a", self.rule, left, right)
        return beta

    def log_normaliser(self, length: int) -> float:
        r"""$\log Z_L$, the log-probability that the grammar derives a string of length $L$.

        Args:
            length: $L$.

        Returns:
            $\log Z_L$ (`-inf` if no string of that length is derivable).
        """
        return float((self.root @ self.inside(length)[length, : self.nonterminals]).log())

    def _check_length(self, length: int) -> float:
        log_z = self.log_normaliser(length) if length >= 1 else -float("inf")
        if log_z == -float("inf"):
            raise ValueError(f"the grammar derives no string of `length` {length}")
        return log_z

    # -- inference (torch-struct) -----------------------------------------------------------

    def chart(self, z: Int[Tensor, "batch length"], mask_id: int | None = None) -> object:
        r"""The parses of `z` as a torch-struct `SentCFG` (the inside algorithm).

        Emission scores are $\log E[p, x_\ell]$, and 0 at masked positions (the
        token summed out). Its `partition` is $\log \sum_\tau p(\tau, \text{unmasked
        tokens})$ over trees with $L$ leaves; its `marginals[0]` the preterminal
        posteriors `(B, L, |P|)`.

        Args:
            z: Tokens `(B, L)`: data ids or `mask_id`.
            mask_id: The id of masked positions; `None`: all observed.

        Returns:
            A `torch_struct.SentCFG` with batch shape `(B,)`.
        """
        observed = torch.ones_like(z, dtype=torch.bool) if mask_id is None else z != mask_id
        log_emission = self.emission.log()
        terms = log_emission.T[torch.where(observed, z, 0)]  # (B, L, |P|)
        return self._chart(torch.where(observed.unsqueeze(-1), terms, 0.0))

    def _chart(self, terms: Tensor) -> object:
        """`SentCFG` over preterminal scores `(B, L, |P|)`."""
        from torch_struct import SentCFG

        batch = terms.shape[0]
        rules = self.rule.clamp_min(1e-300).log().expand(batch, -1, -1, -1).contiguous()
        roots = self.root.log().expand(batch, -1).contiguous()
        return _structured(SentCFG, (terms.contiguous(), rules, roots))

    def log_prob(self, x: Int[Tensor, "batch length"]) -> Float[Tensor, "batch"]:
        r"""Exact $\log p(x \mid L)$: the inside log-partition minus $\log Z_L$.

        Args:
            x: Token ids `(B, L)` in `0..V-1`, $L \ge 2$.

        Returns:
            $\log p(x \mid L)$ in nats, `(B,)`, float64.

        Raises:
            ValueError: If `x` holds ids outside the vocabulary or the grammar
                derives no string of its length.
        """
        _check_ids(x, self.vocab_size)
        log_z = self._check_length(x.shape[1])
        with torch.no_grad():
            return self.chart(x.cpu()).partition.detach() - log_z

    def conditionals(
        self, z: Int[Tensor, "batch length"], mask_id: int
    ) -> Float[Tensor, "batch length vocab"]:
        r"""$p(x_\ell = v \mid \text{unmasked tokens of } z)$ at the masked positions.

        $\sum_p \mu_\ell(p)\, E[p, v]$ with $\mu_\ell$ the preterminal posterior of
        the chart whose masked positions are summed out.

        Args:
            z: Noisy tokens `(B, L)`: data ids or `mask_id`.
            mask_id: The id that marks a masked position.

        Returns:
            Float64 probabilities `(B, L, V)`; exact at masked positions.
        """
        self._check_length(z.shape[1])
        preterminal = self.chart(z.cpu(), mask_id).marginals[0].detach()  # (B, L, |P|)
        scores = preterminal @ self.emission
        return scores / scores.sum(-1, keepdim=True)

    def conditionals_given(
        self, evidence: Float[Tensor, "batch length vocab"]
    ) -> Float[Tensor, "batch length vocab"]:
        r"""$p(x_\ell = v \mid e_{-\ell})$ given soft evidence $e_j(v) = q(z^j \mid x^j = v)$.

        The chart's preterminal scores are $\log \sum_v E[p, v]\, e_\ell(v)$; the
        posterior $\mu_\ell$ it gives includes position $\ell$'s own evidence,
        which is divided out: $\mu^{-\ell}_\ell(p) \propto \mu_\ell(p) / \sum_v E[p, v]\, e_\ell(v)$
        (exact when every evidence is positive, as for uniform noise at $t > 0$).

        Args:
            evidence: Positive likelihoods `(B, L, V)`, e.g. `process.likelihood(z_t, t)`.

        Returns:
            Float64 probabilities `(B, L, V)`.
        """
        self._check_length(evidence.shape[1])
        weight = evidence.double() @ self.emission.T  # (B, L, |P|)
        preterminal = self._chart(weight.log().contiguous()).marginals[0].detach()
        scores = (preterminal / weight) @ self.emission
        return scores / scores.sum(-1, keepdim=True)

    # -- summaries --------------------------------------------------------------------------

    def unigram(self, length: int) -> Float[Tensor, "vocab"]:
        r"""The pooled token distribution $\bar u$ over positions $1..L$ (exact).

        Args:
            length: $L$.

        Returns:
            $\bar u$ `(V,)`, float64.
        """
        masked = torch.full((1, length), self.vocab_size, dtype=torch.long)
        return self.conditionals(masked, self.vocab_size)[0].mean(0)

    def entropy(self, length: int, *, samples: int = 4096, seed: int = 0) -> EntropyEstimate:
        r"""$H(X \mid L) / L$ in nats per token, by Monte Carlo with exact log-probabilities.

        Args:
            length: $L$.
            samples: Number of exact draws.
            seed: Seed of the draws.

        Returns:
            An `EntropyEstimate` (a float with `.stderr`).
        """
        return monte_carlo_entropy(self, length, samples=samples, seed=seed)

    # -- sampling ---------------------------------------------------------------------------

    def _split_tables(self, length: int) -> tuple[Tensor, Tensor]:
        """CDFs of (split, left, right) per (span, nonterminal), and of the root."""
        if length not in self._tables:
            beta = self.inside(length)
            nt, s = self.nonterminals, self.symbols
            # w[k, A, m, B, C] = R[A, B, C] β_m(B) β_{k-m}(C), m = 1..L-1
            weights = torch.zeros(length + 1, nt, length - 1, s, s, dtype=torch.float64)
            for k in range(2, length + 1):
                left, right = beta[1:k], beta[1:k].flip(0)
                weights[k, :, : k - 1] = torch.einsum("abc,mb,mc->ambc", self.rule, left, right)
            splits = weights.flatten(2).cumsum(-1)
            root = (self.root * beta[length, :nt]).cumsum(-1)
            self._tables = {length: (splits, root)}  # keep one length: the tables are large
        return self._tables[length]

    def sample(
        self, n: int, length: int, *, generator: torch.Generator | None = None
    ) -> Int[Tensor, "n length"]:
        r"""Draw `n` strings of exactly `length` tokens from $p(x \mid L)$.

        Top-down: the start symbol with probability $\propto \rho(A)\,\beta_L(A)$,
        then every node's split and children as in the module docstring, all
        nodes of a depth at once; preterminals emit from $E$.

        Args:
            n: Number of strings.
            length: Tokens per string, $L \ge 2$ (and derivable).
            generator: Random generator for reproducible draws.

        Returns:
            Token ids `(n, length)`.

        Raises:
            ValueError: If the grammar derives no string of that length.
        """
        self._check_length(length)
        splits, root = self._split_tables(length)
        nt, s = self.nonterminals, self.symbols
        tokens = torch.empty(n, length, dtype=torch.long)
        # open nodes: (string, start, span, symbol)
        string = torch.arange(n)
        start = torch.zeros(n, dtype=torch.long)
        span = torch.full((n,), length, dtype=torch.long)
        symbol = _draw(root.expand(n, -1), generator)
        emission_cdf = self.emission.cumsum(-1)
        while len(string):
            leaf = span == 1
            if bool(leaf.any()):
                word = _draw(emission_cdf[symbol[leaf] - nt], generator)
                tokens[string[leaf], start[leaf]] = word
            inner = ~leaf
            string, start, span, symbol = string[inner], start[inner], span[inner], symbol[inner]
            if not len(string):
                break
            pick = torch.cat(
                [
                    _draw(splits[span[c], symbol[c]], generator)
                    for c in torch.arange(len(string)).split(_CHUNK)
                ]
            )
            split = pick // (s * s) + 1
            left, right = (pick % (s * s)) // s, pick % s
            string = torch.cat((string, string))
            start = torch.cat((start, start + split))
            span = torch.cat((split, span - split))
            symbol = torch.cat((left, right))
        return tokens


def _draw(cdf: Tensor, generator: torch.Generator | None) -> Tensor:
    """One index per row of unnormalised CDFs `(N, K)`, by inversion in float64."""
    u = torch.rand(cdf.shape[0], 1, generator=generator, dtype=torch.float64)
    index = torch.searchsorted(cdf.contiguous(), u * cdf[:, -1:], right=True).squeeze(-1)
    return index.clamp_max(cdf.shape[-1] - 1)
