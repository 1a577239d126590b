r"""Controllable generation: discrete classifier-free and classifier-based guidance.

Following Schiff et al. (2025), "Simple Guidance Mechanisms for Discrete
Diffusion Models". Guidance *wraps a denoiser*: it turns a conditional
denoiser (or an unconditional one and a classifier) plus a target label $c$
into a plain `Denoiser` $(z_t, t) \mapsto \log x^\gamma(z_t)$, so it runs
under every sampler strategy (MDLM, every ReMDM schedule, the confidence
decoders) unchanged, and composes (classifier guidance of a CFG-guided model).

**D-CFG** (discrete classifier-free guidance), with one network trained with
label dropout, is a geometric mixture renormalised over the vocabulary at
every position $\ell$:

$$
\log x^\gamma(z_t)^\ell_v = \gamma \log x_\theta(z_t \mid c)^\ell_v
 + (1 - \gamma) \log x_\theta(z_t \mid \varnothing)^\ell_v - \log Z^\ell .
$$

$\gamma = 1$ is the conditional model, $\gamma = 0$ the unconditional one,
$\gamma > 1$ sharpens towards the class. Only $\gamma = 1$ is a Bayes
posterior; other values tilt each position's marginal, not the joint.

**D-CBG** (discrete classifier-based guidance) reweights the candidates of an
unconditional $x_\theta$ with a classifier of noisy sequences
$p_\phi(c \mid z_t)$. Masks are drawn independently of $x$, so
$p(c \mid z_t)$ depends only on the revealed tokens, and Bayes' rule gives for
every masked position $\ell$

$$
p(x^\ell = v \mid z_t, c) \propto p(x^\ell = v \mid z_t)\,
p(c \mid z_t^{\ell \leftarrow v}),
$$

where $z_t^{\ell \leftarrow v}$ is $z_t$ with position $\ell$ set to $v$. The
guided denoiser is therefore

$$
\log x^\gamma(z_t)^\ell_v = \log x_\theta(z_t)^\ell_v
 + \gamma \log p_\phi(c \mid z_t^{\ell \leftarrow v}) - \log Z^\ell ,
$$

exact for $\gamma = 1$ with exact $x_\theta$ and $p_\phi$: sampling then draws
from $p(x \mid c)$ as $T$ grows. The exact tilt costs one classifier call per
masked position and candidate token ($L V$ per sequence per step, batched and
chunked); the first-order (Taylor) option uses one gradient instead,

$$
\log p_\phi(c \mid z_t^{\ell \leftarrow v}) \approx \log p_\phi(c \mid z_t)
 + \nabla_{z^\ell} \log p_\phi(c \mid z_t)^\top (e_v - e_{z_t^\ell}),
$$

with $z_t$ one-hot encoded over the $V + 1$ ids.

Unmasked positions are carried over exactly (one-hot, as SUBS makes them);
every guided output is a normalised log-probability `(B, L, V)`.

**FUDGE** (Yang & Klein 2021) guides an *autoregressive* model with a prefix
classifier $p_\phi(c \mid x_{\le i})$ (`PrefixClassifier`): at each token,
over the $k$ most likely candidates of the model,

$$
\log p^\gamma(x_i = v \mid x_{<i}, c) = \log p_\theta(v \mid x_{<i})
 + \gamma \log p_\phi(c \mid x_{<i}, v) - \log Z ,
$$

and $p(x \mid c) = \prod_i p(x_i \mid x_{<i}, c)$ with
$p(x_i \mid x_{<i}, c) \propto p(x_i \mid x_{<i})\, p(c \mid x_{\le i})$ by
Bayes' rule, so $\gamma = 1$ with exact models and all candidates samples
$p(x \mid c)$ exactly. The guided model is a `NextTokenModel` for
`discdiff.sampling.AutoregressiveSampler`; the digits study runs it beside
D-CFG (the ReMDM paper's Figure 4).

This module holds the guidance wrappers only. What they wrap lives with the
other denoisers: the label-conditioned model `ConditionalSUBS` in
`discdiff.models.subs`, and the exact conditional oracle and noisy classifier
of an enumerable $p(c, x)$ (`EnumerableConditionalOracle`,
`EnumerableClassifier`) in `discdiff.models.oracle`.

Example:
    >>> import discdiff as dd
    >>> joint = torch.rand(2, 3, 3, 3)  # p(c, x) over 2 classes and 3^3 sequences
    >>> oracle = dd.models.EnumerableConditionalOracle(joint)
    >>> guided = ClassifierFreeGuidance(2.0)(oracle, label=1)
    >>> sampler = dd.AncestralSampler(dd.MaskingProcess(vocab_size=3), dd.MaskingPosterior(), 8)
    >>> sampler.sample(guided, batch_size=4, length=3).tokens.shape
    torch.Size([4, 3])
"""

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from discdiff.models.protocol import (
    ConditionalDenoiser,
    Denoiser,
    NoisyClassifier,
    is_time_conditioned,
)
from discdiff.typing import Times, Tokens

