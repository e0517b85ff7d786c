"""Run the pack inside a real ComfyUI (tests, benchmarks and the demo use this).

The ComfyUI tree comes from $LCM_COMFYUI (`make test` sets it from
scripts/setup_env.sh). Two ways in:

- in-process: `import_comfy()` puts the tree on sys.path (ahead of the repo
  root, whose `nodes/` subpackage would otherwise shadow ComfyUI's top-level
  `nodes.py`), forces CPU, and imports ComfyUI's modules; `import_pack()` loads
  this repository as the package `lcm_multistep`, the way ComfyUI loads a
  custom node; `tiny_unet_pair()` / `tiny_vae_pair()` give the same random
  weights as a diffusers model and as a ComfyUI model, for parity tests.
- out of process: `ComfyServer` starts ComfyUI's own `main.py` on 127.0.0.1
  with this repository symlinked into custom_nodes/ and drives it over HTTP.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_MODULE = "lcm_multistep"  # in-process package name of the repo root
PACK_FOLDER = "lcm-multistep"  # its folder name under custom_nodes/ in the server
# The digit demo's own custom-node folder (not part of the pack), its in-process package name and
# the folder name a server links it under.
DIGITS_DEMO_DIR = REPO_ROOT / "demo" / "lcm_digits"
DIGITS_DEMO_MODULE = "lcm_digits_demo"
DIGITS_DEMO_FOLDER = "lcm-digits-demo"
ENV_VAR = "LCM_COMFYUI"
# A front end to serve instead of the tree's pinned comfyui-frontend-package: the folder ComfyUI's
# --front-end-root takes (<package>/static, with index.html). `make test-browser FRONTEND=x.y.z` sets it.
FRONT_END_ENV = "LCM_FRONT_END_ROOT"


class ComfyHostError(RuntimeError):
    """The ComfyUI host is missing, misconfigured or failed. The message's first line says what
    (scripts print it alone); further lines carry the evidence (a server log, a traceback)."""


def comfy_tree() -> Path:
    """The ComfyUI tree named by $LCM_COMFYUI; a clear error if it is not set."""
    value = os.environ.get(ENV_VAR)
    if not value:
        raise ComfyHostError(
            f"{ENV_VAR} is not set, so there is no ComfyUI to test against. Run `make test` "
            f"(it builds the venv and a ComfyUI tree with scripts/setup_env.sh and sets {ENV_VAR}), "
            f"or set {ENV_VAR} to the COMFYUI= path that scripts/setup_env.sh prints."
        )
    tree = Path(value).resolve()
    if not (tree / "main.py").is_file() or not (tree / "nodes.py").is_file():
        raise ComfyHostError(f"{ENV_VAR}={value} is not a ComfyUI tree (no main.py / nodes.py there); run `make test`.")
    return tree


def prepare_comfy_path(cpu: bool = True) -> Path:
    """Put the tree first on sys.path and force CPU (unless ``cpu`` is False), without importing torch.

    Cheap, so conftest runs it at import time: test modules may then import
    comfy.* or `nodes` at module level. Must run before anything imports
    comfy.model_management (it picks the device at import; without --cpu a CUDA
    build of torch on a machine with no GPU fails there).
    """
    tree = comfy_tree()
    # Index 0, ahead of the repo root that `python -m pytest` (cwd) or a
    # pytest `pythonpath` setting may have inserted: ComfyUI's nodes.py must win
    # over the pack's nodes/ package. Other repo-root packages (lcm_core) stay
    # importable because the names do not collide.
    entry = str(tree)
    sys.path[:] = [p for p in sys.path if p != entry]
    sys.path.insert(0, entry)
    loaded = sys.modules.get("nodes")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() != tree / "nodes.py":
        raise ComfyHostError(
            f"`nodes` was imported from {getattr(loaded, '__file__', loaded)!r} before ComfyUI's tree was put on "
            "sys.path (the pack's nodes/ subpackage shadows ComfyUI's nodes.py); import comfy_host first."
        )
    if "comfy.model_management" not in sys.modules:
        import comfy.cli_args  # parses no argv: comfy.options.args_parsing is False

        comfy.cli_args.args.cpu = cpu
    return tree


@dataclasses.dataclass(frozen=True)
class ComfyModules:
    """The ComfyUI modules the tests use, imported with the right sys.path and device."""

    tree: Path
    comfy: types.ModuleType
    model_management: types.ModuleType
    samplers: types.ModuleType
    sample: types.ModuleType
    model_patcher: types.ModuleType
    model_base: types.ModuleType
    model_sampling: types.ModuleType
    supported_models: types.ModuleType
    sd: types.ModuleType
    utils: types.ModuleType
    nodes: types.ModuleType  # ComfyUI's top-level nodes.py, never the pack's nodes/
    nodes_custom_sampler: types.ModuleType
    nodes_model_advanced: types.ModuleType


@functools.cache
def import_comfy(cpu: bool = True) -> ComfyModules:
    """Import ComfyUI in this process (CPU unless ``cpu`` is False: benchmarks/gpu_check.py).

    Idempotent; about 5 s the first time.
    """
    tree = prepare_comfy_path(cpu)
    names = {
        "model_management": "comfy.model_management",
        "samplers": "comfy.samplers",
        "sample": "comfy.sample",
        "model_patcher": "comfy.model_patcher",
        "model_base": "comfy.model_base",
        "model_sampling": "comfy.model_sampling",
        "supported_models": "comfy.supported_models",
        "sd": "comfy.sd",
        "utils": "comfy.utils",
        "nodes": "nodes",
        "nodes_custom_sampler": "comfy_extras.nodes_custom_sampler",
        "nodes_model_advanced": "comfy_extras.nodes_model_advanced",
    }
    mods = {field: importlib.import_module(name) for field, name in names.items()}
    if Path(mods["nodes"].__file__).resolve() != tree / "nodes.py":
        raise ComfyHostError(f"`import nodes` gave {mods['nodes'].__file__}, not ComfyUI's {tree / 'nodes.py'}")
    device = mods["model_management"].get_torch_device()
    if cpu and device.type != "cpu":
        raise ComfyHostError(f"ComfyUI picked {device}: comfy.model_management was imported before args.cpu was set")
    return ComfyModules(tree=tree, comfy=importlib.import_module("comfy"), **mods)


def import_pack() -> types.ModuleType:
    """Load the repo root as the package `lcm_multistep`, as ComfyUI loads a custom node.

    Relative imports inside the pack (`from .nodes import ...`) resolve to
    lcm_multistep.nodes, never to ComfyUI's top-level `nodes`. Note that
    `lcm_multistep.lcm_core` is a different module object from a top-level
    `import lcm_core`, so classes from the two are not interchangeable.
    """
    return import_custom_node_folder(REPO_ROOT, PACK_MODULE)


def import_digits_demo() -> types.ModuleType:
    """Load demo/lcm_digits (the digit demo's own custom-node folder) as `lcm_digits_demo`."""
    return import_custom_node_folder(DIGITS_DEMO_DIR, DIGITS_DEMO_MODULE)


def import_custom_node_folder(folder: Path, module_name: str) -> types.ModuleType:
    """Import a custom-node folder's __init__.py as the package ``module_name`` (ComfyUI's way)."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    if "comfy.model_management" not in sys.modules:
        import_comfy()  # custom nodes import comfy.*: CPU and sys.path first
    init = folder / "__init__.py"
    if not init.is_file():
        raise ComfyHostError(f"{init} does not exist yet: the folder has no ComfyUI entry point to import")
    spec = importlib.util.spec_from_file_location(module_name, init, submodule_search_locations=[str(folder)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def default_widgets(node_class: Any, **changes: Any) -> dict[str, Any]:
    """A node's required inputs at their widget defaults, as a graph that changes none would pass them."""
    return {**{name: spec[1]["default"] for name, spec in node_class.INPUT_TYPES()["required"].items()}, **changes}


def lcm_config(pack_nodes: Any, model: Any = None, **changes: Any) -> Any:
    """LCMSchedulerConfig's LCM_CONFIG at its defaults (with ``changes``), from ``model`` when given."""
    return pack_nodes.LCMSchedulerConfig().build(model=model, **default_widgets(pack_nodes.LCMSchedulerConfig,
                                                                                 **changes))[0]


@functools.cache
def load_script(name: str, folder: str = "scripts") -> types.ModuleType:
    """Import <folder>/<name>.py (not a package) as a module, e.g. scripts/make_tiny_checkpoint.py
    or benchmarks/bench_quality.py."""
    path = REPO_ROOT / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"lcm_{folder}_{name}", path)
    if spec is None or spec.loader is None:
        raise ComfyHostError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses (and pickling) look their module up there
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------
# Tiny models with the same weights in diffusers and in ComfyUI
# ---------------------------------------------------------------------------

