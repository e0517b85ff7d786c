"""Tiny random-weight flow-matching transformers in ComfyUI and in diffusers, and diffusers' reference runs.

Each family (SD3, Flux dev-style with a guidance embedding, Wan 2.1 T2V) comes as a `FlowPair`: the
diffusers transformer and ComfyUI's own model class (a ModelPatcher) holding the same weights, fp32 on
the CPU, filled by comfy_host.seeded_init_ (ComfyUI builds its layers without any init).

- SD3: diffusers' SD3Transformer2DModel state dict through comfy.sd.load_diffusion_model_state_dict
  (ComfyUI's loader detects it and converts diffusers' keys itself).
- Wan: diffusers' WanTransformer3DModel renamed to ComfyUI's keys (ComfyUI does not detect diffusers'
  Wan keys), through the same loader, which detects WAN21 (dim 128 = heads x 128, text_dim 4096).
- Flux: detection fixes 24 heads of 128, so the model is built from comfy.supported_models.Flux with a
  reduced unet_config; diffusers' keys go through ComfyUI's own diffusers->Flux conversion
  (comfy.model_detection.convert_diffusers_mmdit, what its loader runs on a diffusers-format Flux).

`diffusers_reference` runs the family's real diffusers pipeline (StableDiffusion3Pipeline /
StableDiffusion3Img2ImgPipeline, FluxPipeline / FluxImg2ImgPipeline, WanPipeline; Flux img2img at
cfg 1 only, see below) on prompt
embeddings with no VAE decode (output_type="latent") and returns the latents in ComfyUI's layout,
converted by the ComfyUI model's own latent format (process_out; Flux unpacked first). The
generator convention: ONE torch.Generator("cpu").manual_seed(seed) draws the initial noise (the
pipeline's prepare_latents) and then every scheduler step's noise. diffusers' flow pipelines never
pass their generator to scheduler.step, so a scheduler that draws noise there must be wrapped:
`StepGetsPipelineGenerator` (a FlowMatchLCMScheduler subclass) fills it in.

The SD3 img2img pipeline reads `vae.config.latent_channels` before it decides whether its `image` is
already latents, so it gets a tiny AutoencoderKL whose config is read and whose weights never run
(16-channel input is taken as latents as they are). FluxImg2ImgPipeline runs with vae=None, but
turns true CFG on only for a text negative_prompt (which needs its text encoders), so Flux img2img is
referenced at cfg 1 and a cfg > 1 request is refused rather than silently run at cfg 1.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path
from typing import Any

import diffusers
import torch

import comfy_host

# Latent sizes: small enough that a model call takes milliseconds.
IMAGE_LATENT = 16  # SD3 and Flux latents are 16 x 16 (128 x 128 pixels)
WAN_FRAMES, WAN_LATENT = 5, 8  # Wan: 5 frames of 64 x 64 pixels -> latent (16, 2, 8, 8)
TEXT_TOKENS = 7
FLUX_GUIDANCE = 3.5  # FluxPipeline's default guidance_scale; ComfyUI's default "guidance" too
FAMILIES = ("sd3", "flux", "wan")

SD3_DIFFUSERS: dict[str, Any] = dict(
    sample_size=32, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=64, num_attention_heads=2,
    joint_attention_dim=32, caption_projection_dim=128, pooled_projection_dim=32, out_channels=16,
    pos_embed_max_size=96,
)
WAN_DIFFUSERS: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=1, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=256, num_layers=1, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6,
)
FLUX_DIFFUSERS: dict[str, Any] = dict(
    patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=4,
    joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6),
)
# The same Flux in ComfyUI's terms (FluxParams); hidden size 64 = 4 heads of 16 = sum(axes_dim).
FLUX_COMFY: dict[str, Any] = dict(
    image_model="flux", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=32, hidden_size=64,
    mlp_ratio=4.0, num_heads=4, depth=1, depth_single_blocks=1, axes_dim=[4, 6, 6], theta=10000, patch_size=2,
    qkv_bias=True, guidance_embed=True,
)

# The family's published scheduler_config, as far as the schedule goes (stabilityai/stable-diffusion-3.5-*,
# black-forest-labs/FLUX.1-dev). Wan's published scheduler is UniPC with flow_shift; the flow-LCM
# reference uses the shift the ComfyUI model carries (WAN21 loads with 8.0), see `scheduler_config`.
SD3_SCHEDULER: dict[str, Any] = dict(num_train_timesteps=1000, shift=3.0)
FLUX_SCHEDULER: dict[str, Any] = dict(
    num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
    base_image_seq_len=256, max_image_seq_len=4096,
)


@dataclasses.dataclass(frozen=True)
class FlowPair:
    """One family's tiny transformer in diffusers (`transformer`) and in ComfyUI (`model`, a ModelPatcher)."""

    family: str
    transformer: Any
    model: Any

    def latent_shape(self, batch: int = 1) -> tuple[int, ...]:
        """ComfyUI's LATENT shape (what EmptySD3LatentImage / EmptyHunyuanLatentVideo give)."""
        if self.family == "wan":
            return (batch, 16, (WAN_FRAMES - 1) // 4 + 1, WAN_LATENT, WAN_LATENT)
        return (batch, 16, IMAGE_LATENT, IMAGE_LATENT)

    def pixels(self) -> tuple[int, int]:
        """(height, width) in pixels for the pipeline (and ModelSamplingFlux's width / height)."""
        side = (WAN_LATENT if self.family == "wan" else IMAGE_LATENT) * 8
        return side, side


# --------------------------------------------------------------------------- the models


def _finish(module: Any) -> Any:
    return module.to(torch.float32).eval().requires_grad_(False)


def _cloned(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # ComfyUI's conversions pop and write into the dict they get: never hand them the diffusers model's tensors.
    return {key: value.detach().clone() for key, value in state_dict.items()}


def _load_detected(c: comfy_host.ComfyModules, state_dict: dict[str, torch.Tensor], expect: str) -> Any:
    patcher = c.sd.load_diffusion_model_state_dict(state_dict, model_options={"dtype": torch.float32})
    if patcher is None or type(patcher.model).__name__ != expect:
        raise comfy_host.ComfyHostError(f"ComfyUI did not load the tiny model as {expect}: got {patcher!r}")
    _finish(patcher.model.diffusion_model)
    return patcher


def sd3_pair(seed: int = 0) -> FlowPair:
    c = comfy_host.import_comfy()
    transformer = diffusers.SD3Transformer2DModel(**SD3_DIFFUSERS)
    comfy_host.seeded_init_(transformer, seed)
    transformer = _finish(transformer)
    return FlowPair("sd3", transformer, _load_detected(c, _cloned(transformer.state_dict()), "SD3"))


# diffusers' Wan key pieces -> ComfyUI's (diffusers' conversion script read for the facts; HOST.md).
# Applied to whole dot-separated pieces, longest first; `norm2` (diffusers' cross-attention norm) is
# ComfyUI's norm3 (diffusers' norm1 / norm3 have no weights).
_WAN_RENAMES = (
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    ("to_out.0", "o"),
    ("attn1", "self_attn"),
    ("attn2", "cross_attn"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("norm2", "norm3"),
    ("proj_out", "head.head"),
)


def wan_comfy_key(key: str) -> str:
    """ComfyUI's name for a diffusers WanTransformer3DModel state-dict key."""
    if key == "scale_shift_table":
        return "head.modulation"
    if key.endswith(".scale_shift_table"):
        return key[: -len("scale_shift_table")] + "modulation"
    name = f".{key}."
    for old, new in _WAN_RENAMES:
        name = name.replace(f".{old}.", f".{new}.")
    return name[1:-1]


def wan_pair(seed: int = 0) -> FlowPair:
    c = comfy_host.import_comfy()
    transformer = diffusers.WanTransformer3DModel(**WAN_DIFFUSERS)
    comfy_host.seeded_init_(transformer, seed)
    transformer = _finish(transformer)
    renamed = {wan_comfy_key(key): value for key, value in _cloned(transformer.state_dict()).items()}
    patcher = _load_detected(c, dict(renamed), "WAN21")  # the loader empties the dict it gets
    # strict: every ComfyUI parameter came from diffusers under its new name.
    patcher.model.diffusion_model.load_state_dict(renamed, strict=True)
    return FlowPair("wan", transformer, patcher)


def flux_pair(seed: int = 0) -> FlowPair:
    c = comfy_host.import_comfy()
    transformer = diffusers.FluxTransformer2DModel(**FLUX_DIFFUSERS)
    comfy_host.seeded_init_(transformer, seed)
    transformer = _finish(transformer)
    diffusers_sd = _cloned(transformer.state_dict())
    converted = c.comfy.model_detection.convert_diffusers_mmdit(diffusers_sd)
    if converted is None or diffusers_sd:  # it pops every key it converts
        raise comfy_host.ComfyHostError(f"diffusers Flux keys ComfyUI did not convert: {sorted(diffusers_sd)[:5]}")
    unet_config = dict(FLUX_COMFY)
    flux_params = importlib.import_module("comfy.ldm.flux.model").FluxParams
    # Newer ComfyUI (0.33.0) requires txt_ids_dims; its detection gives Flux.1 [].
    if "txt_ids_dims" in {field.name for field in dataclasses.fields(flux_params)}:
        unet_config["txt_ids_dims"] = []
    model_config = c.supported_models.Flux(unet_config)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({}, device=torch.device("cpu"))
    model.diffusion_model.load_state_dict(converted, strict=True)
    _finish(model.diffusion_model)
    cpu = torch.device("cpu")
    return FlowPair("flux", transformer, c.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu))


PAIRS = {"sd3": sd3_pair, "flux": flux_pair, "wan": wan_pair}


# ComfyUI reads a Wan 2.1 VAE's width from decoder.head.0.gamma (96 in the real one): 8 makes it tiny.
WAN_VAE_DIM = 8


def write_tiny_wan_files(models: Path, unet: str, vae: str, lora: str, seed: int = 0) -> None:
    """A tiny Wan 2.1 T2V setup in a server's models folder, under the file names a workflow's loaders give:
    the transformer of `wan_pair` (ComfyUI keys: UNETLoader detects WAN21) in diffusion_models, a Wan 2.1
    VAE of width WAN_VAE_DIM in vae, and a random kohya-layout LoRA on every 2-D transformer weight in loras.
    No text encoder: CLIPLoader builds umt5-xxl at full size (5.7B parameters) whatever the file holds."""
    from safetensors.torch import save_file

    folders = {name: models / name for name in ("diffusion_models", "vae", "loras")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    weights = wan_pair(seed).model.model.diffusion_model.state_dict()  # imports ComfyUI (CPU) as well
    save_file({key: value.contiguous() for key, value in weights.items()}, str(folders["diffusion_models"] / unet))
    wan_vae = importlib.import_module("comfy.ldm.wan.vae").WanVAE(
        dim=WAN_VAE_DIM, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
        temperal_downsample=[False, True, True])
    comfy_host.seeded_init_(wan_vae, seed)
    save_file({key: value.contiguous() for key, value in wan_vae.state_dict().items()}, str(folders["vae"] / vae))
    # kohya names, as ComfyUI maps them to a model's "diffusion_model.*" weights.
    targets = {"lora_unet_" + key[: -len(".weight")].replace(".", "_"): tuple(value.shape)
               for key, value in weights.items() if key.endswith(".weight") and value.ndim == 2}
    comfy_host.load_script("make_tiny_checkpoint").write_lora(folders["loras"] / lora, targets, seed)


# --------------------------------------------------------------------------- prompts


@dataclasses.dataclass(frozen=True)
class Prompt:
    """diffusers' prompt embeddings (positive and negative) for one family, batch 1."""

    embeds: torch.Tensor
    negative: torch.Tensor
    pooled: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None

    def batched(self, batch: int) -> Prompt:
        """The same prompt for each of `batch` images."""
        return Prompt(*(None if t is None else t.expand(batch, *t.shape[1:])
                        for t in (self.embeds, self.negative, self.pooled, self.negative_pooled)))


def prompt(family: str, seed: int = 0) -> Prompt:
    gen = torch.Generator().manual_seed(seed)
    width = 4096 if family == "wan" else 32
    embeds, negative = (torch.randn(1, TEXT_TOKENS, width, generator=gen) for _ in range(2))
    if family == "wan":
        return Prompt(embeds, negative)
    pooled, negative_pooled = (torch.randn(1, 32, generator=gen) for _ in range(2))
    return Prompt(embeds, negative, pooled, negative_pooled)


def comfy_conditioning(family: str, p: Prompt) -> tuple[list, list]:
    """(positive, negative) CONDITIONING as ComfyUI's text encoders hand them to a sampler."""
    def one(embeds: torch.Tensor, pooled: torch.Tensor | None) -> list:
        extra: dict[str, Any] = {}
        if pooled is not None:
            extra["pooled_output"] = pooled
        if family == "flux":
            extra["guidance"] = FLUX_GUIDANCE  # what FluxGuidance sets; FluxPipeline's guidance_scale
        return [[embeds, extra]]
    return one(p.embeds, p.pooled), one(p.negative, p.negative_pooled)


# --------------------------------------------------------------------------- diffusers' side


class StepGetsPipelineGenerator(diffusers.FlowMatchLCMScheduler):
    """diffusers' FlowMatchLCMScheduler whose step() draws from `pipeline_generator` when the pipeline
    passes no generator (diffusers' flow pipelines never do): the generator convention."""

    pipeline_generator: torch.Generator | None = None

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):  # noqa: ANN001, ANN201
        generator = self.pipeline_generator if generator is None else generator
        return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)


def scheduler_config(pair: FlowPair, **changes: Any) -> dict[str, Any]:
    """The diffusers scheduler config the family's pipeline uses for this ComfyUI model at its defaults."""
    if pair.family == "flux":
        base = FLUX_SCHEDULER
    elif pair.family == "sd3":
        base = SD3_SCHEDULER
    else:
        base = dict(num_train_timesteps=1000, shift=float(pair.model.get_model_object("model_sampling").shift))
    return {**base, **changes}


def flow_lcm_scheduler(pair: FlowPair, **changes: Any) -> StepGetsPipelineGenerator:
    return StepGetsPipelineGenerator(**scheduler_config(pair, **changes))


def flow_euler_scheduler(pair: FlowPair, **changes: Any) -> diffusers.FlowMatchEulerDiscreteScheduler:
    return diffusers.FlowMatchEulerDiscreteScheduler(**scheduler_config(pair, **changes))


def _tiny_sd3_vae() -> Any:
    # Only its config is read (latent_channels 16, so the img2img pipeline takes `image` as latents as
    # they are; 4 levels: vae_scale_factor 8); its weights never run. SD3.5's scaling and shift.
    return diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(32,) * 4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1,
        norm_num_groups=32, scaling_factor=1.5305, shift_factor=0.0609,
    )


