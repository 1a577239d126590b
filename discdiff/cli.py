r"""The `discdiff` command: `quickstart`, `train` and `scale`.

`discdiff quickstart` is the main job: a reduced inference-time scaling study
on the built-in synthetic language, with the small checkpoint shipped in the
package (or one trained on the spot with `--from-scratch`). It samples with
MDLM, ReMDM (cap, loop), forward-backward, DFM and MaskGIT at
$T \in \{L/4, L, 4L\}$, scores every sample by its exact likelihood, prints the
table and writes `study.csv`, `study.json` and `study.png`.
"""

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from discdiff.data.sources import BlockSource, LanguageSource
from discdiff.data.synthetic import SyntheticLanguage
from discdiff.data.text import CharTokenizer, check_mask_id, pack, read_text
from discdiff.evaluation.synthetic import ASSET, run_synthetic_study
from discdiff.models.dit import DiT, DiTConfig
from discdiff.models.subs import SUBS
from discdiff.processes import MaskingProcess
from discdiff.training.trainer import TrainConfig, Trainer

__all__ = ["main", "train"]

TRAIN_HELP = """\
CONFIG is a JSON file with three sections:
  "data":  {"kind": "synthetic", "length": 64, "seed": 1}
           or {"kind": "text", "path": "corpus.txt", "length": 128, "val_fraction": 0.05}
  "model": DiTConfig fields (hidden_dim, cond_dim, n_blocks, n_heads, dropout,
           time_conditioning, attention); vocab_size and model_length follow the data
  "train": TrainConfig fields (steps, batch_size, accumulate, lr, warmup, weight_decay,
           grad_clip, ema, eval_every, eval_sequences, checkpoint_every, seed, max_minutes, ...)
The run directory gets config.json, checkpoints/ (resumable), history.json and model/
(the EMA weights as config.json + model.safetensors, loadable with DiT.from_pretrained).
"""


