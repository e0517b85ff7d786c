"""LCMPreset: a model family's sourced settings as SAMPLER and SIGMAS, so SamplerCustom needs one node."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from ..lcm_core import LCMConfig, alphas_cumprod, sigmas_from_alphas_cumprod
from . import host
from .config_node import LCM_CONFIG, with_model_fields
from .presets import FLOW_LCM, LCM, PRESETS, PRESETS_BY_NAME, TCD, Preset
from .sampler import LCMSampler, TCDSampler
from .timesteps_node import LCMTimesteps

_NODE = "LCMPreset"


def preset_steps(preset: Preset, steps: int) -> Tuple[int, str]:
    """(steps, custom timesteps text) for the node's ``steps`` input; 0 means the preset's."""
    count = preset.fixed_steps
    if not count:
        return (steps or preset.steps), ""
    if steps not in (0, count):
        schedule = (f"flow sigmas {', '.join(f'{s:g}' for s in preset.sigmas)}" if preset.is_flow else
                    f"timesteps {', '.join(map(str, preset.timesteps))}")
        raise ValueError(
            f"{_NODE} steps={steps}: the preset {preset.name!r} runs its source's {schedule} ({count} step"
            f"{'s' if count != 1 else ''}); set steps to 0 or {count}, or use "
            f"{'FlowMatchLCMTimesteps' if preset.is_flow else 'LCMTimesteps'} for other schedules")
    return count, ", ".join(map(str, preset.timesteps))


def check_family(preset: Preset, model: Any) -> None:
    """Refuse a model of another family than the preset's, naming both."""
    if model is None or not preset.families:
        return
    model_sampling = host.model_sampling_of(model)
    family = host.model_family(model)
    if family in preset.families and host.is_flow(model_sampling) == preset.is_flow:
        return
    kind = "flow-matching" if preset.is_flow else "discrete-timestep"
    raise ValueError(
        f"{_NODE} preset={preset.name!r}: made for {' / '.join(preset.families)} ({kind}) models, but the model is "
        f"{family or 'unknown'} ({host.describe_sampling(model_sampling)}); choose a preset for {family or 'it'} or "
        "connect the model the preset names")


def recipe_sigmas(preset: Preset, model: Any) -> torch.Tensor:
    """The sigmas of a flow or DDIM preset, ending in 0 (flow) or in t = 0's sigma (DDIM, as diffusers)."""
    if preset.is_flow:
        return torch.tensor([*preset.sigmas, 0.0], dtype=torch.float32)
    timesteps = [*preset.timesteps, 0]  # SD1.5 / SDXL configs: set_alpha_to_one false, so DDIM ends at t = 0
    if model is not None:
        return host.model_sigmas(model, timesteps)
    return sigmas_from_alphas_cumprod(alphas_cumprod(LCMConfig()))[timesteps].to(torch.float32)


def recipe_sampler(preset: Preset) -> Any:
    if preset.scheduler == FLOW_LCM:
        return LCMSampler().get_sampler(LCMConfig())[0]  # a flow model uses none of its fields
    import comfy.samplers

    return comfy.samplers.sampler_object(preset.scheduler)


class LCMPreset:
    """One model family's scheduler settings, each value from its official model card."""

    DESCRIPTION = (
        "The scheduler settings a few-step model family's official model card or inference code uses (LCM-LoRA, "
        "full LCM UNets, DMD2, Hyper-SD, TCD-LoRA, AnimateLCM; on flow models lightx2v and Wan2.2-Lightning, "
        "CausVid, rCM for Wan, Qwen-Image-Lightning) as a SAMPLER and SIGMAS for SamplerCustom: diffusers' "
        "LCMScheduler or TCDScheduler with the card's steps, timesteps, gamma and config, the pack's flow LCM step, "
        "or ComfyUI's own euler / ddim where the authors sample so, on the authors' timesteps. Also gives the cfg "
        "the source implies (wire it into SamplerCustom's cfg, or type it) and a line naming the source. "
        "docs/presets.md lists every preset with its source.")
    CATEGORY = "sampling/custom_sampling/lcm"
    SEARCH_ALIASES = ["lcm preset", "dmd2", "hyper-sd", "tcd lora", "animatelcm", "lcm lora", "few step preset",
                      "lightx2v", "wan lightning", "causvid", "rcm", "qwen-image-lightning"]
    FUNCTION = "get_preset"
    RETURN_TYPES = ("SAMPLER", "SIGMAS", LCM_CONFIG, "FLOAT", "STRING")
    RETURN_NAMES = ("sampler", "sigmas", "config", "cfg", "about")
    OUTPUT_TOOLTIPS = (
        "LCMSampler or TCDSampler with the preset's settings, or ComfyUI's euler / ddim where the source uses them.",
        "The preset's timesteps as sigmas (from the model's own table when a model is connected; a flow preset's "
        "sigmas are in the flow model's sigma space, [0, 1]).",
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
                                  "tooltip": "0: the card's steps. Presets with a fixed timestep or sigma list (DMD2, "
                                             "Hyper-SDXL 1-step UNet, the DDIM and flow presets) take only 0 or that "
                                             "list's length."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                       "tooltip": "1.0 for txt2img; below 1 for img2img, as in LCMTimesteps (LCM and "
                                                  "TCD presets only; the others run their fixed txt2img schedule)."}),
            },
            "optional": {
                "model": ("MODEL", {"tooltip": "When connected, the noise schedule and prediction type come from the "
                                               "model and the sigmas from its own table (exact for any model "
                                               "sampling patch); a preset for another model family is refused."}),
            },
        }

    def get_preset(self, preset: str, steps: int, strength: float,
                   model: Any = None) -> Tuple[Any, torch.Tensor, LCMConfig, float, str]:
        chosen = PRESETS_BY_NAME.get(preset)
        if chosen is None:
            raise ValueError(f"{_NODE} preset={preset!r}: not a preset; choose one of {', '.join(PRESETS_BY_NAME)}")
        check_family(chosen, model)
        if chosen.scheduler not in (LCM, TCD):
            preset_steps(chosen, steps)
            if strength != 1.0:
                raise ValueError(
                    f"{_NODE} strength={strength}: the preset {chosen.name!r} runs its source's fixed txt2img "
                    "schedule; set strength to 1.0 (for img2img, cut its sigmas with SplitSigmas)")
            config = LCMConfig() if chosen.is_flow else with_model_fields(LCMConfig(), model, _NODE)
            return (recipe_sampler(chosen), recipe_sigmas(chosen, model), config, chosen.cfg, chosen.about())
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
