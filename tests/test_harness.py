"""The lm-evaluation-harness model: exact likelihoods, local tasks, batch invariance, errors."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from llm_fixtures import write_tiny_llada

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local task files only, never the Hub
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model

from discdiff.cli import main
from discdiff.config import ConfigError
from discdiff.harness import (
    ContextTooLongError,
    DiscdiffLM,
    HarnessError,
    MissingCapabilityError,
    MissingTokenizerError,
    Scorer,
    rolling_windows,
    run_harness,
)
from discdiff.models.oracle import EnumerableOracle
from discdiff.processes import MaskingProcess
from discdiff.rng import seeded
from discdiff.runs import load_run

REPO = Path(__file__).resolve().parents[1]


def _request(kind: str, args: tuple, index: int, task: str = "t") -> Instance:
    return Instance(kind, {}, args, index, (task, index, 1))


def _task(folder: Path, name: str, rows: list[dict], body: str) -> None:
    """A local lm-eval task: `rows` as JSONL and a YAML reading them (no download)."""
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        f"  cache_dir: {folder / 'cache'}\ntest_split: test\n{body}"
    )


MULTIPLE_CHOICE = """output_type: multiple_choice
doc_to_text: "{{context}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{label}}"
metric_list:
  - metric: acc
"""
GENERATION = """output_type: generate_until
doc_to_text: "{{context}}"
doc_to_target: "{{answer}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 3
filter_list:
  - name: strip
    filter:
      - function: regex
        regex_pattern: "^\\\\s*(.*?)\\\\s*$"
      - function: take_first
metric_list:
  - metric: exact_match
"""
ROLLING = """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list:
  - metric: word_perplexity
