"""Data: the synthetic language, tokenisers, packing and batch sources."""

from discdiff.data.sources import (
    BatchSource,
    BlockSource,
    LanguageSource,
    Padded,
    PaddedSource,
)
from discdiff.data.synthetic import LanguageDenoiser, SyntheticLanguage
from discdiff.data.text import (
    BPETokenizer,
    CharTokenizer,
    HFTokenizer,
    Tokenizer,
    char_blocks,
    check_mask_id,
    hf_documents,
    pack,
    pad,
    read_text,
)

__all__ = [
    "BPETokenizer",
    "BatchSource",
    "BlockSource",
    "CharTokenizer",
    "HFTokenizer",
    "LanguageDenoiser",
    "LanguageSource",
    "Padded",
    "PaddedSource",
    "SyntheticLanguage",
    "Tokenizer",
    "char_blocks",
    "check_mask_id",
    "hf_documents",
    "pack",
    "pad",
    "read_text",
]
