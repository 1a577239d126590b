"""Exact languages: HMMs and a PCFG against brute-force enumeration and torch-struct.

Sampler checks use Pearson's chi-squared over the cells with an expected count
of at least 5 and accept below df + 6·sqrt(2·df) (a 6-sigma normal
approximation: false-failure rate below 1e-8 per check). Each has a control
that the same check must reject: samples from another language's seed.
"""

import itertools
import math

import pytest
import torch

from discdiff.data import HMMLanguage, PCFGLanguage, SyntheticLanguage


def all_strings(vocab, length):
    return torch.tensor(list(itertools.product(range(vocab), repeat=length)))


def chi_squared_ok(language, samples, probs, vocab):
    """Pearson's statistic of `samples` against `probs` over all strings, and the bound."""
    powers = vocab ** torch.arange(samples.shape[1] - 1, -1, -1)
    counts = torch.bincount((samples * powers).sum(-1), minlength=len(probs)).double()
    expected = probs * len(samples)
    cells = expected >= 5
    statistic = float(((counts - expected)[cells] ** 2 / expected[cells]).sum())
    df = int(cells.sum()) - 1
    return statistic < df + 6 * math.sqrt(2 * df), statistic


# -- the PCFG ----------------------------------------------------------------------------


def test_pcfg_probabilities_of_all_strings_sum_to_one():
    language = PCFGLanguage(vocab_size=4, seed=0)
    strings = all_strings(4, 4)
    total = float(language.log_prob(strings).exp().sum())
    assert total == pytest.approx(1.0, abs=1e-4)
    # control: the inside scores alone (not conditioned on the length) do not
    unconditioned = language.chart(strings).partition.detach().exp().sum()
    assert abs(float(unconditioned) - 1.0) > 1e-2


def test_pcfg_samples_follow_its_log_prob():
    language = PCFGLanguage(vocab_size=4, seed=0)
    probs = language.log_prob(all_strings(4, 4)).exp()
    draws = language.sample(20_000, 4, generator=torch.Generator().manual_seed(0))
    ok, statistic = chi_squared_ok(language, draws, probs, 4)
    assert ok, statistic
    other = PCFGLanguage(vocab_size=4, seed=1).sample(
        20_000, 4, generator=torch.Generator().manual_seed(0)
    )
    assert not chi_squared_ok(language, other, probs, 4)[0]  # control


def test_pcfg_normaliser_matches_torch_struct_and_lengths_are_checked():
    language = PCFGLanguage(vocab_size=5, nonterminals=3, preterminals=3, rules=4, seed=2)
    for length in (2, 3, 6):
        masked = torch.full((1, length), 5)
        inside = float(language.chart(masked, mask_id=5).partition.detach())
        assert language.log_normaliser(length) == pytest.approx(inside, abs=1e-10)
    with pytest.raises(ValueError, match="length"):
        language.log_prob(torch.zeros(1, 1, dtype=torch.long))  # CNF: no 1-token strings


def test_pcfg_denoiser_and_unigram_are_exact():
    language = PCFGLanguage(vocab_size=3, nonterminals=3, preterminals=3, rules=5, seed=4)
    strings = all_strings(3, 4)
    probs = language.log_prob(strings).exp()
    z = torch.tensor([[0, 3, 2, 3]])
    keep = (strings[:, 0] == 0) & (strings[:, 2] == 2)
    for position in (1, 3):
        brute = torch.zeros(3, dtype=torch.float64).index_add_(
            0, strings[keep, position], probs[keep]
        )
        exact = language.conditionals(z, 3)[0, position]
        torch.testing.assert_close(exact, brute / brute.sum())
    unigram = sum(
        torch.zeros(3, dtype=torch.float64).index_add_(0, strings[:, p], probs) for p in range(4)
    )
    torch.testing.assert_close(language.unigram(4), unigram / 4)


# -- HMMs --------------------------------------------------------------------------------

TINY_HMMS = [
    HMMLanguage(vocab_size=3, states=3, support=2, successors=2, seed=0),
    SyntheticLanguage(vocab_size=3, states=3, support=2, seed=1),
]


