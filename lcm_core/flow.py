"""Flow-matching LCM: diffusers' ``FlowMatchLCMScheduler`` as a frozen config and pure functions.

Rectified flow (Liu et al. 2022; Lipman et al. 2023, "Flow Matching") trains a velocity
v = noise - x0 along x_sigma = (1 - sigma) x0 + sigma noise, sigma in [0, 1]. The LCM-style
step on it (diffusers' ``FlowMatchLCMScheduler``, PR 11170) predicts x0 = x - sigma v and
re-noises it to the next sigma with fresh noise: x_next = (1 - sigma_next) x0 + sigma_next z.
There is no boundary condition (c_skip / c_out): the student predicts x0 directly.

The schedule follows the reference's ``set_timesteps`` operation for operation (numpy in the
precision it uses, then float32), so sigmas and timesteps are bit-identical to it; where the
reference returns a schedule with NaN or infinite values, ``flow_schedule`` raises instead.
The step's scalars are float32 values computed once per schedule on the CPU (no device
reads), and the temporaries' arithmetic (``step.difference_``) is shared with LCM and TCD.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .config import FieldKinds, SchedulerConfig, _check_number_list, _check_types, _require
from .step import Scalar, difference_

TIME_SHIFT_TYPES = ("exponential", "linear")
# torch.nn.functional.interpolate's modes (diffusers passes upscale_mode straight to it).
UPSCALE_MODES = ("nearest", "linear", "bilinear", "bicubic", "trilinear", "area", "nearest-exact")
# Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models"), eq. 5.
_KARRAS_RHO = 7.0
# The Beta(0.6, 0.6) spacing of "Beta Sampling is All You Need" (Lee et al. 2024), diffusers' default.
_BETA_SPACING_ALPHA = _BETA_SPACING_BETA = 0.6


@dataclasses.dataclass(frozen=True)
class FlowMatchConfig(SchedulerConfig):
    """diffusers' ``FlowMatchLCMScheduler`` configuration (every field, same defaults), frozen and validated.

    ``shift`` is the static timestep shift sigma' = s sigma / (1 + (s - 1) sigma) (SD3:
    Esser et al. 2024, section 5.3.2); with ``use_dynamic_shifting`` the pipeline passes
    ``mu`` instead (Flux, Qwen-Image: mu from the image's sequence length).
    """

    _SCHEDULERS: ClassVar[str] = "FlowMatchLCMScheduler"
    _CLASS_NAME: ClassVar[str] = "FlowMatchLCMScheduler"

    num_train_timesteps: int = 1000
    shift: float = 1.0
    use_dynamic_shifting: bool = False
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096
    invert_sigmas: bool = False
    shift_terminal: Optional[float] = None
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    time_shift_type: str = "exponential"
    scale_factors: Optional[Tuple[float, ...]] = None
    upscale_mode: str = "bicubic"

    def __post_init__(self) -> None:
        _check_types(self, FieldKinds(
            integers=("num_train_timesteps", "base_image_seq_len", "max_image_seq_len"),
            numbers=("shift", "base_shift", "max_shift"),
            booleans=("use_dynamic_shifting", "invert_sigmas", "use_karras_sigmas", "use_exponential_sigmas",
                      "use_beta_sigmas"),
            texts=("time_shift_type", "upscale_mode")))
        if self.shift_terminal is not None:
            _check_types(self, FieldKinds(numbers=("shift_terminal",)))
        _check_number_list(self, "scale_factors", "a list of numbers, one per step but the last, or null")
        _validate_flow(self)


def _validate_flow(config: FlowMatchConfig) -> None:
    """Raise a ValueError naming the field, its value and what would work."""
    _require(config.num_train_timesteps > 0,
             f"num_train_timesteps must be a positive integer, got {config.num_train_timesteps!r}")
    _require(math.isfinite(config.shift) and config.shift > 0,
             f"shift must be a positive number (SD3 uses 3.0, Wan 2.1 5.0 at 720p), got {config.shift!r}")
    chosen = [name for name in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
              if getattr(config, name)]
    _require(len(chosen) <= 1, f"only one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas can be "
                               f"true; got {', '.join(chosen)}")
    _require(config.time_shift_type in TIME_SHIFT_TYPES,
             f"time_shift_type must be 'exponential' or 'linear', got {config.time_shift_type!r}")
    _require(config.upscale_mode in UPSCALE_MODES,
             f"upscale_mode {config.upscale_mode!r} is not one of {', '.join(UPSCALE_MODES)}")
    # diffusers divides by (1 - shift_terminal): 1 gives infinities; it treats 0 as "not set".
    _require(config.shift_terminal is None or 0.0 <= config.shift_terminal < 1.0,
             f"shift_terminal must lie in [0, 1) or be null (Qwen-Image uses 0.02), got {config.shift_terminal!r}")
    _require(config.scale_factors is None or all(f > 0 and math.isfinite(f) for f in config.scale_factors),
             f"scale_factors must be positive numbers (SwD grows the latent by them), got {config.scale_factors!r}")
    _require(config.base_image_seq_len != config.max_image_seq_len,
             "base_image_seq_len and max_image_seq_len must differ (mu is interpolated between them), both are "
             f"{config.base_image_seq_len}")


# -- The schedule -------------------------------------------------------------------------


def shifted_sigmas(sigmas: "np.ndarray | torch.Tensor", shift: float) -> "np.ndarray | torch.Tensor":
    """The static shift s sigma / (1 + (s - 1) sigma) (SD3: Esser et al. 2024, section 5.3.2).

    In ``sigmas``' own precision, as the reference computes it.
    """
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def time_shift(config: FlowMatchConfig, mu: float, sigmas: np.ndarray) -> np.ndarray:
    """The resolution-dependent shift of Flux: e^mu / (e^mu + (1/sigma - 1)) or its linear form mu / (mu + ...).

    The exponential form equals the static shift with s = e^mu, which is how ComfyUI's
    ModelSamplingFlux carries it (its ``shift`` is mu).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        if config.time_shift_type == "exponential":
            return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1) ** 1.0)
        return mu / (mu + (1 / sigmas - 1) ** 1.0)


