"""LCMSampler and TCDSampler: the LCM and TCD steps as ComfyUI SAMPLERs (k-diffusion style functions).

The host gives x0 for any parameterisation. On a flow-matching model (CONST) the LCM sampler
is diffusers' FlowMatchLCMScheduler: x_next = (1 - sigma_next) * x0 + sigma_next * z, through the
model's own noise_scaling; ``sample_lcm_multistep`` dispatches to it at its entry, and
nothing below that point branches on the model kind. On a discrete model one LCM step is
x0 -> clip/threshold -> denoised = c_out * x0 + c_skip * x_t -> x_k(next) = denoised + sigma_next * z,
and the last step returns denoised (DESIGN.md, "Semantics"). One TCD step is
x_s = x0 + sigma_s * eps -> x_k(next) = x_s + sqrt(sigma_next^2 - sigma_s^2) * z, and the last step
returns x_s at s = 0 in diffusers' variables (lcm_core.tcd). Both share the loop: noise from one
CPU generator seeded with the graph's seed in diffusers' draw order, so a seed gives diffusers'
latents on every device; a ModelSamplingDiscrete(lcm) model's own boundary condition undone; the
step's scalars planned on the CPU before the loop, so the loop never reads the device.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from tqdm.auto import trange

from ..lcm_core import (
    DEFAULT_GAMMA,
    FlowStep,
    KSpaceStep,
    LCMConfig,
    alphas_cumprod,
    apply_boundary_condition,
    boundary_condition_scalings,
    check_gamma,
    distillation_grid,
    draw_noise,
    flow_steps,
    k_space_steps,
    k_space_trajectory_sample,
    renoise_k_space_,
    sample_from_k_space,
    sigmas_from_alphas_cumprod,
    timesteps_from_sigmas,
)
from ..lcm_core.step import clip_or_threshold
from . import flow, host
from .config_node import LCM_CONFIG

logger = logging.getLogger(__name__)

# ComfyUI's ModelSamplingDiscrete(lcm) hard-codes timestep_scaling = 10 (nodes_model_advanced.LCM).
_HOST_LCM_TIMESTEP_SCALING = 10.0


@dataclasses.dataclass(frozen=True)
class PlannedStep:
    """One LCM sampler step, computed on the CPU before the loop so the loop never reads the device."""

    sigma: float
    sigma_next: float
    timestep: int
    c_skip: float
    c_out: float
    # The host's own boundary scalings when the model is patched with ModelSamplingDiscrete(lcm).
    host_c_skip: Optional[float] = None
    host_c_out: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class PlannedTCDStep:
    """One TCD sampler step (lcm_core.KSpaceStep) and the host's boundary scalings, as PlannedStep."""

    tcd: KSpaceStep
    host_c_skip: Optional[float] = None
    host_c_out: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class PlannedFlowStep:
    """One flow LCM step: its float32 scalars, and the next sigma as the sampler's own (device) tensor
    for the model's noise_scaling."""

    flow: FlowStep
    sigma_next: torch.Tensor


Planned = Union[PlannedStep, PlannedTCDStep, PlannedFlowStep]


def _host_timesteps(model_sampling: Any, sigmas: torch.Tensor) -> torch.Tensor:
    """The training timestep the host model sees for each sigma but the last (one read of the device)."""
    return model_sampling.timestep(sigmas[:-1].detach()).to("cpu", torch.float64).round().to(torch.int64)


def _host_boundaries(model_sampling: Any, sigmas: torch.Tensor,
                     timesteps: Optional[torch.Tensor] = None) -> Tuple[List[Optional[float]], List[Optional[float]]]:
    """c_skip and c_out per step of a ModelSamplingDiscrete(lcm) model; None for any other model."""
    if not host.applies_lcm_boundary(model_sampling):
        return [None] * (len(sigmas) - 1), [None] * (len(sigmas) - 1)
    timesteps = _host_timesteps(model_sampling, sigmas) if timesteps is None else timesteps
    c_skip, c_out = boundary_condition_scalings(timesteps, _HOST_LCM_TIMESTEP_SCALING)
    return c_skip.tolist(), c_out.tolist()


def plan_steps(model_sampling: Any, sigmas: torch.Tensor, config: LCMConfig) -> List[PlannedStep]:
    """Snap each sigma to the timestep the host model will see, and precompute the LCM step's scalars.

    Reads ``sigmas`` once (one host-device transfer before sampling, none during it) and
    warns once if a timestep is off the LCM distillation grid of ``config``.
    """
    sigma_values = sigmas.detach().to("cpu", torch.float64).tolist()
    if len(sigma_values) < 2:
        return []
    timesteps = _host_timesteps(model_sampling, sigmas)
    timestep_list = timesteps.tolist()
    c_skip, c_out = (values.tolist() for values in boundary_condition_scalings(timesteps, config.timestep_scaling))
    host_c_skip, host_c_out = _host_boundaries(model_sampling, sigmas, timesteps)
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


