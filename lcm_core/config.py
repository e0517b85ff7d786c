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
import numbers
import os
import reprlib
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Optional, Tuple, Type, TypeVar

logger = logging.getLogger(__name__)

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")

# Keys diffusers writes into every scheduler_config.json that carry no scheduler setting.
_METADATA_PREFIX = "_"
CONFIG_NAME = "scheduler_config.json"


class SchedulerConfig(Mapping):
    """What every frozen scheduler config of the core shares: diffusers' config reading and writing.

    Reads like diffusers' ``FrozenDict`` config: ``config.shift``, ``config["shift"]``,
    ``dict(config)`` and ``config.get(...)`` all work. Derive a changed copy with
    ``config.replace(field=value)``. Subclasses are frozen dataclasses; ``_SCHEDULERS`` names
    the diffusers schedulers whose fields they hold (for the unknown-key warning).
    """

    _SCHEDULERS: ClassVar[str] = ""
    _CLASS_NAME: ClassVar[str] = ""  # the diffusers class a scheduler_config.json names by default

    @classmethod
    def field_names(cls) -> Tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))  # type: ignore[arg-type]

    # -- Mapping interface, so diffusers code that treats a config as a dict works.
    def __getitem__(self, key: str) -> Any:
        if key not in self.field_names():
            raise KeyError(key)
        value = getattr(self, key)
        # Lists are stored as tuples (frozen); diffusers' configs hold them as lists.
        return list(value) if isinstance(value, tuple) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self.field_names())

    def __len__(self) -> int:
        return len(self.field_names())

    def replace(self: _C, **changes: Any) -> _C:
        """A validated copy with some fields changed (the original is untouched)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self, class_name: Optional[str] = None) -> dict:
        """A plain dict in the layout of diffusers' ``scheduler_config.json`` of ``class_name``."""
        return {"_class_name": class_name or self._CLASS_NAME, **{name: self[name] for name in self.field_names()}}

    @classmethod
    def from_dict(cls: Type[_C], values: Mapping[str, Any], **overrides: Any) -> _C:
        """Build from a diffusers config dict (or any mapping); ``overrides`` win.

        Keys that start with ``_`` (diffusers' ``_class_name``, ``_diffusers_version``)
        are ignored silently; other unknown keys are ignored with one warning.
        """
        names = cls.field_names()
        merged = {**dict(values), **overrides}
        unknown = sorted(str(k) for k in merged if k not in names and not str(k).startswith(_METADATA_PREFIX))
        if unknown:
            logger.warning("%s: ignoring keys that %s do not use: %s", cls.__name__, cls._SCHEDULERS,
                           _short_list(unknown))
        return cls(**{k: v for k, v in merged.items() if k in names})

    @classmethod
    def from_json(cls: Type[_C], text: str) -> _C:
        """Parse the text of a diffusers ``scheduler_config.json``."""
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"scheduler config is not valid JSON: {error}") from error
        except RecursionError:
            # json.loads recurses once per nesting level; Python's limit ends it, not the text.
            raise ValueError("scheduler config JSON is nested too deeply to read; a diffusers scheduler_config.json "
                             "is one flat object such as {\"beta_start\": 0.00085, \"beta_end\": 0.012}") from None
        if not isinstance(values, dict):
            raise ValueError(f"scheduler config must be a JSON object, got {type(values).__name__}")
        return cls.from_dict(values)

    @classmethod
    def from_json_file(cls: Type[_C], path: "str | os.PathLike[str]") -> _C:
        """Read a ``scheduler_config.json`` file, or the one inside a folder."""
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        with open(path, encoding="utf-8") as handle:
            return cls.from_json(handle.read())

    def to_json(self, class_name: Optional[str] = None) -> str:
        return json.dumps(self.to_dict(class_name), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: "str | os.PathLike[str]", class_name: Optional[str] = None) -> str:
        """Write ``scheduler_config.json`` (into ``path`` when it is a folder); returns the file path."""
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(self.to_json(class_name))
        return os.fspath(path)


