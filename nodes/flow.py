"""Flow-matching models in ComfyUI: diffusers' FlowMatchLCMScheduler schedule for a MODEL, and its step noise.

The schedule is the one the model family's diffusers pipeline asks ``set_timesteps`` for,
configured by the shift the model carries (ModelSamplingSD3 / ModelSamplingFlux /
ModelSamplingAuraFlow set it):
- a static shift (SD3 / 3.5, Wan, HiDream, AuraFlow): ``set_timesteps(n)`` with that shift,
  as the SD3 and Wan pipelines call it;
- ModelSamplingFlux (Flux, Qwen-Image): ``sigmas = linspace(1, 1/n, n)`` and ``mu`` = the
  model's shift (the ModelSamplingFlux node computes mu from the image size as FluxPipeline
  does), as the Flux and Qwen-Image pipelines call it.
img2img ``strength`` is the SD3 / Flux img2img pipelines': make the n-step schedule, then drop
its first int(n - n * strength) steps.

Step noise: diffusers' Flux and Qwen-Image pipelines step on packed latents (2x2 patches as
64 channels, (B, h/2 * w/2, 4C)), so their schedulers draw step noise in that shape; the
sampler draws it so and unpacks it to ComfyUI's (B, C, h, w). Every other family steps on
the latent's own shape (Wan's 5-D video latent included).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch

from ..lcm_core import FlowMatchConfig, FlowSchedule, draw_noise, flow_schedule
from ..lcm_core.step import Generators
from . import host

# ComfyUI model classes (comfy.model_base) whose diffusers pipeline packs 2x2 latent patches.
PACKED_LATENT_MODELS = ("Flux", "QwenImage")


def model_config(model_sampling: Any,
                 config: Optional[FlowMatchConfig] = None) -> Tuple[FlowMatchConfig, Optional[float]]:
    """The FlowMatchLCMScheduler config for a flow model, and the mu its pipeline passes (None if static).

    Without ``config``: the model's own shift (static), or dynamic shifting with the model's mu
    (ModelSamplingFlux). With one (a pasted scheduler_config.json) its fields are kept; a
    dynamic config takes mu from a ModelSamplingFlux model.
    """
    host.require_flow(model_sampling, "the flow LCM schedule")
    dynamic_model = host.has_dynamic_shift(model_sampling)
    shift = float(model_sampling.shift)
    if config is None:
        config = FlowMatchConfig(use_dynamic_shifting=True) if dynamic_model else FlowMatchConfig(shift=shift)
    if not config.use_dynamic_shifting:
        return config, None
    if not dynamic_model:
        raise ValueError(
            f"scheduler config: use_dynamic_shifting is true (mu from the image size, as Flux / Qwen-Image), but "
            f"this model carries a static shift ({shift}, {host.describe_sampling(model_sampling)}); use a "
            "ModelSamplingFlux model, or set use_dynamic_shifting to false and shift to the value you want")
    return config, shift


def schedule_for(model_sampling: Any, steps: int, config: Optional[FlowMatchConfig] = None,
                 sigmas: Optional[Sequence[float]] = None) -> FlowSchedule:
    """What the family's diffusers pipeline gives FlowMatchLCMScheduler.set_timesteps for this model."""
    config, mu = model_config(model_sampling, config)
    if sigmas is None and mu is not None:
        # The Flux and Qwen-Image pipelines' own sigmas (then shifted by mu).
        sigmas = np.linspace(1.0, 1 / steps, steps)
    return flow_schedule(config, None if sigmas is not None else steps, sigmas=sigmas, mu=mu)


def img2img_start(steps: int, strength: float) -> int:
    """How many leading steps diffusers' SD3 / Flux img2img pipelines drop (their get_timesteps)."""
    init_timestep = min(steps * strength, steps)
    return int(max(steps - init_timestep, 0))


def packs_latents(base_model: Any) -> bool:
    """True for the model classes whose diffusers pipeline steps on packed 2x2 patches (Flux, Qwen-Image)."""
    return type(base_model).__name__ in PACKED_LATENT_MODELS


def draw_step_noise(shape: Sequence[int], packed: bool, generator: Generators, device: torch.device) -> torch.Tensor:
    """Standard normal step noise in ComfyUI's latent shape, drawn in the shape the pipeline's scheduler sees.

    ``packed``: drawn as (B, h/2 * w/2, 4C), as diffusers' Flux / Qwen-Image schedulers draw
    it, then unpacked (the inverse of their _pack_latents) to (B, C, h, w).
    """
    if not packed:
        return draw_noise(shape, generator, device, torch.float32)
    if len(shape) != 4 or shape[2] % 2 or shape[3] % 2:
        raise ValueError(f"latent: shape {tuple(shape)} cannot be packed into 2x2 patches as the Flux / Qwen-Image "
                         "pipelines pack it; use a width and height that are multiples of 16 pixels")
    batch, channels, height, width = shape
    packed_noise = draw_noise((batch, (height // 2) * (width // 2), channels * 4), generator, device, torch.float32)
    patches = packed_noise.view(batch, height // 2, width // 2, channels, 2, 2)
    return patches.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, height, width)


def check_flow_sigmas(sigmas: Sequence[float]) -> None:
    """Refuse sigmas outside a flow model's [0, 1] (e.g. LCMTimesteps' discrete ones, up to about 14.6)."""
    bad = [s for s in sigmas if not (0.0 <= s <= 1.0) or math.isnan(s)]
    if bad:
        raise ValueError(f"sigmas: {bad[:3]} lie outside [0, 1], so they are not a flow model's noise levels (SD1.5 "
                         "ones reach about 14.6); use the scheduler lcm_diffusers or FlowMatchLCMTimesteps for flow "
                         "models")
