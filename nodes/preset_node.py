"""LCMPreset: a model family's sourced settings as SAMPLER and SIGMAS, so SamplerCustom needs one node."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from ..lcm_core import LCMConfig
from .config_node import LCM_CONFIG, with_model_fields
from .presets import PRESETS, PRESETS_BY_NAME, TCD, Preset
from .sampler import LCMSampler, TCDSampler
from .timesteps_node import LCMTimesteps

_NODE = "LCMPreset"


def preset_steps(preset: Preset, steps: int) -> Tuple[int, str]:
    """(steps, custom timesteps text) for the node's ``steps`` input; 0 means the preset's."""
    if not preset.timesteps:
        return (steps or preset.steps), ""
    if steps not in (0, len(preset.timesteps)):
        raise ValueError(
            f"{_NODE} steps={steps}: the preset {preset.name!r} runs its card's timesteps "
            f"{', '.join(map(str, preset.timesteps))} ({len(preset.timesteps)} step"
            f"{'s' if len(preset.timesteps) != 1 else ''}); set steps to 0 or {len(preset.timesteps)}, or use "
            "LCMTimesteps for other schedules")
    return len(preset.timesteps), ", ".join(map(str, preset.timesteps))


class LCMPreset:
    """One model family's scheduler settings, each value from its official model card."""

    DESCRIPTION = (
        "The scheduler settings a few-step model family's official model card uses (LCM-LoRA, full LCM UNets, "
        "DMD2, Hyper-SD, TCD-LoRA, AnimateLCM) as a SAMPLER and SIGMAS for SamplerCustom: diffusers' LCMScheduler "
        "or TCDScheduler with the card's steps, timesteps, gamma and config. Also gives the cfg the card implies "
        "(wire it into SamplerCustom's cfg, or type it) and a line naming the source. The README lists every "
        "preset with its source.")
    CATEGORY = "sampling/custom_sampling/lcm"
    SEARCH_ALIASES = ["lcm preset", "dmd2", "hyper-sd", "tcd lora", "animatelcm", "lcm lora", "few step preset"]
    FUNCTION = "get_preset"
    RETURN_TYPES = ("SAMPLER", "SIGMAS", LCM_CONFIG, "FLOAT", "STRING")
    RETURN_NAMES = ("sampler", "sigmas", "config", "cfg", "about")
    OUTPUT_TOOLTIPS = (
        "LCMSampler or TCDSampler with the preset's settings.",
        "The preset's timesteps as sigmas ending in 0 (from the model's own table when a model is connected).",
        "The LCM_CONFIG the preset uses (for LCMTimesteps or another sampler node).",
        "The cfg to use in SamplerCustom (1.0: no CFG pass, what the cards' guidance_scale 0 means).",
        "What the preset runs and the model card it comes from.",
    )

    @classmethod
    def INPUT_TYPES(cls) -> Dict[str, Any]:
        return {
            "required": {
                "preset": ([preset.name for preset in PRESETS], {
                    "default": PRESETS[0].name,
                    "tooltip": "The model family you have; each preset follows its official model card (see the "
                               "about output and the README)."}),
                "steps": ("INT", {"default": 0, "min": 0, "max": 1000,
                                  "tooltip": "0: the card's steps. Presets with the card's own timestep list (DMD2, "
                                             "Hyper-SDXL 1-step UNet) take only 0 or that list's length."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                       "tooltip": "1.0 for txt2img; below 1 for img2img, as in LCMTimesteps."}),
            },
            "optional": {
                "model": ("MODEL", {"tooltip": "When connected, the noise schedule and prediction type come from the "
                                               "model and the sigmas from its own table (exact for any model "
                                               "sampling patch)."}),
            },
        }

    def get_preset(self, preset: str, steps: int, strength: float,
                   model: Any = None) -> Tuple[Any, torch.Tensor, LCMConfig, float, str]:
        chosen = PRESETS_BY_NAME.get(preset)
        if chosen is None:
            raise ValueError(f"{_NODE} preset={preset!r}: not a preset; choose one of {', '.join(PRESETS_BY_NAME)}")
        config = with_model_fields(LCMConfig(**chosen.config), model, _NODE)
        count, custom = preset_steps(chosen, steps)
        scheduler = "tcd" if chosen.scheduler == TCD else "lcm"
        sigmas, _ = LCMTimesteps().get_sigmas(config, count, strength, custom_timesteps=custom, model=model,
                                              scheduler=scheduler)
        if chosen.scheduler == TCD:
            (sampler,) = TCDSampler().get_sampler(config, chosen.gamma)
        else:
            (sampler,) = LCMSampler().get_sampler(config)
        return (sampler, sigmas, config, chosen.cfg, chosen.about())
