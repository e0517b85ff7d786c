"""lcm_core: diffusers' ``LCMScheduler`` and ``TCDScheduler``, exactly, as a small typed core.

torch + numpy only. ``LCMScheduler`` and ``TCDScheduler`` are the diffusers-compatible
classes; the pure functions in ``schedule``, ``step`` and ``tcd`` are the formulas they
(and the ComfyUI nodes) use, each in one place.
"""

from .config import BETA_SCHEDULES, PREDICTION_TYPES, LCMConfig
from .guidance import W_CONVENTIONS, guidance_scale_embedding, guidance_w
from .schedule import (
    StrengthMode,
    alphas_cumprod,
    betas,
    custom_timesteps,
    distillation_grid,
    drop_leading_steps,
    first_step_index,
    lcm_timesteps,
    origin_timesteps,
    sigmas_from_alphas_cumprod,
    tcd_timesteps,
    timesteps_from_sigmas,
)
from .scheduler import LCMScheduler, LCMSchedulerOutput, TCDScheduler, TCDSchedulerOutput
from .step import (
    NoiseLevel,
    StepCoefficients,
    apply_boundary_condition,
    boundary_condition_scalings,
    denoise,
    draw_noise,
    predicted_noise,
    predicted_original_sample,
    renoise_,
    renoise_k_space_,
    sample_from_k_space,
    scaled_sum_,
    step_coefficients,
)
from .tcd import (
    DEFAULT_GAMMA,
    KSpaceStep,
    TCDStepCoefficients,
    check_gamma,
    intermediate_timesteps,
    k_space_renoise_scale,
    k_space_steps,
    k_space_trajectory_sample,
    renoise_from_s_,
    tcd_step_coefficients,
    trajectory_sample,
)

__version__ = "0.1.0"

__all__ = [
    "BETA_SCHEDULES",
    "DEFAULT_GAMMA",
    "PREDICTION_TYPES",
    "W_CONVENTIONS",
    "KSpaceStep",
    "LCMConfig",
    "LCMScheduler",
    "LCMSchedulerOutput",
    "NoiseLevel",
    "StepCoefficients",
    "StrengthMode",
    "TCDScheduler",
    "TCDSchedulerOutput",
    "TCDStepCoefficients",
    "alphas_cumprod",
    "apply_boundary_condition",
    "betas",
    "boundary_condition_scalings",
    "check_gamma",
    "custom_timesteps",
    "distillation_grid",
    "denoise",
    "draw_noise",
    "drop_leading_steps",
    "first_step_index",
    "guidance_scale_embedding",
    "guidance_w",
    "intermediate_timesteps",
    "k_space_renoise_scale",
    "k_space_steps",
    "k_space_trajectory_sample",
    "lcm_timesteps",
    "origin_timesteps",
    "predicted_noise",
    "predicted_original_sample",
    "renoise_",
    "renoise_from_s_",
    "renoise_k_space_",
    "sample_from_k_space",
    "scaled_sum_",
    "sigmas_from_alphas_cumprod",
    "step_coefficients",
    "tcd_step_coefficients",
    "tcd_timesteps",
    "timesteps_from_sigmas",
    "trajectory_sample",
]
