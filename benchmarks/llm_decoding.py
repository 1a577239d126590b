"""Decoding speed on LLaDA: discdiff against Fast-dLLM's own generators, interleaved.

A random LLaDA of 4 layers, d_model 256 (vocabulary 2048, so one forward takes
milliseconds on a CPU) is written in LLaDA's file layout and loaded natively.
discdiff decodes it greedily with LLaDA's rule (`maskgit` + `EvenCount`) and with
Fast-dLLM's threshold rule (`threshold` on `maskgit`, tau = 0.9), each with no
cache (`AncestralSampler.complete`) and with Fast-dLLM's prefix and dual caches
(`BlockSampler.complete`), at batch 1 and at batch 8 with prompts of 8 different
lengths. When `--reference DIR` holds a checkout of NVlabs/Fast-dLLM, its
`llada/generate.py` generators (`generate`, `generate_with_prefix_cache`,
`generate_with_dual_cache`) run on its own `llada/model/modeling_llada.py`
loading the same weights (batch 1, one prompt at a time, as they take),
interleaved with discdiff's runs; without it, or when that code cannot be
imported (it needs `transformers` and `einops`), they are skipped with a message.
Prints tokens per second, network calls per sequence and the ratios, and writes
them as JSON.

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
from discdiff.sampling import AncestralSampler, BlockSampler

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
    config = {  # the keys LLaDA's own code reads, too
        "model_type": "llada",
        "rope": True,
        "block_type": "llama",
        "activation_type": "silu",
        "layer_norm_type": "rms",
        "rms_norm_eps": 1e-5,
        "include_bias": False,
        "weight_tying": False,
        "multi_query_attention": None,
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


class _Reference(torch.nn.Module):
    """Fast-dLLM's LLaDA module as its generators call it (`model(x, ...)`, `.device`)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.device = network, torch.device("cpu")

    def forward(self, x: torch.Tensor, **kwargs: object) -> object:
        return self.network(x, **kwargs)


def _reference(directory: str | None, weights: Path) -> tuple[object, object] | None:
    """Fast-dLLM's `generate.py` module and its own LLaDA loading `weights`, or `None`."""
    if directory is None:
        print("reference generators skipped: pass --reference DIR holding NVlabs/Fast-dLLM")
        return None
    root = Path(directory) / "llada"
    if not (root / "generate.py").is_file():
        print(f"reference generators skipped: no llada/generate.py in {directory}")
        return None
    sys.path.insert(0, str(root))
    try:
        from model.configuration_llada import LLaDAConfig
        from model.modeling_llada import LLaDAModelLM
        from safetensors.torch import load_file
    except ImportError as error:
        print(f"reference generators skipped: Fast-dLLM's model code does not import ({error})")
        return None
    source = (root / "generate.py").read_text()
    source = source.replace("from model.modeling_llada import LLaDAModelLM", "")
    spec = importlib.util.spec_from_loader("fast_dllm_generate", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, str(root / "generate.py"), "exec"), module.__dict__)
    config = LLaDAConfig(**json.loads((weights / "config.json").read_text()))
    config.init_device, config.use_cache = "cpu", False
    config.output_attentions = config.output_hidden_states = False
    network = LLaDAModelLM(config, init_params=False)
    network.load_state_dict(load_file(weights / "model.safetensors"))
    return module, _Reference(network.float().eval())


SETTINGS = {  # label: (strategy, threshold, cache)
    "none": ({"name": "maskgit", "count": "even"}, None, "none"),
    "prefix": ({"name": "maskgit", "count": "even"}, None, "prefix"),
    "dual": ({"name": "maskgit", "count": "even"}, None, "dual"),
    "threshold 0.9": ({"name": "threshold", "threshold": 0.9, "posterior": "maskgit"}, 0.9, "none"),
    "prefix + threshold 0.9": (
        {"name": "threshold", "threshold": 0.9, "posterior": "maskgit"},
        0.9,
        "prefix",
    ),
    "dual + threshold 0.9": (
        {"name": "threshold", "threshold": 0.9, "posterior": "maskgit"},
        0.9,
        "dual",
    ),
}
"""Each setting: discdiff's strategy, Fast-dLLM's `threshold` and the cache (both sides)."""


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
    with tempfile.TemporaryDirectory() as tmp:
        weights = write_llada(Path(tmp) / "llada", 4, 256, 2048)
        denoiser = load_diffusion_llm(
            weights, dtype=torch.float32, attention="sdpa", tokenizer=False
        )
        reference = _reference(args.reference, weights)
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, MASK, (n,), generator=generator) for n in range(20, 100, 10)]
    generators = {"none": "generate", "prefix": "generate_with_prefix_cache"}
    generators["dual"] = "generate_with_dual_cache"
    rows: dict[str, list[tuple[float, float]]] = {}
    agreement: dict[str, str] = {}  # tokens equal to the reference's, batch 1
    for _ in range(args.repeats):  # interleaved: every setting once per round
        for label, (form, threshold, cache) in SETTINGS.items():
            inner = AncestralSampler(
                denoiser.process(), build_strategy(form), args.length, temperature=0.0
            )
            for batch in (1, 8):
                rows_in = [denoiser.encode(p) for p in prompts[:batch]]
                start = time.perf_counter()
                if cache == "none":
                    result = inner.complete_batches(
                        denoiser, rows_in, args.length, seed=0, block_length=args.block_length
                    )
                else:
                    sampler = BlockSampler(inner, args.block_length, cache=cache)
                    result = sampler.complete_batches(denoiser, rows_in, args.length, seed=0)
                seconds = time.perf_counter() - start
                if batch == 1:
                    ours = denoiser.decode(result.tokens[0])
                nfe = float(result.sequence_nfe.double().mean())
                rows.setdefault(f"discdiff {label} batch {batch}", []).append(
                    (batch * args.length / seconds, nfe)
                )
            if reference is not None:
                module, model = reference
                start = time.perf_counter()
                with torch.no_grad():
                    x, nfe = getattr(module, generators[cache])(
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
                same = int((x[0, len(prompts[0]) :] == ours).sum())
                agreement[label] = f"{same}/{args.length}"
    table = {
        key: {
            "tokens_per_second": statistics.median(r[0] for r in values),
            "nfe": statistics.median(r[1] for r in values),
        }
        for key, values in rows.items()
    }
    for label in SETTINGS:
        ours = table[f"discdiff {label} batch 1"]["tokens_per_second"]
        theirs = table.get(f"Fast-dLLM {label} batch 1")
        if theirs is not None:
            table[f"discdiff {label} batch 1"]["ratio_to_reference"] = (
                ours / theirs["tokens_per_second"]
            )
            table[f"discdiff {label} batch 1"]["tokens_as_reference"] = agreement[label]
        table[f"discdiff {label} batch 8"]["ratio_to_batch_1"] = (
            table[f"discdiff {label} batch 8"]["tokens_per_second"] / ours
        )
    for key, values in table.items():
        shown = (f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        print(f"{key:40s} " + " ".join(shown))
    if args.out is not None:
        Path(args.out).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    sys.exit(main())
