"""Full LCM-distilled UNets on ComfyUI's own UNet: restore the guidance embedding ComfyUI drops.

LCM_Dreamshaper_v7, lcm-sdxl and lcm-ssd-1b are UNets distilled with the guidance scale w as an
input (Luo et al. 2023, Sec. 4.2): diffusers' ``TimestepEmbedding`` adds
``cond_proj(guidance_scale_embedding(w))`` (a bias-free Linear, ``time_cond_proj_dim`` = 256 ->
model_channels) to the sinusoidal timestep embedding before the time MLP's first Linear.
ComfyUI's ``openaimodel.UNetModel`` has no such input and logs ``time_embedding.cond_proj.weight``
among the "left over keys", so these models run as if w were 0.

The fix is an object patch (``ModelPatcher.add_object_patch``) on ``diffusion_model.time_embed``,
the ``nn.Sequential(Linear, SiLU, Linear)`` that ``UNetModel._forward`` applies to the sinusoidal
``t_emb``. The replacement is a Sequential holding the *same* child modules under the *same*
names ("0", "1", "2") plus a ``cond_proj`` child, so:
- weight patches (LoRA, merges) on ``diffusion_model.time_embed.0.weight`` resolve to the same
  Linear whether or not the object patch is applied (comfy.utils.set_attr walks the dotted name);
- ModelPatcher applies object patches on every load and restores the original on unload
  (``patch_model`` / ``unpatch_model``; ``partially_load`` swaps them), so clones with different
  w stay independent; every clone shares one ``cond_proj`` module, so wherever the loaded model's
  modules are, it is there too;
- ``cond_proj`` is a ``comfy.ops.manual_cast.Linear``: it takes part in ComfyUI's low-VRAM partial
  loading like any other Linear and always computes in the dtype of its input (the model's
  compute dtype), whatever dtype it is stored in;
- saving the model (``ModelSave`` / ``CheckpointSave`` -> ``state_dict_for_saving``, BaseModel's up to
  0.3.x and ModelPatcher's since, run while the patch is applied) writes it as
  ``model.diffusion_model.time_embed.cond_proj.weight``, which this loader finds again.
"""

from __future__ import annotations

import collections
import inspect
import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from ..lcm_core.guidance import (
    DEFAULT_GUIDANCE_SCALE,
    DIFFUSERS,
    W_CONVENTIONS,
    guidance_scale_embedding,
    guidance_w,
)

logger = logging.getLogger(__name__)

CATEGORY = "sampling/custom_sampling/lcm"
TIME_EMBED = "diffusion_model.time_embed"
COND_PROJ_SUFFIX = "cond_proj.weight"
# ComfyUI's UNETLoader weight_dtype choices (nodes.py, UNETLoader.load_unet), same meaning.
WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")
# Storage dtypes cond_proj keeps as the UNet stores them; anything else (fp8, quantised) is
# stored in the compute dtype instead: it is 256 x model_channels values (~160 KB in fp16),
# and a plain fp8 cast without a scale would flush its smallest weights (< 2^-9) to zero.
_PLAIN_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_CFG_NOTE = ("Keep cfg at 1 in the sampler for these models: the guidance is inside the UNet, so a CFG "
             "pass (cfg > 1) is extra, real CFG on top of it (and twice the cost).")


