"""Fast decoding: confidence-threshold parallel decoding, alone and with ReMDM remasking."""

import pytest
import torch

import discdiff as dd
from discdiff.models import SUBS, DiT, DiTConfig

V = 6


class Scripted:
    """A denoiser whose confidence at position ℓ is `confidence[ℓ]` on token ℓ mod V."""

    time_conditioned = False

    def __init__(self, confidence):
        self.confidence = torch.as_tensor(confidence, dtype=torch.float64)
        self.calls = 0

    def __call__(self, z, t):
        self.calls += 1
        length = z.shape[1]
        c = self.confidence[:length]
        probs = ((1 - c) / (V - 1)).unsqueeze(-1).repeat(1, V)
        probs[torch.arange(length), torch.arange(length) % V] = c
        return probs.log().float().expand(z.shape[0], length, V)


def test_every_position_above_the_threshold_decodes_in_one_step():
    """Positions with confidence above τ decode at the first step; the rest one by one."""
    process = dd.MaskingProcess(vocab_size=V)
    confident = [0.999] * 6 + [0.3, 0.3]
    denoiser = Scripted(confident)
    decoder = dd.ThresholdDecoder(0.9, tokens_per_step=1)
    sampler = dd.AncestralSampler(process, decoder, steps=8)
    result = sampler.sample(
        denoiser, 2, 8, generator=torch.Generator().manual_seed(0), return_trajectory=True
    )
    first = result.trajectory[1]
    decoded = ~process.is_masked(first)
    # the six confident positions (drawn their likely token), or at most one more of the rest
    assert decoded[:, :6].all() and decoded[:, 6:].sum(-1).le(0).all()
    # 1 call for the confident block, one per step for the two unsure ones, and one on the
    # finished sequence (the loop cannot know that no strategy would remask it); then the cache
    assert result.nfe == 4 and denoiser.calls == 4
    assert not process.is_masked(result.tokens).any()


def test_a_confident_model_needs_far_fewer_calls_than_the_step_budget():
    process = dd.MaskingProcess(vocab_size=V)
    denoiser = Scripted([0.9999] * 32)
    result = dd.AncestralSampler(process, dd.ThresholdDecoder(0.9), steps=32).sample(
        denoiser, 3, 32, generator=torch.Generator().manual_seed(0)
    )
    assert result.nfe == 2 and result.sequence_nfe.tolist() == [2, 2, 2]
    # τ = 1 is never exceeded: the schedule's count (here one per step) decides
    strict = dd.AncestralSampler(process, dd.ThresholdDecoder(1.0), steps=32).sample(
        denoiser, 3, 32, generator=torch.Generator().manual_seed(0)
    )
    assert strict.nfe == 33


def test_threshold_one_is_maskgit():
    """With τ = 1 nothing passes the threshold: the same draws and order as MaskGIT."""
    process = dd.MaskingProcess(vocab_size=20)
    model = DiT(DiTConfig.micro(vocab_size=21))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    denoiser = SUBS(model.eval(), process)
    runs = [
        dd.AncestralSampler(process, decoder, steps=6, top_p=0.9).sample(
            denoiser, 3, 12, generator=torch.Generator().manual_seed(1)
        )
        for decoder in (dd.ThresholdDecoder(1.0, tokens_per_step=2), dd.MaskGITDecoder(2))
    ]
    assert torch.equal(runs[0].tokens, runs[1].tokens)


@pytest.mark.parametrize(
    "schedule", [dd.CapSchedule(0.2), dd.ConfidenceSchedule(), dd.LoopSchedule(eta=0.1)], ids=repr
)
def test_threshold_decoding_composes_with_remasking(schedule):
    """Decoded tokens are remasked at rate σ_t; prompts and pads never change; all ends decoded."""
    process = dd.MaskingProcess(vocab_size=V)
    denoiser = Scripted([0.95] * 10 + [0.4] * 10)
    decoder = dd.ThresholdDecoder(0.9, remasking=schedule)
    sampler = dd.AncestralSampler(process, decoder, steps=24)
    # mixed lengths: row 0 has 20 tokens, row 1 has 14 then 6 fixed pad tokens (id 0)
    infill = torch.full((2, 20), -1)
    infill[1, 14:] = 0
    prompt = torch.tensor([[5, 4]])
    result = sampler.sample(
        denoiser,
        2,
        20,
        prompt=prompt,
        infill=infill,
        generator=torch.Generator().manual_seed(3),
        return_trajectory=True,
        return_stats=True,
    )
    assert int(result.remasked.sum()) > 0
    assert (result.trajectory[:, :, :2] == prompt).all()
    assert (result.trajectory[:, 1, 14:] == 0).all()
    assert not process.is_masked(result.tokens).any()
    # with remasking the sequence keeps changing: every step calls the network
    assert result.nfe == 24 + 1  # and the final noise removal sees the last state


def test_threshold_decoder_arguments_are_checked_and_configurable():
    with pytest.raises(ValueError, match="threshold"):
        dd.ThresholdDecoder(0.0)
    with pytest.raises(TypeError, match="remasking"):
        dd.ThresholdDecoder(0.9, remasking="cap")
    from discdiff.config import build_strategy

    built = build_strategy({"name": "threshold", "threshold": 0.8, "remasking": {"name": "cap"}})
    assert isinstance(built, dd.ThresholdDecoder) and built.threshold == 0.8
    assert isinstance(built.remasking, dd.CapSchedule)
