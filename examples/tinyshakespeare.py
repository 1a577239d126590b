"""Train a character-level masked diffusion model on Tiny Shakespeare and report its bound.

Packs the text into blocks of 128 characters (MDLM's wrap with <bos>/<eos>),
holds out the last 5 % for validation, trains a small DiT with the
continuous-time NELBO for `--minutes`, and prints the validation bound in bits
per character (the unigram entropy of the text is 4.78 bits/char).

    python examples/tinyshakespeare.py [--minutes 10] [--data PATH] [--run runs/shakespeare]
    python examples/tinyshakespeare.py --smoke        # a few steps on a slice (CI)
"""

import argparse
import math
from pathlib import Path

import torch

import discdiff as dd
from discdiff.data import BlockSource, CharTokenizer, check_mask_id, pack, read_text
from discdiff.training import TrainConfig, Trainer

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--run", type=Path, default=None, help="checkpoint directory")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()

    text = read_text(args.data)
    if args.smoke:
        text = text[:20_000]
    tokenizer = CharTokenizer.from_text(text)
    process = dd.MaskingProcess(vocab_size=tokenizer.vocab_size)
    check_mask_id(tokenizer, process.mask_id)
    lines = [tokenizer.encode(paragraph) for paragraph in text.split("\n\n") if paragraph]
    blocks = pack(lines, args.length, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)
    split = int(0.95 * len(blocks))
    train, validation = blocks[:split], blocks[split:]
    unigram = torch.bincount(train.flatten(), minlength=tokenizer.vocab_size).double()
    unigram = unigram / unigram.sum()
    unigram_bits = float(-(unigram * unigram.clamp_min(1e-30).log2()).sum())

    model = dd.DiT(
        dd.DiTConfig(
            hidden_dim=192,
            cond_dim=64,
            n_blocks=4,
            n_heads=4,
            vocab_size=tokenizer.vocab_size + 1,
            model_length=args.length,
            dropout=0.0,
        )
    )
    config = TrainConfig(
        steps=4 if args.smoke else None,
        batch_size=8 if args.smoke else 32,
        lr=2e-3,
        warmup=50,
        ema=0.99,
        eval_every=2 if args.smoke else 100,
        eval_sequences=16 if args.smoke else 512,
        max_minutes=None if args.smoke else args.minutes,
        progress=not args.smoke,
    )

    def report(record):
        print(
            f"step {int(record['step']):6d}  {record['minutes']:5.1f} min  "
            f"bound {record['bits_per_token']:.3f} bits/char",
            flush=True,
        )

    trainer = Trainer(
        process,
        dd.SUBS(model, process),
        BlockSource(train, tokenizer.vocab_size),
        config,
        validation=validation,
        run_dir=args.run,
        on_eval=report,
    )
    history = trainer.fit()
    final = history.evals[-1]["bits_per_token"] if history.evals else math.nan
    print(
        f"{len(text):,} characters, {tokenizer.vocab_size} ids; unigram entropy "
        f"{unigram_bits:.2f} bits/char; validation bound {final:.3f} bits/char "
        f"after {trainer.step} steps"
    )


if __name__ == "__main__":
    main()
