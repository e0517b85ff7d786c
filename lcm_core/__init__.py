"""lcm_core: the Latent Consistency Model multistep scheduler, equal to diffusers' ``LCMScheduler``.

torch + numpy only. ``LCMScheduler`` is the diffusers-compatible class; the pure
functions in ``schedule`` and ``step`` are the formulas it (and the ComfyUI nodes) use.
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
    sigmas_from_alphas_cumprod,
    timesteps_from_sigmas,
)
from .scheduler import LCMScheduler, LCMSchedulerOutput
from .step import (
    StepCoefficients,
    apply_boundary_condition,
    boundary_condition_scalings,
    denoise,
    draw_noise,
    predicted_original_sample,
    renoise_,
    renoise_k_space_,
    sample_from_k_space,
    step_coefficients,
)

__version__ = "0.1.0"

__all__ = [
    "BETA_SCHEDULES",
    "PREDICTION_TYPES",
    "W_CONVENTIONS",
    "LCMConfig",
    "LCMScheduler",
    "LCMSchedulerOutput",
    "StepCoefficients",
    "StrengthMode",
    "alphas_cumprod",
    "apply_boundary_condition",
    "betas",
    "boundary_condition_scalings",
    "custom_timesteps",
    "distillation_grid",
    "denoise",
    "draw_noise",
    "drop_leading_steps",
    "first_step_index",
    "guidance_scale_embedding",
    "guidance_w",
    "lcm_timesteps",
    "predicted_original_sample",
    "renoise_",
    "renoise_k_space_",
    "sample_from_k_space",
    "sigmas_from_alphas_cumprod",
    "step_coefficients",
    "timesteps_from_sigmas",
]