class GuidanceTimeEmbed(torch.nn.Sequential):
    """``time_embed`` with LCM's w-conditioning: mlp(t_emb + cond_proj(embed(w))).

    The MLP children are the original module's own objects under their original names, so
    state-dict keys and weight patches of ``time_embed.0`` / ``time_embed.2`` are unchanged;
    ``cond_proj`` is one more child (key ``time_embed.cond_proj.weight``). w is a plain float,
    not a buffer: it never enters the state dict or ComfyUI's weight loading.
    """

    def __init__(self, mlp: "collections.OrderedDict[str, torch.nn.Module]", cond_proj: torch.nn.Module,
                 w: float) -> None:
        super().__init__(mlp)
        self._mlp_names: Tuple[str, ...] = tuple(mlp)
        self.cond_proj = cond_proj
        self.w = float(w)
        self.cond_proj_dim = int(cond_proj.in_features)
        # float32 on the CPU, computed once; copies per (device, dtype) are cached so sampling
        # steps do no host-to-device transfer after the first.
        self._w_embedding = guidance_scale_embedding(self.w, self.cond_proj_dim)
        self._w_embedding_on: Dict[Tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def mlp_children(self) -> "collections.OrderedDict[str, torch.nn.Module]":
        return collections.OrderedDict((name, self._modules[name]) for name in self._mlp_names)

    def with_w(self, w: float) -> "GuidanceTimeEmbed":
        """The same modules (shared, not copied) at another w."""
        return GuidanceTimeEmbed(self.mlp_children(), self.cond_proj, w)

    def w_embedding(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        cached = self._w_embedding_on.get(key)
        if cached is None:
            # diffusers casts the float32 embedding to the latents' dtype before cond_proj
            # (LatentConsistencyModelPipeline.__call__: w_embedding.to(device, dtype=latents.dtype)).
            cached = self._w_embedding.to(device=like.device, dtype=like.dtype)
            self._w_embedding_on[key] = cached
        return cached

    def forward(self, t_emb: torch.Tensor) -> torch.Tensor:
        # diffusers TimestepEmbedding.forward: sample = sample + cond_proj(condition), then
        # linear_1, act, linear_2. (1, C) broadcasts over the batch: every row has the same w.
        h = t_emb + self.cond_proj(self.w_embedding(t_emb))
        for name in self._mlp_names:
            h = self._modules[name](h)
        return h

    def extra_repr(self) -> str:
        return f"w={self.w}, cond_proj_dim={self.cond_proj_dim}"


def find_cond_proj(state_dict: Mapping[str, Any]) -> Optional[str]:
    """The key of the guidance embedding's cond_proj weight in a UNet state dict, or None.

    Matches by suffix: diffusers layout ``time_embedding.cond_proj.weight``, SD-layout single files
    (``model.diffusion_model.time_embedding.cond_proj.weight``), and what ModelSave writes
    (``model.diffusion_model.time_embed.cond_proj.weight``).
    """
    keys = [k for k in state_dict if k == COND_PROJ_SUFFIX or k.endswith("." + COND_PROJ_SUFFIX)]
    if len(keys) > 1:
        # Only the time embedding's cond_proj is this one; prefer it if other modules have one.
        keys = [k for k in keys if ".time_embed" in "." + k] or keys
    if len(keys) > 1:
        raise ValueError(f"LCMUNetLoader: the file has several cond_proj weights ({', '.join(sorted(keys))}); "
                         "expected one, the time embedding's (time_embedding.cond_proj.weight)")
    return keys[0] if keys else None


def _first_linear(mlp: Mapping[str, torch.nn.Module]) -> torch.nn.Module:
    for module in mlp.values():
        if hasattr(module, "in_features"):
            return module
    raise ValueError("model: its time_embed has no Linear layer; the LCM guidance embedding needs an SD1.5 / SDXL / "
                     "SSD-1B UNet")


def _time_embed_mlp(model: Any) -> "collections.OrderedDict[str, torch.nn.Module]":
    """The time MLP's children of a MODEL, looking through an already applied GuidanceTimeEmbed."""
    try:
        time_embed = model.get_model_object(TIME_EMBED)
    except AttributeError:
        raise ValueError(f"model: {type(getattr(model, 'model', model)).__name__} has no {TIME_EMBED}; the LCM "
                         "guidance embedding exists only for SD1.5 / SDXL / SSD-1B UNets") from None
    if hasattr(time_embed, "mlp_children"):
        return time_embed.mlp_children()
    return collections.OrderedDict(time_embed.named_children())


def restore_guidance_embedding(model: Any, weight: torch.Tensor, w: float, source: str = "") -> Any:
    """A clone of ``model`` (a ModelPatcher) whose time embedding gets cond_proj(embed(w)) added."""
    import comfy.ops

    mlp = _time_embed_mlp(model)
    first = _first_linear(mlp)
    if weight.ndim != 2 or weight.shape[0] != first.in_features:
        raise ValueError(
            f"LCMUNetLoader: cond_proj weight{' ' + source if source else ''} has shape {tuple(weight.shape)}, "
            f"but this UNet's sinusoidal timestep embedding has {first.in_features} channels; expected "
            f"({first.in_features}, time_cond_proj_dim), e.g. ({first.in_features}, 256) for LCM checkpoints")
    storage = first.weight.dtype
    if storage not in _PLAIN_FLOAT_DTYPES:
        storage = getattr(model.model, "manual_cast_dtype", None) or torch.float32
    # manual_cast: always casts its weight to the input's dtype and device (comfy.ops.cast_bias_weight),
    # so it follows the model's compute dtype and works while offloaded; bias-free as in diffusers.
    cond_proj = comfy.ops.manual_cast.Linear(int(weight.shape[1]), int(weight.shape[0]), bias=False,
                                             dtype=storage, device=first.weight.device)
    # A copy: never alias the caller's (possibly memory-mapped) state-dict tensor.
    cond_proj.weight = torch.nn.Parameter(weight.detach().to(device=first.weight.device, dtype=storage, copy=True),
                                          requires_grad=False)
    patched = model.clone()
    patched.add_object_patch(TIME_EMBED, GuidanceTimeEmbed(mlp, cond_proj, w))
    logger.info("LCM guidance embedding restored%s: cond_proj %s (%s), w = %g", f" from {source}" if source else "",
                tuple(weight.shape), str(storage).replace("torch.", ""), w)
    return patched


def guidance_embedding_of(model: Any) -> Optional[GuidanceTimeEmbed]:
    """The restored embedding of a MODEL, or None (duck-typed: the pack may be loaded under two names)."""
    try:
        time_embed = model.get_model_object(TIME_EMBED)
    except AttributeError:
        return None
    return time_embed if hasattr(time_embed, "with_w") and hasattr(time_embed, "cond_proj") else None


def set_guidance(model: Any, w: float) -> Any:
    """A clone of ``model`` with its restored guidance embedding at ``w``; other clones keep theirs."""
    current = guidance_embedding_of(model)
    if current is None:
        raise ValueError(
            "LCMGuidanceEmbedding model: this MODEL has no restored LCM guidance embedding. Load the full LCM UNet "
            "(LCM_Dreamshaper_v7, lcm-sdxl, lcm-ssd-1b) with LCMUNetLoader first; models with LCM-LoRA have no "
            "guidance embedding and need none (use cfg in the sampler instead)")
    patched = model.clone()
    patched.add_object_patch(TIME_EMBED, current.with_w(w))
    return patched


def model_options_for(weight_dtype: str) -> Dict[str, Any]:
    """UNETLoader's model_options for a weight_dtype choice (nodes.py, UNETLoader.load_unet)."""
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"LCMUNetLoader weight_dtype={weight_dtype!r}: expected one of {list(WEIGHT_DTYPES)}")
    options: Dict[str, Any] = {}
    if weight_dtype in ("fp8_e4m3fn", "fp8_e4m3fn_fast"):
        options["dtype"] = torch.float8_e4m3fn
    if weight_dtype == "fp8_e4m3fn_fast":
        options["fp8_optimizations"] = True
    if weight_dtype == "fp8_e5m2":
        options["dtype"] = torch.float8_e5m2
    return options


def load_lcm_unet_state_dict(state_dict: Dict[str, torch.Tensor], model_options: Optional[Dict[str, Any]] = None,
                             w: float = DEFAULT_GUIDANCE_SCALE - 1.0, metadata: Optional[Dict[str, str]] = None,
                             source: str = "the state dict") -> Any:
    """ComfyUI's ``load_diffusion_model_state_dict`` plus the guidance embedding, if the dict has one.

    Takes the cond_proj weight out of ``state_dict`` first (ComfyUI would only log it as a left
    over key). Without one, the model loads as usual with one warning.
    """
    import comfy.sd

    key = find_cond_proj(state_dict)
    weight = state_dict.pop(key) if key is not None else None
    load = comfy.sd.load_diffusion_model_state_dict
    # ComfyUI reads quantisation metadata since 2025; the 2024 function takes no metadata argument.
    extra = {"metadata": metadata} if "metadata" in inspect.signature(load).parameters else {}
    model = load(state_dict, model_options=dict(model_options or {}), **extra)
    if model is None:
        raise RuntimeError(f"LCMUNetLoader: ComfyUI could not detect the model type of {source} (not a UNet or "
                           "diffusion model it knows); full LCM UNets are SD1.5, SDXL or SSD-1B UNets")
    if weight is None:
        logger.warning(
            "LCMUNetLoader: %s has no guidance embedding (no *%s key), so it is not a full LCM-distilled UNet; "
            "loaded as ComfyUI's UNETLoader would. Models with an LCM-LoRA need no special loader.",
            source, COND_PROJ_SUFFIX)
        return model
    return restore_guidance_embedding(model, weight, w, source=f"{source} [{key}]")


def load_lcm_unet(path: str, weight_dtype: str = "default", w: float = DEFAULT_GUIDANCE_SCALE - 1.0) -> Any:
    """Load a UNet file (any ComfyUI-supported format) with its guidance embedding restored at ``w``."""
    import comfy.utils

    options = model_options_for(weight_dtype)
    name = os.path.basename(path)
    try:
        state_dict, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    except Exception as error:  # safetensors, pickle and OS errors alike; none of them names the file
        raise ValueError(
            f"LCMUNetLoader unet_name: {name!r} ({_file_size(path)}) could not be read as a model file: "
            f"{_first_line(error)}. It is empty, truncated or not a UNet file; download it again, or choose a "
            "diffusers-layout or SD-layout UNet .safetensors in models/diffusion_models") from error
    return load_lcm_unet_state_dict(state_dict, options, w, metadata=metadata, source=name)


def _file_size(path: str) -> str:
    try:
        return f"{os.path.getsize(path):,} bytes"
    except OSError:
        return "size unknown"


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _guidance_inputs() -> Dict[str, Any]:
    return {
        "guidance_scale": ("FLOAT", {
            "default": DEFAULT_GUIDANCE_SCALE, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
            "tooltip": "The guidance the LCM UNet applies inside itself, as diffusers' "
                       "LatentConsistencyModelPipeline guidance_scale (default 8.5). " + _CFG_NOTE}),
        "w_convention": (list(W_CONVENTIONS), {
            "default": DIFFUSERS,
            "tooltip": "How guidance_scale becomes the embedded w. diffusers (default): w = guidance_scale - 1, "
                       "so 8.5 gives diffusers' images. original LCM: w = guidance_scale, as the LCM authors' "
                       "own pipeline (their 8.0 is diffusers' 9.0)."}),
    }


class LCMUNetLoader:
    """UNETLoader for full LCM-distilled UNets: the same model, with the w-embedding ComfyUI drops."""

    DESCRIPTION = (
        "Loads a UNet from models/diffusion_models (models/unet) like ComfyUI's Load Diffusion Model, and restores "
        "the guidance embedding of full LCM-distilled UNets (LCM_Dreamshaper_v7, lcm-sdxl, lcm-ssd-1b: the "
        "time_embedding.cond_proj weight, which ComfyUI otherwise drops as a left-over key), so the model gets "
        "the guidance scale w it was distilled with. " + _CFG_NOTE + " A file without it (not a full LCM) loads "
        "as usual with a warning; LCM-LoRA users need no special loader.")
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ["lcm unet", "lcm checkpoint", "dreamshaper lcm", "lcm-sdxl", "guidance embedding"]
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The UNet with its LCM guidance embedding at the chosen guidance scale. Sample it with "
                       "cfg 1 (e.g. SamplerCustom with LCMTimesteps and LCMSampler).",)

    @classmethod
    def INPUT_TYPES(cls) -> Dict[str, Any]:
        import folder_paths

        return {
            "required": {
                "unet_name": (folder_paths.get_filename_list("diffusion_models"), {
                    "tooltip": "A full LCM UNet in models/diffusion_models (or models/unet): diffusers layout "
                               "(diffusion_pytorch_model.safetensors of LCM_Dreamshaper_v7, lcm-sdxl, lcm-ssd-1b) "
                               "or an SD-layout single file."}),
                "weight_dtype": (list(WEIGHT_DTYPES), {
                    "default": "default",
                    "tooltip": "As in Load Diffusion Model: the dtype the UNet weights are stored in; the guidance "
                               "embedding always computes in the model's compute dtype."}),
                **_guidance_inputs(),
            }
        }

    def load(self, unet_name: str, weight_dtype: str, guidance_scale: float,
             w_convention: str = DIFFUSERS) -> Tuple[Any]:
        import folder_paths

        w = guidance_w(guidance_scale, w_convention)
        path = folder_paths.get_full_path_or_raise("diffusion_models", unet_name)
        return (load_lcm_unet(path, weight_dtype, w),)


