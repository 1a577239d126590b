"""LLaDA's and Dream's own decoding rules, greedy decoding, blocks and batches of prompts.

The expected token ids in `tests/data/llm_decoding_reference.json` were computed once by running
LLaDA's `generate.py` (and Fast-dLLM's uncached `generate`, which agrees) and Dream's
`diffusion_generate` at temperature 0 on the checkpoints `write_tiny_llada(quiet_mask=True)` and
`write_tiny_dream(quiet_mask=True)` write.
"""

import json
from pathlib import Path

import pytest
import torch
from llm_fixtures import write_tiny_dream, write_tiny_llada

from discdiff import MaskingPosterior, MaskingProcess
from discdiff.cli import main
from discdiff.config import ConfigError, RunConfig, build_strategy
from discdiff.models.diffusion_llms import load_diffusion_llm
from discdiff.processes.masking import (
    DreamCount,
    EntropyDecoder,
    EvenCount,
    FactorCount,
    MarginDecoder,
    MaskGITDecoder,
    ScheduleCount,
)
from discdiff.rng import SequenceGenerator
from discdiff.runs import sample_model
from discdiff.sampling import AncestralSampler, BlockSampler

REFERENCE = json.loads((Path(__file__).parent / "data" / "llm_decoding_reference.json").read_text())
DREAM_ALGORITHMS = {
    "maskgit_plus": MaskGITDecoder,
    "entropy": EntropyDecoder,
    "topk_margin": MarginDecoder,
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> object:
    # Many tiny forwards: one thread is several times faster than two on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quiet")
    return {
        "llada": write_tiny_llada(root / "llada", quiet_mask=True),
        "dream": write_tiny_dream(root / "dream", quiet_mask=True),
    }


@pytest.fixture(scope="module")
def denoisers(models: dict[str, Path]) -> dict:
    return {
        kind: load_diffusion_llm(path, dtype=torch.float32, attention="math", tokenizer=False)
        for kind, path in models.items()
    }


def _complete(denoiser, strategy, steps: int, prompts: list[list[int]], length: int, **kwargs):
    sampler = AncestralSampler(denoiser.process(), strategy, steps, temperature=0.0)
    rows = [denoiser.encode(torch.tensor(p)) for p in prompts]
    return denoiser.decode(sampler.complete(denoiser, rows, length, **kwargs).tokens).tolist()


# -- the count rules -------------------------------------------------------------------------


def _counts(rule, masked: int, steps: int) -> list[int]:
    grid = rule.time_grid(steps)
    process, counts, n = MaskingProcess(vocab_size=4), [], torch.tensor([masked])
    for i in range(steps):
        k = rule(process, n, grid[i : i + 1], grid[i + 1 : i + 2])
        counts.append(int(k))
        n = n - k
    return counts


def test_even_count_is_lladas_quota() -> None:
    # get_num_transfer_tokens: equal split, the remainder to the first steps
    assert _counts(EvenCount(), 12, 8) == [2, 2, 2, 2, 1, 1, 1, 1]
    assert _counts(EvenCount(), 16, 6) == [3, 3, 3, 3, 2, 2]
    assert _counts(EvenCount(), 8, 8) == [1] * 8
    assert _counts(EvenCount(), 3, 5) == [1, 1, 1, 0, 0]


def test_dream_count_is_dreams_rule() -> None:
    # int(n * (1 - s/t)) on linspace(1, 1e-3, T + 1), all remaining at the last step
    # (worked by hand: 8 * (1 - 0.875125) = 0.999 rounds down to 0 at the first step)
    assert _counts(DreamCount(), 8, 8) == [0, 1, 1, 1, 1, 1, 1, 2]
    assert _counts(DreamCount(), 16, 8) == [1, 2, 2, 2, 2, 2, 2, 3]
    assert _counts(DreamCount(), 5, 12) == [0] * 8 + [1, 1, 1, 2]


def test_schedule_count_keeps_the_mdlm_default() -> None:
    assert repr(MaskGITDecoder().count) == "ScheduleCount(tokens_per_step=None)"
    assert MaskGITDecoder(tokens_per_step=2).count.tokens_per_step == 2
    with pytest.raises(ValueError, match="not both"):
        MaskGITDecoder(tokens_per_step=2, count=EvenCount())
    with pytest.raises(ValueError, match="eps"):
        DreamCount(eps=0.0)
    assert sum(_counts(ScheduleCount(), 10, 10)) <= 10


# -- parity with the models' own generators --------------------------------------------------


@pytest.mark.parametrize(
    "row",
    REFERENCE["llada"],
    ids=lambda r: f"{len(r['prompt'])}-{r['length']}-{r['block_length']}-{r['steps']}",
)
def test_llada_generate_token_for_token(denoisers: dict, row: dict) -> None:
    tokens = _complete(
        denoisers["llada"],
        MaskGITDecoder(count=EvenCount()),
        row["steps"],
        [row["prompt"]],
        row["length"],
        block_length=row["block_length"],
    )
    assert tokens[0] == row["tokens"]


@pytest.mark.parametrize(
    "row",
    REFERENCE["dream"],
    ids=lambda r: f"{r['alg']}-{len(r['prompt'])}-{r['length']}-{r['steps']}",
)
def test_dream_diffusion_generate_token_for_token(denoisers: dict, row: dict) -> None:
    strategy = DREAM_ALGORITHMS[row["alg"]](count=DreamCount())
    tokens = _complete(denoisers["dream"], strategy, row["steps"], [row["prompt"]], row["length"])
    assert tokens[0] == row["tokens"]


def test_cli_reproduces_both_models_for_several_prompts(
    models: dict[str, Path], tmp_path: Path
) -> None:
    # "the cat sat on" and "log" are the word ids [3, 5, 7, 9] and [12] of the references.
    for kind in ("llada", "dream"):
        rows = [
            r
            for r in REFERENCE[kind]
            if r["prompt"] in ([3, 5, 7, 9], [12])
            and r["length"] == 16
            and r["steps"] == 16
            and r.get("alg", "entropy") == "entropy"
            and r.get("block_length", 16) == 16
        ]
        assert len(rows) == 2
        out = tmp_path / kind
        argv = ["sample", "--model", str(models[kind]), "--prompt", "the cat sat on"]
        argv += ["--prompt", "log", "--length", "16", "--out", str(out), "--quiet"]
        argv += ["sampler.steps=16", "sampler.temperature=0", "--dtype", "float32"]
        assert main(argv) == 0
        record = json.loads((out / "samples.json").read_text())
        assert [tokens[-16:] for tokens in record["tokens"]] == [r["tokens"] for r in rows]
        assert record["sampler"]["posterior"]["count"]["name"] == {"llada": "even"}.get(
            kind, "dream"
        )
        assert len(record["completions"]) == 2


def test_cli_block_length_reproduces_llada(models: dict[str, Path], tmp_path: Path) -> None:
    row = next(
        r
        for r in REFERENCE["llada"]
        if r["prompt"] == [3, 5, 7, 9] and r["block_length"] == 8 and r["steps"] == 12
    )
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat sat on\n\n")
    argv = ["sample", "--model", str(models["llada"]), "--prompts", str(prompts)]
    argv += ["--length", "24", "--block-length", "8", "--out", str(tmp_path / "s"), "--quiet"]
    argv += ["sampler.posterior=maskgit", "sampler.steps=12", "sampler.temperature=0"]
    assert main([*argv, "--dtype", "float32"]) == 0
    record = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert record["tokens"] == [[3, 5, 7, 9, *row["tokens"]]]


# -- greedy decoding -------------------------------------------------------------------------


class _Flat:
    """A time-unconditioned denoiser: the same logits everywhere, tokens 1 and 2 tied on top."""

    time_conditioned = False

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logits = torch.tensor([0.0, 2.0, 2.0, 1.0]).expand(*z.shape, 4)
        return MaskingProcess(vocab_size=4).log_probs(logits, z)


@pytest.mark.parametrize("strategy", ["maskgit", "entropy", "margin", "dilated"])
def test_greedy_ties_go_to_the_lowest_id_and_the_leftmost_position(strategy: str) -> None:
    process = MaskingProcess(vocab_size=4)
    decoder = build_strategy({"name": strategy, "tokens_per_step": 1})
    sampler = AncestralSampler(process, decoder, steps=6, temperature=0.0)
    result = sampler.sample(_Flat(), 2, 6, return_trajectory=True, generator=torch.Generator())
    assert result.tokens.tolist() == [[1] * 6] * 2
    decoded = (result.trajectory != process.mask_id).sum(-1)[:, 0].tolist()
    assert decoded == [0, 1, 2, 3, 4, 5, 6]
    if strategy != "dilated":  # the dilated order is its own, fixed one
        first = (result.trajectory[1, 0] != process.mask_id).nonzero().flatten().tolist()
        assert first == [0]


@pytest.mark.parametrize(
    "strategy", ["mdlm", "cap", "loop", "conf", "maskgit", "entropy", "margin", "dilated"]
)
def test_every_strategy_decodes_greedily(denoisers: dict, strategy: str) -> None:
    denoiser = denoisers["dream"]
    sampler = AncestralSampler(denoiser.process(), build_strategy(strategy), 8, temperature=0.0)
    prompt = [denoiser.encode(torch.tensor([3, 5, 7, 9]))]
    results = [
        sampler.complete(denoiser, prompt, 8, block_length=4, generator=SequenceGenerator(s, 1))
        for s in (0, 1)
    ]
    tokens = results[0].tokens
    assert tokens.shape == (1, 8) and int(tokens.max()) < denoiser.vocab_size
    if strategy in ("maskgit", "entropy", "margin", "dilated"):  # nothing random is left
        assert torch.equal(results[1].tokens, tokens)
    # each token is the argmax given the rest when it was decoded: at the end, the
    # last-decoded token is the argmax given everything else
    sequence = torch.cat((prompt[0], tokens[0]))[None]
    if strategy in ("maskgit", "entropy", "margin"):
        # the first token decoded is the argmax of the all-masked block
        first = torch.cat((prompt[0], torch.full((8,), denoiser.mask_id)))[None]
        with torch.no_grad():
            best = denoiser(first, torch.ones(1))[0, 4:8].argmax(-1)
        assert bool((best == sequence[0, 4:8]).any())


def test_temperature_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="temperature"):
        AncestralSampler(MaskingProcess(vocab_size=4), MaskingPosterior(), 4, temperature=-1.0)
    spec = RunConfig.from_dict({"sampler": {"temperature": 0, "posterior": "maskgit"}}).sampler
    assert spec.temperature == 0.0


