"""One LCM multistep update as pure functions of tensors.

Luo et al. 2023, "Latent Consistency Models", Algorithm 3 (multistep sampling): predict
x0 from the model output, apply the consistency boundary condition
f(x, t) = c_skip(t) * x + c_out(t) * x0, then re-noise to the next timestep.

The per-step scalars are computed once per schedule (``step_coefficients``) in float32
exactly as diffusers' ``LCMScheduler.step`` computes them, and handed to the tensor
maths as Python floats: a Python scalar never touches device memory, so stepping does no
host-device synchronisation on any device.

The parameterisation formulas (x0 and eps from each prediction type), the forward-process
mix ``scaled_sum_``, the k-space conversions and ``draw_noise`` serve TCD's step
(``tcd``) as well.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Protocol, Sequence, Tuple, TypeVar, Union

import torch

from .config import LCMConfig

# sigma_data of the consistency-model parameterisation (Song et al. 2023, "Consistency
# Models"; LCM keeps its default of 0.5).
SIGMA_DATA = 0.5

Generators = Union[torch.Generator, Sequence[torch.Generator], None]
# A step's scalar: a Python float, or the same value as a 0-dim float32 CPU tensor (``scalar_tensors``).
Scalar = Union[float, torch.Tensor]
_Coefficients = TypeVar("_Coefficients")


class NoiseLevel(Protocol):
    """The forward-process scalars at a timestep t: sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t).

    LCM's and TCD's per-step coefficients both carry them, so the parameterisation
    formulas below serve both schedulers.
    """

    sqrt_alpha: Scalar
    sqrt_beta: Scalar


@dataclasses.dataclass(frozen=True)
class StepCoefficients:
    """The scalars of one step at ``timestep``, going to ``timestep_prev``.

    ``sqrt_alpha`` / ``sqrt_beta``: sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t);
    ``c_skip`` / ``c_out``: the boundary-condition scalings;
    ``sqrt_alpha_prev`` / ``sqrt_beta_prev``: the same terms at the next timestep (for the
    last step, at ``timestep`` itself, as in the reference; they are then unused).
    The scalars are floats (``step_coefficients``) or 0-dim tensors (``scalar_tensors``, c_skip kept).
    """

    timestep: int
    sqrt_alpha: Scalar
    sqrt_beta: Scalar
    c_skip: float
    c_out: Scalar
    sqrt_alpha_prev: Scalar
    sqrt_beta_prev: Scalar
    # sqrt(alpha_bar_t) / c_out: dividing by it gives c_out * x0 for epsilon prediction in
    # one operation (bit-identical to the reference where c_out == 1.0 in float32).
    epsilon_x0_divisor_over_c_out: Scalar
    # 1 / c_out: the same for sample and v prediction.
    one_over_c_out: Scalar


def scalar_tensors(coefficients: _Coefficients, keep: Sequence[str] = ()) -> _Coefficients:
    """The same per-step coefficients (a dataclass) with each float as a 0-dim float32 CPU tensor.

    Fields named in ``keep`` stay floats (``torch.add``'s ``alpha`` takes only a number).

    Those are the operands the reference multiplies by (its alpha_bar values), and they give the
    same results as the floats on every device and dtype. On the CPU they are also cheaper: a
    Python float is first converted to a tensor of the operand's dtype inside every operation,
    about a quarter of a step's arithmetic at 1x4x128x128. Other devices read a CPU scalar
    on the host, so a step still does no host-device synchronisation.
    """
    return dataclasses.replace(coefficients, **{  # type: ignore[type-var]
        field.name: torch.tensor(getattr(coefficients, field.name), dtype=torch.float32)
        for field in dataclasses.fields(coefficients)  # type: ignore[arg-type]
        if isinstance(getattr(coefficients, field.name), float) and field.name not in keep})


def boundary_condition_scalings(timesteps: torch.Tensor, timestep_scaling: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """c_skip(t) and c_out(t) of the consistency boundary condition, float32.

    The consistency-model parameterisation (Song et al. 2023, "Consistency Models") in the
    discrete form LCM uses (diffusers' ``get_scalings_for_boundary_condition_discrete``):
    c_skip = sigma_data^2 / ((s t)^2 + sigma_data^2), c_out = s t / sqrt((s t)^2 + sigma_data^2),
    with s = ``timestep_scaling``; c_skip(0) = 1 and c_out(0) = 0 make f(x, 0) = x.
    """
    scaled = timesteps.to(torch.int64) * timestep_scaling  # float32, as with the reference's tensor timesteps
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + SIGMA_DATA**2) ** 0.5
    return c_skip, c_out


def step_coefficients(
    alpha_bar: torch.Tensor, timesteps: Sequence[int], timestep_scaling: float
) -> List[StepCoefficients]:
    """Per-step scalars for a descending schedule, computed once (float32 on the CPU)."""
    t = torch.tensor(list(timesteps), dtype=torch.int64)
    # The reference steps from the last timestep "to itself" (prev_timestep = timestep).
    t_prev = torch.cat([t[1:], t[-1:]])
    alpha, alpha_prev = alpha_bar[t], alpha_bar[t_prev]
    sqrt_alpha, sqrt_beta = alpha.sqrt(), (1 - alpha).sqrt()
    c_skip, c_out = boundary_condition_scalings(t, timestep_scaling)
    columns = {
        "sqrt_alpha": sqrt_alpha,
        "sqrt_beta": sqrt_beta,
        "c_skip": c_skip,
        "c_out": c_out,
        "sqrt_alpha_prev": alpha_prev.sqrt(),
        "sqrt_beta_prev": (1 - alpha_prev).sqrt(),
        "epsilon_x0_divisor_over_c_out": sqrt_alpha / c_out,
        "one_over_c_out": 1 / c_out,
    }
    values = {name: column.tolist() for name, column in columns.items()}
    return [
        StepCoefficients(timestep=int(step_t), **{name: values[name][i] for name in columns})
        for i, step_t in enumerate(t.tolist())
    ]


def _holds(fresh: torch.Tensor, other: torch.Tensor) -> bool:
    """Whether ``fresh`` can take the result of a binary op with ``other`` exactly as a new tensor would.

    Writing into a temporary saves an allocation and keeps the memory in cache (a step is about
    ten passes over the latent). The same shape and dtype rule out broadcasting and type promotion;
    tensors that need gradients keep the out-of-place op (``out=`` has no autograd).
    """
    return (fresh.shape == other.shape and fresh.dtype == other.dtype
            and not (fresh.requires_grad or other.requires_grad))


def difference_(minuend: torch.Tensor, subtrahend: torch.Tensor, into_subtrahend: bool = False) -> torch.Tensor:
    """minuend - subtrahend, in the memory of the temporary of the two (the minuend unless
    ``into_subtrahend``) where it holds the result exactly, else as a new tensor."""
    fresh = subtrahend if into_subtrahend else minuend
    if _holds(fresh, subtrahend if fresh is minuend else minuend):
        return torch.sub(minuend, subtrahend, out=fresh)
    return minuend - subtrahend


def sum_(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """fresh + other, in the temporary ``fresh``'s memory where it holds the result exactly."""
    return fresh.add_(other) if _holds(fresh, other) else fresh + other


def predicted_original_sample(
    model_output: torch.Tensor, sample: torch.Tensor, c: NoiseLevel, prediction_type: str
) -> torch.Tensor:
    """x0 from the model output (DDPM parameterisations, as the reference computes them)."""
    if prediction_type == "epsilon":  # x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)   (Ho et al. 2020, eq. 15)
        return difference_(sample, model_output * c.sqrt_beta, into_subtrahend=True).div_(c.sqrt_alpha)
    if prediction_type == "v_prediction":  # x0 = sqrt(a) x_t - sqrt(1 - a) v  (Salimans & Ho 2022)
        return difference_(sample * c.sqrt_alpha, model_output * c.sqrt_beta)
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"prediction_type {prediction_type!r} must be 'epsilon', 'sample' or 'v_prediction'")


def predicted_noise(
    model_output: torch.Tensor, sample: torch.Tensor, x0: torch.Tensor, c: NoiseLevel, prediction_type: str
) -> torch.Tensor:
    """eps from the model output and its x0 (the counterpart of ``predicted_original_sample``).

    x_t = sqrt(a) x0 + sqrt(1 - a) eps solved for eps, in the reference's operations for
    each parameterisation.
    """
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":  # eps = sqrt(a) v + sqrt(1 - a) x_t  (Salimans & Ho 2022)
        return sum_(model_output * c.sqrt_alpha, sample * c.sqrt_beta)
    if prediction_type == "sample":  # eps = (x_t - sqrt(a) x0) / sqrt(1 - a)
        return difference_(sample, x0 * c.sqrt_alpha, into_subtrahend=True).div_(c.sqrt_beta)
    raise ValueError(f"prediction_type {prediction_type!r} must be 'epsilon', 'sample' or 'v_prediction'")


def dynamic_threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022, section 2.3).

    Per sample, s = the ``ratio`` quantile of |x0| clamped to [1, ``max_value``]; x0 is
    clamped to [-s, s] and divided by s. Computed in float32 (quantile needs it).
    """
    dtype = x0.dtype
    flat = x0.reshape(x0.shape[0], -1)
    if dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    s = torch.quantile(flat.abs(), ratio, dim=1)
    s = torch.clamp(s, min=1, max=max_value).unsqueeze(1)
    return (torch.clamp(flat, -s, s) / s).reshape(x0.shape).to(dtype)


def clip_or_threshold(x0: torch.Tensor, config: LCMConfig) -> torch.Tensor:
    """Apply the config's dynamic thresholding, else its clipping, else nothing."""
    if config.thresholding:
        return dynamic_threshold(x0, config.dynamic_thresholding_ratio, config.sample_max_value)
    if config.clip_sample:
        return x0.clamp(-config.clip_sample_range, config.clip_sample_range)
    return x0


