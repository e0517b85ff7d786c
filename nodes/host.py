"""What the pack reads from the host's MODEL: its sampling parameterisation and noise table.

ComfyUI keeps these on the model's ``model_sampling`` object (``comfy.model_sampling``):
a mix-in class for the parameterisation (EPS, V_PREDICTION, X0, the LCM boundary
condition of ``ModelSamplingDiscrete(lcm)``, or CONST for flow matching) over a sigma
table. Only attributes that ComfyUI has kept stable since 2024 are used.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch

# comfy.ldm.modules.diffusionmodules.util.make_beta_schedule names -> diffusers beta_schedule.
# ComfyUI's "linear" is linear in sqrt(beta), which diffusers calls "scaled_linear".
_COMFY_TO_DIFFUSERS_SCHEDULE = {"linear": "scaled_linear", "sqrt_linear": "linear", "cosine": "squaredcos_cap_v2"}


def model_sampling_of(model: Any) -> Any:
    """The ``model_sampling`` object of a MODEL (a ModelPatcher), object patches included."""
    return model.get_model_object("model_sampling")


def _mro_names(model_sampling: Any) -> List[str]:
    return [cls.__name__ for cls in type(model_sampling).__mro__]


def applies_lcm_boundary(model_sampling: Any) -> bool:
    """True for a model patched with ModelSamplingDiscrete(sampling="lcm").

    Its output is already c_out * x0 + c_skip * x_k (comfy_extras.nodes_model_advanced.LCM),
    so the sampler must not apply the boundary condition a second time.
    """
    return any(cls.__name__ == "LCM" and "calculate_denoised" in vars(cls) for cls in type(model_sampling).__mro__)


# The model samplings of ComfyUI's flow-matching models (CONST: x = (1 - sigma) x0 + sigma noise, sigma in
# [0, 1]): a static shift (SD3 / 3.5, Wan, HiDream, AuraFlow, Lumina) or Flux's, whose ``shift`` is mu
# (Flux, Qwen-Image, Chroma). Cosmos' CONST sampling has unbounded EDM sigmas and is neither.
_FLOW_SAMPLINGS = ("ModelSamplingDiscreteFlow", "ModelSamplingFlux")
DISCRETE_MODELS = "a discrete-timestep model such as SD1.5, SDXL or SSD-1B"
FLOW_MODELS = "a flow-matching model such as SD3 / 3.5, Flux, Wan, Qwen-Image, HiDream or AuraFlow"


def is_flow(model_sampling: Any) -> bool:
    """True for a flow-matching model (CONST over ModelSamplingDiscreteFlow or ModelSamplingFlux)."""
    names = _mro_names(model_sampling)
    return "CONST" in names and any(name in names for name in _FLOW_SAMPLINGS)


def has_dynamic_shift(model_sampling: Any) -> bool:
    """True for ModelSamplingFlux, whose ``shift`` is Flux's mu (the resolution-dependent shift)."""
    return "ModelSamplingFlux" in _mro_names(model_sampling)


def describe_sampling(model_sampling: Any) -> str:
    """The model sampling's class and its ComfyUI mix-ins, for messages ("ModelSamplingDiscreteFlow, CONST")."""
    names = [name for name in _mro_names(model_sampling) if name not in ("Module", "object")]
    return ", ".join(dict.fromkeys(names[1:4] if names[0] == "ModelSampling" else names[:3]))


def _named(model_sampling: Any, family: str) -> str:
    """'SD3 (ModelSamplingDiscreteFlow, CONST)': the model class where known, and its sampling."""
    sampling = describe_sampling(model_sampling)
    return f"{family} ({sampling})" if family else f"its sampling ({sampling})"


def require_discrete(model_sampling: Any, what: str = "LCM", family: str = "") -> None:
    """Refuse models without discrete training timesteps (flow matching, EDM) where a discrete formula is needed."""
    names = _mro_names(model_sampling)
    if "ModelSamplingDiscrete" not in names or any("EDM" in name for name in names):
        if is_flow(model_sampling):
            raise ValueError(
                f"model: {_named(model_sampling, family)} is a flow-matching model; {what} needs {DISCRETE_MODELS}. "
                "On flow models use LCMSampler or KSampler's lcm_diffusers (diffusers' FlowMatchLCMScheduler) with "
                "the scheduler lcm_diffusers or FlowMatchLCMTimesteps")
        raise ValueError(f"model: {_named(model_sampling, family)} has no discrete training timesteps; {what} needs "
                         f"{DISCRETE_MODELS}, or {FLOW_MODELS} for LCMSampler")