TINY_UNET_DIFFUSERS: dict[str, Any] = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=32,
)

# The same network in ComfyUI's terms (what model_detection would report, with
# SD15's 8 heads from unet_extra_config): attention at the first level only.
TINY_UNET_COMFY: dict[str, Any] = dict(
    use_checkpoint=False,
    image_size=32,
    use_spatial_transformer=True,
    legacy=False,
    adm_in_channels=None,
    in_channels=4,
    out_channels=4,
    model_channels=32,
    num_res_blocks=[1, 1],
    transformer_depth=[1, 0],
    transformer_depth_output=[1, 1, 0, 0],
    channel_mult=[1, 2],
    transformer_depth_middle=1,
    use_linear_in_transformer=False,
    context_dim=32,
    use_temporal_resblock=False,
    use_temporal_attention=False,
)

# Four levels, like SD's VAE, so that ComfyUI's fixed diffusers->SD key
# conversion (it numbers up blocks as 3 - i) and its 8x scale factor both hold;
# width 32 because ComfyUI's VAE GroupNorm has 32 groups.
TINY_VAE_DIFFUSERS: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(32, 32, 32, 32),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=64,
)
TINY_VAE_COMFY: dict[str, Any] = {
    "params": {
        "embed_dim": 4,
        "ddconfig": {
            "double_z": True,
            "z_channels": 4,
            "resolution": 64,
            "in_channels": 3,
            "out_ch": 3,
            "ch": 32,
            "ch_mult": [1, 1, 1, 1],
            "num_res_blocks": 1,
            "attn_resolutions": [],
            "dropout": 0.0,
        },
    }
}


