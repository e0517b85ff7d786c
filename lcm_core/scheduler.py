"""``LCMScheduler``, ``TCDScheduler`` and ``FlowMatchLCMScheduler``: diffusers' interfaces over the pure core.

Drop-ins for ``pipe.scheduler`` in diffusers pipelines
(``pipe.scheduler = TCDScheduler.from_config(pipe.scheduler.config)``): same
constructor, same ``set_timesteps`` / ``step`` / ``add_noise`` (``scale_noise``) contract,
same outputs. All three share config I/O and the step-index bookkeeping; LCM and TCD also
share the discrete schedule and forward process and differ only in their timestep grid
rule and their ``step``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, TypeVar, Union

import torch

from . import schedule
from .config import CONFIG_NAME, LCMConfig, SchedulerConfig
from .flow import FlowMatchConfig, FlowStep, flow_predicted_original_sample, flow_schedule, flow_steps, scale_to
from .flow import training_sigmas as flow_training_sigmas
from .step import (
    Generators,
    StepCoefficients,
    denoise,
    draw_noise,
    renoise_,
    scalar_tensors,
    scaled_sum_,
    step_coefficients,
)
from .tcd import (
    DEFAULT_GAMMA,
    TCDStepCoefficients,
    check_gamma,
    renoise_from_s_,
    tcd_step_coefficients,
    trajectory_sample,
)

logger = logging.getLogger(__name__)

_S = TypeVar("_S", bound="_SchedulerBase")


class _SchedulerOutput:
    """Indexing and ``to_tuple`` as with diffusers' ``BaseOutput``."""

    def __getitem__(self, index: int) -> torch.Tensor:  # output[0]
        return self.to_tuple()[index]

    def to_tuple(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        return tuple(getattr(self, field.name) for field in dataclasses.fields(self))  # type: ignore[arg-type]


@dataclasses.dataclass
class LCMSchedulerOutput(_SchedulerOutput):
    """What ``LCMScheduler.step`` returns: the sample for the next step and this step's denoised estimate."""

    prev_sample: torch.Tensor
    denoised: Optional[torch.Tensor] = None


@dataclasses.dataclass
class TCDSchedulerOutput(_SchedulerOutput):
    """What ``TCDScheduler.step`` returns: the sample for the next step and x_s (TCD eq. 1)."""

    prev_sample: torch.Tensor
    pred_noised_sample: Optional[torch.Tensor] = None


@dataclasses.dataclass
class FlowMatchLCMSchedulerOutput(_SchedulerOutput):
    """What ``FlowMatchLCMScheduler.step`` returns: the sample for the next step."""

    prev_sample: torch.Tensor


class _SchedulerBase:
    """What every scheduler of the core shares: config I/O and the step-index bookkeeping."""

    order = 1
    config_name = CONFIG_NAME
    _class_name = ""  # diffusers' class name, written as _class_name into scheduler_config.json
    _config_class: Type[SchedulerConfig]
    _output_class: Type[_SchedulerOutput]

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(self._config_class.field_names()))
        if unknown:
            raise TypeError(f"{self._class_name} got unexpected keyword arguments: {', '.join(unknown)}")
        self._config = self._config_class(**kwargs)
        self.num_inference_steps: Optional[int] = None
        self._timestep_values: Tuple[Any, ...] = ()
        self._step_index: Optional[int] = None
        self._begin_index: Optional[int] = None

    # -- configuration -------------------------------------------------------------------
    @property
    def config(self) -> Any:
        return self._config

    @classmethod
    def from_config(cls: Type[_S], config: Union[SchedulerConfig, Mapping, None] = None, **overrides: Any) -> _S:
        """Build from a config of this class, a diffusers scheduler config (any scheduler's) or a dict.

        Keys this scheduler does not use are ignored (one warning names them); ``overrides`` win.
        """
        base = cls._config_class.from_dict(config or {}, **overrides)
        return cls(**{name: base[name] for name in base})

    @classmethod
    def from_pretrained(cls: Type[_S], path: "str | os.PathLike[str]", subfolder: Optional[str] = None,
                        **overrides: Any) -> _S:
        """Read a local diffusers ``scheduler_config.json`` (a file, or a folder holding one)."""
        if subfolder:
            path = os.path.join(path, subfolder)
        return cls.from_config(cls._config_class.from_json_file(path), **overrides)

    def save_pretrained(self, directory: "str | os.PathLike[str]") -> str:
        """Write ``scheduler_config.json`` into ``directory`` (created if missing); returns the file path."""
        os.makedirs(directory, exist_ok=True)
        return self._config.to_json_file(directory, self._class_name)

    def save_config(self, directory: "str | os.PathLike[str]") -> str:
        return self.save_pretrained(directory)

    # -- step indices ---------------------------------------------------------------------
    @property
    def step_index(self) -> Optional[int]:
        """Index of the next step in ``timesteps``; None until the first ``step``."""
        return self._step_index

    @property
    def begin_index(self) -> Optional[int]:
        """The first step's index when a pipeline set it with ``set_begin_index``."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = begin_index

    def _index_of_first_timestep(self, timestep: Union[int, float, torch.Tensor]) -> int:
        """Where the first ``step`` call starts, by the reference's rule, without reading device memory.

        A timestep taken from ``self.timesteps`` (iterating or indexing it) is located by its
        position in that tensor; an int, float or CPU tensor by value. Where a value repeats,
        the reference starts at its second occurrence (``schedule.first_step_index``).
        """
        if self._begin_index is not None:
            return self._begin_index
        timesteps = self.timesteps
        if isinstance(timestep, torch.Tensor) and timestep.numel() == 1 and timestep._base is timesteps:
            position = (timestep.storage_offset() - timesteps.storage_offset()) // timesteps.stride(0)
            value = self._timestep_values[position]
        elif isinstance(timestep, torch.Tensor):
            value = timestep.item()  # a tensor from elsewhere: one read, on the first step only
        else:
            value = timestep
        return schedule.first_step_index(self._timestep_values, value)

    def _next_step_index(self, timestep: Union[int, float, torch.Tensor]) -> int:
        """The index of the step ``step`` is asked for; clear errors before set_timesteps and after the end."""
        if self.num_inference_steps is None:
            raise ValueError("step() was called before set_timesteps(); call set_timesteps first")
        if self._step_index is None:
            self._step_index = self._index_of_first_timestep(timestep)
        index = self._step_index
        if index >= len(self._timestep_values):
            raise ValueError(
                f"step() was called {index + 1} times for a schedule of {len(self._timestep_values)} steps; "
                "call set_timesteps again before the next run")
        return index

    def _finish_step(self, index: int, outputs: Tuple[torch.Tensor, ...],
                     return_dict: bool) -> Union[_SchedulerOutput, Tuple[torch.Tensor, ...]]:
        """Count the step done; the reference's output, as its dataclass or as a tuple."""
        self._step_index = index + 1
        return self._output_class(*outputs) if return_dict else outputs

    def __len__(self) -> int:
        return self._config.num_train_timesteps

    def __repr__(self) -> str:
        return f"lcm_core.{self._class_name}({self._config.to_json(self._class_name).strip()})"


