"""LCMTimesteps: diffusers' LCM (or TCD) timesteps as ComfyUI SIGMAS (like SDTurboScheduler)."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..lcm_core import (
    LCMConfig,
    StrengthMode,
    alphas_cumprod,
    custom_timesteps,
    lcm_timesteps,
    sigmas_from_alphas_cumprod,
    tcd_timesteps,
)
from . import host
from .config_node import LCM_CONFIG

_STRENGTH_MODES = [mode.value for mode in StrengthMode]
# Whose set_timesteps the node reproduces; "lcm" first: it is the default, and saved workflows
# from before the input existed mean it.
SCHEDULERS = {"lcm": lcm_timesteps, "tcd": tcd_timesteps}


def list_items(text: str) -> List[str]:
    """The items of a typed list: '[999, 759 499]' (commas, semicolons, spaces or new lines, brackets optional)."""
    return [item for item in re.split(r"[\s,;]+", text.strip().strip("[]")) if item]


def parse_timestep_list(text: str) -> Optional[List[int]]:
    """'999, 759, 499, 259' (commas, spaces or new lines) -> [999, 759, 499, 259]; blank -> None."""
    items = list_items(text)
    if not items:
        return None
    try:
        return [int(item) for item in items]
    except ValueError:
        raise ValueError(
            f"LCMTimesteps custom_timesteps: {text.strip()!r} is not a list of integers; write descending "
            "training timesteps separated by commas, e.g. 999, 759, 499, 259") from None


def schedule_timesteps(config: LCMConfig, steps: int, strength: float, original_inference_steps: int = 0,
                       custom: str = "", strength_mode: str = StrengthMode.LCM_GRID.value,
                       scheduler: str = "lcm") -> Tuple[int, ...]:
    """The integer timesteps diffusers' LCMScheduler (or TCDScheduler).set_timesteps gives for these node inputs.

    original_inference_steps 0 means "not passed": the config's. TCD treats a passed value as
    diffusers does, as the switch to its dense grid.
    """
    original = original_inference_steps or None
    try:
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
        custom_list = parse_timestep_list(custom or "")
        if custom_list is not None:
            return custom_timesteps(config, custom_list, original, strength,
                                    dense=scheduler == "tcd" and original is not None)
        return SCHEDULERS[scheduler](config, steps, original, strength, StrengthMode(strength_mode))
    except ValueError as error:
        message = str(error)
        if not message.startswith("LCMTimesteps"):
            which = "" if scheduler == "lcm" else f", scheduler={scheduler}"
            message = f"LCMTimesteps (steps={steps}, strength={strength}, original_inference_steps=" \
                      f"{original_inference_steps or config.original_inference_steps}{which}): {message}"
        raise ValueError(message) from error


class LCMTimesteps:
    """LCM timesteps for SamplerCustom / SamplerCustomAdvanced, as sigmas ending in 0."""

    DESCRIPTION = (
        "The timesteps of diffusers' LCMScheduler.set_timesteps (or TCDScheduler's, with scheduler tcd) as SIGMAS "
        "(ending in 0) for SamplerCustom and SamplerCustomAdvanced. strength < 1 is img2img: by default it shrinks "
        "the LCM distillation grid as the LCM pipelines do (4 steps at 0.5: 499, 379, 259, 139); strength_mode "
        "drop_leading gives the SD img2img meaning (499, 259), which is what diffusers' SD / SDXL img2img "
        "pipelines give TCD. Use it with SamplerCustom(add_noise=True) on the previous pass's LATENT.")
    CATEGORY = "sampling/custom_sampling/lcm"
    SEARCH_ALIASES = ["lcm scheduler", "lcm sigmas", "lcm timesteps", "latent consistency", "img2img strength"]
    FUNCTION = "get_sigmas"
    RETURN_TYPES = ("SIGMAS", "STRING")
    RETURN_NAMES = ("sigmas", "timesteps")
    OUTPUT_TOOLTIPS = (
        "Noise levels of the LCM timesteps followed by 0 (float32, CPU).",
        "The integer training timesteps, comma separated, as diffusers' scheduler.timesteps.",
    )

    @classmethod
    def INPUT_TYPES(cls) -> Dict[str, Any]:
        return {
            "required": {
                "config": (LCM_CONFIG, {"tooltip": "From LCMSchedulerConfig."}),
                "steps": ("INT", {"default": 4, "min": 1, "max": 1000,
                                  "tooltip": "Inference steps (LCM: 1 to 8); at most original_inference_steps."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                       "tooltip": "1.0 for txt2img; below 1 for img2img (how much of the noise "
                                                  "schedule to run)."}),
            },
            "optional": {
                "original_inference_steps": ("INT", {"default": 0, "min": 0, "max": 10000,
                                             "tooltip": "Distillation grid size; 0 uses the config's. With "
                                                        "scheduler tcd a nonzero value is passed to "
                                                        "TCDScheduler.set_timesteps, which then picks from all "
                                                        "training timesteps and only caps the steps with it."}),
                "custom_timesteps": ("STRING", {"default": "", "multiline": False,
                                     "tooltip": "Descending training timesteps, e.g. 999, 759, 499, 259; "
                                                "overrides steps. strength then drops leading steps."}),
                "strength_mode": (_STRENGTH_MODES, {"default": StrengthMode.LCM_GRID.value,
                                  "tooltip": "lcm_grid: the LCM pipelines' strength (shrink the grid). "
                                             "drop_leading: the SD img2img pipelines' strength (drop the "
                                             "first steps of the full schedule), also with TCD."}),
                "model": ("MODEL", {"tooltip": "When connected, sigmas come from this model's own noise table "
                                               "(exact for any model sampling patch)."}),
                "scheduler": (list(SCHEDULERS), {"default": "lcm",
                              "tooltip": "lcm: LCMScheduler's timesteps (for LCMSampler). tcd: TCDScheduler's "
                                         "(for TCDSampler): the same unless original_inference_steps is set."}),
            },
        }

    def get_sigmas(self, config: LCMConfig, steps: int, strength: float, original_inference_steps: int = 0,
                   custom_timesteps: str = "", strength_mode: str = StrengthMode.LCM_GRID.value,
                   model: Any = None, scheduler: str = "lcm") -> Tuple[torch.Tensor, str]:
        timesteps = schedule_timesteps(config, steps, strength, original_inference_steps, custom_timesteps,
                                       strength_mode, scheduler)
        if model is not None:
            sigmas = host.model_sigmas(model, timesteps)
        else:
            sigmas = sigmas_from_alphas_cumprod(alphas_cumprod(config))[list(timesteps)]
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
        return (sigmas, ", ".join(str(t) for t in timesteps))