def require_flow(model_sampling: Any, what: str, family: str = "") -> None:
    """Refuse models that are not flow matching where the flow formulas are needed."""
    if not is_flow(model_sampling):
        raise ValueError(f"model: {_named(model_sampling, family)} is not a flow-matching model; {what} needs "
                         f"{FLOW_MODELS}. On SD1.5 / SDXL use LCMTimesteps")


def model_family(model: Any) -> str:
    """The ComfyUI model class of a MODEL (ModelPatcher) or of a sampler's model wrapper: SD3, Flux, WAN21, ..."""
    base = getattr(model, "model", None)
    if base is None:
        inner = getattr(model, "inner_model", None)
        base = getattr(inner, "inner_model", None)
    return type(base).__name__ if base is not None else ""


def prediction_type_of(model_sampling: Any) -> str:
    """diffusers' prediction_type for the host's parameterisation."""
    names = _mro_names(model_sampling)
    if "V_PREDICTION" in names:
        return "v_prediction"
    if "X0" in names or "IMG_TO_IMG" in names:
        return "sample"
    if "EPS" in names:
        return "epsilon"
    raise ValueError(
        f"model: its sampling type {type(model_sampling).__name__} ({', '.join(names[:4])}) is not a discrete "
        "epsilon / v-prediction / x0 model; LCM needs a discrete-timestep model such as SD1.5, SDXL or SSD-1B")


def config_fields_of(model: Any) -> Dict[str, Any]:
    """The LCMConfig fields a MODEL decides: beta schedule, prediction type, zero-SNR."""
    model_sampling = model_sampling_of(model)
    require_discrete(model_sampling, "LCMSchedulerConfig's model input (LCM's discrete noise schedule)",
                     model_family(model))
    settings = getattr(getattr(getattr(model, "model", None), "model_config", None), "sampling_settings", {}) or {}
    comfy_schedule = settings.get("beta_schedule", "linear")
    fields: Dict[str, Any] = {
        "num_train_timesteps": int(model_sampling.num_timesteps),
        "prediction_type": prediction_type_of(model_sampling),
        "rescale_betas_zero_snr": bool(getattr(model_sampling, "zsnr", False)),
    }
    if comfy_schedule in _COMFY_TO_DIFFUSERS_SCHEDULE:
        fields["beta_schedule"] = _COMFY_TO_DIFFUSERS_SCHEDULE[comfy_schedule]
        if comfy_schedule != "cosine":
            fields["beta_start"] = float(getattr(model_sampling, "linear_start", settings.get("linear_start", 0.00085)))
            fields["beta_end"] = float(getattr(model_sampling, "linear_end", settings.get("linear_end", 0.012)))
    return fields


def model_sigmas(model: Any, timesteps: Sequence[int]) -> torch.Tensor:
    """The host model's own sigma for each integer timestep, float32 on the CPU."""
    model_sampling = model_sampling_of(model)
    require_discrete(model_sampling, "LCMTimesteps (training timesteps of a discrete schedule)", model_family(model))
    return sigmas_at(model_sampling, timesteps)


def sigmas_at(model_sampling: Any, timesteps: Sequence[int]) -> torch.Tensor:
    """A model sampling's own sigma for each integer timestep, float32 on the CPU."""
    require_discrete(model_sampling)
    t = torch.tensor(list(timesteps), dtype=torch.float32)
    return model_sampling.sigma(t).detach().to("cpu", torch.float32)


def keep_unmasked_latent(x: torch.Tensor, model_k: Any, extra_args: Dict[str, Any],
                         sigma: torch.Tensor) -> torch.Tensor:
    """A final latent with the input latent put back exactly where an inpaint mask keeps it.

    ComfyUI's KSamplerX0Inpaint (the ``model`` a sampler function receives) blends every x0
    it returns with the input latent outside the denoise mask, so samplers whose last step
    returns x0 keep that region exactly. A last step that returns anything else (TCD's
    sample at t = 0) needs the same blend once more, with the mask the last model call used
    (after the model's ``denoise_mask_function``, e.g. Differential Diffusion). diffusers'
    inpaint pipelines end the same way.
    """
    mask = extra_args.get("denoise_mask")
    latent = getattr(model_k, "latent_image", None)
    if mask is None or latent is None:
        return x
    mask_function = (extra_args.get("model_options") or {}).get("denoise_mask_function")
    if mask_function is not None:
        mask = mask_function(sigma, mask, extra_options={"model": model_k.inner_model, "sigmas": model_k.sigmas})
    return x * mask + latent * (1.0 - mask)