_C = TypeVar("_C", bound=SchedulerConfig)


@dataclasses.dataclass(frozen=True)
class LCMConfig(SchedulerConfig):
    """Diffusers' ``LCMScheduler`` (and ``TCDScheduler``) configuration, frozen and validated."""

    _SCHEDULERS: ClassVar[str] = "LCMScheduler and TCDScheduler"
    _CLASS_NAME: ClassVar[str] = "LCMScheduler"

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
        _check_types(self, FieldKinds(
            integers=("num_train_timesteps", "original_inference_steps", "steps_offset"),
            numbers=("beta_start", "beta_end", "clip_sample_range", "dynamic_thresholding_ratio", "sample_max_value",
                     "timestep_scaling"),
            booleans=("clip_sample", "set_alpha_to_one", "thresholding", "rescale_betas_zero_snr"),
            texts=("beta_schedule", "prediction_type", "timestep_spacing")))
        _check_number_list(self, "trained_betas", "a list of numbers, one per training timestep, or null")
        _validate(self)


def _as_list(values: Any) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)


# A config pasted or read from a file can hold anything; checking the kind of each field first
# lets every later comparison trust it, and turns a value of the wrong kind into an error that
# names the field instead of a TypeError deep inside.
@dataclasses.dataclass(frozen=True)
class FieldKinds:
    """Which fields of a config hold integers, numbers, true/false and text (as JSON gives them)."""

    integers: Tuple[str, ...] = ()
    numbers: Tuple[str, ...] = ()
    booleans: Tuple[str, ...] = ()
    texts: Tuple[str, ...] = ()


# A pasted value can be megabytes long or nested thousands deep: messages show a bounded repr.
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 2, 40, 40
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = _SHORT_REPR.maxdict = 4


def _short(value: Any) -> str:
    return _SHORT_REPR.repr(value)


def _short_list(names: list, limit: int = 10) -> str:
    """The first ``limit`` names and how many more, so one log line stays one line."""
    shown = ", ".join(_short(name) if len(name) > 40 else name for name in names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _wrong_kind(config: SchedulerConfig, name: str, kind: str, value: Any) -> TypeError:
    example = next(field.default for field in dataclasses.fields(config) if field.name == name)  # type: ignore[arg-type]
    example_text = json.dumps(example) if isinstance(example, bool) else repr(example)  # as pasted JSON spells it
    return TypeError(f"{name} must be {kind} (e.g. {example_text}, diffusers' default), got {_short(value)} "
                     f"({type(value).__name__})")


def _check_types(config: SchedulerConfig, kinds: FieldKinds) -> None:
    """Raise a TypeError naming the field when a value is of the wrong kind; normalise numbers.

    Integral floats are accepted for the integer fields (JSON writers may emit 1000.0) and ints
    for the float fields; both are stored as the field's own type, so equal configs compare
    and hash equal however they were written.
    """
    for name in kinds.integers:
        value = getattr(config, name)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise _wrong_kind(config, name, "an integer", value)
        object.__setattr__(config, name, int(value))
    for name in kinds.numbers:
        value = getattr(config, name)
        if not _is_number(value):
            raise _wrong_kind(config, name, "a number", value)
        object.__setattr__(config, name, float(value))
    for name in kinds.booleans:
        value = getattr(config, name)
        if not isinstance(value, bool):
            raise _wrong_kind(config, name, "true or false", value)
    for name in kinds.texts:
        value = getattr(config, name)
        if not isinstance(value, str):
            raise _wrong_kind(config, name, "a string", value)


def _check_number_list(config: SchedulerConfig, name: str, kind: str) -> None:
    """A list field: any sequence or array of numbers (or None), stored as a tuple of Python floats."""
    values = getattr(config, name)
    if values is None:
        return
    items = _as_list(values) if hasattr(values, "tolist") or isinstance(values, (list, tuple)) else None
    if items is None or not all(_is_number(item) for item in items):
        raise TypeError(f"{name} must be {kind}; got {_short(values)}")
    object.__setattr__(config, name, tuple(float(item) for item in items))


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


