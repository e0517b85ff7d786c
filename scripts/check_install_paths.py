"""Exercise every way the pack gets installed, with the real tools (no mocks).

1. core:     `pip install .` into a fresh venv that has only torch and numpy;
             `from lcm_core import LCMScheduler` works there and neither ComfyUI
             (`comfy`) nor diffusers is importable.
2. registry: `comfy node validate` passes with no warning, and `comfy node pack`
             archives only the pack's own files.
3. comfyui:  ComfyUI's main.py (--quick-test-for-ci) imports the pack, once
             unpacked from that archive and once as a plain copy of the checkout
             (after `pip install -r requirements.txt`).

Run it with the project's venv (scripts/setup_env.sh prints VENV and COMFYUI):

    $VENV/bin/python scripts/check_install_paths.py --comfyui $COMFYUI [core|registry|comfyui|all]

tests/test_packaging.py drives the same functions. Every check works on a copy of
the checkout in a temporary folder (what a clone of the current working tree would
hold), so nothing is ever written into the checkout. The torch + numpy venv for
check 1 is cached under $LCM_CACHE (default ~/.cache/lcm-multistep): hard links to
the files of this interpreter's own torch, numpy and their requirements (a few
seconds, no download, almost no disk; see torch_layer). Every run then gets a fresh,
empty venv layered over it with a .pth file, so the cache itself is never installed
into.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from comfy_host import import_times  # noqa: E402  (ComfyUI's start-up table, any version's log format)

PACK_DIR_NAME = "lcm-multistep"

# What a published archive may hold at its top level (files and folders).
ARCHIVE_ALLOWED_TOP = frozenset(
    {
        "__init__.py",
        "nodes",
        "lcm_core",
        "example_workflows",
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "requirements.txt",
    }
)
# What must never be in it (checked separately so a failure names the culprit).
ARCHIVE_FORBIDDEN_TOP = frozenset({"tests", ".ci", "scripts", "benchmarks", ".git", "Makefile"})

# comfy-cli never prompts, never sends telemetry and never checks PyPI for updates.
# (DO_NOT_TRACK short-circuits its consent prompt before it looks at the TTY.)
QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "COMFY_NO_TELEMETRY": "1",
    "COMFY_NO_UPDATE_CHECK": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_NO_INPUT": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}


class CheckFailed(AssertionError):
    """An install path did not work; the message carries the evidence."""


def _env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(QUIET_ENV)
    # A venv's python must not inherit another venv's identity.
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    if extra:
        env.update(extra)
    return env


def run(cmd: Sequence[str], cwd: Path, timeout: float, env: Optional[Dict[str, str]] = None) -> str:
    """Run a command with no stdin; return stdout+stderr, raise CheckFailed on failure."""
    try:
        proc = subprocess.run(
            [str(c) for c in cmd],
            cwd=str(cwd),
            env=env if env is not None else _env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        if isinstance(out, bytes):
            out = out.decode("utf-8", "replace")
        raise CheckFailed(f"timed out after {timeout:.0f} s: {' '.join(map(str, cmd))}\n{out[-4000:]}") from None
    if proc.returncode != 0:
        raise CheckFailed(f"exit code {proc.returncode}: {' '.join(map(str, cmd))}\n{proc.stdout[-6000:]}")
    return proc.stdout


# --------------------------------------------------------------------------- the checkout


def checkout_files(repo: Path = REPO) -> List[str]:
    """Relative paths a clone of the current working tree would hold.

    Tracked files plus untracked ones git does not ignore (so work not yet committed
    is checked too); every file but .git and caches where git is unavailable.
    """
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
        ).stdout.decode("utf-8")
        names = sorted({n for n in out.split("\0") if n and (repo / n).is_file()})
    except (OSError, subprocess.CalledProcessError):
        names = []
        for root, dirs, files in os.walk(repo):
            dirs[:] = [d for d in dirs if d not in {".git", "__pycache__", ".pytest_cache", ".ruff_cache"}]
            for f in files:
                names.append(Path(root, f).relative_to(repo).as_posix())
        names.sort()
    if not names:
        raise CheckFailed(f"found no files in {repo}")
    return names


def copy_checkout(dest: Path, repo: Path = REPO, git_commit: bool = True) -> Path:
    """Copy the checkout's files to dest; optionally make it a git repo with one commit.

    comfy-cli's pack archives `git ls-files`, so a committed copy is what a developer
    (or the Registry publish action) packs from a clean clone.
    """
    dest.mkdir(parents=True, exist_ok=False)
    for name in checkout_files(repo):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, target)
    if git_commit:
        git = ["git", "-c", "user.name=check", "-c", "user.email=check@localhost", "-c", "commit.gpgsign=false"]
        run(git + ["init", "-q"], dest, 60)
        run(git + ["add", "-A"], dest, 60)
        run(git + ["commit", "-q", "-m", "checkout copy"], dest, 60)
    return dest


# --------------------------------------------------------------------------- 1. core venv


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _site_packages(python: Path) -> Path:
    out = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], Path(tempfile.gettempdir()), 60)
    return Path(out.strip().splitlines()[-1])


def pinned(requirement: str, req_file: Path = REPO / "requirements-dev.txt") -> str:
    """The `name==version` line for a package in a requirements file."""
    for line in req_file.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if re.match(rf"^{re.escape(requirement)}\s*==", line, re.IGNORECASE):
            return line.replace(" ", "")
    raise CheckFailed(f"{req_file.name} pins no {requirement}==")


def cache_dir() -> Path:
    return Path(os.environ.get("LCM_CACHE") or Path.home() / ".cache" / "lcm-multistep")


# What the layer holds: torch and numpy as the host has them, plus pip to install the pack with.
LAYER_ROOTS = ("torch", "numpy", "pip")


def layer_distributions(site: Path) -> List[importlib.metadata.Distribution]:
    """LAYER_ROOTS and everything they require on this platform, with the extras they ask for
    (torch asks for cuda-toolkit[cublas,cudart,...]), as installed in `site`: what
    `pip install torch numpy` would have put in an empty venv."""
    from packaging.requirements import Requirement

    found: Dict[str, importlib.metadata.Distribution] = {}
    done = set()  # (name, extra) pairs followed; "" is the distribution itself
    todo = [(root, "") for root in LAYER_ROOTS]
    while todo:
        name, extra = todo.pop()
        name = re.sub(r"[-_.]+", "-", name).lower()
        if (name, extra) in done:
            continue
        done.add((name, extra))
        if name not in found:
            dist = next(iter(importlib.metadata.distributions(name=name, path=[str(site)])), None)
            if dist is None:
                raise CheckFailed(f"{name} is not installed in {site}; run scripts/setup_env.sh")
            found[name] = dist
        for line in found[name].requires or []:
            req = Requirement(line)
            # Platform markers hold or not here; `extra == "x"` holds in the pass for extra x.
            if req.marker is None or req.marker.evaluate({"extra": extra}):
                todo += [(req.name, "")] + [(req.name, wanted) for wanted in req.extras]
    return [found[name] for name in sorted(found)]


def _link_or_copy(source: Path, target: Path) -> bool:
    """Hard-link source to target (no second copy on disk); copy where the file system cannot.
    True when linked."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
        return True
    except OSError:
        shutil.copy2(source, target)
        return False


