r"""The `discdiff` command: `quickstart`, `train`, `sample`, `eval`, `scale`, `finetune`, `export`.

`discdiff quickstart` is the main job: the small version of the ReMDM paper's
Table 1 on the default benchmark language (a hidden Markov model with exact
likelihoods), with the small checkpoint shipped in the package (or one trained
on the spot with `--from-scratch`). It samples with MDLM, ReMDM-cap and
ReMDM-loop at T = L/4, L and 4L without a nucleus, scores every sample by its
exact likelihood, prints the gap to the entropy (lower is better, 0 is data
quality) with 95 % intervals and a three-line reading, and writes
`study.csv`, `study.json`, `study.png` and the samples (`--top-p 0.9`: the
paper's nucleus, under which the gap falls below 0). `--compare RUN ...`
adds the paper's baselines trained on the same language to the same table:
SEDD runs (`train.objective=score-entropy`, sampled with SEDD's analytic and
Euler samplers), AR runs (`train.objective=autoregressive`, "AR (T=L)" rows)
and other MDLM runs.

The other commands work on run directories (see `discdiff.runs`) described
by a YAML config (see `discdiff.config`): `train` fills one, `sample` draws
from its model with its `sampler` section, `eval` scores the model and every
sample set (or, with `--harness TASKS`, any run or LLaDA / Dream on
lm-evaluation-harness tasks; see `discdiff.harness`), `scale` runs
the full scaling study, or with `--preset table1` / `--preset table2` the
paper's Table 1 and Table 2 at CPU scale.
`finetune` fine-tunes a diffusion LLM (LLaDA, Dream) or a DiT run on
prompt/response data, with or without LoRA (see `discdiff.finetune`), and
`export` merges a LoRA adapter into its base.

This module only parses the options and prints: each command is one call
into `discdiff.runs`, `discdiff.finetune`, `discdiff.harness` or
`discdiff.studies.commands` (`quickstart`, `scale`).
"""

import argparse
import json
import math
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from discdiff._io import CorruptFileError, FolderBusyError
from discdiff.config import ConfigError, describe_config
from discdiff.presets import PAPER
from discdiff.runs import (
    BUILTIN_RUNS,
    evaluate_run,
    load_config,
    sample_model,
    sample_run,
    train_run,
)
from discdiff.studies import STUDY, quickstart, scale
from discdiff.tokenizer_loader import RemoteCodeError

__all__ = ["default_threads", "main"]

BATCH_HELP = (
    "samples per sampler call (default: a whole cell at once); the results do not depend on it"
)
COMPARE_HELP = (
    "more runs on the same data in the same table: MDLM runs with the same samplers, SEDD runs "
    "(train.objective=score-entropy) with SEDD's analytic and Euler samplers, AR runs "
    "(train.objective=autoregressive) as 'AR (T=L)' rows"
)
OVERRIDES_HELP = (
    "config overrides KEY=VALUE with a dotted key and a YAML value, e.g. train.steps=200 "
    "sampler.posterior=loop 'sampler.posterior={name: cap, eta: 0.01}' sampler.top_p=null"
)


def _quickstart(args: argparse.Namespace) -> int:
    report = quickstart(
        args.out,
        samples=args.samples,
        top_p=args.top_p,
        batch_size=args.batch_size,
        from_scratch=args.from_scratch,
        minutes=args.minutes,
        compare=args.compare,
    )
    print(report)
    return 0