def denoise(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    c: StepCoefficients,
    config: LCMConfig,
    prediction_type: Optional[str] = None,
) -> torch.Tensor:
    """The consistency function f(x_t, t) = c_out * x0 + c_skip * x_t (LCM, Algorithm 3).

    ``prediction_type`` overrides the config's (the ComfyUI sampler passes "sample":
    the host model already returns x0).
    """
    prediction_type = prediction_type or config.prediction_type
    if config.thresholding or config.clip_sample or prediction_type == "sample":
        x0 = clip_or_threshold(predicted_original_sample(model_output, sample, c, prediction_type), config)
        return apply_boundary_condition(x0, sample, c.c_skip, c.c_out)
    if prediction_type == "epsilon":
        scaled_x0 = difference_(sample, model_output * c.sqrt_beta, into_subtrahend=True).div_(
            c.epsilon_x0_divisor_over_c_out)
    else:
        scaled_x0 = difference_(sample * c.sqrt_alpha, model_output * c.sqrt_beta).div_(c.one_over_c_out)
    if _holds(scaled_x0, sample):
        return scaled_x0.add_(sample, alpha=c.c_skip)
    return torch.add(scaled_x0, sample, alpha=c.c_skip)


def apply_boundary_condition(x0: torch.Tensor, sample: torch.Tensor, c_skip: float, c_out: Scalar) -> torch.Tensor:
    """f(x_t, t) = c_out * x0 + c_skip * x_t, the consistency-model parameterisation."""
    return torch.add(x0 * c_out, sample, alpha=c_skip)


