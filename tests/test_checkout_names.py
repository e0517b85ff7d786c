"""The suite runs whatever the user named the folder of the clone.

Custom-node folders are usually named with hyphens (ComfyUI-LCM-Multistep), which is not a
Python identifier. pytest used to treat the checkout root (it holds ComfyUI's entry point,
__init__.py) as a package and import it, which failed in such folders with "attempted
relative import with no known parent package" for every test (tests/pytest.ini explains the
fix). Here a copy of the checkout under each kind of name collects the whole suite and runs
the test that imports the pack the way ComfyUI does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_host import ENV_VAR, comfy_tree, load_script

NAMES = ("ComfyUI-LCM-Multistep", "lcm multistep (copy)", "lcm_multistep")


@pytest.mark.parametrize("folder", NAMES)
def test_suite_collects_and_imports_the_pack_in_a_folder_named(tmp_path: Path, folder: str) -> None:
    checkout = load_script("check_install_paths").copy_checkout(tmp_path / folder, git_commit=False)
    env = {**os.environ, ENV_VAR: str(comfy_tree()), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", "-k", "test_registration_metadata"],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    summary = output.strip().splitlines()[-1]
    assert re.match(r"1 passed, \d+ deselected(, \d+ warnings?)? in ", summary), output[-3000:]
