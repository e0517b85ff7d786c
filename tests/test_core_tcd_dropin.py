"""lcm_core.TCDScheduler as pipe.scheduler in diffusers pipelines, with eta passed: the same images.

The pipelines that run TCD are StableDiffusion(XL)Pipeline and their img2img versions: they
pass `eta` (default 0.0) to step(). (The LCM pipelines pass eta=None, which TCD's step refuses.)
Tiny random components as in test_core_dropin, whose helpers these tests reuse.
"""

from __future__ import annotations

import diffusers
import pytest
import torch

from test_core_dropin import _embeds, _image, _pipeline, _run_both, _unet, _vae

SDXL_CROSS_ATTENTION_DIM = 64
SDXL_POOLED_DIM = 32
SDXL_TIME_EMBED_DIM = 8


def _close(ours, reference):
    assert ours.std() > 0
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("steps,guidance_scale,eta", [
    (4, 1.0, None), (4, 1.0, 0.3), (4, 2.0, 0.3), (4, 2.0, 1.0), (1, 2.0, 0.3),
], ids=("4-no_cfg-default_eta", "4-no_cfg-eta0.3", "4-cfg-eta0.3", "4-cfg-eta1", "1-cfg-eta0.3"))
def test_stable_diffusion_pipeline(steps, guidance_scale, eta):
    pipe = _pipeline(diffusers.StableDiffusionPipeline, _unet())
    options = {} if eta is None else {"eta": eta}  # the pipeline's default eta is 0.0
    ours, reference = _run_both(pipe, "TCDScheduler", prompt_embeds=_embeds(0), negative_prompt_embeds=_embeds(1),
                                num_inference_steps=steps, guidance_scale=guidance_scale, height=16, width=16,
                                **options)
    _close(ours, reference)


def test_stable_diffusion_img2img_pipeline():
    pipe = _pipeline(diffusers.StableDiffusionImg2ImgPipeline, _unet())
    ours, reference = _run_both(pipe, "TCDScheduler", prompt_embeds=_embeds(0), negative_prompt_embeds=_embeds(1),
                                image=_image(), num_inference_steps=4, strength=0.5, guidance_scale=1.0, eta=0.3)
    _close(ours, reference)


def _sdxl_pipeline(cls=diffusers.StableDiffusionXLPipeline):
    """SDXL's UNet layout (text_time added conditioning, linear projections) at a tiny size; no text encoders."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_TIME_EMBED_DIM, transformer_layers_per_block=(1, 1),
        # six time ids (original size, crop, target size), each embedded, plus the pooled text embedding
        projection_class_embeddings_input_dim=6 * SDXL_TIME_EMBED_DIM + SDXL_POOLED_DIM,
        cross_attention_dim=SDXL_CROSS_ATTENTION_DIM, norm_num_groups=32,
    ).eval()
    pipe = cls(vae=_vae(), text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=unet,
               scheduler=diffusers.TCDScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sdxl_embeds(seed):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 7, SDXL_CROSS_ATTENTION_DIM, generator=generator),
            torch.randn(1, SDXL_POOLED_DIM, generator=generator))


def test_stable_diffusion_xl_pipeline():
    positive, pooled = _sdxl_embeds(0)
    negative, negative_pooled = _sdxl_embeds(1)
    ours, reference = _run_both(_sdxl_pipeline(), "TCDScheduler", prompt_embeds=positive,
                                pooled_prompt_embeds=pooled, negative_prompt_embeds=negative,
                                negative_pooled_prompt_embeds=negative_pooled, num_inference_steps=4,
                                guidance_scale=2.0, eta=0.3, height=16, width=16)
    _close(ours, reference)


def test_stable_diffusion_xl_img2img_pipeline():
    positive, pooled = _sdxl_embeds(0)
    ours, reference = _run_both(_sdxl_pipeline(diffusers.StableDiffusionXLImg2ImgPipeline), "TCDScheduler",
                                prompt_embeds=positive, pooled_prompt_embeds=pooled, image=_image(), strength=0.5,
                                num_inference_steps=4, guidance_scale=1.0, eta=0.3)
    _close(ours, reference)