# -- batches of prompts of different lengths ---------------------------------------------------

PROMPTS = [[3, 5, 7, 9], [10, 4, 13, 14, 2, 1, 6, 8, 11, 3, 4, 5, 6, 7, 8, 9, 10], [12]]


@pytest.mark.parametrize("kind", ["llada", "dream"])
@pytest.mark.parametrize(
    ("form", "temperature"),
    [
        ({"name": "maskgit", "count": "even"}, 0.0),
        ({"name": "entropy", "count": "dream"}, 0.0),
        ({"name": "maskgit", "count": "even"}, 1.0),
        ("cap", 1.0),
        ("mdlm", 0.0),
    ],
)
def test_prompts_of_different_lengths_complete_as_alone(
    denoisers: dict, kind: str, form: object, temperature: float
) -> None:
    denoiser = denoisers[kind]
    sampler = AncestralSampler(denoiser.process(), build_strategy(form), 8, temperature=temperature)
    rows = [denoiser.encode(torch.tensor(p)) for p in PROMPTS]
    together = sampler.complete_batches(denoiser, rows, 8, seed=3, block_length=4)
    pairs = sampler.complete_batches(denoiser, rows, 8, seed=3, batch_size=2, block_length=4)
    assert torch.equal(pairs.tokens, together.tokens)
    for i, row in enumerate(rows):
        alone = sampler.complete(
            denoiser, [row], 8, block_length=4, generator=SequenceGenerator(3, 1, start=i)
        )
        assert torch.equal(alone.tokens[0], together.tokens[i])
        assert int(alone.sequence_nfe[0]) == int(together.sequence_nfe[i])


