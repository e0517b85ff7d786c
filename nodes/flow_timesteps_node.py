"""FlowMatchLCMTimesteps: diffusers' FlowMatchLCMScheduler schedule for a flow-matching MODEL, as SIGMAS."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch

from ..lcm_core import FlowMatchConfig
from . import flow, host
from .timesteps_node import list_items


def parse_sigma_list(text: str) -> Optional[List[float]]:
    """'1.0, 0.75, 0.5, 0.25' (commas, spaces or new lines) -> [1.0, 0.75, 0.5, 0.25]; blank -> None."""
    items = list_items(text)
    if not items:
        return None
    try:
        return [float(item) for item in items]
    except ValueError:
        raise ValueError(f"FlowMatchLCMTimesteps sigmas: {text.strip()!r} is not a list of numbers; write descending "
                         "sigmas in (0, 1] separated by commas, e.g. 1.0, 0.75, 0.5, 0.25") from None


def parse_flow_config(text: str) -> Optional[FlowMatchConfig]:
    """A pasted diffusers scheduler_config.json (any FlowMatch scheduler's) -> FlowMatchConfig; blank -> None.

    What ComfyUI's samplers cannot do is refused here: SwD's scale_factors grow the latent between
    steps, and an inverted schedule (Mochi) ends at sigma 1.
    """
    if not text.strip():
        return None
    config = FlowMatchConfig.from_json(text)
    if config.scale_factors:
        raise ValueError(
            f"scheduler_config_json: scale_factors {list(config.scale_factors)} make the latent grow between steps "
            "(scale-wise distillation, SwD), which ComfyUI's samplers do not allow: the latent, its noise mask and "
            "the previews keep one size through sampling. Run SwD in diffusers with lcm_core.FlowMatchLCMScheduler, "
            "or remove scale_factors here to sample at one size")
    if config.invert_sigmas:
        raise ValueError("scheduler_config_json: invert_sigmas (Mochi's schedule, ending at sigma 1) has no form "
                         "in ComfyUI's sampling; remove it")
    return config


class FlowMatchLCMTimesteps:
    """FlowMatchLCMScheduler's sigmas for a flow model (SD3 / 3.5, Flux, Wan, Qwen-Image, ...) as SIGMAS."""

    DESCRIPTION = (
        "The schedule of diffusers' FlowMatchLCMScheduler for a flow-matching model, as its family's diffusers "
        "pipeline asks for it: SD3 / Wan / HiDream / AuraFlow set_timesteps(steps) with the shift the model "
        "carries; Flux / Qwen-Image sigmas linspace(1, 1/steps, steps) shifted by the model's mu (set it with "
        "ModelSamplingFlux at your width and height). strength < 1 is img2img as diffusers' SD3 / Flux img2img "
        "pipelines define it: the same schedule without its first int(steps - steps * strength) steps. Use it with "
        "SamplerCustom and LCMSampler (the scheduler lcm_diffusers gives the same sigmas at strength 1).")
    CATEGORY = "sampling/custom_sampling/lcm"
    SEARCH_ALIASES = ["flow lcm", "flowmatch lcm", "flux lcm", "sd3 lcm", "wan lcm", "lightx2v", "flow sigmas"]
    FUNCTION = "get_sigmas"
    RETURN_TYPES = ("SIGMAS", "STRING")
    RETURN_NAMES = ("sigmas", "timesteps")
    OUTPUT_TOOLTIPS = (
        "The flow sigmas (in [0, 1]) of the steps, followed by 0 (float32, CPU).",
        "diffusers' scheduler.timesteps for the same steps (sigma * 1000), comma separated.",
    )

    @classmethod
    def INPUT_TYPES(cls) -> Dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A flow-matching model; its shift (or Flux's mu) shapes the schedule."}),
                "steps": ("INT", {"default": 4, "min": 1, "max": 1000,
                                  "tooltip": "Inference steps of the full schedule (few-step LoRAs: 1 to 8)."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                       "tooltip": "1.0 for txt2img; below 1 for img2img: keeps the last "
                                                  "steps * strength steps, as diffusers' SD3 / Flux img2img."}),
            },
            "optional": {
                "sigmas": ("STRING", {"default": "", "multiline": False,
                           "tooltip": "Custom descending sigmas in (0, 1], e.g. 1.0, 0.75, 0.5, 0.25, passed as "
                                      "set_timesteps(sigmas=...): the shift is applied to them, as in diffusers. "
                                      "Overrides steps."}),
                "scheduler_config_json": ("STRING", {"default": "", "multiline": True, "advanced": True,
                                          "tooltip": "Optional: a diffusers scheduler_config.json (e.g. Qwen-Image's, "
                                                     "with shift_terminal 0.02). Blank: the model's own shift, or "
                                                     "dynamic shifting with its mu on Flux-type models."}),
            },
        }

    def get_sigmas(self, model: Any, steps: int, strength: float, sigmas: str = "",
                   scheduler_config_json: str = "") -> Tuple[torch.Tensor, str]:
        model_sampling = host.model_sampling_of(model)
        try:
            host.require_flow(model_sampling, "FlowMatchLCMTimesteps", host.model_family(model))
            if not 0.0 < strength <= 1.0:
                raise ValueError(f"strength must lie in (0, 1], got {strength}")
            custom = parse_sigma_list(sigmas)
            if custom is not None:
                flow.check_flow_sigmas(custom)
            schedule = flow.schedule_for(model_sampling, steps, parse_flow_config(scheduler_config_json), custom)
        except ValueError as error:
            message = str(error)
            raise ValueError(message if message.startswith("FlowMatchLCMTimesteps") else
                             f"FlowMatchLCMTimesteps (steps={steps}, strength={strength}): {message}") from error
        start = flow.img2img_start(len(schedule.timesteps), strength)  # < steps for any strength > 0
        timesteps = schedule.timesteps[start:]
        return (schedule.sigmas[start:].clone(), ", ".join(f"{t:g}" for t in timesteps.tolist()))