def _train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.minutes is not None:
        overrides.append(f"train.max_minutes={args.minutes}")
    config = load_config(args.config, overrides)
    if args.dry_run:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    model_dir = train_run(config, args.out)
    print(f"model written to {model_dir}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    if args.model is not None:
        try:
            prompts = list(args.prompt or [])
            if args.prompts is not None:
                lines = Path(args.prompts).read_text().splitlines()
                prompts += [line.replace("\\n", "\n") for line in lines if line.strip()]
            folder = sample_model(
                args.model,
                args.overrides,
                prompt=prompts[0] if len(prompts) == 1 else (prompts or None),
                length=args.length,
                blocks=args.blocks,
                block_length=args.block_length,
                chat=args.chat,
                out=args.out,
                dtype=None if args.dtype == "auto" else getattr(torch, args.dtype),
                device=args.device,
                progress=not args.quiet,
                adapter=args.adapter,
            )
        except ValueError as error:  # an unsupported checkpoint, a missing chat template
            print(f"discdiff sample: error: {error}", file=sys.stderr)
            return 2
        completions = json.loads((folder / "samples.json").read_text())["completions"]
        for text in completions:
            print(text)
    else:
        if args.prompt is not None or args.prompts is not None or args.chat:
            print(
                "discdiff sample: error: --prompt, --prompts and --chat need --model",
                file=sys.stderr,
            )
            return 2
        if args.adapter is not None:
            print(
                "discdiff sample: error: --adapter needs --model (for a DiT run's adapter: "
                "discdiff export RUN --out DIR, then --run DIR)",
                file=sys.stderr,
            )
            return 2
        folder = sample_run(args.run, args.overrides, out=args.out, progress=not args.quiet)
    metrics = json.loads((folder / "metrics.json").read_text())
    print(json.dumps(metrics))
    print(f"samples written to {folder}")
    return 0


def _harness(args: argparse.Namespace) -> int:
    """`eval --harness`: lm-eval tasks on the `discdiff` model (needs the `harness` extra)."""
    try:
        from discdiff.harness import HarnessError, run_harness
    except ImportError as error:
        print(
            f"discdiff eval: error: --harness needs lm-eval ({error}); "
            "pip install 'discdiff[harness]'",
            file=sys.stderr,
        )
        return 2
    model_args = args.model_args or ""
    if args.run is not None:
        model_args = ",".join(filter(None, [f"run={args.run}", model_args]))
    if not model_args:
        print("discdiff eval: error: --harness needs --run or --model-args", file=sys.stderr)
        return 2
    try:
        path = run_harness(
            [t for t in args.harness.split(",") if t],
            model_args,
            out=args.out or "harness",
            include_path=args.include_path,
            limit=args.limit if args.limit is None or args.limit < 1 else int(args.limit),
            num_fewshot=args.num_fewshot,
            default_tasks=not args.no_default_tasks,
        )
    except HarnessError as error:
        print(f"discdiff eval: error: {error}", file=sys.stderr)
        return 2
    record = json.loads(path.read_text())
    for task, metrics in record["results"].items():
        for name, value in metrics.items():
            if "_stderr," in name:
                continue
            metric, _, flt = name.partition(",")
            stderr = metrics.get(f"{metric}_stderr,{flt}")
            spread = f" ± {stderr:.4f}" if isinstance(stderr, float) else ""
            print(f"{task:24s} {name:28s} {value:.4f}{spread}")
    for kind, tasks in record["discdiff"]["usage"].items():
        for task, usage in tasks.items():
            cost = " ".join(f"{k} {v:.4g}" for k, v in usage.items())
            print(f"{kind:22s} {task:24s} {cost}")
    print(f"wrote {path} and {path.parent / 'results.json'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    if args.harness is not None:
        return _harness(args)
    if args.run is None:
        print("discdiff eval: error: --run is required (or --harness)", file=sys.stderr)
        return 2
    path = evaluate_run(args.run, sequences=args.sequences, out=args.out)
    table = json.loads(path.read_text())
    bound = table["validation"]
    print(
        f"validation NELBO {bound['nats_per_token']:.4f} nats/token "
        f"({bound['bits_per_token']:.4f} bits, perplexity <= {bound['perplexity_bound']:.3f})"
    )
    for label, metrics in table["samples"].items():
        print(f"{label:32s} " + " ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    print(f"wrote {path}")
    return 0


def _scale(args: argparse.Namespace) -> int:
    report = scale(
        args.out,
        run=args.run,
        preset=args.preset,
        model=args.model,
        steps=args.steps,
        samples=args.samples,
        seeds=args.seeds,
        batch_size=args.batch_size,
        nucleus=args.nucleus,
        compare=args.compare,
        judge=args.judge,
    )
    print(report)
    return 0


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1]; got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1]; got {text!r}")
    return value


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


def default_threads() -> int:
    """Intra-op threads that do not oversubscribe a busy machine.

    `OMP_NUM_THREADS` if set; else the CPUs this process may use, less the
    ones other processes keep busy (the one-minute load average), at least
    one and never more than torch's default (the physical cores).
    """
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, min(torch.get_num_threads(), (usable or 1) - busy))


# -- fine-tuning: `finetune` and `export` ----------------------------------------------