"""


@pytest.fixture(scope="module")
def hmm_items() -> list[dict]:
    """HMM items: an 8-token context, its true 2-token continuation and a uniform distractor.

    The label is the choice with the larger exact log p(continuation | context)."""
    language = load_run("hmm").config.data.language
    generator = torch.Generator().manual_seed(3)
    x = language.sample(40, 10, generator=generator)
    other = torch.randint(0, language.vocab_size, (40, 2), generator=generator)
    items = []
    for i in range(40):
        choices = [x[i, 8:], other[i]] if i % 2 else [other[i], x[i, 8:]]
        rows = torch.stack([torch.cat((x[i, :8], c)) for c in choices])
        exact = language.log_prob(rows)
        items.append(
            {
                "context": " ".join(map(str, x[i, :8].tolist())),
                "choices": [" ".join(map(str, c.tolist())) for c in choices],
                "label": int(exact.argmax()),
            }
        )
    return items


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory, hmm_items: list[dict]) -> Path:
    folder = tmp_path_factory.mktemp("tasks")
    _task(folder, "hmm_choice", hmm_items, MULTIPLE_CHOICE)
    _task(
        folder,
        "hmm_generation",
        [
            {"context": item["context"], "answer": item["choices"][item["label"]]}
            for item in hmm_items[:4]
        ],
        GENERATION,
    )
    _task(
        folder,
        "hmm_rolling",
        [{"text": i["context"] + " " + i["choices"][0]} for i in hmm_items[:3]],
        ROLLING,
    )
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran"]
    _task(
        folder,
        "words_choice",
        [{"context": "the cat", "choices": ["sat", "ran"], "label": i % 2} for i in range(4)],
        MULTIPLE_CHOICE,
    )
    _task(folder, "words_generation", [{"context": "the cat", "answer": "sat on"}] * 2, GENERATION)
    _task(folder, "words_rolling", [{"text": " ".join(words)}] * 2, ROLLING)
    return folder


@pytest.fixture(scope="module")
def llada(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llada(tmp_path_factory.mktemp("llada") / "llada")


# --- the windows and the estimators ------------------------------------------------


@given(st.integers(1, 60), st.integers(1, 12), st.data())
def test_rolling_windows_score_every_token_once(length: int, window: int, data) -> None:
    context = data.draw(st.integers(0, window - 1))
    windows = rolling_windows(length, window, context)
    scored = [i for _, split, stop in windows for i in range(split, stop)]
    assert scored == list(range(length))
    for k, (start, split, stop) in enumerate(windows):
        assert 0 <= start <= split < stop and stop - start <= window
        if k:  # every later window has at least the promised context
            assert split - start >= min(context, split)


def _joint(vocab: int = 3, length: int = 4) -> torch.Tensor:
    with seeded(0):
        weights = torch.distributions.Dirichlet(torch.full((vocab**length,), 0.5)).sample()
    return weights.reshape((vocab,) * length)


@pytest.mark.parametrize("estimator", ["nelbo", "llada"])
def test_loglikelihood_is_the_exact_conditional_in_expectation(estimator: str) -> None:
    """Exact denoiser of an enumerable joint: the bound is tight, so the mean of
    4000 draws is log p(continuation | context) within 3 SE (false failure < 0.3 % each),
    with the rest of the window summed out when context + continuation is shorter."""
    joint = _joint()
    scorer = Scorer(
        EnumerableOracle(joint),
        MaskingProcess(vocab_size=3),
        model_length=4,
        draws=4000,
        estimator=estimator,
        batch_size=4000,
    )
    pairs = [([2, 0], [1, 1]), ([2], [0, 1]), ([], [2, 0, 1]), ([1, 1, 0], [2]), ([0], [2])]
    for (context, continuation), (value, stderr, _) in zip(
        pairs, scorer.loglikelihood(pairs), strict=True
    ):
        p_context = joint[tuple(context)].sum() if context else torch.tensor(1.0)
        exact = math.log(joint[tuple(context + continuation)].sum() / p_context)
        assert abs(value - exact) <= 3 * stderr + 1e-6, (context, continuation, value, exact)
        assert stderr < 0.1


def test_llada_strata_cover_every_masked_count_equally() -> None:
    scorer = Scorer(
        lambda z, t: torch.zeros(*z.shape, 3),
        MaskingProcess(vocab_size=3),
        draws=12,
        estimator="llada",
    )
    draws = scorer._draws([0, 1], [2, 2, 1, 0])
    masked = (draws.z_t == 3).sum(-1)
    assert sorted(masked.tolist()) == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert torch.equal(draws.t, masked / 4)
    assert not bool((draws.z_t[:, :2] == 3).any())  # the context is never masked


# --- the lm-eval model on the shipped HMM run --------------------------------------


def test_the_model_is_registered_with_lm_eval() -> None:
    assert get_model("discdiff") is DiscdiffLM


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_scores_do_not_depend_on_the_batch_size(temperature: float) -> None:
    """Loglikelihoods and generations, batch 1 against 8, bit for bit."""
    overrides = {"sampler.steps": 8, "sampler.temperature": temperature}
    try:
        DiscdiffLM(run="hmm", draws=2, **overrides)
    except ConfigError as error:  # greedy decoding is the sampler's to offer
        pytest.skip(f"the sampler takes no temperature {temperature}: {error}")
    loglikelihoods = [
        _request("loglikelihood", ("1 2 3", " 4"), 0),
        _request("loglikelihood", ("5", " 6 7 8"), 1),
        _request("loglikelihood", ("", " 9 10"), 2),
    ]
    generations = [
        _request("generate_until", (ctx, {"until": ["\n"], "max_gen_toks": 4}), i)
        for i, ctx in enumerate(["1 2 3", "4", "5 6", "7 8 9 10"])
    ]
    rolling = [_request("loglikelihood_rolling", (" ".join(["3"] * 70),), 0)]
    outputs = []
    for batch_size in (1, 8):
        lm = DiscdiffLM(run="hmm", draws=8, batch_size=batch_size, **overrides)
        outputs.append(
            (
                lm.loglikelihood(loglikelihoods),
                lm.generate_until(generations),
                lm.loglikelihood_rolling(rolling),
            )
        )
    assert outputs[0] == outputs[1]


def test_hmm_tasks_run_offline_with_stderr_nfe_and_throughput(tasks: Path, tmp_path: Path) -> None:
    path = run_harness(
        ["hmm_generation", "hmm_rolling"],
        "run=hmm,draws=4,sampler.steps=8",
        out=tmp_path,
        include_path=tasks,
        default_tasks=False,
    )
    record = json.loads(path.read_text())
    harness = json.loads((tmp_path / "results.json").read_text())
    assert "exact_match_stderr,strip" in harness["results"]["hmm_generation"]
    assert harness["config"]["discdiff"]["sampler"]["steps"] == 8
    usage = record["discdiff"]["usage"]
    generated = usage["generate_until"]["hmm_generation"]
    assert generated["requests"] == 4 and generated["calls_per_generated_token"] > 0
    # the run's model draws every position after the context; 3 tokens of each are kept
    assert generated["generated_tokens"] == 4 * 3
    assert generated["generated_positions"] == 4 * (64 - 8)
    assert generated["tokens_per_second"] > 0
    rolling = usage["loglikelihood_rolling"]["hmm_rolling"]
    assert rolling["scored_tokens"] == 30 and rolling["mc_stderr_mean"] > 0
    assert record["results"]["hmm_rolling"]["word_perplexity,none"] > 1


@pytest.mark.slow
def test_hmm_multiple_choice_agrees_with_the_exact_likelihood(tasks: Path, tmp_path: Path) -> None:
    """The label is the exactly more likely continuation, so accuracy is the agreement
    of the shipped model's scores with the exact likelihood: at least 95 % of 40 items."""
    path = run_harness(
        ["hmm_choice"],
        {"run": "hmm", "estimator": "llada", "draws": 8, "greedy": False, "batch_size": 160},
        out=tmp_path,
        include_path=tasks,
        default_tasks=False,
    )
    record = json.loads(path.read_text())
    scores = record["results"]["hmm_choice"]
    assert scores["acc,none"] >= 0.95
    assert scores["acc_stderr,none"] >= 0
    usage = record["discdiff"]["usage"]["loglikelihood"]["hmm_choice"]
    assert usage["requests"] == 80 and usage["calls_per_request"] == 8