class LCMGuidanceEmbedding:
    """Change w on a MODEL from LCMUNetLoader without reloading it."""

    DESCRIPTION = (
        "Sets the guidance scale of a full LCM UNet loaded with LCMUNetLoader, without reloading it: returns a "
        "copy of the MODEL with the new w (other branches of the graph keep theirs; LoRAs and other patches are "
        "kept). " + _CFG_NOTE)
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ["lcm guidance", "lcm w", "guidance scale embedding"]
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The same model with its LCM guidance embedding at the new guidance scale.",)

    @classmethod
    def INPUT_TYPES(cls) -> Dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A MODEL from LCMUNetLoader (a full LCM UNet with its guidance "
                                               "embedding restored), possibly with LoRAs or other patches."}),
                **_guidance_inputs(),
            }
        }

    def patch(self, model: Any, guidance_scale: float, w_convention: str = DIFFUSERS) -> Tuple[Any]:
        return (set_guidance(model, guidance_w(guidance_scale, w_convention)),)


__all__: List[str] = [
    "GuidanceTimeEmbed",
    "LCMGuidanceEmbedding",
    "LCMUNetLoader",
    "find_cond_proj",
    "load_lcm_unet",
    "load_lcm_unet_state_dict",
    "restore_guidance_embedding",
    "set_guidance",
]
