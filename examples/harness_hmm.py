r"""The shipped HMM model on three local lm-evaluation-harness tasks, against the exact likelihood.

Writes three lm-eval tasks over local JSONL files (nothing is downloaded) and
scores the built-in run `hmm` on them with the `discdiff` lm-eval model:

- `hmm_choice` (multiple choice, scored by loglikelihood): an 8-token context
  drawn from the HMM, and two 2-token continuations, its own and a uniform
  draw; the target is the one with the larger *exact* $\log p(c \mid x)$
  (forward algorithm), so the accuracy is the agreement of the model's
  conditional bounds with the exact likelihood;
- `hmm_generation` (exact match of 2 generated tokens);
- `hmm_rolling` (word perplexity of 72-token texts, scored in windows).

    python examples/harness_hmm.py --out harness-hmm [--items 200] [--draws 16] [--smoke]

`OUT/results.json` is lm-eval's output and `OUT/discdiff.json` adds the
settings, network calls, calls per generated token, tokens per second and the
Monte-Carlo standard errors; the exact agreement is printed beside the accuracy.
"""

import argparse
import json
from pathlib import Path

import torch

from discdiff.harness import run_harness
from discdiff.runs import load_run

TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
"""
KINDS = {
    "hmm_choice": """output_type: multiple_choice
doc_to_text: "{{context}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{label}}"
metric_list:
  - metric: acc
""",
    "hmm_generation": """output_type: generate_until
doc_to_text: "{{context}}"
doc_to_target: "{{answer}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 2
filter_list:
  - name: strip
    filter:
      - function: regex
        regex_pattern: "^\\\\s*(.*?)\\\\s*$"
      - function: take_first
metric_list:
  - metric: exact_match
""",
    "hmm_rolling": """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list:
  - metric: word_perplexity
""",
}


def write_tasks(folder: Path, items: int, seed: int = 0) -> dict[str, list[dict]]:
    """The three tasks' documents and YAML files in `folder`."""
    language = load_run("hmm").config.data.language
    generator = torch.Generator().manual_seed(seed)
    x = language.sample(items, 10, generator=generator)
    other = torch.randint(0, language.vocab_size, (items, 2), generator=generator)
    texts = language.sample(max(2, items // 20), 72, generator=generator)
    words = lambda row: " ".join(map(str, row.tolist()))  # noqa: E731
    choice, generation = [], []
    for i in range(items):
        options = [x[i, 8:], other[i]] if i % 2 else [other[i], x[i, 8:]]
        exact = language.log_prob(torch.stack([torch.cat((x[i, :8], o)) for o in options]))
        label = int(exact.argmax())
        choice.append(
            {"context": words(x[i, :8]), "choices": [words(o) for o in options], "label": label}
        )
        generation.append({"context": words(x[i, :8]), "answer": words(x[i, 8:])})
    documents = {
        "hmm_choice": choice,
        "hmm_generation": generation,
        "hmm_rolling": [{"text": words(row)} for row in texts],
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in documents.items():
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        header = TASK.format(name=name, data=data.resolve(), cache=(folder / "cache").resolve())
        (folder / f"{name}.yaml").write_text(header + KINDS[name])
    return documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="harness-hmm", help="output folder")
    parser.add_argument("--items", type=int, default=200, help="documents per task")
    parser.add_argument("--draws", type=int, default=16, help="Monte-Carlo draws per request")
    parser.add_argument("--estimator", default="llada", choices=["nelbo", "llada"])
    parser.add_argument("--smoke", action="store_true", help="a few documents, 2 draws")
    args = parser.parse_args()
    items, draws = (4, 2) if args.smoke else (args.items, args.draws)
    out = Path(args.out if not args.smoke else "/tmp/discdiff-harness-smoke")
    write_tasks(out / "tasks", items)
    path = run_harness(
        list(KINDS),
        {"run": "hmm", "estimator": args.estimator, "draws": draws, "sampler.steps": 16},
        out=out,
        include_path=out / "tasks",
        default_tasks=False,
    )
    record = json.loads(path.read_text())
    for task, metrics in record["results"].items():
        shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
        print(task, shown)
    for kind, tasks in record["discdiff"]["usage"].items():
        for task, usage in tasks.items():
            print(kind, task, {k: round(v, 4) for k, v in usage.items()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
