"""The `discdiff` command and its typed configs: help, errors naming keys, run directories."""

import json

import pytest
import yaml
from cli_smoke import TINY_RUN

from discdiff import (
    CapSchedule,
    ConfidenceSchedule,
    Cosine,
    DiT,
    LoopSchedule,
    NoRemasking,
    RemaskPosterior,
)
from discdiff.cli import main
from discdiff.config import (
    ConfigError,
    RunConfig,
    SamplerSpec,
    choices,
    parse_override,
)
from discdiff.runs import load_config

TINY = [*TINY_RUN, "sampler.steps=8", "sampler.samples=6", "sampler.batch_size=4"]


def _fail(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("command", ["quickstart", "train", "sample", "eval", "scale"])
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: discdiff " + command in capsys.readouterr().out


def test_train_help_lists_every_config_key_and_choice(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for section, values in RunConfig().to_dict().items():
        for key in values:
            assert f"{key} [" in text, (section, key)
    for name in [*choices("schedule"), *choices("strategy")]:
        assert f"{name}(" in text


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["quickstart", "--samples", "0"], "--samples"),
        (["quickstart", "--minutes", "-1"], "--minutes"),
        (["scale", "--run", "m", "--out", "o", "--steps", "0,4"], "--steps"),
        (["train", "--out", "o"], "--config"),
    ],
)
def test_bad_options_name_the_option(capsys, argv, option):
    assert option in _fail(capsys, argv)


@pytest.mark.parametrize(
    ("override", "key", "allowed"),
    [
        ("train.stpes=3", "train.stpes", "did you mean 'steps'"),
        ("sampler.posterior=capp", "sampler.posterior.name", "loop"),
        ("sampler.posterior.eta=1.5", "sampler.posterior.eta", "[0, 1]"),
        ("sampler.posterior={name: loop, eta: 0.5}", "sampler.posterior.eta", "[0, 0.111111]"),
        ("process.schedule=cosin", "process.schedule.name", "cosine"),
        ("sampler.top_p=1.5", "sampler.top_p", "(0, 1]"),
        ("model.vocab_size=7", "model.vocab_size", "set by the data"),
        ("model.num_classes=10", "model.num_classes", "labelled data"),
        ("data.kind=txt", "data.kind", "synthetic, text"),
        ("data.kind=text", "data.path", "needed"),
        ("train.lr=fast", "train.lr", "float"),
        ("optimizer.lr=1", "optimizer", "allowed: data, model, process, train, sampler"),
        ("train.steps", "train.steps", "section.key=value"),
    ],
)
def test_bad_config_fails_before_work_naming_the_key(capsys, tmp_path, override, key, allowed):
    out = tmp_path / "run"
    err = _fail(capsys, ["train", "--config", "synthetic", "--out", str(out), override])
    assert f"error: {key}:" in err and allowed in err
    assert not out.exists()


