"""lcm_core: the Latent Consistency Model multistep scheduler, equal to diffusers' ``LCMScheduler``.

torch + numpy only. ``LCMScheduler`` is the diffusers-compatible class; the pure
functions in ``schedule`` and ``step`` are the formulas it (and the ComfyUI nodes) use.
"""

from .config import BETA_SCHEDULES, PREDICTION_TYPES, LCMConfig
from .schedule import (
    StrengthMode,
    alphas_cumprod,
    betas,
    custom_timesteps,
    drop_leading_steps,
    first_step_index,
    lcm_timesteps,
    sigmas_from_alphas_cumprod,
    timesteps_from_sigmas,
)
from .scheduler import LCMScheduler, LCMSchedulerOutput
from .step import (
    StepCoefficients,
    boundary_condition_scalings,
    denoise,
    draw_noise,
    predicted_original_sample,
    renoise_,
    step_coefficients,
)

__version__ = "0.1.0"

__all__ = [
    "BETA_SCHEDULES",
    "PREDICTION_TYPES",
    "LCMConfig",
    "LCMScheduler",
    "LCMSchedulerOutput",
    "StepCoefficients",
    "StrengthMode",
    "alphas_cumprod",
    "betas",
    "boundary_condition_scalings",
    "custom_timesteps",
    "denoise",
    "draw_noise",
    "drop_leading_steps",
    "first_step_index",
    "lcm_timesteps",
    "predicted_original_sample",
    "renoise_",
    "sigmas_from_alphas_cumprod",
    "step_coefficients",
    "timesteps_from_sigmas",
]
