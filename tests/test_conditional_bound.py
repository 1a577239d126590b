"""The conditional bound: prompts kept clean and out of the sum, against exact conditionals.

Statistical tests use fixed seeds and a 3-standard-error band (about 0.3 % false
failures per comparison for a normal mean); each draw is paired with its own
exact value, so the band is that of the bound's Monte-Carlo noise alone.
"""

import pytest
import torch
from jaxtyping import TypeCheckError
from training_setup import make_trainer

import discdiff as dd
from discdiff.data import HMMLanguage, Prompted, PromptedSource
from discdiff.models.score import DenoiserScores
from discdiff.objectives import discrete_nelbo, held_out_bound, nelbo

F64 = torch.float64


@pytest.fixture(scope="module")
def tiny():
    """A random joint over 3^4 sequences and its exact conditional denoiser."""
    generator = torch.Generator().manual_seed(0)
    joint = torch.rand(3, 3, 3, 3, generator=generator, dtype=F64) ** 2
    joint = joint / joint.sum()
    return joint, dd.EnumerableOracle(joint)


def exact_conditional(joint, index, prompt):
    """-log p(response | prompt) of sequence `index` by summing the joint."""
    x = dd.EnumerableOracle(joint).sequences[index]
    probs = joint.flatten()
    sequences = dd.EnumerableOracle(joint).sequences
    agree = (sequences[:, prompt] == x[prompt]).all(-1)
    return -(probs[index].log() - probs[agree].sum().log())


def within(draws, target, bands=3.0):
    draws = draws.double()
    mean, se = draws.mean(), draws.std() / draws.numel() ** 0.5
    return abs(float(mean - target)) < bands * float(se), (float(mean), float(target), float(se))


@pytest.mark.parametrize(
    "prompt", [[0, 1], [0], [1, 3], [0, 1, 2]], ids=lambda p: "prompt" + "".join(map(str, p))
)
def test_conditional_nelbo_of_the_exact_denoiser_is_the_conditional_nll(tiny, prompt):
    """E[NELBO(r | c)] = -log p(r | c) for prefix and scattered prompts, 4000 draws each."""
    joint, oracle = tiny
    process = dd.MaskingProcess(schedule=dd.Cosine(eps=0.0), vocab_size=3)
    generator = torch.Generator().manual_seed(1)
    prompt_mask = torch.zeros(4, dtype=torch.bool)
    prompt_mask[prompt] = True
    for index in (0, 40, 77):
        x = oracle.sequences[index].expand(4000, 4)
        draws = nelbo(
            process, oracle, x, prompt_mask=prompt_mask.expand(4000, 4), generator=generator
        )
        ok, figures = within(draws, exact_conditional(joint, index, prompt))
        assert ok, (index, figures)


def test_noising_the_prompt_changes_the_value(tiny):
    """Scoring the response alone but noising the prompt too (a common SFT bug) is biased:
    it is not -log p(r | c), and far outside the band the correct bound falls in."""
    joint, oracle = tiny
    process = dd.MaskingProcess(vocab_size=3)
    index, prompt = 77, [0, 1]
    prompt_mask = torch.tensor([True, True, False, False]).expand(4000, 4)
    x = oracle.sequences[index].expand(4000, 4)
    target = exact_conditional(joint, index, prompt)
    t = dd.objectives.antithetic_times(4000, generator=torch.Generator().manual_seed(2))
    z_t = process.sample(x, t, generator=torch.Generator().manual_seed(3))
    assert bool(process.is_masked(z_t)[:, :2].any())  # the draw does noise the prompt
    right = nelbo(process, oracle, x, prompt_mask=prompt_mask, t=t, z_t=z_t)
    ok, figures = within(right, target)
    assert ok, figures

    def ignores_padding(z, time, padding_mask=None):
        return oracle(z, time)

    noised = nelbo(process, ignores_padding, x, padding_mask=~prompt_mask, t=t, z_t=z_t)
    assert not within(noised, target, bands=10.0)[0], within(noised, target)[1]
    # the given z_t's prompt is put back: the same as handing over a clean-prompt z_t
    clean = torch.where(prompt_mask, x, z_t)
    again = nelbo(process, oracle, x, prompt_mask=prompt_mask, t=t, z_t=clean)
    torch.testing.assert_close(right, again)