@pytest.mark.parametrize("language", TINY_HMMS, ids=["hmm", "unifilar"])
def test_hmm_log_prob_is_normalised_and_matches_torch_struct(language):
    strings = all_strings(3, 5)
    log_prob = language.log_prob(strings)
    assert float(log_prob.exp().sum()) == pytest.approx(1.0, abs=1e-10)
    partition = language.chain(strings).partition.detach()
    torch.testing.assert_close(partition, log_prob)


@pytest.mark.parametrize("language", TINY_HMMS, ids=["hmm", "unifilar"])
def test_hmm_denoiser_is_the_exact_conditional(language):
    strings = all_strings(3, 5)
    probs = language.log_prob(strings).exp()
    z = torch.tensor([[2, 3, 3, 0, 3]])
    keep = (strings[:, 0] == 2) & (strings[:, 3] == 0)
    exact = language.conditionals(z, 3)[0]
    for position in (1, 2, 4):
        brute = torch.zeros(3, dtype=torch.float64).index_add_(
            0, strings[keep, position], probs[keep]
        )
        torch.testing.assert_close(exact[position], brute / brute.sum())
    # torch-struct's edge marginals μ_ℓ(s, s') give the same denoiser:
    # p(x_ℓ = v | ·) = Σ μ_ℓ(s, s') J[s, v, s'] / T[s, s'] at a masked ℓ
    marginals = language.chain(z, mask_id=3).marginals.detach()[0]  # (L, K', K)
    move = language.joint / language.transition.unsqueeze(1).clamp_min(1e-300)
    from_struct = torch.einsum("lts,svt->lv", marginals, move)
    torch.testing.assert_close(from_struct[[1, 2, 4]], exact[[1, 2, 4]])


@pytest.mark.parametrize("language", TINY_HMMS, ids=["hmm", "unifilar"])
def test_hmm_samples_follow_its_log_prob_and_entropy_is_right(language):
    strings = all_strings(3, 5)
    probs = language.log_prob(strings).exp()
    draws = language.sample(20_000, 5, generator=torch.Generator().manual_seed(0))
    ok, statistic = chi_squared_ok(language, draws, probs, 3)
    assert ok, statistic
    other = type(language)(vocab_size=3, states=3, support=2, seed=7)
    assert not chi_squared_ok(language, other.sample(20_000, 5), probs, 3)[0]  # control
    exact = float(-(probs * probs.log()).sum() / 5)
    estimate = language.entropy(5)
    assert abs(estimate - exact) <= max(6 * estimate.stderr, 1e-12)
    assert estimate.exact == language.unifilar


def test_the_built_in_language_is_unchanged():
    """The figures the hand-written forward algorithm gave before this module replaced it."""
    language = SyntheticLanguage()
    assert language.unifilar
    assert language.entropy(64) == pytest.approx(1.6612641314276195, abs=1e-12)
    assert language.unigram_cross_entropy(64) == pytest.approx(3.1802521085524846, abs=1e-12)
    x = language.sample(256, 64, generator=torch.Generator().manual_seed(3))
    monte_carlo = -float(language.log_prob(x).mean()) / 64
    assert monte_carlo == pytest.approx(1.6612641314276195, abs=0.05)


def test_languages_are_values_that_run_configs_name():
    from discdiff.config import ConfigError, RunConfig
    from discdiff.runs import RunData

    config = RunConfig.from_dict({"data": {"language": {"name": "hmm", "states": 5}, "length": 8}})
    assert config.data.language == HMMLanguage(states=5)
    assert config.data.language != HMMLanguage(states=5, seed=1)
    assert RunConfig.from_dict(config.to_dict()).data == config.data  # the config form round trips
    data = RunData.from_config(config)
    assert data.source.language == HMMLanguage(states=5)
    assert set(data.metrics(data.validation[:4])) >= {"exact_nll", "nll_gap"}
    with pytest.raises(ConfigError, match=r"data\.language\.name: unknown 'pcgf'"):
        RunConfig.from_dict({"data": {"language": "pcgf"}})
