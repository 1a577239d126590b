"""LLaDA and Dream loaded natively: reference logits, no remote code, every sampler, the CLI."""

import json
import sys
from pathlib import Path

import pytest
import torch
from llm_fixtures import (
    INPUT_IDS,
    MDLM_INPUT_IDS,
    MDLM_SIGMAS,
    write_bpe_tokenizer,
    write_tiny_dream,
    write_tiny_llada,
    write_tiny_mdlm,
)

from discdiff.cli import main
from discdiff.config import RunConfig, choices
from discdiff.models.diffusion_llms import HUB_FILES, load_diffusion_llm, resolve_model
from discdiff.models.dit import DiT
from discdiff.models.dream import load_dream
from discdiff.models.llada import load_llada
from discdiff.processes import MaskingProcess
from discdiff.runs import sample_model

REFERENCE = json.loads((Path(__file__).parent / "data" / "llm_reference.json").read_text())
WRITERS = {"llada": write_tiny_llada, "dream": write_tiny_dream}
LOADERS = {"llada": load_llada, "dream": load_dream}
MASKING_STRATEGIES = sorted(
    name
    for name, cls in choices("strategy").items()
    if getattr(cls, "process_type", MaskingProcess) is MaskingProcess
)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llms")
    return {name: write(root / name) for name, write in WRITERS.items()}


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_logits_match_the_models_own_code(checkpoints: dict[str, Path], kind: str) -> None:
    # Reference: the model's own modeling code on the same files (tests/data/llm_reference.json).
    model = LOADERS[kind](checkpoints[kind], dtype=torch.float32, attention="sdpa")
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(INPUT_IDS)).logits
    expected = torch.tensor(REFERENCE[kind])
    assert logits.shape == expected.shape == (2, 12, 64)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


def test_mdlm_hub_layout_matches_mdlms_own_dit(tmp_path: Path) -> None:
    # Reference: kuleshov-group/mdlm's models/dit.py on the same Hub-layout files.
    model = DiT.from_pretrained(write_tiny_mdlm(tmp_path / "mdlm")).eval()
    with torch.no_grad():
        logits = model(torch.tensor(MDLM_INPUT_IDS), torch.tensor(MDLM_SIGMAS))
    expected = torch.tensor(REFERENCE["mdlm"])
    assert logits.shape == expected.shape == (2, 10, 21)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_padding_leaves_the_real_positions_unchanged(
    checkpoints: dict[str, Path], kind: str
) -> None:
    model = LOADERS[kind](checkpoints[kind], attention="math")
    ids = torch.tensor(INPUT_IDS)
    padded = torch.cat((ids, torch.full((2, 4), 1)), dim=1)
    keep = torch.cat((torch.ones(2, 12), torch.zeros(2, 4)), dim=1)
    with torch.no_grad():
        alone = model(input_ids=ids).logits
        together = model(input_ids=padded, attention_mask=keep).logits[:, :12]
        unmasked = model(input_ids=padded).logits[:, :12]
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
    assert (unmasked - alone).abs().max() > 1e-3  # the padding would matter without the mask


def test_bf16_weights_load_as_stored_or_cast(checkpoints: dict[str, Path]) -> None:
    model = load_llada(checkpoints["llada"], dtype=torch.bfloat16)
    assert model.embed.weight.dtype == torch.bfloat16
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(INPUT_IDS)).logits.float()
    torch.testing.assert_close(logits, torch.tensor(REFERENCE["llada"]), rtol=0.05, atol=0.1)


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_denoiser_relabels_the_mask_and_applies_subs(
    checkpoints: dict[str, Path], kind: str
) -> None:
    denoiser = load_diffusion_llm(checkpoints[kind])
    assert denoiser.vocab_size == 63 and denoiser.mask_id == 63 and denoiser.model_mask_id == 60
    model_ids = torch.tensor(INPUT_IDS)
    z = denoiser.encode(model_ids)
    assert torch.equal(denoiser.decode(z), model_ids)
    assert bool((z[model_ids == 60] == 63).all()) and int(z.max()) == 63
    log_probs = denoiser(z, torch.full((2,), 0.5))
    assert log_probs.shape == (2, 12, 63)
    masked = z == 63
    # normalised over the whole vocabulary: the data tokens leave out the mask's probability
    with torch.no_grad():
        p_mask = denoiser.model(input_ids=model_ids).logits.softmax(-1)[..., 60]
    torch.testing.assert_close(log_probs[masked].exp().sum(-1), 1 - p_mask[masked])
    assert float(p_mask[masked].min()) > 1e-3  # the mask's mass is not negligible here
    assert bool((log_probs[~masked].argmax(-1) == z[~masked]).all())
    assert denoiser.tokenizer.decode([3, 5, 60]) == "the cat " + denoiser.tokenizer.decode([60])


def test_no_remote_code_path_is_reachable(tmp_path: Path) -> None:
    directory = write_tiny_llada(tmp_path / "poisoned")
    sentinel = tmp_path / "code-ran"
    poison = f"open({str(sentinel)!r}, 'w').write('ran')\nraise RuntimeError('remote code ran')\n"
    for name in ("modeling_llada.py", "configuration_llada.py", "tokenization_llada.py"):
        (directory / name).write_text(poison)
    tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": ["tokenization_llada.LLaDATokenizer", None]}
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    denoiser = load_diffusion_llm(directory)
    sample_model(directory, ["sampler.steps=2"], prompt="the cat", length=2, out=tmp_path / "s")
    assert denoiser.tokenizer("the cat")["input_ids"] == [3, 5]
    assert not sentinel.exists()
    # The poison is live: importing it would have left the sentinel.
    sys.path.insert(0, str(directory))
    try:
        with pytest.raises(RuntimeError, match="remote code ran"):
            __import__("modeling_llada")
    finally:
        sys.path.remove(str(directory))
    assert sentinel.exists()