def torch_layer(cache: Optional[Path] = None, log=print) -> Path:
    """A cached venv holding only torch and numpy (and what they require, and pip).

    Its files are hard links to this interpreter's own installed ones (the project's venv, whose
    torch is the pin of requirements-dev.txt), so it costs a few seconds and almost no disk, and
    needs no download; the check proves the same as with a separate install because the layer
    holds the same distributions, files and metadata that `pip install torch numpy` gives, and
    nothing else (no comfy, no diffusers). Keyed by this venv's path and those versions.
    """
    cache = cache or cache_dir()
    main_site = Path(sysconfig.get_path("purelib"))
    dists = layer_distributions(main_site)
    versions = [f"{d.metadata['Name']}=={d.version}" for d in dists]
    if pinned("torch").lower() not in {v.lower() for v in versions}:
        raise CheckFailed(f"this venv has {versions}, not requirements-dev.txt's {pinned('torch')}; "
                          "run scripts/setup_env.sh")
    key_src = "\n".join([*versions, sys.version, os.path.realpath(sys.prefix), "layer-v2"])
    key = hashlib.sha256(key_src.encode()).hexdigest()[:12]
    layer = cache / f"venv-torch-numpy-{key}"
    done = layer / ".complete"
    if done.exists() and _venv_python(layer).exists():
        return layer
    cache.mkdir(parents=True, exist_ok=True)
    lock = open(cache / f"{layer.name}.lock", "w")  # held until the layer is built
    try:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: no concurrent builds expected there
            pass
        if done.exists() and _venv_python(layer).exists():
            return layer
        log(f"building the torch + numpy venv {layer} from {main_site} (once; hard links, a few seconds)")
        shutil.rmtree(layer, ignore_errors=True)
        run([sys.executable, "-m", "venv", "--without-pip", layer], cache, 300)
        site = _site_packages(_venv_python(layer))
        linked = copied = 0
        for dist in dists:
            for file in dist.files or []:
                source = Path(dist.locate_file(file))
                # RECORD also names console scripts outside site-packages (../../../bin/torchrun)
                # and caches pip wrote after the fact; the layer needs neither.
                if file.parts[0] == ".." or not source.is_file():
                    continue
                if _link_or_copy(source, site / file):
                    linked += 1
                else:
                    copied += 1
        if copied:
            log(f"  {copied} files copied: the cache and {main_site} are on file systems without shared hard links")
        done.write_text("\n".join(versions) + "\n", encoding="utf-8")
        # Layers of other venvs (or of the old scheme, a second 5.5 GB install) are dead weight.
        for old in cache.glob("venv-torch-numpy-*"):
            if old != layer and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
                (cache / f"{old.name}.lock").unlink(missing_ok=True)
        return layer
    finally:
        lock.close()


