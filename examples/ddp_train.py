r"""Data-parallel MDLM training under `torchrun`: DDP (gloo on CPU, NCCL on GPUs) or FSDP.

Every rank builds the same model and the same `Trainer`. The trainer reads
`torchrun`'s environment (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`), starts the
process group, wraps the model in DDP (or FSDP with `--fsdp`; gloo on CPU, NCCL on CUDA) and
trains each rank on its slice of every global batch; rank 0 writes the
checkpoints. At the end the DDP ranks compare a checksum of their weights:
DDP keeps the replicas identical.

    # one machine, 8 GPUs: MDLM's optimiser settings on the built-in language
    torchrun --standalone --nproc_per_node=8 examples/ddp_train.py \
        --preset small --length 1024 --batch-size 512 --steps 10000 --out runs/ddp
    # a text file, character level
    torchrun --standalone --nproc_per_node=8 examples/ddp_train.py --text corpus.txt --out runs/ddp
    # CI: launches two CPU processes (gloo) itself and trains a micro DiT for a few steps
    python examples/ddp_train.py --smoke
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

import discdiff as dd
from discdiff.data import BlockSource, LanguageSource, SyntheticLanguage
from discdiff.data.text import char_blocks, check_mask_id, read_text
from discdiff.training import TrainConfig, Trainer


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["micro", "tiny", "small"], default="tiny")
    parser.add_argument("--length", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--batch-size", type=int, default=64, help="global, over all ranks")
    parser.add_argument("--accumulate", type=int, default=1, help="micro-batches per rank")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=2500)
    parser.add_argument("--ema", type=float, default=0.9999)
    parser.add_argument("--fsdp", action="store_true", help="shard with FSDP (fully_shard)")
    parser.add_argument("--text", type=Path, help="train on this text file, character level")
    parser.add_argument("--out", type=Path, default=Path("runs/ddp"))
    parser.add_argument("--nproc", type=int, default=2, help="processes --smoke launches")
    parser.add_argument("--smoke", action="store_true", help="a few CPU steps (CI)")
    return parser.parse_args()


def launch_smoke(args: argparse.Namespace) -> int:
    """Re-run this script under `python -m torch.distributed.run` with `--nproc` CPU ranks."""
    out = Path(tempfile.mkdtemp(prefix="discdiff-ddp-smoke-"))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={args.nproc}",
        str(Path(__file__).resolve()),
        "--smoke",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    try:
        return subprocess.run(command, env=env, timeout=300).returncode
    finally:
        shutil.rmtree(out, ignore_errors=True)


def data(args: argparse.Namespace) -> tuple[int, object, torch.Tensor]:
    """(vocabulary size, training source, validation blocks), identical on every rank."""
    if args.text is None:
        language = SyntheticLanguage()
        validation = language.sample(256, args.length, generator=torch.Generator().manual_seed(1))
        return language.vocab_size, LanguageSource(language, args.length), validation
    tokenizer, train, validation = char_blocks(read_text(args.text), args.length)
    check_mask_id(tokenizer, tokenizer.vocab_size)
    return tokenizer.vocab_size, BlockSource(train, tokenizer.vocab_size), validation


def main() -> int:
    args = parse()
    if args.smoke and "WORLD_SIZE" not in os.environ:
        return launch_smoke(args)
    if args.smoke:
        args.preset, args.length, args.batch_size, args.steps = "micro", 16, 8, 3
        args.lr, args.warmup, args.ema = 1e-3, 1, 0.9

    vocab_size, source, validation = data(args)
    process = dd.MaskingProcess(vocab_size=vocab_size)  # mask id = vocab_size
    preset = getattr(dd.DiTConfig, args.preset)
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts them)
    backbone = dd.DiT(preset(vocab_size=vocab_size + 1, model_length=args.length))
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        accumulate=args.accumulate,
        lr=args.lr,
        warmup=args.warmup,
        ema=args.ema,
        eval_every=0 if args.smoke else 500,
        eval_sequences=32 if args.smoke else 256,
        checkpoint_every=0 if args.smoke else 1000,
        progress=not args.smoke,
        fsdp=args.fsdp,
    )
    trainer = Trainer(
        process,
        dd.SUBS(backbone, process),
        source,
        config,
        validation=validation,
        run_dir=args.out,
    )
    rank, world = trainer.dist.rank, trainer.dist.world_size
    history = trainer.fit()
    bound = trainer.evaluate()

    checksum = torch.stack([p.detach().double().sum() for p in trainer.model.parameters()]).sum()
    checksum = checksum.to(trainer.device)
    if world > 1 and not args.fsdp:  # FSDP shards the weights: each rank holds different ones
        low, high = checksum.clone(), checksum.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise SystemExit(f"rank {rank}: the replicas differ ({float(low)} vs {float(high)})")
    if trainer.dist.is_main:
        backend = dist.get_backend() if dist.is_initialized() else "none"
        print(
            f"{world} rank(s), backend {backend}, device {trainer.device}; "
            f"{trainer.step} steps of {config.batch_size} x {args.length} tokens; "
            f"loss {history.losses[0]:.3f} -> {history.losses[-1]:.3f} nats/token; "
            f"validation bound {bound.bits_per_token:.3f} bits/token (EMA weights); "
            + ("replicas identical; " if world > 1 and not args.fsdp else "")
            + f"checkpoints in {args.out / 'checkpoints'}",
            flush=True,
        )
    if dist.is_initialized():
        dist.barrier()  # nobody tears the group down while another rank is in it
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