def test_a_padded_tensor_of_prompts_with_lengths(denoisers: dict) -> None:
    denoiser = denoisers["llada"]
    sampler = AncestralSampler(
        denoiser.process(), MaskGITDecoder(count=EvenCount()), 4, temperature=0.0
    )
    padded = torch.tensor([[3, 5, 7, 9], [12, 0, 0, 0]])
    from_tensor = sampler.complete(denoiser, padded, 8, lengths=torch.tensor([4, 1]))
    from_list = sampler.complete(denoiser, [padded[0], padded[1, :1]], 8)
    assert torch.equal(from_tensor.tokens, from_list.tokens)


# -- named errors ----------------------------------------------------------------------------


def test_bad_blocks_and_prompts_are_named(
    denoisers: dict, models: dict[str, Path], tmp_path: Path
) -> None:
    denoiser = denoisers["llada"]
    sampler = AncestralSampler(denoiser.process(), MaskGITDecoder(count=EvenCount()), 6)
    prompt = [denoiser.encode(torch.tensor([3, 5]))]
    with pytest.raises(
        ValueError, match=r"`block_length` \(5\) must divide the generated length \(8\)"
    ):
        sampler.complete(denoiser, prompt, 8, block_length=5)
    with pytest.raises(
        ValueError, match=r"`steps` \(6\) must be divisible by the number of blocks \(4\)"
    ):
        sampler.complete(denoiser, prompt, 8, block_length=2)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        sampler.complete(denoiser, [prompt[0], torch.tensor([], dtype=torch.long)], 8)
    path = models["llada"]
    with pytest.raises(ValueError, match=r"`block_length` \(5\) must divide `length` \(8\)"):
        sample_model(path, prompt="the cat", length=8, block_length=5, out=tmp_path / "a")
    with pytest.raises(ValueError, match=r"`prompt` 2 is empty"):
        sample_model(path, prompt=["the cat", ""], length=8, out=tmp_path / "b")
    with pytest.raises(ValueError, match="past the model's context of 64 tokens"):
        sample_model(path, prompt="the cat", length=63, out=tmp_path / "c")
    with pytest.raises(
        ValueError, match=r"`steps` \(6\) must be divisible by the number of blocks \(4\)"
    ):
        sample_model(
            path, ["sampler.steps=6"], prompt="the", length=8, block_length=2, out=tmp_path / "d"
        )
    assert (
        main(
            [
                "sample",
                "--model",
                str(path),
                "--prompt",
                "the",
                "--length",
                "8",
                "--block-length",
                "3",
                "--out",
                str(tmp_path / "e"),
                "--quiet",
            ]
        )
        == 2
    )


