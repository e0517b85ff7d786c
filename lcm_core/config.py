"""The immutable scheduler configuration of LCM and TCD.

Every field of diffusers' ``LCMScheduler.__init__`` with the same default (the
signature of the reference's manual page; where its prose disagrees, the signature
wins). diffusers' ``TCDScheduler.__init__`` takes exactly the same fields with the same
defaults, so one config serves both schedulers. A config is validated when it is built,
so every later stage can trust it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any, Optional, Tuple

logger = logging.getLogger(__name__)

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")

# Keys diffusers writes into every scheduler_config.json that carry no scheduler setting.
_METADATA_PREFIX = "_"
CONFIG_NAME = "scheduler_config.json"


@dataclasses.dataclass(frozen=True)
class LCMConfig(Mapping):
    """Diffusers' ``LCMScheduler`` (and ``TCDScheduler``) configuration, frozen and validated.

    Reads like diffusers' ``FrozenDict`` config: ``config.beta_end``,
    ``config["beta_end"]``, ``dict(config)`` and ``config.get(...)`` all work.
    Derive a changed copy with ``config.replace(field=value)``.
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    trained_betas: Optional[Tuple[float, ...]] = None
    original_inference_steps: int = 50
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = True
    steps_offset: int = 0
    prediction_type: str = "epsilon"
    thresholding: bool = False
    dynamic_thresholding_ratio: float = 0.995
    sample_max_value: float = 1.0
    timestep_spacing: str = "leading"
    timestep_scaling: float = 10.0
    rescale_betas_zero_snr: bool = False

    def __post_init__(self) -> None:
        if self.trained_betas is not None and not isinstance(self.trained_betas, tuple):
            # Accept any sequence or array, keep an immutable tuple of Python floats.
            object.__setattr__(self, "trained_betas", tuple(float(b) for b in _as_list(self.trained_betas)))
        _validate(self)

    # -- Mapping interface, so diffusers code that treats a config as a dict works.
    def __getitem__(self, key: str) -> Any:
        if key not in _FIELD_NAMES:
            raise KeyError(key)
        value = getattr(self, key)
        return list(value) if key == "trained_betas" and value is not None else value

    def __iter__(self) -> Iterator[str]:
        return iter(_FIELD_NAMES)

    def __len__(self) -> int:
        return len(_FIELD_NAMES)

    def replace(self, **changes: Any) -> "LCMConfig":
        """A validated copy with some fields changed (the original is untouched)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self, class_name: str = "LCMScheduler") -> dict:
        """A plain dict in the layout of diffusers' ``scheduler_config.json`` of ``class_name``."""
        return {"_class_name": class_name, **{name: self[name] for name in _FIELD_NAMES}}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], **overrides: Any) -> "LCMConfig":
        """Build from a diffusers config dict (or any mapping); ``overrides`` win.

        Keys that start with ``_`` (diffusers' ``_class_name``, ``_diffusers_version``)
        are ignored silently; other unknown keys are ignored with one warning.
        """
        merged = {**dict(values), **overrides}
        unknown = sorted(k for k in merged if k not in _FIELD_NAMES and not k.startswith(_METADATA_PREFIX))
        if unknown:
            logger.warning("LCMConfig: ignoring keys that LCMScheduler and TCDScheduler do not use: %s",
                           ", ".join(unknown))
        return cls(**{k: v for k, v in merged.items() if k in _FIELD_NAMES})

    @classmethod
    def from_json(cls, text: str) -> "LCMConfig":
        """Parse the text of a diffusers ``scheduler_config.json``."""
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"scheduler config is not valid JSON: {error}") from error
        if not isinstance(values, dict):
            raise ValueError(f"scheduler config must be a JSON object, got {type(values).__name__}")
        return cls.from_dict(values)

    @classmethod
    def from_json_file(cls, path: "str | os.PathLike[str]") -> "LCMConfig":
        """Read a ``scheduler_config.json`` file, or the one inside a folder."""
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        with open(path, encoding="utf-8") as handle:
            return cls.from_json(handle.read())

    def to_json(self, class_name: str = "LCMScheduler") -> str:
        return json.dumps(self.to_dict(class_name), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: "str | os.PathLike[str]", class_name: str = "LCMScheduler") -> str:
        """Write ``scheduler_config.json`` (into ``path`` when it is a folder); returns the file path."""
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(self.to_json(class_name))
        return os.fspath(path)


