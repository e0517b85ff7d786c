#!/usr/bin/env python3
"""Draw a UI-format ComfyUI workflow as a picture: its nodes where the editor puts them,
each with its outputs, and its links coloured by type.

    python scripts/render_workflow.py [WORKFLOW.json] [--out docs/workflow.png] [--thumbnail]

Writes the README's picture (docs/workflow.png) and, with --thumbnail, the JPEG that
ComfyUI's templates browser shows next to the workflow (same name, .jpg).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORKFLOW = REPO_ROOT / "example_workflows" / "lcm_txt2img_then_img2img.json"
PACK_NODES = {"LCMSchedulerConfig", "LCMTimesteps", "LCMSampler", "LCMUNetLoader", "LCMGuidanceEmbedding",
              "TCDSampler"}
TYPE_COLOURS = {"MODEL": "#b39ddb", "CLIP": "#ffd54f", "VAE": "#ef9a9a", "CONDITIONING": "#ffab91",
                "LATENT": "#f48fb1", "IMAGE": "#80cbc4", "SIGMAS": "#a5d6a7", "SAMPLER": "#90caf9",
                "LCM_CONFIG": "#ce93d8"}
HEADER = 26  # title bar height, in workflow units


def _label(node: dict) -> str:
    values = node.get("widgets_values") or []
    shown = [str(v) for v in values if not isinstance(v, bool) and v not in ("", "fixed", "randomize")][:3]
    if node["type"] == "LCMSchedulerConfig":
        shown = ["diffusers' LCMScheduler fields"]
    elif node["type"] == "LCMTimesteps":
        shown = [f"steps {values[0]}, strength {values[1]}"]
        if len(values) > 5 and values[5] != "lcm":
            shown[0] += f", {values[5]}"
    elif node["type"] == "TCDSampler":
        shown = [f"gamma {values[0]}"]
    elif node["type"] == "Note":
        shown = [node.get("title", "")]
    elif node["type"] == "SamplerCustom":
        shown = [f"add_noise, seed {values[1]}, cfg {values[3]}"]
    if node["type"].startswith("CLIPTextEncode"):
        shown = [str(values[0])[:28] + "..."] if values else []
    text = node["type"]
    if shown:
        text += "\n" + ", ".join(s if len(s) < 34 else s[:31] + "..." for s in shown)
    return text


def render(workflow: dict, out: Path, dpi: int = 110) -> Path:
    nodes = {node["id"]: node for node in workflow["nodes"]}
    heights = {nid: min(node["size"][1], 150) for nid, node in nodes.items()}
    x_min = min(n["pos"][0] for n in nodes.values()) - 40
    y_min = min(n["pos"][1] for n in nodes.values()) - 40
    x_max = max(n["pos"][0] + n["size"][0] for n in nodes.values()) + 40
    y_max = max(n["pos"][1] + heights[nid] for nid, n in nodes.items()) + 60
    fig, ax = plt.subplots(figsize=((x_max - x_min) / 110, (y_max - y_min) / 110))
    ax.set_xlim(x_min, x_max)
    ax.set_ylim(y_max, y_min)
    ax.axis("off")
    fig.patch.set_facecolor("#202124")

    def anchor(nid: int, slot: int, output: bool) -> tuple:
        node = nodes[nid]
        x = node["pos"][0] + (node["size"][0] if output else 0)
        return (x, node["pos"][1] + HEADER + 14 + 16 * slot)

    for _, source, source_slot, target, target_slot, kind in workflow["links"]:
        ax.add_patch(FancyArrowPatch(anchor(source, source_slot, True), anchor(target, target_slot, False),
                                     connectionstyle="arc3,rad=0.08", arrowstyle="-|>", mutation_scale=9,
                                     color=TYPE_COLOURS.get(kind, "#bdbdbd"), linewidth=1.4, alpha=0.85,
                                     zorder=1))
    for nid, node in nodes.items():
        x, y = node["pos"]
        width, height = node["size"][0], heights[nid]
        ours = node["type"] in PACK_NODES
        ax.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=2,rounding_size=8",
                                    facecolor="#35394a" if ours else "#353535",
                                    edgecolor="#7cb342" if ours else "#6d6d6d", linewidth=2 if ours else 1,
                                    zorder=2))
        ax.text(x + 8, y + 8, _label(node), color="white", fontsize=7, va="top", ha="left", zorder=3,
                fontweight="bold" if ours else "normal")
        for slot, output in enumerate(node.get("outputs") or []):
            ax.text(x + width - 6, anchor(nid, slot, True)[1], output["name"], color="#c0c0c0", fontsize=5.5,
                    va="center", ha="right", zorder=3)
    ax.text(x_min + 8, y_max - 18, "green frame: this pack's nodes; link colours: data types", color="#9e9e9e",
            fontsize=7, va="bottom")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, facecolor=fig.get_facecolor(), bbox_inches="tight")
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", nargs="?", type=Path, default=DEFAULT_WORKFLOW)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "workflow.png")
    parser.add_argument("--thumbnail", action="store_true", help="also write WORKFLOW with a .jpg suffix")
    args = parser.parse_args()
    workflow = json.loads(args.workflow.read_text(encoding="utf-8"))
    print(render(workflow, args.out))
    if args.thumbnail:
        print(render(workflow, args.workflow.with_suffix(".jpg"), dpi=60))


if __name__ == "__main__":
    main()