def plan_flow_steps(sigmas: torch.Tensor) -> List[PlannedFlowStep]:
    """The flow LCM step's scalars (one read of ``sigmas``), after checking they are a flow model's."""
    planned = flow_steps(sigmas)
    flow.check_flow_sigmas([step.sigma for step in planned] + [step.sigma_next for step in planned[-1:]])
    return [PlannedFlowStep(step, sigmas[i + 1]) for i, step in enumerate(planned)]


def plan_tcd_steps(model_sampling: Any, sigmas: torch.Tensor, config: LCMConfig, gamma: float) -> List[PlannedTCDStep]:
    """The TCD step's scalars for these sigmas, from the config's noise table (before the loop).

    TCD steps through any timestep (its dense grid), so nothing is snapped to a grid: the
    next sigma gives t_prev, gamma gives s (lcm_core.k_space_steps). Warns once if the host
    model would run at other timesteps than the sigmas stand for.
    """
    sigma_values = sigmas.detach().to("cpu", torch.float64).tolist()
    if len(sigma_values) < 2:
        return []
    table = sigmas_from_alphas_cumprod(alphas_cumprod(config))
    host_timesteps = _host_timesteps(model_sampling, sigmas)
    own_timesteps = timesteps_from_sigmas(torch.tensor(sigma_values[:-1], dtype=torch.float64), table)
    if not torch.equal(host_timesteps, own_timesteps):
        # A model_sampling with its own coarser table (ModelSamplingDiscrete(lcm): the 50-step LCM grid)
        # runs the UNet at its nearest timestep, not at the one the sigma stands for.
        logger.warning("TCDSampler: the model evaluates the timesteps %s at its own timesteps %s (its "
                       "model sampling snaps them to its grid), so its x0 is for other timesteps; use timesteps "
                       "on its grid or a model without that patch", own_timesteps.tolist(), host_timesteps.tolist())
    host_c_skip, host_c_out = _host_boundaries(model_sampling, sigmas, host_timesteps)
    return [PlannedTCDStep(step, c_skip, c_out)
            for step, c_skip, c_out in zip(k_space_steps(sigma_values, table, gamma), host_c_skip, host_c_out)]


def step_noise_generator(seed: Optional[int], x: torch.Tensor) -> Optional[torch.Generator]:
    """A CPU generator in diffusers' draw order for this seed, positioned after the initial noise.

    ComfyUI drew the initial noise (txt2img latents, or img2img's add_noise) as the first
    draw of ``torch.manual_seed(seed)`` with the latent's shape and dtype
    (comfy.sample.prepare_noise); diffusers draws its initial latents the same way, then
    one draw per noisy step. Replaying that first draw puts this generator where diffusers'
    generator is when its loop starts.
    """
    if seed is None:
        return None
    generator = torch.Generator("cpu").manual_seed(int(seed))
    torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu")
    return generator


# update(x_k, x0, planned step, generator) -> (the next x_k, the preview for the callback)
Update = Callable[[torch.Tensor, torch.Tensor, Any, Optional[torch.Generator]], Tuple[torch.Tensor, torch.Tensor]]


