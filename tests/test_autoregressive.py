"""The AR baseline: causal generator, sampler, objective and FUDGE, against exact models."""

import itertools

import pytest
import torch

import discdiff as dd
from discdiff.baseline_objectives import AutoregressiveNLL, PrefixClassification
from discdiff.data import HMMLanguage, LanguageSource
from discdiff.data.digits import LabelledSource
from discdiff.guidance import FUDGE
from discdiff.models.causal import CausalConfig, CausalTransformer, PrefixClassifier
from discdiff.sampling.autoregressive import AutoregressiveSampler
from discdiff.training import TrainConfig, Trainer

F64 = torch.float64


class ExactAR:
    """p(x_{i+1} | x_<=i) of an enumerable joint (V,) * L."""

    def __init__(self, joint):
        self.joint, self.length = joint, joint.dim()

    def next_logits(self, prefix):
        i = prefix.shape[1]
        marginal = (
            self.joint.sum(dim=tuple(range(i + 1, self.length)))
            if i + 1 < self.length
            else self.joint
        )
        rows = marginal[tuple(prefix.T)] if i else marginal.expand(prefix.shape[0], -1)
        return rows.clamp_min(1e-300).log()


class ExactPrefixClassifier:
    """p(c | x_<=l) at every position of an enumerable p(c, x), shape (C, V, ..., V)."""

    def __init__(self, joint_cx):
        self.joint, self.num_classes, self.length = joint_cx, joint_cx.shape[0], joint_cx.dim() - 1

    def __call__(self, tokens):
        out = []
        for j in range(1, tokens.shape[1] + 1):
            marginal = (
                self.joint.sum(dim=tuple(range(j + 1, self.length + 1)))
                if j < self.length
                else self.joint
            )
            out.append(marginal[(slice(None), *tokens[:, :j].T)].T.clamp_min(1e-300).log())
        return torch.stack(out, 1)


@pytest.fixture(scope="module")
def joint_cx():
    generator = torch.Generator().manual_seed(0)
    joint = torch.rand(2, 3, 3, 3, generator=generator, dtype=F64) ** 3
    return joint / joint.sum()


def _chain_probability(model, sequences):
    """Probability of each full sequence under the model's normalised next-token chain."""
    logp = torch.zeros(len(sequences), dtype=F64)
    for i in range(sequences.shape[1]):
        step = model.next_logits(sequences[:, :i]).double().log_softmax(-1)
        logp += step.gather(-1, sequences[:, i : i + 1]).squeeze(-1)
    return logp.exp()


def test_fudge_with_exact_models_at_gamma_one_is_the_exact_conditional(joint_cx):
    """prod_i p(x_i | x_<i) p(c | x_<=i) / Z_i = p(x | c) for every x and both c (to the
    float32 of the guided logits);
    gamma = 0 is the model itself."""
    sequences = torch.tensor(list(itertools.product(range(3), repeat=3)))
    model = ExactAR(joint_cx.sum(0))
    classifier = ExactPrefixClassifier(joint_cx)
    for label in (0, 1):
        guided = FUDGE(1.0)(model, classifier, label)
        target = (joint_cx[label] / joint_cx[label].sum()).flatten()
        torch.testing.assert_close(
            _chain_probability(guided, sequences), target, rtol=1e-5, atol=1e-9
        )
    plain = _chain_probability(FUDGE(0.0)(model, classifier, 1), sequences)
    torch.testing.assert_close(plain, joint_cx.sum(0).flatten(), rtol=1e-5, atol=1e-9)
    chunked = FUDGE(2.0, chunk=2)(model, classifier, torch.tensor([0, 1, 1]))
    whole = FUDGE(2.0)(model, classifier, torch.tensor([0, 1, 1]))
    prefix = sequences[:3, :2]
    torch.testing.assert_close(chunked.next_logits(prefix), whole.next_logits(prefix))
    top1 = FUDGE(1.0, top_k=1)(model, classifier, 0).next_logits(prefix)
    assert bool((torch.isfinite(top1).sum(-1) == 1).all())