# --- a tiny LLaDA-layout checkpoint ------------------------------------------------


@pytest.mark.slow
def test_tiny_llada_runs_the_three_request_types(llada: Path, tasks: Path, tmp_path: Path) -> None:
    path = run_harness(
        ["words_choice", "words_generation", "words_rolling"],
        f"model={llada},draws=4,max_length=6,sampler.steps=4,blocks=2",
        out=tmp_path,
        include_path=tasks,
        default_tasks=False,
    )
    record = json.loads(path.read_text())
    assert set(record["results"]) == {"words_choice", "words_generation", "words_rolling"}
    assert "acc_stderr,none" in record["results"]["words_choice"]
    usage = record["discdiff"]["usage"]
    assert usage["loglikelihood_rolling"]["words_rolling"]["requests"] == 2
    # 9 words in windows of 6 with 3 of context: 2 windows of 4 draws each
    assert usage["loglikelihood_rolling"]["words_rolling"]["network_calls"] == 2 * 2 * 4
    generated = usage["generate_until"]["words_generation"]
    assert generated["generated_tokens"] == generated["generated_positions"] == 2 * 3


# --- errors ------------------------------------------------------------------------


def test_a_context_longer_than_the_model_is_refused_or_truncated() -> None:
    lm = DiscdiffLM(run="hmm", draws=2)
    long = " ".join(["1"] * 63)
    with pytest.raises(ContextTooLongError, match="truncation=left"):
        lm.loglikelihood([_request("loglikelihood", (long, " 2 3"), 0)])
    with pytest.raises(ContextTooLongError, match="generation of 5 tokens"):
        lm.generate_until([_request("generate_until", (long, {"max_gen_toks": 5}), 0)])
    cut = DiscdiffLM(run="hmm", draws=2, truncation="left")
    [(value, _)] = cut.loglikelihood([_request("loglikelihood", (long, " 2 3"), 0)])
    assert math.isfinite(value)


