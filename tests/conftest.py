"""Shared fixtures: a real ComfyUI, in-process (`comfy`) and as a server (`comfy_server`).

$LCM_COMFYUI names the ComfyUI tree (`make test` sets it). When it is set,
the tree goes first on sys.path and CPU is forced at import time, before any
test module is imported, so that test modules may `import nodes` (ComfyUI's
nodes.py, not the pack's nodes/ package) or comfy.* at module level. When it
is not set, tests that need ComfyUI fail with a message saying to run
`make test`; tests that do not need it still run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Explicit, so that `from comfy_host import ...` also works under
# --import-mode=importlib (which does not put test folders on sys.path).
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

import comfy_host  # noqa: E402

try:
    comfy_host.prepare_comfy_path()
except comfy_host.ComfyHostError:
    pass  # reported by the fixtures below, for the tests that need ComfyUI


def _require_tree() -> None:
    try:
        comfy_host.comfy_tree()
    except comfy_host.ComfyHostError as err:
        message = str(err)
    else:
        return
    pytest.fail(message, pytrace=False)  # outside `except`: no chained traceback


@pytest.fixture(scope="session")
def comfy() -> comfy_host.ComfyModules:
    """ComfyUI's modules, imported in this process on CPU."""
    _require_tree()
    return comfy_host.import_comfy()


@pytest.fixture(scope="session")
def pack(comfy: comfy_host.ComfyModules):  # noqa: ANN201 - a module
    """This repository imported as the custom-node package `lcm_multistep`."""
    return comfy_host.import_pack()


@pytest.fixture(scope="session")
def nodes(pack):  # noqa: ANN201 - a module
    """The pack's nodes package (lcm_multistep.nodes)."""
    return pack.nodes


@pytest.fixture(scope="module")
def models(comfy: comfy_host.ComfyModules) -> tuple:
    """(diffusers UNet, ComfyUI ModelPatcher) with the same tiny random weights (seed 0), per test module."""
    return comfy_host.tiny_unet_pair(seed=0)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for a test module of tiny models: their ops are so small that handing them to
    a second thread is most of their cost, and on a busy 2-core machine far more (the flow tests:
    about 100 s with torch's 2 threads, 30 s with one, measured with other jobs running)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def flow_pairs(comfy: comfy_host.ComfyModules) -> dict:
    """{"sd3" | "flux" | "wan": flow_models.FlowPair}: tiny flow transformers (seed 0) in diffusers and as
    ComfyUI's own model classes, built once per session (tests/flow_models.py)."""
    import flow_models

    return {family: flow_models.PAIRS[family](seed=0) for family in flow_models.FAMILIES}


@pytest.fixture(scope="session")
def comfy_server() -> Iterator[comfy_host.ComfyServer]:
    """One ComfyUI server per session, on 127.0.0.1, with the repo in custom_nodes/."""
    _require_tree()
    with comfy_host.ComfyServer() as server:
        yield server


@pytest.fixture(scope="session")
def tiny_checkpoint(comfy_server: comfy_host.ComfyServer) -> str:
    """A tiny SD1.5 checkpoint (scripts/make_tiny_checkpoint.py, seed 0) in the server's
    models/checkpoints; returns its name as CheckpointLoaderSimple's ckpt_name wants it."""
    name = "tiny-sd15.safetensors"
    comfy_host.load_script("make_tiny_checkpoint").make_tiny_checkpoint(comfy_server.checkpoints_dir / name, seed=0)
    return name


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """Each phase's report on the test item (item.report_setup / report_call / ...), so that a
    fixture can tell in its teardown whether its test failed (tests/test_browser.py saves a
    screenshot then)."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report