def test_conditional_score_entropy_of_exact_scores_is_the_conditional_nll(tiny):
    joint, oracle = tiny
    process = dd.MaskingProcess(vocab_size=3)
    scores = DenoiserScores(oracle, process)
    prompt_mask = torch.tensor([True, False, True, False]).expand(4000, 4)
    x = oracle.sequences[40].expand(4000, 4)
    draws = dd.baseline_objectives.score_entropy(
        process, scores, x, prompt_mask=prompt_mask, generator=torch.Generator().manual_seed(4)
    )
    ok, figures = within(draws, exact_conditional(joint, 40, [0, 2]))
    assert ok, figures


def test_conditional_discrete_nelbo_approaches_the_conditional_nll(tiny):
    """The T-step bound is above the continuous one and close to it at T = 64."""
    joint, oracle = tiny
    process = dd.MaskingProcess(schedule=dd.LogLinear(eps=0.0), vocab_size=3)
    prompt_mask = torch.tensor([True, True, False, False]).expand(4000, 4)
    x = oracle.sequences[77].expand(4000, 4)
    value = discrete_nelbo(
        process,
        dd.MaskingPosterior(),
        oracle,
        x,
        steps=64,
        prompt_mask=prompt_mask,
        generator=torch.Generator().manual_seed(6),
    ).double()
    target = exact_conditional(joint, 77, [0, 1])
    assert abs(value.mean() - target) < 3 * value.std() / 4000**0.5 + 0.02


@pytest.fixture(scope="module")
def hmm():
    return HMMLanguage(vocab_size=8, states=4, support=3, successors=2, seed=3)


def hmm_conditional(language, x, prompt_mask, mask_id):
    """-log p(response | prompt) from torch-struct's log-partitions: log p(x) - log p(prompt)."""
    joint = language.chain(x).partition
    prompt_only = language.chain(torch.where(prompt_mask, x, mask_id), mask_id).partition
    return -(joint - prompt_only).detach().double()


def test_hmm_conditional_nelbo_matches_the_exact_conditional(hmm):
    """Sequences of the HMM with prompts of 2..6 tokens: E[NELBO - (-log p(r | c))] = 0."""
    n, length = 3000, 10
    generator = torch.Generator().manual_seed(5)
    x = hmm.sample(n, length, generator=generator)
    prompt_length = torch.randint(2, 7, (n, 1), generator=generator)
    prompt_mask = torch.arange(length) < prompt_length
    process = dd.MaskingProcess(vocab_size=8)
    denoiser = hmm.denoiser(process.mask_id)
    draws = nelbo(process, denoiser, x, prompt_mask=prompt_mask, generator=generator).double()
    exact = hmm_conditional(hmm, x, prompt_mask, process.mask_id)
    ok, figures = within(draws - exact, 0.0)
    assert ok, figures
    # and the forward algorithm gives the same exact values as torch-struct
    forward = -(hmm.log_prob(x) - hmm.chain(torch.where(prompt_mask, x, 8), 8).partition)
    torch.testing.assert_close(forward.double(), exact, rtol=1e-6, atol=1e-6)


def test_held_out_bound_counts_response_tokens_only(hmm):
    n, length = 512, 10
    generator = torch.Generator().manual_seed(7)
    x = hmm.sample(n, length, generator=generator)
    prompt_mask = (torch.arange(length) < 4).expand(n, length)
    padding_mask = (torch.arange(length) < 9).expand(n, length)
    process = dd.MaskingProcess(vocab_size=8)
    denoiser = hmm.denoiser(process.mask_id)

    def exact_denoiser(z, t, padding_mask=None):  # the language's, on the 9 real positions
        real = denoiser(z[:, :9], t)
        return torch.cat((real, real.new_zeros(z.shape[0], 1, 8)), 1)

    bound = held_out_bound(
        process, exact_denoiser, x, prompt_mask=prompt_mask, padding_mask=padding_mask
    )
    assert bound.tokens == n * 5
    # the bound of the exact denoiser is the conditional entropy of positions 5..9 given 1..4
    exact = hmm_conditional(hmm, x[:, :9], prompt_mask[:, :9], 8)
    se = float(exact.std()) / n**0.5
    assert abs(bound.nats - float(exact.sum())) / bound.tokens < 3 * se + 0.1


