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
strength 0.5 from the 4-step digits. It checks each row with the model's digit classifier and
writes one labelled picture, lcm_digits_demo.png.

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
import contextlib
import copy
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = REPO_ROOT / "example_workflows" / "api" / "lcm_txt2img_then_img2img.api.json"
PACK_FOLDER = "lcm-multistep"
DIGITS_DIR = REPO_ROOT / "demo" / "lcm_digits"
DIGITS_FOLDER = "lcm-digits-demo"
DIGIT_STEPS = (1, 2, 4, 8)
DIGITS_PICTURE = "lcm_digits_demo.png"
# Beside the environment that scripts/setup_env.sh builds ($LCM_CACHE, default ~/.cache/lcm-multistep).
DEFAULT_OUT = Path(os.environ.get("LCM_CACHE") or Path.home() / ".cache" / "lcm-multistep") / "demo"
# comfy-cli: no telemetry prompt, no telemetry, no update check. `comfy launch` also
# refreshes a "knowledge" bundle from the cloud in a background thread unless
# COMFY_KNOWLEDGE_FILE names a local one: an empty file keeps the demo offline.
QUIET_ENV = {"DO_NOT_TRACK": "1", "COMFY_NO_TELEMETRY": "1", "COMFY_NO_UPDATE_CHECK": "1",
             "COMFY_KNOWLEDGE_FILE": os.devnull}


class DemoError(Exception):
    """A one-line message for the user and the exit code that goes with it."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def say(message: str) -> None:
    print(message, flush=True)


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
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from comfy_host import input_specs, is_widget

    for name, input_type, options, optional in input_specs(object_info[class_type]):
        if name not in inputs and not optional and is_widget(input_type, options):
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
    return graph, rows


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
# The server
# ---------------------------------------------------------------------------


def find_comfyui() -> Path:
    """$LCM_COMFYUI / $COMFYUI (make demo sets both), else what scripts/setup_env.sh prints."""
    value = os.environ.get("LCM_COMFYUI") or os.environ.get("COMFYUI")
    if not value:
        try:
            out = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "setup_env.sh")], check=True,
                                 capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout
        except (OSError, subprocess.CalledProcessError) as err:
            raise DemoError(f"no ComfyUI tree: set LCM_COMFYUI or run `make demo` ({err})") from None
        value = next((line[8:] for line in out.splitlines() if line.startswith("COMFYUI=")), "")
    tree = Path(value)
    if not (tree / "main.py").is_file():
        raise DemoError(f"{tree} is not a ComfyUI tree (no main.py); run `make demo`")
    return tree


def check_port(port: int) -> int:
    """The port to use (0: a free one); DemoError if something already listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise DemoError(f"port {port} on 127.0.0.1 is in use (another ComfyUI?); "
                            "pass --port N, or --port 0 for a free one") from None
        return int(s.getsockname()[1])