def test_bad_yaml_file_names_the_key(capsys, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("sampler:\n  posterior: {name: cap, eta: 2}\n")
    err = _fail(capsys, ["train", "--config", str(config), "--out", str(tmp_path / "run")])
    assert "sampler.posterior.eta" in err
    err = _fail(capsys, ["train", "--config", str(tmp_path / "no.yaml"), "--out", "x"])
    assert "no.yaml" in err and "built-in" in err


def test_config_builds_the_objects_and_round_trips(tmp_path):
    text = """
process: {schedule: {name: cosine, eps: 1e-3}}
train: {lr: 1e-3, betas: [0.9, 0.98]}
sampler:
  posterior: {name: conf, base: {name: cap, eta: 0.02}}
  top_p: 0.9
"""
    (tmp_path / "c.yaml").write_text(text)
    config = RunConfig.load(tmp_path / "c.yaml", ["sampler.steps=32"])
    # YAML 1.1 reads 1e-3 as a string; the float annotation accepts it.
    assert config.process.schedule == Cosine(eps=1e-3)
    assert config.train.lr == 1e-3 and config.train.betas == (0.9, 0.98)
    assert config.sampler.posterior.schedule.base == CapSchedule(0.02)
    assert config.sampler.steps == 32
    config.dump(tmp_path / "full.yaml")
    again = RunConfig.load(tmp_path / "full.yaml")
    assert again.to_dict() == config.to_dict()
    sampler = again.sampler.build(again.process.build(5))
    assert sampler.steps == 32 and sampler.shaping.top_p == 0.9


@pytest.mark.parametrize("name", sorted(choices("strategy")))
def test_every_posterior_name_round_trips(name):
    process = "uniform" if name == "uniform" else "masking"
    config = RunConfig.from_dict({"process": {"name": process}, "sampler": {"posterior": name}})
    assert config.to_dict()["sampler"]["posterior"]["name"] == name
    assert RunConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


def test_posteriors_built_in_python_have_a_config_form():
    spec = SamplerSpec(posterior=RemaskPosterior(ConfidenceSchedule(base=NoRemasking())))
    form = RunConfig(sampler=spec).to_dict()["sampler"]["posterior"]
    assert form == {"name": "conf", "base": {"name": "none"}, "precision": "float64"}
    spec = SamplerSpec(posterior=RemaskPosterior(NoRemasking()))
    assert RunConfig(sampler=spec).to_dict()["sampler"]["posterior"] == {"name": "mdlm"}


def test_overrides_edit_nested_choices():
    values = {"sampler": {"posterior": "loop"}}
    parse_override(values, "sampler.posterior.eta=0.01")
    config = RunConfig.from_dict(values)
    assert config.sampler.posterior.schedule == LoopSchedule(eta=0.01)
    parse_override(values, "sampler.posterior=cap")
    assert isinstance(RunConfig.from_dict(values).sampler.posterior, RemaskPosterior)
    with pytest.raises(ConfigError, match=r"sampler\.posterior\.eta: is a value"):
        parse_override({"sampler": {"posterior": {"eta": 1}}}, "sampler.posterior.eta.x=1")


def test_the_nucleus_rule_is_a_checked_sampler_setting():
    values = {"sampler": {"top_p": 0.9, "nucleus": "remdm"}}
    sampler = RunConfig.from_dict(values).sampler.build(load_config("synthetic").process.build(4))
    assert (sampler.shaping.top_p, sampler.shaping.nucleus) == (0.9, "remdm")
    assert RunConfig().sampler.nucleus == "standard"
    with pytest.raises(ConfigError, match=r"sampler\.nucleus: .*remdm"):
        RunConfig.from_dict({"sampler": {"nucleus": "hf"}})


def test_train_sample_eval_fill_a_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", "synthetic", "--out", str(run), *TINY]) == 0
    for name in ("run.yaml", "history.json", "metrics.json", "learning_curve.png"):
        assert (run / name).is_file(), name
    assert DiT.from_pretrained(run / "model").config.model_length == 16
    assert load_config(run / "run.yaml").train.steps == 4
    assert len(json.loads((run / "history.json").read_text())["evals"]) == 2

    for posterior in ("cap", "mdlm"):
        argv = ["sample", "--run", str(run), "--quiet", f"sampler.posterior={posterior}"]
        assert main(argv) == 0
    labels = {
        p: load_config(run / "run.yaml", [f"sampler.posterior={p}"]).sampler.label
        for p in ("cap", "mdlm")
    }
    assert labels["cap"].startswith(f"cap-eta{CapSchedule().eta:g}-T8-s0-")
    folder = run / "samples" / labels["cap"]
    record = json.loads((folder / "samples.json").read_text())
    assert record["sampler"]["posterior"] == {"name": "cap", "eta": CapSchedule().eta}
    tokens = record["tokens"]
    assert len(tokens) == 6 and all(len(row) == 16 for row in tokens)
    assert all(0 <= v < 32 for row in tokens for v in row)  # no masks left
    assert len((folder / "samples.txt").read_text().splitlines()) == 6
    assert record["metrics"]["nfe"] >= 2 and record["metrics"]["exact_nll"] > 0

    assert main(["eval", "--run", str(run), "--sequences", "16"]) == 0
    table = json.loads((run / "eval.json").read_text())
    assert set(table["samples"]) == set(labels.values())
    assert table["validation"]["nats_per_token"] > 0

    # Only the sampler may change when sampling; a different model never reuses the run.
    assert "only sampler" in _fail(capsys, ["sample", "--run", str(run), "train.steps=9"])
    before = (run / "run.yaml").read_text()
    argv = ["train", "--config", "synthetic", "--out", str(run), *TINY, "model.n_blocks=2"]
    assert "different model" in _fail(capsys, argv)
    assert (run / "run.yaml").read_text() == before


def test_text_runs_keep_their_alphabet(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"to be or not to be, line {i}." for i in range(200)))
    config = tmp_path / "text.yaml"
    config.write_text(yaml.safe_dump({"data": {"kind": "text", "path": "corpus.txt"}}))
    run = tmp_path / "run"
    argv = ["train", "--config", str(config), "--out", str(run), *TINY]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        assert main(argv) == 0
    # The path is stored absolute, so later commands work from anywhere.
    assert load_config(run / "run.yaml").data.path == str(corpus)
    assert main(["sample", "--run", str(run), "--quiet"]) == 0
    (folder,) = (run / "samples").glob("mdlm-T8-s0-*")
    texts = json.loads((folder / "samples.json").read_text())["texts"]
    alphabet = set(json.loads((run / "alphabet.json").read_text()))
    assert len(texts) == 6 and set("".join(texts)) <= alphabet


