"""One presets module: the paper's settings and the studies' settings, read everywhere."""

import argparse
import inspect
from pathlib import Path

import yaml

import discdiff as dd
from discdiff.cli import _parser
from discdiff.config import build_strategy
from discdiff.presets import PAPER
from discdiff.runs import BUILTIN_RUNS
from discdiff.studies.settings import STUDY
from discdiff.studies.table1 import run_synthetic_study, strategies

ROOT = Path(__file__).resolve().parent.parent


def test_schedule_defaults_are_the_paper_settings():
    assert dd.CapSchedule() == dd.CapSchedule(PAPER.cap_eta)
    assert dd.RescaleSchedule() == dd.RescaleSchedule(PAPER.rescale_eta)
    assert build_strategy(PAPER.loop()).schedule == dd.LoopSchedule()
    assert (PAPER.cap_eta, PAPER.cap_eta_few_steps, PAPER.top_p) == (0.008, 0.04, 0.9)  # SPEC §5
    assert PAPER.nucleus == "remdm"  # SPEC §7: the paper's † numbers use its code's rule
    assert PAPER.cap_eta_for(steps=64, length=1024) == PAPER.cap_eta_few_steps
    assert PAPER.cap_eta_for(steps=1024, length=1024) == PAPER.cap_eta


def test_studies_and_cli_run_the_study_presets():
    built = strategies(full=True)
    assert set(built) == set(STUDY.strategies(full=True))
    assert built["ReMDM-cap"].schedule == dd.CapSchedule(STUDY.cap_eta)
    assert set(STUDY.strategies()) < set(built)
    assert set(STUDY.scale_perfect) <= set(built) and set(STUDY.quickstart_perfect) <= set(built)
    defaults = inspect.signature(run_synthetic_study).parameters
    assert defaults["perfect"].default == STUDY.quickstart_perfect
    quick = _parser().parse_args(["quickstart"])
    assert isinstance(quick, argparse.Namespace)
    assert (quick.top_p, quick.samples) == (STUDY.quickstart_top_p, STUDY.quickstart_samples)
    assert STUDY.quickstart_top_p is None  # so that the exact gap reads one way
    assert STUDY.quickstart_steps(64) == (16, 64, 256)
    assert STUDY.table1_steps(64) == (16, 32, 64, 128, 256)  # L/4 ... 4L
    assert STUDY.table1_top_p == (PAPER.top_p, None)
    assert STUDY.scale_seeds >= 3 and STUDY.scale_seeds * STUDY.table1_samples >= 256
    # The shipped run's recipe samples with the studies' cap.
    recipe = yaml.safe_load((BUILTIN_RUNS["synthetic"] / "run.yaml").read_text())
    assert recipe["sampler"]["posterior"] == STUDY.strategies()["ReMDM-cap"]


def test_docs_quote_the_presets():
    paper = (ROOT / "docs" / "paper.md").read_text()
    for value in (
        PAPER.cap_eta,
        PAPER.cap_eta_few_steps,
        PAPER.rescale_eta,
        PAPER.loop_t_on,
        PAPER.loop_t_off,
        PAPER.loop_alpha_on,
        PAPER.loop_eta,
        PAPER.top_p,
    ):
        assert f"= {value}" in paper, value
    assert f'nucleus="{PAPER.nucleus}"' in paper
    assert "discdiff.presets" in paper
