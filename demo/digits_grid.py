#!/usr/bin/env python3
"""A labelled sample grid of the embedded digit models (PNG).

    python demo/digits_grid.py OUT.png [--models DIR] [--seeds 4] [--comfyui TREE]

Rows: digits 0-9. Column groups: the LCM student with the pack's LCMScheduler at 1, 2 and 4 steps
(cfg 1), and the teacher with 50 deterministic DDIM steps at its distillation CFG scale; one column
per seed. Same sampling code as train_digits.py's evaluation.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train_digits.py, before torch loads

import torch  # noqa: E402
import train_digits  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

CELL = 40  # pixels per 8x8 digit (nearest neighbour, x5)
PAD = 3  # white between digits
GAP = 12  # white between column groups
LABEL_W = 24
HEADER_H = 30


def render(columns: List[Tuple[str, torch.Tensor]], seeds: int) -> Image.Image:
    """columns: (group title, images (10 * seeds, 1, 8, 8) in [-1, 1], digit-major)."""
    width = LABEL_W + len(columns) * (seeds * (CELL + PAD) + GAP)
    height = HEADER_H + 10 * (CELL + PAD)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for digit in range(10):
        draw.text((8, HEADER_H + digit * (CELL + PAD) + CELL // 2 - 6), str(digit), fill="black", font=font)
    for g, (title, images) in enumerate(columns):
        x0 = LABEL_W + g * (seeds * (CELL + PAD) + GAP)
        draw.text((x0 + 2, 8), title, fill="black", font=font)
        grey = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0]
        for digit in range(10):
            for s in range(seeds):
                tile = Image.fromarray(grey[digit * seeds + s].numpy(), "L").resize((CELL, CELL), Image.NEAREST)
                canvas.paste(tile.convert("RGB"), (x0 + s * (CELL + PAD), HEADER_H + digit * (CELL + PAD)))
    return canvas


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--models", type=Path, default=train_digits.HERE / "lcm_digits" / "models")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--comfyui", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model_mod, lcm_core = train_digits.import_modules(args.comfyui)
    maths = train_digits.DiffusionMaths(lcm_core)
    teacher, student, table, _ = train_digits.read_back(model_mod, args.models)
    report = json.loads((args.models / "train_report.json").read_text(encoding="utf-8"))
    guidance = float(report["settings"]["guidance"])
    wanted = torch.arange(10).repeat_interleave(args.seeds)
    context = model_mod.context_for(wanted, table)
    null_context = table[model_mod.NULL_ROW].expand(len(wanted), 1, -1)
    columns = []
    for steps in (1, 2, 4):
        latents = train_digits.sample_lcm(student, lcm_core, context, steps, torch.Generator().manual_seed(1))
        columns.append((f"LCM student, {steps} step{'s' if steps > 1 else ''}", model_mod.unpack(latents)))
    latents = train_digits.sample_ddim(teacher, maths, context, null_context, guidance, 50,
                                       torch.Generator().manual_seed(1))
    columns.append((f"teacher, DDIM 50, cfg {guidance:g}", model_mod.unpack(latents)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    render(columns, args.seeds).save(args.out)
    logging.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
