"""Denoisers: attention backends, SUBS, the DiT and its checkpoints, the HF adapter."""

import json

import pytest
import torch
from safetensors.torch import save_file

import discdiff as dd
from discdiff.models import (
    SUBS,
    DiT,
    DiTConfig,
    HuggingFaceDenoiser,
    Opaque,
    attention,
    is_time_conditioned,
    load_torch_checkpoint,
    subs_log_probs,
)


def randomised(model, seed=0):
    """Give every parameter random values (zero-initialised layers hide bugs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return model.eval()


def padding(batch, length, generator):
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length
    return torch.arange(length) < lengths[:, None]


# -- attention -----------------------------------------------------------------


@pytest.mark.parametrize("padded", [False, True])
def test_attention_backends_agree(padded):
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 17, 4, 8, generator=generator) for _ in range(3))
    mask = padding(3, 17, generator) if padded else None
    reference = attention(q, k, v, backend="math", padding_mask=mask)
    for backend in ("sdpa", "auto"):
        got = attention(q, k, v, backend=backend, padding_mask=mask)
        torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-5)


def test_padded_keys_get_no_weight():
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 6, 2, 4, generator=generator) for _ in range(3))
    mask = torch.tensor([[True, True, True, True, False, False]])
    out = attention(q, k, v, backend="sdpa", padding_mask=mask)
    v_changed = v.clone()
    v_changed[:, 4:] = 100.0
    torch.testing.assert_close(attention(q, k, v_changed, backend="sdpa", padding_mask=mask), out)


@pytest.mark.parametrize("padded", [False, True])
def test_dit_backends_agree(padded):
    generator = torch.Generator().manual_seed(2)
    tokens = torch.randint(11, (3, 24), generator=generator)
    sigma = torch.rand(3, generator=generator)
    mask = padding(3, 24, generator) if padded else None
    outputs = []
    for backend in ("math", "sdpa"):
        model = randomised(DiT(DiTConfig.micro(vocab_size=11, attention=backend)))
        outputs.append(model(tokens, sigma, padding_mask=mask))
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=1e-5)


def test_xformers_needs_cuda():
    q = torch.randn(1, 4, 1, 8)
    with pytest.raises(ValueError, match="xformers"):
        attention(q, q, q, backend="xformers")
    with pytest.raises((ValueError, TypeError), match=r"backend|attention"):
        attention(q, q, q, backend="flash")


# -- SUBS ----------------------------------------------------------------------


def test_subs_is_a_log_distribution_with_carry_over():
    generator = torch.Generator().manual_seed(3)
    vocab, mask_id = 5, 5
    z_t = torch.tensor([[5, 0, 5, 3, 4, 5]])
    logits = torch.randn(1, 6, vocab + 1, generator=generator)
    logits[..., mask_id] = 1e4  # a backbone that loves the mask must not leak mass to it
    log_probs = subs_log_probs(logits, z_t, vocab_size=vocab, mask_id=mask_id)
    assert log_probs.shape == (1, 6, vocab)
    probs = log_probs.exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 6))
    unmasked = z_t != mask_id
    assert torch.equal(probs[unmasked], torch.nn.functional.one_hot(z_t[unmasked], vocab).float())
    expected = logits[..., :vocab].log_softmax(-1)
    torch.testing.assert_close(log_probs[~unmasked], expected[~unmasked])


def test_subs_output_is_finite_under_low_precision():
    z_t = torch.tensor([[2, 0]])
    for dtype in (torch.bfloat16, torch.float16):
        logits = torch.randn(1, 2, 3).to(dtype)
        out = subs_log_probs(logits, z_t, vocab_size=2, mask_id=2)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_subs_rejects_non_finite_logits(bad):
    logits = torch.zeros(1, 2, 3)
    logits[0, 1, 0] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        subs_log_probs(logits, torch.tensor([[2, 2]]), vocab_size=2, mask_id=2)


def test_subs_denoiser_feeds_sigma_only_when_time_conditioned():
    process = dd.MaskingProcess(vocab_size=10)
    z_t = torch.full((2, 8), 10)
    t = torch.tensor([0.2, 0.9])
    model = randomised(DiT(DiTConfig.micro(vocab_size=11, time_conditioning=True)))
    conditioned = SUBS(model, process)
    assert is_time_conditioned(conditioned)
    out = conditioned(z_t, t)
    assert not torch.allclose(out[0], out[1])
    plain = SUBS(model, process, time_conditioning=False)
    assert not is_time_conditioned(plain)
    out = plain(z_t, t)
    torch.testing.assert_close(out[0], out[1])
    assert isinstance(plain, dd.Denoiser)


def test_subs_denoiser_plugs_into_a_posterior():
    process = dd.MaskingProcess(vocab_size=10)
    denoiser = SUBS(randomised(DiT(DiTConfig.micro(vocab_size=11))), process)
    z_t = process.sample(torch.randint(10, (2, 16)), torch.tensor([0.7, 0.7]))
    t, s = torch.tensor([0.7, 0.7]), torch.tensor([0.6, 0.6])
    q = dd.RemaskPosterior(dd.CapSchedule(0.05))(process, z_t, denoiser(z_t, t).exp(), t, s)
    z_s = q.sample()
    assert (
        z_s[~process.is_masked(z_s) & ~process.is_masked(z_t)]
        == z_t[~process.is_masked(z_s) & ~process.is_masked(z_t)]
    ).all()


# -- the DiT -------------------------------------------------------------------


def test_small_preset_parameter_count():
    with torch.device("meta"):
        model = DiT(DiTConfig.small())
    assert sum(p.numel() for p in model.parameters()) == 169_627_218


def test_zero_initialised_output_gives_uniform_logits():
    model = DiT(DiTConfig.micro(vocab_size=7)).eval()
    out = model(torch.randint(7, (2, 5)), torch.zeros(2))
    assert torch.equal(out, torch.zeros(2, 5, 7))


def test_dit_rejects_bad_input():
    model = DiT(DiTConfig.micro(vocab_size=7, model_length=16))
    with pytest.raises(ValueError, match="model_length"):
        model(torch.zeros(1, 17, dtype=torch.long), torch.zeros(1))
    with pytest.raises(ValueError, match="tokens"):
        model(torch.full((1, 4), 7), torch.zeros(1))
    with pytest.raises(ValueError, match="hidden_dim"):
        DiTConfig.micro(vocab_size=7, n_heads=3)


def test_save_and_load_round_trip_is_bit_for_bit(tmp_path):
    model = randomised(DiT(DiTConfig.micro(vocab_size=13, time_conditioning=True)))
    tokens, sigma = torch.randint(13, (2, 20)), torch.rand(2)
    model.save_pretrained(tmp_path / "run")
    loaded = DiT.from_pretrained(tmp_path / "run").eval()
    assert loaded.config == model.config
    assert torch.equal(loaded(tokens, sigma), model(tokens, sigma))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]


def test_an_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = randomised(DiT(DiTConfig.micro(vocab_size=13)))
    model.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("discdiff.models.pretrained.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        randomised(model, seed=1).save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


# The released MDLM checkpoints' parameter names and shapes (SPEC §4), written out
# independently of the module so that a renamed layer fails here.
def mdlm_state_dict(d, cond, blocks, heads, vocab, generator):
    shapes = {
        "backbone.vocab_embed.embedding": (vocab, d),
        "backbone.sigma_map.mlp.0.weight": (cond, 256),
        "backbone.sigma_map.mlp.0.bias": (cond,),
        "backbone.sigma_map.mlp.2.weight": (cond, cond),
        "backbone.sigma_map.mlp.2.bias": (cond,),
        "backbone.rotary_emb.inv_freq": (d // heads // 2,),
    }
    for i in range(blocks):
        b = f"backbone.blocks.{i}."
        shapes |= {
            b + "norm1.weight": (d,),
            b + "attn_qkv.weight": (3 * d, d),
            b + "attn_out.weight": (d, d),
            b + "norm2.weight": (d,),
            b + "mlp.0.weight": (4 * d, d),
            b + "mlp.0.bias": (4 * d,),
            b + "mlp.2.weight": (d, 4 * d),
            b + "mlp.2.bias": (d,),
            b + "adaLN_modulation.weight": (6 * d, cond),
            b + "adaLN_modulation.bias": (6 * d,),
        }
    shapes |= {
        "backbone.output_layer.norm_final.weight": (d,),
        "backbone.output_layer.linear.weight": (vocab, d),
        "backbone.output_layer.linear.bias": (vocab,),
        "backbone.output_layer.adaLN_modulation.weight": (2 * d, cond),
        "backbone.output_layer.adaLN_modulation.bias": (2 * d,),
    }
    state = {k: torch.randn(s, generator=generator) * 0.1 for k, s in shapes.items()}
    head_dim = d // heads
    state["backbone.rotary_emb.inv_freq"] = 1.0 / 10_000 ** (
        torch.arange(0, head_dim, 2).float() / head_dim
    )
    return state


MDLM_CONFIG = dict(
    hidden_dim=32,
    cond_dim=16,
    n_blocks=2,
    n_heads=4,
    vocab_size=21,
    model_length=64,
    dropout=0.1,
    time_conditioning=False,
)


def test_mdlm_hugging_face_layout_loads_strictly(tmp_path):
    state = mdlm_state_dict(32, 16, 2, 4, 21, torch.Generator().manual_seed(4))
    save_file(state, tmp_path / "model.safetensors")
    config = dict(MDLM_CONFIG, model_type="mdlm", auto_map={"AutoModelForMaskedLM": "x.y"})
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = DiT.from_pretrained(tmp_path)
    assert model.config.n_heads == 4 and model.config.model_length == 64
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k.removeprefix("backbone.")], v) for k, v in state.items())


def test_wrong_keys_are_rejected(tmp_path):
    state = mdlm_state_dict(32, 16, 2, 4, 21, torch.Generator().manual_seed(4))
    state["backbone.blocks.0.extra.weight"] = torch.zeros(1)
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(MDLM_CONFIG))
    with pytest.raises(ValueError, match="do not match"):
        DiT.from_pretrained(tmp_path)


class Trap:
    """Stands for OmegaConf in a Lightning checkpoint: unpickling it for real fails."""

    triggered = False

    def __setstate__(self, state):
        Trap.triggered = True

    def __reduce__(self):
        return (Trap, (), {"lr": 3e-4})


def test_lightning_checkpoint_and_ema_load_without_running_code(tmp_path):
    generator = torch.Generator().manual_seed(5)
    state = mdlm_state_dict(32, 16, 2, 4, 21, generator)
    reference = DiT(DiTConfig(**MDLM_CONFIG))
    shadow = [torch.randn(p.shape, generator=generator) for p in reference.parameters()]
    checkpoint = {
        "state_dict": state,
        "ema": {"decay": 0.9999, "num_updates": 10, "shadow_params": shadow},
        "hyper_parameters": {"config": Trap()},
        "global_step": 10,
    }
    torch.save(checkpoint, tmp_path / "last.ckpt")

    raw = load_torch_checkpoint(tmp_path / "last.ckpt")
    assert isinstance(raw["hyper_parameters"]["config"], Opaque)
    model = DiT.from_pretrained(tmp_path / "last.ckpt", model_length=64)
    assert model.config == DiTConfig(**MDLM_CONFIG)
    assert torch.equal(model.blocks[1].attn_qkv.weight, state["backbone.blocks.1.attn_qkv.weight"])
    ema = DiT.from_pretrained(tmp_path / "last.ckpt", ema=True)
    for p, s in zip(ema.parameters(), shadow, strict=True):
        assert torch.equal(p, s)
    assert not Trap.triggered


def test_a_time_conditioned_lightning_checkpoint_keeps_its_conditioning(tmp_path):
    """MDLM's Lightning checkpoints record time_conditioning and model.length in an OmegaConf
    config; the loader reads them (without running OmegaConf) and refuses a contradiction."""
    omegaconf = pytest.importorskip("omegaconf")
    generator = torch.Generator().manual_seed(6)
    state = mdlm_state_dict(32, 16, 2, 4, 21, generator)
    config = omegaconf.OmegaConf.create(
        {"time_conditioning": True, "model": {"length": 48, "hidden_size": 32}}
    )
    checkpoint = {"state_dict": state, "hyper_parameters": {"config": config}}
    torch.save(checkpoint, tmp_path / "last.ckpt")

    model = DiT.from_pretrained(tmp_path / "last.ckpt").eval()
    expected = DiTConfig(**{**MDLM_CONFIG, "time_conditioning": True, "model_length": 48})
    assert model.config == expected
    original = DiT(expected).eval()
    original.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items()})
    tokens = torch.randint(21, (2, 48), generator=generator)
    sigma = torch.tensor([0.1, 2.0])
    with torch.no_grad():
        out = model(tokens, sigma)
        assert torch.equal(out, original(tokens, sigma))
        assert not torch.allclose(out, model(tokens, sigma.flip(0)))  # t matters
    with pytest.raises(ValueError, match="time_conditioning"):
        DiT.from_pretrained(tmp_path / "last.ckpt", time_conditioning=False)
    assert DiT.from_pretrained(tmp_path / "last.ckpt", model_length=48).config == expected


def test_missing_sources_give_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="not a file or directory"):
        DiT.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        DiT.from_pretrained(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="Hugging Face Hub"):
        DiT.from_pretrained("no-such-owner/no-such-model")


# -- Hugging Face adapter --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bert():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=30,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return transformers.BertForMaskedLM(config).eval()


def test_hf_adapter_is_a_denoiser(tiny_bert):
    denoiser = HuggingFaceDenoiser(tiny_bert, mask_token_id=4)
    assert denoiser.vocab_size == 29 and denoiser.mask_id == 29
    assert not is_time_conditioned(denoiser)
    process = denoiser.process()
    x = torch.randint(29, (2, 12))
    t = torch.tensor([0.6, 0.6])
    z_t = process.sample(x, t, generator=torch.Generator().manual_seed(0))
    log_probs = denoiser(z_t, t)
    assert log_probs.shape == (2, 12, 29)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 12))
    unmasked = ~process.is_masked(z_t)
    assert torch.equal(log_probs.exp()[unmasked].argmax(-1), z_t[unmasked])
    # the logits it uses are the model's, relabelled
    model_logits = tiny_bert(input_ids=denoiser.decode(z_t)).logits
    keep = [i for i in range(30) if i != 4]
    masked = ~unmasked
    torch.testing.assert_close(log_probs[masked], model_logits[..., keep].log_softmax(-1)[masked])
    q = dd.MaskingPosterior()(process, z_t, log_probs.exp(), t, torch.tensor([0.5, 0.5]))
    assert q.sample().shape == (2, 12)


def test_hf_adapter_relabelling_is_a_bijection(tiny_bert):
    denoiser = HuggingFaceDenoiser(tiny_bert, mask_token_id=4)
    model_ids = torch.arange(30)
    tokens = denoiser.encode(model_ids)
    assert sorted(tokens.tolist()) == list(range(30)) and tokens[4] == denoiser.mask_id
    assert torch.equal(denoiser.decode(tokens), model_ids)
    with pytest.raises(ValueError, match="mask_token_id"):
        HuggingFaceDenoiser(tiny_bert, mask_token_id=30)


def test_hf_adapter_from_a_local_directory(tiny_bert, tmp_path):
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(25)]
    (tmp_path / "vocab.txt").write_text("\n".join(words))
    transformers.BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    tiny_bert.save_pretrained(tmp_path)
    denoiser = HuggingFaceDenoiser.from_pretrained(tmp_path)
    assert denoiser.model_mask_id == 4
    ids = denoiser.tokenizer("w1 w2 [MASK] w3", return_tensors="pt")["input_ids"]
    z = denoiser.encode(ids)
    assert (z == denoiser.mask_id).sum() == 1
    out = denoiser(z, torch.tensor([0.5]))
    assert out.shape == (1, ids.shape[1], 29)
