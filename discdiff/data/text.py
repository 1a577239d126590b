"""Text data: tokenisers, sources and packing into fixed-length blocks.

Tokenisers share one small interface (`vocab_size`, `bos_id`, `eos_id`,
`encode`, `decode`): `CharTokenizer` (character level), `BPETokenizer`
(byte-level BPE trained locally with the `tokenizers` package) and
`HFTokenizer` (any Hugging Face tokenizer). `check_mask_id` rejects a mask id
that collides with any id a tokenizer can produce, added tokens such as
`[PAD]` included (the known pad/mask clash).
"""

import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Int
from torch import Tensor

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "HFTokenizer",
    "Tokenizer",
    "char_blocks",
    "check_mask_id",
    "hf_documents",
    "pack",
    "pad",
    "read_text",
]


@runtime_checkable
class Tokenizer(Protocol):
    """What the data pipeline needs of a tokenizer."""

    vocab_size: int
    bos_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]:
        """Text to ids.

        Args:
            text: The text.

        Returns:
            Token ids in `0..vocab_size-1`.
        """
        ...

    def decode(self, ids: list[int]) -> str:
        """Ids to text.

        Args:
            ids: Token ids.

        Returns:
            The text.
        """
        ...


class CharTokenizer:
    """Character-level tokenizer: one id per distinct character, then `<bos>` and `<eos>`.

    Args:
        alphabet: The characters, in id order.
    """

    def __init__(self, alphabet: str) -> None:
        if len(set(alphabet)) != len(alphabet) or not alphabet:
            raise ValueError("`alphabet` must be a non-empty string of distinct characters")
        self.alphabet = alphabet
        self._ids = {c: i for i, c in enumerate(alphabet)}
        self.bos_id, self.eos_id = len(alphabet), len(alphabet) + 1
        self.vocab_size = len(alphabet) + 2

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """The tokenizer of every character in `text`, sorted.

        Args:
            text: The corpus.

        Returns:
            A `CharTokenizer` with `len(set(text)) + 2` ids.
        """
        return cls("".join(sorted(set(text))))

    def encode(self, text: str) -> list[int]:
        """Ids of the characters.

        Args:
            text: Characters of the alphabet.

        Returns:
            One id per character.

        Raises:
            ValueError: On a character outside the alphabet.
        """
        try:
            return [self._ids[c] for c in text]
        except KeyError as missing:
            raise ValueError(f"character {missing} is not in the alphabet") from None

    def decode(self, ids: list[int]) -> str:
        """Characters of the ids (special ids are dropped).

        Args:
            ids: Token ids.

        Returns:
            The text.
        """
        return "".join(self.alphabet[i] for i in ids if i < len(self.alphabet))


class BPETokenizer:
    """Byte-level BPE trained locally with the `tokenizers` package.

    Args:
        tokenizer: A `tokenizers.Tokenizer` with `<bos>` and `<eos>` tokens.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.bos_id = tokenizer.token_to_id("<bos>")
        self.eos_id = tokenizer.token_to_id("<eos>")
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def train(cls, texts: list[str], vocab_size: int) -> "BPETokenizer":
        """Train on `texts` with `vocab_size` ids (`<bos>`, `<eos>` included).

        Args:
            texts: The training documents.
            vocab_size: The number of ids, special tokens included.

        Returns:
            The trained tokenizer.
        """
        from tokenizers import Tokenizer as _Tokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tokenizer = _Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<bos>", "<eos>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BPETokenizer":
        """Read a tokenizer saved with `save`.

        Args:
            path: The JSON file.

        Returns:
            The tokenizer.
        """
        from tokenizers import Tokenizer as _Tokenizer

        return cls(_Tokenizer.from_file(str(path)))

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON.

        Args:
            path: The file to write.
        """
        self._tokenizer.save(str(path))

    def encode(self, text: str) -> list[int]:
        """Ids of `text`.

        Args:
            text: The text.

        Returns:
            Token ids.
        """
        return self._tokenizer.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`.

        Args:
            ids: Token ids.

        Returns:
            The text.
        """
        return self._tokenizer.decode(ids)


class HFTokenizer:
    """Any Hugging Face tokenizer (e.g. GPT-2's), loaded locally or from the hub.

    `vocab_size` counts added tokens; EOS (or SEP) ends documents, BOS (or CLS,
    or EOS) starts them.

    Args:
        tokenizer: A `transformers` tokenizer.

    Raises:
        ValueError: If the tokenizer has neither an EOS nor a SEP token.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.vocab_size = len(tokenizer)  # added tokens ([PAD], …) included
        eos = (
            tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        )
        bos = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
        )
        if eos is None:
            raise ValueError("the tokenizer has neither an EOS nor a SEP token")
        self.eos_id = eos
        self.bos_id = eos if bos is None else bos

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike) -> "HFTokenizer":
        """A `transformers` tokenizer, read without running any code from the folder.

        Args:
            name_or_path: A local directory or a hub id.

        Returns:
            The wrapped tokenizer.

        Raises:
            RemoteCodeError: If the tokenizer exists only as the checkpoint's code.
        """
        from discdiff.tokenizer_loader import load_tokenizer

        return cls(load_tokenizer(name_or_path))

    def encode(self, text: str) -> list[int]:
        """Ids of `text`, without special tokens.

        Args:
            text: The text.

        Returns:
            Token ids.
        """
        return self._tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`.

        Args:
            ids: Token ids.

        Returns:
            The text.
        """
        return self._tokenizer.decode(ids)


def check_mask_id(tokenizer: Tokenizer, mask_id: int) -> None:
    """Reject a mask id that a tokenizer can produce.

    Args:
        tokenizer: Any `Tokenizer`.
        mask_id: The process's mask id.

    Raises:
        ValueError: If `mask_id < tokenizer.vocab_size` (which counts added
            tokens such as `[PAD]`).
    """
    if mask_id < tokenizer.vocab_size:
        raise ValueError(
            f"`mask_id` {mask_id} collides with the tokenizer's ids 0..{tokenizer.vocab_size - 1} "
            f"(added tokens such as [PAD] included); use an id >= {tokenizer.vocab_size}"
        )


def read_text(path: str | os.PathLike) -> str:
    """Read a UTF-8 text file.

    Args:
        path: The file.

    Returns:
        Its text.

    Raises:
        FileNotFoundError: If it does not exist.
        ValueError: If it is empty.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file {str(path)!r} not found")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"text file {str(path)!r} is empty")
    return text