_CORE_PROBE = r"""
import importlib.metadata as md, importlib.util as u, json, sys
from lcm_core import LCMScheduler
import lcm_core, numpy, torch
dist = md.distribution("lcm-multistep")
print("PROBE" + json.dumps({
    "lcm_core_file": lcm_core.__file__,
    "scheduler": LCMScheduler.__name__,
    "torch": torch.__version__,
    "numpy": numpy.__version__,
    "importable": {m: u.find_spec(m) is not None for m in ("comfy", "diffusers", "nodes", "comfy_cli", "folder_paths")},
    "files": sorted(str(f) for f in (dist.files or [])),
    "requires": dist.requires or [],
    "prefix": sys.prefix,
}))
"""


def check_core_install(workdir: Path, checkout: Path, layer: Optional[Path] = None) -> dict:
    """`pip install .` into a fresh venv over the torch layer; probe what it gives."""
    layer = layer or torch_layer()
    venv = workdir / "fresh-venv"
    # --without-pip: pip, torch and numpy all come from the layer through a .pth file.
    run([sys.executable, "-m", "venv", "--without-pip", venv], workdir, 120)
    py = _venv_python(venv)
    site = _site_packages(py)
    (site / "_torch_numpy_layer.pth").write_text(str(_site_packages(_venv_python(layer))) + "\n", encoding="utf-8")

    out = run([py, "-m", "pip", "install", checkout], workdir, 600)
    installed = re.findall(r"^Successfully installed (.*)$", out, re.MULTILINE)
    new = installed[-1].split() if installed else []
    if not any(n.startswith("lcm-multistep-") or n.startswith("lcm_multistep-") for n in new):
        raise CheckFailed(f"pip did not report installing lcm-multistep:\n{out[-3000:]}")
    bad = [n for n in new if re.match(r"(torch|torchvision|numpy|diffusers|comfy)", n, re.IGNORECASE)]
    if bad:
        raise CheckFailed(f"`pip install .` pulled in {bad}; the host owns those:\n{out[-3000:]}")

    probe_dir = workdir / "probe"  # an empty cwd: the checkout must not be on sys.path
    probe_dir.mkdir()
    out = run([py, "-c", _CORE_PROBE], probe_dir, 300)
    line = [ln for ln in out.splitlines() if ln.startswith("PROBE")]
    if not line:
        raise CheckFailed(f"the probe printed nothing:\n{out[-3000:]}")
    result = json.loads(line[-1][len("PROBE") :])
    result["pip_installed"] = new
    result["venv_site"] = str(site)
    return result