def dynamic_shift_mu(config: FlowMatchConfig, image_seq_len: int) -> float:
    """mu for an image of ``image_seq_len`` tokens: linear from (base_image_seq_len, base_shift) to
    (max_image_seq_len, max_shift), as diffusers' Flux and Qwen-Image pipelines compute it (calculate_shift)."""
    slope = (config.max_shift - config.base_shift) / (config.max_image_seq_len - config.base_image_seq_len)
    return image_seq_len * slope + (config.base_shift - slope * config.base_image_seq_len)


def training_sigmas(config: FlowMatchConfig) -> torch.Tensor:
    """The training table t / T for t = T..1, float32, statically shifted unless shifting is dynamic.

    Computed as the reference's constructor does, with the config's shift (a later
    ``set_shift`` does not change it there either). Its default ``set_timesteps`` spaces the
    steps between the table's ends and shifts again, so the smallest is shifted twice (a
    quirk kept for exactness).
    """
    n = config.num_train_timesteps
    table = torch.from_numpy(np.linspace(1, n, n, dtype=np.float32)[::-1].copy()) / n
    if not config.use_dynamic_shifting:
        table = shifted_sigmas(table, config.shift)
    return table


@dataclasses.dataclass(frozen=True)
class FlowSchedule:
    """What ``set_timesteps`` makes: ``sigmas`` (one per step, then the terminal 0 or 1) and ``timesteps``
    (the model's time input per step, sigma * num_train_timesteps unless given), float32 on the CPU."""

    sigmas: torch.Tensor
    timesteps: torch.Tensor


