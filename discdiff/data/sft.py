r"""Supervised fine-tuning data: JSONL records to prompt/response rows.

Each line of the file is one record, either a chat

    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}

rendered with the tokenizer's chat template, or a prompt/response pair

    {"prompt": "...", "response": "..."}

whose texts are tokenised as they are (the prompt with the tokenizer's
special tokens, e.g. BOS; the response without), or given as token id lists
(`{"prompt": [3, 5], "response": [7]}`, for models without a tokenizer).

**Prompt and response.** The loss is the conditional bound of the response
given the prompt (`discdiff.nelbo` with a `prompt_mask`). In a chat, every
assistant turn is response and everything else (system, user and tool turns,
the template's role headers and the generation prompt before each assistant
turn) is prompt: the spans come from rendering the conversation up to each
assistant turn with and without it, so they follow the template exactly.

**EOS.** EOS is appended to every response (to each assistant turn that does
not already end with it) and is scored like any response token: a model that
never sees EOS in the loss never learns to stop.

**Padding.** Rows are padded to a common length in one of two ways:

- `"eos"` (default; LLaDA's convention): pads are EOS tokens, real tokens of
  the response that the model attends to and is scored on. The diffusion
  LLMs generate into a fixed-length canvas, so the model must learn to fill
  what follows its answer with EOS; LLaDA pads its SFT data exactly so.
  Rows are padded to `max_length`, the canvas length.
- `"exclude"`: pads are the tokenizer's pad id (EOS if it has none) with
  `padding_mask` False: not attended to, not scored (MDLM's convention for
  documents of different lengths). Rows are padded to the longest record;
  `PromptedSource(bucket=...)` groups records of similar length and trims
  each batch to its longest row.

A record never shares a row with another (no packing across records), so
no token attends to another record.

**Errors.** A bad record raises `SFTDataError` naming the file and line
(invalid JSON, a missing or mistyped field, an unknown role, no assistant
turn, an empty response, a record longer than `max_length`, a mask token in
the text). The whole file is read before anything is returned.
"""

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from discdiff.data.sources import Prompted

__all__ = [
    "PADDINGS",
    "SFTDataError",
    "chat_spans",
    "encode_record",
    "read_sft_jsonl",
    "sft_rows",
    "split_rows",
]

PADDINGS = ("eos", "exclude")
"""How rows are padded: with scored EOS tokens (LLaDA) or with excluded pad tokens."""

ROLES = ("system", "user", "assistant", "tool")
"""Roles a chat message may have; `assistant` turns are the response."""


