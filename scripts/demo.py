#!/usr/bin/env python3
"""LCM Multistep demo: a real ComfyUI, headless, runs the pack on a real model.

    make demo                          # the embedded digit model: no download, any CPU, about a minute
    make demo CKPT=model.safetensors LORA=lcm-lora.safetensors   # your SD1.5 model with LCM-LoRA
    python scripts/demo.py [--ckpt MODEL [--lora LORA]] [--size 512] [--seed 42] [--port 8188]
                           [--out DIR] [--cpu] [--keep-running]

Without --ckpt (the default) it runs the tiny LCM distilled on scikit-learn's 8x8 digits that
ships in demo/lcm_digits/ (demo-only nodes, not part of the pack): digits 0-9 at 1, 2, 4 and 8
steps with this pack's LCMSampler and with ComfyUI's built-in `lcm` sampler (sgm_uniform, on a
ModelSamplingDiscrete(lcm) model, "the usual advice") for the same seed, and an img2img pass at
strength 0.5 from the 4-step digits; then the flow-matching student (distilled to 4 steps on fixed
timesteps, as Wan's LightX2V LoRAs are) with the pack on those timesteps. It checks each row with
the model's digit classifier and writes one labelled picture, lcm_digits_demo.png.

With --ckpt it posts example_workflows/api/lcm_txt2img_then_img2img.api.json: txt2img in 4 LCM
steps, then img2img at strength 0.5, on your checkpoint (with --lora in its LoraLoader, e.g.
LCM-LoRA; without one the LoraLoader is taken out, as for a full LCM checkpoint).

Either way it:
1. makes a ComfyUI base directory (default $LCM_CACHE/demo, ~/.cache/lcm-multistep/demo) with this repository
   linked into custom_nodes/ (and the digit demo's folder, in the default mode);
2. starts ComfyUI on 127.0.0.1 with comfy-cli (`comfy --skip-prompt --workspace TREE launch --
   ...`), or with `python main.py` when comfy-cli cannot launch it; on the GPU when torch sees
   one, else (or with --cpu) on the CPU;
3. prints each node and sampler step as the websocket reports them, the images and timings;
4. prints and plots diffusers' LCM timesteps against ComfyUI's sgm_uniform and normal;
5. stops the server (SIGINT, then SIGKILL), unless --keep-running, and says what to run next.

Exit codes: 0 done; 1 the prompt failed; 2 bad arguments (missing file, port in use) or a
server that does not start.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

import comfy_host  # noqa: E402  (the server, the tests' and the screenshots' too)

WORKFLOW = REPO_ROOT / "example_workflows" / "api" / "lcm_txt2img_then_img2img.api.json"
DIGIT_STEPS = (1, 2, 4, 8)
DIGITS_PICTURE = "lcm_digits_demo.png"
# Beside the environment that scripts/setup_env.sh builds ($LCM_CACHE, default ~/.cache/lcm-multistep).
DEFAULT_OUT = Path(os.environ.get("LCM_CACHE") or Path.home() / ".cache" / "lcm-multistep") / "demo"
# `make demo` sets it: messages then name make's variables (PORT=8190), not the options they become.
VIA_MAKE_ENV = "LCM_DEMO_VIA_MAKE"
MAKE_NAMES = {"--port": "PORT=", "--ckpt": "CKPT=", "--lora": "LORA=", "--cpu": "CPU=1"}


class DemoError(Exception):
    """A one-line message for the user and the exit code that goes with it."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def say(message: str) -> None:
    print(message, flush=True)


def option(flag: str, value: Any = None) -> str:
    """How the user sets an option: `--port 8190`, or `PORT=8190` under `make demo`."""
    name = MAKE_NAMES.get(flag) if os.environ.get(VIA_MAKE_ENV) == "1" else None
    if name is None:
        return flag if value is None else f"{flag} {value}"
    return name if value is None else f"{name}{value}"


# ---------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------