def _section(config: dict[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
    values = config.get(name, {})
    if not isinstance(values, dict):
        raise ValueError(f"config section `{name}` must be an object")
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(
            f"unknown key(s) {sorted(unknown)} in `{name}`; allowed: {sorted(allowed)}"
        )
    return values


def train(config: dict[str, Any], out: str | Path, *, progress: bool = True) -> Path:
    """Train a DiT as described by `config` (see `discdiff train --help`); returns `out/model`.

    Raises:
        ValueError: For unknown keys or values out of range, naming the key.
    """
    unknown = set(config) - {"data", "model", "train"}
    if unknown:
        raise ValueError(f"unknown section(s) {sorted(unknown)}; allowed: data, model, train")
    data = _section(config, "data", {"kind", "length", "seed", "path", "val_fraction"})
    model_keys = {f.name for f in fields(DiTConfig)} - {"vocab_size", "model_length"}
    model_cfg = _section(config, "model", model_keys)
    train_cfg = _section(config, "train", {f.name for f in fields(TrainConfig)})
    length = int(data.get("length", 64))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    if data.get("kind", "synthetic") == "synthetic":
        language = SyntheticLanguage()
        vocab = language.vocab_size
        source = LanguageSource(language, length, seed=int(data.get("seed", 1)))
        validation = language.sample(512, length, generator=torch.Generator().manual_seed(99))
    elif data["kind"] == "text":
        text = read_text(data["path"])
        tokenizer = CharTokenizer.from_text(text)
        vocab = tokenizer.vocab_size
        (out / "alphabet.json").write_text(json.dumps(tokenizer.alphabet))
        documents = [tokenizer.encode(p) for p in text.split("\n\n") if p]
        blocks = pack(documents, length, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)
        split = int((1 - float(data.get("val_fraction", 0.05))) * len(blocks))
        source, validation = BlockSource(blocks[:split], vocab), blocks[split:]
    else:
        raise ValueError(f"`data.kind` must be 'synthetic' or 'text'; got {data['kind']!r}")
    process = MaskingProcess(vocab_size=vocab)
    if data.get("kind") == "text":
        check_mask_id(tokenizer, process.mask_id)
    dit = DiT(DiTConfig(**{**model_cfg, "vocab_size": vocab + 1, "model_length": length}))
    settings = TrainConfig(**{**train_cfg, "progress": progress})
    trainer = Trainer(
        process, SUBS(dit, process), source, settings, validation=validation, run_dir=out
    )
    history = trainer.fit()
    (out / "history.json").write_text(
        json.dumps(
            {
                "losses": history.losses,
                "evals": history.evals,
                "train": asdict(settings) | {"betas": list(settings.betas)},
            },
            indent=1,
        )
    )
    with trainer.ema_weights():
        return dit.save_pretrained(out / "model")


def _quickstart(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.from_scratch:
        recipe = json.loads((ASSET / "train.json").read_text())
        recipe["train"] = {**recipe["train"], "steps": None, "max_minutes": args.minutes}
        model_dir = train(recipe, out / "train")
    else:
        model_dir = ASSET
    dit = DiT.from_pretrained(model_dir).eval()
    length = dit.config.model_length
    process = MaskingProcess(vocab_size=dit.config.vocab_size - 1)
    start = time.perf_counter()
    rows, reference = run_synthetic_study(
        SUBS(dit, process),
        out,
        length=length,
        samples=args.samples,
        steps=(length // 4, length, 4 * length),
    )
    _print_study(rows, reference)
    print(
        f"wrote {out / 'study.csv'}, {out / 'study.json'} and {out / 'study.png'} "
        f"({time.perf_counter() - start:.0f} s)"
    )
    return 0


def _print_study(rows: list[dict[str, Any]], reference: dict[str, float]) -> None:
    steps = sorted({r["steps"] for r in rows})
    print("exact NLL gap to the entropy (nats/token) | token entropy | NFE")
    print(f"{'sampler':28s}" + "".join(f"{'T=' + str(T):>24s}" for T in steps))
    seen = dict.fromkeys((r["denoiser"], r["sampler"], r["top_p"]) for r in rows)
    for denoiser, sampler, top_p in seen:
        cells = {
            r["steps"]: r
            for r in rows
            if (r["denoiser"], r["sampler"], r["top_p"]) == (denoiser, sampler, top_p)
        }
        name = f"{sampler} ({denoiser})" + ("" if top_p == 1.0 else f" p={top_p}")
        line = "".join(
            f"{cells[T]['nll_gap']:>9.3f} {cells[T]['token_entropy']:6.3f} {cells[T]['nfe']:6d}"
            if T in cells
            else " " * 24
            for T in steps
        )
        print(f"{name:28s}{line}")
    print(f"{'data':28s}{reference['nll_gap']:>9.3f} {reference['token_entropy']:6.3f}")


def _train(args: argparse.Namespace) -> int:
    path = Path(args.config)
    if not path.is_file():
        raise SystemExit(f"discdiff train: config file {str(path)!r} not found")
    config = json.loads(path.read_text())
    if args.minutes is not None:
        config.setdefault("train", {})["max_minutes"] = args.minutes
    try:
        model_dir = train(config, args.out)
    except (ValueError, TypeError) as error:
        raise SystemExit(f"discdiff train: {error}") from None
    print(f"model written to {model_dir}")
    return 0


def _scale(args: argparse.Namespace) -> int:
    dit = DiT.from_pretrained(args.model).eval()
    process = MaskingProcess(vocab_size=dit.config.vocab_size - 1)
    length = dit.config.model_length
    top_p = (None, 0.9) if args.nucleus else (None,)
    rows, reference = run_synthetic_study(
        SUBS(dit, process),
        args.out,
        length=length,
        samples=args.samples,
        steps=tuple(args.steps),
        top_p=top_p,
        seeds=tuple(range(args.seeds)),
        full=True,
        perfect=("MDLM", "ReMDM-cap", "ReMDM-loop", "forward-backward", "DFM"),
    )
    _print_study(rows, reference)
    return 0


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers; got {text!r}"
        ) from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"every value must be at least 1; got {text!r}")
    return values


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {value}")
    return value


def _minutes(text: str) -> float:
    value = float(text)
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes; got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `discdiff` command."""
    parser = argparse.ArgumentParser(prog="discdiff", description="Masked discrete diffusion.")
    commands = parser.add_subparsers(dest="command", required=True)

    quick = commands.add_parser(
        "quickstart",
        help="the main job: a scaling study on the built-in language",
        description=__doc__.split("\n\n")[1],
    )
    quick.add_argument("--out", default="runs/quickstart", help="output directory")
    quick.add_argument("--samples", type=_positive, default=64, help="samples per cell (64)")
    quick.add_argument(
        "--from-scratch",
        action="store_true",
        help="train a model first instead of using the shipped checkpoint",
    )
    quick.add_argument(
        "--minutes", type=_minutes, default=5.0, help="training time with --from-scratch (5)"
    )
    quick.set_defaults(run=_quickstart)

    trainer = commands.add_parser(
        "train",
        help="train a DiT from a JSON config",
        epilog=TRAIN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a DiT with the continuous-time NELBO; resumes from OUT/checkpoints.",
    )
    trainer.add_argument("--config", required=True, help="the JSON config (see below)")
    trainer.add_argument("--out", required=True, help="run directory")
    trainer.add_argument(
        "--minutes", type=_minutes, default=None, help="override train.max_minutes"
    )
    trainer.set_defaults(run=_train)

    scale = commands.add_parser(
        "scale",
        help="the full scaling study for a model trained on the built-in language",
        description="Every sampler x T x nucleus x seed, the perfect-model rows, CSV/JSON/PNG.",
    )
    scale.add_argument("--model", required=True, help="a DiT directory (e.g. RUN/model)")
    scale.add_argument("--out", required=True, help="output directory")
    scale.add_argument(
        "--steps",
        type=_int_list,
        default=[8, 16, 64, 256, 512],
        help="comma-separated step counts (8,16,64,256,512)",
    )
    scale.add_argument("--samples", type=_positive, default=256, help="samples per cell (256)")
    scale.add_argument("--seeds", type=_positive, default=3, help="number of seeds (3)")
    scale.add_argument("--nucleus", action="store_true", help="also run with top_p = 0.9")
    scale.set_defaults(run=_scale)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