class SFTDataError(ValueError):
    """A bad record in a JSONL file, with its line number.

    Args:
        path: The file.
        line: The line number (1-based).
        message: What is wrong.
    """

    def __init__(self, path: str | os.PathLike, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line = str(path), line


def _ids(tokenizer: Any, text: str, *, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def chat_spans(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[tuple[str, bool]]:
    """The rendered chat cut into `(text, is_response)` pieces, in order.

    Renders the conversation up to each assistant turn with the generation
    prompt, and with the turn itself; the difference is the turn (response),
    everything before it prompt.

    Args:
        tokenizer: A `transformers` tokenizer with a chat template.
        messages: `{"role", "content"}` dicts; the last one from the assistant.

    Returns:
        Text pieces whose concatenation is the rendered chat.

    Raises:
        ValueError: If the template does not render conversations as prefixes
            of their continuations (the spans are then undefined).
    """

    def render(part: Sequence[dict[str, str]], prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            list(part), tokenize=False, add_generation_prompt=prompt
        )

    pieces: list[tuple[str, bool]] = []
    done = ""
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(messages[:k], True) if k else ""
        after = render(messages[: k + 1], False)
        if not (before.startswith(done) and after.startswith(before)):
            raise ValueError(
                "the chat template does not render a conversation as a prefix of its "
                "continuation, so assistant spans cannot be found"
            )
        pieces += [(before[len(done) :], False), (after[len(before) :], True)]
        done = after
    return pieces


def encode_record(
    record: Any,
    tokenizer: Any | None,
    *,
    eos_id: int | None,
) -> tuple[list[int], list[bool]]:
    """One record's token ids and prompt flags (`True` at prompt tokens).

    Args:
        record: A parsed JSONL record (see the module).
        tokenizer: The tokenizer (needed for text and chats; not for id lists).
        eos_id: Appended to each response that does not end with it; `None`:
            the vocabulary has no EOS and nothing is appended.

    Returns:
        `(ids, prompt_flags)` of equal length.

    Raises:
        ValueError: If the record is malformed (the caller adds the line number).
    """
    if not isinstance(record, dict):
        raise ValueError(f"a record must be a JSON object; got {type(record).__name__}")
    if "messages" in record:
        pieces = _chat_pieces(record["messages"], tokenizer)
    elif "prompt" in record and "response" in record:
        prompt, response = record["prompt"], record["response"]
        if _is_ids(prompt) and _is_ids(response):
            pieces = [(list(prompt), False), (list(response), True)]
        elif isinstance(prompt, str) and isinstance(response, str):
            if tokenizer is None:
                raise ValueError("text records need a tokenizer; give token id lists instead")
            pieces = [
                (_ids(tokenizer, prompt, special=True), False),
                (_ids(tokenizer, response, special=False), True),
            ]
        else:
            raise ValueError("`prompt` and `response` must both be strings or both id lists")
    else:
        raise ValueError("a record needs `messages`, or `prompt` and `response`")
    ids: list[int] = []
    flags: list[bool] = []
    for piece, is_response in pieces:
        if is_response:
            if not piece and eos_id is None:
                raise ValueError("empty response")
            if eos_id is not None and (not piece or piece[-1] != eos_id):
                piece = [*piece, eos_id]
        ids += piece
        flags += [not is_response] * len(piece)
    return ids, flags


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    )


def _chat_pieces(messages: Any, tokenizer: Any) -> list[tuple[list[int], bool]]:
    if not isinstance(messages, list) or not messages:
        raise ValueError("`messages` must be a non-empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise ValueError(f"message {i} must be an object with a string `content`")
        if message.get("role") not in ROLES:
            raise ValueError(
                f"message {i}: `role` must be one of {', '.join(ROLES)}; "
                f"got {message.get('role')!r}"
            )
    if messages[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's (the response)")
    if messages[0]["role"] == "assistant":
        raise ValueError("the first message must not be the assistant's (it needs a prompt)")
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat records need a tokenizer with a chat template")
    return [
        (_ids(tokenizer, text, special=False), is_response)
        for text, is_response in chat_spans(tokenizer, messages)
    ]


def sft_rows(
    examples: Sequence[tuple[list[int], list[bool]]],
    *,
    length: int,
    padding: Literal["eos", "exclude"] = "eos",
    eos_id: int | None = None,
    pad_id: int | None = None,
) -> Prompted:
    """Pad encoded records into rows, one record per row.

    Args:
        examples: `(ids, prompt_flags)` per record, none longer than `length`.
        length: The row length.
        padding: `"eos"`: pad with `eos_id`, real and scored; `"exclude"`: pad
            with `pad_id` (else `eos_id`, else 0), `padding_mask` False.
        eos_id: The EOS id (needed for `"eos"`).
        pad_id: The pad id for `"exclude"`.

    Returns:
        `Prompted(tokens, padding_mask, prompt_mask)`, each `(N, length)`.

    Raises:
        ValueError: For an unknown `padding`, `"eos"` without `eos_id`, or a
            record longer than `length`.
    """
    if padding not in PADDINGS:
        raise ValueError(f"`padding` must be one of {', '.join(PADDINGS)}; got {padding!r}")
    if padding == "eos" and eos_id is None:
        raise ValueError("`padding='eos'` needs an `eos_id` (the vocabulary has none)")
    fill = eos_id if padding == "eos" else (pad_id if pad_id is not None else (eos_id or 0))
    n = len(examples)
    tokens = torch.full((n, length), int(fill), dtype=torch.long)
    padding_mask = torch.full((n, length), padding == "eos", dtype=torch.bool)
    prompt_mask = torch.zeros(n, length, dtype=torch.bool)
    for row, (ids, flags) in enumerate(examples):
        if len(ids) > length:
            raise ValueError(f"record {row} has {len(ids)} tokens; `length` is {length}")
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        padding_mask[row, : len(ids)] = True
        prompt_mask[row, : len(ids)] = torch.tensor(flags, dtype=torch.bool)
    return Prompted(tokens, padding_mask, prompt_mask)


def read_sft_jsonl(
    path: str | os.PathLike,
    tokenizer: Any | None,
    *,
    max_length: int,
    padding: Literal["eos", "exclude"] = "eos",
    eos_id: int | None = None,
    pad_id: int | None = None,
    vocab_size: int | None = None,
    forbidden: Sequence[int] = (),
) -> Prompted:
    """Read a JSONL file of chat or prompt/response records into padded rows.

    Args:
        path: The file, one JSON record per line (blank lines are skipped).
        tokenizer: A `transformers` tokenizer (`None` for id-list records).
        max_length: The longest record allowed; with `"eos"` padding, the row length.
        padding: `"eos"` (LLaDA: EOS pads, scored) or `"exclude"` (pads left out);
            see the module.
        eos_id: The EOS id; defaults to the tokenizer's.
        pad_id: The pad id for `"exclude"`; defaults to the tokenizer's.
        vocab_size: If given, every id must lie below it.
        forbidden: Ids no record may hold (e.g. the mask token).

    Returns:
        `Prompted(tokens, padding_mask, prompt_mask)`, `(N, L)` each, in file order.

    Raises:
        SFTDataError: For a bad record, naming the file and line.
        ValueError: For an empty file or bad arguments.
    """
    if max_length < 1:
        raise ValueError(f"`max_length` must be at least 1; got {max_length}")
    if eos_id is None and tokenizer is not None:
        eos_id = tokenizer.eos_token_id
    if pad_id is None and tokenizer is not None:
        pad_id = tokenizer.pad_token_id
    examples, lines = [], []
    with Path(path).open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                raise SFTDataError(path, number, f"invalid JSON ({error})") from None
            try:
                ids, flags = encode_record(record, tokenizer, eos_id=eos_id)
            except (ValueError, KeyError, TypeError) as error:
                raise SFTDataError(path, number, str(error)) from None
            if len(ids) > max_length:
                raise SFTDataError(
                    path, number, f"{len(ids)} tokens exceed max_length={max_length}"
                )
            if all(flags):
                raise SFTDataError(path, number, "the record has no response tokens")
            bad = [i for i in ids if i < 0 or (vocab_size is not None and i >= vocab_size)]
            if bad:
                raise SFTDataError(
                    path, number, f"token ids {bad[:5]} outside 0..{(vocab_size or 1) - 1}"
                )
            hit = sorted(set(ids) & set(forbidden))
            if hit:
                raise SFTDataError(path, number, f"holds the reserved (mask) token id {hit[0]}")
            examples.append((ids, flags))
            lines.append(number)
    if not examples:
        raise ValueError(f"{path}: no records")
    length = max_length if padding == "eos" else max(len(ids) for ids, _ in examples)
    return sft_rows(examples, length=length, padding=padding, eos_id=eos_id, pad_id=pad_id)


def split_rows(
    rows: Prompted, fraction: float, *, seed: int = 0
) -> tuple[Prompted, Prompted | None]:
    """Hold out a seeded random `fraction` of the rows for validation.

    Args:
        rows: All rows.
        fraction: In $[0, 1)$; at least one row is held out when positive, and
            at least one is kept for training.
        seed: Seed of the permutation.

    Returns:
        `(train, validation)`; `validation` is `None` when `fraction` is 0.

    Raises:
        ValueError: If `fraction` is outside $[0, 1)$ or too few rows remain.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"`fraction` must lie in [0, 1); got {fraction}")
    n = rows.tokens.shape[0]
    if fraction == 0.0:
        return rows, None
    held = max(1, round(fraction * n))
    if held >= n:
        raise ValueError(f"{n} records are too few to hold out {fraction:.0%} for validation")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    pick = lambda index: Prompted(*(t[index] for t in rows))  # noqa: E731
    return pick(order[held:].sort().values), pick(order[:held].sort().values)