def load_workflow() -> dict[str, Any]:
    return json.loads(WORKFLOW.read_text(encoding="utf-8"))


def nodes_of(graph: dict[str, Any], class_type: str) -> list[str]:
    return sorted((nid for nid, node in graph.items() if node["class_type"] == class_type), key=int)


def set_lora(graph: dict[str, Any], lora_name: str | None) -> dict[str, Any]:
    """A copy of `graph` whose LoraLoader loads `lora_name`; without one, the LoraLoader is taken out
    and everything that used its MODEL and CLIP takes the checkpoint's (a full LCM model needs no LoRA)."""
    graph = copy.deepcopy(graph)
    for lora in nodes_of(graph, "LoraLoader"):
        if lora_name:
            graph[lora]["inputs"]["lora_name"] = lora_name
            continue
        sources = {0: graph[lora]["inputs"]["model"], 1: graph[lora]["inputs"]["clip"]}
        del graph[lora]
        for node in graph.values():
            for name, value in node["inputs"].items():
                if isinstance(value, list) and value[0] == lora:
                    node["inputs"][name] = list(sources[value[1]])
    return graph


def prepare_graph(graph: dict[str, Any], ckpt_name: str, size: int, seed: int,
                  lora_name: str | None = None) -> dict[str, Any]:
    """The bundled graph with this run's checkpoint, latent size and seeds (seed, seed + 1, ...)."""
    graph = copy.deepcopy(graph)
    for nid in nodes_of(graph, "CheckpointLoaderSimple"):
        graph[nid]["inputs"]["ckpt_name"] = ckpt_name
    for nid in nodes_of(graph, "EmptyLatentImage"):
        graph[nid]["inputs"].update(width=size, height=size)
    for offset, nid in enumerate(nodes_of(graph, "SamplerCustom")):
        graph[nid]["inputs"]["noise_seed"] = seed + offset
    return set_lora(graph, lora_name)


def api_node(object_info: dict[str, Any], class_type: str, title: str, **inputs: Any) -> dict[str, Any]:
    """An API-format node: the given inputs, and every other required widget at its default."""
    for name, input_type, options, optional in comfy_host.input_specs(object_info[class_type]):
        if name not in inputs and not optional and comfy_host.is_widget(input_type, options):
            inputs[name] = options.get("default", input_type[0] if isinstance(input_type, list) else None)
    return {"inputs": inputs, "class_type": class_type, "_meta": {"title": title}}


