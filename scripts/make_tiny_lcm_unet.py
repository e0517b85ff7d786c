#!/usr/bin/env python3
"""Write a tiny full-LCM UNet (with the guidance embedding) that ComfyUI detects as SD1.5.

    LCM_COMFYUI=/path/to/ComfyUI python scripts/make_tiny_lcm_unet.py PATH [--seed N] [--no-cond-proj]

or, from Python, ``tiny_lcm_unet(seed)`` -> (diffusers UNet2DConditionModel, SD-layout state dict).

Random weights: images are noise. The same weights run in diffusers (``time_cond_proj_dim`` =
256, as LCM_Dreamshaper_v7 / lcm-sdxl / lcm-ssd-1b) and, through ``LCMUNetLoader`` from
models/diffusion_models, in ComfyUI, for parity tests and demos with no download.

Sizes: ComfyUI only detects an SD-layout UNet file as SD1.5 with model_channels 320 and
context_dim 768 (HOST.md); the rest shrinks to one level with one res block and one
transformer block and no middle block (18.8M parameters, 75 MB in float32). diffusers-layout
files must match a full known architecture (860M for SD1.5), so the file is SD layout
(``model.diffusion_model.*``, what ComfyUI's own ModelSave writes) with the cond_proj weight
under diffusers' name ``model.diffusion_model.time_embedding.cond_proj.weight``, as
SD-layout LCM single files carry it. Needs torch, diffusers, safetensors and a ComfyUI tree
(for its diffusers -> SD key map, ``comfy.utils.unet_to_diffusers``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

_TESTS = str(Path(__file__).resolve().parents[1] / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

import comfy_host  # noqa: E402 - after the tests folder is on sys.path

logger = logging.getLogger(__name__)

PREFIX = "model.diffusion_model."
COND_PROJ_KEY = "time_embedding.cond_proj.weight"  # diffusers' name
TIME_COND_PROJ_DIM = 256  # LCM_Dreamshaper_v7, lcm-sdxl, lcm-ssd-1b

# diffusers UNet2DConditionModel config (attention_head_dim 8 is SD1.5's 8 heads).
LCM_UNET_DIFFUSERS: dict[str, Any] = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(320,),
    down_block_types=("CrossAttnDownBlock2D",),
    up_block_types=("CrossAttnUpBlock2D",),
    mid_block_type=None,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    time_cond_proj_dim=TIME_COND_PROJ_DIM,
)

# The same network in ComfyUI's terms (what comfy.model_detection reports for the file).
LCM_UNET_COMFY: dict[str, Any] = dict(
    comfy_host.TINY_UNET_COMFY,
    model_channels=320,
    num_res_blocks=[1],
    transformer_depth=[1],
    transformer_depth_output=[1, 1],
    channel_mult=[1],
    transformer_depth_middle=-2,  # no middle block
    context_dim=768,
)


def tiny_lcm_unet(seed: int = 0, cond_proj: bool = True) -> tuple[Any, dict[str, Any]]:
    """(diffusers UNet, SD-layout float32 state dict) with the same seeded weights, eval mode on the CPU."""
    from diffusers import UNet2DConditionModel

    c = comfy_host.import_comfy()
    unet = UNet2DConditionModel(**LCM_UNET_DIFFUSERS)
    comfy_host.seeded_init_(unet, seed)
    unet = unet.train(False).requires_grad_(False)
    key_map = c.utils.unet_to_diffusers(LCM_UNET_COMFY)  # diffusers key -> SD key
    dsd = unet.state_dict()
    unmapped = sorted(set(dsd) - set(key_map) - {COND_PROJ_KEY})
    if unmapped:
        raise comfy_host.ComfyHostError(f"diffusers keys with no ComfyUI name: {unmapped[:5]}")
    sd = {PREFIX + key_map[k]: v.detach().clone().contiguous() for k, v in dsd.items() if k in key_map}
    if cond_proj:
        sd[PREFIX + COND_PROJ_KEY] = dsd[COND_PROJ_KEY].detach().clone().contiguous()
    return unet, sd


def make_tiny_lcm_unet(path: str | Path, seed: int = 0, cond_proj: bool = True) -> Path:
    """Write the SD-layout file to ``path`` (parent folders are created); returns the path."""
    from safetensors.torch import save_file

    start = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _, sd = tiny_lcm_unet(seed, cond_proj)
    save_file(sd, str(path), metadata={"format": "pt", "lcm_multistep_tiny_lcm_unet_seed": str(seed)})
    logger.info("wrote %s: %d tensors, %.1fM parameters in %.1f s", path, len(sd),
                sum(t.numel() for t in sd.values()) / 1e6, time.perf_counter() - start)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="output .safetensors file (e.g. ComfyUI/models/diffusion_models/...)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--no-cond-proj", action="store_true", help="leave the guidance embedding out (not a full LCM)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_tiny_lcm_unet(args.path, args.seed, cond_proj=not args.no_cond_proj)


if __name__ == "__main__":
    main()
