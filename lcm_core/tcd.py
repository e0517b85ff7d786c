"""One TCD sampling step as pure functions of tensors.

Zheng et al. 2024, "Trajectory Consistency Distillation" (arXiv:2402.19159), Strategic
Stochastic Sampling. From x_t the model's x0 and eps give the point of the trajectory at
an earlier timestep s = floor((1 - gamma) * t_prev),

    x_s = sqrt(a_s) x0 + sqrt(1 - a_s) eps,                                   (1)

and the forward process carries it on to the next timestep t_prev with fresh noise z,

    x_prev = sqrt(a_prev / a_s) x_s + sqrt(1 - a_prev / a_s) z.               (2)

gamma = 0 is deterministic (s = t_prev: a DDIM step with the model's x0, and no noise);
gamma = 1 goes to s = 0 and re-noises fully, like LCM's multistep sampling. The last step
goes to t_prev = 0 and returns x_s at s = 0 itself, sqrt(a_0) x0 + sqrt(1 - a_0) eps (not
x0), with no noise. diffusers' ``TCDScheduler`` (the reference) calls gamma ``eta``.

As in ``step``, the per-step scalars are computed once (per schedule and gamma) in float32
exactly as the reference computes them, and reach the tensor maths as Python floats, so a
step does no host-device synchronisation.

In ComfyUI's k-space (x_k = x0 + sigma eps, sigma^2 = (1 - a) / a, x_t = x_k / sqrt(1 + sigma^2))
the same step reads x_s_k = x0 + sigma_s eps and x_prev_k = x_s_k + sqrt(sigma_prev^2 - sigma_s^2) z:
(1) divided by sqrt(a_s) is x0 + sigma_s eps, and (2) divided by sqrt(a_prev) is
x_s / sqrt(a_s) + sqrt(1 / a_prev - 1 / a_s) z, with 1 / a = 1 + sigma^2.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import List, Sequence, Tuple

import torch

from .schedule import timesteps_from_sigmas
from .step import Scalar, predicted_noise, predicted_original_sample, scaled_sum_

# The TCD authors' default gamma (diffusers' TCDScheduler.step eta=0.3). Note that the SD and
# SDXL pipelines pass their own eta, which defaults to 0.0.
DEFAULT_GAMMA = 0.3


def check_gamma(gamma: float) -> float:
    """gamma (diffusers' ``eta``) as a float in [0, 1], else a ValueError naming it.

    The reference only asserts 0 <= eta <= 1, so under ``python -O`` a gamma above 1 gives a
    negative s and silently indexes alpha_bar from its end.
    """
    if not isinstance(gamma, numbers.Real) or isinstance(gamma, bool) or not 0.0 <= gamma <= 1.0:
        raise ValueError(
            f"gamma (diffusers' eta) must lie in [0, 1], got {gamma!r}: 0 is deterministic, 1 re-noises fully at "
            f"every step like LCM; the TCD authors use {DEFAULT_GAMMA}")
    return float(gamma)


def intermediate_timesteps(prev_timesteps: Sequence[int], gamma: float) -> Tuple[int, ...]:
    """s = floor((1 - gamma) * t_prev) for each step, as the reference computes it.

    The product is rounded to float32 before the floor (a Python float times an integer
    tensor): gamma 0.3 and t_prev 90 give s = 63, where float64 would give 62.
    """
    prev = torch.tensor(list(prev_timesteps), dtype=torch.int64)
    return tuple(torch.floor((1.0 - check_gamma(gamma)) * prev).to(torch.int64).tolist())


@dataclasses.dataclass(frozen=True)
class TCDStepCoefficients:
    """The scalars of one step from ``timestep`` through ``timestep_s`` to ``timestep_prev``.

    ``sqrt_alpha`` / ``sqrt_beta``: sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t);
    ``sqrt_alpha_s`` / ``sqrt_beta_s``: the same at s (eq. 1);
    ``renoise_signal`` / ``renoise_noise``: sqrt(a_prev / a_s), sqrt(1 - a_prev / a_s) (eq. 2);
    ``draws_noise``: gamma > 0 and not the last step (the reference draws no noise otherwise).
    The scalars are floats (``tcd_step_coefficients``) or 0-dim tensors (``step.scalar_tensors``).
    """

    timestep: int
    timestep_prev: int
    timestep_s: int
    sqrt_alpha: Scalar
    sqrt_beta: Scalar
    sqrt_alpha_s: Scalar
    sqrt_beta_s: Scalar
    renoise_signal: Scalar
    renoise_noise: Scalar
    draws_noise: bool


def tcd_step_coefficients(alpha_bar: torch.Tensor, timesteps: Sequence[int], gamma: float) -> List[TCDStepCoefficients]:
    """Per-step scalars of a descending schedule for one gamma, computed once (float32 on the CPU)."""
    gamma = check_gamma(gamma)
    t = torch.tensor(list(timesteps), dtype=torch.int64)
    # After the last step the reference goes to timestep 0 (alpha_bar_0, not set_alpha_to_one's 1).
    t_prev = torch.cat([t[1:], t.new_zeros(1)])
    s = torch.tensor(intermediate_timesteps(t_prev.tolist(), gamma), dtype=torch.int64)
    alpha, alpha_s = alpha_bar[t], alpha_bar[s]
    ratio = alpha_bar[t_prev] / alpha_s
    columns = {
        "sqrt_alpha": alpha.sqrt(),
        "sqrt_beta": (1 - alpha).sqrt(),
        "sqrt_alpha_s": alpha_s.sqrt(),
        "sqrt_beta_s": (1 - alpha_s).sqrt(),
        "renoise_signal": ratio.sqrt(),
        "renoise_noise": (1 - ratio).sqrt(),
    }
    values = {name: column.tolist() for name, column in columns.items()}
    last = len(t) - 1
    return [
        TCDStepCoefficients(timestep=t_i, timestep_prev=prev_i, timestep_s=s_i,
                            draws_noise=gamma > 0 and i < last, **{name: values[name][i] for name in columns})
        for i, (t_i, prev_i, s_i) in enumerate(zip(t.tolist(), t_prev.tolist(), s.tolist()))
    ]


def trajectory_sample(
    model_output: torch.Tensor, sample: torch.Tensor, c: TCDStepCoefficients, prediction_type: str
) -> torch.Tensor:
    """x_s of eq. (1) from the model output at x_t: the reference's ``pred_noised_sample``.

    x0 and eps come from the shared parameterisation formulas; the sum is written into
    whichever of the two is a fresh tensor, never into the caller's model output.
    """
    x0 = predicted_original_sample(model_output, sample, c, prediction_type)
    eps = predicted_noise(model_output, sample, x0, c, prediction_type)
    if x0 is model_output:
        return scaled_sum_(eps, c.sqrt_beta_s, x0, c.sqrt_alpha_s)
    return scaled_sum_(x0, c.sqrt_alpha_s, eps, c.sqrt_beta_s)


def renoise_from_s_(noise: torch.Tensor, x_s: torch.Tensor, c: TCDStepCoefficients) -> torch.Tensor:
    """x_prev of eq. (2), in ``noise``'s memory."""
    return scaled_sum_(noise, c.renoise_noise, x_s, c.renoise_signal)


