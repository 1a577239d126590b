"""SFT JSONL data: chat spans, EOS, padding conventions, named errors, splits and buckets."""

import json

import pytest
import torch
from llm_fixtures import WORDS, write_tokenizer

from discdiff.data import Prompted, PromptedSource, SFTDataError, read_sft_jsonl, split_rows
from discdiff.models.diffusion_llms import load_tokenizer

ROLE_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}<s> dog {{ m['content'] }} ."
    "{% else %}<s> cat {{ m['content'] }} ,{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<s> dog{% endif %}"
)
"""A template with role headers and a generation prompt ('cat': user, 'dog': assistant)."""

EOS, PAD, BOS = 2, 1, 0


def word(w):
    return 3 + WORDS.index(w)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tok")
    write_tokenizer(directory, "<|mdm_mask|>")
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config["chat_template"] = ROLE_TEMPLATE
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return load_tokenizer(directory)


def write(path, *records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def test_multi_turn_chat_every_assistant_turn_is_response_with_eos(tokenizer, tmp_path):
    chat = {
        "messages": [
            {"role": "system", "content": "big"},
            {"role": "user", "content": "the cat"},
            {"role": "assistant", "content": "sat"},
            {"role": "user", "content": "then"},
            {"role": "assistant", "content": "ran on"},
        ]
    }
    rows = read_sft_jsonl(write(tmp_path / "a.jsonl", chat), tokenizer, max_length=32)
    n = 24
    prompt = [BOS, word("cat"), word("big"), word(",")]
    prompt += [BOS, word("cat"), word("the"), word("cat"), word(","), BOS, word("dog")]
    first = [word("sat"), word("."), EOS]
    second_prompt = [BOS, word("cat"), word("then"), word(","), BOS, word("dog")]
    second = [word("ran"), word("on"), word("."), EOS]
    ids = prompt + first + second_prompt + second
    flags = [True] * len(prompt) + [False] * 3 + [True] * len(second_prompt) + [False] * 4
    assert len(ids) == n
    assert rows.tokens[0, :n].tolist() == ids
    assert rows.prompt_mask[0, :n].tolist() == flags
    # LLaDA's padding: EOS up to max_length, real (attended) and scored as response
    assert rows.tokens[0, n:].eq(EOS).all() and rows.padding_mask[0].all()
    assert not rows.prompt_mask[0, n:].any()


def test_prompt_response_records_text_and_ids(tokenizer, tmp_path):
    path = write(
        tmp_path / "b.jsonl",
        {"prompt": "the dog", "response": "sat on the mat"},
        "",
        {"prompt": [3, 4], "response": [5, EOS]},  # an id list that already ends with EOS
    )
    rows = read_sft_jsonl(path, tokenizer, max_length=8, padding="exclude")
    assert rows.tokens.shape == (2, 7)  # the longest record; padding left out
    assert rows.tokens[0].tolist() == [word("the"), word("dog")] + [
        word(w) for w in ("sat", "on", "the", "mat")
    ] + [EOS]
    assert rows.prompt_mask[0].tolist() == [True, True] + [False] * 5
    assert rows.tokens[1].tolist() == [3, 4, 5, EOS, PAD, PAD, PAD]
    assert rows.padding_mask[1].tolist() == [True] * 4 + [False] * 3
    scored = rows.padding_mask & ~rows.prompt_mask
    assert scored[1].tolist() == [False, False, True, True, False, False, False]  # EOS scored


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"prompt": "the", "response": "cat"', "invalid JSON"),
        ('["the", "cat"]', "JSON object"),
        ('{"prompt": "the"}', "needs `messages`"),
        ('{"prompt": "the", "response": [3]}', "must both be strings"),
        ('{"messages": [{"role": "user", "content": "the"}]}', "last message"),
        ('{"messages": [{"role": "robot", "content": "the"}]}', "`role` must be one of"),
        ('{"messages": [{"role": "assistant", "content": "the"}]}', "first message"),
        ('{"prompt": "the", "response": "cat sat on the mat and then"}', "exceed max_length"),
        ('{"prompt": "the", "response": "cat <|mdm_mask|>"}', "mask"),
        ('{"prompt": [3], "response": [99]}', "outside 0..63"),
    ],
)
def test_bad_records_name_the_line(tokenizer, tmp_path, line, match):
    good = {"prompt": "the", "response": "cat"}
    path = write(tmp_path / "bad.jsonl", good, good, line)
    with pytest.raises(SFTDataError, match=match) as caught:
        read_sft_jsonl(path, tokenizer, max_length=8, vocab_size=64, forbidden=[60])
    assert caught.value.line == 3 and str(caught.value).startswith(f"{path}:3:")


def test_eos_padding_needs_an_eos_and_empty_files_are_refused(tmp_path):
    path = write(tmp_path / "ids.jsonl", {"prompt": [1], "response": [2]})
    with pytest.raises(ValueError, match="eos_id"):
        read_sft_jsonl(path, None, max_length=4)
    rows = read_sft_jsonl(path, None, max_length=4, padding="exclude")
    assert rows.tokens.tolist() == [[1, 2]]  # no EOS in the vocabulary: nothing appended
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no records"):
        read_sft_jsonl(tmp_path / "empty.jsonl", None, max_length=4, padding="exclude")


def test_split_is_seeded_and_disjoint():
    tokens = torch.arange(20).view(20, 1).expand(20, 3).contiguous()
    real, prompt = torch.ones(20, 3, dtype=torch.bool), torch.zeros(20, 3, dtype=torch.bool)
    rows = Prompted(tokens, real, prompt)
    train, held = split_rows(rows, 0.2, seed=1)
    again = split_rows(rows, 0.2, seed=1)[1]
    assert held.tokens.shape[0] == 4 and train.tokens.shape[0] == 16
    assert torch.equal(held.tokens, again.tokens)
    assert set(train.tokens[:, 0].tolist()).isdisjoint(held.tokens[:, 0].tolist())
    assert split_rows(rows, 0.0)[1] is None
    with pytest.raises(ValueError, match="fraction"):
        split_rows(rows, 1.0)


def test_buckets_group_lengths_trim_batches_and_cover_each_record_once():
    n, width = 32, 12
    lengths = torch.arange(n) % 10 + 3
    real = torch.arange(width) < lengths[:, None]
    tokens = torch.where(real, torch.arange(n)[:, None] % 7 + 1, 0)
    tokens[:, 0] = torch.arange(n)  # row ids, to follow the records
    prompt = torch.arange(width) < 1
    source = PromptedSource(tokens, real, prompt.expand(n, width), vocab_size=40, bucket=4)
    seen, spreads, widths = [], [], []
    for index in range(4):  # one epoch: 4 batches of 8
        batch = source.batch(index, 8)
        seen += batch.tokens[:, 0].tolist()
        row_lengths = batch.padding_mask.sum(-1)
        spreads.append(int(row_lengths.max() - row_lengths.min()))
        widths.append(batch.tokens.shape[1])
        assert batch.tokens.shape[1] == int(row_lengths.max())  # trimmed to its longest row
    assert sorted(seen) == list(range(n))
    assert max(spreads) <= 3 and min(widths) < width  # similar lengths, shorter batches
    with pytest.raises(ValueError, match="trailing"):
        PromptedSource(tokens, real.flip(-1), prompt.expand(n, width), vocab_size=40, bucket=2)
