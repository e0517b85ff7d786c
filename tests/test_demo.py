"""scripts/demo.py's checks before anything starts: broken model files, the make variables its
messages name, a checkpoint without a LoRA. No server: each of these is answered before one starts
(tests/test_workflows.py runs the demo itself against a real ComfyUI)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_host import REPO_ROOT, load_script

demo = load_script("demo")


@pytest.fixture()
def good_file(tmp_path: Path) -> Path:
    """A real, small safetensors file (written by the safetensors library, not by the demo's reader)."""
    import numpy as np
    from safetensors.numpy import save_file

    path = tmp_path / "good.safetensors"
    save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, dtype=np.float16)}, str(path),
              metadata={"format": "pt"})
    return path


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_safetensors_reader_accepts_a_real_file_and_names_each_breakage(good_file: Path, tmp_path: Path) -> None:
    assert demo.safetensors_problem(good_file) is None
    data = good_file.read_bytes()
    cases = {
        "empty": (b"", "the file is empty"),
        "short": (data[:5], "5 bytes is too short"),
        "truncated": (data[:-3], f"needs {len(data)} bytes, the file has {len(data) - 3}: cut short"),
        "padded": (data + b"\0", "extra bytes at its end"),
        # A pickle (.ckpt) starts with 0x80 0x02..0x05: read as a length, far past the file's end.
        "pickle": (b"\x80\x04\x95" + bytes(61), "not a safetensors file (a .ckpt or .pt pickle?), or cut short"),
        "not-json": (b"\x04\x00\x00\x00\x00\x00\x00\x00abcd", "its header is not JSON"),
        "no-tensors": (b"\x02\x00\x00\x00\x00\x00\x00\x00{}", "lists no tensors"),
    }
    for name, (content, message) in cases.items():
        problem = demo.safetensors_problem(write(tmp_path / f"{name}.safetensors", content))
        assert problem is not None and message in problem, (name, problem)


def test_broken_model_files_are_refused_naming_the_file_and_the_setting(
        good_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = write(tmp_path / "empty.safetensors", b"")
    truncated = write(tmp_path / "lora.safetensors", good_file.read_bytes()[:-1])
    monkeypatch.delenv(demo.VIA_MAKE_ENV, raising=False)
    with pytest.raises(demo.DemoError, match=rf"^--ckpt {empty}: the file is empty\. The demo takes \.safetensors"):
        demo.check_inputs(demo.parse_args(["--ckpt", str(empty)]))
    with pytest.raises(demo.DemoError, match=rf"^--lora {truncated}: its header needs \d+ bytes.*cut short"):
        demo.check_inputs(demo.parse_args(["--ckpt", str(good_file), "--lora", str(truncated)]))
    monkeypatch.setenv(demo.VIA_MAKE_ENV, "1")
    with pytest.raises(demo.DemoError, match=rf"^CKPT={empty}: the file is empty"):
        demo.check_inputs(demo.parse_args(["--ckpt", str(empty)]))
    with pytest.raises(demo.DemoError, match=rf"^LORA={truncated}: "):
        demo.check_inputs(demo.parse_args(["--ckpt", str(good_file), "--lora", str(truncated)]))
    with pytest.raises(demo.DemoError, match=r"^LORA= needs CKPT=: "):
        demo.check_inputs(demo.parse_args(["--lora", str(good_file)]))
    with pytest.raises(demo.DemoError, match=rf"^CKPT={tmp_path / 'missing.safetensors'}: no such file$"):
        demo.check_inputs(demo.parse_args(["--ckpt", str(tmp_path / "missing.safetensors")]))


def test_a_checkpoint_without_a_lora_says_it_runs_alone(good_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(demo.VIA_MAKE_ENV, "1")
    (note,) = demo.check_inputs(demo.parse_args(["--ckpt", str(good_file), "--port", "0"]))
    assert note.startswith("CKPT= without LORA=: running good.safetensors alone, with no LoRA")
    assert "add LORA=/path/to/lcm-lora-sdv1-5.safetensors" in note
    monkeypatch.delenv(demo.VIA_MAKE_ENV)
    (note,) = demo.check_inputs(demo.parse_args(["--ckpt", str(good_file), "--port", "0"]))
    assert note.startswith("--ckpt without --lora: running good.safetensors alone") and "add --lora /path/" in note
    assert demo.check_inputs(demo.parse_args(["--ckpt", str(good_file), "--lora", str(good_file), "--port", "0"])) == []
    assert demo.check_inputs(demo.parse_args(["--port", "0"])) == []  # the digit demo


def test_make_demo_tells_the_script_and_a_busy_port_names_port(tmp_path: Path) -> None:
    """The command `make demo` runs sets the variable; the script run so names PORT=, before it
    writes anything or starts a server."""
    # Not the settings of a `make test` this runs under (MAKEFLAGS carries its command-line variables).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", demo.VIA_MAKE_ENV)}
    dry = subprocess.run(["make", "-n", "demo", "PORT=8190", "CKPT=model.safetensors"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL).stdout
    (line,) = [ln for ln in dry.splitlines() if "scripts/demo.py" in ln]
    assert line.startswith(f"{demo.VIA_MAKE_ENV}=1 ")
    assert '--ckpt "model.safetensors"' in line and '--port "8190"' in line
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "demo.py"), "--port", str(port), "--out",
                                 str(tmp_path)], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                                env={**env, demo.VIA_MAKE_ENV: "1"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (f"demo: port {port} on 127.0.0.1 is in use (another ComfyUI?); pass PORT=N "
                                     "for another, or PORT=0 for a free one")
    assert not (tmp_path / "custom_nodes").exists()


def test_an_empty_checkpoint_is_refused_before_anything_starts(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.safetensors", b"")
    out = tmp_path / "base"
    env = {k: v for k, v in os.environ.items() if k != demo.VIA_MAKE_ENV}
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "demo.py"), "--ckpt", str(empty), "--out",
                             str(out), "--port", "0"], capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL, env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"demo: --ckpt {empty}: the file is empty. The demo takes .safetensors files."
    assert not out.exists()
