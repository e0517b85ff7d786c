# LCM Multistep: developer entry points. Everything runs in a cached virtual
# environment with a real ComfyUI tree, both built outside the checkout by
# scripts/setup_env.sh (the first time on a machine about 3 minutes with torch's wheels at hand,
# 2 min 50 s measured on 2 cores; longer where pip downloads them; then instant).
#
#   make test    ruff, then the whole pytest suite against the real ComfyUI host
#   make test-browser FRONTEND=1.58.1   tests/test_browser.py on that comfyui-frontend-package (see below)
#   make lint    ruff + the ASCII-only check
#   make setup   build (or find) the environment and print where it is
#   make demo    scripts/demo.py; CKPT=, LORA=, PORT=, CPU=1 and ARGS="..." reach it
#   make run CMD="..."   any command inside the environment (its python first on PATH)
#   make workflows   scripts/make_workflows.py: rewrite example_workflows/ from their descriptions
#   make screenshots   scripts/screenshot_workflows.py: docs/<name>.png and the templates' thumbnails,
#                    example_workflows/<name>.jpg, from ComfyUI's own front end in headless Chromium
#   make bench   every benchmarks/bench_*.py (each exits non-zero when over its budget; the
#                quality table in its --quick form)
#   make quality benchmarks/bench_quality.py: the full quality table -> benchmarks/results/quality.json
#   make gpu-check  benchmarks/gpu_check.py: the CUDA checks (sync-free loop, speed at 512x512)
#   make pack    `comfy node pack` -> node.zip (what the Comfy Registry receives)
#   make check-install   scripts/check_install_paths.py: pip / comfy-cli / ComfyUI install paths

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:
.DEFAULT_GOAL := test

SETUP_ENV := bash scripts/setup_env.sh
PYTEST_ARGS ?=
# comfy-cli: no telemetry prompt, no telemetry, no update check, no TTY questions.
COMFY_QUIET := DO_NOT_TRACK=1 COMFY_NO_TELEMETRY=1 COMFY_NO_UPDATE_CHECK=1

# Sets $VENV and $COMFYUI in the recipe's shell. The assignment (not a bare
# `eval "$(...)"`) makes a failing setup stop the recipe. SETUP_ARGS: --chromium where a
# browser is needed (the browser tests, the screenshots); no other target runs apt.
SETUP_ARGS =
LOAD_ENV = env_lines="$$($(SETUP_ENV) $(SETUP_ARGS))"; eval "$$env_lines"; \
	export VENV COMFYUI LCM_COMFYUI="$$COMFYUI" LCM_COMFYUI_2024="$$COMFYUI_2024"

.PHONY: setup test test-browser lint demo run workflows screenshots bench quality gpu-check pack check-install

setup:
	$(SETUP_ENV)

lint:
	$(LOAD_ENV)
	"$$VENV/bin/ruff" check .
	# ASCII-only Python and TOML (ComfyUI on Windows reads sources as cp1252).
	files="$$(git ls-files -co --exclude-standard -- '*.py' '*.toml' 2>/dev/null || find . -path ./.git -prune -o \( -name '*.py' -o -name '*.toml' \) -print)"
	if [ -n "$$files" ] && LC_ALL=C grep -nP '[^\x00-\x7F]' $$files; then
	  echo "lint: the lines above hold non-ASCII characters" >&2
	  exit 1
	fi

# Target-specific, so `make test` also passes it to its prerequisite lint (harmless there).
test test-browser screenshots: SETUP_ARGS = --chromium

test: lint
	$(LOAD_ENV)
	# The full-size (860M) SD1.5 LCM UNet check of tests/test_lcm_unet.py: about 45 s and
	# 10 GB of memory; on by default, LCM_TEST_FULL_SIZE= (empty) turns it off.
	LCM_TEST_FULL_SIZE="$${LCM_TEST_FULL_SIZE-1}" "$$VENV/bin/python" -m pytest tests -v -rs $(PYTEST_ARGS)