def test_builtin_run_samples_outside_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["sample", "--run", "synthetic", "--quiet", "sampler.samples=2", "sampler.steps=4"]
    assert main(argv) == 0
    (folder,) = (tmp_path / "runs" / "synthetic" / "samples").glob("cap-eta0.02-T4-s0-*")
    assert (folder / "samples.txt").is_file()


def test_sample_folders_never_mix_settings(tmp_path, monkeypatch, capsys):
    """Issue 19: cap at eta 0.01 and 0.02 (T=4, seed 0) once wrote the same folder."""
    monkeypatch.chdir(tmp_path)
    base = ["sample", "--run", "synthetic", "--quiet", "sampler.samples=2", "sampler.steps=4"]
    folders = set()
    for eta in (0.01, 0.02):
        assert main([*base, f"sampler.posterior={{name: cap, eta: {eta}}}"]) == 0
        folders.add(capsys.readouterr().out.split("samples written to ")[-1].strip())
    assert len(folders) == 2
    for folder in folders:
        record = json.loads((tmp_path / folder / "samples.json").read_text())
        assert f"eta{record['sampler']['posterior']['eta']:g}" in folder
    # Every setting that changes the samples changes the label; the same settings keep it.
    spec = SamplerSpec()
    variants = [
        SamplerSpec(temperature=0.9),
        SamplerSpec(top_k=3),
        SamplerSpec(float64=False),
        SamplerSpec(noise_removal=False),
        SamplerSpec(samples=8),
        SamplerSpec(batch_size=4),
        SamplerSpec(t_min=1e-3),
        SamplerSpec(posterior=RemaskPosterior(CapSchedule(0.01))),
    ]
    assert len({spec.label, *(v.label for v in variants)}) == len(variants) + 1
    assert SamplerSpec().label == spec.label
    # An explicit --out that holds other settings is refused, and left as it was.
    out = tmp_path / "mine"
    assert main([*base, "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    err = _fail(capsys, [*base, "--out", str(out), "sampler.temperature=0.5"])
    assert "other sampler settings" in err and "temperature" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_scale_samples_with_the_runs_noise_schedule(tmp_path):
    """`discdiff scale` once built its own log-linear process, whatever the run said."""
    import shutil

    from discdiff.runs import BUILTIN_RUNS, load_run
    from discdiff.studies.table1 import run_synthetic_study

    run = tmp_path / "cosine-run"
    shutil.copytree(BUILTIN_RUNS["synthetic"], run)
    values = yaml.safe_load((run / "run.yaml").read_text())
    values["process"] = {"schedule": {"name": "cosine"}}
    (run / "run.yaml").write_text(yaml.safe_dump(values))
    argv = ["scale", "--run", str(run), "--out", str(tmp_path / "study")]
    assert main([*argv, "--samples", "3", "--seeds", "1", "--steps", "3"]) == 0
    rows = json.loads((tmp_path / "study" / "study.json").read_text())

    loaded = load_run(run)
    assert loaded.process.schedule == Cosine()

    def study(process, out):
        found, _ = run_synthetic_study(
            loaded.denoiser, out, process=process, length=64, samples=3, steps=(3,),
            full=True, perfect=(), progress=False,
        )  # fmt: skip
        return {r["sampler"]: r["exact_nll"] for r in found}

    scaled = {r["sampler"]: r["exact_nll"] for r in rows if r["denoiser"] == "model"}
    assert scaled == study(loaded.process, tmp_path / "a")
    assert scaled != study(None, tmp_path / "b")  # the log-linear default differs


def test_threads_option_and_its_default(tmp_path, monkeypatch, capsys):
    import torch

    from discdiff import cli

    seen, table = [], tmp_path / "eval.json"
    bound = {"nats_per_token": 1.0, "bits_per_token": 1.4, "perplexity_bound": 2.7}
    table.write_text(json.dumps({"validation": bound, "samples": {}}))

    def evaluate(*args, **kwargs):  # records the threads the command runs with
        seen.append(torch.get_num_threads())
        return table

    monkeypatch.setattr(cli, "evaluate_run", evaluate)
    before = torch.get_num_threads()
    assert main(["eval", "--run", "synthetic", "--threads", "3"]) == 0
    assert seen == [3] and torch.get_num_threads() == before
    assert "--threads" in _fail(capsys, ["sample", "--run", "synthetic", "--threads", "0"])
    # Default: OMP_NUM_THREADS when set, else the free CPUs (at least one).
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cli.default_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (1e3, 0.0, 0.0))
    assert cli.default_threads() == 1
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert 1 <= cli.default_threads() <= torch.get_num_threads()


def test_sampling_shows_its_throughput(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["sample", "--run", "synthetic", "sampler.samples=2", "sampler.steps=4"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "tok/s" in captured.err and "step" in captured.err  # the progress bar
    metrics = json.loads(captured.out.splitlines()[0])
    assert metrics["tokens_per_second"] == pytest.approx(2 * 64 / metrics["seconds"])


def test_a_run_on_another_language_is_scored_with_that_language(tmp_path):
    from discdiff.data import HMMLanguage

    run = tmp_path / "hmm-run"
    language = ["data.language={name: hmm, states: 4, vocab_size: 8, support: 3}"]
    assert main(["train", "--config", "synthetic", "--out", str(run), *TINY_RUN, *language]) == 0
    argv = ["scale", "--run", str(run), "--out", str(tmp_path / "study"), "--samples", "4"]
    assert main([*argv, "--seeds", "1", "--steps", "2"]) == 0
    rows = json.loads((tmp_path / "study" / "study.json").read_text())
    hmm = HMMLanguage(states=4, vocab_size=8, support=3)
    entropy = float(hmm.entropy(16))
    assert all(r["nll_gap"] == pytest.approx(r["exact_nll"] - entropy) for r in rows)


@pytest.mark.slow
def test_baseline_runs_train_sample_eval_and_join_the_study(tmp_path, capsys):
    """SEDD and AR runs: `train.objective` picks the network and the validation bound; they
    sample (SEDD's analytic sampler; token by token) and join `scale --compare` rows."""
    from discdiff.models.causal import CausalTransformer
    from discdiff.models.score import ScoreModel
    from discdiff.runs import load_run

    runs = {}
    for objective, extra in (
        ("nelbo", []),
        ("score-entropy", ["model.time_conditioning=true", "sampler.posterior=sedd-analytic"]),
        ("autoregressive", []),
    ):
        runs[objective] = tmp_path / objective
        argv = ["train", "--config", "hmm", "--out", str(runs[objective]), *TINY]
        assert main([*argv, f"train.objective={objective}", *extra]) == 0
        assert main(["sample", "--run", str(runs[objective]), "--quiet"]) == 0
        assert main(["eval", "--run", str(runs[objective]), "--sequences", "8"]) == 0
        metrics = json.loads((runs[objective] / "metrics.json").read_text())
        assert 0 < metrics["nats_per_token"] < 5  # a bound on -log p, per token
    assert isinstance(load_run(runs["score-entropy"]).network, ScoreModel)
    assert isinstance(load_run(runs["autoregressive"]).model, CausalTransformer)
    with pytest.raises(ValueError, match="no denoiser"):
        _ = load_run(runs["autoregressive"]).denoiser
    capsys.readouterr()
    argv = ["scale", "--run", str(runs["nelbo"]), "--out", str(tmp_path / "study")]
    compare = ["--compare", str(runs["score-entropy"]), str(runs["autoregressive"])]
    assert main([*argv, "--samples", "2", "--seeds", "1", "--steps", "4", *compare]) == 0
    rows = json.loads((tmp_path / "study" / "study.json").read_text())
    kinds = {(r["denoiser"], r["sampler"]): r for r in rows}
    assert {"SEDD-analytic", "SEDD-Euler"} <= {s for d, s in kinds if d == "score-entropy"}
    ar = kinds["autoregressive", "AR (T=L)"]
    assert ar["steps"] == ar["nfe"] == 16 and "nll_gap" in ar
    assert "AR (T=L) (autoregressive)" in capsys.readouterr().out


def _cells(gaps: dict[str, tuple[float, float]], ci: float) -> list[dict]:
    """No-nucleus model cells: sampler → (gap at T=64, gap at T=256), all with interval `ci`."""
    return [
        {"denoiser": "model", "sampler": s, "steps": T, "top_p": None, "samples": 64}
        | {"nll_gap": gap, "nll_gap_ci95": ci}
        for s, pair in gaps.items()
        for T, gap in zip((64, 256), pair, strict=True)
    ]


@pytest.mark.parametrize(
    ("remdm", "ci", "verdict"),
    [
        ((0.22, 0.10), 0.03, "the paper's claim shows"),
        ((0.22, 0.18), 0.03, "not resolved"),
        ((0.30, 0.30), 0.03, "does not hold"),
    ],
)
def test_quickstart_reading_follows_the_intervals(remdm, ci, verdict):
    from discdiff.studies.commands import reading

    cells = _cells({"MDLM": (0.25, 0.21), "ReMDM-cap": remdm, "ReMDM-loop": (0.35, 0.32)}, ci)
    lines = reading(cells, {"nll_gap": -0.002})
    assert len(lines) == 3
    assert lines[0] == (
        f"from T=64 to T=256 (no nucleus): MDLM 0.250 → 0.210; ReMDM-cap {remdm[0]:.3f} → "
        f"{remdm[1]:.3f}; ReMDM-loop 0.350 → 0.320."
    )
    difference = f"{remdm[1] - 0.21:+.3f} ± {ci * 2**0.5:.3f} nats/token (95 %)"
    assert lines[1].startswith(f"at T=256, ReMDM-cap − MDLM = {difference}")
    assert verdict in lines[1]
    assert f"stays {remdm[1] + 0.002:.3f} nats/token" in lines[2]
    assert reading([c for c in cells if c["sampler"] == "MDLM"], {"nll_gap": 0.0}) == []