def link(path: Path, target: Path) -> None:
    """Make `path` a symlink to `target` (replacing an old symlink, never a real file)."""
    if path.is_symlink():
        if path.resolve() == target.resolve():
            return
        path.unlink()
    elif path.exists():
        raise DemoError(f"{path} exists and is not a symlink; remove it or use another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target.resolve())


def prepare_base_dir(base: Path, ckpt: Path | None, lora: Path | None) -> tuple[str | None, str | None]:
    """custom_nodes/ -> this repo (and the digit demo without --ckpt), and the models; returns
    (ckpt_name, lora_name), both None for the digit demo."""
    link(base / "custom_nodes" / PACK_FOLDER, REPO_ROOT)
    digits_link = base / "custom_nodes" / DIGITS_FOLDER
    if ckpt is None:
        link(digits_link, DIGITS_DIR)
        return None, None
    if digits_link.is_symlink():
        digits_link.unlink()  # a real-model run shows only the pack's nodes
    link(base / "models" / "checkpoints" / ckpt.name, ckpt)
    lora_name = None
    if lora is not None:
        link(base / "models" / "loras" / lora.name, lora)
        lora_name = lora.name
    return ckpt.name, lora_name


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


def find_comfy_cli() -> str | None:
    """comfy-cli's `comfy` beside this python (the venv's), else on $PATH."""
    comfy = Path(sys.executable).parent / "comfy"
    return str(comfy) if comfy.is_file() else shutil.which("comfy")


class Server:
    """ComfyUI in its own process group, started by comfy-cli or by main.py directly."""

    def __init__(self, tree: Path, base: Path, port: int, cpu: bool) -> None:
        self.tree, self.base, self.port, self.cpu = tree, base, port, cpu
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = base / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.how = ""

    def main_args(self) -> list[str]:
        return [*(["--cpu"] if self.cpu else []), "--listen", "127.0.0.1", "--port", str(self.port),
                "--base-directory", str(self.base), "--disable-auto-launch", "--database-url", "sqlite:///:memory:",
                "--disable-api-nodes"]

    def start(self, timeout: float) -> float:
        """Start and wait for /object_info; returns the seconds it took."""
        comfy_cli = find_comfy_cli()
        if comfy_cli:
            cmd = [comfy_cli, "--skip-prompt", "--workspace", str(self.tree), "launch", "--", *self.main_args()]
            try:
                return self._start(cmd, "comfy-cli launch", timeout)
            except DemoError as err:
                if self.proc is None or self.proc.returncode is None or "Launching ComfyUI from" in self.log_text():
                    raise  # ComfyUI itself ran and failed, or runs but does not answer: no second try
                failed_log = self.log_path.with_name("comfy-cli-launch.log")
                self.log_path.replace(failed_log)
                say(f"comfy-cli launch did not start ComfyUI ({err}); falling back to `python main.py` "
                    f"(comfy-cli's output: {failed_log})")
        else:
            say("comfy-cli is not installed in this environment; starting ComfyUI with `python main.py`")
        return self._start([sys.executable, "main.py", *self.main_args()], "python main.py", timeout)

    def _start(self, cmd: list[str], how: str, timeout: float) -> float:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **QUIET_ENV)
        if sys.prefix != sys.base_prefix:  # comfy-cli runs main.py with $VIRTUAL_ENV's python: this one
            env["VIRTUAL_ENV"] = sys.prefix
        self.how = how
        say(f"starting ComfyUI ({how}) on {self.url}, log {self.log_path}")
        start = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.tree, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True)
        while True:
            if self.proc.poll() is not None:
                raise DemoError(f"ComfyUI exited with code {self.proc.returncode} while starting: "
                                f"{self.last_log_line()} (log: {self.log_path})")
            with contextlib.suppress(OSError, ValueError):
                self.get("/object_info", timeout=10)
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                self.stop()
                raise DemoError(f"ComfyUI did not answer within {timeout:.0f} s (log: {self.log_path})")
            time.sleep(0.25)

    def last_log_line(self) -> str:
        lines = [line for line in self.log_text().splitlines() if line.strip() and not line.startswith('{"schema"')]
        return lines[-1].strip() if lines else "(no output)"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGINT to the process group (ComfyUI stops cleanly), SIGKILL after 15 s."""
        proc, self.proc = self.proc, None
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

    def get(self, path: str, timeout: float = 30) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=timeout) as resp:
            return json.load(resp)

    def post_prompt(self, graph: dict[str, Any], client_id: str) -> str:
        body = json.dumps({"prompt": graph, "client_id": client_id}).encode()
        req = urllib.request.Request(f"{self.url}/prompt", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return str(json.load(resp)["prompt_id"])
        except urllib.error.HTTPError as err:
            answer = json.loads(err.read().decode("utf-8", errors="replace") or "{}")
            problems = [f"node {nid} ({e.get('class_type')}): " + "; ".join(x.get("details") or x.get("message", "")
                                                                             for x in e.get("errors", []))
                        for nid, e in answer.get("node_errors", {}).items()]
            detail = " | ".join(problems) or answer.get("error", {}).get("message", str(err))
            raise DemoError(f"ComfyUI rejected the workflow: {detail}", code=1) from None


def pack_import_time(log_text: str) -> str:
    """The pack's row of ComfyUI's "Import times for custom nodes" table."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from comfy_host import import_times

    for path, (seconds, imported) in import_times(log_text).items():
        if Path(path).name == PACK_FOLDER:
            return f"pack import: {seconds:.1f} s" + ("" if imported else " (IMPORT FAILED)")
    return "pack import time: not in the log"


# ---------------------------------------------------------------------------
# Running the prompt
# ---------------------------------------------------------------------------


