"""Metrics against hand-computed values, the AR judge, the study and the CLI."""

import json
import math

import numpy as np
import pytest
import torch

import discdiff as dd
from discdiff.cli import main
from discdiff.data import LanguageSource, SyntheticLanguage
from discdiff.evaluation import (
    ARJudge,
    AutoregressiveNLL,
    exact_nll,
    gen_ppl,
    mauve_score,
    plot_study,
    scaling_study,
    token_entropy,
    write_rows,
)
from discdiff.training import TrainConfig, Trainer


def test_token_entropy_of_known_histograms():
    tokens = torch.tensor([[0, 0, 1, 1], [0, 1, 2, 3], [5, 5, 5, 5], [0, 0, 0, 1]])
    expected = [math.log(2), math.log(4), 0.0, -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))]
    torch.testing.assert_close(token_entropy(tokens), torch.tensor(expected))


class FixedJudge:
    """Gives every token of sequence i probability probs[i]."""

    def __init__(self, probs):
        self.probs = probs

    def nll(self, tokens):
        return torch.tensor(
            [-math.log(self.probs[int(row[0])]) * tokens.shape[1] for row in tokens]
        )

    def scored_tokens(self, tokens):
        return tokens.numel()


def test_gen_ppl_is_corpus_level():
    judge = FixedJudge({0: 0.5, 1: 0.125})
    assert gen_ppl(judge, torch.zeros(3, 5, dtype=torch.long)) == pytest.approx(2.0)
    mixed = torch.tensor([[0] * 4, [1] * 4])
    # exp of the mean NLL per token: exp((4 ln 2 + 4 ln 8) / 8) = 4, not the mean of 2 and 8
    assert gen_ppl(judge, mixed, batch_size=1) == pytest.approx(4.0)


def brute_force_log_prob(language, x):
    """Follow the unifilar HMM's deterministic state path by hand."""
    total, state = 0.0, 0
    for token in x.tolist():
        total += math.log(float(language.emission[state, token]))
        state = int(language.next_state[state, token])
    return total


def test_exact_nll_against_a_hand_computation():
    language = SyntheticLanguage(vocab_size=6, states=3, support=4, seed=2)
    x = language.sample(5, 7, generator=torch.Generator().manual_seed(0))
    expected = torch.tensor([-brute_force_log_prob(language, row) / 7 for row in x])
    torch.testing.assert_close(exact_nll(language.log_prob, x), expected.float())


def test_mauve_of_identical_and_disjoint_sets():
    generator = np.random.default_rng(0)
    p = generator.normal(size=(400, 8))
    assert mauve_score(p, p.copy(), clusters=20) > 0.95
    assert mauve_score(p, p + 20.0, clusters=20) < 0.05


def test_ar_judge_learns_and_scores():
    language = SyntheticLanguage(vocab_size=12, states=4, support=4, seed=0)
    process = dd.MaskingProcess(vocab_size=12)
    torch.manual_seed(0)
    judge = ARJudge(12, 16, width=32, layers=1, heads=2)
    data = language.sample(64, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = float(judge.nll(data).mean())
    trainer = Trainer(
        process,
        judge,
        LanguageSource(language, 16),
        TrainConfig(
            steps=30, batch_size=16, lr=3e-3, warmup=0, ema=0.0, eval_every=0, progress=False
        ),
        objective=AutoregressiveNLL(),
    )
    trainer.fit(resume=False)
    with torch.no_grad():
        after = float(judge.nll(data).mean())
    assert after < before - 3
    logits = judge(data).log_softmax(-1)
    manual = -logits.gather(-1, data.unsqueeze(-1)).squeeze(-1).sum(-1)
    torch.testing.assert_close(judge.nll(data), manual)
    assert judge.features(data).shape == (64, 32)
    assert judge.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 16)


def test_scaling_study_writes_table_and_plot(tmp_path):
    joint = torch.rand(3, 3, 3, generator=torch.Generator().manual_seed(0))
    oracle = dd.EnumerableOracle(joint)
    process = dd.MaskingProcess(vocab_size=3)
    rows = scaling_study(
        process,
        {"oracle": oracle},
        {"MDLM": dd.MaskingPosterior(), "cap": dd.RemaskPosterior(dd.CapSchedule(0.1))},
        [2, 8],
        lambda tokens: {"token_entropy": float(token_entropy(tokens).mean())},
        samples=20,
        length=3,
        top_p=(None, 0.9),
        seeds=(0, 1),
        progress=False,
    )
    assert len(rows) == 2 * 2 * 2 * 2
    assert {"nfe", "seconds_per_sample", "token_entropy"} <= rows[0].keys()
    csv_path = write_rows(rows, tmp_path, "study")
    assert csv_path.read_text().count("\n") == len(rows) + 1
    assert len(json.loads((tmp_path / "study.json").read_text())) == len(rows)
    png = plot_study(
        rows,
        tmp_path / "study.png",
        metric="token_entropy",
        label="entropy",
        references={"data": 1.0},
    )
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_quickstart_runs_on_the_shipped_checkpoint(tmp_path, capsys):
    assert main(["quickstart", "--samples", "8", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "MDLM (model)" in out and "ReMDM-loop (perfect)" in out and "data" in out
    rows = json.loads((tmp_path / "study.json").read_text())
    assert {r["steps"] for r in rows} == {16, 64, 256}
    assert (tmp_path / "study.png").is_file()


def test_hf_causal_judge_scores_retokenised_text():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=20, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    ).eval()

    class Letters:  # a tokenizer over "a".."t"
        def encode(self, text):
            return [ord(c) - ord("a") for c in text]

    from discdiff.evaluation import HFCausalJudge

    judge = HFCausalJudge(model, Letters(), decode=lambda ids: "".join(chr(97 + i) for i in ids))
    tokens = torch.tensor([[0, 1, 2, 3], [4, 4, 4, 4]])
    with torch.no_grad():
        logits = model(input_ids=tokens).logits[:, :-1].log_softmax(-1)
        manual = -logits.gather(-1, tokens[:, 1:, None]).squeeze(-1).sum(-1)
        torch.testing.assert_close(judge.nll(tokens), manual)
    assert judge.scored_tokens(tokens) == 6
    assert gen_ppl(judge, tokens) == pytest.approx(math.exp(float(manual.sum()) / 6), rel=1e-5)