def hf_documents(
    path: str,
    *,
    split: str = "train",
    field: str = "text",
    limit: int | None = None,
    **kwargs: Any,
) -> list[str]:
    """Texts of a Hugging Face `datasets` dataset, streamed (nothing is downloaded in full).

    Args:
        path: Dataset name or local path, as for `datasets.load_dataset`.
        split: The split to stream.
        field: The column holding the text.
        limit: Stop after this many non-empty documents.
        **kwargs: Passed to `load_dataset` (e.g. `name=` for a configuration).

    Returns:
        The non-empty texts, in order.

    Raises:
        ImportError: If `datasets` is not installed.
        KeyError: If the records have no `field`.
    """
    try:
        from datasets import load_dataset
    except ImportError:
        raise ImportError("streaming Hugging Face datasets needs: pip install datasets") from None
    texts = []
    for record in load_dataset(path, split=split, streaming=True, **kwargs):
        if field not in record:
            raise KeyError(f"records of {path!r} have no field {field!r}; fields: {sorted(record)}")
        if record[field].strip():
            texts.append(record[field])
            if limit is not None and len(texts) >= limit:
                break
    return texts


def pack(
    documents: list[list[int]], length: int, *, bos_id: int, eos_id: int
) -> Int[Tensor, "blocks length"]:
    """Concatenate `<bos> doc <eos>` for every document and cut into blocks (MDLM's wrap).

    The last partial block is dropped.

    Args:
        documents: Token ids of each document.
        length: Tokens per block $L$.
        bos_id: The id put before each document.
        eos_id: The id put after each document.

    Returns:
        Blocks `(N, L)`.

    Raises:
        ValueError: If there is not enough text for one block.
    """
    if length < 1:
        raise ValueError(f"`length` must be at least 1; got {length}")
    stream = [i for doc in documents for i in (bos_id, *doc, eos_id)]
    blocks = len(stream) // length
    if blocks == 0:
        raise ValueError(f"{len(stream)} tokens are too few for one block of {length}")
    return torch.tensor(stream[: blocks * length], dtype=torch.long).view(blocks, length)


def pad(
    documents: list[list[int]], length: int, *, pad_id: int, bos_id: int, eos_id: int
) -> tuple[Int[Tensor, "docs length"], Bool[Tensor, "docs length"]]:
    """One `<bos> doc <eos>` per row, padded to `length`, with its attention mask.

    Args:
        documents: Token ids of each document.
        length: Tokens per row.
        pad_id: The padding id.
        bos_id: The id put before each document.
        eos_id: The id put after each document.

    Returns:
        `(rows, mask)`: ids `(N, length)` and `True` at real tokens `(N, length)`.

    Raises:
        ValueError: If a document does not fit in `length` tokens.
    """
    rows = torch.full((len(documents), length), pad_id, dtype=torch.long)
    for i, doc in enumerate(documents):
        ids = [bos_id, *doc, eos_id]
        if len(ids) > length:
            raise ValueError(
                f"document {i} has {len(ids)} tokens with <bos>/<eos>, longer than length={length}"
            )
        rows[i, : len(ids)] = torch.tensor(ids)
    lengths = torch.tensor([len(d) + 2 for d in documents])
    return rows, torch.arange(length) < lengths[:, None]


def char_blocks(
    text: str,
    length: int,
    *,
    alphabet: str | None = None,
    val_fraction: float = 0.05,
) -> tuple[CharTokenizer, Int[Tensor, "train length"], Int[Tensor, "validation length"]]:
    """Character-level training and validation blocks of a text.

    Documents are the text's blank-line-separated paragraphs; they are
    tokenised by characters, packed into blocks of `length` tokens with
    `<bos>`/`<eos>` (`pack`), and the last `val_fraction` of the blocks is held out.

    Args:
        text: The corpus.
        length: Tokens per block $L$.
        alphabet: A saved alphabet to reuse (e.g. a run's); `None` builds it from `text`.
        val_fraction: Share of blocks held out, in $(0, 1)$.

    Returns:
        The tokenizer, training blocks `(N_train, L)` and validation blocks `(N_val, L)`.

    Raises:
        ValueError: If the text gives too few blocks to hold out `val_fraction`
            and keep some for training.
    """
    tokenizer = CharTokenizer(alphabet) if alphabet else CharTokenizer.from_text(text)
    documents = [tokenizer.encode(p) for p in text.split("\n\n") if p]
    blocks = pack(documents, length, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)
    split = int((1 - val_fraction) * len(blocks))
    if not 0 < split < len(blocks):
        raise ValueError(
            f"the text gives {len(blocks)} blocks of {length} tokens; too few to hold out "
            f"`val_fraction` = {val_fraction}"
        )
    return tokenizer, blocks[:split], blocks[split:]