def digits_graph(object_info: dict[str, Any], seed: int) -> tuple[dict[str, Any], dict[str, str]]:
    """The digit demo in one prompt: ({node id: node}, {SaveImage prefix: row label}).

    One batch of ten latents with the conditioning "0-9" (latent i draws digit i) per row: the
    pack's LCMSampler through SamplerCustom and ComfyUI's `lcm` through KSampler, each at 1, 2, 4
    and 8 steps with the same seed (so the same initial noise), then img2img at strength 0.5 from
    the pack's 4-step digits.
    """
    graph: dict[str, Any] = {}
    rows: dict[str, str] = {}
    ids = iter(range(1, 1000))

    def add(class_type: str, title: str, **inputs: Any) -> list[Any]:
        node_id = str(next(ids))
        graph[node_id] = api_node(object_info, class_type, title, **inputs)
        return [node_id, 0]

    def save(latent: list[Any], prefix: str, label: str) -> None:
        image = add("DigitsDecode", "Digits Decode", samples=latent, scale=8)
        add("SaveImage", f"Save {label}", images=image, filename_prefix=prefix)
        rows[prefix] = label

    student = add("DigitsModelLoader", "Load Digit Model (LCM student)", model="student")
    patched = add("ModelSamplingDiscrete", "ModelSamplingDiscrete (lcm): the usual advice for ComfyUI's lcm",
                  model=student, sampling="lcm", zsnr=False)
    digits = add("DigitsConditioning", "Digits 0-9 (a batch of ten)", digit="0-9")
    none = add("DigitsConditioning", "No digit (negative, unused at cfg 1)", digit="none")
    latent = add("EmptyLatentImage", "Ten 4x4 latents", width=32, height=32, batch_size=10)
    config = add("LCMSchedulerConfig", "LCM Scheduler Config", model=student)
    sampler = add("LCMSampler", "LCM Sampler", config=config)
    outputs = {}
    for steps in DIGIT_STEPS:
        sigmas = add("LCMTimesteps", f"LCM Timesteps ({steps})", config=config, steps=steps, strength=1.0)
        outputs[steps] = add("SamplerCustom", f"SamplerCustom ({steps} LCM steps)", model=student, add_noise=True,
                             noise_seed=seed, cfg=1.0, positive=digits, negative=none, sampler=sampler,
                             sigmas=sigmas, latent_image=latent)
        save(outputs[steps], f"digits_pack_{steps}steps", f"LCM Multistep (this pack), {steps} step{'s' * (steps > 1)}")
    for steps in DIGIT_STEPS:
        builtin = add("KSampler", f"KSampler (ComfyUI lcm, {steps} steps)", model=patched, seed=seed, steps=steps,
                      cfg=1.0, sampler_name="lcm", scheduler="sgm_uniform", positive=digits, negative=none,
                      latent_image=latent, denoise=1.0)
        save(builtin, f"digits_comfy_lcm_{steps}steps", f"ComfyUI lcm + sgm_uniform, {steps} step{'s' * (steps > 1)}")
    sigmas = add("LCMTimesteps", "LCM Timesteps (img2img, strength 0.5)", config=config, steps=4, strength=0.5)
    img2img = add("SamplerCustom", "SamplerCustom (img2img)", model=student, add_noise=True, noise_seed=seed + 1,
                  cfg=1.0, positive=digits, negative=none, sampler=sampler, sigmas=sigmas, latent_image=outputs[4])
    save(img2img, "digits_pack_img2img", "img2img at strength 0.5 from the 4-step row")
    # The flow-matching student (shift 5) at 4 steps on the timesteps it was distilled on, LightX2V's
    # denoising_step_list / 1000 given to FlowMatchLCMTimesteps, which shifts them as the model does.
    flow = add("DigitsModelLoader", "Load Digit Model (flow student)", model="flow_student")
    grid = add("FlowMatchLCMTimesteps", "FlowMatch LCM Timesteps (the training timesteps)", model=flow, steps=4,
               strength=1.0, sigmas=", ".join(f"{s:g}" for s in flow_training_grid()))
    flow_out = add("SamplerCustom", "SamplerCustom (flow student, 4 LCM steps)", model=flow, add_noise=True,
                   noise_seed=seed, cfg=1.0, positive=digits, negative=none, sampler=sampler,  # flow: config unused
                   sigmas=grid, latent_image=latent)
    save(flow_out, "digits_flow_pack_4steps", "Flow student (this pack), 4 training timesteps")
    return graph, rows


def flow_training_grid() -> tuple[float, ...]:
    """The flow student's training timesteps / 1000 before the shift (demo/lcm_digits/model.py)."""
    sys.path.insert(0, str(REPO_ROOT / "demo"))
    from lcm_digits import model as digits_model

    return digits_model.FLOW_TRAINING_GRID


def recognised(images: list[Any]) -> list[int]:
    """The digit the demo model's classifier sees in each 64x64 picture (8x8 digits enlarged 8x)."""
    import numpy as np
    import torch

    sys.path.insert(0, str(REPO_ROOT / "demo"))
    from lcm_digits import model as digits_model

    grey = np.stack([np.asarray(image.convert("L"), dtype=np.float32)[4::8, 4::8] for image in images])
    pixels = torch.from_numpy(grey / 255.0 * 2.0 - 1.0).unsqueeze(1)
    with torch.no_grad():
        return digits_model.load_classifier()(pixels).argmax(-1).tolist()