_FIELD_NAMES: Tuple[str, ...] = tuple(field.name for field in dataclasses.fields(LCMConfig))


def _as_list(values: Any) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _validate(config: LCMConfig) -> None:
    """Raise a ValueError naming the field, its value and what would work."""
    n = config.num_train_timesteps
    _require(isinstance(n, int) and not isinstance(n, bool) and n > 0,
             f"num_train_timesteps must be a positive integer, got {n!r}")
    o = config.original_inference_steps
    _require(isinstance(o, int) and not isinstance(o, bool) and 0 < o <= n,
             f"original_inference_steps must be an integer in 1..num_train_timesteps ({n}), got {o!r}")
    if config.trained_betas is not None:
        _require(len(config.trained_betas) == n,
                 f"trained_betas has {len(config.trained_betas)} values but num_train_timesteps is {n}; "
                 "pass one beta per training timestep")
        _require(all(0.0 < b < 1.0 for b in config.trained_betas),
                 "trained_betas must all lie in (0, 1)")
    else:
        if config.beta_schedule not in BETA_SCHEDULES:
            # diffusers raises NotImplementedError here; keep the type so callers catch the same thing.
            raise NotImplementedError(
                f"beta_schedule {config.beta_schedule!r} is not implemented; use one of {', '.join(BETA_SCHEDULES)} "
                "or pass trained_betas")
        if config.beta_schedule != "squaredcos_cap_v2":
            _require(0.0 < config.beta_start < config.beta_end < 1.0,
                     f"beta_start ({config.beta_start!r}) and beta_end ({config.beta_end!r}) must satisfy "
                     "0 < beta_start < beta_end < 1 (SD1.5/SDXL use 0.00085 and 0.012)")
    _require(config.prediction_type in PREDICTION_TYPES,
             f"prediction_type {config.prediction_type!r} is not supported; use one of {', '.join(PREDICTION_TYPES)}")
    _require(config.timestep_spacing in TIMESTEP_SPACINGS,
             f"timestep_spacing {config.timestep_spacing!r} is not one of {', '.join(TIMESTEP_SPACINGS)} "
             "(LCM ignores it, but a config carrying it should be a valid diffusers config)")
    _require(_finite(config.timestep_scaling) and config.timestep_scaling > 0,
             "timestep_scaling must be a positive number (diffusers' default is 10.0), "
             f"got {config.timestep_scaling!r}")
    _require(_finite(config.clip_sample_range) and config.clip_sample_range > 0,
             f"clip_sample_range must be a positive number, got {config.clip_sample_range!r}")
    _require(_finite(config.dynamic_thresholding_ratio) and 0.0 < config.dynamic_thresholding_ratio <= 1.0,
             f"dynamic_thresholding_ratio must lie in (0, 1], got {config.dynamic_thresholding_ratio!r}")
    _require(_finite(config.sample_max_value) and config.sample_max_value > 0,
             f"sample_max_value must be a positive number, got {config.sample_max_value!r}")
    _require(isinstance(config.steps_offset, int) and config.steps_offset >= 0,
             f"steps_offset must be a non-negative integer, got {config.steps_offset!r}")
    # Deliberate difference from diffusers: with a zero terminal SNR, alphas_cumprod at the
    # last training timestep is 0 and the epsilon formula divides by sqrt(0) (diffusers gives NaN).
    _require(not (config.rescale_betas_zero_snr and config.prediction_type == "epsilon"),
             "rescale_betas_zero_snr=True with prediction_type='epsilon' divides by zero at the final "
             "training timestep (diffusers returns NaN); use prediction_type='v_prediction' (what zero-SNR "
             "models are trained with) or set rescale_betas_zero_snr=False")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