def core_problems(result: dict) -> List[str]:
    """What is wrong with a check_core_install() result (empty when it is right)."""
    problems = []
    if result.get("scheduler") != "LCMScheduler":
        problems.append("`from lcm_core import LCMScheduler` did not give LCMScheduler")
    if not Path(result["lcm_core_file"]).is_relative_to(Path(result["prefix"])):
        problems.append(f"lcm_core came from {result['lcm_core_file']}, not from the venv")
    for name in ("comfy", "diffusers", "nodes", "folder_paths"):
        if result["importable"].get(name):
            problems.append(f"`{name}` is importable in the core-only venv")
    tops = sorted({f.split("/", 1)[0] for f in result["files"]})
    extra = [t for t in tops if t != "lcm_core" and not re.fullmatch(r"lcm_multistep-[^/]+\.dist-info", t)]
    if extra or "lcm_core" not in tops:
        problems.append(f"the distribution should install lcm_core alone, not {tops}")
    return problems


# --------------------------------------------------------------------------- 2. registry


def comfy_cli(args: Sequence[str], cwd: Path, timeout: float = 180) -> str:
    """comfy-cli from this interpreter, non-interactive, offline-safe."""
    return run([sys.executable, "-m", "comfy_cli", "--skip-prompt", *args], cwd, timeout)


def check_validate(checkout: Path) -> str:
    out = comfy_cli(["node", "validate"], checkout)
    problems = [ln for ln in out.splitlines() if re.search(r"warning|error", ln, re.IGNORECASE)]
    if problems or "All validation checks passed" not in out:
        raise CheckFailed(f"`comfy node validate` was not clean:\n{out}")
    return out


def check_pack(checkout: Path) -> List[str]:
    """Run `comfy node pack`; return the archive's member names."""
    out = comfy_cli(["node", "pack"], checkout)
    archive = checkout / "node.zip"
    if not archive.is_file():
        raise CheckFailed(f"`comfy node pack` wrote no node.zip:\n{out}")
    if "Warning" in out:
        raise CheckFailed(f"`comfy node pack` warned:\n{out}")
    with zipfile.ZipFile(archive) as z:
        bad = z.testzip()
        if bad:
            raise CheckFailed(f"node.zip is corrupt at {bad}")
        return sorted(z.namelist())


def archive_problems(members: Sequence[str]) -> List[str]:
    """Members that are not the pack's own files (empty when the archive is right)."""
    problems = []
    tops = {m.split("/", 1)[0] for m in members}
    for m in members:
        top = m.split("/", 1)[0]
        if top in ARCHIVE_FORBIDDEN_TOP or top not in ARCHIVE_ALLOWED_TOP:
            problems.append(f"not part of the pack: {m}")
        elif "__pycache__" in m.split("/") or m.endswith((".pyc", ".pyo")):
            problems.append(f"cache file: {m}")
    for needed in ("__init__.py", "pyproject.toml", "README.md", "LICENSE", "requirements.txt", "lcm_core", "nodes"):
        if needed not in tops:
            problems.append(f"missing from the archive: {needed}")
    return problems