class _ConsistencyScheduler(_SchedulerBase):
    """What LCMScheduler and TCDScheduler share: the discrete schedule and the forward process."""

    init_noise_sigma = 1.0
    _config_class = LCMConfig
    # set_timesteps' rule (schedule.lcm_timesteps or schedule.tcd_timesteps).
    _timesteps_rule: Callable[..., Tuple[int, ...]]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.betas = schedule.betas(self._config)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.final_alpha_cumprod = schedule.final_alpha_cumprod(self._config, self.alphas_cumprod)
        self.custom_timesteps = False
        self.timesteps = torch.arange(self._config.num_train_timesteps - 1, -1, -1, dtype=torch.int64)
        self._alphas_cumprod_on: dict = {}

    @property
    def config(self) -> LCMConfig:
        return self._config

    # -- schedule -------------------------------------------------------------------------
    def set_timesteps(
        self,
        num_inference_steps: Optional[int] = None,
        device: Union[str, torch.device, None] = None,
        original_inference_steps: Optional[int] = None,
        timesteps: Optional[Sequence[int]] = None,
        strength: float = 1.0,
        *,
        strength_mode: Union[str, schedule.StrengthMode] = schedule.StrengthMode.LCM_GRID,
    ) -> None:
        """Make the inference schedule (diffusers' arguments, plus ``strength_mode``).

        ``strength_mode="drop_leading"`` gives ``strength`` the SD img2img meaning (make the
        full schedule, keep its last int(steps * strength) steps) instead of the LCM
        pipelines' (shrink the distillation grid). Custom ``timesteps`` always drop leading
        steps, as in the reference.
        """
        if num_inference_steps is None and timesteps is None:
            raise ValueError("set_timesteps needs num_inference_steps or timesteps; got neither")
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("set_timesteps takes num_inference_steps or timesteps, not both")
        if timesteps is not None:
            values = schedule.custom_timesteps(self._config, timesteps, original_inference_steps, strength,
                                               dense=self._dense_grid(original_inference_steps))
            self.custom_timesteps = True
        else:
            values = self._timesteps_rule(self._config, num_inference_steps, original_inference_steps, strength,
                                          schedule.StrengthMode(strength_mode))
            self.custom_timesteps = False
        # Deliberate difference: with custom timesteps and strength < 1 the reference keeps the
        # untruncated count, so its last step never counts as last (LCM re-noises the result,
        # TCD draws noise it then multiplies by 0).
        self.num_inference_steps = len(values)
        self._timestep_values = values
        self.timesteps = torch.tensor(values, dtype=torch.int64, device=device)
        self._step_index = None
        self._begin_index = None
        self._schedule_changed()

    def _dense_grid(self, original_inference_steps: Optional[int]) -> bool:
        """Whether custom timesteps are checked against the dense grid (TCD with an explicit count)."""
        return False

    def _schedule_changed(self) -> None:
        """Recompute what depends on the schedule (the per-step scalars)."""

    # -- stepping -------------------------------------------------------------------------
    def scale_model_input(self, sample: torch.Tensor, timestep: Optional[int] = None) -> torch.Tensor:
        """LCM and TCD feed x_t to the model unscaled."""
        return sample

    # -- forward process ------------------------------------------------------------------
    def _alpha_terms(self, like: torch.Tensor, timesteps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) in ``like``'s device and dtype, shaped to broadcast."""
        key = (like.device, like.dtype)
        if key not in self._alphas_cumprod_on:
            self._alphas_cumprod_on[key] = self.alphas_cumprod.to(device=like.device).to(dtype=like.dtype)
        alpha_bar = self._alphas_cumprod_on[key][timesteps.to(like.device)].flatten()
        view = (-1,) + (1,) * (like.ndim - 1)
        return (alpha_bar**0.5).view(view), ((1 - alpha_bar) ** 0.5).view(view)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor,
                  timesteps: torch.Tensor) -> torch.Tensor:
        """Forward diffusion q(x_t | x_0): sqrt(a) x0 + sqrt(1 - a) noise (Ho et al. 2020, eq. 4)."""
        sqrt_alpha, sqrt_beta = self._alpha_terms(original_samples, timesteps)
        return sqrt_alpha * original_samples + sqrt_beta * noise

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The v-prediction target sqrt(a) noise - sqrt(1 - a) x0 (Salimans & Ho 2022)."""
        sqrt_alpha, sqrt_beta = self._alpha_terms(sample, timesteps)
        return sqrt_alpha * noise - sqrt_beta * sample

    def previous_timestep(self, timestep: int) -> int:
        """The timestep after ``timestep`` in the schedule; -1 after the last."""
        position = self._timestep_values.index(int(timestep))
        return self._timestep_values[position + 1] if position + 1 < len(self._timestep_values) else -1



class LCMScheduler(_ConsistencyScheduler):
    """Latent Consistency Model multistep scheduler (Luo et al. 2023, Algorithm 3).

    Takes exactly the keyword arguments of diffusers' ``LCMScheduler`` with the same
    defaults; see :class:`lcm_core.LCMConfig`.
    """

    _class_name = "LCMScheduler"
    _timesteps_rule = staticmethod(schedule.lcm_timesteps)
    _output_class = LCMSchedulerOutput

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._coefficients: List[StepCoefficients] = []

    def _schedule_changed(self) -> None:
        # As 0-dim CPU tensors (the step's operands, as the reference's are); c_skip is torch.add's alpha.
        self._coefficients = [
            scalar_tensors(c, keep=("c_skip",))
            for c in step_coefficients(self.alphas_cumprod, self._timestep_values, self._config.timestep_scaling)]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[int, torch.Tensor],
        sample: torch.Tensor,
        generator: Generators = None,
        return_dict: bool = True,
    ) -> Union[LCMSchedulerOutput, Tuple[torch.Tensor, torch.Tensor]]:
        """One multistep update (LCM Algorithm 3): x_t -> (x_prev, denoised).

        Draws noise from ``generator`` (where diffusers draws it) on every step but the
        last, which returns the denoised sample itself.
        """
        index = self._next_step_index(timestep)
        coefficients = self._coefficients[index]
        denoised = denoise(model_output, sample, coefficients, self._config)
        if index < len(self._coefficients) - 1:
            noise = draw_noise(model_output.shape, generator, model_output.device, denoised.dtype)
            prev_sample = renoise_(noise, denoised, coefficients)
        else:
            prev_sample = denoised
        return self._finish_step(index, (prev_sample, denoised), return_dict)


class TCDScheduler(_ConsistencyScheduler):
    """Trajectory Consistency Distillation's Strategic Stochastic Sampling (Zheng et al. 2024).

    Takes exactly the keyword arguments of diffusers' ``TCDScheduler`` (the same fields and
    defaults as ``LCMScheduler``; see :class:`lcm_core.LCMConfig`). ``step`` takes gamma as
    ``eta``, as diffusers does, so the SD / SDXL pipelines pass theirs (default 0.0).
    ``clip_sample``, ``thresholding`` and ``timestep_scaling`` are not used by TCD's step,
    in the reference either.
    """

    _class_name = "TCDScheduler"
    _timesteps_rule = staticmethod(schedule.tcd_timesteps)
    _output_class = TCDSchedulerOutput

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self._config.clip_sample or self._config.thresholding:
            logger.warning("TCDScheduler: clip_sample and thresholding have no effect on TCD's step "
                           "(diffusers' TCDScheduler ignores them too)")
        self._coefficients: Dict[float, List[TCDStepCoefficients]] = {}

    def _dense_grid(self, original_inference_steps: Optional[int]) -> bool:
        return original_inference_steps is not None

    def _schedule_changed(self) -> None:
        self._coefficients = {}

    def _coefficients_for(self, gamma: float) -> List[TCDStepCoefficients]:
        """The schedule's per-step scalars for this gamma, computed on its first use (on the CPU).

        As 0-dim CPU tensors (``scalar_tensors``): the step's operands, as the reference's are.
        """
        if gamma not in self._coefficients:
            self._coefficients[gamma] = [
                scalar_tensors(c) for c in tcd_step_coefficients(self.alphas_cumprod, self._timestep_values, gamma)]
        return self._coefficients[gamma]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[int, torch.Tensor],
        sample: torch.Tensor,
        eta: float = DEFAULT_GAMMA,
        generator: Generators = None,
        return_dict: bool = True,
    ) -> Union[TCDSchedulerOutput, Tuple[torch.Tensor, torch.Tensor]]:
        """One Strategic Stochastic Sampling step: x_t -> (x_prev, x_s), with gamma = ``eta``.

        Draws noise from ``generator`` (where diffusers draws it) when eta > 0 on every step
        but the last; the last returns x_s at s = 0 for both outputs.
        """
        gamma = check_gamma(eta)
        index = self._next_step_index(timestep)
        coefficients = self._coefficients_for(gamma)[index]
        x_s = trajectory_sample(model_output, sample, coefficients, self._config.prediction_type)
        if coefficients.draws_noise:
            noise = draw_noise(model_output.shape, generator, model_output.device, x_s.dtype)
            prev_sample = renoise_from_s_(noise, x_s, coefficients)
        else:
            prev_sample = x_s
        return self._finish_step(index, (prev_sample, x_s), return_dict)


class FlowMatchLCMScheduler(_SchedulerBase):
    """LCM-style sampling of flow-matching models: diffusers' ``FlowMatchLCMScheduler``.

    Takes exactly the keyword arguments of diffusers' ``FlowMatchLCMScheduler`` with the same
    defaults (see :class:`lcm_core.FlowMatchConfig`). Each step predicts x0 = x - sigma v and
    re-noises it to the next sigma with fresh noise (drawn on the last step too, where it is
    multiplied by 0, as in the reference).

    diffusers' flow pipelines (SD3, Flux, Wan, Qwen-Image) do not pass their generator to
    ``step``, so there the step noise comes from torch's global RNG. ``with_step_generator``
    gives ``step`` a generator to use when none is passed: handing it the pipeline's own
    generator makes the run a function of the seed (the initial noise first, then each step's).
    """

    _class_name = "FlowMatchLCMScheduler"
    _config_class = FlowMatchConfig
    _output_class = FlowMatchLCMSchedulerOutput

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sigmas = flow_training_sigmas(self._config)
        self.timesteps = self.sigmas * self._config.num_train_timesteps
        self.sigma_min, self.sigma_max = self.sigmas[-1].item(), self.sigmas[0].item()
        self._shift = self._config.shift
        self._scale_factors = None if self._config.scale_factors is None else list(self._config.scale_factors)
        self._upscale_mode = self._config.upscale_mode
        self._init_size: Optional[Tuple[int, ...]] = None
        self._steps: List[FlowStep] = []
        self._step_generator: Generators = None

    @property
    def config(self) -> FlowMatchConfig:
        return self._config

    @property
    def shift(self) -> float:
        """The static shift ``set_timesteps`` applies (the config's until ``set_shift``)."""
        return self._shift

    def set_shift(self, shift: float) -> None:
        self._shift = shift

    def set_scale_factors(self, scale_factors: Optional[Sequence[float]], upscale_mode: str) -> None:
        """Scale-wise generation (SwD): x0 is resized by ``scale_factors[i]`` at step i."""
        self._scale_factors = None if scale_factors is None else list(scale_factors)
        self._upscale_mode = upscale_mode

    def with_step_generator(self, generator: Generators) -> "FlowMatchLCMScheduler":
        """Use ``generator`` for step noise whenever ``step`` is given none; returns the scheduler.

        ``pipe.scheduler = FlowMatchLCMScheduler.from_config(pipe.scheduler.config).with_step_generator(g)``
        then ``pipe(..., generator=g)`` draws the initial noise and every step's noise from one
        generator, which is what ComfyUI's ``lcm_diffusers`` reproduces.
        """
        self._step_generator = generator
        return self

    def set_timesteps(
        self,
        num_inference_steps: Optional[int] = None,
        device: Union[str, torch.device, None] = None,
        sigmas: Optional[Sequence[float]] = None,
        mu: Optional[float] = None,
        timesteps: Optional[Sequence[float]] = None,
    ) -> None:
        """Make the inference schedule, exactly as the reference (``lcm_core.flow_schedule``)."""
        made = flow_schedule(self._config, num_inference_steps, sigmas, mu, timesteps, shift=self._shift)
        self.num_inference_steps = len(made.timesteps)
        self.sigmas = made.sigmas.to(device)
        self.timesteps = made.timesteps.to(device)
        self._timestep_values = tuple(made.timesteps.tolist())
        self._steps = flow_steps(made.sigmas)
        self._step_index = None
        self._begin_index = None

    def index_for_timestep(self, timestep: Union[float, torch.Tensor],
                           schedule_timesteps: Optional[torch.Tensor] = None) -> int:
        """The position of ``timestep`` in the schedule (its second occurrence where it repeats)."""
        values = self._timestep_values if schedule_timesteps is None else tuple(schedule_timesteps.tolist())
        value = timestep.item() if isinstance(timestep, torch.Tensor) else torch.tensor(timestep).float().item()
        return schedule.first_step_index(values, value)

    def scale_noise(self, sample: torch.Tensor, timestep: torch.Tensor,
                    noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The flow forward process sigma * noise + (1 - sigma) * sample at ``timestep`` (img2img's start)."""
        sigmas = self.sigmas.to(device=sample.device, dtype=sample.dtype)
        if self._begin_index is None:
            indices = [self.index_for_timestep(t) for t in timestep.reshape(-1)]
        else:
            # Before the first step: the pipeline's begin index; after it (inpainting): the current step.
            index = self._begin_index if self._step_index is None else self._step_index
            indices = [index] * timestep.shape[0]
        sigma = sigmas[indices].flatten().view((-1,) + (1,) * (sample.ndim - 1))
        return sigma * noise + (1.0 - sigma) * sample

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[float, torch.Tensor],
        sample: torch.Tensor,
        generator: Generators = None,
        return_dict: bool = True,
    ) -> Union[FlowMatchLCMSchedulerOutput, Tuple[torch.Tensor, ...]]:
        """One step: x0 = x - sigma v (resized when scale factors are set), then
        x_next = (1 - sigma_next) x0 + sigma_next z with z from ``generator``."""
        if isinstance(timestep, int) or (isinstance(timestep, torch.Tensor) and not timestep.is_floating_point()):
            raise ValueError("FlowMatchLCMScheduler.step takes one of scheduler.timesteps as its timestep, not an "
                             f"integer index such as enumerate() gives (got {timestep!r})")
        if self._scale_factors and self._upscale_mode and len(self._timestep_values) != len(self._scale_factors) + 1:
            raise ValueError(f"scale_factors has {len(self._scale_factors)} values for a schedule of "
                             f"{len(self._timestep_values)} steps; pass one per step but the last")
        if self._init_size is None or self._step_index is None:
            self._init_size = tuple(model_output.shape[2:])
        if not isinstance(timestep, torch.Tensor):
            timestep = torch.tensor(timestep, dtype=torch.float32)  # compared as the schedule's float32 values
        index = self._next_step_index(timestep)
        planned = self._steps[index]
        x0 = flow_predicted_original_sample(model_output, sample, planned.sigma)
        if self._scale_factors and self._upscale_mode and index < len(self._scale_factors):
            x0 = scale_to(x0, self._scale_factors[index], self._init_size, self._upscale_mode)
        noise = draw_noise(x0.shape, self._step_generator if generator is None else generator, x0.device, x0.dtype)
        prev_sample = scaled_sum_(noise, planned.sigma_next, x0, planned.one_minus_sigma_next)
        return self._finish_step(index, (prev_sample.to(model_output.dtype),), return_dict)
