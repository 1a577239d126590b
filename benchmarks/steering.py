"""Particles or steps: reward-tilted sampling on the benchmark language at equal network calls.

Target: the benchmark language (`HMMLanguage()`, L = 32) tilted by an additive
reward r(x) = λ · #{ℓ : x_ℓ = v}, π(x) ∝ p(x) e^{r(x)}, whose log-partition and
exact log π(x) come from `TiltedHMM` (torch-struct) and whose entropy is a Monte
Carlo average of exact -log π over 20 000 exact draws (the language is not
unifilar). Two rewards: "easy" (v = the most frequent token, λ = 0.5) and "rare"
(a token of unigram frequency 0.3 %, λ = 2.5). Every sampler uses the exact
denoiser, so what separates them is the sampler alone.

At a budget of C network evaluations per output (C = 32, 128): MDLM and
ReMDM-cap (η = 0.02) alone at T = C steps (the cache makes MDLM stop at ≈ L
calls: more steps cannot spend more); and, with a chain of T = 8 or 32 steps
inside and N = K = C/T, best-of-N (N MDLM draws, the highest reward kept) and
`ParticleSampler` with K particles over MDLM, over ReMDM-cap, and over MDLM with
`ess_threshold=0` (importance resampling).
Reported per cell: the exact NLL gap to the tilted entropy, E[-log π(x)]/L -
H(π)/L (nats/token; 0 is the target; it is KL(sampler ‖ π)/L plus the
sampler's own entropy deficit), the mean reward (the target's is exact), the
mean token entropy, network evaluations per output, each with a 95 % interval
(1.96 standard errors over outputs). Writes JSON lines and a plot.

    python benchmarks/steering.py [--samples 256] [--out steering.jsonl]
        [--plot docs/assets/steering.png]
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch

import discdiff as dd
from discdiff.data import HMMLanguage, TiltedHMM
from discdiff.evaluation.metrics import token_entropy

LENGTH, ETA = 32, 0.02
INNER_STEPS = (8, 32)  # the steps of the chain inside best-of-N and the particle samplers


def rewards(language: HMMLanguage) -> dict[str, TiltedHMM]:
    """The easy and the rare tilt of the language."""
    unigram = language.unigram(LENGTH)
    frequent = int(unigram.argmax())
    rare = int((unigram - 0.003).abs().argmin())
    out = {}
    for name, token, scale in (("easy", frequent, 0.5), ("rare", rare, 2.5)):
        w = torch.zeros(language.vocab_size, dtype=torch.float64)
        w[token] = scale
        out[name] = TiltedHMM(language, w)
    return out


def samplers(budget: int, tilt: TiltedHMM, process: dd.MaskingProcess) -> dict:
    """(family, name) -> draw(denoiser, n, generator) -> (tokens, evaluations per output)."""
    mdlm, cap = dd.MaskingPosterior(), dd.RemaskPosterior(dd.CapSchedule(ETA))

    def alone(strategy, steps):
        sampler = dd.AncestralSampler(process, strategy, steps=steps)

        def draw(denoiser, n, generator):
            result = sampler.sample(denoiser, n, LENGTH, generator=generator)
            return result.tokens, result.sequence_nfe.double()

        return draw

    def best_of(steps, count):
        sampler = dd.AncestralSampler(process, mdlm, steps=steps)

        def draw(denoiser, n, generator):
            result = sampler.sample(denoiser, n * count, LENGTH, generator=generator)
            tokens = result.tokens.view(n, count, LENGTH)
            best = tilt.reward(result.tokens).view(n, count).argmax(-1)
            spent = result.sequence_nfe.view(n, count).sum(-1).double()
            return tokens[torch.arange(n), best], spent

        return draw

    def steered(strategy, steps, count, threshold):
        sampler = dd.AncestralSampler(process, strategy, steps=steps)
        particles = dd.ParticleSampler(sampler, tilt.reward, count, ess_threshold=threshold)

        def draw(denoiser, n, generator):
            result = particles.sample(denoiser, n, LENGTH, generator=generator)
            return result.tokens, result.sequence_nfe.double()

        return draw

    cells = {
        ("MDLM", f"MDLM T={budget}"): alone(mdlm, budget),
        ("ReMDM-cap", f"ReMDM-cap T={budget}"): alone(cap, budget),
    }
    for steps in INNER_STEPS:
        count = budget // steps
        if count < 2:
            continue
        cells |= {
            (f"best-of-N, T={steps}", f"best-of-{count} MDLM T={steps}"): best_of(steps, count),
            (f"importance resampling, T={steps}", f"IS K={count} MDLM T={steps}"): steered(
                mdlm, steps, count, 0.0
            ),
            (f"FK steering MDLM, T={steps}", f"FK K={count} MDLM T={steps}"): steered(
                mdlm, steps, count, 0.5
            ),
            (f"FK steering ReMDM-cap, T={steps}", f"FK K={count} ReMDM-cap T={steps}"): steered(
                cap, steps, count, 0.5
            ),
        }
    return cells


def interval(values: torch.Tensor) -> tuple[float, float]:
    """Mean and 95 % half-width (1.96 standard errors)."""
    values = values.double()
    return float(values.mean()), 1.96 * float(values.std()) / math.sqrt(len(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--budgets", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--out", default="steering.jsonl")
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    language = HMMLanguage()
    process = dd.MaskingProcess(vocab_size=language.vocab_size)
    denoiser = language.denoiser()
    rows = []
    for reward_name, tilt in rewards(language).items():
        entropy = tilt.entropy(LENGTH, samples=20_000)
        target = {
            "reward": reward_name,
            "token": int(tilt.token_reward.argmax()),
            "scale": float(tilt.token_reward.max()),
            "log_partition": tilt.log_partition(LENGTH),
            "tilted_entropy": float(entropy),
            "tilted_entropy_se": entropy.stderr,
            "target_mean_reward": tilt.mean_reward(LENGTH),
            "language_mean_reward": float(
                (tilt.language.unigram(LENGTH) * tilt.token_reward).sum() * LENGTH
            ),
        }
        print(json.dumps(target))
        for budget in args.budgets:
            cells = samplers(budget, tilt, process).items()
            for index, ((family, name), draw) in enumerate(cells):
                generator = torch.Generator().manual_seed(1000 * budget + index)
                tic = time.time()
                tokens, spent = draw(denoiser, args.samples, generator)
                seconds = time.time() - tic
                gap = -tilt.log_prob(tokens) / LENGTH - float(entropy)
                row = dict(target, family=family, sampler=name, budget=budget)
                row["samples"] = args.samples
                for metric, values in (
                    ("gap", gap),
                    ("mean_reward", tilt.reward(tokens)),
                    ("token_entropy", token_entropy(tokens)),
                    ("nfe", spent),
                ):
                    row[metric], row[f"{metric}_ci95"] = interval(values)
                row["seconds"] = seconds
                rows.append(row)
                print(json.dumps({k: row[k] for k in ("reward", "sampler", "gap", "nfe")}))
    Path(args.out).write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wall time {time.time() - start:.0f} s")
    print(table(rows))
    if args.plot:
        plot(rows, args.plot)


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| reward | C | sampler | NLL gap to tilted H (nats/tok) | mean reward | token entropy "
        "| evaluations / output |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['reward']} | {r['budget']} | {r['sampler']} | {r['gap']:.3f} ± "
            f"{r['gap_ci95']:.3f} | {r['mean_reward']:.2f} ± {r['mean_reward_ci95']:.2f} "
            f"(π: {r['target_mean_reward']:.2f}) | {r['token_entropy']:.3f} ± "
            f"{r['token_entropy_ci95']:.3f} | {r['nfe']:.1f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    """NLL gap to the tilted entropy and mean reward against evaluations per output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["reward"] for r in rows))
    fig, axes = plt.subplots(2, len(names), figsize=(6.5 * len(names), 8), squeeze=False)
    for column, name in enumerate(names):
        family: dict[str, list[dict]] = {}
        for r in rows:
            if r["reward"] == name:
                family.setdefault(r["family"], []).append(r)
        for key, members in family.items():
            members.sort(key=lambda r: r["nfe"])
            for row, metric in enumerate(("gap", "mean_reward")):
                axes[row, column].errorbar(
                    [r["nfe"] for r in members],
                    [r[metric] for r in members],
                    yerr=[r[f"{metric}_ci95"] for r in members],
                    marker="o",
                    capsize=3,
                    label=key,
                )
        target = next(r["target_mean_reward"] for r in rows if r["reward"] == name)
        axes[0, column].axhline(0.0, color="grey", lw=0.8)
        axes[1, column].axhline(target, color="black", lw=1.0, ls="--", label="target π")
        for row, label in enumerate(("NLL gap to tilted entropy (nats/token)", "mean reward")):
            ax = axes[row, column]
            ax.set_xscale("log")
            ax.set_xlabel("network evaluations per output")
            ax.set_ylabel(label)
            ax.set_title(f"{name} reward")
        axes[1, column].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