def test_ar_sampler_draws_the_model_distribution_and_is_batch_independent(joint_cx):
    """20000 draws over 27 sequences: total variation below 0.04 (its expected size is
    about 0.02 here; the seed is fixed). Tokens do not depend on the batch size."""
    joint = joint_cx.sum(0)
    model = ExactAR(joint)
    sampler = AutoregressiveSampler()
    result = sampler.sample_batches(model, 20000, 3, seed=1)
    assert result.nfe == 3 and bool((result.sequence_nfe == 3).all())
    counts = torch.bincount((result.tokens * torch.tensor([9, 3, 1])).sum(-1), minlength=27)
    tv = 0.5 * float((counts / 20000 - joint.flatten()).abs().sum())
    assert tv < 0.04
    parts = sampler.sample_batches(model, 50, 3, seed=2, batch_size=7).tokens
    assert torch.equal(parts, sampler.sample_batches(model, 50, 3, seed=2).tokens)
    greedy = AutoregressiveSampler(top_k=1).sample(model, 4, 3).tokens
    assert torch.equal(greedy, greedy[:1].expand(4, 3))
    prompt = torch.tensor([[2]])
    assert bool(
        (AutoregressiveSampler().sample(model, 5, 3, prompt=prompt).tokens[:, 0] == 2).all()
    )


def test_causal_transformer_is_causal_and_round_trips(tmp_path):
    model = CausalTransformer(
        CausalConfig(vocab_size=7, model_length=10, hidden_dim=32, n_blocks=2)
    ).eval()
    x = torch.randint(0, 7, (3, 10))
    y = x.clone()
    y[:, 6:] = (y[:, 6:] + 1) % 7
    # positions 0..6 read only x_<6, identical in both
    torch.testing.assert_close(model(x)[:, :7], model(y)[:, :7])
    torch.testing.assert_close(model.next_logits(x[:, :4]), model(x)[:, 4])
    torch.testing.assert_close(
        model.nll(x), AutoregressiveNLL().loss(dd.MaskingProcess(vocab_size=7), model, x)
    )
    model.save_pretrained(tmp_path / "m")
    again = CausalTransformer.from_pretrained(tmp_path / "m").eval()
    torch.testing.assert_close(again(x), model(x))
    with pytest.raises(ValueError, match="not 'causal'"):
        dd.DiT(dd.DiTConfig.micro(8)).save_pretrained(tmp_path / "d")
        CausalTransformer.from_pretrained(tmp_path / "d")
    classifier = PrefixClassifier(
        CausalConfig(vocab_size=7, model_length=10, hidden_dim=32), 3
    ).eval()
    logits = classifier(x)
    torch.testing.assert_close(classifier(x[:, :5])[:, -1], logits[:, 4])  # p(c | x_<=4)


def test_ar_model_and_prefix_classifier_train_with_the_trainer():
    language = HMMLanguage()
    model = CausalTransformer(
        CausalConfig(vocab_size=32, model_length=8, hidden_dim=32, n_blocks=1)
    )
    validation = language.sample(128, 8, generator=torch.Generator().manual_seed(9))
    config = TrainConfig(
        steps=40,
        batch_size=32,
        lr=3e-3,
        warmup=5,
        ema=0.0,
        eval_every=0,
        progress=False,
        eval_sequences=128,
        objective="autoregressive",
    )
    process = dd.MaskingProcess(vocab_size=32)
    trainer = Trainer(
        process, model, LanguageSource(language, 8, seed=0), config, validation=validation
    )
    before = trainer.evaluate().nats_per_token  # the exact NLL of the validation set
    trainer.fit(resume=False)
    assert trainer.evaluate().nats_per_token < before - 0.2
    with torch.no_grad():
        exact = float(model.nll(validation).sum())
    torch.testing.assert_close(trainer.evaluate().nats, exact, rtol=1e-5, atol=1e-3)
    tokens = torch.randint(0, 4, (64, 6))
    labels = (tokens[:, 0] >= 2).long()  # the class is the first token's half: prefixes know it
    classifier = PrefixClassifier(
        CausalConfig(vocab_size=4, model_length=6, hidden_dim=32, n_blocks=1), 2
    )
    config = TrainConfig(
        steps=60, batch_size=32, lr=3e-3, warmup=5, ema=0.0, eval_every=0, progress=False
    )
    Trainer(
        dd.MaskingProcess(vocab_size=4),
        classifier,
        LabelledSource(tokens, labels, 4, 2),
        config,
        objective=PrefixClassification(),
    ).fit(resume=False)
    accuracy = (classifier(tokens)[:, 0].argmax(-1) == labels).double().mean()
    assert accuracy > 0.9
