"""benchmarks/bench_quality.py: the quality table of the digit demo (its rows, its parity gate, its
committed results and docs/quality.md's copy of them).

The full table takes minutes and is committed (benchmarks/results/quality.json); here a small run
checks that the script measures what it says, and the committed file is checked for every row
docs/quality.md shows. FD values are compared only between samplers that must agree (the pack and
diffusers on the same weights and seeds), never against fixed numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import comfy_host
from comfy_host import REPO_ROOT

ROW_KEYS = {"model", "sampler", "scheduler", "steps", "gamma", "fd_mean", "fd_std", "seeds", "samples_per_seed"}


@pytest.fixture(scope="module")
def bench(comfy: comfy_host.ComfyModules) -> Any:
    return comfy_host.load_script("bench_quality", "benchmarks")


@pytest.fixture(scope="module")
def committed(bench: Any) -> list[dict[str, Any]]:
    return json.loads(bench.RESULTS.read_text())


def test_quick_run_measures_the_pack_and_comfyui_lcm_rows(bench: Any, tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    assert bench.main(["--quick", "--seeds", "1", "--samples", "100", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert all(ROW_KEYS <= row.keys() for row in rows)
    assert {row["steps"] for row in rows} == {1, 4}
    assert {(row["sampler"], row["scheduler"], row["model_sampling"]) for row in rows if row["sampler"] == "lcm"} == {
        ("lcm", scheduler, patch) for scheduler in bench.BUILTIN_SCHEDULERS for patch in ("lcm", "eps")}
    for steps in (1, 4):
        pack, reference = (next(r for r in rows if r["sampler"] == name and r["steps"] == steps
                                and r["model"] == "lcm_student")
                           for name in ("LCMSampler", "diffusers LCMScheduler"))
        assert abs(pack["fd_mean"] - reference["fd_mean"]) <= bench.PARITY_TOLERANCE, (pack, reference)
    # The flow student on its training timesteps, LCM-style (the pack) and with ComfyUI's euler.
    assert {(row["sampler"], row["scheduler"], row["steps"]) for row in rows if row["model"] == "flow_student"} == {
        ("LCMSampler", bench.TRAINING_TIMESTEPS, 4), ("euler", bench.TRAINING_TIMESTEPS, 4)}
    # Digits, not noise: a few LCM steps land far below what undenoised noise scores (hundreds).
    assert all(0 < row["fd_mean"] < 100 for row in rows if row["steps"] == 4), rows


def test_parity_gate_fails_when_the_pack_and_diffusers_disagree(bench: Any) -> None:
    row = {"model": "lcm_student", "steps": 4, "fd_mean": 14.0}
    agree = [{**row, "sampler": "LCMSampler"}, {**row, "sampler": "diffusers LCMScheduler"}]
    assert bench.parity_failures(agree) == []
    disagree = [agree[0], {**agree[1], "fd_mean": 14.5}]
    assert bench.parity_failures(disagree) == ["4 steps: LCMSampler 14.0 vs diffusers 14.5"]


def test_committed_results_hold_every_row_the_issue_asks_for(bench: Any, committed: list[dict[str, Any]]) -> None:
    assert all(ROW_KEYS <= row.keys() for row in committed)
    assert all(row["seeds"] >= 3 and row["samples_per_seed"] >= 2000 for row in committed)
    present = {(r["model"], r["sampler"], r["scheduler"], r["model_sampling"], r["gamma"], r["steps"])
               for r in committed}
    for steps in bench.STUDENT_STEPS:
        assert ("lcm_student", "LCMSampler", "LCMTimesteps", None, None, steps) in present
        assert ("lcm_student", "diffusers LCMScheduler", "LCMScheduler", None, None, steps) in present
        assert ("teacher", "LCMSampler", "LCMTimesteps", None, None, steps) in present
        for scheduler in bench.BUILTIN_SCHEDULERS:
            for patch in ("lcm", "eps"):
                assert ("lcm_student", "lcm", scheduler, patch, None, steps) in present
        for gamma in bench.TCD_GAMMAS:
            assert ("lcm_student", "TCDSampler", "LCMTimesteps (tcd)", None, gamma, steps) in present
    for steps in bench.TEACHER_STEPS:
        for sampler in ("ddim", "euler"):
            assert ("teacher", sampler, "simple", None, None, steps) in present
    assert bench.parity_failures(committed) == []


def test_committed_results_hold_every_flow_row_the_issue_asks_for(bench: Any, committed: list[dict[str, Any]]) -> None:
    present = {(r["model"], r["sampler"], r["scheduler"], r["steps"]) for r in committed}
    for steps in (1, 2, 4, 8):
        for sampler in ("LCMSampler", "euler"):
            assert ("flow_student", sampler, "training_timesteps", steps) in present
        for sampler in ("lcm", "euler"):
            for scheduler in ("simple", "normal", "sgm_uniform", "beta", "ddim_uniform"):
                assert ("flow_student", sampler, scheduler, steps) in present
    for steps in (1, 2, 4, 8, 50):
        assert ("flow_teacher", "euler", "simple", steps) in present
    teacher_cfg = {r["cfg"] for r in committed if r["model"] == "flow_teacher"}
    assert teacher_cfg == {bench.comfy_host.import_digits_demo().model.FLOW_GUIDANCE}


def test_readme_shows_the_committed_table(bench: Any, committed: list[dict[str, Any]]) -> None:
    readme = (REPO_ROOT / "docs" / "quality.md").read_text(encoding="utf-8")
    tables = bench.split_tables(committed)
    assert len(tables) == 2 and {r["model"] for r in tables[1]} == {"flow_student", "flow_teacher"}
    for table in tables:
        assert bench.markdown_table(table) in readme, "docs/quality.md's tables differ from " \
            "benchmarks/results/quality.json: paste the tables that bench_quality.py prints"
