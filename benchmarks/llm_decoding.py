"""Decoding speed on LLaDA: discdiff against LLaDA's / Fast-dLLM's own generators, interleaved.

A random LLaDA of 4 layers, d_model 256 (vocabulary 2048, so one forward takes
milliseconds on a CPU) is written in LLaDA's file layout and loaded natively.
discdiff decodes it greedily with LLaDA's rule (`maskgit` + `EvenCount`) and with
Fast-dLLM's threshold rule (`threshold` on `maskgit`, tau = 0.9), at batch 1 and at
batch 8 with prompts of 8 different lengths. When `--reference DIR` holds a
checkout of NVlabs/Fast-dLLM, its `llada/generate.py` generators run on the same
module (batch 1, one prompt at a time, as they take), interleaved with discdiff's
runs; without it they are skipped with a message. Prints tokens per second,
network calls per sequence and the ratios, and writes them as JSON.

    python benchmarks/llm_decoding.py --reference ~/Fast-dLLM --out llm_decoding.json
"""

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from discdiff.config import build_strategy
from discdiff.models.diffusion_llms import load_diffusion_llm
from discdiff.sampling import AncestralSampler

MASK = 2047


def write_llada(directory: Path, layers: int, d_model: int, vocab: int) -> Path:
    """A random LLaDA in LLaDA-8B's file layout (no tokenizer)."""
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    hidden = 4 * d_model
    shapes = {"model.transformer.wte.weight": (vocab, d_model)}
    for i in range(layers):
        b = f"model.transformer.blocks.{i}."
        shapes |= {
            b + "attn_norm.weight": (d_model,),
            b + "q_proj.weight": (d_model, d_model),
            b + "k_proj.weight": (d_model, d_model),
            b + "v_proj.weight": (d_model, d_model),
            b + "attn_out.weight": (d_model, d_model),
            b + "ff_norm.weight": (d_model,),
            b + "ff_proj.weight": (hidden, d_model),
            b + "up_proj.weight": (hidden, d_model),
            b + "ff_out.weight": (d_model, hidden),
        }
    shapes |= {"model.transformer.ln_f.weight": (d_model,)}
    shapes |= {"model.transformer.ff_out.weight": (vocab, d_model)}
    weights = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
            weights[name] = torch.ones(shape)
        else:
            weights[name] = torch.randn(shape, generator=generator) / shape[-1] ** 0.5
    weights["model.transformer.ff_out.weight"] *= 8.0  # peaked predictions, as trained models
    weights["model.transformer.ff_out.weight"][MASK] = 0.0
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
    config = {
        "model_type": "llada",
        "d_model": d_model,
        "n_heads": d_model // 64,
        "n_kv_heads": d_model // 64,
        "n_layers": layers,
        "mlp_hidden_size": hidden,
        "embedding_size": vocab,
        "vocab_size": vocab,
        "mask_token_id": MASK,
        "max_sequence_length": 4096,
        "rope_theta": 500000.0,
    }
    (directory / "config.json").write_text(json.dumps(config))
    return directory


class _Logits(torch.nn.Module):
    """The native module as the reference generators call it: `model(x).logits`."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.device = network, torch.device("cpu")

    def forward(self, x: torch.Tensor, **_: object) -> object:
        return self.network(input_ids=x)


def _reference(directory: str | None):
    if directory is None:
        return None
    path = Path(directory) / "llada" / "generate.py"
    if not path.is_file():
        return None
    source = path.read_text().replace("from model.modeling_llada import LLaDAModelLM", "")
    spec = importlib.util.spec_from_loader("fast_dllm_generate", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", default=None, help="a checkout of NVlabs/Fast-dLLM")
    parser.add_argument("--length", type=int, default=64, help="new tokens per prompt")
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reference = _reference(args.reference)
    if reference is None:
        print("reference generators skipped: pass --reference DIR holding NVlabs/Fast-dLLM")
    with tempfile.TemporaryDirectory() as tmp:
        denoiser = load_diffusion_llm(
            write_llada(Path(tmp) / "llada", 4, 256, 2048),
            dtype=torch.float32,
            attention="sdpa",
            tokenizer=False,
        )
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, MASK, (n,), generator=generator) for n in range(20, 100, 10)]
    settings = {
        "none": ({"name": "maskgit", "count": "even"}, None),
        "threshold 0.9": ({"name": "threshold", "threshold": 0.9, "posterior": "maskgit"}, 0.9),
    }
    rows: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.repeats):  # interleaved: every setting once per round
        for label, (form, threshold) in settings.items():
            sampler = AncestralSampler(
                denoiser.process(), build_strategy(form), args.length, temperature=0.0
            )
            for batch in (1, 8):
                rows_in = [denoiser.encode(p) for p in prompts[:batch]]
                start = time.perf_counter()
                result = sampler.complete_batches(
                    denoiser, rows_in, args.length, seed=0, block_length=args.block_length
                )
                seconds = time.perf_counter() - start
                key = f"discdiff {label} batch {batch}"
                nfe = float(result.sequence_nfe.double().mean())
                rows.setdefault(key, []).append((batch * args.length / seconds, nfe))
            if reference is not None:
                model = _Logits(denoiser.model)
                start = time.perf_counter()
                _, nfe = reference.generate(
                    model,
                    prompts[0][None],
                    steps=args.length,
                    gen_length=args.length,
                    block_length=args.block_length,
                    temperature=0.0,
                    mask_id=MASK,
                    threshold=threshold,
                )
                seconds = time.perf_counter() - start
                rows.setdefault(f"Fast-dLLM {label} batch 1", []).append(
                    (args.length / seconds, float(nfe))
                )
    table = {
        key: {
            "tokens_per_second": statistics.median(r[0] for r in values),
            "nfe": statistics.median(r[1] for r in values),
        }
        for key, values in rows.items()
    }
    for label in settings:
        ours = table[f"discdiff {label} batch 1"]["tokens_per_second"]
        theirs = table.get(f"Fast-dLLM {label} batch 1")
        if theirs is not None:
            table[f"discdiff {label} batch 1"]["ratio_to_reference"] = (
                ours / theirs["tokens_per_second"]
            )
        table[f"discdiff {label} batch 8"]["ratio_to_batch_1"] = (
            table[f"discdiff {label} batch 8"]["tokens_per_second"] / ours
        )
    for key, values in table.items():
        print(f"{key:32s} " + " ".join(f"{k} {v:.3g}" for k, v in values.items()))
    if args.out is not None:
        Path(args.out).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    sys.exit(main())