def _pipeline(cls: type, **given: Any) -> Any:
    """The pipeline with `given` components and every other constructor argument None."""
    names = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    pipe = cls(**{name: given.get(name) for name in names})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_reference(pair: FlowPair, scheduler: Any, *, seed: int, steps: int, cfg: float = 1.0,
                        batch: int = 1, p: Prompt | None = None, image: torch.Tensor | None = None,
                        strength: float = 1.0) -> tuple[torch.Tensor, Any]:
    """The family's diffusers pipeline with `scheduler` and the generator convention.

    image: a ComfyUI LATENT tensor for img2img at `strength` (SD3 and Flux). cfg: SD3 and Wan's
    guidance_scale; Flux's true_cfg_scale (its guidance embedding stays FLUX_GUIDANCE).
    Returns (latents in ComfyUI's layout, the scheduler after the run: its sigmas are the schedule).
    """
    p = prompt(pair.family) if p is None else p
    # One prompt per image: with prompt_embeds given, the pipelines do not repeat them for
    # num_images_per_prompt (SD3 then fails), so the batch is the embeddings' batch.
    p = p.batched(batch)
    generator = torch.Generator("cpu").manual_seed(seed)
    if isinstance(scheduler, StepGetsPipelineGenerator):
        scheduler.pipeline_generator = generator
    height, width = pair.pixels()
    latent_format = pair.model.model.latent_format
    call: dict[str, Any] = dict(num_inference_steps=steps, generator=generator, output_type="latent", height=height,
                                width=width, prompt_embeds=p.embeds, negative_prompt_embeds=p.negative)
    if pair.family == "wan":
        if image is not None:
            raise ValueError("img2img: SD3 and Flux only (diffusers has no Wan video-to-video pipeline here)")
        pipe = _pipeline(diffusers.WanPipeline, transformer=pair.transformer, scheduler=scheduler)
        call.update(num_frames=WAN_FRAMES, guidance_scale=cfg)
    elif pair.family == "sd3":
        cls = diffusers.StableDiffusion3Pipeline
        extra: dict[str, Any] = {}
        if image is not None:
            cls, extra = diffusers.StableDiffusion3Img2ImgPipeline, {"vae": _tiny_sd3_vae()}
            call.update(image=latent_format.process_in(image), strength=strength)
        pipe = _pipeline(cls, transformer=pair.transformer, scheduler=scheduler, **extra)
        call.update(guidance_scale=cfg, pooled_prompt_embeds=p.pooled,
                    negative_pooled_prompt_embeds=p.negative_pooled)
    else:
        cls = diffusers.FluxPipeline
        if image is not None:
            if cfg != 1.0:
                # FluxImg2ImgPipeline (0.36.0) turns true CFG on only for a text negative_prompt
                # (do_true_cfg = true_cfg_scale > 1 and negative_prompt is not None): with embeddings
                # it would silently run cfg 1.
                raise ValueError(f"cfg={cfg}: FluxImg2ImgPipeline runs true CFG only from a text negative_prompt; "
                                 "use cfg=1.0 for Flux img2img")
            cls = diffusers.FluxImg2ImgPipeline
            call.update(image=latent_format.process_in(image), strength=strength)
        pipe = _pipeline(cls, transformer=pair.transformer, scheduler=scheduler)
        call.update(guidance_scale=FLUX_GUIDANCE, true_cfg_scale=cfg, pooled_prompt_embeds=p.pooled,
                    negative_pooled_prompt_embeds=p.negative_pooled)
    with torch.no_grad():
        output = pipe(**call)
    latents = output.frames if pair.family == "wan" else output.images
    if pair.family == "flux":  # packed (B, h/2 * w/2, 64) -> (B, 16, h, w)
        latents = diffusers.FluxPipeline._unpack_latents(latents, height, width, pipe.vae_scale_factor)
    return latent_format.process_out(latents), scheduler


