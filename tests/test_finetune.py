"""`discdiff finetune`: LoRA on a tiny LLaDA, full fine-tuning of a DiT run, exact resume
after a kill, adapters that change samples, merged = unmerged logits, FSDP = one process."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from llm_fixtures import WORDS, write_tiny_llada
from safetensors.torch import load_file

from discdiff.cli import main
from discdiff.config import ConfigError, RunConfig
from discdiff.finetune import apply_adapter, export, finetune, load_base
from discdiff.models.diffusion_llms import load_diffusion_llm
from discdiff.models.dit import DiT
from discdiff.runs import resolve_run, sample_model
from discdiff.training.lora import LoraSpec, add_lora, merge_lora

HERE = Path(__file__).parent
LORA = LoraSpec(r=4, alpha=8.0)
FAST = [
    "train.steps=8",
    "train.batch_size=8",
    "train.lr=0.02",
    "train.warmup=0",
    "train.eval_every=4",
    "train.checkpoint_every=4",
    "sft.max_length=16",
    "sft.validation=0.2",
]


def chat_data(path: Path, n: int = 40) -> Path:
    generator = random.Random(0)
    with path.open("w") as file:
        for _ in range(n):
            prompt = " ".join(generator.choice(WORDS[:16]) for _ in range(generator.randint(1, 4)))
            messages = [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": "big red dog"},
            ]
            file.write(json.dumps({"messages": messages}) + "\n")
    return path


@pytest.fixture(scope="module")
def llada_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    base = write_tiny_llada(root / "base")
    data = chat_data(root / "data.jsonl")
    torch.manual_seed(0)
    out = finetune(base, data, root / "run", lora=LORA, overrides=FAST, progress=False)
    return base, data, out


def test_lora_finetuning_runs_end_to_end_and_learns(llada_run):
    _, _, out = llada_run
    assert {p.name for p in (out / "adapter").iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    validations = [r["validation"]["nats_per_token"] for r in records if "validation" in r]
    assert len(losses) == 8 and len(validations) == 2
    assert validations[-1] < validations[0]
    # only the adapters were trained and checkpointed: the base stays as it was
    weights = load_file(out / "checkpoints" / "step-00000008" / "model.safetensors")
    assert weights and all("lora_" in name for name in weights)
    assert json.loads((out / "metrics.json").read_text())["step"] == 8


def test_adapter_changes_samples_and_merging_keeps_the_logits(llada_run, tmp_path):
    base, _, out = llada_run
    plain = load_diffusion_llm(base)
    adapted = load_diffusion_llm(base)
    apply_adapter(adapted.model, out, merge=False)
    merged = load_diffusion_llm(base)
    apply_adapter(merged.model, out)
    exported = load_diffusion_llm(export(out, tmp_path / "merged"))
    z = torch.tensor([[3, 5, 60, 60, 60, 60, 7, 60]])
    z = plain.encode(z)
    t = torch.ones(1)
    with torch.no_grad():
        logits = {
            name: model(z, t)
            for name, model in [
                ("plain", plain),
                ("adapted", adapted),
                ("merged", merged),
                ("exported", exported),
            ]
        }
    masked = z == plain.mask_id
    assert (logits["adapted"] - logits["plain"])[masked].abs().max() > 1e-2
    torch.testing.assert_close(logits["merged"], logits["adapted"], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits["exported"], logits["adapted"], atol=1e-5, rtol=0)

    settings = dict(
        prompt="the cat", length=6, progress=False, overrides=["sampler.steps=6"], device="cpu"
    )
    before = sample_model(base, out=tmp_path / "before", **settings)
    after = sample_model(base, out=tmp_path / "after", adapter=out, **settings)
    tokens = [json.loads((f / "samples.json").read_text())["tokens"] for f in (before, after)]
    assert tokens[0] != tokens[1]


def test_lora_peft_merge_is_exact_on_the_dit():
    from discdiff.models.dit import DiTConfig

    torch.manual_seed(0)
    dit = DiT(DiTConfig.micro(vocab_size=13, model_length=16)).eval()
    z, t = torch.randint(13, (3, 16)), torch.rand(3)
    add_lora(dit, LoraSpec(r=2, alpha=4.0))
    with torch.no_grad():
        for name, p in dit.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
        unmerged = dit(z, t)
        merged = merge_lora(dit)(z, t)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)
    assert all(p.requires_grad for p in dit.parameters())


def test_lora_on_the_native_dream_module_merges_exactly(tmp_path):
    from llm_fixtures import write_tiny_dream

    dream = load_diffusion_llm(write_tiny_dream(tmp_path / "dream"))
    add_lora(dream.model, LoraSpec(r=2, alpha=4.0))
    z = dream.encode(torch.tensor([[3, 60, 60, 7, 60, 9]]))
    with torch.no_grad():
        for name, p in dream.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
        unmerged = dream(z, torch.ones(1))
        merge_lora(dream.model)
        merged = dream(z, torch.ones(1))
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)


def hmm_data(path: Path, n: int = 48) -> Path:
    """Prefix (6 tokens) -> continuation (10 tokens) pairs of the benchmark language."""
    language = RunConfig.load(resolve_run("hmm") / "run.yaml").data.language
    x = language.sample(n, 16, generator=torch.Generator().manual_seed(0))
    with path.open("w") as file:
        for row in x.tolist():
            file.write(json.dumps({"prompt": row[:6], "response": row[6:]}) + "\n")
    return path


def test_full_finetuning_of_a_dit_run(tmp_path):
    data = hmm_data(tmp_path / "hmm.jsonl")
    overrides = [
        "train.steps=4",
        "train.batch_size=8",
        "train.eval_every=2",
        "sft.padding=exclude",
        "sft.max_length=16",
        "sft.validation=0.25",
    ]
    out = finetune("hmm", data, tmp_path / "run", overrides=overrides, progress=False)
    # a run directory: model/ and the base's run.yaml
    assert (out / "run.yaml").read_text() == (resolve_run("hmm") / "run.yaml").read_text()
    tuned, base = DiT.from_pretrained(out / "model"), load_base("hmm").network
    changed = [
        not torch.equal(a, b)
        for a, b in zip(tuned.state_dict().values(), base.state_dict().values(), strict=True)
    ]
    assert any(changed)
    records = (out / "metrics.jsonl").read_text().splitlines()
    assert sum('"validation"' in r for r in records) == 2 and len(records) == 6
    with pytest.raises(ValueError, match="no EOS"):
        finetune("hmm", data, tmp_path / "eos", overrides=overrides[4:], progress=False)


def test_settings_are_checked(llada_run, tmp_path):
    base, data, out = llada_run
    with pytest.raises(FileExistsError, match="lora"):
        finetune(base, data, out, lora=LoraSpec(r=8), overrides=FAST, progress=False)
    with pytest.raises(ConfigError, match=r"train\.steps"):
        finetune(base, data, tmp_path / "x", overrides=["train.steps=0"], progress=False)
    with pytest.raises(ConfigError, match=r"sft\.padding"):
        finetune(base, data, tmp_path / "x", overrides=["sft.padding=zero"], progress=False)
    with pytest.raises(ValueError, match="unknown key"):
        LoraSpec.parse("rank=4")
    with pytest.raises(ValueError, match="name no module"):
        add_lora(load_base(base).network, LoraSpec(targets=("nope",)))


def test_finetune_command_reports_bad_records_with_their_line(tmp_path, capsys):
    base = write_tiny_llada(tmp_path / "base")
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "the", "response": "cat"}\n{"prompt": "the"}\n')
    code = main(["finetune", "--model", str(base), "--data", str(data), "--out", str(tmp_path)])
    assert code == 2
    assert f"{data}:2:" in capsys.readouterr().err
    assert not (tmp_path / "finetune.json").exists()  # nothing half-written
    with pytest.raises(SystemExit):
        main(["finetune", "--model", str(base), "--data", str(data), "--out", "o", "x.y=1"])


def _command(base, data, out, steps):
    return [
        sys.executable,
        "-m",
        "discdiff.cli",
        "finetune",
        "--threads",
        "1",
        "--quiet",
        "--model",
        str(base),
        "--data",
        str(data),
        "--out",
        str(out),
        "--lora",
        "r=4,alpha=8,targets=q,v",
        f"train.steps={steps}",
        "train.batch_size=8",
        "train.lr=0.01",
        "train.checkpoint_every=2",
        "train.eval_every=10",
        "sft.max_length=16",
        "sft.validation=0.2",
    ]


@pytest.mark.slow
def test_a_killed_finetuning_run_resumes_exactly(tmp_path):
    """SIGKILL after the step-4 checkpoint, start again: metrics.jsonl and the adapter are
    bit-identical to an uninterrupted run's (SIGTERM is also handled: it checkpoints)."""
    base = write_tiny_llada(tmp_path / "base")
    data = chat_data(tmp_path / "data.jsonl")
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": "1"}
    steps = 40
    subprocess.run(_command(base, data, tmp_path / "whole", steps), check=True, env=env)
    killed = subprocess.Popen(_command(base, data, tmp_path / "killed", steps), env=env)
    checkpoint = tmp_path / "killed" / "checkpoints" / "step-00000004"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "adapter").exists()  # it did not get to the end
    subprocess.run(_command(base, data, tmp_path / "killed", steps), check=True, env=env)
    for name in ("metrics.jsonl",):
        assert (tmp_path / "killed" / name).read_text() == (tmp_path / "whole" / name).read_text()
    a = load_file(tmp_path / "killed" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_fsdp_with_two_processes_matches_one_process(tmp_path):
    """torchrun, gloo on CPU, FSDP (fully_shard): the loss curve of 4 steps on the same global
    batches, the gathered checkpoint, and 2 more steps resumed from it equal one process's
    within 1e-5 (relative) for losses and 1e-6 for weights (float32 reduction order)."""
    from training_setup import make_trainer

    out = tmp_path / "fsdp.pt"
    env = {**os.environ, "PYTHONPATH": f"{HERE}:{HERE.parent}", "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(HERE / "fsdp_worker.py"),
            str(out),
            str(tmp_path / "fsdp"),
        ],
        check=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    fsdp = torch.load(out, weights_only=True)
    single = make_trainer(run_dir=tmp_path / "one", steps=4, dropout=0.0)
    first = torch.tensor(single.fit().losses)
    resumed = torch.tensor(
        make_trainer(run_dir=tmp_path / "one", steps=6, dropout=0.0).fit().losses
    )
    torch.testing.assert_close(fsdp["first"], first, rtol=1e-5, atol=0)
    torch.testing.assert_close(fsdp["resumed"], resumed, rtol=1e-5, atol=0)
    step = "checkpoints/step-00000006"
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(tmp_path / "fsdp" / step / name), load_file(tmp_path / "one" / step / name)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_fsdp_lora_finetuning_under_torchrun_matches_one_process(tmp_path):
    """`torchrun -m discdiff.cli finetune ... train.fsdp=true` with LoRA on 2 gloo processes:
    the same loss curve (relative 1e-5) and adapter (1e-6) as one process."""
    base = write_tiny_llada(tmp_path / "base")
    data = chat_data(tmp_path / "data.jsonl")
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": "1"}
    one = [*_command(base, data, tmp_path / "one", 6), "train.fsdp=true"]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two += ["-m", *_command(base, data, tmp_path / "two", 6)[2:], "train.fsdp=true"]
    subprocess.run(one, check=True, env=env, timeout=300)
    subprocess.run(two, check=True, env=env, timeout=300, cwd=tmp_path)

    def losses(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return torch.tensor([json.loads(line).get("loss", float("nan")) for line in lines])

    torch.testing.assert_close(losses("two"), losses("one"), rtol=1e-5, atol=0, equal_nan=True)
    a = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0)
