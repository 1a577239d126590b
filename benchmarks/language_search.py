"""Which exact language makes a good benchmark: train the shipped recipe on one, report gaps.

    python benchmarks/language_search.py hmm --steps 1800 --spec '{"states": 16}'

Trains the 1M-parameter DiT of the shipped checkpoints (d 128, 4 blocks, L = 64,
batch 64, lr 2e-3, EMA 0.99, one torch thread) for `--steps` steps on the
language named as in run configs (`synthetic`, `hmm`, `pcfg`), then prints one
JSON line: the entropy (Monte Carlo with its standard error where not exact),
the EMA model's held-out NELBO and its excess over the entropy, and the exact
NLL gap to the entropy of 128 samples drawn with MDLM and the paper's nucleus
(p = 0.9, ReMDM's rule) at T = L and 4L, from the model and from the exact
denoiser.
"""

import argparse
import json
import time

import torch

import discdiff as dd
from discdiff.config import choices
from discdiff.data import LanguageSource
from discdiff.objectives import held_out_bound
from discdiff.presets import PAPER
from discdiff.training import TrainConfig, Trainer

LENGTH = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("language", choices=sorted(choices("language")))
    parser.add_argument("--steps", type=int, default=1800)
    parser.add_argument("--spec", default="{}", help="the language's arguments, as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = json.loads(args.spec)
    language = choices("language")[args.language](**spec)
    start = time.time()
    entropy = language.entropy(LENGTH)
    process = dd.MaskingProcess(vocab_size=language.vocab_size)
    torch.manual_seed(0)
    config = dd.DiTConfig(
        hidden_dim=128,
        cond_dim=64,
        n_blocks=4,
        n_heads=4,
        vocab_size=language.vocab_size + 1,
        model_length=LENGTH,
        dropout=0.0,
    )
    model = dd.SUBS(dd.DiT(config), process)
    validation = language.sample(512, LENGTH, generator=torch.Generator().manual_seed(99))
    settings = TrainConfig(
        steps=args.steps, batch_size=64, lr=2e-3, warmup=50, ema=0.99, eval_every=0, progress=False
    )
    trainer = Trainer(
        process, model, LanguageSource(language, LENGTH, seed=1), settings, validation=validation
    )
    trainer.fit(resume=False)
    out = {
        "language": args.language,
        "spec": spec,
        "steps": args.steps,
        "train_s": round(time.time() - start),
        "entropy": float(entropy),
        "entropy_stderr": entropy.stderr,
        "unigram": language.unigram_cross_entropy(LENGTH),
    }
    with trainer.ema_weights(), torch.no_grad():
        model.eval()
        out["nelbo"] = held_out_bound(process, model, validation).nats_per_token
        out["nelbo_excess"] = out["nelbo"] - float(entropy)
        for label, denoiser in (("model", model), ("perfect", language.denoiser(process.mask_id))):
            for steps in (LENGTH, 4 * LENGTH):
                sampler = dd.AncestralSampler(
                    process,
                    dd.MaskingPosterior(),
                    steps=steps,
                    top_p=PAPER.top_p,
                    nucleus=PAPER.nucleus,
                )
                generator = torch.Generator().manual_seed(0)
                x = sampler.sample(denoiser, 128, LENGTH, generator=generator).tokens
                nll = -language.log_prob(x).mean() / LENGTH
                out[f"gap_{label}_T{steps}"] = float(nll) - float(entropy)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