@pytest.mark.parametrize(
    ("form", "temperature"), [({"name": "maskgit", "count": "even"}, 0.0), ("cap", 1.0)]
)
def test_the_dit_completes_prompts_of_different_lengths_as_alone(
    form: object, temperature: float
) -> None:
    from discdiff import SUBS, DiT, DiTConfig

    process = MaskingProcess(vocab_size=11)
    torch.manual_seed(0)
    network = DiT(DiTConfig.micro(vocab_size=12, model_length=32)).eval()
    with torch.no_grad():  # the modulations and the output layer start at zero
        for name, parameter in network.named_parameters():
            if "adaLN" in name or "output_layer.linear" in name:
                parameter.normal_(0.0, 0.1)
    denoiser = SUBS(network, process)
    sampler = AncestralSampler(process, build_strategy(form), 6, temperature=temperature)
    rows = [torch.tensor(p) for p in ([1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 1, 2], [7])]
    together = sampler.complete_batches(denoiser, rows, 6, seed=1, block_length=3)
    for i, row in enumerate(rows):
        alone = sampler.complete(
            denoiser, [row], 6, block_length=3, generator=SequenceGenerator(1, 1, start=i)
        )
        assert torch.equal(alone.tokens[0], together.tokens[i])
        assert int(alone.sequence_nfe[0]) == int(together.sequence_nfe[i])
    blocks = BlockSampler(sampler, 3).complete_batches(denoiser, rows, 6, seed=1)
    assert torch.equal(blocks.tokens, together.tokens)
    assert torch.equal(blocks.sequence_nfe, together.sequence_nfe)
    with pytest.raises(ValueError, match="positions"):  # the DiT's step takes no positions
        BlockSampler(sampler, 3, cache="dual").complete(denoiser, rows, 6)


