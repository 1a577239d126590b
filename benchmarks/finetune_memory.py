"""Peak memory of supervised fine-tuning: every weight trained vs LoRA adapters.

Measured: one run builds a LLaMA-layout `BidirectionalTransformer` (d 512, 8 layers,
MLP 1376, vocabulary 32000: 58 M parameters), then trains it for two `Trainer` steps
on the same prompt/response batch twice, once fully and once with LoRA (peft, r=16
on q, k, v, o), counting every tensor with `PeakMemory` (weights, gradients, AdamW
states, activations). Prints both peaks and their ratio.

Computed (`--computed`, nothing is run): the per-GPU memory of fine-tuning
LLaDA-8B and Dream-7B from their configs (parameters counted on the meta device),
full vs LoRA, bf16 mixed precision with float32 master weights, sharded by FSDP
over N GPUs.

    python benchmarks/finetune_memory.py
    python benchmarks/finetune_memory.py --computed
"""

import argparse
import json

import torch
from memory import PeakMemory

from discdiff.data import PromptedSource
from discdiff.models.hf import HuggingFaceDenoiser
from discdiff.models.llm import BidirectionalTransformer, TransformerConfig
from discdiff.training import TrainConfig, Trainer
from discdiff.training.lora import LoraSpec, add_lora

LLADA_8B = TransformerConfig(
    vocab_size=126464,
    hidden_size=4096,
    intermediate_size=12288,
    layers=32,
    heads=32,
    kv_heads=32,
    mask_token_id=126336,
)
"""LLaDA-8B's shape (its config.json: d_model, n_layers, mlp_hidden_size, embedding_size)."""

DREAM_7B = TransformerConfig(
    vocab_size=152064,
    hidden_size=3584,
    intermediate_size=18944,
    layers=28,
    heads=28,
    kv_heads=4,
    mask_token_id=151666,
    qkv_bias=True,
)
"""Dream-7B's shape (Qwen2.5-7B's config.json)."""

GB = 1e9


def lora_parameters(config: TransformerConfig, r: int) -> int:
    """Parameters of rank-r adapters on q, k, v and o of every layer: r (d_in + d_out) each."""
    d, kv = config.hidden_size, config.kv_heads * config.head_dim
    per_layer = r * ((d + d) + (d + kv) + (d + kv) + (d + d))
    return per_layer * config.layers


def parameters(config: TransformerConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in BidirectionalTransformer(config).parameters())


def computed(gpus: tuple[int, ...] = (1, 8), r: int = 16) -> list[dict]:
    """Per-GPU bytes of weights and optimiser state (activations apart), FSDP over N GPUs.

    Full: float32 master weights, float32 gradients and AdamW's two float32 moments,
    16 bytes per parameter, all sharded. LoRA: the frozen base in bf16 (2 bytes per
    parameter, sharded) and the adapters with 16 bytes per parameter.
    """
    rows = []
    for name, config in (("LLaDA-8B", LLADA_8B), ("Dream-7B", DREAM_7B)):
        total, adapters = parameters(config), lora_parameters(config, r)
        for n in gpus:
            rows.append(
                {
                    "model": name,
                    "parameters": total,
                    "lora_parameters": adapters,
                    "gpus": n,
                    "full_gb": 16 * total / n / GB,
                    "lora_gb": (2 * total + 16 * adapters) / n / GB,
                    # checkpointed activations: each layer's bf16 input, per 1024 tokens
                    "checkpointed_activations_gb_per_1k_tokens": config.layers
                    * config.hidden_size
                    * 2
                    * 1024
                    / GB,
                    # float32 logits and their log-softmax, per 1024 tokens
                    "logits_gb_per_1k_tokens": 2 * 4 * config.vocab_size * 1024 / GB,
                }
            )
    return rows


def measured(steps: int = 2, batch: int = 4, length: int = 256, threads: int = 1) -> dict:
    """Peak tensor bytes of `steps` training steps, full vs LoRA, in one process."""
    torch.set_num_threads(threads)
    config = TransformerConfig(
        vocab_size=32000,
        hidden_size=512,
        intermediate_size=1376,
        layers=8,
        heads=8,
        kv_heads=8,
        mask_token_id=31999,
        attention="sdpa",
    )
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(31999, (batch, length), generator=generator)
    prompt = (torch.arange(length) < length // 4).expand(batch, length)
    real = torch.ones(batch, length, dtype=torch.bool)
    results = {}
    for label in ("full", "lora"):
        torch.manual_seed(0)
        with PeakMemory() as memory:
            model = BidirectionalTransformer(config)
            if label == "lora":
                add_lora(model, LoraSpec(r=16, alpha=32.0))
            denoiser = HuggingFaceDenoiser(model, mask_token_id=31999, model_vocab_size=32000)
            source = PromptedSource(rows, real, prompt, vocab_size=31999)
            settings = TrainConfig(
                steps=steps, batch_size=batch, ema=0.0, eval_every=0, progress=False, warmup=0
            )
            trainer = Trainer(denoiser.process(), denoiser, source, settings)
            for _ in range(steps):
                trainer.train_step()
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        results[label] = {"peak_gb": memory.peak / GB, "trainable_parameters": trainable}
        del trainer, denoiser, model
    results["parameters"] = sum(p.numel() for p in BidirectionalTransformer(config).parameters())
    results["ratio_full_over_lora"] = results["full"]["peak_gb"] / results["lora"]["peak_gb"]
    results["setting"] = {"batch": batch, "length": length, "steps": steps, "device": "cpu"}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--computed", action="store_true", help="the LLaDA-8B / Dream-7B table")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.computed:
        print(
            "| model | GPUs | parameters | LoRA r=16 parameters | full (GB/GPU) | LoRA (GB/GPU) |"
        )
        print("|---|---|---|---|---|---|")
        for row in computed():
            print(
                f"| {row['model']} | {row['gpus']} | {row['parameters'] / 1e9:.3f} B | "
                f"{row['lora_parameters'] / 1e6:.1f} M | {row['full_gb']:.1f} | "
                f"{row['lora_gb']:.1f} |"
            )
        extra = computed(gpus=(1,))
        for row in extra:
            print(
                f"{row['model']}: + {row['checkpointed_activations_gb_per_1k_tokens']:.3f} GB "
                f"checkpointed activations and {row['logits_gb_per_1k_tokens']:.2f} GB float32 "
                "logits per 1024 tokens on a GPU"
            )
        return
    print(json.dumps(measured(threads=args.threads), indent=2))


if __name__ == "__main__":
    main()
