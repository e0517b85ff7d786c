"""Run by tests/test_older_comfyui.py in a process of its own, with $LCM_COMFYUI naming an
older ComfyUI tree: the pack's nodes on that host against diffusers, seed for seed.

Prints one JSON object: the pack's node ids and, per case, the max abs difference of the
final latents (ComfyUI's LATENT times the SD latent scale) from diffusers'.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import comfy_host  # noqa: E402


def main() -> None:
    import diffusers
    import torch

    comfy = comfy_host.import_comfy()
    pack = comfy_host.import_pack()
    unet, model = comfy_host.tiny_unet_pair(seed=0)
    nodes = pack.nodes
    config = comfy_host.lcm_config(nodes, model)
    positive = torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(0))
    negative = torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(1))
    pipe = diffusers.StableDiffusionPipeline(
        vae=diffusers.AutoencoderKL(**comfy_host.TINY_VAE_DIFFUSERS), text_encoder=None, tokenizer=None, unet=unet,
        scheduler=diffusers.LCMScheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    scale = model.model.latent_format.scale_factor
    differences = {}
    # (steps, cfg, gamma): gamma None is LCMSampler with diffusers' LCMScheduler, a number TCDSampler with
    # diffusers' TCDScheduler at eta = gamma.
    for steps, cfg, gamma in ((1, 1.0, None), (4, 1.0, None), (4, 2.0, None), (4, 1.0, 0.3), (2, 2.0, 1.0)):
        if gamma is None:
            sigmas, _ = nodes.LCMTimesteps().get_sigmas(config, steps, 1.0)
            sampler = nodes.LCMSampler().get_sampler(config)[0]
            pipe.scheduler, call = diffusers.LCMScheduler(), {}
        else:
            sigmas, _ = nodes.LCMTimesteps().get_sigmas(config, steps, 1.0, scheduler="tcd")
            sampler = nodes.TCDSampler().get_sampler(config, gamma)[0]
            pipe.scheduler, call = diffusers.TCDScheduler(), {"eta": gamma}
        # The classic node API: SamplerCustom().sample(...) -> (LATENT, LATENT).
        latent = comfy.nodes_custom_sampler.SamplerCustom().sample(
            model, True, 42, cfg, [[positive, {}]], [[negative, {}]], sampler, sigmas,
            {"samples": torch.zeros(1, 4, 16, 16)})[0]["samples"]
        with torch.no_grad():
            reference = pipe(prompt_embeds=positive, negative_prompt_embeds=negative, guidance_scale=cfg,
                             num_inference_steps=steps, height=16 * pipe.vae_scale_factor,
                             width=16 * pipe.vae_scale_factor, generator=torch.Generator("cpu").manual_seed(42),
                             output_type="latent", **call).images
        name = f"steps={steps},cfg={cfg}" + ("" if gamma is None else f",tcd gamma={gamma}")
        differences[name] = (latent * scale - reference).abs().max().item()
    # The plain KSampler with the pack's sampler (this tree has no scheduler registry, so no
    # lcm_diffusers scheduler: `simple` stands in, and the sampler warns that it is off the grid).
    ksampler_latent = comfy.nodes.KSampler().sample(
        model, 42, 4, 1.0, "lcm_diffusers", "simple", [[positive, {}]], [[negative, {}]],
        {"samples": torch.zeros(1, 4, 16, 16)})[0]["samples"]
    # A full LCM UNet through LCMUNetLoader's loading path (this tree's loader takes no metadata).
    _, lcm_state_dict = comfy_host.load_script("make_tiny_lcm_unet").tiny_lcm_unet(seed=0)
    lcm_model = nodes.lcm_unet.load_lcm_unet_state_dict(dict(lcm_state_dict), source="tiny LCM UNet")
    registration = nodes.KSAMPLER_REGISTRATION
    print(json.dumps({"nodes": sorted(pack.NODE_CLASS_MAPPINGS), "max_abs_difference": differences,
                      "lcm_unet_embedding": nodes.lcm_unet.guidance_embedding_of(lcm_model) is not None,
                      "ksampler": {"added": list(registration.added), "skipped": list(registration.skipped),
                                   "finite": bool(torch.isfinite(ksampler_latent).all()),
                                   "sampler_names": [n for n in comfy.samplers.SAMPLER_NAMES if "diffusers" in n],
                                   "scheduler_names": [n for n in comfy.samplers.SCHEDULER_NAMES
                                                       if "diffusers" in n]}}))


if __name__ == "__main__":
    main()
