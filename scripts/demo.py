#!/usr/bin/env python3
"""LCM Multistep demo: a real ComfyUI, headless, runs the bundled workflow.

    make demo                      # the venv's python runs this file
    python scripts/demo.py [--size 512] [--seed 42] [--port 8188] [--out DIR]
                           [--ckpt MODEL.safetensors [--lora LCM_LORA.safetensors]] [--keep-running]

What it does, all offline:
1. Makes a ComfyUI base directory (default ~/.cache/lcm-multistep/demo) with this
   repository symlinked into custom_nodes/. Without --ckpt it writes a tiny SD1.5
   checkpoint with seeded random weights once (scripts/make_tiny_checkpoint.py):
   the images are noise, but every node runs for real. --ckpt links a real model
   into models/checkpoints; --lora adds a LoraLoader (strength 1.0, e.g. LCM-LoRA)
   between the checkpoint and everything that uses its MODEL and CLIP.
2. Starts ComfyUI on 127.0.0.1 with comfy-cli (`comfy --skip-prompt --workspace
   TREE launch -- --cpu ...`), or with `python main.py` when comfy-cli cannot
   launch it (the reason is printed).
3. Posts example_workflows/api/lcm_txt2img_then_img2img.api.json: txt2img in 4
   LCM steps, then img2img at strength 0.5 on its output latent. Prints each node
   and sampler step as the websocket reports them, the two PNGs and the timings.
4. Plots diffusers' LCM timesteps and sigmas (lcm_core) against ComfyUI's
   sgm_uniform and normal schedulers, computed with ComfyUI's own code.
5. Stops the server (SIGINT, then SIGKILL), unless --keep-running.

Exit codes: 0 done; 1 the prompt failed; 2 bad arguments (missing file, port in
use) or a server that does not start.
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
TINY_CKPT = "lcm-multistep-tiny-sd15.safetensors"
DEFAULT_OUT = Path.home() / ".cache" / "lcm-multistep" / "demo"
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


def prepare_base_dir(base: Path, ckpt: Path | None, lora: Path | None) -> tuple[str, str | None]:
    """custom_nodes/lcm-multistep -> this repo, and the models; returns (ckpt_name, lora_name)."""
    link(base / "custom_nodes" / PACK_FOLDER, REPO_ROOT)
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    if ckpt is not None:
        link(checkpoints / ckpt.name, ckpt)
        ckpt_name = ckpt.name
    else:
        ckpt_name = TINY_CKPT
        if not (checkpoints / TINY_CKPT).is_file():
            say(f"writing the tiny random-weight SD1.5 checkpoint {checkpoints / TINY_CKPT} (once, no download)")
            sys.path.insert(0, str(REPO_ROOT / "scripts"))
            from make_tiny_checkpoint import make_tiny_checkpoint

            make_tiny_checkpoint(checkpoints / TINY_CKPT, seed=0)
    lora_name = None
    if lora is not None:
        link(base / "models" / "loras" / lora.name, lora)
        lora_name = lora.name
    return ckpt_name, lora_name


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


def run_prompt(server: Server, graph: dict[str, Any], timeout: float) -> tuple[dict[str, Any], list[tuple[str, float]]]:
    """Queue the graph, print progress from the websocket, return (history entry, [(node label, seconds)])."""
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
    node_times: list[tuple[str, float]] = []
    current: tuple[str, float] | None = None

    def finish_node(now: float) -> None:
        if current is not None:
            node_times.append((current[0], now - current[1]))

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
                finish_node(now)
                node = data.get("node")
                current = None if node is None else (f"{node} {titles.get(node, '?')}", now)
                if node is None:
                    break
                say(f"  [{now - start:6.2f} s] node {node}: {titles.get(node, '?')}")
            elif kind == "progress":
                say(f"  [{now - start:6.2f} s]     step {data.get('value')}/{data.get('max')}")
            elif kind == "execution_cached" and data.get("nodes"):
                say(f"  cached: nodes {', '.join(data['nodes'])}")
            elif kind in ("execution_success", "execution_error", "execution_interrupted"):
                finish_node(now)
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
    return entry, node_times


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
    parser.add_argument("--ckpt", type=Path, help="a real checkpoint (default: the tiny random one)")
    parser.add_argument("--lora", type=Path, help="a LoRA, e.g. LCM-LoRA, applied at strength 1.0")
    parser.add_argument("--port", type=int, default=8188, help="port on 127.0.0.1 (default 8188; 0: a free one)")
    parser.add_argument("--size", type=int, default=512, help="image width and height (default 512)")
    parser.add_argument("--seed", type=int, default=42, help="txt2img noise seed; img2img uses seed + 1 (default 42)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the prompt (default 600)")
    parser.add_argument("--keep-running", action="store_true", help="leave ComfyUI running at the end")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is there")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = None
    try:
        for what, path in (("--ckpt", args.ckpt), ("--lora", args.lora)):
            if path is not None and not path.is_file():
                raise DemoError(f"{what} {path}: no such file")
        if args.size % 8 or not 64 <= args.size <= 4096:
            raise DemoError(f"--size {args.size}: use a multiple of 8 from 64 to 4096")
        port = check_port(args.port)
        tree = find_comfyui()
        base = args.out.expanduser().resolve()
        ckpt_name, lora_name = prepare_base_dir(base, args.ckpt, args.lora)
        graph = prepare_graph(load_workflow(), ckpt_name, args.size, args.seed, lora_name)

        gpu = None if args.cpu else accelerator()
        say(f"device: {gpu}" if gpu else "device: CPU" + ("" if args.cpu else " (no GPU found)"))
        server = Server(tree, base, port, cpu=gpu is None)
        start_s = server.start(timeout=180)
        say(f"ComfyUI ready after {start_s:.1f} s ({server.how}); {pack_import_time(server.log_text())}")
        info = server.get("/object_info/LCMTimesteps")
        if "LCMTimesteps" not in info:
            raise DemoError(f"ComfyUI did not load the pack; see {server.log_path}")

        say(f"running {WORKFLOW.name}: {ckpt_name}{' + ' + lora_name if lora_name else ''}, "
            f"{args.size}x{args.size}, seeds {args.seed} and {args.seed + 1}")
        wall = time.monotonic()
        entry, node_times = run_prompt(server, graph, args.timeout)
        wall = time.monotonic() - wall
        images = saved_images(base, entry)
        for image in images:
            say(f"saved {image}")

        steps = next(int(graph[n]["inputs"]["steps"]) for n in nodes_of(graph, "LCMTimesteps"))
        plot_s = time.monotonic()
        table = schedules(tree, steps)
        plot = plot_schedules(table, steps, base / f"lcm_schedules_{steps}steps.png")
        plot_s = time.monotonic() - plot_s
        say(f"\n{steps}-step timesteps:")
        for label, rows in table.items():
            for name, (timesteps, _) in rows.items():
                say(f"  {name:28s} {', '.join(timesteps):28s} {label}")
        say(f"plot: {plot}")

        say("\ntimings:")
        say(f"  server start ({server.how}): {start_s:.1f} s")
        executed = execution_seconds(entry)
        say(f"  prompt (txt2img + img2img): {executed if executed is not None else wall:.2f} s as ComfyUI "
            f"reports it, {wall:.2f} s queue to done")
        for label, seconds in node_times:
            if seconds >= 0.05:
                say(f"    node {label}: {seconds:.2f} s")
        say(f"  schedule plot (imports ComfyUI in this process): {plot_s:.1f} s")
        if len(images) != 2:
            raise DemoError(f"expected 2 images, ComfyUI saved {len(images)}", code=1)
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
