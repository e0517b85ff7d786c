"""lcm_core.LCMScheduler as pipe.scheduler in diffusers pipelines: the same images.

Tiny random UNet and VAE built from config dicts (no download); prompts are given as
prompt_embeds, so no tokenizer or text encoder is needed.
"""

from __future__ import annotations

import diffusers
import pytest
import torch

import lcm_core

CROSS_ATTENTION_DIM = 32


def _unet(time_cond_proj_dim=None):
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM, attention_head_dim=8, norm_num_groups=32,
        time_cond_proj_dim=time_cond_proj_dim,
    ).eval()


def _vae():
    torch.manual_seed(1)
    return diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=32, sample_size=16,
    ).eval()


def _pipeline(cls, unet):
    kwargs = dict(vae=_vae(), text_encoder=None, tokenizer=None, unet=unet, scheduler=diffusers.LCMScheduler(),
                  safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if cls in (diffusers.LatentConsistencyModelPipeline, diffusers.LatentConsistencyModelImg2ImgPipeline):
        kwargs["image_encoder"] = None
    pipe = cls(**kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _embeds(seed, batch=1):
    return torch.randn(batch, 7, CROSS_ATTENTION_DIM, generator=torch.Generator().manual_seed(seed))


def _image():
    return torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))


def _run_both(pipe, name="LCMScheduler", **call):
    """(ours, reference): images from the pipeline with diffusers' scheduler ``name``, then with lcm_core's
    (which stays in the pipeline), with the same generator seed."""
    outputs = []
    for module in (diffusers, lcm_core):
        pipe.scheduler = getattr(module, name).from_config(pipe.scheduler.config)
        with torch.no_grad():
            images = pipe(generator=torch.Generator("cpu").manual_seed(42), output_type="pt", **call).images
        outputs.append(images)
    assert isinstance(pipe.scheduler, getattr(lcm_core, name))
    return outputs[::-1]


@pytest.mark.parametrize("guidance_scale", [1.0, 2.0], ids=("no_cfg", "cfg"))
@pytest.mark.parametrize("steps", [1, 4])
def test_stable_diffusion_pipeline_lcm_lora_recipe(guidance_scale, steps):
    pipe = _pipeline(diffusers.StableDiffusionPipeline, _unet())
    ours, reference = _run_both(pipe, prompt_embeds=_embeds(0), negative_prompt_embeds=_embeds(1),
                                num_inference_steps=steps, guidance_scale=guidance_scale, height=16, width=16)
    assert ours.std() > 0
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("strength", [0.5, 0.75])
def test_stable_diffusion_img2img_pipeline(strength):
    pipe = _pipeline(diffusers.StableDiffusionImg2ImgPipeline, _unet())
    ours, reference = _run_both(pipe, prompt_embeds=_embeds(0), negative_prompt_embeds=_embeds(1), image=_image(),
                                num_inference_steps=4, strength=strength, guidance_scale=1.0)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
@pytest.mark.parametrize("batch", [1, 2])
def test_latent_consistency_model_pipeline(steps, batch):
    pipe = _pipeline(diffusers.LatentConsistencyModelPipeline, _unet(time_cond_proj_dim=32))
    ours, reference = _run_both(pipe, prompt_embeds=_embeds(0, batch), num_inference_steps=steps,
                                guidance_scale=8.5, height=16, width=16)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("strength", [0.5, 0.8])
def test_latent_consistency_model_img2img_pipeline(strength):
    pipe = _pipeline(diffusers.LatentConsistencyModelImg2ImgPipeline, _unet(time_cond_proj_dim=32))
    ours, reference = _run_both(pipe, prompt_embeds=_embeds(0), image=_image(), num_inference_steps=4,
                                strength=strength, guidance_scale=8.5)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