@pytest.mark.parametrize(
    "row",
    REFERENCE["fast_dllm_threshold"],
    ids=lambda r: f"{len(r['prompt'])}-{r['length']}-{r['block_length']}-{r['threshold']}",
)
def test_fast_dllm_threshold_decoding_token_for_token(denoisers: dict, row: dict) -> None:
    denoiser = denoisers["llada"]
    strategy = build_strategy(
        {"name": "threshold", "threshold": row["threshold"], "posterior": "maskgit"}
    )
    sampler = AncestralSampler(denoiser.process(), strategy, row["length"], temperature=0.0)
    prompt = [denoiser.encode(torch.tensor(row["prompt"]))]
    result = sampler.complete(denoiser, prompt, row["length"], block_length=row["block_length"])
    assert denoiser.decode(result.tokens)[0].tolist() == row["tokens"]
    # one call per step of Fast-dLLM's loop, none once a block is decoded
    assert int(result.sequence_nfe[0]) == result.nfe == row["nfe"]


# -- Fast-dLLM's caches ----------------------------------------------------------------------


def _fast_dllm_form(threshold: float | None) -> object:
    if threshold is None:  # LLaDA's per-step quota
        return {"name": "maskgit", "count": "even"}
    return {"name": "threshold", "threshold": threshold, "posterior": "maskgit"}


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize(
    "index",
    range(len(REFERENCE["fast_dllm_prefix_cache"])),
    ids=lambda i: (
        "-".join(
            str(REFERENCE["fast_dllm_prefix_cache"][i][k])
            for k in ("length", "block_length", "steps", "threshold")
        )
        + f"-p{len(REFERENCE['fast_dllm_prefix_cache'][i]['prompt'])}"
    ),
)
def test_fast_dllm_cached_generators_token_for_token(
    denoisers: dict, cache: str, index: int
) -> None:
    row = REFERENCE[f"fast_dllm_{cache}_cache"][index]
    denoiser = denoisers["llada"]
    strategy = build_strategy(_fast_dllm_form(row["threshold"]))
    sampler = BlockSampler(
        AncestralSampler(denoiser.process(), strategy, row["steps"], temperature=0.0),
        row["block_length"],
        cache=cache,
    )
    prompt = [denoiser.encode(torch.tensor(row["prompt"]))]
    result = sampler.complete(denoiser, prompt, row["length"])
    assert denoiser.decode(result.tokens)[0].tolist() == row["tokens"]
    # Fast-dLLM's loop calls the network once more in a block its first call decodes whole;
    # discdiff makes no call once a block is decoded
    blocks = row["length"] // row["block_length"]
    assert blocks <= int(result.sequence_nfe[0]) == result.nfe <= row["nfe"]
    if row["threshold"] is None:  # the quota takes every step of every block
        assert result.nfe == row["nfe"] == row["steps"]


def test_the_caches_change_tokens_against_the_uncached_generator() -> None:
    # the approximation is real on these models, so parity per cache mode means something
    def key(r: dict) -> tuple:
        return (tuple(r["prompt"]), r["length"], r["block_length"], r["steps"])

    uncached = {key(r): r["tokens"] for r in REFERENCE["llada"]}
    for cache in ("prefix", "dual"):
        rows = [
            r
            for r in REFERENCE[f"fast_dllm_{cache}_cache"]
            if r["threshold"] is None and key(r) in uncached
        ]
        assert len(rows) == 18
        assert sum(r["tokens"] != uncached[key(r)] for r in rows) >= 12


@pytest.mark.parametrize("kind", ["llada", "dream"])
@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_caches_refreshed_every_call_equal_the_models_own_decoding(
    denoisers: dict, kind: str, cache: str
) -> None:
    # refresh=1 recomputes every position at every call: exactly the uncached decoding, which
    # for Dream (shifted logits: the block's first position reads the one before) is
    # diffusion_generate's, and for LLaDA generate.py's
    denoiser = denoisers[kind]
    form = {"llada": {"name": "maskgit", "count": "even"}, "dream": {"name": "entropy"}}[kind]
    strategy = build_strategy(form | ({"count": "dream"} if kind == "dream" else {}))
    inner = AncestralSampler(denoiser.process(), strategy, 12, temperature=0.0)
    rows = [denoiser.encode(torch.tensor(p)) for p in PROMPTS]
    every = BlockSampler(inner, 8, cache=cache, refresh=1).complete(denoiser, rows, 24)
    none = BlockSampler(inner, 8, cache="none").complete(denoiser, rows, 24)
    plain = inner.complete(denoiser, rows, 24, block_length=8)
    assert torch.equal(every.tokens, none.tokens) and torch.equal(none.tokens, plain.tokens)
    assert torch.equal(every.sequence_nfe, plain.sequence_nfe)
    once = BlockSampler(inner, 8, cache=cache).complete(denoiser, rows, 24)
    assert once.tokens_processed < every.tokens_processed