def seeded_init_(module: Any, seed: int) -> None:
    """Fill every parameter from its own generator, seeded from (seed, name).

    ComfyUI builds layers without initialisation (comfy.ops.disable_weight_init),
    so this is what makes its models usable; using it on the diffusers side too
    gives both the same values. Matrices/convs: N(0, 1/fan_in); norm scales
    1 + 0.1 N; biases 0.02 N. Norms and biases are deliberately not 1 and 0, so
    a swapped or dropped key shows up in a parity test.
    """
    import zlib

    import torch

    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            gen = torch.Generator().manual_seed((seed * 2654435761 + zlib.crc32(name.encode())) % (2**63))
            x = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if p.ndim >= 2:
                x = x / (p[0].numel() ** 0.5)
            elif name.endswith("bias"):
                x = x * 0.02
            else:
                x = 1.0 + 0.1 * x
            p.copy_(x)


def tiny_unet_pair(
    seed: int = 0, dtype: Any = None, prediction: str = "epsilon", zsnr: bool = False
) -> tuple[Any, Any]:
    """(diffusers UNet2DConditionModel, ComfyUI ModelPatcher) with identical weights, on CPU.

    prediction: "epsilon" or "v_prediction" (the ComfyUI model's model_type;
    the diffusers UNet is the same network either way, its output is just read
    as v). zsnr: rescale ComfyUI's sigmas to zero terminal SNR (as diffusers'
    rescale_betas_zero_snr). ComfyUI's model_sampling is the stock
    ModelSamplingDiscrete+EPS/V_PREDICTION for SD1.5's scaled_linear betas.
    """
    import torch
    from diffusers import UNet2DConditionModel

    c = import_comfy()
    dtype = torch.float32 if dtype is None else dtype
    unet = UNet2DConditionModel(**TINY_UNET_DIFFUSERS)
    seeded_init_(unet, seed)
    unet = unet.to(dtype).eval().requires_grad_(False)

    model_config = c.supported_models.SD15(TINY_UNET_COMFY)
    model_config.set_inference_dtype(dtype, None)
    if zsnr:
        model_config.sampling_settings["zsnr"] = True
    model_types = {"epsilon": c.model_base.ModelType.EPS, "v_prediction": c.model_base.ModelType.V_PREDICTION}
    if prediction not in model_types:
        raise ValueError(f"prediction={prediction!r}: expected one of {sorted(model_types)}")
    model = c.model_base.BaseModel(model_config, model_type=model_types[prediction], device=torch.device("cpu"))

    key_map = c.utils.unet_to_diffusers(model_config.unet_config)  # diffusers key -> SD key
    dsd = unet.state_dict()
    converted = {key_map[k]: v for k, v in dsd.items() if k in key_map}
    unmapped = sorted(set(dsd) - set(key_map))
    if unmapped:
        raise ComfyHostError(f"diffusers keys with no ComfyUI name: {unmapped[:5]}")
    # strict: every ComfyUI parameter must come from diffusers (none left uninitialised).
    model.diffusion_model.load_state_dict(converted, strict=True)
    model.diffusion_model.to(dtype).eval().requires_grad_(False)
    cpu = torch.device("cpu")
    patcher = c.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
    return unet, patcher


