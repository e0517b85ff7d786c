"""The timestep table of docs/why.md is what the code computes, on any machine.

Each ComfyUI row is recomputed with ComfyUI's own schedulers (comfy_host.comfy_timesteps,
which spells out the steps whose sigma lies half-way between two training timesteps and so
depends on the CPU's rounding); the diffusers row with diffusers itself. A row that drifts from
the code, or that states one side of a tie as a fact, fails here.
"""

from __future__ import annotations

import diffusers
import pytest

import comfy_host
from comfy_host import REPO_ROOT, comfy_timesteps, format_timesteps

TABLE_PAGE = REPO_ROOT / "docs" / "why.md"

# (label in the table's first column, model sampling, scheduler)
COMFY_ROWS = [
    ("ComfyUI `lcm` + `sgm_uniform` + `ModelSamplingDiscrete(lcm)` (the usual advice)", "lcm", "sgm_uniform"),
    ("ComfyUI `lcm` + `normal` + `ModelSamplingDiscrete(lcm)`", "lcm", "normal"),
    ("ComfyUI `lcm` + `simple` + `ModelSamplingDiscrete(lcm)`", "lcm", "simple"),
    ("ComfyUI `lcm` + `sgm_uniform`, model not patched", "plain", "sgm_uniform"),
]


def readme_rows() -> list[str]:
    return [line.strip() for line in TABLE_PAGE.read_text(encoding="utf-8").splitlines() if line.startswith("|")]


def diffusers_timesteps(steps: int, strength: float = 1.0) -> str:
    scheduler = diffusers.LCMScheduler()
    scheduler.set_timesteps(steps, strength=strength)
    return ", ".join(str(t) for t in scheduler.timesteps.tolist())


def test_diffusers_row() -> None:
    row = (f"| **diffusers `LCMScheduler`** (this pack) | **{diffusers_timesteps(4)}** | **{diffusers_timesteps(2)}** "
           f"| **strength 0.5: {diffusers_timesteps(4, 0.5)}** |")
    assert row in readme_rows()


def test_tcd_row() -> None:
    """TCD's own timesteps, and what diffusers' SD img2img pipelines run with it: the last
    int(steps x strength) of the full schedule (their get_timesteps)."""
    def tcd(steps: int) -> list[int]:
        scheduler = diffusers.TCDScheduler()
        scheduler.set_timesteps(steps)
        return scheduler.timesteps.tolist()

    full = tcd(4)
    img2img = full[len(full) - int(len(full) * 0.5):]
    row = (f"| **diffusers `TCDScheduler`** (this pack, `scheduler` tcd) | **{', '.join(map(str, full))}** "
           f"| **{', '.join(map(str, tcd(2)))}** | **SD img2img pipelines: {', '.join(map(str, img2img))}** |")
    assert row in readme_rows()


@pytest.mark.parametrize(("label", "sampling", "scheduler"), COMFY_ROWS)
def test_comfyui_rows(comfy, label: str, sampling: str, scheduler: str) -> None:
    model_sampling = comfy_host.sd15_model_samplings(comfy)[sampling]

    def cell(steps: int, denoise: float = 1.0) -> str:
        return format_timesteps(comfy_timesteps(comfy, model_sampling, scheduler, steps, denoise))

    row = f"| {label} | {cell(4)} | {cell(2)} | denoise 0.5: {cell(4, 0.5)} |"
    assert row in readme_rows()


def test_the_usual_advice_has_a_tie_on_every_machine(comfy) -> None:
    """The reason the table writes '519 or 499': the third sigma of sgm_uniform on an
    LCM-patched model lies exactly half-way (in log sigma) between grid timesteps 499 and 519."""
    model_sampling = comfy_host.sd15_model_samplings(comfy)["lcm"]
    steps = comfy_timesteps(comfy, model_sampling, "sgm_uniform", 4)
    assert steps == [(999,), (759,), (519, 499), (259,)]
    chosen = model_sampling.timestep(comfy.samplers.calculate_sigmas(model_sampling, "sgm_uniform", 4)[2])
    assert int(chosen) in (519, 499)  # whichever this CPU picks