# -- The same step in k-diffusion's variables, as ComfyUI samples -------------------------


@dataclasses.dataclass(frozen=True)
class KSpaceStep:
    """One TCD step over ComfyUI sigmas, from ``sigma`` to ``sigma_next``.

    ``sigma_s``: the noise level of s; ``renoise_scale``: sqrt(sigma_next^2 - sigma_s^2);
    ``final``: the step to t = 0 (sigma_next is 0), which returns x_s in diffusers' variables.
    """

    sigma: float
    sigma_next: float
    timestep_prev: int
    timestep_s: int
    sigma_s: float
    renoise_scale: float
    draws_noise: bool
    final: bool


def k_space_steps(sigmas: Sequence[float], sigma_table: torch.Tensor, gamma: float) -> List[KSpaceStep]:
    """TCD steps over a descending sigma list (ending in 0 for a whole run), on the CPU.

    ``sigma_table`` is sigma_t for every training timestep (``sigmas_from_alphas_cumprod``):
    the next sigma's nearest timestep is t_prev (0 after a final sigma of 0), s follows
    from gamma, and sigma_s is read from the table. A list that ends above 0 (a run split
    in two) re-noises on its last step too, as that step does inside the whole run.
    """
    gamma = check_gamma(gamma)
    sigma_values = [float(sigma) for sigma in sigmas]
    if any(not sigma > 0 for sigma in sigma_values[:-1]):
        raise ValueError(f"sigmas must be positive before the last one, got {sigma_values}; a sampler cannot step "
                         "from sigma 0")
    nexts = sigma_values[1:]
    prev_timesteps = [0] * len(nexts)  # a next sigma of 0 is t = 0
    noisy = [i for i, sigma in enumerate(nexts) if sigma > 0]
    if noisy:
        nearest = timesteps_from_sigmas(torch.tensor([nexts[i] for i in noisy], dtype=torch.float64), sigma_table)
        for i, t_prev in zip(noisy, nearest.tolist()):
            prev_timesteps[i] = t_prev
    s_timesteps = intermediate_timesteps(prev_timesteps, gamma)
    sigma_s_values = sigma_table[list(s_timesteps)].to(torch.float64).tolist()
    steps = []
    for sigma, sigma_next, t_prev, s, sigma_s in zip(sigma_values, nexts, prev_timesteps, s_timesteps,
                                                     sigma_s_values):
        draws_noise = gamma > 0 and sigma_next > 0
        steps.append(KSpaceStep(
            sigma=sigma, sigma_next=sigma_next, timestep_prev=t_prev, timestep_s=s, sigma_s=sigma_s,
            renoise_scale=k_space_renoise_scale(sigma_next, sigma_s) if draws_noise else 0.0,
            draws_noise=draws_noise, final=sigma_next == 0))
    return steps


def k_space_renoise_scale(sigma_prev: float, sigma_s: float) -> float:
    """sqrt(sigma_prev^2 - sigma_s^2): eq. (2) in k-space (0 where float rounding crosses)."""
    return math.sqrt(max(sigma_prev * sigma_prev - sigma_s * sigma_s, 0.0))


def k_space_trajectory_sample(x0: torch.Tensor, x_k: torch.Tensor, step: KSpaceStep) -> torch.Tensor:
    """x_s_k = x0 + sigma_s * eps with eps = (x_k - x0) / sigma: eq. (1) in k-space, as one lerp."""
    return torch.lerp(x0, x_k, step.sigma_s / step.sigma)