def tiny_vae_pair(seed: int = 0) -> tuple[Any, Any]:
    """(diffusers AutoencoderKL, comfy.sd.VAE) with identical weights, fp32 on CPU.

    ComfyUI's VAE works in BHWC images in [0, 1] and encodes to the posterior
    mode (= mean), not a sample; diffusers decode() works in BCHW in [-1, 1].
    Neither applies the 0.18215 latent scaling (samplers do that).
    """
    import torch
    from diffusers import AutoencoderKL

    c = import_comfy()
    vae = AutoencoderKL(**TINY_VAE_DIFFUSERS)
    seeded_init_(vae, seed)
    vae = vae.eval().requires_grad_(False)
    dsd = {k: v.clone() for k, v in vae.state_dict().items()}
    comfy_vae = c.sd.VAE(sd=dsd, config=TINY_VAE_COMFY, dtype=torch.float32, device=torch.device("cpu"))
    # comfy.sd.VAE loads non-strictly and only logs missing keys: check it here.
    convert = importlib.import_module("comfy.diffusers_convert").convert_vae_state_dict
    expected = set(convert(vae.state_dict()))
    got = set(comfy_vae.first_stage_model.state_dict())
    if expected != got:
        raise ComfyHostError(
            f"VAE key mismatch: missing {sorted(got - expected)[:5]}, unexpected {sorted(expected - got)[:5]}"
        )
    return vae, comfy_vae


# ---------------------------------------------------------------------------
# ComfyUI's own schedulers, as timesteps the model sees
# ---------------------------------------------------------------------------

# Two log-sigma distances closer than this are a tie: measured gaps at half-way points are 0 and
# 8.9e-8 (one float32 rounding), the smallest gap elsewhere in the tables below is about 5e-4.
TIE_TOLERANCE = 1e-5


def sd15_model_samplings(c: ComfyModules) -> dict[str, Any]:
    """What an SD1.5 checkpoint's model samples with: as loaded ("plain") and after
    ModelSamplingDiscrete(sampling=lcm) ("lcm", the usual LCM-LoRA recipe)."""

    class Plain(c.model_sampling.ModelSamplingDiscrete, c.model_sampling.EPS):
        pass

    class Lcm(c.nodes_model_advanced.ModelSamplingDiscreteDistilled, c.nodes_model_advanced.LCM):
        pass

    return {"plain": Plain(), "lcm": Lcm()}


def comfy_timesteps(c: ComfyModules, model_sampling: Any, scheduler: str, steps: int,
                    denoise: float = 1.0) -> list[tuple[int, ...]]:
    """The training timesteps a ComfyUI scheduler makes the model see, one tuple of candidates per step.

    KSampler's denoise d runs the last ``steps`` sigmas of an int(steps / d)-step schedule. The
    model snaps each sigma to its table with argmin |log sigma - log sigma_t|; a sigma half-way
    between two entries has two equal distances, and which one wins depends on how the CPU rounds
    log and exp (sgm_uniform on an LCM-patched model gives 519 on some machines, 499 on others).
    Such a step gets both candidates, so what is asserted holds on every machine.
    """
    import torch

    total = int(steps / denoise)
    sigmas = c.samplers.calculate_sigmas(model_sampling, scheduler, total)[-(steps + 1):-1]
    table = model_sampling.log_sigmas.to(torch.float64)
    table_timesteps = model_sampling.timestep(model_sampling.sigmas).round().to(torch.int64).tolist()
    distances = (sigmas.log().to(torch.float64)[:, None] - table[None, :]).abs()
    nearest = distances.min(dim=1, keepdim=True).values
    return [tuple(sorted((table_timesteps[i] for i in row.nonzero().flatten().tolist()), reverse=True))
            for row in distances <= nearest + TIE_TOLERANCE]


def format_timesteps(candidates: list[tuple[int, ...]]) -> str:
    """'999, 759, 519 or 499, 259': ties spelled out."""
    return ", ".join(" or ".join(str(t) for t in step) for step in candidates)


# ---------------------------------------------------------------------------
# A real ComfyUI server
# ---------------------------------------------------------------------------


