"""Padding in the NELBO: padded positions count neither in the sum nor in the token count (MDLM)."""

import pytest
import torch
from jaxtyping import TypeCheckError
from training_setup import make_trainer

import discdiff as dd
from discdiff.data import Padded, PaddedSource, pad

V, L, PADDED = 12, 12, 16


def dit_denoiser(process):
    torch.manual_seed(0)
    backbone = dd.DiT(dd.DiTConfig.micro(vocab_size=V + 1, model_length=PADDED, dropout=0.0))
    with torch.no_grad():
        backbone.output_layer.linear.weight.normal_(0, 0.5)
    return dd.SUBS(backbone, process).eval()


def test_padded_nelbo_equals_the_unpadded_one_on_the_real_tokens():
    """A DiT that attends to real tokens only gives the same bound with or without padding."""
    process = dd.MaskingProcess(vocab_size=V)
    denoiser = dit_denoiser(process)
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(V, (4, L), generator=generator)
    t = torch.tensor([0.2, 0.5, 0.7, 0.95])
    z_t = process.sample(x, t, generator=generator)
    # pad with arbitrary ids, masked or not: they must not matter
    filler = torch.randint(V + 1, (4, PADDED - L), generator=generator)
    x_pad = torch.cat((x, filler.clamp_max(V - 1)), 1)
    z_pad = torch.cat((z_t, filler), 1)
    real = torch.arange(PADDED) < L
    padding_mask = real.expand(4, PADDED)
    with torch.no_grad():
        plain = dd.nelbo(process, denoiser, x, t=t, z_t=z_t)
        padded = dd.nelbo(process, denoiser, x_pad, t=t, z_t=z_pad, padding_mask=padding_mask)
        ignoring = dd.nelbo(process, denoiser, x_pad, t=t, z_t=z_pad)
    assert plain.min() > 0
    torch.testing.assert_close(padded, plain, rtol=1e-5, atol=1e-5)
    assert (ignoring - plain).abs().max() > 1e-2  # the pads would count without the mask


def test_padded_discrete_nelbo_leaves_the_padding_out():
    process = dd.MaskingProcess(vocab_size=V)
    denoiser = dit_denoiser(process)
    generator = torch.Generator().manual_seed(2)
    x = torch.randint(V, (3, PADDED), generator=generator)
    step = torch.tensor([3, 5, 8])
    z_t = process.sample(x, step / 8, generator=generator)
    padding_mask = (torch.arange(PADDED) < L).expand(3, PADDED)
    with torch.no_grad():
        closed, exact = (
            dd.objectives.discrete_nelbo(
                process,
                dd.MaskingPosterior(),
                denoiser,
                x,
                steps=8,
                step=step,
                z_t=z_t,
                padding_mask=padding_mask,
                exact_kl=exact_kl,
            )
            for exact_kl in (False, True)
        )
        whole = dd.objectives.discrete_nelbo(
            process, dd.MaskingPosterior(), denoiser, x, steps=8, step=step, z_t=z_t
        )
    torch.testing.assert_close(closed, exact, rtol=1e-4, atol=1e-4)
    assert (closed < whole).all()


def test_a_mismatched_padding_mask_is_rejected():
    process = dd.MaskingProcess(vocab_size=V)
    x = torch.zeros(2, L, dtype=torch.long)
    # jaxtyping's check (on in the tests) or, without it, the function's own
    with pytest.raises((ValueError, TypeCheckError), match="padding_mask"):
        dd.nelbo(process, dit_denoiser(process), x, padding_mask=torch.ones(2, L + 1).bool())
    with pytest.raises(ValueError, match="padding_mask"):
        dd.objectives._check_padding(x, torch.ones(2, L + 1).bool())


def test_trainer_and_held_out_bound_average_over_real_tokens_only():
    documents = [[(3 * i + j) % V for j in range(2 + i % 9)] for i in range(40)]
    rows, mask = pad(documents, 16, pad_id=0, bos_id=1, eos_id=2)
    source = PaddedSource(rows, mask, vocab_size=V)
    trainer = make_trainer(source=source, dropout=0.0)
    batch = source.batch(0, trainer.config.batch_size)
    assert isinstance(batch, Padded) and not bool(batch.padding_mask.all())

    noise = trainer.objective.noise(trainer.process, batch.tokens, trainer._step_generator(0))
    with torch.no_grad():
        real = trainer.objective.loss(
            trainer.process, trainer.model, batch.tokens, *noise, padding_mask=batch.padding_mask
        )
        every = trainer.objective.loss(trainer.process, trainer.model, batch.tokens, *noise)
    expected = float(real.sum() / batch.padding_mask.sum())
    reported = trainer.train_step()
    assert reported == pytest.approx(expected, rel=1e-5)
    assert abs(float(every.sum() / batch.tokens.numel()) - expected) > 1e-2

    trainer.validation = Padded(rows, mask)
    bound = trainer.evaluate()
    assert bound.tokens == int(mask[: trainer.config.eval_sequences].sum())


def test_padded_source_checks_its_mask():
    rows = torch.zeros(3, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="padding_mask"):
        PaddedSource(rows, torch.ones(3, 5, dtype=torch.bool), vocab_size=2)
    with pytest.raises(ValueError, match="at least one real token"):
        PaddedSource(rows, torch.zeros(3, 4, dtype=torch.bool), vocab_size=2)
