"""Noise schedule and timestep selection: pure functions of an :class:`LCMConfig`.

Each formula follows diffusers' ``LCMScheduler`` (the reference) operation for
operation in float32, so the tensors are bit-identical to the reference's; where the
reference crashes or silently misbehaves, these functions raise a clear error instead
(README, "Differences from diffusers").
"""

from __future__ import annotations

import enum
import logging
import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from .config import LCMConfig

logger = logging.getLogger(__name__)

# ComfyUI's stand-in for alphas_cumprod == 0 at a zero terminal SNR (its
# rescale_zero_terminal_snr_sigmas): it keeps the terminal sigma finite (about 4519).
ZERO_SNR_TERMINAL_ALPHA_CUMPROD = 4.8973451890853435e-08

# Largest beta of the cosine schedule (Nichol & Dhariwal 2021, "Improved DDPM", eq. 17).
_COSINE_MAX_BETA = 0.999


class StrengthMode(str, enum.Enum):
    """What ``strength`` < 1 does to the schedule.

    ``LCM_GRID``: the LCM pipelines' meaning (diffusers' ``set_timesteps(strength=)``):
    shrink the distillation grid to its lower ``strength`` part, then pick the steps
    from it (4 steps at 0.5 run 499, 379, 259, 139).
    ``DROP_LEADING``: the SD img2img pipelines' meaning (``get_timesteps``): make the
    full schedule, then drop its leading steps (4 steps at 0.5 run 499, 259).
    """

    LCM_GRID = "lcm_grid"
    DROP_LEADING = "drop_leading"


def betas(config: LCMConfig) -> torch.Tensor:
    """The training betas, float32 on the CPU (zero-SNR rescaled when asked)."""
    n = config.num_train_timesteps
    if config.trained_betas is not None:
        result = torch.tensor(config.trained_betas, dtype=torch.float32)
    elif config.beta_schedule == "linear":
        result = torch.linspace(config.beta_start, config.beta_end, n, dtype=torch.float32)
    elif config.beta_schedule == "scaled_linear":
        # Linear in sqrt(beta): the schedule of Stable Diffusion (LDM, Rombach et al. 2022).
        result = torch.linspace(config.beta_start**0.5, config.beta_end**0.5, n, dtype=torch.float32) ** 2
    else:
        result = _cosine_betas(n)
    if config.rescale_betas_zero_snr:
        result = _rescale_to_zero_terminal_snr(result)
    return result


def _cosine_betas(n: int) -> torch.Tensor:
    """Betas of the cosine alpha-bar (Improved DDPM, eq. 17), in float64 Python maths, capped."""

    def alpha_bar(t: float) -> float:
        # s = 0.008 keeps beta_0 from being vanishingly small (Improved DDPM, section 3.2).
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    values = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), _COSINE_MAX_BETA) for i in range(n)]
    return torch.tensor(values, dtype=torch.float32)