def test_a_missing_capability_is_named(tmp_path: Path) -> None:
    lm = DiscdiffLM(run="hmm-uniform", draws=2)
    with pytest.raises(MissingCapabilityError, match="masking process"):
        lm.loglikelihood([_request("loglikelihood", ("1", " 2"), 0)])
    assert len(lm.generate_until([_request("generate_until", ("1", {"max_gen_toks": 2}), 0)])) == 1


def test_a_missing_tokenizer_is_named(tmp_path: Path) -> None:
    bare = write_tiny_llada(tmp_path / "bare", tokenizer=False)
    with pytest.raises(MissingTokenizerError, match="tokenizer=DIR"):
        DiscdiffLM(model=str(bare))
    with pytest.raises(MissingTokenizerError, match="not a folder"):
        DiscdiffLM(model=str(bare), tokenizer=str(tmp_path / "nowhere"))


def test_bad_arguments_name_the_argument() -> None:
    with pytest.raises(HarnessError, match="unknown model argument 'drawz'"):
        DiscdiffLM(run="hmm", drawz=3)
    with pytest.raises(HarnessError, match="exactly one of `run`"):
        DiscdiffLM()
    with pytest.raises(HarnessError, match="`estimator` must be"):
        DiscdiffLM(run="hmm", estimator="exact")
    with pytest.raises(HarnessError, match="`draws` must be"):
        DiscdiffLM(run="hmm", draws=0)
    with pytest.raises(HarnessError, match="token id"):
        DiscdiffLM(run="hmm").loglikelihood([_request("loglikelihood", ("a", " 2"), 0)])


# --- the commands ------------------------------------------------------------------


def test_discdiff_eval_harness(tasks: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(
        [
            "eval",
            "--harness",
            "hmm_rolling",
            "--run",
            "hmm",
            "--model-args",
            "draws=2",
            "--include-path",
            str(tasks),
            "--no-default-tasks",
            "--out",
            str(tmp_path),
            "--threads",
            "1",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "word_perplexity" in printed and "tokens_per_second" in printed
    assert (tmp_path / "results.json").is_file() and (tmp_path / "discdiff.json").is_file()
    assert main(["eval", "--harness", "hmm_rolling", "--model-args", "run=hmm,draws=0"]) == 2
    assert main(["eval", "--harness", "hmm_rolling"]) == 2  # no model
    assert main(["eval"]) == 2  # neither a run nor tasks
    assert "--run is required" in capsys.readouterr().err


@pytest.mark.slow
def test_lm_eval_command_line_with_the_discdiff_model(tasks: Path, tmp_path: Path) -> None:
    """`lm_eval --model discdiff ...` through `python -m discdiff.harness`."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "discdiff.harness",
            "--model",
            "discdiff",
            "--model_args",
            "run=hmm,draws=2,sampler.steps=4",
            "--tasks",
            "hmm_generation",
            "--include_path",
            str(tasks),
            "--output_path",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={
            "PYTHONPATH": str(REPO),
            "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
        },
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "exact_match" in result.stdout
    [saved] = list(tmp_path.rglob("results_*.json"))
    config = json.loads(saved.read_text())["config"]
    assert config["discdiff"]["usage"]["generate_until"]["hmm_generation"]["network_calls"] > 0


def test_chat_templates_and_the_end_of_sequence_come_from_the_tokenizer(llada: Path) -> None:
    lm = DiscdiffLM(model=str(llada), draws=2)
    text = lm.apply_chat_template([{"role": "user", "content": "the cat"}])
    assert text == "<s> the cat "
    # generations end at the end-of-sequence token (LLaDA pads its answers with it)
    assert lm.codec.decode(lm.codec.encode("the cat </s> sat </s>")) == "the cat"
    with pytest.raises(MissingCapabilityError, match="no chat template"):
        DiscdiffLM(run="hmm", draws=2).apply_chat_template([{"role": "user", "content": "1"}])


def test_generation_blocks_divide_the_generated_length_and_the_steps() -> None:
    from discdiff.harness import _block_count

    assert _block_count(2, generated=3, steps=4) == 1
    assert _block_count(8, generated=256, steps=256) == 8
    assert _block_count(4, generated=12, steps=6) == 3
    assert _block_count(4, generated=12, steps=5) == 1
