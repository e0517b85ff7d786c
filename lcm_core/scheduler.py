"""``LCMScheduler``: diffusers' LCM multistep scheduler interface over the pure core.

A drop-in for ``pipe.scheduler`` in diffusers pipelines
(``pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)``): same
constructor, same ``set_timesteps`` / ``step`` / ``add_noise`` contract, same outputs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch

from . import schedule
from .config import CONFIG_NAME, LCMConfig
from .step import Generators, StepCoefficients, denoise, draw_noise, renoise_, step_coefficients

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class LCMSchedulerOutput:
    """What ``step`` returns: the sample for the next step and this step's denoised estimate."""

    prev_sample: torch.Tensor
    denoised: Optional[torch.Tensor] = None

    def __getitem__(self, index: int) -> torch.Tensor:  # output[0], as with diffusers' BaseOutput
        return self.to_tuple()[index]

    def to_tuple(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        return (self.prev_sample, self.denoised)


class LCMScheduler:
    """Latent Consistency Model multistep scheduler (Luo et al. 2023, Algorithm 3).

    Takes exactly the keyword arguments of diffusers' ``LCMScheduler`` with the same
    defaults; see :class:`lcm_core.LCMConfig`.
    """

    order = 1
    init_noise_sigma = 1.0
    config_name = CONFIG_NAME

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(LCMConfig.__dataclass_fields__))
        if unknown:
            raise TypeError(f"LCMScheduler got unexpected keyword arguments: {', '.join(unknown)}")
        self._config = LCMConfig(**kwargs)
        self.betas = schedule.betas(self._config)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.final_alpha_cumprod = schedule.final_alpha_cumprod(self._config, self.alphas_cumprod)
        self.num_inference_steps: Optional[int] = None
        self.custom_timesteps = False
        self.timesteps = torch.arange(self._config.num_train_timesteps - 1, -1, -1, dtype=torch.int64)
        self._timestep_values: Tuple[int, ...] = ()
        self._coefficients: List[StepCoefficients] = []
        self._step_index: Optional[int] = None
        self._begin_index: Optional[int] = None
        self._alphas_cumprod_on: dict = {}

    # -- configuration -------------------------------------------------------------------
    @property
    def config(self) -> LCMConfig:
        return self._config

    @classmethod
    def from_config(cls, config: Union[LCMConfig, Mapping, None] = None, **overrides: Any) -> "LCMScheduler":
        """Build from an ``LCMConfig``, a diffusers scheduler config (any scheduler's) or a dict.

        Keys LCM does not use are ignored (one warning names them); ``overrides`` win.
        """
        base = LCMConfig.from_dict(config or {}, **overrides)
        return cls(**{name: base[name] for name in base})

    @classmethod
    def from_pretrained(cls, path: "str | os.PathLike[str]", subfolder: Optional[str] = None,
                        **overrides: Any) -> "LCMScheduler":
        """Read a local diffusers ``scheduler_config.json`` (a file, or a folder holding one)."""
        if subfolder:
            path = os.path.join(path, subfolder)
        return cls.from_config(LCMConfig.from_json_file(path), **overrides)

    def save_pretrained(self, directory: "str | os.PathLike[str]") -> str:
        """Write ``scheduler_config.json`` into ``directory`` (created if missing); returns the file path."""
        os.makedirs(directory, exist_ok=True)
        return self._config.to_json_file(directory)

    save_config = save_pretrained

    # -- schedule -------------------------------------------------------------------------
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
            values = schedule.custom_timesteps(self._config, timesteps, original_inference_steps, strength)
            self.custom_timesteps = True
        else:
            values = schedule.lcm_timesteps(self._config, num_inference_steps, original_inference_steps, strength,
                                            schedule.StrengthMode(strength_mode))
            self.custom_timesteps = False
        # Deliberate difference: with custom timesteps and strength < 1 the reference keeps the
        # untruncated count, so its last step never counts as last and re-noises the result.
        self.num_inference_steps = len(values)
        self._timestep_values = values
        self._coefficients = step_coefficients(self.alphas_cumprod, values, self._config.timestep_scaling)
        self.timesteps = torch.tensor(values, dtype=torch.int64, device=device)
        self._step_index = None
        self._begin_index = None

    def _index_of_first_timestep(self, timestep: Union[int, float, torch.Tensor]) -> int:
        """Where the first ``step`` call starts, by the reference's rule, without reading device memory.

        A timestep taken from ``self.timesteps`` (iterating or indexing it) is located by its
        position in that tensor; an int, float or CPU tensor by value. Where a value repeats,
        the reference starts at its second occurrence (``schedule.first_step_index``).
        """
        if self._begin_index is not None:
            return self._begin_index
        if isinstance(timestep, torch.Tensor) and timestep.numel() == 1 and timestep._base is self.timesteps:
            position = (timestep.storage_offset() - self.timesteps.storage_offset()) // self.timesteps.stride(0)
            value = self._timestep_values[position]
        elif isinstance(timestep, torch.Tensor):
            value = timestep.item()  # a tensor from elsewhere: one read, on the first step only
        else:
            value = timestep
        return schedule.first_step_index(self._timestep_values, value)

    # -- stepping -------------------------------------------------------------------------
    def scale_model_input(self, sample: torch.Tensor, timestep: Optional[int] = None) -> torch.Tensor:
        """LCM feeds x_t to the model unscaled."""
        return sample

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
        if self.num_inference_steps is None:
            raise ValueError("step() was called before set_timesteps(); call set_timesteps first")
        if self._step_index is None:
            self._step_index = self._index_of_first_timestep(timestep)
        index = self._step_index
        if index >= len(self._coefficients):
            raise ValueError(
                f"step() was called {index + 1} times for a schedule of {len(self._coefficients)} steps; "
                "call set_timesteps again before the next run")
        coefficients = self._coefficients[index]
        denoised = denoise(model_output, sample, coefficients, self._config)
        if index < len(self._coefficients) - 1:
            noise = draw_noise(model_output.shape, generator, model_output.device, denoised.dtype)
            prev_sample = renoise_(noise, denoised, coefficients)
        else:
            prev_sample = denoised
        self._step_index = index + 1
        if not return_dict:
            return (prev_sample, denoised)
        return LCMSchedulerOutput(prev_sample=prev_sample, denoised=denoised)

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

    def __len__(self) -> int:
        return self._config.num_train_timesteps

    def __repr__(self) -> str:
        return f"lcm_core.LCMScheduler({self._config.to_json().strip()})"