def _rescale_to_zero_terminal_snr(betas_: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1.

    Shift sqrt(alpha_bar) so its last value is 0 and scale it so its first value is kept.
    """
    sqrt_alpha_bar = torch.cumprod(1.0 - betas_, dim=0).sqrt()
    first, last = sqrt_alpha_bar[0].clone(), sqrt_alpha_bar[-1].clone()
    sqrt_alpha_bar = (sqrt_alpha_bar - last) * (first / (first - last))
    alpha_bar = sqrt_alpha_bar**2
    alphas = torch.cat([alpha_bar[0:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


def alphas_cumprod(config: LCMConfig) -> torch.Tensor:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s), float32 on the CPU, one per training timestep."""
    return torch.cumprod(1.0 - betas(config), dim=0)


def final_alpha_cumprod(config: LCMConfig, alpha_bar: torch.Tensor) -> torch.Tensor:
    """alpha_bar "before" timestep 0: 1 with ``set_alpha_to_one``, else alpha_bar_0."""
    return torch.tensor(1.0) if config.set_alpha_to_one else alpha_bar[0]


def distillation_grid(config: LCMConfig, original_inference_steps: int, strength: float = 1.0) -> np.ndarray:
    """The LCM training/distillation timesteps, ascending: k-1, 2k-1, ... with k = T // N.

    LCM (Luo et al. 2023, "skipping-step" distillation) distils on N = original_inference_steps
    evenly spaced timesteps; ``strength`` keeps the lower int(N * strength) of them.
    """
    k = config.num_train_timesteps // original_inference_steps
    return np.arange(1, int(original_inference_steps * strength) + 1, dtype=np.int64) * k - 1


def origin_timesteps(config: LCMConfig, original_inference_steps: int, strength: float = 1.0,
                     dense: bool = False) -> np.ndarray:
    """The ascending timesteps a schedule picks its steps from.

    The distillation grid, or with ``dense`` every training timestep below int(T * strength):
    diffusers' ``TCDScheduler`` uses that dense grid when ``original_inference_steps`` is
    passed to ``set_timesteps`` explicitly (the trajectory consistency function is trained
    on the whole trajectory, so any timestep is valid); the count then only caps the steps.
    """
    if dense:
        return np.arange(int(config.num_train_timesteps * strength), dtype=np.int64)
    return distillation_grid(config, original_inference_steps, strength)


def _check_strength(strength: float) -> float:
    # Deliberate difference: diffusers accepts strength > 1 and fails later with an
    # IndexError inside step(); strength <= 0 gives an empty schedule.
    if not isinstance(strength, (int, float)) or isinstance(strength, bool) or not 0.0 < strength <= 1.0:
        raise ValueError(
            f"strength must lie in (0, 1], got {strength!r}: 1.0 is txt2img, 0.5 keeps half of the noise "
            "schedule for img2img")
    return float(strength)


def _is_count(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _original_steps(config: LCMConfig, original_inference_steps: Optional[int], dense: bool = False) -> int:
    steps = config.original_inference_steps if original_inference_steps is None else original_inference_steps
    if not _is_count(steps) or steps < 1:
        raise ValueError(f"original_inference_steps must be a positive integer, got {steps!r}")
    # On the dense grid the count only caps the steps, and the reference accepts any.
    if steps > config.num_train_timesteps and not dense:
        raise ValueError(
            f"original_inference_steps ({steps}) cannot be larger than num_train_timesteps "
            f"({config.num_train_timesteps}); the model only knows that many timesteps")
    return int(steps)


def lcm_timesteps(
    config: LCMConfig,
    num_inference_steps: int,
    original_inference_steps: Optional[int] = None,
    strength: float = 1.0,
    strength_mode: StrengthMode = StrengthMode.LCM_GRID,
) -> Tuple[int, ...]:
    """The descending inference timesteps of diffusers' ``LCMScheduler.set_timesteps``.

    Picks ``num_inference_steps`` evenly spaced indices (floor of a linspace without its
    endpoint) from the descending distillation grid. With ``StrengthMode.DROP_LEADING``
    the full schedule is made first and its leading steps are dropped instead.
    """
    return _picked_timesteps(config, num_inference_steps, original_inference_steps, strength, strength_mode,
                             dense=False)


def tcd_timesteps(
    config: LCMConfig,
    num_inference_steps: int,
    original_inference_steps: Optional[int] = None,
    strength: float = 1.0,
    strength_mode: StrengthMode = StrengthMode.LCM_GRID,
) -> Tuple[int, ...]:
    """The descending inference timesteps of diffusers' ``TCDScheduler.set_timesteps``.

    Without ``original_inference_steps`` these are LCM's (the config's distillation grid).
    Passing it, even with the config's own value, switches to the dense grid of every
    training timestep below int(T * strength) and only caps the steps: 4 steps give
    999, 759, 499, 259 by default and 999, 749, 499, 249 with original_inference_steps=50.
    """
    return _picked_timesteps(config, num_inference_steps, original_inference_steps, strength, strength_mode,
                             dense=original_inference_steps is not None)


def _picked_timesteps(config: LCMConfig, num_inference_steps: int, original_inference_steps: Optional[int],
                      strength: float, strength_mode: StrengthMode, dense: bool) -> Tuple[int, ...]:
    """``num_inference_steps`` evenly spaced indices into the descending origin grid (LCM and TCD alike)."""
    strength = _check_strength(strength)
    original = _original_steps(config, original_inference_steps, dense)
    if not _is_count(num_inference_steps) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
    if num_inference_steps > config.num_train_timesteps:
        raise ValueError(
            f"num_inference_steps ({num_inference_steps}) cannot be larger than num_train_timesteps "
            f"({config.num_train_timesteps})")
    if num_inference_steps > original:
        source = ("the explicit original_inference_steps caps the steps of the dense grid" if dense else
                  "LCM picks its steps from that many distillation timesteps")
        raise ValueError(
            f"num_inference_steps ({num_inference_steps}) cannot be larger than original_inference_steps "
            f"({original}): {source}; lower the steps to at most {original} or raise original_inference_steps to "
            f"at least {num_inference_steps}")
    grid_strength = strength if strength_mode == StrengthMode.LCM_GRID else 1.0
    grid = origin_timesteps(config, original, grid_strength, dense)[::-1]
    if len(grid) < num_inference_steps:
        total, kind = ((config.num_train_timesteps, "training timesteps (num_train_timesteps x strength)") if dense
                       else (original, "distillation timesteps (original_inference_steps x strength)"))
        raise ValueError(
            f"strength {strength} keeps only {len(grid)} of the {total} {kind}, fewer than num_inference_steps "
            f"({num_inference_steps}); use at most {len(grid)} steps or a strength of at least "
            f"{num_inference_steps / total:g}")
    indices = np.floor(np.linspace(0, len(grid), num=num_inference_steps, endpoint=False)).astype(np.int64)
    timesteps = tuple(int(t) for t in grid[indices])
    if strength_mode == StrengthMode.DROP_LEADING:
        timesteps = drop_leading_steps(timesteps, strength)
    return timesteps


def drop_leading_steps(timesteps: Sequence[int], strength: float) -> Tuple[int, ...]:
    """SD img2img truncation (diffusers' ``get_timesteps``): keep the last int(n * strength) steps."""
    n = len(timesteps)
    kept = min(int(n * _check_strength(strength)), n)
    if kept < 1:
        # diffusers runs an empty loop here and returns its input unchanged.
        raise ValueError(
            f"strength {strength} keeps int({n} x {strength}) = 0 of the {n} steps; "
            f"use at least {math.ceil(1 / strength)} steps or a strength of at least {1 / n:g}")
    return tuple(int(t) for t in timesteps[n - kept:])


def custom_timesteps(
    config: LCMConfig,
    timesteps: Sequence[int],
    original_inference_steps: Optional[int] = None,
    strength: float = 1.0,
    dense: bool = False,
) -> Tuple[int, ...]:
    """Validate a user's descending timestep list as diffusers does; apply ``strength`` by dropping leading steps.

    Off-grid timesteps, a first step below T-1 at full strength and lists longer than
    the distillation grid are allowed with a warning, as in the reference. ``dense``: the
    grid the warning checks against is TCD's dense one (``origin_timesteps``).
    """
    strength = _check_strength(strength)
    original = _original_steps(config, original_inference_steps, dense)
    values = [int(t) for t in timesteps]
    if not values:
        raise ValueError("custom timesteps must hold at least one timestep, e.g. 999, 759, 499, 259")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise ValueError(f"custom timesteps must be strictly descending, got {values}")
    if values[0] >= config.num_train_timesteps:
        raise ValueError(
            f"custom timesteps must be below num_train_timesteps ({config.num_train_timesteps}), "
            f"the first is {values[0]}")
    if values[-1] < 0:
        raise ValueError(f"custom timesteps must not be negative, the last is {values[-1]}")
    grid = set(origin_timesteps(config, original, strength, dense).tolist())
    off_grid = [t for t in values[1:] if t not in grid]
    if strength == 1.0 and values[0] != config.num_train_timesteps - 1:
        logger.warning("custom timesteps start at %d, not at %d: the first step will not start from pure noise",
                       values[0], config.num_train_timesteps - 1)
    if off_grid:
        grid_name = (f"the training timesteps below {len(grid)}" if dense else
                     f"the LCM distillation grid (original_inference_steps={original})")
        logger.warning("custom timesteps %s are not on %s; results may be poor", off_grid, grid_name)
    if len(values) > original:
        logger.warning("%d custom timesteps exceed original_inference_steps (%d)", len(values), original)
    return drop_leading_steps(values, strength)


def first_step_index(timesteps: Sequence[int], timestep: int) -> int:
    """Where a run that starts at ``timestep`` starts in ``timesteps`` (diffusers' rule).

    Where the value repeats, the second occurrence: a schedule cut for img2img then does
    not skip a step. Raises IndexError, as the reference does, when it is absent.
    """
    positions = [i for i, t in enumerate(timesteps) if t == timestep]
    if not positions:
        raise IndexError(f"timestep {timestep} is not in the schedule {list(timesteps)}")
    return positions[1] if len(positions) > 1 else positions[0]


def sigmas_from_alphas_cumprod(alpha_bar: torch.Tensor) -> torch.Tensor:
    """k-diffusion noise levels sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), float32.

    Computed in float64 on the CPU from the float32 alpha_bar; a zero alpha_bar (zero
    terminal SNR) is replaced by ComfyUI's stand-in so the sigma stays finite.
    """
    a = alpha_bar.detach().to("cpu", torch.float64)
    a = torch.where(a > 0, a, torch.full_like(a, ZERO_SNR_TERMINAL_ALPHA_CUMPROD))
    return ((1 - a) / a).sqrt().to(torch.float32)


def timesteps_from_sigmas(sigmas: torch.Tensor, sigma_table: torch.Tensor) -> torch.Tensor:
    """Nearest training timestep (in log sigma) of each sigma, as ComfyUI's model_sampling does."""
    log_table = sigma_table.to(torch.float64).log()
    log_sigmas = sigmas.to(torch.float64).log()
    return (log_sigmas[:, None] - log_table[None, :]).abs().argmin(dim=1)
