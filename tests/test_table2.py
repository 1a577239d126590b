"""Table 2 on digits: FID and Inception Score against closed forms, and the preset end to end."""

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from discdiff.cli import main
from discdiff.evaluation.metrics import frechet_distance, inception_score
from discdiff.studies.table2 import (
    FeatureJudge,
    balanced_subset,
    paired_differences,
    run_table2,
    table2_metrics,
)


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5)) + 3.0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-8)
    # b = k a: every term scales, FID = (1 - k)^2 (|mu|^2 + tr Sigma).
    k = 2.5
    expected = (1 - k) ** 2 * (float(a.mean(0) @ a.mean(0)) + np.trace(np.cov(a, rowvar=False)))
    assert frechet_distance(a, k * a) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(a[:1], a)


def test_inception_score_closed_forms():
    assert inception_score(np.full((7, 10), 0.1)) == pytest.approx(1.0)
    assert inception_score(np.eye(10)) == pytest.approx(10.0)
    rows = np.array([[1.0, 0.0], [0.5, 0.5]])
    kl = [math.log(1 / 0.75), 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)]
    assert inception_score(rows) == pytest.approx(math.exp(sum(kl) / 2))


def test_feature_judge_features_are_its_hidden_layer():
    from discdiff.data.digits import split_digits

    (train_x, train_y), (test_x, test_y) = split_digits(seed=0)
    judge = FeatureJudge(train_x, train_y, width=16)
    hidden = judge.features(test_x)
    assert hidden.shape == (len(test_x), 16) and (hidden >= 0).all()
    logits = hidden @ judge.model.coefs_[1] + judge.model.intercepts_[1]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(probs / probs.sum(-1, keepdims=True), judge.probabilities(test_x))
    assert judge.accuracy(test_x, test_y) > 0.9  # an independent judge worth its name


@pytest.fixture(scope="module")
def tiny_digits_model():
    import discdiff as dd
    from discdiff.models.subs import ConditionalSUBS

    torch.manual_seed(0)
    config = dd.DiTConfig(
        hidden_dim=16, cond_dim=16, n_blocks=1, n_heads=2, vocab_size=18, model_length=64,
        num_classes=10,
    )  # fmt: skip
    return ConditionalSUBS(dd.DiT(config), dd.MaskingProcess(vocab_size=17)).eval()


def test_table2_writes_cells_with_intervals(tmp_path, tiny_digits_model):
    with torch.no_grad():
        cells = run_table2(
            tiny_digits_model, tmp_path, steps=(2, 4), samplers=("MaskGIT", "MDLM"), seeds=2,
            samples_per_class=2, progress=False,
        )  # fmt: skip
    assert len(cells) == 2 * 2
    for cell in cells:
        assert cell["seeds"] == 2 and cell["samples"] == 40
        assert {"fid_ci95", "inception_score_ci95", "accuracy_ci95"} <= cell.keys()
        assert cell["fid"] > 0 and 1.0 <= cell["inception_score"] <= 10.0
    assert json.loads((tmp_path / "table2.json").read_text()) == cells
    stored = json.loads((tmp_path / "table2_rows.json").read_text())
    assert len(stored["rows"]) == 2 * 2 * 2 and stored["data"]["accuracy"] > 0.9
    assert "| data |" in (tmp_path / "table2.md").read_text()
    assert (tmp_path / "table2.png").read_bytes()[:4] == b"\x89PNG"
    # The kept samples rescore to the rows' numbers; the pairs subtract MDLM seed by seed.
    from safetensors.torch import load_file

    from discdiff.data.digits import split_digits

    kept = load_file(tmp_path / "table2_samples.safetensors")
    assert kept["targets"].tolist() == torch.arange(10).repeat_interleave(2).tolist()
    (train_x, train_y), (test_x, _) = split_digits(seed=0)
    judge = FeatureJudge(train_x, train_y)
    row = stored["rows"][5]
    assert table2_metrics(kept["5"], kept["targets"], judge, judge.features(test_x)) == {
        k: pytest.approx(row[k], rel=1e-12) for k in ("fid", "inception_score", "accuracy")
    }
    paired = stored["paired_with_mdlm"]["fid"]
    assert [(d["sampler"], d["steps"], d["seeds"]) for d in paired] == [
        ("MaskGIT", 2, 2),
        ("MaskGIT", 4, 2),
    ]
    by = {(r["sampler"], r["steps"], r["seed"]): r["fid"] for r in stored["rows"]}
    expected = [by[("MaskGIT", 4, i)] - by[("MDLM", 4, i)] for i in range(2)]
    assert paired[1]["per_seed"] == pytest.approx(expected)
    assert "Paired against MDLM" in (tmp_path / "table2.md").read_text()
    settings = json.loads((tmp_path / "provenance.json").read_text())["settings"]
    assert settings["samples_per_class"] == 2 and settings["gamma"] == 1.0
    with pytest.raises(ValueError, match="samplers"):
        run_table2(tiny_digits_model, tmp_path, samplers=("MDLMM",))
    with pytest.raises(ValueError, match="samples_per_class"):
        run_table2(tiny_digits_model, tmp_path, samples_per_class=10_000)


def test_table2_preset_needs_a_digits_model(tmp_path, capsys, tiny_digits_model):
    argv = ["scale", "--preset", "table2", "--out", str(tmp_path / "t2")]
    for extra, named in (([], "--model"), (["--model", str(tmp_path / "none")], "none")):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, *extra])
        assert exit_info.value.code == 2 and named in capsys.readouterr().err
    tiny_digits_model.backbone.save_pretrained(tmp_path / "model")
    extra = ["--model", str(tmp_path / "model"), "--steps", "2", "--seeds", "1", "--samples", "1"]
    assert main([*argv, *extra, "--threads", "1"]) == 0
    assert "FID on the judge's features" in capsys.readouterr().out
    assert (tmp_path / "t2" / "table2.md").is_file()


def test_paired_differences_against_a_hand_computation():
    fids = {"MDLM": (5.0, 6.0, 7.0), "ReMDM": (3.0, 3.0, 6.0), "MaskGIT": (9.0, 9.5, 9.0)}
    rows = [
        {"sampler": name, "steps": 8, "seed": i, "fid": f}
        for name, values in fids.items()
        for i, f in enumerate(values)
    ]
    remdm, maskgit = paired_differences(rows, "fid")
    assert remdm["sampler"] == "ReMDM" and remdm["per_seed"] == [-2.0, -3.0, -1.0]
    # mean -2, sd 1, t_2 = 4.303: interval 4.303 / sqrt(3).
    assert remdm["difference"] == pytest.approx(-2.0)
    assert remdm["ci95"] == pytest.approx(4.303 / math.sqrt(3), rel=1e-3)
    assert maskgit["per_seed"] == [4.0, 3.5, 2.0]
    with pytest.raises(ValueError, match="baseline"):
        paired_differences(rows, "fid", baseline="AR")


def test_balanced_subset_draws_each_class_equally():
    labels = torch.tensor([0, 1, 2] * 5 + [2, 2])
    chosen = balanced_subset(labels, 3, seed=1)
    assert labels[chosen].tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert len(set(chosen.tolist())) == 9
    assert torch.equal(chosen, balanced_subset(labels, 3, seed=1))
    assert not torch.equal(chosen, balanced_subset(labels, 3, seed=2))