def test_scoring_pads_changes_the_conditional_value():
    """With a DiT that attends to real tokens, the padded conditional bound equals the
    unpadded one; scoring the pads (no padding_mask) gives another value."""
    V, L, PADDED = 12, 10, 14
    process = dd.MaskingProcess(vocab_size=V)
    torch.manual_seed(0)
    backbone = dd.DiT(dd.DiTConfig.micro(vocab_size=V + 1, model_length=PADDED, dropout=0.0))
    with torch.no_grad():
        backbone.output_layer.linear.weight.normal_(0, 0.5)
    denoiser = dd.SUBS(backbone, process).eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(V, (4, L), generator=generator)
    t = torch.tensor([0.3, 0.5, 0.7, 0.95])
    z_t = process.sample(x, t, generator=generator)
    prompt = (torch.arange(L) < 3).expand(4, L)
    eos = torch.full((4, PADDED - L), 2)
    x_pad = torch.cat((x, eos), 1)
    z_pad = torch.cat((z_t, process.sample(eos, t, generator=generator)), 1)
    prompt_pad = torch.cat((prompt, torch.zeros(4, PADDED - L, dtype=torch.bool)), 1)
    real = (torch.arange(PADDED) < L).expand(4, PADDED)
    with torch.no_grad():
        plain = nelbo(process, denoiser, x, prompt_mask=prompt, t=t, z_t=z_t)
        padded = nelbo(
            process, denoiser, x_pad, prompt_mask=prompt_pad, padding_mask=real, t=t, z_t=z_pad
        )
        scored = nelbo(process, denoiser, x_pad, prompt_mask=prompt_pad, t=t, z_t=z_pad)
        unconditional = nelbo(process, denoiser, x, t=t, z_t=z_t)
    torch.testing.assert_close(padded, plain, rtol=1e-5, atol=1e-5)
    assert (scored - plain).abs().max() > 1e-2
    assert (unconditional - plain).abs().max() > 1e-2


def test_a_mismatched_prompt_mask_is_rejected():
    process = dd.MaskingProcess(vocab_size=3)
    flat = lambda z, t: torch.zeros(*z.shape, 3)  # noqa: E731
    x = torch.zeros(2, 4, dtype=torch.long)
    # jaxtyping's check (on in the tests) or, without it, the function's own
    with pytest.raises((ValueError, TypeCheckError), match="prompt_mask"):
        nelbo(process, flat, x, prompt_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="prompt_mask"):
        dd.objectives._check_padding(x, torch.ones(2, 5).bool(), name="prompt_mask")
    with pytest.raises((ValueError, TypeCheckError), match="prompt_mask"):
        nelbo(process, flat, x, prompt_mask=torch.ones(2, 5, dtype=torch.bool))


def prompted_trainer(normalise):
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(12, (24, 16), generator=generator)
    prompt_length = torch.randint(1, 6, (24, 1), generator=generator)
    real_length = torch.randint(9, 17, (24, 1), generator=generator)
    prompt_mask = torch.arange(16) < prompt_length
    padding_mask = torch.arange(16) < real_length
    source = PromptedSource(rows, padding_mask, prompt_mask, vocab_size=12)
    return make_trainer(source=source, dropout=0.0, normalise=normalise), source


@pytest.mark.parametrize("normalise", ["token", "sequence"])
def test_trainer_normalises_the_conditional_bound_as_configured(normalise):
    """'token': Σ losses / Σ response tokens of the batch; 'sequence' (LLaDA): the mean
    over sequences of loss / response length."""
    trainer, source = prompted_trainer(normalise)
    batch = source.batch(0, trainer.config.batch_size)
    assert isinstance(batch, Prompted)
    tokens, padding_mask, prompt_mask = batch
    noise = trainer.objective.noise(trainer.process, tokens, trainer._step_generator(0))
    with torch.no_grad():
        losses = trainer.objective.loss(
            trainer.process,
            trainer.model,
            tokens,
            *noise,
            padding_mask=padding_mask,
            prompt_mask=prompt_mask,
        )
    counts = (padding_mask & ~prompt_mask).sum(-1)
    if normalise == "token":
        expected = float(losses.sum() / counts.sum())
    else:
        expected = float((losses / counts).mean())
    assert trainer.train_step() == pytest.approx(expected, rel=1e-5)

    trainer.validation = Prompted(
        source.padded.rows.blocks, source.padded.padding_mask, source.prompt_mask
    )
    bound = trainer.evaluate()
    rows = slice(trainer.config.eval_sequences)
    assert bound.tokens == int((source.padded.padding_mask & ~source.prompt_mask)[rows].sum())


def test_normalise_is_checked():
    with pytest.raises(ValueError, match="normalise"):
        dd.training.TrainConfig(normalise="batch")


def test_prompted_source_needs_a_response():
    rows = torch.zeros(2, 4, dtype=torch.long)
    real = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="response"):
        PromptedSource(rows, real, torch.ones(2, 4, dtype=torch.bool), vocab_size=2)
    with pytest.raises(ValueError, match="prompt_mask"):
        PromptedSource(rows, real, torch.ones(2, 5, dtype=torch.bool), vocab_size=2)
