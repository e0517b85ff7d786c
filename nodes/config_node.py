"""LCMSchedulerConfig: diffusers' LCMScheduler settings as an immutable LCM_CONFIG."""

from __future__ import annotations

import logging
from typing import Any, Dict, Tuple

from ..lcm_core import BETA_SCHEDULES, PREDICTION_TYPES, LCMConfig
from ..lcm_core.config import TIMESTEP_SPACINGS
from . import host

logger = logging.getLogger(__name__)

LCM_CONFIG = "LCM_CONFIG"
_DEFAULTS = LCMConfig()


# Inputs that keep diffusers' default for every published LCM model. Front ends that know the
# option (ComfyUI's newer ones) fold them into an "advanced" section; older ones show them as usual.
_ADVANCED = frozenset({
    "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "clip_sample_range", "set_alpha_to_one",
    "steps_offset", "thresholding", "dynamic_thresholding_ratio", "sample_max_value", "timestep_spacing",
    "rescale_betas_zero_snr",
})


def _float(default: float, minimum: float, maximum: float, step: float, tooltip: str) -> Tuple[str, Dict[str, Any]]:
    return ("FLOAT", {"default": default, "min": minimum, "max": maximum, "step": step, "round": False,
                      "tooltip": tooltip})


def _mark_advanced(inputs: Dict[str, Any]) -> Dict[str, Any]:
    return {name: (spec[0], {**spec[1], "advanced": True}) if name in _ADVANCED else spec
            for name, spec in inputs.items()}


class LCMSchedulerConfig:
    """Every field of diffusers' LCMScheduler, with its defaults, as one frozen config."""

    DESCRIPTION = (
        "The settings of diffusers' LCMScheduler (Latent Consistency Model multistep scheduler), with the same "
        "defaults, as an LCM_CONFIG for LCMTimesteps and LCMSampler. Connect the MODEL so the beta schedule, "
        "prediction type and zero-SNR setting come from it and cannot disagree, or paste a diffusers "
        "scheduler_config.json.")
    CATEGORY = "sampling/custom_sampling/lcm"
    SEARCH_ALIASES = ["lcm config", "scheduler config", "diffusers scheduler", "latent consistency", "tcd config"]
    FUNCTION = "build"
    RETURN_TYPES = (LCM_CONFIG,)
    RETURN_NAMES = ("config",)
    OUTPUT_TOOLTIPS = ("An immutable LCM scheduler configuration (diffusers' LCMScheduler fields).",)

    @classmethod
    def INPUT_TYPES(cls) -> Dict[str, Any]:
        d = _DEFAULTS
        return {
            "required": _mark_advanced({
                "num_train_timesteps": ("INT", {"default": d.num_train_timesteps, "min": 1, "max": 10000,
                                                "tooltip": "Training timesteps of the model (1000 for SD1.5/SDXL)."}),
                "beta_start": _float(d.beta_start, 0.0, 1.0, 0.00001, "First beta of the training noise schedule."),
                "beta_end": _float(d.beta_end, 0.0, 1.0, 0.0001, "Last beta of the training noise schedule."),
                "beta_schedule": (list(BETA_SCHEDULES), {"default": d.beta_schedule,
                                  "tooltip": "How betas go from beta_start to beta_end (scaled_linear for SD)."}),
                "original_inference_steps": ("INT", {"default": d.original_inference_steps, "min": 1, "max": 10000,
                                             "tooltip": "Size of the LCM distillation grid the steps are picked "
                                                        "from (50 for the published LCM models)."}),
                "clip_sample": ("BOOLEAN", {"default": d.clip_sample,
                                            "tooltip": "Clamp the predicted x0 to +-clip_sample_range."}),
                "clip_sample_range": _float(d.clip_sample_range, 0.001, 100.0, 0.01,
                                            "Bound for clip_sample."),
                "set_alpha_to_one": ("BOOLEAN", {"default": d.set_alpha_to_one,
                                                 "tooltip": "diffusers field; LCM's steps never use it."}),
                "steps_offset": ("INT", {"default": d.steps_offset, "min": 0, "max": 1000,
                                         "tooltip": "diffusers field; LCM's timesteps ignore it."}),
                "prediction_type": (list(PREDICTION_TYPES), {"default": d.prediction_type,
                                    "tooltip": "What the UNet predicts. Inside ComfyUI the sampler uses the "
                                               "model's own parameterisation; connect the model to keep both "
                                               "in agreement."}),
                "thresholding": ("BOOLEAN", {"default": d.thresholding,
                                             "tooltip": "Imagen dynamic thresholding of x0 (not for latent "
                                                        "models such as SD)."}),
                "dynamic_thresholding_ratio": _float(d.dynamic_thresholding_ratio, 0.001, 1.0, 0.001,
                                                     "Quantile of |x0| used as the threshold."),
                "sample_max_value": _float(d.sample_max_value, 0.001, 1000.0, 0.01,
                                           "Largest threshold dynamic thresholding may use."),
                "timestep_spacing": (list(TIMESTEP_SPACINGS), {"default": d.timestep_spacing,
                                     "tooltip": "diffusers field; LCM's timesteps ignore it."}),
                "timestep_scaling": _float(d.timestep_scaling, 0.001, 1000.0, 0.1,
                                           "Factor on t in the boundary condition c_skip / c_out (10 in LCM)."),
                "rescale_betas_zero_snr": ("BOOLEAN", {"default": d.rescale_betas_zero_snr,
                                           "tooltip": "Zero terminal SNR (needs v_prediction)."}),
            }),
            "optional": {
                "model": ("MODEL", {"tooltip": "When connected, num_train_timesteps, the beta schedule, "
                                               "prediction_type and zero-SNR are taken from this model."}),
                "scheduler_config_json": ("STRING", {"default": "", "multiline": True,
                                          "tooltip": "Paste a diffusers scheduler_config.json here to use it "
                                                     "instead of the widgets above (unknown keys are ignored "
                                                     "with a warning). Empty: use the widgets."}),
            },
        }

    def build(self, model: Any = None, scheduler_config_json: str = "", **fields: Any) -> Tuple[LCMConfig]:
        if scheduler_config_json and scheduler_config_json.strip():
            try:
                config = LCMConfig.from_json(scheduler_config_json)
            except (TypeError, ValueError, NotImplementedError) as error:
                raise ValueError(f"LCMSchedulerConfig scheduler_config_json: {error}") from error
        else:
            config = _checked(LCMConfig, **fields)
        return (with_model_fields(config, model),)


def with_model_fields(config: LCMConfig, model: Any, node: str = "LCMSchedulerConfig") -> LCMConfig:
    """``config`` with the fields the MODEL decides (schedule, prediction type, zero-SNR) taken from it."""
    if model is None:
        return config
    from_model = host.config_fields_of(model)
    disagreeing = {k: (config[k], v) for k, v in from_model.items() if config[k] != v}
    if not disagreeing:
        return config
    logger.info("%s: taking from the model %s", node,
                ", ".join(f"{k}={v!r} (was {old!r})" for k, (old, v) in disagreeing.items()))
    return _checked(config.replace, node, **from_model)


def _checked(build: Any, node: str = "LCMSchedulerConfig", **fields: Any) -> LCMConfig:
    try:
        return build(**fields)
    except (TypeError, ValueError, NotImplementedError) as error:
        raise ValueError(f"{node}: {error}") from error