def digits_picture(rows: list[tuple[str, list[Any], int]], path: Path) -> Path:
    """One labelled picture: a row per (label, ten 64x64 images, digits recognised)."""
    from PIL import Image, ImageDraw, ImageFont

    cell, pad, label_w, header = 64, 4, 300, 28
    width = label_w + 10 * (cell + pad)
    canvas = Image.new("RGB", (width, header + len(rows) * (cell + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for digit in range(10):
        draw.text((label_w + digit * (cell + pad) + cell // 2 - 3, 8), str(digit), fill="black", font=font)
    for row, (label, images, right) in enumerate(rows):
        y = header + row * (cell + pad)
        draw.text((8, y + cell // 2 - 14), label, fill="black", font=font)
        draw.text((8, y + cell // 2 + 2), f"classifier: {right}/10 right", fill="#555555", font=font)
        for digit, image in enumerate(images):
            canvas.paste(image.convert("RGB").resize((cell, cell)), (label_w + digit * (cell + pad), y))
    canvas.save(path)
    return path


# ---------------------------------------------------------------------------
# Checks before anything starts
# ---------------------------------------------------------------------------


def safetensors_problem(path: Path) -> str | None:
    """What makes ``path`` unreadable as a .safetensors file, from its header alone (None: it reads).

    The format: an 8-byte little-endian header length N, N bytes of JSON ({name: {dtype, shape,
    data_offsets: [begin, end]}}, plus an optional __metadata__), then the tensor bytes, which
    end exactly at the file's end. Reading N + 8 bytes catches an empty, truncated or
    other-format file in milliseconds, where ComfyUI would fail only after its start-up.
    """
    size = path.stat().st_size
    if size == 0:
        return "the file is empty"
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{size} bytes is too short for a safetensors header"
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            return (f"its first 8 bytes announce a {length}-byte header in a {size}-byte file: not a safetensors "
                    "file (a .ckpt or .pt pickle?), or cut short")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return "its header is not JSON: not a safetensors file"
    if not isinstance(header, dict):
        return "its header is not a JSON object: not a safetensors file"
    try:
        end = max(int(entry["data_offsets"][1]) for name, entry in header.items() if name != "__metadata__")
    except (TypeError, KeyError, IndexError, ValueError):
        return "its header lists no tensors, or tensors without data_offsets: not a safetensors file"
    if 8 + length + end != size:
        return (f"its header needs {8 + length + end} bytes, the file has {size}: "
                + ("cut short (an interrupted download?)" if size < 8 + length + end else "extra bytes at its end"))
    return None


def check_inputs(args: argparse.Namespace) -> list[str]:
    """Refuse what cannot run (DemoError, before the server starts or anything is written);
    returns notes on what will run."""
    if args.lora is not None and args.ckpt is None:
        raise DemoError(f"{option('--lora')} needs {option('--ckpt')}: the LoRA goes on your checkpoint "
                        "(the digit demo has its own model)")
    for flag, path in (("--ckpt", args.ckpt), ("--lora", args.lora)):
        if path is None:
            continue
        if not path.is_file():
            raise DemoError(f"{option(flag, path)}: no such file")
        problem = safetensors_problem(path)
        if problem:
            raise DemoError(f"{option(flag, path)}: {problem}. The demo takes .safetensors files.")
    if args.size % 8 or not 64 <= args.size <= 4096:
        raise DemoError(f"--size {args.size}: use a multiple of 8 from 64 to 4096")
    if args.port != 0:
        try:
            comfy_host.free_port(args.port)
        except OSError:
            raise DemoError(f"port {args.port} on 127.0.0.1 is in use (another ComfyUI?); pass "
                            f"{option('--port', 'N')} for another, or {option('--port', 0)} for a free one") from None
    if args.ckpt is not None and args.lora is None:
        return [f"{option('--ckpt')} without {option('--lora')}: running {args.ckpt.name} alone, with no LoRA "
                "(right for a full LCM checkpoint; for SD1.5 + LCM-LoRA add "
                f"{option('--lora', '/path/to/lcm-lora-sdv1-5.safetensors')})"]
    return []


def find_comfyui() -> Path:
    """$LCM_COMFYUI / $COMFYUI (make demo sets both), else what scripts/setup_env.sh prints."""
    value = os.environ.get(comfy_host.ENV_VAR) or os.environ.get("COMFYUI")
    if not value:
        try:
            out = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "setup_env.sh")], check=True,
                                 capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout
        except (OSError, subprocess.CalledProcessError) as err:
            raise DemoError(f"no ComfyUI tree: set {comfy_host.ENV_VAR} or run `make demo` ({err})") from None
        value = next((line[8:] for line in out.splitlines() if line.startswith("COMFYUI=")), "")
    os.environ[comfy_host.ENV_VAR] = value
    try:
        return comfy_host.comfy_tree()
    except comfy_host.ComfyHostError as err:
        raise DemoError(str(err)) from None


def prepare_base_dir(base: Path, ckpt: Path | None, lora: Path | None) -> tuple[str | None, str | None]:
    """The models linked into base's models/ (the server links the custom nodes); returns
    (ckpt_name, lora_name), both None for the digit demo."""
    digits_link = base / "custom_nodes" / comfy_host.DIGITS_DEMO_FOLDER
    if ckpt is None:
        return None, None
    if digits_link.is_symlink():
        digits_link.unlink()  # a real-model run shows only the pack's nodes
    try:
        comfy_host.ensure_symlink(base / "models" / "checkpoints" / ckpt.name, ckpt)
        if lora is not None:
            comfy_host.ensure_symlink(base / "models" / "loras" / lora.name, lora)
    except comfy_host.ComfyHostError as err:
        raise DemoError(f"{err} (or pass another --out)") from None
    return ckpt.name, None if lora is None else lora.name


def accelerator() -> str | None:
    """The GPU that ComfyUI would pick on its own, or None (then it must run with --cpu)."""
    import torch

    if torch.cuda.is_available():
        return f"CUDA ({torch.cuda.get_device_name(0)})"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "Apple MPS"
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return "Intel XPU"
    return None


def host_failure(err: comfy_host.ComfyHostError, code: int = 1) -> DemoError:
    """A server error as the demo's one-line message (its first line; the rest is in the log)."""
    return DemoError(str(err).splitlines()[0], code=code)


# ---------------------------------------------------------------------------
# Running the prompt
# ---------------------------------------------------------------------------


def run_prompt(server: comfy_host.ComfyServer, graph: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Queue the graph, print each node and sampler step as the websocket reports them; return the
    prompt's history entry."""
    client_id = uuid.uuid4().hex
    titles = {nid: node.get("_meta", {}).get("title") or node["class_type"] for nid, node in graph.items()}
    try:
        import websocket  # websocket-client, a dependency of comfy-cli
    except ImportError:
        websocket = None  # no progress lines: wait_for below polls the history
    ws = None
    if websocket is not None:
        ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?clientId={client_id}", timeout=10)
        ws.settimeout(0.5)
    start = time.monotonic()
    try:
        prompt_id = server.post_prompt(graph, client_id)
        say(f"queued prompt {prompt_id}")
        while ws is not None and time.monotonic() < start + timeout and server.running:
            try:
                raw = ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            if not isinstance(raw, str):
                continue  # binary preview frames
            message = json.loads(raw)
            kind, data = message.get("type"), message.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            now = time.monotonic() - start
            if kind == "executing":
                if data.get("node") is None:
                    break
                say(f"  [{now:6.2f} s] node {data['node']}: {titles.get(data['node'], '?')}")
            elif kind == "progress":
                say(f"  [{now:6.2f} s]     step {data.get('value')}/{data.get('max')}")
            elif kind == "execution_cached" and data.get("nodes"):
                say(f"  cached: nodes {', '.join(data['nodes'])}")
            elif kind in ("execution_success", "execution_error", "execution_interrupted"):
                break
        # The history entry lands just after the last message.
        return server.wait_for(prompt_id, timeout=max(5.0, start + timeout - time.monotonic()))
    except comfy_host.ComfyHostError as err:
        raise host_failure(err) from None
    finally:
        if ws is not None:
            ws.close()


def execution_seconds(entry: dict[str, Any]) -> float | None:
    """ComfyUI's own start-to-success time of a prompt, from its history timestamps (ms)."""
    stamps = {kind: data.get("timestamp") for kind, data in entry["status"].get("messages", [])}
    if stamps.get("execution_start") and stamps.get("execution_success"):
        return (stamps["execution_success"] - stamps["execution_start"]) / 1000.0
    return None


# ---------------------------------------------------------------------------
# The schedule plot
# ---------------------------------------------------------------------------


def schedules(steps: int) -> dict[str, dict[str, tuple[list[str], list[float]]]]:
    """{model sampling: {schedule: (timestep labels, sigmas)}} from lcm_core and ComfyUI's own code
    (imported in this process, on the CPU, from the tree of $LCM_COMFYUI).

    A label reads "519 or 499" where the sigma lies half-way between two training timesteps:
    which one ComfyUI picks there depends on how the CPU rounds (comfy_host.comfy_timesteps).
    """
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ComfyUI warns about optional audio packages on import
    try:
        c = comfy_host.import_comfy()
    finally:
        root.setLevel(level)
    sys.path.insert(1, str(REPO_ROOT))  # lcm_core; after the tree, whose nodes.py must win
    from lcm_core import LCMScheduler, alphas_cumprod, sigmas_from_alphas_cumprod

    scheduler = LCMScheduler()
    scheduler.set_timesteps(steps)
    lcm_t = [int(t) for t in scheduler.timesteps]
    lcm_sigmas = sigmas_from_alphas_cumprod(alphas_cumprod(scheduler.config))[lcm_t].tolist()
    labels = {"plain": "default model sampling (ModelSamplingDiscrete, eps)",
              "lcm": "ModelSamplingDiscrete(sampling=lcm)"}
    result = {}
    for key, sampling in comfy_host.sd15_model_samplings(c).items():
        rows = {"LCM (diffusers / lcm_core)": ([str(t) for t in lcm_t], lcm_sigmas)}
        for name in ("sgm_uniform", "normal"):
            sigmas = c.samplers.calculate_sigmas(sampling, name, steps)[:-1]
            candidates = comfy_host.comfy_timesteps(c, sampling, name, steps)
            rows[name] = ([comfy_host.format_timesteps([step]) for step in candidates], sigmas.tolist())
        result[labels[key]] = rows
    return result


def plot_schedules(table: dict[str, dict[str, tuple[list[str], list[float]]]], steps: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(table), figsize=(7 * len(table), 9), squeeze=False)
    markers = {"LCM (diffusers / lcm_core)": "o", "sgm_uniform": "s", "normal": "^"}
    for col, (label, rows) in enumerate(table.items()):
        top, bottom = axes[0][col], axes[1][col]
        for k, (name, (timesteps, sigmas)) in enumerate(rows.items()):
            x = [i + 1 + (k - 1) * 0.06 for i in range(steps)]  # a small offset keeps equal points visible
            # A tie ("519 or 499") is drawn at the first value; its label names both.
            top.plot(x, [int(t.split()[0]) for t in timesteps], marker=markers.get(name, "o"), label=name)
            bottom.plot(x, sigmas, marker=markers.get(name, "o"), label=name)
            for xi, t, s in zip(x, timesteps, sigmas):
                offset = ((-24, 6), (6, 2), (6, -12))[k % 3]
                top.annotate(t, (xi, int(t.split()[0])), textcoords="offset points", xytext=offset, fontsize=8)
                bottom.annotate(t, (xi, s), textcoords="offset points", xytext=offset, fontsize=8)
        top.set_title(f"ComfyUI {label}", fontsize=10)
        top.set_ylabel("timestep")
        bottom.set_ylabel("sigma (log scale); labels: timestep")
        bottom.set_yscale("log")
        for ax in (top, bottom):
            ax.set_xlabel("step")
            ax.set_xticks(range(1, steps + 1))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"{steps} steps: diffusers' LCM schedule vs ComfyUI's sgm_uniform and normal")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[5:]))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"ComfyUI base directory, kept between runs (default {DEFAULT_OUT})")
    parser.add_argument("--ckpt", type=Path, help="your SD1.5 / SDXL checkpoint (default: the embedded digit model)")
    parser.add_argument("--lora", type=Path, help="a LoRA, e.g. LCM-LoRA, applied at strength 1.0")
    parser.add_argument("--port", type=int, default=8188, help="port on 127.0.0.1 (default 8188; 0: a free one)")
    parser.add_argument("--size", type=int, default=512, help="image width and height with --ckpt (default 512)")
    parser.add_argument("--seed", type=int, default=42, help="txt2img noise seed; img2img uses seed + 1 (default 42)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the prompt (default 600)")
    parser.add_argument("--keep-running", action="store_true", help="leave ComfyUI running at the end")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is there")
    return parser.parse_args(argv)


def run_digits(server: comfy_host.ComfyServer, seed: int, timeout: float) -> tuple[dict[str, Any], Path, list[str]]:
    """The digit demo's prompt; returns (history entry, the labelled picture, a line per row)."""
    from PIL import Image

    info = server.object_info()
    if "DigitsModelLoader" not in info:
        raise DemoError(f"ComfyUI did not load the digit demo's nodes from {comfy_host.DIGITS_DEMO_DIR}; "
                        f"see {server.log_path}")
    graph, labels = digits_graph(info, seed)
    say(f"running the digit demo: digits 0-9, seed {seed}: the pack's LCMSampler and ComfyUI's lcm at "
        f"{', '.join(map(str, DIGIT_STEPS))} steps, then img2img at strength 0.5, then the flow student")
    entry = run_prompt(server, graph, timeout)
    images = server.output_files(entry)
    rows, lines = [], []
    for prefix, label in labels.items():
        mine = [Image.open(path) for path in images if path.name.startswith(prefix + "_")]
        if len(mine) != 10:
            raise DemoError(f"expected 10 images for {label}, ComfyUI saved {len(mine)}", code=1)
        seen = recognised(mine)
        right = sum(int(digit == want) for want, digit in enumerate(seen))
        rows.append((label, mine, right))
        lines.append(f"  {label:48s} classifier reads {' '.join(map(str, seen))}: {right}/10 right")
    return entry, digits_picture(rows, server.base_dir / DIGITS_PICTURE), lines


def start_server(args: argparse.Namespace, base: Path, digits: bool) -> comfy_host.ComfyServer:
    """ComfyUI on 127.0.0.1 with the pack (and the digit demo's nodes), started as users start it:
    comfy-cli's `comfy launch` (main.py where comfy-cli cannot)."""
    gpu = None if args.cpu else accelerator()
    say(f"device: {gpu}" if gpu else "device: CPU" + ("" if args.cpu else " (no GPU found)"))
    # The server's own messages (how it starts, the fallback to main.py) are the demo's output too.
    host_log = logging.getLogger(comfy_host.__name__)
    if not host_log.handlers:
        host_log.addHandler(logging.StreamHandler(sys.stdout))
        host_log.setLevel(logging.INFO)
        host_log.propagate = False
    server = comfy_host.ComfyServer(
        base_dir=base, port=args.port, cpu=gpu is None, comfy_cli=True, startup_timeout=180,
        extra_custom_nodes={comfy_host.DIGITS_DEMO_FOLDER: comfy_host.DIGITS_DEMO_DIR} if digits else None)
    try:
        server.start()
    except comfy_host.ComfyHostError as err:
        server.close()
        raise host_failure(err, code=2) from None
    except BaseException:  # Ctrl-C while it starts: it runs in its own process group, stop it here
        server.close()
        raise
    seconds = server.pack_import_seconds()  # the line before says how long the start took
    say("pack import time: not in the log" if seconds is None else f"pack import: {seconds:.1f} s")
    if "LCMTimesteps" not in server.get_json("/object_info/LCMTimesteps"):
        server.close()
        raise DemoError(f"ComfyUI did not load the pack; see {server.log_path}")
    return server


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = None
    try:
        for note in check_inputs(args):
            say(note)
        find_comfyui()
        base = args.out.expanduser().resolve()
        ckpt_name, lora_name = prepare_base_dir(base, args.ckpt, args.lora)
        server = start_server(args, base, digits=ckpt_name is None)

        wall = time.monotonic()
        if ckpt_name is None:
            entry, picture, lines = run_digits(server, args.seed, args.timeout)
        else:
            graph = prepare_graph(load_workflow(), ckpt_name, args.size, args.seed, lora_name)
            say(f"running {WORKFLOW.name}: {ckpt_name}{' + ' + lora_name if lora_name else ' (no LoRA)'}, "
                f"{args.size}x{args.size}, seeds {args.seed} and {args.seed + 1}")
            entry = run_prompt(server, graph, args.timeout)
            images = server.output_files(entry)
            if len(images) != 2:
                raise DemoError(f"expected 2 images, ComfyUI saved {len(images)}", code=1)
        wall = time.monotonic() - wall

        plot_s = time.monotonic()
        table = schedules(4)
        plot = plot_schedules(table, 4, base / "lcm_schedules_4steps.png")
        plot_s = time.monotonic() - plot_s
        say("\n4-step timesteps (\"519 or 499\": half-way between two, the CPU's rounding picks):")
        for label, rows in table.items():
            for name, (timesteps, _) in rows.items():
                say(f"  {name:28s} {', '.join(timesteps):28s} {label}")
        say(f"plot: {plot}")

        say("\ntimings:")
        say(f"  server start ({server.launcher}): {server.startup_seconds:.1f} s")
        executed = execution_seconds(entry)
        say(f"  the prompt: {executed if executed is not None else wall:.2f} s as ComfyUI reports it, "
            f"{wall:.2f} s queue to done")
        say(f"  schedule plot (imports ComfyUI in this process): {plot_s:.1f} s")

        say("\nWhat you got:")
        if ckpt_name is None:
            say(f"  {picture}")
            say("  Digits 0-9 from a tiny LCM distilled on this kind of CPU (demo/lcm_digits/models/MODEL_CARD.md):")
            for line in lines:
                say(line)
            say("  Same seed, same initial noise in every row; the pack runs diffusers' timesteps and noise stream.")
            say("\nNext, with your own model (SD1.5 + LCM-LoRA; the files stay where they are, the demo links them):")
            say("  make demo CKPT=/path/to/sd15.safetensors LORA=/path/to/lcm-lora-sdv1-5.safetensors")
        else:
            for image in images:
                say(f"  {image}")
            say(f"  txt2img in 4 LCM steps, then img2img at strength 0.5, on {ckpt_name}"
                f"{' with ' + lora_name if lora_name else ' alone (no LoRA)'}.")
        # The templates browser lists a pack's workflows under its folder's name in custom_nodes/.
        say(f"In your own ComfyUI: put this folder in ComfyUI/custom_nodes/, restart, then Workflow > Browse "
            f"Templates (or the Templates button) > {REPO_ROOT.name}, or open "
            "example_workflows/lcm_txt2img_then_img2img.json; its note says which files go where.")
        if args.keep_running:
            url, pid, server = server.url, server.detach(), None
            say(f"\nComfyUI keeps running at {url} (base {base}); stop it with: kill -INT -- -{pid}")
        return 0
    except DemoError as err:
        print(f"demo: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    finally:
        if server is not None and server.running:
            stop = time.monotonic()
            server.close()
            say(f"stopped ComfyUI in {time.monotonic() - stop:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