# The browser suite on a chosen front end: FRONTEND=x.y.z is pip-installed once (no dependencies)
# into $LCM_CACHE/frontend-x.y.z and served with ComfyUI's --front-end-root ($LCM_FRONT_END_ROOT);
# no FRONTEND: the one the host pins. HOST_COMFYUI=<tree> HOST_PYTHON=<its python, with pytest and
# playwright> run it over another ComfyUI: 1.58.1 needs a host with /api/jobs (0.33.0 has it; on the
# bundled 0.3.75 its queue panel fails with 404s, which the suite reports).
#   make test-browser FRONTEND=1.58.1 HOST_COMFYUI=~/ComfyUI-0.33.0 HOST_PYTHON=~/venv-0.33.0/bin/python
test-browser:
	$(LOAD_ENV)
	if [ -n '$(FRONTEND)' ]; then
	  target="$${LCM_CACHE:-$$HOME/.cache/lcm-multistep}/frontend-$(FRONTEND)"
	  if [ ! -f "$$target/comfyui_frontend_package/static/index.html" ]; then
	    # Into a fresh folder first: an interrupted install never passes for a finished one.
	    rm -rf "$$target.partial"
	    "$$VENV/bin/python" -m pip install --quiet --no-deps --target "$$target.partial" \
	      'comfyui-frontend-package==$(FRONTEND)'
	    rm -rf "$$target" && mv "$$target.partial" "$$target"
	  fi
	  export LCM_FRONT_END_ROOT="$$target/comfyui_frontend_package/static"
	fi
	python="$(or $(HOST_PYTHON),$$VENV/bin/python)"
	$(if $(HOST_COMFYUI),export LCM_COMFYUI="$(HOST_COMFYUI)")
	LCM_TEST_FULL_SIZE= "$$python" -m pytest tests/test_browser.py -v -rs $(PYTEST_ARGS)

# make demo CKPT=~/models/sd15.safetensors LORA=~/models/lcm-lora-sdv1-5.safetensors PORT=8190
DEMO_ARGS = $(if $(CKPT),--ckpt "$(CKPT)") $(if $(LORA),--lora "$(LORA)") $(if $(PORT),--port "$(PORT)") \
	$(if $(CPU),--cpu) $(ARGS)

demo:
	$(LOAD_ENV)
	# LCM_DEMO_VIA_MAKE: its messages name CKPT=, LORA= and PORT= rather than the options they become.
	LCM_DEMO_VIA_MAKE=1 "$$VENV/bin/python" scripts/demo.py $(DEMO_ARGS)

run:
	# Checked by make, not by the shell: CMD may hold quotes of its own.
	$(if $(strip $(CMD)),,echo 'usage: make run CMD="python scripts/demo.py --help"' >&2; exit 2)
	$(LOAD_ENV)
	export PATH="$$VENV/bin:$$PATH"
	$(CMD)

workflows:
	$(LOAD_ENV)
	"$$VENV/bin/python" scripts/make_workflows.py

screenshots:
	$(LOAD_ENV)
	"$$VENV/bin/python" scripts/screenshot_workflows.py

bench:
	$(LOAD_ENV)
	shopt -s nullglob
	benches=(benchmarks/bench_*.py)
	if [ $${#benches[@]} -eq 0 ]; then echo "bench: no benchmarks/bench_*.py" >&2; exit 1; fi
	for bench in "$${benches[@]}"; do
	  echo "== $$bench"
	  # The full quality table takes minutes (make quality); its quick form checks the same gate.
	  if [[ "$$bench" == */bench_quality.py ]]; then "$$VENV/bin/python" "$$bench" --quick; else "$$VENV/bin/python" "$$bench"; fi
	done

quality:
	$(LOAD_ENV)
	"$$VENV/bin/python" benchmarks/bench_quality.py

gpu-check:
	$(LOAD_ENV)
	"$$VENV/bin/python" benchmarks/gpu_check.py

pack:
	$(LOAD_ENV)
	$(COMFY_QUIET) "$$VENV/bin/comfy" --skip-prompt node validate < /dev/null
	$(COMFY_QUIET) "$$VENV/bin/comfy" --skip-prompt node pack < /dev/null
	"$$VENV/bin/python" -m zipfile -l node.zip

check-install:
	$(LOAD_ENV)
	"$$VENV/bin/python" scripts/check_install_paths.py --comfyui "$$COMFYUI" all