# --------------------------------------------------------------------------- ComfyUI's side


def comfy_custom(c: comfy_host.ComfyModules, pair: FlowPair, sampler: Any, sigmas: torch.Tensor, *, seed: int,
                 cfg: float = 1.0, batch: int = 1, p: Prompt | None = None, latent: torch.Tensor | None = None,
                 model: Any = None) -> torch.Tensor:
    """SamplerCustom(add_noise=True, noise_seed=seed) as a graph runs it; returns the LATENT tensor.

    latent: the input LATENT (default: zeros, an empty latent); model: default the pair's."""
    positive, negative = comfy_conditioning(pair.family, prompt(pair.family) if p is None else p)
    latent = torch.zeros(pair.latent_shape(batch)) if latent is None else latent
    output = c.nodes_custom_sampler.SamplerCustom.execute(
        model=pair.model if model is None else model, add_noise=True, noise_seed=seed, cfg=cfg, positive=positive,
        negative=negative, sampler=sampler, sigmas=sigmas, latent_image={"samples": latent})
    return output.args[0]["samples"]


def comfy_ksampler(c: comfy_host.ComfyModules, pair: FlowPair, *, seed: int, steps: int, cfg: float = 1.0,
                   batch: int = 1, sampler_name: str = "lcm_diffusers", scheduler: str = "lcm_diffusers",
                   p: Prompt | None = None, model: Any = None) -> torch.Tensor:
    """ComfyUI's KSampler node on an empty latent; returns the LATENT tensor."""
    positive, negative = comfy_conditioning(pair.family, prompt(pair.family) if p is None else p)
    latent = {"samples": torch.zeros(pair.latent_shape(batch))}
    return c.nodes.KSampler().sample(pair.model if model is None else model, seed, steps, cfg, sampler_name,
                                     scheduler, positive, negative, latent, denoise=1.0)[0]["samples"]


def flux_at_pipeline_mu(c: comfy_host.ComfyModules, pair: FlowPair, max_shift: float = 1.15,
                        base_shift: float = 0.5) -> Any:
    """The ComfyUI Flux model through the ModelSamplingFlux node at the latent's pixel size: its shift is
    then FluxPipeline's mu for that image sequence length."""
    height, width = pair.pixels()
    return c.nodes_model_advanced.ModelSamplingFlux().patch(pair.model, max_shift, base_shift, width, height)[0]


def relative_error(got: torch.Tensor, reference: torch.Tensor) -> float:
    """max |got - reference| over max |reference|: the error relative to the latent's magnitude."""
    assert got.shape == reference.shape, (tuple(got.shape), tuple(reference.shape))
    assert torch.isfinite(got).all() and torch.isfinite(reference).all()
    return float((got - reference).abs().max() / reference.abs().max())