def free_port(port: int = 0) -> int:
    """``port`` if nothing listens on it on 127.0.0.1 (0: any free one); OSError when one does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds: TIME_WAIT is free
        s.bind(("127.0.0.1", port))
        return int(s.getsockname()[1])


def ensure_symlink(path: Path, target: Path) -> None:
    """Make ``path`` a symlink to ``target``, replacing an old symlink (a base directory kept
    between runs may point at a moved checkout), never a real file or folder."""
    if path.is_symlink():
        if path.resolve() == target.resolve():
            return
        path.unlink()
    elif path.exists():
        raise ComfyHostError(f"{path} exists and is not a symlink; remove it or use another base directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target.resolve(), target_is_directory=target.is_dir())


# comfy-cli: no telemetry prompt, no telemetry, no update check. `comfy launch` also
# refreshes a "knowledge" bundle from the cloud in a background thread unless
# COMFY_KNOWLEDGE_FILE names a local one: an empty file keeps it offline.
COMFY_CLI_QUIET_ENV = {"DO_NOT_TRACK": "1", "COMFY_NO_TELEMETRY": "1", "COMFY_NO_UPDATE_CHECK": "1",
                       "COMFY_KNOWLEDGE_FILE": os.devnull}


def front_end_root_dir(value: str | Path | None = None) -> Path | None:
    """``value``, else $LCM_FRONT_END_ROOT, as a front-end folder (index.html there); None if neither is set."""
    named = str(value) if value else os.environ.get(FRONT_END_ENV)
    if not named:
        return None
    root = Path(named).resolve()
    if not (root / "index.html").is_file():
        raise ComfyHostError(
            f"{FRONT_END_ENV}={named} is no front end (no index.html there): name the static/ folder of an "
            f"installed comfyui-frontend-package, e.g. `make test-browser FRONTEND=1.58.1` installs one and sets it."
        )
    return root


class ComfyServer:
    """ComfyUI's main.py on 127.0.0.1 with this repo in custom_nodes/; a context manager.

    The tests, scripts/demo.py and scripts/screenshot_workflows.py all start their servers here.
    The base directory (custom_nodes/, models/, input/, output/, user/) is a
    fresh temporary folder, removed on exit unless keep_base_dir is set, or ``base_dir`` (kept).
    extra_args go to main.py; the default --disable-api-nodes skips ComfyUI's
    paid-API nodes (start-up 8 s instead of 10 s on 2 cores, and no attempt to
    reach the internet). extra_custom_nodes ({folder name: path}) links more
    custom-node folders beside the pack, e.g. the digit demo's; none by default.
    port 0 takes a free one; cpu=False lets ComfyUI pick the GPU; comfy_cli starts it the way
    users do, `comfy launch`, falling back to main.py where comfy-cli cannot launch it.
    Errors are ComfyHostError whose first line says what failed (with the log's path) and
    whose further lines carry the log or the node's traceback.
    front_end_root (default $LCM_FRONT_END_ROOT) serves that front end (--front-end-root);
    none: the one the tree pins.
    """

    def __init__(
        self,
        python: str = sys.executable,
        extra_args: tuple[str, ...] = ("--disable-api-nodes",),
        startup_timeout: float = 90.0,
        keep_base_dir: bool = False,
        extra_custom_nodes: dict[str, Path] | None = None,
        base_dir: Path | None = None,
        port: int = 0,
        cpu: bool = True,
        comfy_cli: bool = False,
        front_end_root: str | Path | None = None,
    ) -> None:
        self.tree = comfy_tree()
        self.front_end_root = front_end_root_dir(front_end_root)
        self.extra_custom_nodes = dict(extra_custom_nodes or {})
        self.python = python
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.keep_base_dir = keep_base_dir
        self.port = port
        self.cpu = cpu
        self.comfy_cli = comfy_cli
        self.url = ""
        self.base_dir = Path(base_dir) if base_dir is not None else Path()
        self.launcher = ""  # how it was started: "python main.py" or "comfy-cli launch"
        self.startup_seconds = 0.0
        self._own_base_dir = base_dir is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = Path()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> ComfyServer:
        if self._own_base_dir:
            self.base_dir.mkdir(parents=True, exist_ok=True)
        elif self.keep_base_dir:
            self.base_dir = Path(tempfile.mkdtemp(prefix="lcm-comfy-"))
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="lcm-comfy-")
            self.base_dir = Path(self._tmp.name)
        (self.base_dir / "custom_nodes").mkdir(exist_ok=True)
        for name, target in {PACK_FOLDER: REPO_ROOT, **self.extra_custom_nodes}.items():
            ensure_symlink(self.base_dir / "custom_nodes" / name, Path(target))
        (self.base_dir / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
        try:
            self.port = free_port(self.port)
        except OSError:
            raise ComfyHostError(f"port {self.port} on 127.0.0.1 is in use") from None
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_path = self.base_dir / "server.log"
        main_args = [
            *(["--cpu"] if self.cpu else []),
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-auto-launch",
            "--base-directory",
            str(self.base_dir),
            "--database-url",
            "sqlite:///:memory:",
            *self.extra_args,
            *(["--front-end-root", str(self.front_end_root)] if self.front_end_root is not None else []),
        ]
        comfy = self._find_comfy_cli() if self.comfy_cli else None
        if comfy is not None:
            try:
                return self._launch([comfy, "--skip-prompt", "--workspace", str(self.tree), "launch", "--",
                                     *main_args], "comfy-cli launch")
            except ComfyHostError as err:
                # Timed out (stopped), or comfy-cli got as far as running ComfyUI: its failure, no second try.
                if self._proc is None or "Launching ComfyUI from" in self.log_text():
                    raise
                failed_log = self._log_path.with_name("comfy-cli-launch.log")
                self._log_path.replace(failed_log)
                self._proc = None
                logger.info("comfy-cli launch did not start ComfyUI (%s); falling back to `python main.py` "
                            "(comfy-cli's output: %s)", str(err).splitlines()[0], failed_log)
        elif self.comfy_cli:
            logger.info("comfy-cli is not installed in this environment; starting ComfyUI with `python main.py`")
        return self._launch([self.python, "main.py", *main_args], "python main.py")

    def _find_comfy_cli(self) -> str | None:
        """comfy-cli's `comfy` beside this python (the venv's), else on $PATH."""
        comfy = Path(self.python).parent / "comfy"
        return str(comfy) if comfy.is_file() else shutil.which("comfy")

    def _launch(self, cmd: list[str], launcher: str) -> ComfyServer:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **COMFY_CLI_QUIET_ENV)
        if sys.prefix != sys.base_prefix:  # comfy-cli runs main.py with $VIRTUAL_ENV's python: this one
            env["VIRTUAL_ENV"] = sys.prefix
        self.launcher = launcher
        logger.info("starting ComfyUI (%s) on %s, log %s", launcher, self.url, self._log_path)
        logger.debug("%s (cwd %s)", " ".join(cmd), self.tree)
        with open(self._log_path, "wb") as log:
            # Its own process group: comfy-cli runs ComfyUI as a child, and stop() signals both.
            self._proc = subprocess.Popen(cmd, cwd=self.tree, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        start = time.monotonic()
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ComfyHostError(
                    f"ComfyUI exited with code {self._proc.returncode} during start-up: {self.last_log_line()} "
                    f"(log: {self._log_path})\n{self.log_text()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/object_info", timeout=10) as resp:
                    if resp.status == 200:
                        json.load(resp)
                        self.startup_seconds = time.monotonic() - start
                        logger.info("ComfyUI ready at %s after %.1f s", self.url, self.startup_seconds)
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            if time.monotonic() - start > self.startup_timeout:
                self.stop()
                raise ComfyHostError(
                    f"ComfyUI did not answer /object_info within {self.startup_timeout:.0f} s "
                    f"(log: {self._log_path})\n{self.log_text()}"
                )
            time.sleep(0.25)

    def stop(self) -> None:
        """SIGINT to its process group (ComfyUI shuts down cleanly on it), then SIGKILL after 15 s."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGINT, 15), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def detach(self) -> int:
        """Leave the server running past close() (the demo's --keep-running); returns its process
        group id, which `kill -INT -- -ID` stops."""
        assert self._proc is not None, "detach() of a server that is not running"
        proc, self._proc = self._proc, None
        return proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ComfyServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inspection --------------------------------------------------------
    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def checkpoints_dir(self) -> Path:
        return self.base_dir / "models" / "checkpoints"

    @property
    def log_path(self) -> Path:
        return self._log_path

    def install_tiny_lora(self, name: str) -> Path:
        """A tiny random LoRA for the tiny checkpoint (scripts/make_tiny_checkpoint.py) in
        models/loras/<name>, e.g. under the LCM-LoRA's file name that a bundled workflow names;
        written once per server."""
        path = self.base_dir / "models" / "loras" / name
        if not path.is_file():
            load_script("make_tiny_checkpoint").make_tiny_lora(path)
        return path

    def pack_import_error(self) -> str | None:
        """ComfyUI's log line if it failed to import the pack, else None."""
        marker = f"{PACK_FOLDER} module for custom nodes:"
        for line in plain_log_lines(self.log_text()):
            if line.startswith("Cannot import") and marker in line:
                return line
        return None

    def pack_import_seconds(self) -> float | None:
        """The pack's row of ComfyUI's "Import times for custom nodes" table; None when absent
        (NaN when the import failed)."""
        for path, (seconds, imported) in import_times(self.log_text()).items():
            if Path(path).name == PACK_FOLDER:
                return seconds if imported else float("nan")
        return None

    def log_text(self) -> str:
        try:
            return self._log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no server log)"

    def last_log_line(self) -> str:
        """The log's last line (comfy-cli's JSON telemetry records skipped): why a start failed."""
        lines = [line for line in plain_log_lines(self.log_text()) if line.strip() and not line.startswith('{"schema"')]
        return lines[-1].strip() if lines else "(no output)"

    # -- HTTP --------------------------------------------------------------
    def get_json(self, path: str, timeout: float = 30.0) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=timeout) as resp:
            return json.load(resp)

    def object_info(self) -> dict[str, Any]:
        return self.get_json("/object_info")

    def post_prompt(self, api_graph: dict[str, Any], client_id: str | None = None) -> str:
        """Queue an API-format graph; returns its prompt_id. Validation errors raise with ComfyUI's details
        (one line per node first, then ComfyUI's whole answer). client_id: the websocket that is told
        about its progress."""
        body = json.dumps({"prompt": api_graph, "client_id": client_id or uuid.uuid4().hex}).encode()
        req = urllib.request.Request(f"{self.url}/prompt", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                answer = json.load(resp)
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", errors="replace")
            raise ComfyHostError(f"ComfyUI rejected the graph ({err.code}): {_node_errors_line(detail)}\n"
                                 f"{detail}") from None
        if answer.get("node_errors"):
            raise ComfyHostError(f"POST /prompt: node errors {json.dumps(answer['node_errors'], indent=1)}")
        return str(answer["prompt_id"])

    def wait_for(self, prompt_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll /history until the prompt finishes; return its history entry, or raise with the node error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get_json(f"/history/{prompt_id}").get(prompt_id)
            status = (entry or {}).get("status") or {}
            if entry is not None and status.get("completed") is not None:
                if status.get("status_str") == "success":
                    return entry
                errors = [data for kind, data in status.get("messages", []) if kind == "execution_error"]
                summary = "; ".join(f"node {e.get('node_id')} ({e.get('node_type')}): {e.get('exception_type')}: "
                                    f"{str(e.get('exception_message', '')).strip()}" for e in errors)
                tracebacks = "\n".join("".join(e.get("traceback") or []) for e in errors)
                raise ComfyHostError(f"prompt {prompt_id} failed: {summary or json.dumps(status)} "
                                     f"(log: {self._log_path})\n{tracebacks}")
            if not self.running:
                raise ComfyHostError(f"ComfyUI is not running (prompt {prompt_id}; log: {self._log_path})\n"
                                     f"{self.log_text()[-4000:]}")
            time.sleep(0.1)
        raise ComfyHostError(f"prompt {prompt_id} did not finish within {timeout:.0f} s (log: {self._log_path})\n"
                             f"{self.log_text()[-4000:]}")

    def run(self, api_graph: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        return self.wait_for(self.post_prompt(api_graph), timeout)

    def output_files(self, entry: dict[str, Any]) -> list[Path]:
        """Paths of the images a history entry's outputs name (SaveImage / PreviewImage)."""
        paths = []
        for node_out in entry.get("outputs", {}).values():
            for img in node_out.get("images", []):
                root = {"output": self.output_dir, "temp": self.base_dir / "temp"}.get(img.get("type"), self.output_dir)
                paths.append(root / img.get("subfolder", "") / img["filename"])
        return paths


def _node_errors_line(answer_text: str) -> str:
    """POST /prompt's 400 answer in one line: each rejected node and why, else its error message."""
    try:
        answer = json.loads(answer_text or "{}")
    except json.JSONDecodeError:
        return answer_text.strip().splitlines()[0] if answer_text.strip() else "(no answer)"
    problems = [f"node {nid} ({e.get('class_type')}): " + "; ".join(x.get("details") or x.get("message", "")
                                                                     for x in e.get("errors", []))
                for nid, e in (answer.get("node_errors") or {}).items()]
    return " | ".join(problems) or str((answer.get("error") or {}).get("message", answer_text.strip()))


def txt2img_graph(
    ckpt_name: str,
    *,
    seed: int = 0,
    steps: int = 2,
    cfg: float = 1.0,
    sampler_name: str = "lcm",
    scheduler: str = "sgm_uniform",
    width: int = 512,
    height: int = 512,
    filename_prefix: str = "lcm_smoke",
) -> dict[str, Any]:
    """ComfyUI's stock txt2img graph in API format (built-in nodes only).

    CheckpointLoaderSimple -> CLIPTextEncode x2 -> KSampler -> VAEDecode -> SaveImage;
    the latent is width/8 x height/8.
    """
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "seed": seed,
                "steps": steps,
                "cfg": cfg,
                "sampler_name": sampler_name,
                "scheduler": scheduler,
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": filename_prefix}},
    }


@contextlib.contextmanager
def comfy_server(**kwargs: Any) -> Any:
    """`with comfy_server() as server:`, for scripts (tests use the pytest fixture)."""
    with ComfyServer(**kwargs) as server:
        yield server


# ---------------------------------------------------------------------------
# Workflows: UI format (what the frontend saves) and API format (what /prompt takes)
# ---------------------------------------------------------------------------

EXAMPLE_WORKFLOWS = REPO_ROOT / "example_workflows"
# Input types the frontend draws as widgets (a list is an old-style COMBO).
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_NAMES = ("seed", "noise_seed")  # the frontend adds a control widget to these INTs by default
# Nodes that exist only in the front end (not in /object_info, never queued).
FRONTEND_ONLY_TYPES = frozenset({"Note", "MarkdownNote"})


def input_specs(node_info: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any], bool]]:
    """(name, type, options, optional) for each input of an /object_info entry, required first, in order."""
    specs = []
    for section in ("required", "optional"):
        declared = node_info["input"].get(section, {})
        for name in node_info.get("input_order", {}).get(section, list(declared)):
            spec = declared[name]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            specs.append((name, spec[0], options, section == "optional"))
    return specs


