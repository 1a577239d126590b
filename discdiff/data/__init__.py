"""Data: the synthetic language, tokenisers, packing and batch sources."""

from discdiff.data.pcfg import PCFGLanguage
from discdiff.data.sft import SFTDataError, read_sft_jsonl, split_rows
from discdiff.data.sources import (
    BatchSource,
    BlockSource,
    LanguageSource,
    Padded,
    PaddedSource,
    Prompted,
    PromptedSource,
)
from discdiff.data.synthetic import (
    EntropyEstimate,
    ExactLanguage,
    HMMLanguage,
    LanguageDenoiser,
    SyntheticLanguage,
    monte_carlo_entropy,
)
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
from discdiff.data.tilted import TiltedHMM

__all__ = [
    "BPETokenizer",
    "BatchSource",
    "BlockSource",
    "CharTokenizer",
    "EntropyEstimate",
    "ExactLanguage",
    "HFTokenizer",
    "HMMLanguage",
    "LanguageDenoiser",
    "LanguageSource",
    "PCFGLanguage",
    "Padded",
    "PaddedSource",
    "Prompted",
    "PromptedSource",
    "SFTDataError",
    "SyntheticLanguage",
    "TiltedHMM",
    "Tokenizer",
    "char_blocks",
    "check_mask_id",
    "hf_documents",
    "monte_carlo_entropy",
    "pack",
    "pad",
    "read_sft_jsonl",
    "read_text",
    "split_rows",
]