__all__ = [
    "FUDGE",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "FUDGEModel",
    "Guidance",
    "GuidedDenoiser",
]


# -- guidance ----------------------------------------------------------------------


class GuidedDenoiser(ABC):
    """A `Denoiser` made by a `Guidance` from a denoiser and a target label."""

    def __init__(self, denoiser: object, label: int | Tensor, gamma: float) -> None:
        self.denoiser, self.label, self.gamma = denoiser, label, gamma
        self.time_conditioned = is_time_conditioned(denoiser)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(gamma={self.gamma}, label={self.label!r})"

    def _labels(self, batch: int, device: torch.device) -> Tensor:
        label = torch.as_tensor(self.label, dtype=torch.long, device=device)
        if label.dim() == 1 and label.shape[0] != batch:
            raise ValueError(
                f"`label` holds {label.shape[0]} labels but the batch has {batch} sequences"
            )
        return label.expand(batch)

    @abstractmethod
    def __call__(self, z_t: Tokens, t: Times) -> Float[Tensor, "batch length vocab"]:
        r"""Guided, normalised $\log x^\gamma(z_t)$, `(B, L, V)` in float32."""


class Guidance(ABC):
    r"""Base class: a guidance strength $\gamma \ge 0$ and a way to wrap denoisers.

    Args:
        gamma: Guidance strength $\gamma$, finite and non-negative.

    Raises:
        ValueError: If `gamma` is negative, infinite or NaN.
    """

    def __init__(self, gamma: float) -> None:
        gamma = float(gamma)
        if not math.isfinite(gamma) or gamma < 0:
            raise ValueError(f"`gamma` must be a finite number >= 0; got {gamma}")
        self.gamma = gamma

    def __repr__(self) -> str:
        return f"{type(self).__name__}(gamma={self.gamma})"

    @abstractmethod
    def __call__(self, denoiser: object, label: int | Tensor) -> GuidedDenoiser:
        """A `Denoiser` guided towards `label` (an integer, or `(B,)` per sequence)."""


def _geometric_mix(log_c: Tensor, log_u: Tensor, gamma: float) -> Tensor:
    r"""$\gamma \log p_c + (1 - \gamma) \log p_u$, with $-\infty$ wherever either is $-\infty$."""
    mix = gamma * log_c + (1.0 - gamma) * log_u
    return torch.where(torch.isneginf(log_c) | torch.isneginf(log_u), -torch.inf, mix)


def _normalise(log_weights: Tensor, fallback: Tensor) -> Tensor:
    """Log-softmax over the vocabulary; rows with no mass (all -inf) fall back."""
    out = log_weights.log_softmax(-1)
    empty = torch.isnan(out).any(-1, keepdim=True)
    return torch.where(empty, fallback, out)


class ClassifierFreeGuidance(Guidance):
    r"""Discrete classifier-free guidance (D-CFG).

    $$
    \log x^\gamma(z_t)^\ell = \operatorname{log\,softmax}_v\big(
    \gamma \log x_\theta(z_t \mid c)^\ell + (1 - \gamma)\log x_\theta(z_t \mid \varnothing)^\ell
    \big).
    $$

    One batched forward pass of `2B` sequences (the labels, then the null
    label) per call; $\gamma = 1$ and $\gamma = 0$ call the network once, with
    the label or the null label, and return exactly the conditional or the
    unconditional model. A token that either model gives probability zero
    keeps probability zero (the convention $0^0 = 1$ is used only at
    $\gamma \in \{0, 1\}$).

    Args:
        gamma: Guidance strength $\gamma \ge 0$.

    Example:
        >>> from discdiff.models.oracle import EnumerableConditionalOracle
        >>> joint = torch.rand(2, 3, 3)
        >>> oracle = EnumerableConditionalOracle(joint)
        >>> guided = ClassifierFreeGuidance(1.0)(oracle, label=0)
        >>> z, t = torch.tensor([[3, 1]]), torch.ones(1)
        >>> torch.equal(guided(z, t), oracle(z, t, torch.tensor([0])).log_softmax(-1))
        True
    """

    def __call__(self, denoiser: ConditionalDenoiser, label: int | Tensor) -> "_CFGDenoiser":
        """Guide `denoiser` (with `num_classes`, null label `num_classes`) towards `label`.

        Raises:
            ValueError: If `denoiser` has no `num_classes`, or `label` lies
                outside `0..num_classes - 1`.
        """
        classes = getattr(denoiser, "num_classes", None)
        if not isinstance(classes, int) or classes < 1:
            raise ValueError(
                "`denoiser` must be a ConditionalDenoiser with an integer `num_classes` >= 1"
            )
        _check_label(label, classes)
        return _CFGDenoiser(denoiser, label, self.gamma)