def _sample(model: Callable[..., torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor, extra_args: Dict[str, Any],
            callback: Optional[Callable], disable: Optional[bool], plan: Sequence[Planned],
            update: Update) -> torch.Tensor:
    """The loop every sampler shares: the host's x0, the step's update, progress; fp32 maths."""
    generator = step_noise_generator(extra_args.get("seed"), x)
    s_in = x.new_ones([x.shape[0]])
    x = x.float()
    for i in trange(len(plan), disable=disable):
        step = plan[i]
        x0 = model(x, sigmas[i] * s_in, **extra_args).float()
        x_next, preview = update(x, x0, step, generator)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": preview})
        x = x_next
    return x


@torch.no_grad()
def sample_lcm_multistep(model: Callable[..., torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor,
                         extra_args: Optional[Dict[str, Any]] = None, callback: Optional[Callable] = None,
                         disable: Optional[bool] = None, config: Optional[LCMConfig] = None) -> torch.Tensor:
    """LCM multistep sampling (Luo et al. 2023, Algorithm 3), diffusers' LCMScheduler arithmetic and noise.

    On a flow-matching model: diffusers' FlowMatchLCMScheduler (``sample_flow_lcm``); the config's
    discrete fields do not apply there.
    """
    model_sampling = model.inner_model.inner_model.model_sampling
    if host.is_flow(model_sampling):
        return sample_flow_lcm(model, x, sigmas, extra_args, callback, disable)
    host.require_discrete(model_sampling, "LCM", host.model_family(model))
    config = config or LCMConfig()
    plan = plan_steps(model_sampling, sigmas, config)

    def update(x_k: torch.Tensor, x0: torch.Tensor, step: PlannedStep,
               generator: Optional[torch.Generator]) -> Tuple[torch.Tensor, torch.Tensor]:
        x0 = _undo_host_boundary(x0, x_k, step)
        x_t = sample_from_k_space(x_k, step.sigma)
        denoised = apply_boundary_condition(clip_or_threshold(x0, config), x_t, step.c_skip, step.c_out)
        if step.sigma_next > 0:
            noise = draw_noise(x_k.shape, generator, x_k.device, torch.float32)
            return renoise_k_space_(noise, denoised, step.sigma_next), denoised
        return denoised, denoised

    return _sample(model, x, sigmas, {} if extra_args is None else extra_args, callback, disable, plan,
                   update).to(x.dtype)


@torch.no_grad()
def sample_tcd(model: Callable[..., torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor,
               extra_args: Optional[Dict[str, Any]] = None, callback: Optional[Callable] = None,
               disable: Optional[bool] = None, config: Optional[LCMConfig] = None,
               gamma: float = DEFAULT_GAMMA) -> torch.Tensor:
    """TCD's Strategic Stochastic Sampling (Zheng et al. 2024), diffusers' TCDScheduler arithmetic and noise."""
    config = config or LCMConfig()
    extra_args = {} if extra_args is None else extra_args
    model_sampling = model.inner_model.inner_model.model_sampling
    host.require_discrete(model_sampling, "TCD (diffusers has no flow-matching TCD scheduler)",
                          host.model_family(model))
    plan = plan_tcd_steps(model_sampling, sigmas, config, gamma)

    def update(x_k: torch.Tensor, x0: torch.Tensor, step: PlannedTCDStep,
               generator: Optional[torch.Generator]) -> Tuple[torch.Tensor, torch.Tensor]:
        x0 = _undo_host_boundary(x0, x_k, step)
        x_s = k_space_trajectory_sample(x0, x_k, step.tcd)
        if step.tcd.draws_noise:
            noise = draw_noise(x_k.shape, generator, x_k.device, torch.float32)
            return renoise_k_space_(noise, x_s, step.tcd.renoise_scale), x0
        if step.tcd.final:
            # diffusers returns its sample at t = 0 (not x0), and ComfyUI's final latent is that sample.
            return sample_from_k_space(x_s, step.tcd.sigma_s), x0
        return x_s, x0

    out = _sample(model, x, sigmas, extra_args, callback, disable, plan, update)
    if plan and plan[-1].tcd.final:
        out = host.keep_unmasked_latent(out, model, extra_args, sigmas[len(plan) - 1] * x.new_ones([x.shape[0]]))
    return out.to(x.dtype)


@torch.no_grad()
def sample_flow_lcm(model: Callable[..., torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor,
                    extra_args: Optional[Dict[str, Any]] = None, callback: Optional[Callable] = None,
                    disable: Optional[bool] = None) -> torch.Tensor:
    """LCM-style sampling of a flow-matching model, diffusers' FlowMatchLCMScheduler arithmetic and noise.

    x0 is the host's (x - sigma v); the next sample is the model's own noise_scaling at the next
    sigma, (1 - sigma_next) x0 + sigma_next z, with z in the shape the family's diffusers
    pipeline draws it (packed 2x2 patches for Flux and Qwen-Image); the last step returns x0.
    """
    model_sampling = model.inner_model.inner_model.model_sampling
    packed = flow.packs_latents(model.inner_model.inner_model)
    plan = plan_flow_steps(sigmas)

    def update(x_t: torch.Tensor, x0: torch.Tensor, step: PlannedFlowStep,
               generator: Optional[torch.Generator]) -> Tuple[torch.Tensor, torch.Tensor]:
        if step.flow.sigma_next > 0:
            noise = flow.draw_step_noise(x_t.shape, packed, generator, x_t.device)
            return model_sampling.noise_scaling(step.sigma_next, noise, x0), x0
        return x0, x0

    return _sample(model, x, sigmas, {} if extra_args is None else extra_args, callback, disable, plan,
                   update).to(x.dtype)


def _undo_host_boundary(output: torch.Tensor, x_k: torch.Tensor,
                        step: Union[PlannedStep, PlannedTCDStep]) -> torch.Tensor:
    """x0 from a ModelSamplingDiscrete(lcm) output f = c_out * x0 + c_skip * x_k; other models' x0 as it is.

    At c_out = 0 (t = 0) x0 is lost. That model never reports t = 0 (its timesteps are its LCM
    grid's, k - 1 and up), and LCM's own step would multiply x0 by c_out = 0 there anyway.
    """
    if step.host_c_out is None:
        return output
    if step.host_c_out == 0:
        return torch.zeros_like(output)
    return (output - step.host_c_skip * x_k) / step.host_c_out


class _SamplerNode:
    """What the pack's SAMPLER nodes share: one SAMPLER output for SamplerCustom(Advanced)."""

    CATEGORY = "sampling/custom_sampling/lcm"
    FUNCTION = "get_sampler"
    RETURN_TYPES = ("SAMPLER",)
    RETURN_NAMES = ("sampler",)
    OUTPUT_TOOLTIPS = ("A SAMPLER for SamplerCustom or SamplerCustomAdvanced.",)


class LCMSampler(_SamplerNode):
    """The LCM multistep sampler for SamplerCustom / SamplerCustomAdvanced."""

    DESCRIPTION = (
        "LCM multistep sampling exactly as diffusers' LCMScheduler: boundary condition c_skip / c_out, optional "
        "clip / thresholding, and step noise from one CPU generator seeded with the sampler's noise seed in "
        "diffusers' order, so a seed gives the same latents as diffusers on any GPU. Works with CFG, img2img, "
        "inpaint masks and models patched with ModelSamplingDiscrete(lcm) (their boundary condition is not "
        "applied twice). On flow-matching models (SD3 / 3.5, Flux, Wan, Qwen-Image) it is diffusers' "
        "FlowMatchLCMScheduler: x0, then fresh noise at the next sigma; use FlowMatchLCMTimesteps for sigmas.")
    SEARCH_ALIASES = ["lcm", "latent consistency", "lcm sampler", "diffusers lcm", "few step"]

    @classmethod
    def INPUT_TYPES(cls) -> Dict[str, Any]:
        return {"required": {"config": (LCM_CONFIG, {"tooltip": "From LCMSchedulerConfig: timestep_scaling, "
                                                                "clip_sample and thresholding are used here on "
                                                                "SD1.5 / SDXL models. Flow models (SD3, Flux, Wan) "
                                                                "use none of its fields: its defaults will do."})}}

    def get_sampler(self, config: LCMConfig) -> Tuple[Any]:
        import comfy.samplers

        return (comfy.samplers.KSAMPLER(sample_lcm_multistep, extra_options={"config": config}),)


class TCDSampler(_SamplerNode):
    """TCD's Strategic Stochastic Sampling for SamplerCustom / SamplerCustomAdvanced."""

    DESCRIPTION = (
        "Trajectory Consistency Distillation sampling exactly as diffusers' TCDScheduler (for TCD-LoRA, Hyper-SD "
        "and other TCD models): each step goes from the model's x0 to the earlier trajectory point "
        "s = (1 - gamma) * t_next, then re-noises to t_next with fresh noise; the last step returns diffusers' "
        "sample at t = 0. gamma 0 is deterministic, 1 re-noises fully like LCM. Step noise comes from one CPU "
        "generator seeded with the sampler's noise seed in diffusers' order (none at gamma 0, none on the last "
        "step), so a seed gives diffusers' latents on any GPU. Works with CFG, img2img, inpaint masks and models "
        "patched with ModelSamplingDiscrete(lcm). Use LCMTimesteps with scheduler tcd for its timesteps.")
    SEARCH_ALIASES = ["tcd", "trajectory consistency", "hyper-sd", "gamma", "eta"]

    @classmethod
    def INPUT_TYPES(cls) -> Dict[str, Any]:
        return {
            "required": {
                "config": (LCM_CONFIG, {"tooltip": "From LCMSchedulerConfig: the noise schedule (TCDScheduler takes "
                                                   "the same fields; clip_sample and thresholding do not apply)."}),
                "gamma": ("FLOAT", {"default": DEFAULT_GAMMA, "min": 0.0, "max": 1.0, "step": 0.01, "round": False,
                                    "tooltip": "TCD's gamma, which diffusers calls eta: 0 = deterministic, 1 = "
                                               "re-noise fully at every step (like LCM); lower gives more detail "
                                               "over several steps. TCD-LoRA uses 0.3, Hyper-SD's 1-step LoRA 1.0. "
                                               "Note that diffusers' SD / SDXL pipelines default eta to 0.0: "
                                               "set 0 here to match a pipeline run without eta."}),
            },
        }

    def get_sampler(self, config: LCMConfig, gamma: float) -> Tuple[Any]:
        import comfy.samplers

        try:
            gamma = check_gamma(gamma)
        except ValueError as error:
            raise ValueError(f"TCDSampler: {error}") from None
        if config.clip_sample or config.thresholding:
            logger.warning("TCDSampler: the config's clip_sample / thresholding do not apply to TCD (diffusers' "
                           "TCDScheduler ignores them too)")
        return (comfy.samplers.KSAMPLER(sample_tcd, extra_options={"config": config, "gamma": gamma}),)