def is_widget(input_type: Any, options: dict[str, Any]) -> bool:
    return (isinstance(input_type, list) or input_type in WIDGET_TYPES) and not options.get("forceInput")


def widget_slots(node_info: dict[str, Any]) -> list[str | None]:
    """Names of a node's widgets_values entries as the frontend writes them; None marks the
    "control_after_generate" value (fixed / increment / decrement / randomize) after a seed."""
    slots: list[str | None] = []
    for name, input_type, options, _ in input_specs(node_info):
        if not is_widget(input_type, options):
            continue
        slots.append(name)
        if input_type == "INT":
            control = options.get("control_after_generate")
            control = name in SEED_NAMES if control is None else control
        else:
            control = options.get("control_after_generate", False)
        if control:
            slots.append(None)
    return slots


def ui_to_api(workflow: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """A UI-format workflow as the API-format graph the frontend queues ("Export (API)").

    Widget values go to their inputs by name (control values dropped), links become
    [source node id, output slot]; notes are left out; muted / bypassed nodes (mode != 0) are
    not supported.
    """
    links = {link[0]: link for link in workflow["links"]}
    graph: dict[str, Any] = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY_TYPES:
            continue
        if node.get("mode", 0) != 0:
            raise ValueError(f"node {node['id']} ({node['type']}) is muted or bypassed")
        values = list(node.get("widgets_values") or [])
        slots = widget_slots(object_info[node["type"]])
        if len(values) != len(slots):
            raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widget values, expected {slots}")
        inputs: dict[str, Any] = {name: value for name, value in zip(slots, values) if name is not None}
        for slot in node.get("inputs") or []:
            if slot.get("link") is not None:
                _, origin, origin_slot, _, _, _ = links[slot["link"]]
                inputs[slot["name"]] = [str(origin), origin_slot]
        graph[str(node["id"])] = {
            "inputs": inputs,
            "class_type": node["type"],
            "_meta": {"title": node.get("title") or object_info[node["type"]].get("display_name") or node["type"]},
        }
    return graph


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_LEVEL_TAG = re.compile(r"^\[(?:DEBUG|DETAIL|INFO|WARNING|ERROR|CRITICAL)\] ?")


def plain_log_lines(log_text: str) -> list[str]:
    """ComfyUI's console log as plain lines. ComfyUI 0.33 puts a coloured level tag before every
    record (`ESC[32m[INFO]ESC[0m message`) whether or not it writes to a terminal; 2024 and 0.3.75
    print the message alone."""
    return [_LEVEL_TAG.sub("", _ANSI_ESCAPE.sub("", line)) for line in log_text.splitlines()]


def import_times(log_text: str) -> dict[str, tuple[float, bool]]:
    """ComfyUI's start-up table "Import times for custom nodes" as {path: (seconds, imported)}.

    Its lines read `   0.0 seconds: PATH` or `   0.1 seconds (IMPORT FAILED): PATH`.
    """
    row = re.compile(r"^\s*(\d+(?:\.\d+)?) seconds( \(IMPORT FAILED\))?: (.+?)\s*$")
    times: dict[str, tuple[float, bool]] = {}
    lines = iter(plain_log_lines(log_text))
    for line in lines:
        if line.strip() == "Import times for custom nodes:":
            break
    for line in lines:
        match = row.match(line)
        if match is None:
            break
        times[match.group(3)] = (float(match.group(1)), match.group(2) is None)
    return times
