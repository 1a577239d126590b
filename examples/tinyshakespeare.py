"""Character-level masked diffusion on Tiny Shakespeare, and its sampler scaling study.

1. Packs the text into blocks of 128 characters (MDLM's wrap with <bos>/<eos>),
   holds out the last 5 % and trains a small DiT with the continuous-time NELBO
   for `--minutes`, reporting the validation bound in bits per character (the
   unigram entropy of the text is 4.78 bits/char).
2. With `--study`: trains an autoregressive judge on the same blocks for
   `--judge-minutes`, then samples with MDLM, ReMDM (cap, loop),
   forward-backward, DFM and MaskGIT at T = L/4, L, 4L with nucleus 0.9, and
   scores the samples by Gen PPL under the judge and by token entropy, next to
   the held-out data and the judge's own samples. The AR baseline joins the
   table: a separate causal transformer of the DiT's width and depth, trained
   with the same trainer for the same `--minutes` and sampled with the same
   nucleus rule ("AR (T=L)"), scored by the same (independent) judge. Writes
   study.csv/json/png.

    python examples/tinyshakespeare.py [--minutes 10] [--study] [--out runs/shakespeare]
    python examples/tinyshakespeare.py --smoke      # seconds, on a slice (CI)
"""

import argparse
import math
import tempfile
from pathlib import Path

import torch

import discdiff as dd
from discdiff.data import BlockSource, CharTokenizer, check_mask_id, pack, read_text
from discdiff.evaluation import (
    ARJudge,
    AutoregressiveNLL,
    autoregressive_study,
    gen_ppl,
    plot_study,
    scaling_study,
    token_entropy,
    write_rows,
)
from discdiff.studies.table1 import strategies
from discdiff.training import TrainConfig, Trainer

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--judge-minutes", type=float, default=3.0)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--study", action="store_true", help="run the sampler study too")
    parser.add_argument("--out", type=Path, default=Path("runs/shakespeare"))
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    smoke = args.smoke
    width, blocks_n = 192, 4
    if smoke:  # tiny sizes; never resume from, or write into, a real run directory
        args.out = Path(tempfile.mkdtemp(prefix="discdiff-smoke-"))
        args.length, width, blocks_n = 32, 32, 1

    text = read_text(args.data)
    if smoke:
        text = text[:20_000]
    tokenizer = CharTokenizer.from_text(text)
    process = dd.MaskingProcess(vocab_size=tokenizer.vocab_size)
    check_mask_id(tokenizer, process.mask_id)
    paragraphs = [tokenizer.encode(p) for p in text.split("\n\n") if p]
    blocks = pack(paragraphs, args.length, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)
    split = int(0.95 * len(blocks))
    train, validation = blocks[:split], blocks[split:]
    chars = torch.tensor([i for p in paragraphs for i in p])
    unigram = torch.bincount(chars, minlength=tokenizer.vocab_size).double() / len(chars)
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
        steps=4 if smoke else None,
        batch_size=8 if smoke else 32,
        lr=2e-3,
        warmup=50,
        ema=0.99,
        eval_every=2 if smoke else 100,
        eval_sequences=16 if smoke else 512,
        max_minutes=None if smoke else args.minutes,
        progress=not smoke,
    )

    def report(record):
        print(
            f"step {int(record['step']):6d}  {record['minutes']:5.1f} min  "
            f"bound {record['bits_per_token']:.3f} bits/char",
            flush=True,
        )

    denoiser = dd.SUBS(model, process)
    trainer = Trainer(
        process,
        denoiser,
        BlockSource(train, tokenizer.vocab_size),
        config,
        validation=validation,
        run_dir=args.out / "diffusion",
        on_eval=report,
    )
    history = trainer.fit()
    final = history.evals[-1]["bits_per_token"] if history.evals else math.nan
    print(
        f"{len(text):,} characters, {tokenizer.vocab_size} ids; unigram entropy "
        f"{unigram_bits:.2f} bits/char; validation bound {final:.3f} bits/char "
        f"after {trainer.step} steps",
        flush=True,
    )
    if not (args.study or smoke):
        return

    judge = ARJudge(tokenizer.vocab_size, args.length, width=width, layers=blocks_n, heads=4)
    judge_config = TrainConfig(
        steps=4 if smoke else None,
        batch_size=8 if smoke else 32,
        lr=1e-3,
        warmup=50,
        ema=0.0,
        eval_every=0,
        max_minutes=None if smoke else args.judge_minutes,
        progress=not smoke,
    )
    Trainer(
        process,
        judge,
        BlockSource(train, tokenizer.vocab_size),
        judge_config,
        objective=AutoregressiveNLL(),
        run_dir=args.out / "judge",
    ).fit()
    judge.eval()

    generator_model = dd.CausalTransformer(
        dd.CausalConfig(
            vocab_size=tokenizer.vocab_size,
            model_length=args.length,
            hidden_dim=width,
            n_blocks=blocks_n,
            n_heads=4,
        )
    )
    ar_trainer = Trainer(
        process,
        generator_model,
        BlockSource(train, tokenizer.vocab_size, seed=1),
        config,  # the diffusion model's settings and budget
        objective=AutoregressiveNLL(),
        run_dir=args.out / "ar",
    )
    ar_trainer.fit()

    def metrics(tokens):
        return {
            "gen_ppl": gen_ppl(judge, tokens),
            "token_entropy": float(token_entropy(tokens).mean()),
        }

    with torch.no_grad(), trainer.ema_weights():
        model.eval()
        steps = (2, 4) if smoke else (args.length // 4, args.length, 4 * args.length)
        rows = scaling_study(
            process,
            {"model": denoiser},
            strategies(),
            steps,
            metrics,
            samples=4 if smoke else args.samples,
            length=args.length,
            top_p=(0.9,),
            progress=not smoke,
        )
        with ar_trainer.ema_weights():
            generator_model.eval()
            rows += autoregressive_study(
                {"AR": generator_model},
                metrics,
                samples=4 if smoke else args.samples,
                length=args.length,
                top_p=(0.9,),
                progress=not smoke,
            )
        data = metrics(validation[: args.samples])
        ar = metrics(
            judge.sample(4 if smoke else args.samples, generator=torch.Generator().manual_seed(0))
        )
    write_rows(rows, args.out, "study")
    plot_study(
        rows,
        args.out / "study.png",
        metric="gen_ppl",
        label="Gen PPL (AR judge)",
        references={"data": data["gen_ppl"], "AR judge samples": ar["gen_ppl"]},
        title="Tiny Shakespeare (characters), nucleus 0.9",
    )
    print(f"{'sampler':18s}" + "".join(f"{'T=' + str(T):>18s}" for T in steps))
    for name in dict.fromkeys(r["sampler"] for r in rows):
        cells = {r["steps"]: r for r in rows if r["sampler"] == name}
        columns = steps if set(cells) <= set(steps) else sorted(cells)  # AR: T = L only
        print(
            f"{name:18s}"
            + "".join(
                f"{cells[T]['gen_ppl']:9.2f} {cells[T]['token_entropy']:5.2f} {cells[T]['nfe']:3d}"
                if T in cells
                else " " * 18
                for T in columns
            )
        )
    print(f"{'data':18s}{data['gen_ppl']:9.2f} {data['token_entropy']:5.2f}")
    print(f"{'AR judge samples':18s}{ar['gen_ppl']:9.2f} {ar['token_entropy']:5.2f}")
    print(f"wrote {args.out / 'study.csv'} and {args.out / 'study.png'}")


if __name__ == "__main__":
    main()