@pytest.mark.parametrize("kind", ["llada", "dream"])
@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize(
    ("form", "temperature"),
    [
        ({"name": "threshold", "threshold": 0.2, "posterior": "maskgit"}, 0.0),
        ({"name": "maskgit", "count": "even"}, 1.0),
    ],
)
def test_every_cache_completes_prompts_of_different_lengths_as_alone(
    denoisers: dict, kind: str, cache: str, form: object, temperature: float
) -> None:
    # the 17-token prompt's left padding covers whole blocks of 4 of the others
    denoiser = denoisers[kind]
    inner = AncestralSampler(denoiser.process(), build_strategy(form), 12, temperature=temperature)
    sampler = BlockSampler(inner, 4, cache=cache)
    rows = [denoiser.encode(torch.tensor(p)) for p in PROMPTS]
    together = sampler.complete_batches(denoiser, rows, 12, seed=5)
    pairs = sampler.complete_batches(denoiser, rows, 12, seed=5, batch_size=2)
    assert torch.equal(pairs.tokens, together.tokens)
    assert torch.equal(pairs.sequence_nfe, together.sequence_nfe)
    for i, row in enumerate(rows):
        alone = sampler.complete(denoiser, [row], 12, generator=SequenceGenerator(5, 1, start=i))
        assert torch.equal(alone.tokens[0], together.tokens[i])
        assert int(alone.sequence_nfe[0]) == int(together.sequence_nfe[i]) == alone.nfe


def test_a_cache_the_denoiser_cannot_honour_is_named(denoisers: dict) -> None:
    denoiser = denoisers["llada"]
    inner = AncestralSampler(denoiser.process(), MaskGITDecoder(count=EvenCount()), 4)
    prompt = [denoiser.encode(torch.tensor([3, 5]))]
    with pytest.raises(ValueError, match=r"`cache` 'exact' needs a block-causal model"):
        BlockSampler(inner, 4, cache="exact").complete(denoiser, prompt, 8)
    with pytest.raises(ValueError, match="`block_size` is needed"):
        BlockSampler(inner, cache="dual").complete(denoiser, prompt, 8)
    with pytest.raises(
        ValueError, match=r"`steps` \(4\) must be divisible by the number of blocks \(8\)"
    ):
        BlockSampler(inner, 2, cache="dual").complete(denoiser, prompt, 16)
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        BlockSampler(inner, 4, cache="dual").complete(denoiser, [prompt[0][:0]], 8)


def test_cli_dual_cache_reproduces_fast_dllm_for_several_prompts(
    models: dict[str, Path], tmp_path: Path
) -> None:
    # "the cat sat on" and "log" are the word ids [3, 5, 7, 9] and [12] of the references
    rows = [
        r
        for r in REFERENCE["fast_dllm_dual_cache"]
        if r["prompt"] in ([3, 5, 7, 9], [12])
        and (r["length"], r["block_length"], r["steps"], r["threshold"]) == (24, 8, 12, None)
    ]
    assert len(rows) == 2
    argv = ["sample", "--model", str(models["llada"]), "--prompt", "the cat sat on"]
    argv += ["--prompt", "log", "--length", "24", "--block-length", "8", "--quiet"]
    argv += ["sampler.posterior=maskgit", "sampler.steps=12", "sampler.temperature=0"]
    argv += ["sampler.cache=dual", "--dtype", "float32", "--out", str(tmp_path / "s")]
    assert main(argv) == 0
    record = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert [tokens[-24:] for tokens in record["tokens"]] == [r["tokens"] for r in rows]
    assert record["sampler"]["cache"] == "dual" and len(record["completions"]) == 2
    assert main([*argv[:-1], str(tmp_path / "e"), "sampler.cache=exact"]) == 2