class _CFGDenoiser(GuidedDenoiser):
    def __call__(self, z_t: Tokens, t: Times) -> Float[Tensor, "batch length vocab"]:
        batch = z_t.shape[0]
        label = self._labels(batch, z_t.device)
        null = torch.full_like(label, self.denoiser.num_classes)
        if self.gamma == 1.0:
            return self.denoiser(z_t, t, label).float().log_softmax(-1)
        if self.gamma == 0.0:
            return self.denoiser(z_t, t, null).float().log_softmax(-1)
        both = self.denoiser(
            torch.cat((z_t, z_t)), torch.cat((t, t)), torch.cat((label, null))
        ).float()
        log_c, log_u = both.log_softmax(-1).split(batch)
        return _normalise(_geometric_mix(log_c, log_u, self.gamma), log_c)


class ClassifierGuidance(Guidance):
    r"""Discrete classifier-based guidance (D-CBG) with a noisy-sequence classifier.

    At every masked position $\ell$ and candidate token $v$,

    $$
    \log x^\gamma(z_t)^\ell_v = \operatorname{log\,softmax}_v\big(
    \log x_\theta(z_t)^\ell_v + \gamma \log p_\phi(c \mid z_t^{\ell \leftarrow v})\big);
    $$

    unmasked positions keep $x_\theta$'s carried-over one-hot. With
    `first_order=True` the tilt is its Taylor expansion around the one-hot
    $z_t$: $\gamma\,\nabla_{z^\ell} \log p_\phi(c \mid z_t)^\top (e_v - e_{z_t^\ell})$
    (one forward and one backward pass of the classifier instead of $L V$
    forward passes). $\gamma = 0$ returns $x_\theta$ without calling the
    classifier. Positions whose every candidate the classifier rules out
    (all $-\infty$) keep the unguided $x_\theta$.

    Args:
        classifier: A `NoisyClassifier` `(z_t, t) -> (B, C)` logits; for
            `first_order` it must accept a float one-hot `(B, L, V + 1)`.
        gamma: Guidance strength $\gamma \ge 0$.
        first_order: Use the first-order (Taylor) approximation.
        mask_id: The mask id; defaults to $V$ (the width of $x_\theta$).
        chunk_size: Candidate sequences per classifier call (exact tilt).

    Raises:
        ValueError: On a negative or non-finite `gamma` or a `chunk_size` < 1.
    """

    def __init__(
        self,
        classifier: NoisyClassifier,
        gamma: float,
        *,
        first_order: bool = False,
        mask_id: int | None = None,
        chunk_size: int = 8192,
    ) -> None:
        super().__init__(gamma)
        if chunk_size < 1:
            raise ValueError(f"`chunk_size` must be at least 1; got {chunk_size}")
        self.classifier, self.first_order = classifier, first_order
        self.mask_id, self.chunk_size = mask_id, chunk_size

    def __repr__(self) -> str:
        return f"ClassifierGuidance(gamma={self.gamma}, first_order={self.first_order})"

    def __call__(self, denoiser: Denoiser, label: int | Tensor) -> "_CBGDenoiser":
        """Guide the (unconditional) `denoiser` towards class `label`.

        Raises:
            ValueError: If `label` lies outside the classifier's classes (when
                it says how many it has, `num_classes`).
        """
        classes = getattr(self.classifier, "num_classes", None)
        _check_label(label, classes)
        return _CBGDenoiser(denoiser, label, self)


