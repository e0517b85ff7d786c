#!/usr/bin/env python3
"""Pictures of the example workflows as ComfyUI's own front end draws them.

    make screenshots                       # every example_workflows/*.json
    python scripts/screenshot_workflows.py [NAME ...] [--scale 1.0]

Starts a ComfyUI server with the pack (comfy_host), opens its front end in headless
Chromium (tests/comfy_browser.py, the code the browser tests use), opens each workflow
file, frames the whole graph (nodes, groups, notes) with only the canvas showing, and
writes:

- docs/<name>.png: the README's picture;
- example_workflows/<name>.jpg: the thumbnail ComfyUI's templates browser shows beside
  the workflow (the same picture, smaller, as JPEG).

Needs Chromium (scripts/setup_env.sh installs Debian's) and the environment of `make test`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

import comfy_browser  # noqa: E402
import comfy_host  # noqa: E402

DOCS = REPO_ROOT / "docs"
THUMBNAIL_WIDTH = 800
JPEG_QUALITY = 88


def workflow_names() -> list[str]:
    return sorted(path.stem for path in comfy_host.EXAMPLE_WORKFLOWS.glob("*.json"))


def write_thumbnail(picture: Path, thumbnail: Path) -> None:
    from PIL import Image

    with Image.open(picture) as image:
        image = image.convert("RGB")
        height = round(image.height * THUMBNAIL_WIDTH / image.width)
        image.resize((THUMBNAIL_WIDTH, height), Image.LANCZOS).save(thumbnail, "JPEG", quality=JPEG_QUALITY,
                                                                     optimize=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="workflows to draw (default: every example workflow)")
    parser.add_argument("--scale", type=float, default=1.0, help="canvas zoom of the pictures (default 1.0)")
    args = parser.parse_args(argv)
    names = args.names or workflow_names()
    unknown = sorted(set(names) - set(workflow_names()))
    if unknown:
        parser.error(f"no example_workflows/<name>.json for {unknown}")
    try:
        comfy_browser.chromium_path()
    except comfy_browser.BrowserUnavailable as err:
        print(f"screenshot_workflows: {err}", file=sys.stderr)
        return 2
    DOCS.mkdir(exist_ok=True)
    # The templates browser asks for every template's thumbnail; a new workflow has none until
    # this script has written it, and that one 404 is expected.
    new_thumbnails = {f"/{comfy_host.PACK_FOLDER}/{name}.jpg" for name in names
                      if not (comfy_host.EXAMPLE_WORKFLOWS / f"{name}.jpg").is_file()}
    with comfy_host.comfy_server() as server, comfy_browser.BrowserSession() as browser:
        page = browser.open(server.url, settings=comfy_browser.PICTURE_SETTINGS)
        page.prepare_for_pictures()
        for name in names:
            source = comfy_host.EXAMPLE_WORKFLOWS / f"{name}.json"
            page.open_file(source)
            width, height = page.frame_graph(scale=args.scale)
            picture = DOCS / f"{name}.png"
            page.screenshot(picture)
            write_thumbnail(picture, source.with_suffix(".jpg"))
            print(f"wrote {picture.relative_to(REPO_ROOT)} ({width}x{height}) and "
                  f"{source.with_suffix('.jpg').relative_to(REPO_ROOT)}")
        problems = [entry for entry in page.console.unexplained()
                    if not any((entry.url or "").endswith(thumbnail) for thumbnail in new_thumbnails)]
    if problems:
        print("screenshot_workflows: console errors while drawing:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