def _finetune(args: argparse.Namespace) -> int:
    from discdiff.data.sft import SFTDataError
    from discdiff.finetune import finetune
    from discdiff.training.lora import LoraSpec

    try:
        lora = None if args.lora is None else LoraSpec.parse(args.lora)
        out = finetune(
            args.model,
            args.data,
            args.out,
            lora=lora,
            overrides=args.overrides,
            progress=not args.quiet,
        )
    except SFTDataError as error:
        print(f"discdiff finetune: error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # a bad --lora, an unsupported base, mismatched settings
        if isinstance(error, ConfigError):
            raise
        print(f"discdiff finetune: error: {error}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    metrics = json.loads((out / "metrics.json").read_text())
    print(json.dumps({k: v for k, v in metrics.items() if k != "provenance"}))
    written = "adapter" if (out / "adapter").is_dir() else "model"
    print(f"{written} written to {out / written}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from discdiff.finetune import export

    try:
        out = export(args.run, args.out)
    except ValueError as error:
        print(f"discdiff export: error: {error}", file=sys.stderr)
        return 2
    print(f"merged model written to {out}")
    return 0


def _add_finetune_commands(command: Callable[..., Any]) -> None:
    tune = command(
        "finetune",
        _finetune,
        "fine-tune a diffusion LLM or a DiT run on prompt/response data",
        "Supervised fine-tuning with the conditional bound: prompts are never noised or "
        "scored, EOS ends every response and is scored, padding follows sft.padding (eos: "
        "LLaDA's scored EOS pads; exclude: pads left out). DATA is a JSONL file of chat records "
        '({"messages": [{"role", "content"}, ...]}, rendered with the chat template; every '
        'assistant turn is response) or prompt/response records ({"prompt", "response"}: '
        "texts, or token id lists for a DiT run). OUT gets finetune.json, checkpoints/ "
        "(resumed if present), metrics.jsonl, metrics.json, and adapter/ (with --lora) or "
        "model/. Under torchrun it trains with DDP, or FSDP with train.fsdp=true.\n\n"
        "Keys: train.* (steps, batch_size, accumulate, lr, warmup, grad_clip, ema, eval_every, "
        "checkpoint_every, seed, fsdp, normalise: token | sequence) and sft.* (max_length, "
        "padding: eos | exclude, validation, seed, bucket, gradient_checkpointing).",
    )
    tune.add_argument(
        "--model",
        required=True,
        help="the base: a LLaDA / Dream directory or Hub id, or a DiT run (e.g. hmm)",
    )
    tune.add_argument(
        "--data", required=True, help="a JSONL file of chat or prompt/response records"
    )
    tune.add_argument("--out", required=True, help="the fine-tuning run directory")
    tune.add_argument(
        "--lora",
        default=None,
        metavar="SPEC",
        help="train LoRA adapters (peft) instead of every weight, e.g. "
        "r=16,alpha=32,targets=q,k,v,o (default targets: the attention projections)",
    )
    tune.add_argument("--quiet", action="store_true", help="no progress bar")
    tune.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)

    merge = command(
        "export",
        _export,
        "merge a fine-tuning run's LoRA adapter into its base model",
        "Fold RUN's adapter into its base weights and write a stand-alone model to OUT: a "
        "LLaDA / Dream directory in the base's own layout (sample it with --model OUT), or a "
        "DiT run directory (sample it with --run OUT).",
    )
    merge.add_argument("run", help="a fine-tuning run with adapter/")
    merge.add_argument("--out", required=True, help="the new model directory")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="discdiff",
        description="Masked discrete diffusion language models: MDLM and ReMDM.",
        epilog="Run `discdiff COMMAND --help` for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    builtin = ", ".join(BUILTIN_RUNS)

    def command(name: str, handler: Callable, summary: str, description: str, **kwargs: Any) -> Any:
        sub = commands.add_parser(
            name,
            help=summary,
            description="\n\n".join(textwrap.fill(p, 88) for p in description.split("\n\n")),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kwargs,
        )
        sub.set_defaults(handler=handler)
        sub.add_argument(
            "--threads",
            type=_positive,
            default=None,
            help="torch intra-op threads (default: OMP_NUM_THREADS if set, else the CPUs this "
            f"process may use less the busy ones, now {default_threads()})",
        )
        return sub

    quick = command(
        "quickstart",
        _quickstart,
        "the main job: a scaling study on the built-in language",
        __doc__.split("\n\n")[1],
    )
    quick.add_argument("--out", default="runs/quickstart", help="output directory")
    quick.add_argument(
        "--samples",
        type=_positive,
        default=STUDY.quickstart_samples,
        help=f"samples per cell ({STUDY.quickstart_samples})",
    )
    quick.add_argument("--batch-size", type=_positive, default=None, help=BATCH_HELP)
    quick.add_argument(
        "--top-p",
        type=_probability,
        default=STUDY.quickstart_top_p,
        help="nucleus mass with ReMDM's rule (default: off, so the table reads one way; "
        f"{PAPER.top_p} is the paper's setting)",
    )
    quick.add_argument(
        "--from-scratch",
        action="store_true",
        help="train a model first instead of using the shipped checkpoint",
    )
    quick.add_argument(
        "--minutes", type=_minutes, default=5.0, help="training time with --from-scratch (5)"
    )
    quick.add_argument("--compare", nargs="*", default=[], metavar="RUN", help=COMPARE_HELP)

    train = command(
        "train",
        _train,
        "train a DiT from a YAML config into a run directory",
        "Train a DiT with the continuous-time NELBO (or, with train.objective, a SEDD score "
        "model with score entropy or an autoregressive transformer). OUT gets run.yaml (the "
        "full config), checkpoints/ (resumed if present), history.json, metrics.json, "
        "learning_curve.png and model/ (the EMA weights, loadable with from_pretrained).",
        epilog=describe_config(),
    )
    train.add_argument(
        "--config", required=True, help=f"a YAML config file, or a built-in one ({builtin})"
    )
    train.add_argument("--out", required=True, help="the run directory")
    train.add_argument(
        "--minutes", type=_minutes, default=None, help="shorthand for train.max_minutes=M"
    )
    train.add_argument(
        "--dry-run", action="store_true", help="print the full checked config and exit"
    )
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)

    sample = command(
        "sample",
        _sample,
        "draw samples from a run's model with its sampler section",
        "Draw sampler.samples sequences with the run's sampler section (changed by sampler.* "
        "overrides). Writes samples.json (config, tokens, texts, metrics), samples.txt and "
        "metrics.json to RUN/samples/LABEL (runs/NAME/samples/LABEL for a built-in run).",
        epilog=describe_config(),
    )
    source = sample.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help=f"a run directory, or a built-in run ({builtin})")
    source.add_argument(
        "--model",
        help="an open diffusion LLM (LLaDA, Dream): a local directory or a Hub id such as "
        "GSAI-ML/LLaDA-8B-Instruct; loaded natively, no checkpoint code runs",
    )
    sample.add_argument(
        "--prompt",
        action="append",
        default=None,
        help="with --model: a text to complete; repeat it for several (completed together, "
        "each as alone, in order)",
    )
    sample.add_argument(
        "--prompts",
        default=None,
        metavar="FILE",
        help="with --model: a file of prompts, one per line (\\n for a line break), after any "
        "--prompt",
    )
    sample.add_argument(
        "--length", type=_positive, default=64, help="with --model: tokens to generate (64)"
    )
    sample.add_argument(
        "--blocks",
        type=_positive,
        default=1,
        help="with --model: generate the --length new tokens in this many equal left-to-right "
        "blocks (semi-autoregressive; 1); sampler.steps is the total over all blocks",
    )
    sample.add_argument(
        "--block-length",
        type=_positive,
        default=None,
        help="with --model: new tokens per block instead of --blocks (LLaDA's block_length); "
        "it must divide --length, and the number of blocks must divide sampler.steps, the "
        "total over all blocks; sampler.cache=prefix|dual runs the blocks with Fast-dLLM's "
        "key/value caches",
    )
    sample.add_argument(
        "--chat", action="store_true", help="with --model: wrap the prompt in the chat template"
    )
    sample.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="with --model: weight dtype (auto: as stored)",
    )
    sample.add_argument(
        "--device", default=None, help="with --model: cuda or cpu (default: cuda if available)"
    )
    sample.add_argument(
        "--out",
        default=None,
        help="output folder (default RUN/samples/LABEL, or samples/MODEL/LABEL with --model)",
    )
    sample.add_argument(
        "--adapter",
        default=None,
        metavar="RUN",
        help="with --model: a fine-tuning run (or its adapter/ folder) whose LoRA adapter is "
        "merged into the model",
    )
    sample.add_argument("--quiet", action="store_true", help="no progress bar")
    sample.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)

    evaluate = command(
        "eval",
        _eval,
        "score a run's model and its sample sets",
        "The validation NELBO (nats and bits per token, perplexity bound) of the run's model "
        "and, for every folder in RUN/samples, its metrics (exact NLL and its gap to the "
        "entropy on the synthetic language; token entropy). Writes RUN/eval.json.",
    )
    evaluate.add_argument(
        "--run", default=None, help=f"a run directory, or a built-in run ({builtin})"
    )
    evaluate.add_argument(
        "--sequences", type=_positive, default=256, help="validation sequences (256)"
    )
    evaluate.add_argument(
        "--out",
        default=None,
        help="output file (default RUN/eval.json); with --harness a folder (default harness)",
    )
    harness = evaluate.add_argument_group(
        "lm-evaluation-harness (the harness extra)",
        "Score the model on lm-eval tasks (the `discdiff` lm-eval model, "
        "discdiff.harness): OUT/results.json is lm-eval's output, OUT/discdiff.json "
        "adds the settings, network calls per generated token, tokens/s and Monte-Carlo stderrs.",
    )
    harness.add_argument("--harness", default=None, metavar="TASKS", help="comma-separated tasks")
    harness.add_argument(
        "--model-args",
        default=None,
        help="the model's arguments, k=v,... (e.g. model=DIR,draws=64,sampler.steps=128); "
        "--run R adds run=R",
    )
    harness.add_argument("--include-path", default=None, help="a folder of task YAML files")
    harness.add_argument("--limit", type=float, default=None, help="documents per task")
    harness.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples")
    harness.add_argument(
        "--no-default-tasks",
        action="store_true",
        help="only the tasks of --include-path (skips indexing lm-eval's own tasks)",
    )

    scale = command(
        "scale",
        _scale,
        "the full scaling study for a run on the built-in language",
        "Every sampler x T x nucleus x seed and the perfect-model rows; writes study.csv, "
        "study.json and study.png to OUT. With --preset table1: the ReMDM paper's Table 1 at "
        "CPU scale (T = L/4 ... 4L, nucleus 0.9 and off, seeds pooled into cells with 95 % "
        "intervals; table1.md, table1.csv, table1.json and one folder per nucleus setting; "
        "resumes a setting already finished in OUT).",
    )
    scale.add_argument(
        "--run",
        default=None,
        help=f"a run directory trained on synthetic data, or a built-in run ({builtin})",
    )
    scale.add_argument("--out", required=True, help="output directory")
    scale.add_argument(
        "--preset",
        choices=["table1", "table2"],
        default=None,
        help="run a preset grid instead: table1 (the paper's Table 1 rows, columns and nucleus) "
        "or table2 (class-conditional digits: MaskGIT, MDLM, ReMDM; FID and IS; needs --model)",
    )
    scale.add_argument(
        "--model",
        default=None,
        help="table2: a class-conditional digits DiT folder (config.json + model.safetensors)",
    )
    scale.add_argument(
        "--steps",
        type=_int_list,
        default=None,
        help=f"comma-separated step counts ({','.join(map(str, STUDY.scale_steps))}; "
        "table1: L/4,L/2,L,2L,4L; table2: "
        f"{','.join(map(str, STUDY.table2_steps))})",
    )
    scale.add_argument(
        "--samples",
        type=_positive,
        default=None,
        help=f"samples per cell and seed ({STUDY.scale_samples}; table1: "
        f"{STUDY.table1_samples}; table2: per class, {STUDY.table2_samples_per_class})",
    )
    scale.add_argument(
        "--seeds", type=_positive, default=None, help=f"number of seeds ({STUDY.scale_seeds})"
    )
    scale.add_argument("--batch-size", type=_positive, default=None, help=BATCH_HELP)
    scale.add_argument(
        "--nucleus",
        action="store_true",
        help=f"also run with the paper's top_p = {PAPER.top_p} (ReMDM's nucleus rule)",
    )
    scale.add_argument("--compare", nargs="*", default=[], metavar="RUN", help=COMPARE_HELP)
    scale.add_argument(
        "--judge",
        default=None,
        metavar="RUN",
        help="table1: an autoregressive run trained apart from every row, whose features give "
        "the MAUVE column",
    )
    _add_finetune_commands(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `discdiff` command.

    Bad options, configs and missing or damaged files end the command with
    exit status 2 and a one-line message naming the option, config key or
    file, before any work starts; so do an output folder another process is
    writing (naming its pid) and a full disk (naming the file and what was
    kept). Every command takes `--threads` (default `default_threads()`).
    """
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may also follow the options (`sample --run R --quiet sampler.steps=8`).
    if extra and (not hasattr(args, "overrides") or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads or default_threads())
    try:
        return args.handler(args)
    except (ConfigError, CorruptFileError, RemoteCodeError, FolderBusyError, OSError) as error:
        # OSError: a missing or existing file, a full disk (DiskFullError), no permission
        message = " ".join(str(error).split())
        parser.exit(2, f"discdiff {args.command}: error: {message}\n")
    finally:
        torch.set_num_threads(previous)  # for callers of main() in a longer-lived process


if __name__ == "__main__":
    sys.exit(main())