def test_dreams_tokenizer_loads_as_qwen2s_without_its_code(tmp_path: Path) -> None:
    directory = write_tiny_dream(tmp_path / "dream", tokenizer=False)
    write_bpe_tokenizer(directory)
    sentinel = tmp_path / "code-ran"
    (directory / "tokenization_dream.py").write_text(f"open({str(sentinel)!r}, 'w')\n")
    tokenizer = load_diffusion_llm(directory).tokenizer
    assert type(tokenizer).__name__ == "Qwen2Tokenizer" and not sentinel.exists()
    ids = tokenizer("the cat.the,cat")["input_ids"]
    # Computed with Dream's tokenization_dream.py on these files (byte-level BPE merges).
    assert ids == [30, 33, 26, 30, 27, 2, 0, 19]
    assert tokenizer.decode(ids) == "the cat.the,cat" and tokenizer.mask_token_id == 35
    config = json.loads((directory / "tokenizer_config.json").read_text())
    (directory / "tokenizer_config.json").write_text(
        json.dumps({**config, "tokenizer_class": "MyTokenizer"})
    )
    with pytest.raises(ValueError, match="'MyTokenizer' is not a tokenizer class of transformers"):
        load_diffusion_llm(directory)


def test_hub_ids_fetch_weights_and_tokenizer_but_no_code(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id: str, allow_patterns: list[str]) -> str:
        calls.append((repo_id, allow_patterns))
        return str(checkpoints["llada"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert resolve_model(checkpoints["llada"]) == checkpoints["llada"]  # a path: never fetched
    assert calls == []
    assert resolve_model("GSAI-ML/LLaDA-8B-Base") == checkpoints["llada"]
    assert calls == [("GSAI-ML/LLaDA-8B-Base", HUB_FILES)]
    assert not any(pattern.endswith(".py") or pattern == "*" for pattern in HUB_FILES)
    with pytest.raises(FileNotFoundError, match="no directory and no Hub repo id"):
        resolve_model("./no/such/dir")


def test_unsupported_configs_are_refused_by_name(tmp_path: Path) -> None:
    directory = write_tiny_llada(tmp_path / "alibi", tokenizer=False)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "alibi": True}))
    with pytest.raises(ValueError, match="alibi"):
        load_llada(directory)
    (directory / "config.json").write_text(json.dumps({**config, "n_layers": 3}))
    with pytest.raises(ValueError, match=r"missing \['layers\.2\."):
        load_llada(directory)
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported"):
        load_diffusion_llm(directory)


@pytest.mark.parametrize("strategy", MASKING_STRATEGIES)
@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_every_strategy_completes_a_prompt(
    checkpoints: dict[str, Path], kind: str, strategy: str
) -> None:
    denoiser = load_diffusion_llm(checkpoints[kind])
    spec = RunConfig.from_dict(
        {"sampler": {"posterior": strategy, "steps": 8, "samples": 2, "batch_size": 2}}
    ).sampler
    prompt = denoiser.encode(torch.tensor([[3, 5, 7, 9]]))
    with torch.no_grad():
        result = spec.build(denoiser.process()).sample_batches(
            denoiser, 2, 12, seed=0, prompt=prompt, blocks=2
        )
    tokens = result.tokens
    assert tokens.shape == (2, 12)
    assert torch.equal(tokens[:, :4], prompt.expand(2, -1))
    assert bool(((tokens >= 0) & (tokens < denoiser.vocab_size)).all())  # no mask left


def test_cli_samples_text_from_a_tiny_llada(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "samples"
    argv = ["sample", "--model", str(checkpoints["llada"]), "--prompt", "the cat sat on"]
    argv += ["--length", "6", "--blocks", "2", "--out", str(out), "--quiet"]
    argv += ["sampler.posterior=loop", "sampler.steps=6", "sampler.samples=2"]
    assert main(argv) == 0
    record = json.loads((out / "samples.json").read_text())
    assert record["sampler"]["posterior"]["name"] == "loop"
    assert record["sampler"]["prompt"] == "the cat sat on"
    assert len(record["completions"]) == 2
    for tokens, text, completion in zip(
        record["tokens"], record["texts"], record["completions"], strict=True
    ):
        assert tokens[:4] == [3, 5, 7, 9] and len(tokens) == 10 and 60 not in tokens
        assert text.startswith("the cat sat on") and completion.strip()
    printed = capsys.readouterr().out
    assert record["completions"][0] in printed
    # The same folder with another prompt is refused, not overwritten.
    with pytest.raises(FileExistsError, match="prompt"):
        sample_model(
            checkpoints["llada"], ["sampler.posterior=loop"], prompt="a dog", length=6, out=out
        )


def test_cli_errors_name_the_problem(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    directory = write_tiny_llada(tmp_path / "no-template")
    config = json.loads((directory / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    assert main(["sample", "--model", str(directory), "--chat", "--prompt", "the"]) == 2
    assert "has no chat template" in capsys.readouterr().err
    assert main(["sample", "--run", "synthetic", "--prompt", "the"]) == 2
    assert "--prompt, --prompts and --chat need --model" in capsys.readouterr().err


def test_chat_template_wraps_the_prompt(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    folder = sample_model(
        checkpoints["dream"],
        ["sampler.steps=4"],
        prompt="the dog",
        length=4,
        chat=True,
        out=tmp_path / "chat",
    )
    record = json.loads((folder / "samples.json").read_text())
    assert record["tokens"][0][:3] == [0, 3, 6]  # "<s> the dog" from the template