class _CBGDenoiser(GuidedDenoiser):
    def __init__(self, denoiser: Denoiser, label: int | Tensor, guidance: ClassifierGuidance):
        super().__init__(denoiser, label, guidance.gamma)
        self.guidance = guidance
        self.time_conditioned = self.time_conditioned or is_time_conditioned(guidance.classifier)

    def __call__(self, z_t: Tokens, t: Times) -> Float[Tensor, "batch length vocab"]:
        log_x = self.denoiser(z_t, t).float().log_softmax(-1)
        if self.gamma == 0.0:
            return log_x
        vocab = log_x.shape[-1]
        mask_id = vocab if self.guidance.mask_id is None else self.guidance.mask_id
        masked = z_t == mask_id
        label = self._labels(z_t.shape[0], z_t.device)
        if self.guidance.first_order:
            tilt = self._taylor_tilt(z_t, t, label, vocab, mask_id)
        else:
            tilt = self._exact_tilt(z_t, t, label, masked, vocab)
        guided = _normalise(log_x + self.gamma * tilt, log_x)
        return torch.where(masked.unsqueeze(-1), guided, log_x)

    def _log_p(self, z: Tensor, t: Tensor, label: Tensor) -> Tensor:
        logits = self.guidance.classifier(z, t).float()
        return logits.log_softmax(-1).gather(-1, label.unsqueeze(-1)).squeeze(-1)

    def _exact_tilt(
        self, z_t: Tensor, t: Tensor, label: Tensor, masked: Tensor, vocab: int
    ) -> Tensor:
        r"""$\log p_\phi(c \mid z_t^{\ell \leftarrow v})$ at masked positions, 0 elsewhere."""
        tilt = torch.zeros(*z_t.shape, vocab, device=z_t.device)
        rows, positions = masked.nonzero(as_tuple=True)
        if rows.numel() == 0:
            return tilt
        n = rows.numel()
        candidates = z_t[rows].unsqueeze(1).repeat(1, vocab, 1)  # (N, V, L)
        tokens = torch.arange(vocab, device=z_t.device).expand(n, vocab)
        index = positions.view(n, 1, 1).expand(n, vocab, 1)
        candidates.scatter_(-1, index, tokens.unsqueeze(-1))
        candidates = candidates.reshape(n * vocab, -1)
        times = t[rows].repeat_interleave(vocab)
        labels = label[rows].repeat_interleave(vocab)
        inverse = None
        base = int(max(int(candidates.max()), int(labels.max()))) + 1
        width = candidates.shape[-1] + 1
        if not is_time_conditioned(self.guidance.classifier) and width * math.log2(base) < 62:
            # Score each distinct (sequence, label) once (early in sampling most
            # coincide), keyed by the row read as an integer in base `base`.
            powers = base ** torch.arange(width - 1, -1, -1, device=z_t.device)
            keys = torch.cat((candidates, labels.unsqueeze(-1)), dim=-1) @ powers
            _, first, inverse = _unique_rows(keys)
            candidates, labels = candidates[first], labels[first]
            times = times[first]  # unused by a classifier that ignores t
        size = self.guidance.chunk_size
        log_p = torch.cat(
            [
                self._log_p(candidates[i : i + size], times[i : i + size], labels[i : i + size])
                for i in range(0, len(candidates), size)
            ]
        )
        if inverse is not None:
            log_p = log_p[inverse]
        tilt[rows, positions] = log_p.view(n, vocab)
        return tilt

    def _taylor_tilt(
        self, z_t: Tensor, t: Tensor, label: Tensor, vocab: int, mask_id: int
    ) -> Tensor:
        r"""$\nabla_{z^\ell} \log p_\phi(c \mid z_t)^\top (e_v - e_{z_t^\ell})$, `(B, L, V)`."""
        width = max(vocab, mask_id) + 1
        with torch.enable_grad():
            one_hot = F.one_hot(z_t, width).float().requires_grad_(True)
            (grad,) = torch.autograd.grad(self._log_p(one_hot, t, label).sum(), one_hot)
        current = grad.gather(-1, z_t.unsqueeze(-1))
        return (grad[..., :vocab] - current).detach()


