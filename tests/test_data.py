"""The synthetic language (exact quantities against enumeration), tokenisers, packing."""

import itertools

import pytest
import torch

import discdiff as dd
import discdiff.data as dd_data
from discdiff.data import (
    BlockSource,
    BPETokenizer,
    CharTokenizer,
    HFTokenizer,
    LanguageSource,
    SyntheticLanguage,
    check_mask_id,
    pack,
    pad,
    read_text,
)


@pytest.fixture(scope="module")
def small():
    language = SyntheticLanguage(vocab_size=4, states=3, support=3, seed=1)
    length = 5
    sequences = torch.tensor(list(itertools.product(range(4), repeat=length)))
    return language, length, sequences, language.log_prob(sequences).exp()


def test_log_prob_is_normalised_and_matches_sampling(small):
    language, length, _, p = small
    torch.testing.assert_close(p.sum(), torch.tensor(1.0, dtype=torch.float64))
    draws = language.sample(50_000, length, generator=torch.Generator().manual_seed(0))
    index = (draws * 4 ** torch.arange(length - 1, -1, -1)).sum(-1)
    empirical = torch.bincount(index, minlength=4**length).double() / 50_000
    assert 0.5 * (empirical - p).abs().sum() < 0.03  # TV floor for 50 000 draws ≈ 0.02


def test_entropy_and_unigram_are_exact(small):
    language, length, sequences, p = small
    entropy = float(-torch.xlogy(p, p).sum()) / length
    assert abs(language.entropy(length) - entropy) < 1e-10
    unigram = torch.stack([(p[:, None] * (sequences == v)).sum(0).mean() for v in range(4)])
    torch.testing.assert_close(language.unigram(length), unigram)


def test_exact_denoiser_matches_enumeration(small):
    language, length, _, p = small
    oracle = dd.EnumerableOracle(p.reshape((4,) * length))
    x = language.sample(300, length, generator=torch.Generator().manual_seed(1))
    z = torch.where(torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) < 0.6, 4, x)
    t = torch.ones(300)
    torch.testing.assert_close(
        language.denoiser()(z, t).exp(), oracle(z, t).exp(), atol=1e-5, rtol=1e-5
    )


def test_default_language_is_not_trivial():
    language = SyntheticLanguage()
    summary = language.summary(64)
    assert language.vocab_size >= 32
    assert summary["entropy"] >= 1.5
    assert summary["unigram"] - summary["entropy"] >= 0.5


def test_exact_denoiser_nelbo_equals_exact_nll_at_realistic_length():
    """The message-passing oracle is a Denoiser: its NELBO estimates -log p(x) at L = 32."""
    language = SyntheticLanguage()
    process = dd.MaskingProcess(vocab_size=32)
    x = language.sample(1, 32, generator=torch.Generator().manual_seed(3)).expand(512, 32)
    draws = dd.nelbo(
        process, language.denoiser(), x, generator=torch.Generator().manual_seed(4)
    ).double()
    target = -language.log_prob(x[:1])[0]
    assert abs(draws.mean() - target) < 3 * draws.std() / 512**0.5 + 0.01 * target


def test_sources_are_deterministic_functions_of_the_index():
    language = SyntheticLanguage()
    source = LanguageSource(language, 16, seed=3)
    assert torch.equal(source.batch(7, 4), source.batch(7, 4))
    assert not torch.equal(source.batch(7, 4), source.batch(8, 4))
    blocks = torch.arange(40).view(10, 4)
    shuffled = BlockSource(blocks, vocab_size=40, seed=1)
    epoch = torch.cat([shuffled.batch(i, 5) for i in range(2)])
    assert sorted(epoch[:, 0].tolist()) == list(range(0, 40, 4))  # one epoch covers every block
    with pytest.raises(ValueError, match=r"outside 0\.\.9"):
        BlockSource(blocks, vocab_size=10)


