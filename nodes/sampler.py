"""LCMSampler: the LCM multistep step as a ComfyUI SAMPLER (a k-diffusion style function).

The host gives x0 for any parameterisation; one step is
x0 -> clip/threshold -> denoised = c_out * x0 + c_skip * x_t -> x_k(next) = denoised + sigma_next * z,
and the last step returns denoised (DESIGN.md, "Semantics"). Noise comes from one CPU
generator seeded with the graph's seed in diffusers' draw order, so a seed gives
diffusers' latents on every device.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from tqdm.auto import trange

from ..lcm_core import (
    LCMConfig,
    apply_boundary_condition,
    boundary_condition_scalings,
    distillation_grid,
    draw_noise,
    renoise_k_space_,
    sample_from_k_space,
)
from ..lcm_core.step import clip_or_threshold
from . import host
from .config_node import LCM_CONFIG

logger = logging.getLogger(__name__)

# ComfyUI's ModelSamplingDiscrete(lcm) hard-codes timestep_scaling = 10 (nodes_model_advanced.LCM).
_HOST_LCM_TIMESTEP_SCALING = 10.0


@dataclasses.dataclass(frozen=True)
class PlannedStep:
    """One sampler step, computed on the CPU before the loop so the loop never reads the device."""

    sigma: float
    sigma_next: float
    timestep: int
    c_skip: float
    c_out: float
    # The host's own boundary scalings when the model is patched with ModelSamplingDiscrete(lcm).
    host_c_skip: Optional[float] = None
    host_c_out: Optional[float] = None


def plan_steps(model_sampling: Any, sigmas: torch.Tensor, config: LCMConfig) -> List[PlannedStep]:
    """Snap each sigma to the timestep the host model will see, and precompute the step's scalars.

    Reads ``sigmas`` once (one host-device transfer before sampling, none during it) and
    warns once if a timestep is off the LCM distillation grid of ``config``.
    """
    host.require_discrete(model_sampling)
    sigma_values = sigmas.detach().to("cpu", torch.float64).tolist()
    if len(sigma_values) < 2:
        return []
    timesteps = model_sampling.timestep(sigmas[:-1].detach()).to("cpu", torch.float64).round().to(torch.int64)
    timestep_list = timesteps.tolist()
    c_skip, c_out = (values.tolist() for values in boundary_condition_scalings(timesteps, config.timestep_scaling))
    host_c_skip: List[Optional[float]] = [None] * len(timestep_list)
    host_c_out: List[Optional[float]] = [None] * len(timestep_list)
    if host.applies_lcm_boundary(model_sampling):
        host_c_skip, host_c_out = (values.tolist() for values in
                                   boundary_condition_scalings(timesteps, _HOST_LCM_TIMESTEP_SCALING))
    grid = set(distillation_grid(config, config.original_inference_steps).tolist())
    off_grid = [t for t in timestep_list if t not in grid]
    if off_grid:
        logger.warning("LCMSampler: timesteps %s are not on the LCM grid of original_inference_steps=%d "
                       "(each sigma was snapped to the nearest training timestep); LCMTimesteps gives grid "
                       "timesteps", off_grid, config.original_inference_steps)
    return [
        PlannedStep(
            sigma=sigma_values[i], sigma_next=sigma_values[i + 1], timestep=timestep_list[i],
            c_skip=c_skip[i], c_out=c_out[i], host_c_skip=host_c_skip[i], host_c_out=host_c_out[i],
        )
        for i in range(len(timestep_list))
    ]


def step_noise_generator(seed: Optional[int], x: torch.Tensor) -> Optional[torch.Generator]:
    """A CPU generator in diffusers' draw order for this seed, positioned after the initial noise.

    ComfyUI drew the initial noise (txt2img latents, or img2img's add_noise) as the first
    draw of ``torch.manual_seed(seed)`` with the latent's shape and dtype
    (comfy.sample.prepare_noise); diffusers draws its initial latents the same way, then
    one draw per step but the last. Replaying that first draw puts this generator where
    diffusers' generator is when its loop starts.
    """
    if seed is None:
        return None
    generator = torch.Generator("cpu").manual_seed(int(seed))
    torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu")
    return generator


@torch.no_grad()
def sample_lcm_multistep(model: Callable[..., torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor,
                         extra_args: Optional[Dict[str, Any]] = None, callback: Optional[Callable] = None,
                         disable: Optional[bool] = None, config: Optional[LCMConfig] = None) -> torch.Tensor:
    """LCM multistep sampling (Luo et al. 2023, Algorithm 3), diffusers' LCMScheduler arithmetic and noise."""
    extra_args = {} if extra_args is None else extra_args
    config = config or LCMConfig()
    model_sampling = model.inner_model.inner_model.model_sampling
    plan = plan_steps(model_sampling, sigmas, config)
    generator = step_noise_generator(extra_args.get("seed"), x)
    s_in = x.new_ones([x.shape[0]])
    out_dtype = x.dtype
    x = x.float()  # sampler maths in fp32; the result goes back to the latent's dtype
    for i in trange(len(plan), disable=disable):
        step = plan[i]
        x0 = model(x, sigmas[i] * s_in, **extra_args).float()
        if step.host_c_out is not None:
            x0 = _undo_host_boundary(x0, x, step)
        x_t = sample_from_k_space(x, step.sigma)
        denoised = apply_boundary_condition(clip_or_threshold(x0, config), x_t, step.c_skip, step.c_out)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if step.sigma_next > 0:
            noise = draw_noise(x.shape, generator, x.device, torch.float32)
            x = renoise_k_space_(noise, denoised, step.sigma_next)
        else:
            x = denoised
    return x.to(out_dtype)


def _undo_host_boundary(output: torch.Tensor, x_k: torch.Tensor, step: PlannedStep) -> torch.Tensor:
    """x0 from a ModelSamplingDiscrete(lcm) output f = c_out * x0 + c_skip * x_k.

    At c_out = 0 (t = 0) x0 is lost, but then c_out = 0 in our step too and x0 does not matter.
    """
    if step.host_c_out == 0:
        return torch.zeros_like(output)
    return (output - step.host_c_skip * x_k) / step.host_c_out


class LCMSampler:
    """The LCM multistep sampler for SamplerCustom / SamplerCustomAdvanced."""

    DESCRIPTION = (
        "LCM multistep sampling exactly as diffusers' LCMScheduler: boundary condition c_skip / c_out, optional "
        "clip / thresholding, and step noise from one CPU generator seeded with the sampler's noise seed in "
        "diffusers' order, so a seed gives the same latents as diffusers on any GPU. Works with CFG, img2img, "
        "inpaint masks and models patched with ModelSamplingDiscrete(lcm) (their boundary condition is not "
        "applied twice).")
    CATEGORY = "sampling/custom_sampling/lcm"
    SEARCH_ALIASES = ["lcm", "latent consistency", "lcm sampler", "diffusers lcm", "few step"]
    FUNCTION = "get_sampler"
    RETURN_TYPES = ("SAMPLER",)
    RETURN_NAMES = ("sampler",)
    OUTPUT_TOOLTIPS = ("A SAMPLER for SamplerCustom or SamplerCustomAdvanced.",)

    @classmethod
    def INPUT_TYPES(cls) -> Dict[str, Any]:
        return {"required": {"config": (LCM_CONFIG, {"tooltip": "From LCMSchedulerConfig: timestep_scaling, "
                                                                "clip_sample and thresholding are used here."})}}

    def get_sampler(self, config: LCMConfig) -> Tuple[Any]:
        import comfy.samplers

        return (comfy.samplers.KSAMPLER(sample_lcm_multistep, extra_options={"config": config}),)