def _unique_rows(keys: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Distinct `keys`, the index of one occurrence of each, and the inverse map."""
    unique, inverse = torch.unique(keys, return_inverse=True)
    first = torch.empty(len(unique), dtype=torch.long, device=keys.device)
    first.scatter_(0, inverse, torch.arange(len(keys), device=keys.device))
    return unique, first, inverse


def _check_label(label: int | Tensor, classes: int | None) -> None:
    """Labels must be integers in `0..classes - 1` (when `classes` is known)."""
    values = label if isinstance(label, Tensor) else None
    if values is None:
        if isinstance(label, bool) or not isinstance(label, int):
            raise ValueError(f"`label` must be an integer or a (B,) tensor; got {label!r}")
        values = torch.tensor(label)
    if values.is_floating_point() or values.dim() > 1:
        raise ValueError(
            f"`label` must be an integer or a (B,) integer tensor; got {values.dtype} "
            f"of shape {tuple(values.shape)}"
        )
    if classes is not None and bool(((values < 0) | (values >= classes)).any()):
        raise ValueError(
            f"`label` must lie in 0..{classes - 1} (the target class, not the null label "
            f"{classes}); got {values.flatten()[:5].tolist()}"
        )


class FUDGE(Guidance):
    r"""FUDGE: reweight an autoregressive model's next tokens by a prefix classifier.

    Args:
        gamma: Guidance strength $\gamma \ge 0$ ($0$: the unguided model).
        top_k: Candidates rescored per token (`None`: the whole vocabulary;
            FUDGE's paper uses the top 100 of a large one).
        chunk: Candidate sequences per classifier call.

    Example:
        >>> from discdiff.models.causal import CausalConfig, CausalTransformer, PrefixClassifier
        >>> config = CausalConfig(vocab_size=5, model_length=6, hidden_dim=16)
        >>> guided = FUDGE(2.0)(CausalTransformer(config), PrefixClassifier(config, 3), label=1)
        >>> guided.next_logits(torch.zeros(4, 2, dtype=torch.long)).shape
        torch.Size([4, 5])
    """

    def __init__(self, gamma: float, *, top_k: int | None = None, chunk: int = 8192) -> None:
        super().__init__(gamma)
        if top_k is not None and top_k < 1:
            raise ValueError(f"`top_k` must be at least 1; got {top_k}")
        if chunk < 1:
            raise ValueError(f"`chunk` must be at least 1; got {chunk}")
        self.top_k, self.chunk = top_k, chunk

    def __call__(  # type: ignore[override]
        self, model: object, classifier: object, label: int | Tensor
    ) -> "FUDGEModel":
        """The guided next-token model for `label` (an integer, or `(B,)` per sequence)."""
        _check_label(label, getattr(classifier, "num_classes", None))
        return FUDGEModel(model, classifier, label, self)


class FUDGEModel:
    """A causal model guided by FUDGE: a `NextTokenModel` (see `FUDGE`)."""

    def __init__(self, model: object, classifier: object, label: int | Tensor, fudge: FUDGE):
        self.model, self.classifier, self.label, self.fudge = model, classifier, label, fudge

    def __repr__(self) -> str:
        return (
            f"FUDGEModel(gamma={self.fudge.gamma}, top_k={self.fudge.top_k}, label={self.label!r})"
        )

    def next_logits(self, prefix: Tensor) -> Float[Tensor, "batch vocab"]:
        r"""Guided, normalised $\log p^\gamma(x_{i+1} \mid x_{\le i}, c)$, `(B, V)`."""
        base = self.model.next_logits(prefix).float().log_softmax(-1)
        if self.fudge.gamma == 0.0:
            return base
        batch, vocab = base.shape
        k = vocab if self.fudge.top_k is None else min(self.fudge.top_k, vocab)
        candidates = base.topk(k, dim=-1).indices  # (B, k)
        extended = torch.cat(
            (prefix.repeat_interleave(k, dim=0), candidates.reshape(-1, 1)), dim=1
        )  # (B k, i + 1)
        label = torch.as_tensor(self.label, dtype=torch.long, device=prefix.device)
        if label.dim() == 1 and label.shape[0] != batch:
            raise ValueError(
                f"`label` holds {label.shape[0]} labels but the batch has {batch} sequences"
            )
        label = label.expand(batch).repeat_interleave(k)
        log_c = torch.cat(
            [
                self.classifier(extended[i : i + self.fudge.chunk])[:, -1]
                .float()
                .log_softmax(-1)
                .gather(-1, label[i : i + self.fudge.chunk, None])
                for i in range(0, len(extended), self.fudge.chunk)
            ]
        ).reshape(batch, k)
        tilted = base.gather(-1, candidates) + self.fudge.gamma * log_c
        out = torch.full_like(base, -torch.inf).scatter(-1, candidates, tilted)
        return _normalise(out, base)