def test_char_tokenizer_and_packing():
    tokenizer = CharTokenizer.from_text("hello world")
    ids = tokenizer.encode("hello")
    assert tokenizer.decode(ids) == "hello"
    blocks = pack(
        [ids, tokenizer.encode("world")], 4, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id
    )
    assert blocks.shape == (3, 4) and blocks[0, 0] == tokenizer.bos_id
    with pytest.raises(ValueError, match="not in the alphabet"):
        tokenizer.encode("hello!")
    with pytest.raises(ValueError, match="too few"):
        pack([ids], 100, bos_id=0, eos_id=1)


def test_padding_mode_and_too_long_documents():
    rows, mask = pad([[5, 6], [7]], 5, pad_id=0, bos_id=1, eos_id=2)
    assert rows.tolist() == [[1, 5, 6, 2, 0], [1, 7, 2, 0, 0]]
    assert mask.sum(-1).tolist() == [4, 3]
    with pytest.raises(ValueError, match="longer than length=3"):
        pad([[5, 6]], 3, pad_id=0, bos_id=1, eos_id=2)


def test_bpe_tokenizer_trains_locally(tmp_path):
    text = "the quick brown fox jumps over the lazy dog " * 50
    tokenizer = BPETokenizer.train([text], vocab_size=300)
    ids = tokenizer.encode("the lazy fox")
    assert tokenizer.decode(ids) == "the lazy fox"
    tokenizer.save(tmp_path / "bpe.json")
    assert BPETokenizer.load(tmp_path / "bpe.json").encode("the lazy fox") == ids
    check_mask_id(tokenizer, tokenizer.vocab_size)
    with pytest.raises(ValueError, match="collides"):
        check_mask_id(tokenizer, tokenizer.bos_id)


def test_pad_mask_clash_is_rejected(tmp_path):
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]
    (tmp_path / "vocab.txt").write_text("\n".join(words))
    hf = transformers.BertTokenizer(str(tmp_path / "vocab.txt"))
    hf.add_special_tokens({"additional_special_tokens": ["[EXTRA]"]})
    tokenizer = HFTokenizer(hf)
    assert tokenizer.vocab_size == 8
    with pytest.raises(ValueError, match="collides"):
        check_mask_id(tokenizer, 7)  # the id the added token took
    check_mask_id(tokenizer, 8)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_text(tmp_path / "none.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        read_text(tmp_path / "empty.txt")


def test_hf_documents_streams_through_datasets(monkeypatch):
    """`datasets` is optional: a stand-in module checks the call and the record handling."""
    import sys
    import types

    calls = {}

    def load_dataset(path, name=None, split=None, streaming=False):
        calls.update(path=path, name=name, split=split, streaming=streaming)
        return iter([{"text": "first"}, {"text": "  "}, {"text": "second"}, {"text": "third"}])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    from discdiff.data import hf_documents

    assert hf_documents("some/corpus", limit=2, name="cfg") == ["first", "second"]
    assert calls == {"path": "some/corpus", "name": "cfg", "split": "train", "streaming": True}
    with pytest.raises(KeyError, match="no field 'body'"):
        hf_documents("some/corpus", field="body")


def test_hf_documents_without_datasets(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)
    from discdiff.data import hf_documents

    with pytest.raises(ImportError, match="pip install datasets"):
        hf_documents("some/corpus")


def test_char_blocks_split_and_reuse_an_alphabet():
    text = "\n\n".join(f"line {i} of the play." for i in range(100))
    tokenizer, train, validation = dd_data.char_blocks(text, 16, val_fraction=0.1)
    total = len(train) + len(validation)
    assert train.shape[1] == validation.shape[1] == 16
    assert len(train) == int(0.9 * total) and len(validation) > 0
    again, train_again, _ = dd_data.char_blocks(text, 16, alphabet=tokenizer.alphabet[::-1])
    assert again.alphabet == tokenizer.alphabet[::-1] and not torch.equal(train_again, train)
    with pytest.raises(ValueError, match="val_fraction"):
        dd_data.char_blocks("one block of text, no more", 16)
