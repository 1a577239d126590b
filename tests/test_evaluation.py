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
    """The small Table 1 without nucleus: a gap that reads one way, then its reading."""
    from discdiff.studies.settings import STUDY

    assert main(["quickstart", "--samples", "8", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "lower is better" in out and "MDLM (model)" in out and "p=0.9" not in out
    table, reading = out.split("\ndata ")[0], out.split("\ndata ")[1].splitlines()[1:]
    assert len(reading) == 4 and reading[-1].startswith("wrote ")
    assert reading[0].startswith("from T=64 to T=256 (no nucleus): MDLM ")
    assert " − MDLM = " in reading[1] and "data row" in reading[2]
    rows = json.loads((tmp_path / "study.json").read_text())
    assert {r["steps"] for r in rows} == {16, 64, 256}
    assert {r["sampler"] for r in rows} == set(STUDY.quickstart_samplers)
    assert {r["denoiser"] for r in rows} == {"model"}
    assert {(r["top_p"], r["nucleus"]) for r in rows} == {(None, "standard")}
    fields = {"denoiser", "sampler", "steps", "top_p", "seed", "nfe", "nll_gap", "token_entropy"}
    assert all(fields <= r.keys() and r["nll_gap_se"] > 0 for r in rows)
    assert (tmp_path / "study.png").is_file()
    assert "ReMDM-loop (model)" in table


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


def test_summarize_pools_seeds_into_intervals_that_cover():
    """Pooled mean and standard error by formula, and the 95 % interval's coverage.

    400 simulated cells of 3 seeds × 50 normal draws (mean 0.3, sd 2): the
    interval must cover the true mean in 95 % ± 2.5 % of them (binomial sd
    at 400 cells: 1.1 %).
    """
    from discdiff.evaluation import summarize

    rows = [
        {"denoiser": "m", "sampler": "s", "steps": 4, "top_p": None, "nucleus": "standard",
         "seed": seed, "samples": 10, "nfe": nfe, "seconds_per_sample": 1.0,
         "gap": gap, "gap_se": se, "entropy": 2.0}
        for seed, (gap, se, nfe) in enumerate([(0.1, 0.03, 5), (0.4, 0.04, 7)])
    ]  # fmt: skip
    (cell,) = summarize(rows, ["gap", "entropy"])
    assert cell["seeds"] == 2 and cell["samples"] == 20 and cell["nfe"] == 7
    assert cell["gap"] == pytest.approx(0.25)
    assert cell["gap_se"] == pytest.approx(0.05 / 2)  # sqrt(0.03² + 0.04²) / 2
    assert cell["gap_ci95"] == pytest.approx(1.96 * 0.025)
    assert cell["gap_seed_sd"] == pytest.approx(0.3 / math.sqrt(2))
    assert cell["entropy_ci95"] == 0.0 and cell["entropy"] == 2.0  # no spread between seeds
    rows[1]["entropy"] = 3.0  # no per-seed error: Student's t on the seeds' spread
    (cell,) = summarize(rows, ["entropy"])
    assert cell["entropy_ci95"] == pytest.approx(12.706 * (1 / math.sqrt(2)) / math.sqrt(2))

    generator = torch.Generator().manual_seed(0)
    simulated = []
    for cell_id in range(400):
        for seed in range(3):
            draws = 0.3 + 2.0 * torch.randn(50, generator=generator, dtype=torch.float64)
            simulated.append(
                {"denoiser": "m", "sampler": str(cell_id), "steps": 1, "top_p": None,
                 "nucleus": "standard", "seed": seed, "nfe": 1, "seconds_per_sample": 0.0,
                 "gap": float(draws.mean()), "gap_se": float(draws.std()) / math.sqrt(50)}
            )  # fmt: skip
    cells = summarize(simulated, ["gap"])
    covered = [abs(c["gap"] - 0.3) <= c["gap_ci95"] for c in cells]
    assert 0.925 <= sum(covered) / len(covered) <= 0.975


def test_language_metrics_standard_errors():
    from discdiff.evaluation.metrics import language_metrics

    language = SyntheticLanguage()
    tokens = language.sample(40, 16, generator=torch.Generator().manual_seed(3))
    values = language_metrics(language, 16)(tokens)
    nll = exact_nll(language.log_prob, tokens).double()
    assert values["nll_gap"] == pytest.approx(float(nll.mean()) - language.entropy(16))
    assert values["nll_gap_se"] == pytest.approx(float(nll.std()) / math.sqrt(40))
    entropies = token_entropy(tokens).double()
    assert values["token_entropy_se"] == pytest.approx(float(entropies.std()) / math.sqrt(40))


def _fail_with(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_table1_preset_writes_pooled_cells_and_resumes(tmp_path, monkeypatch, capsys):
    """`discdiff scale --preset table1`: the paper's grid, one folder per nucleus setting,
    cells pooled over seeds with intervals; a second run reads the finished folders."""
    from discdiff.studies import table1
    from discdiff.studies.settings import STUDY

    out = tmp_path / "table1"
    argv = ["scale", "--preset", "table1", "--run", "synthetic", "--out", str(out)]
    argv += ["--samples", "3", "--seeds", "2", "--steps", "2,4", "--threads", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "### nucleus p = 0.9 (remdm rule)" in printed and "### no nucleus" in printed
    cells = json.loads((out / "table1.json").read_text())
    samplers = set(STUDY.strategies())
    expected = 2 * 2 * (len(samplers) + len(STUDY.scale_perfect))  # top_p × T × rows
    assert len(cells) == expected
    assert {c["top_p"] for c in cells} == {0.9, None}
    assert all(c["seeds"] == 2 and c["samples"] == 6 for c in cells)
    assert all(c["nll_gap_ci95"] > 0 and "token_entropy_ci95" in c for c in cells)
    for part in ("top_p=0.9/study.png", "top_p=off/study.png", "table1_0.9.png", "table1_off.png"):
        assert (out / part).read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((out / "top_p=0.9" / "study.json").read_text())
    assert {r["seed"] for r in rows} == {0, 1}  # the perfect rows too
    from safetensors.torch import load_file

    kept = load_file(out / "top_p=0.9" / "samples.safetensors")
    assert sorted(kept, key=int) == [str(i) for i in range(len(rows))]
    language = SyntheticLanguage()
    for i in (0, len(rows) - 1):
        nll = float(exact_nll(language.log_prob, kept[str(i)]).mean())
        assert kept[str(i)].shape == (3, 64) and nll == pytest.approx(rows[i]["exact_nll"])

    assert "autoregressive run" in _fail_with(capsys, [*argv, "--judge", "synthetic"])

    def refuse(*args, **kwargs):
        raise AssertionError("a finished setting was sampled again")

    monkeypatch.setattr(table1, "run_synthetic_study", refuse)
    assert main(argv) == 0
    assert json.loads((out / "table1.json").read_text()) == cells
    with pytest.raises(AssertionError, match="sampled again"):  # other settings: sampled anew
        main([*argv[:-8], "--samples", "4", *argv[-6:]])
