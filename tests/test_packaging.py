"""Every install path of the pack, with the real tools: pip, comfy-cli and ComfyUI's main.py.

The checks themselves live in scripts/check_install_paths.py (also runnable by hand);
these tests run them on a temporary copy of the checkout and assert on what they
return. The first run on a machine also builds the cached torch + numpy venv, hard links
to the project venv's own files (about 20 s); the module takes about a minute and a half
on 2 cores (three ComfyUI start-ups and a `pip install`).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest

import comfy_host  # tests/ is on sys.path (conftest.py)

REPO = Path(__file__).resolve().parent.parent

_spec = importlib.util.spec_from_file_location("_lcm_check_install_paths", REPO / "scripts" / "check_install_paths.py")
cip = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = cip
_spec.loader.exec_module(cip)


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python < 3.11: comfy-cli brings tomlkit
        import tomlkit

        return tomlkit.parse(path.read_text(encoding="utf-8")).unwrap()
    with open(path, "rb") as f:
        return tomllib.load(f)


def _requirement_names(lines) -> list:
    names = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0].lower())
    return names


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return _load_toml(REPO / "pyproject.toml")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A committed copy of the working tree: what a clean clone holds."""
    return cip.copy_checkout(tmp_path_factory.mktemp("pkg") / "checkout")


@pytest.fixture(scope="module")
def archive_members(checkout) -> list:
    return cip.check_pack(checkout)


@pytest.fixture(scope="module")
def comfyui() -> Path:
    """The ComfyUI tree of $LCM_COMFYUI; as in conftest.py, a missing one fails, never skips."""
    try:
        return comfy_host.comfy_tree()
    except comfy_host.ComfyHostError as err:
        pytest.fail(str(err), pytrace=False)


# --------------------------------------------------------------------------- metadata


def test_runtime_dependencies_are_numpy_and_safetensors_only(pyproject):
    deps = _requirement_names(pyproject["project"]["dependencies"])
    assert sorted(deps) == ["numpy", "safetensors"], "torch belongs to the ComfyUI host, never to the pack"
    req = _requirement_names((REPO / "requirements.txt").read_text(encoding="utf-8").splitlines())
    assert sorted(req) == sorted(deps), "requirements.txt (read by ComfyUI-Manager) must mirror [project] dependencies"
    assert not (REPO / "install.py").exists(), "no install.py: ComfyUI-Manager installs requirements.txt itself"


def test_extras_agree_with_requirements_dev(pyproject):
    extras = pyproject["project"]["optional-dependencies"]
    dev_lines = {
        ln.split("#", 1)[0].strip().replace(" ", "")
        for ln in (REPO / "requirements-dev.txt").read_text(encoding="utf-8").splitlines()
    }
    for spec in extras["test"]:
        assert spec.replace(" ", "") in dev_lines, f"extra 'test' has {spec!r}; requirements-dev.txt must install it"
    assert "diffusers==0.36.0" in extras["test"]
    assert "ruff" in _requirement_names(extras["dev"])
    assert any(s.startswith("lcm-multistep[test]") for s in extras["dev"])


def test_setuptools_ships_lcm_core_only(pyproject):
    assert pyproject["tool"]["setuptools"]["packages"] == ["lcm_core"]
    assert pyproject["tool"]["setuptools"]["py-modules"] == []


def test_comfy_registry_section(pyproject):
    comfy = pyproject["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] == "LCM Multistep"
    assert "requires-comfyui" in comfy
    assert pyproject["project"]["license"] == "GPL-3.0-or-later"
    assert (REPO / "LICENSE").read_text(encoding="ascii").lstrip().startswith("GNU GENERAL PUBLIC LICENSE")


# --------------------------------------------------------------------------- (a) pip install .


def test_pip_install_in_fresh_torch_venv_gives_lcm_core_only(tmp_path, checkout, pyproject):
    """LCMScheduler imports from the venv (not the checkout); comfy, diffusers and nodes/ do not."""
    result = cip.check_core_install(tmp_path, checkout)
    assert cip.core_problems(result) == []
    assert result["importable"] == {k: False for k in ("comfy", "diffusers", "nodes", "comfy_cli", "folder_paths")}
    version = pyproject["project"]["version"]
    top = {f.split("/", 1)[0] for f in result["files"]}
    assert top == {"lcm_core", f"lcm_multistep-{version}.dist-info"}, f"installed more than lcm_core: {sorted(top)}"
    pulled = {re.sub(r"-[0-9].*$", "", p).lower() for p in result["pip_installed"]}
    assert pulled <= {"lcm-multistep", "lcm_multistep", "safetensors", "numpy"}, pulled
    assert "torch" not in _requirement_names(result["requires"])


# --------------------------------------------------------------------------- (b) comfy-cli


def test_comfy_node_validate_is_clean(checkout):
    out = cip.check_validate(checkout)
    assert "All validation checks passed" in out


def test_comfy_node_pack_holds_only_the_pack(archive_members):
    """Only __init__.py, nodes/, lcm_core/, example_workflows/ and the metadata files; all of those needed."""
    assert cip.archive_problems(archive_members) == []
    tops = {m.split("/", 1)[0] for m in archive_members}
    assert not tops & {"tests", ".ci", "scripts", "benchmarks", ".git", ".gitignore", ".comfyignore", "Makefile"}


# --------------------------------------------------------------------------- (c) ComfyUI imports it


def _assert_only_pack_imported(log: str, pack_dir: Path) -> None:
    imports = cip.custom_node_imports(log)
    assert [os.path.realpath(p) for p in imports] == [os.path.realpath(pack_dir)], imports
    assert all(imports.values()), f"IMPORT FAILED for {pack_dir}"


def test_comfyui_imports_pack_unpacked_from_archive(tmp_path, checkout, archive_members, comfyui):
    base = tmp_path / "base"
    pack_dir = cip.install_from_archive(checkout / "node.zip", base)
    log = cip.check_comfyui_import(comfyui, base, pack_dir)
    _assert_only_pack_imported(log, pack_dir)


def test_comfyui_imports_plain_clone_after_pip_requirements(tmp_path, checkout, comfyui):
    base = tmp_path / "base"
    pack_dir = cip.install_from_clone(checkout, base)
    log = cip.check_comfyui_import(comfyui, base, pack_dir)
    _assert_only_pack_imported(log, pack_dir)