def run_prompt(server: Server, graph: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Queue the graph, print each node and sampler step as the websocket reports them; return the
    prompt's history entry."""
    client_id = uuid.uuid4().hex
    titles = {nid: node.get("_meta", {}).get("title") or node["class_type"] for nid, node in graph.items()}
    try:
        import websocket  # websocket-client, a dependency of comfy-cli
    except ImportError:
        websocket = None
    ws = None
    if websocket is not None:
        ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?clientId={client_id}", timeout=10)
        ws.settimeout(0.5)
    prompt_id = server.post_prompt(graph, client_id)
    say(f"queued prompt {prompt_id}")
    start = time.monotonic()
    deadline = start + timeout
    try:
        while time.monotonic() < deadline:
            if server.proc is None or server.proc.poll() is not None:
                raise DemoError(f"ComfyUI stopped while running the prompt (log: {server.log_path})", code=1)
            if ws is None:  # no websocket client: poll the history
                time.sleep(0.2)
                if prompt_id in server.get(f"/history/{prompt_id}"):
                    break
                continue
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
            now = time.monotonic()
            if kind == "executing":
                node = data.get("node")
                if node is None:
                    break
                say(f"  [{now - start:6.2f} s] node {node}: {titles.get(node, '?')}")
            elif kind == "progress":
                say(f"  [{now - start:6.2f} s]     step {data.get('value')}/{data.get('max')}")
            elif kind == "execution_cached" and data.get("nodes"):
                say(f"  cached: nodes {', '.join(data['nodes'])}")
            elif kind in ("execution_success", "execution_error", "execution_interrupted"):
                break
        else:
            raise DemoError(f"the prompt did not finish within {timeout:.0f} s (log: {server.log_path})", code=1)
    finally:
        if ws is not None:
            ws.close()
    for _ in range(50):  # the history entry lands just after the last message
        entry = server.get(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            break
        time.sleep(0.1)
    status = (entry or {}).get("status", {})
    if status.get("status_str") != "success":
        errors = [d for kind, d in status.get("messages", []) if kind == "execution_error"]
        detail = "; ".join(f"node {e.get('node_id')} ({e.get('node_type')}): {e.get('exception_type')}: "
                           f"{e.get('exception_message', '').strip()}" for e in errors) or json.dumps(status)
        raise DemoError(f"the prompt failed: {detail} (log: {server.log_path})", code=1)
    return entry


def execution_seconds(entry: dict[str, Any]) -> float | None:
    """ComfyUI's own start-to-success time of a prompt, from its history timestamps (ms)."""
    stamps = {kind: data.get("timestamp") for kind, data in entry["status"].get("messages", [])}
    if stamps.get("execution_start") and stamps.get("execution_success"):
        return (stamps["execution_success"] - stamps["execution_start"]) / 1000.0
    return None


def saved_images(base: Path, entry: dict[str, Any]) -> list[Path]:
    return [base / img.get("type", "output") / img.get("subfolder", "") / img["filename"]
            for out in entry.get("outputs", {}).values() for img in out.get("images", [])]


# ---------------------------------------------------------------------------
# The schedule plot
# ---------------------------------------------------------------------------


def schedules(tree: Path, steps: int) -> dict[str, dict[str, tuple[list[str], list[float]]]]:
    """{model sampling: {schedule: (timestep labels, sigmas)}} from lcm_core and ComfyUI's own code.

    A label reads "519 or 499" where the sigma lies half-way between two training timesteps:
    which one ComfyUI picks there depends on how the CPU rounds (comfy_host.comfy_timesteps).
    """
    os.environ["LCM_COMFYUI"] = str(tree)
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    import comfy_host  # puts the tree first on sys.path and forces CPU

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


def run_digits(server: Server, base: Path, seed: int, timeout: float) -> tuple[dict[str, Any], Path, list[str]]:
    """The digit demo's prompt; returns (history entry, the labelled picture, a line per row)."""
    from PIL import Image

    info = server.get("/object_info")
    if "DigitsModelLoader" not in info:
        raise DemoError(f"ComfyUI did not load the digit demo's nodes from {DIGITS_DIR}; see {server.log_path}")
    graph, labels = digits_graph(info, seed)
    say(f"running the digit demo: digits 0-9, seed {seed}: the pack's LCMSampler and ComfyUI's lcm at "
        f"{', '.join(map(str, DIGIT_STEPS))} steps, then img2img at strength 0.5")
    entry = run_prompt(server, graph, timeout)
    images = saved_images(base, entry)
    rows, lines = [], []
    for prefix, label in labels.items():
        mine = [Image.open(path) for path in images if path.name.startswith(prefix + "_")]
        if len(mine) != 10:
            raise DemoError(f"expected 10 images for {label}, ComfyUI saved {len(mine)}", code=1)
        seen = recognised(mine)
        right = sum(int(digit == want) for want, digit in enumerate(seen))
        rows.append((label, mine, right))
        lines.append(f"  {label:48s} classifier reads {' '.join(map(str, seen))}: {right}/10 right")
    return entry, digits_picture(rows, base / DIGITS_PICTURE), lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = None
    try:
        for what, path in (("--ckpt", args.ckpt), ("--lora", args.lora)):
            if path is not None and not path.is_file():
                raise DemoError(f"{what} {path}: no such file")
        if args.lora is not None and args.ckpt is None:
            raise DemoError("--lora needs --ckpt: the LoRA goes on your checkpoint (the digit demo has its own model)")
        if args.size % 8 or not 64 <= args.size <= 4096:
            raise DemoError(f"--size {args.size}: use a multiple of 8 from 64 to 4096")
        port = check_port(args.port)
        tree = find_comfyui()
        base = args.out.expanduser().resolve()
        ckpt_name, lora_name = prepare_base_dir(base, args.ckpt, args.lora)

        gpu = None if args.cpu else accelerator()
        say(f"device: {gpu}" if gpu else "device: CPU" + ("" if args.cpu else " (no GPU found)"))
        server = Server(tree, base, port, cpu=gpu is None)
        start_s = server.start(timeout=180)
        say(f"ComfyUI ready after {start_s:.1f} s ({server.how}); {pack_import_time(server.log_text())}")
        if "LCMTimesteps" not in server.get("/object_info/LCMTimesteps"):
            raise DemoError(f"ComfyUI did not load the pack; see {server.log_path}")

        wall = time.monotonic()
        if ckpt_name is None:
            entry, picture, lines = run_digits(server, base, args.seed, args.timeout)
        else:
            graph = prepare_graph(load_workflow(), ckpt_name, args.size, args.seed, lora_name)
            say(f"running {WORKFLOW.name}: {ckpt_name}{' + ' + lora_name if lora_name else ''}, "
                f"{args.size}x{args.size}, seeds {args.seed} and {args.seed + 1}")
            entry = run_prompt(server, graph, args.timeout)
            images = saved_images(base, entry)
            if len(images) != 2:
                raise DemoError(f"expected 2 images, ComfyUI saved {len(images)}", code=1)
        wall = time.monotonic() - wall

        plot_s = time.monotonic()
        table = schedules(tree, 4)
        plot = plot_schedules(table, 4, base / "lcm_schedules_4steps.png")
        plot_s = time.monotonic() - plot_s
        say("\n4-step timesteps (\"519 or 499\": half-way between two, the CPU's rounding picks):")
        for label, rows in table.items():
            for name, (timesteps, _) in rows.items():
                say(f"  {name:28s} {', '.join(timesteps):28s} {label}")
        say(f"plot: {plot}")

        say("\ntimings:")
        say(f"  server start ({server.how}): {start_s:.1f} s")
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
                f"{' with ' + lora_name if lora_name else ' (no LoRA)'}.")
        say("In your own ComfyUI: put this folder in ComfyUI/custom_nodes/, restart, then Workflow > Browse "
            "Templates (or the Templates button) > lcm-multistep, or open "
            "example_workflows/lcm_txt2img_then_img2img.json; its note says which files go where.")
        if args.keep_running:
            assert server.proc is not None
            say(f"\nComfyUI keeps running at {server.url} (base {base}); stop it with: kill -INT -- -{server.proc.pid}")
            server = None
        return 0
    except DemoError as err:
        print(f"demo: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    finally:
        if server is not None and server.proc is not None and server.proc.poll() is None:
            stop = time.monotonic()
            server.stop()
            say(f"stopped ComfyUI in {time.monotonic() - stop:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