def test_configs_written_with_a_boolean_cache_still_load(tmp_path: Path) -> None:
    # `cache: true/false` was the x_θ reuse before `sampler.cache` named a key/value cache
    path = tmp_path / "run.yaml"
    path.write_text("sampler:\n  posterior: mdlm\n  steps: 8\n  cache: false\n")
    spec = RunConfig.load(path).sampler
    assert spec.reuse is False and spec.cache is None
    assert spec.build(MaskingProcess(vocab_size=4)).cache is False
    spec = RunConfig.from_dict({"sampler": {"cache": True}}).sampler
    assert spec.reuse is True and spec.cache is None
    assert RunConfig.from_dict({"sampler": {"cache": "prefix"}}).sampler.cache == "prefix"
    with pytest.raises(ConfigError, match=r"sampler\.cache"):
        RunConfig.from_dict({"sampler": {"cache": "everything"}})
    with pytest.raises(ConfigError, match=r"sampler\.cache"):
        RunConfig.from_dict({"sampler": {"cache": False, "reuse": True}})


def test_confidences_of_a_peaked_model_stay_distinct() -> None:
    # p = 1 - 7e^-30 and 1 - 7e^-31: a float32 log-softmax gives log p = 0 for both (a tie,
    # decided by position); the float64 normaliser keeps them apart, as LLaDA's float64 softmax
    from discdiff.models.hf import HuggingFaceDenoiser

    class Peaked(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            logits = torch.zeros(*input_ids.shape, 8)
            logits[..., 2] = torch.tensor([30.0, 31.0])
            return type("Output", (), {"logits": logits})()

    denoiser = HuggingFaceDenoiser(Peaked(), mask_token_id=7, model_vocab_size=8, mask_mass=True)
    z = torch.full((1, 2), denoiser.mask_id)
    with torch.no_grad():
        confidence = denoiser(z, torch.ones(1)).double().exp()[0, :, 2]
    assert float(torch.log_softmax(torch.tensor([30.0] + [0.0] * 7), -1)[0]) == 0.0
    expected = 1 - 7 * torch.exp(-torch.tensor([30.0, 31.0], dtype=torch.float64))
    assert torch.allclose(1 - confidence, 1 - expected, rtol=1e-6)
    decoder = MaskGITDecoder(tokens_per_step=1)
    sampler = AncestralSampler(denoiser.process(), decoder, 2, temperature=0.0)
    first = sampler.sample(denoiser, 1, 2, return_trajectory=True).trajectory[1, 0]
    assert first.tolist() == [denoiser.mask_id, 2]  # the more confident position first


def test_factor_count_is_fast_dllms_rule() -> None:
    process = MaskingProcess(vocab_size=4)
    one, zero = torch.ones(1), torch.zeros(1)
    # bars for ranks 2, 3, 4 at f = 1: 2/3, 3/4, 4/5
    score = torch.tensor([[0.9, 0.8, 0.7, 0.1, -torch.inf]], dtype=torch.float64)
    assert int(FactorCount(1.0)(process, torch.tensor([4]), one, one / 2, score)) == 2
    # only the last fails: all are decoded, as get_transfer_index_dynamic does
    score = torch.tensor([[0.9, 0.8, 0.76, 0.1]], dtype=torch.float64)
    assert int(FactorCount(1.0)(process, torch.tensor([4]), one, one / 2, score)) == 4
    assert int(FactorCount(1.0)(process, torch.tensor([4]), one, zero, score)) == 4
    with pytest.raises(ValueError, match="factor"):
        FactorCount(0.0)


@pytest.mark.parametrize(
    "row",
    REFERENCE["fast_dllm_factor"],
    ids=lambda r: (
        f"{r['cache']}-{len(r['prompt'])}-{r['length']}-{r['block_length']}-{r['factor']}"
    ),
)
def test_fast_dllm_factor_rule_token_for_token(denoisers: dict, row: dict) -> None:
    denoiser = denoisers["llada"]
    form = {"name": "maskgit", "count": {"name": "factor", "factor": row["factor"]}}
    strategy = build_strategy(form)
    inner = AncestralSampler(denoiser.process(), strategy, row["length"], temperature=0.0)
    prompt = [denoiser.encode(torch.tensor(row["prompt"]))]
    if row["cache"] == "none":
        result = inner.complete(denoiser, prompt, row["length"], block_length=row["block_length"])
    else:
        sampler = BlockSampler(inner, row["block_length"], cache=row["cache"])
        result = sampler.complete(denoiser, prompt, row["length"])
    assert denoiser.decode(result.tokens)[0].tolist() == row["tokens"]
    assert int(result.sequence_nfe[0]) == result.nfe == row["nfe"]