def flow_schedule(config: FlowMatchConfig, num_inference_steps: Optional[int] = None,
                  sigmas: Optional[Sequence[float]] = None, mu: Optional[float] = None,
                  timesteps: Optional[Sequence[float]] = None, shift: Optional[float] = None) -> FlowSchedule:
    """diffusers' ``FlowMatchLCMScheduler.set_timesteps``: bit-identical sigmas and timesteps.

    ``shift`` overrides the config's (``set_shift``). Raises ValueError for the reference's
    argument errors and for a schedule with NaN or infinite values (the reference returns
    one silently, e.g. for shift_terminal with a single step).
    """
    if config.use_dynamic_shifting and mu is None:
        raise ValueError("mu must be passed when use_dynamic_shifting is true (Flux / Qwen-Image pipelines compute "
                         "it from the image size: lcm_core.dynamic_shift_mu)")
    if sigmas is not None and timesteps is not None and len(sigmas) != len(timesteps):
        raise ValueError(f"sigmas ({len(sigmas)}) and timesteps ({len(timesteps)}) must have the same length")
    if num_inference_steps is not None:
        if (sigmas is not None and len(sigmas) != num_inference_steps) or (
                timesteps is not None and len(timesteps) != num_inference_steps):
            raise ValueError(f"sigmas and timesteps must have num_inference_steps ({num_inference_steps}) values "
                             "when num_inference_steps is given")
    elif sigmas is None and timesteps is None:
        raise ValueError("set_timesteps needs num_inference_steps, sigmas or timesteps; got none")
    else:
        num_inference_steps = len(sigmas) if sigmas is not None else len(timesteps)  # type: ignore[arg-type]
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
    shift = config.shift if shift is None else shift
    n_train = config.num_train_timesteps
    given_timesteps = None if timesteps is None else np.array(timesteps).astype(np.float32)
    if sigmas is None:
        if given_timesteps is None:
            table = training_sigmas(config)
            sigma_min, sigma_max = table[-1].item(), table[0].item()
            values = np.linspace(sigma_max * n_train, sigma_min * n_train, num_inference_steps) / n_train
        else:
            values = given_timesteps / n_train
    else:
        values = np.array(sigmas).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = time_shift(config, mu, values) if config.use_dynamic_shifting else shifted_sigmas(values, shift)
        if config.shift_terminal:
            values = _stretch_to_terminal(values, config.shift_terminal)
        if config.use_karras_sigmas:
            values = _karras(values, num_inference_steps)
        elif config.use_exponential_sigmas:
            values = _exponential(values, num_inference_steps)
        elif config.use_beta_sigmas:
            values = _beta_spaced(values, num_inference_steps)
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"this schedule has NaN or infinite sigmas ({num_inference_steps} steps, shift_terminal="
            f"{config.shift_terminal}, karras={config.use_karras_sigmas}, exponential={config.use_exponential_sigmas}"
            f"): diffusers returns them silently; use more steps, or no shift_terminal / sigma spacing with "
            "these settings")
    step_sigmas = torch.from_numpy(values).to(dtype=torch.float32)
    model_times = (step_sigmas * n_train if given_timesteps is None
                   else torch.from_numpy(given_timesteps).to(dtype=torch.float32))
    if config.invert_sigmas:
        # Mochi's convention: the model is given the inverted time, and sampling ends at sigma 1.
        step_sigmas = 1.0 - step_sigmas
        model_times = step_sigmas * n_train
        terminal = torch.ones(1)
    else:
        terminal = torch.zeros(1)
    return FlowSchedule(torch.cat([step_sigmas, terminal]), model_times)


def _stretch_to_terminal(sigmas: np.ndarray, shift_terminal: float) -> np.ndarray:
    """Stretch 1 - sigma so the last sigma is ``shift_terminal`` (LTX-Video's schedule, Qwen-Image's 0.02)."""
    one_minus = 1 - sigmas
    scale = one_minus[-1] / (1 - shift_terminal)
    return 1 - (one_minus / scale)