# -- The same step in k-diffusion's variables, as ComfyUI samples -------------------------
# ComfyUI's discrete models sample x_k = x0 + sigma * eps with sigma_t = sqrt((1 - a_t) / a_t);
# the UNet input, which is diffusers' sample, is x_t = x_k / sqrt(1 + sigma^2) = sqrt(a_t) x_k.


def sample_from_k_space(x_k: torch.Tensor, sigma: float) -> torch.Tensor:
    """x_t = x_k / sqrt(1 + sigma^2): diffusers' sample from ComfyUI's latent (EPS.calculate_input)."""
    return x_k / (1.0 + sigma * sigma) ** 0.5


def renoise_k_space_(noise: torch.Tensor, denoised: torch.Tensor, sigma_next: float) -> torch.Tensor:
    """x_k(next) = denoised + sigma_next * z, in ``noise``'s memory.

    Equal to renoise_ in diffusers' variables: dividing by sqrt(1 + sigma_next^2) gives
    sqrt(a_next) * denoised + sqrt(1 - a_next) * z.
    """
    return noise.mul_(sigma_next).add_(denoised)


def scaled_sum_(owned: torch.Tensor, owned_scale: Scalar, other: torch.Tensor, other_scale: Scalar) -> torch.Tensor:
    """owned_scale * owned + other_scale * other, in ``owned``'s memory (the forward-process mix).

    Both products are rounded before the sum, as in the reference (a * x + b * y): a fused
    multiply-add would differ in the last bit, and the next step's epsilon formula divides
    any such difference by sqrt(alpha_bar), up to 15x at t = 999.
    """
    return owned.mul_(owned_scale).add_(other * other_scale)


def renoise_(noise: torch.Tensor, denoised: torch.Tensor, c: StepCoefficients) -> torch.Tensor:
    """x_prev = sqrt(a_prev) * denoised + sqrt(1 - a_prev) * z (LCM, Algorithm 3), in ``noise``'s memory."""
    return scaled_sum_(noise, c.sqrt_beta_prev, denoised, c.sqrt_alpha_prev)


def draw_noise(
    shape: Sequence[int], generator: Generators, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Standard normal noise drawn where diffusers' ``randn_tensor`` draws it.

    A CPU generator draws on the CPU and the result moves to ``device``, so a seed gives
    the same numbers on every device; a list of generators draws one batch item each.
    """
    shape = tuple(shape)
    if isinstance(generator, (list, tuple)) and len(generator) == 1:
        generator = generator[0]
    device = torch.device(device)
    draw_device = device
    if generator is not None:
        generator_type = (generator[0] if isinstance(generator, (list, tuple)) else generator).device.type
        if generator_type != draw_device.type:
            if generator_type != "cpu":
                raise ValueError(
                    f"cannot draw noise for a {draw_device.type} tensor from a {generator_type} generator; "
                    "pass a CPU generator (torch.Generator('cpu')) or one on the sample's device")
            draw_device = torch.device("cpu")
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}; pass one per batch item")
        parts = [torch.randn((1,) + shape[1:], generator=g, device=draw_device, dtype=dtype) for g in generator]
        noise = torch.cat(parts, dim=0)
    else:
        noise = torch.randn(shape, generator=generator, device=draw_device, dtype=dtype)
    if draw_device is device:  # drawn where it is used
        return noise
    # A blocking host-to-GPU copy synchronises the stream (torch.cuda.set_sync_debug_mode flags
    # it); from pageable memory CUDA stages the source before returning, so non_blocking is safe.
    # Elsewhere (MPS, CPU, meta) the plain copy.
    return noise.to(device, non_blocking=noise.device.type == "cpu" and device.type == "cuda")