# --------------------------------------------------------------------------- 3. ComfyUI import


def run_comfyui_quick_test(comfyui: Path, base: Path, timeout: float = 300) -> str:
    """Start ComfyUI so it imports every custom node, then exits (--quick-test-for-ci)."""
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        comfyui / "main.py",
        "--cpu",
        "--quick-test-for-ci",
        "--disable-auto-launch",
        "--base-directory",
        base,
        "--database-url",
        "sqlite:///:memory:",
    ]
    return run(cmd, base, timeout)


def custom_node_imports(log: str) -> Dict[str, bool]:
    """ComfyUI's 'Import times for custom nodes' table: {folder path: imported?}."""
    return {path: imported for path, (_, imported) in import_times(log).items()}


def check_comfyui_import(comfyui: Path, base: Path, pack_dir: Path) -> str:
    """Assert ComfyUI imported pack_dir (a folder inside base/custom_nodes)."""
    log = run_comfyui_quick_test(comfyui, base)
    imports = custom_node_imports(log)
    key = next((p for p in imports if os.path.realpath(p) == os.path.realpath(pack_dir)), None)
    if key is None:
        raise CheckFailed(f"ComfyUI did not list {pack_dir} among its custom nodes:\n{log[-6000:]}")
    if not imports[key]:
        raise CheckFailed(f"ComfyUI: IMPORT FAILED for {pack_dir}:\n{log[-8000:]}")
    for marker in (f"Cannot import {key}", "Unable to parse pyproject.toml"):
        if marker in log:
            raise CheckFailed(f"ComfyUI logged {marker!r}:\n{log[-8000:]}")
    return log


def install_from_archive(members_zip: Path, base: Path) -> Path:
    """Unpack a `comfy node pack` archive the way the Registry installs it."""
    dest = base / "custom_nodes" / PACK_DIR_NAME
    dest.mkdir(parents=True)
    with zipfile.ZipFile(members_zip) as z:
        z.extractall(dest)
    return dest


def install_from_clone(checkout: Path, base: Path) -> Path:
    """A plain copy of the repo in custom_nodes/ (git clone), then its requirements."""
    dest = copy_checkout(base / "custom_nodes" / PACK_DIR_NAME, checkout, git_commit=False)
    run([sys.executable, "-m", "pip", "install", "-r", dest / "requirements.txt"], base, 600)
    return dest


# --------------------------------------------------------------------------- command line


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="*", default=["all"], choices=["all", "core", "registry", "comfyui"])
    parser.add_argument("--comfyui", type=Path, default=os.environ.get("LCM_COMFYUI"), help="ComfyUI tree")
    ns = parser.parse_args(argv)
    what = {"core", "registry", "comfyui"} if "all" in ns.what else set(ns.what)
    if "comfyui" in what and not ns.comfyui:
        parser.error("--comfyui (or LCM_COMFYUI) is needed for the comfyui check")

    with tempfile.TemporaryDirectory(prefix="lcm-install-") as tmp:
        tmp = Path(tmp)
        checkout = copy_checkout(tmp / "checkout")
        if "core" in what:
            r = check_core_install(tmp, checkout)
            problems = core_problems(r)
            if problems:
                raise CheckFailed("\n".join(problems))
            print(f"core: lcm_core from {r['lcm_core_file']}; pip installed {' '.join(r['pip_installed'])}")
        if "registry" in what or "comfyui" in what:
            check_validate(checkout)
            members = check_pack(checkout)
            problems = archive_problems(members)
            if problems:
                raise CheckFailed("\n".join(problems))
            print(f"registry: validate clean; node.zip holds {len(members)} files")
        if "comfyui" in what:
            base = tmp / "from-archive"
            check_comfyui_import(ns.comfyui, base, install_from_archive(checkout / "node.zip", base))
            base = tmp / "from-clone"
            check_comfyui_import(ns.comfyui, base, install_from_clone(checkout, base))
            print("comfyui: imported from the archive and from a clone")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckFailed as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