def _karras(sigmas: np.ndarray, steps: int) -> np.ndarray:
    """Karras et al. 2022, eq. 5, between the schedule's own last and first sigma."""
    sigma_min, sigma_max = sigmas[-1].item(), sigmas[0].item()
    ramp = np.linspace(0, 1, steps)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / _KARRAS_RHO), sigma_max ** (1 / _KARRAS_RHO)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** _KARRAS_RHO


def _exponential(sigmas: np.ndarray, steps: int) -> np.ndarray:
    """Sigmas evenly spaced in log sigma between the schedule's own last and first sigma."""
    sigma_min, sigma_max = sigmas[-1].item(), sigmas[0].item()
    return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), steps))


def _beta_spaced(sigmas: np.ndarray, steps: int) -> np.ndarray:
    """Sigmas at the quantiles of Beta(0.6, 0.6) (Lee et al. 2024), as the reference spaces them.

    The inverse Beta CDF comes from scipy, as in the reference (lcm_core itself needs only
    torch and numpy; ComfyUI and diffusers both install scipy).
    """
    try:
        from scipy.stats import beta as beta_distribution
    except ImportError:
        raise ImportError("use_beta_sigmas needs scipy (pip install scipy), as diffusers does") from None
    sigma_min, sigma_max = sigmas[-1].item(), sigmas[0].item()
    quantiles = [beta_distribution.ppf(t, _BETA_SPACING_ALPHA, _BETA_SPACING_BETA)
                 for t in 1 - np.linspace(0, 1, steps)]
    return np.array([sigma_min + (q * (sigma_max - sigma_min)) for q in quantiles])


# -- The step --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FlowStep:
    """The scalars of one flow LCM step: sigma, sigma_next and 1 - sigma_next, float32 values as Python
    floats (``flow_steps``) or as 0-dim float32 CPU tensors (``step.scalar_tensors``), the operands the
    reference multiplies by."""

    sigma: Scalar
    sigma_next: Scalar
    one_minus_sigma_next: Scalar


def flow_steps(sigmas: torch.Tensor) -> List[FlowStep]:
    """Per-step scalars for a schedule's sigmas (n + 1 values), computed once in float32 on the CPU."""
    sigmas = sigmas.detach().to("cpu", torch.float32)
    one_minus_next = (1 - sigmas[1:]).tolist()
    values = sigmas.tolist()
    return [FlowStep(values[i], values[i + 1], one_minus_next[i]) for i in range(len(values) - 1)]


def flow_predicted_original_sample(model_output: torch.Tensor, sample: torch.Tensor, sigma: Scalar) -> torch.Tensor:
    """x0 = x_sigma - sigma v for a velocity model (v = noise - x0), in float32 as the reference upcasts it.

    The reference computes ``sigma * model_output`` with sigma a float32 0-d tensor, in that
    order: below float32 (bf16, fp16) torch then rounds sigma to the output's dtype first, which
    neither a Python float nor the other operand order does. So sigma goes in as a 0-d CPU
    tensor (a scalar to any device, no copy), first.
    """
    if not isinstance(sigma, torch.Tensor):
        sigma = torch.tensor(sigma, dtype=torch.float32)
    return difference_(sample.to(torch.float32), sigma * model_output, into_subtrahend=True)


def flow_renoise_(noise: torch.Tensor, x0: torch.Tensor, step: FlowStep) -> torch.Tensor:
    """(1 - sigma_next) x0 + sigma_next z, in the memory of ``noise`` and of ``x0`` (both temporaries).

    Both products rounded before the sum, as in the reference (no fused multiply-add).
    """
    return noise.mul_(step.sigma_next).add_(x0.mul_(step.one_minus_sigma_next))


def scale_to(x: torch.Tensor, factor: float, initial_size: Sequence[int], mode: str) -> torch.Tensor:
    """SwD's scale-wise step (Starodubcev et al. 2025): resize x0 to round(factor * the first step's size)."""
    size = [round(factor * side) for side in initial_size]
    return torch.nn.functional.interpolate(x, size=size, mode=mode)
