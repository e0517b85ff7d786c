"""The flow-model parity harness (tests/flow_models.py) checked with a deterministic sampler.

Before any flow-LCM code is trusted, the harness itself must be exact: the tiny transformers agree
between ComfyUI and diffusers on a forward pass, the latent layouts match, and ComfyUI's built-in
`euler` on the exact sigmas of diffusers' FlowMatchEulerDiscreteScheduler gives the latents of the
family's real diffusers pipeline with that scheduler and the same seed (only the initial noise is
random there, so this checks models, conditioning, cfg, batch, noise and layout; test_flow_parity.py
adds the step noise). Tolerances are relative to the latent's largest magnitude (flow_models.
relative_error): float32 leaves at most 4e-7 (SD3, Flux) and 2.4e-6 (Wan) here; the bound is 1e-4.
"""

from __future__ import annotations

import inspect

import diffusers
import pytest
import torch

import flow_models as fm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REL = 1e-4
FORWARD_REL = 1e-5


@pytest.mark.parametrize("family", fm.FAMILIES)
def test_forward_pass_agrees(comfy, flow_pairs, family):
    """ComfyUI's own model class and diffusers' transformer, same weights and inputs, batch 2."""
    pair = flow_pairs[family]
    p = fm.prompt(family)
    x = torch.randn(pair.latent_shape(2), generator=torch.Generator().manual_seed(3))
    sigma = torch.tensor([0.7, 0.3])
    context = p.embeds.expand(2, -1, -1)
    comfy_net = pair.model.model.diffusion_model
    with torch.no_grad():
        if family == "flux":
            pooled, guidance = p.pooled.expand(2, -1), torch.full([2], fm.FLUX_GUIDANCE)
            got = comfy_net(x, sigma, context=context, y=pooled, guidance=guidance)
            side = fm.IMAGE_LATENT
            packed = diffusers.FluxPipeline._pack_latents(x, 2, 16, side, side)
            ids = diffusers.FluxPipeline._prepare_latent_image_ids(2, side // 2, side // 2, "cpu", torch.float32)
            out = pair.transformer(hidden_states=packed, timestep=sigma, guidance=guidance, pooled_projections=pooled,
                                   encoder_hidden_states=context, txt_ids=torch.zeros(fm.TEXT_TOKENS, 3),
                                   img_ids=ids).sample
            expected = diffusers.FluxPipeline._unpack_latents(out, side * 8, side * 8, 8)
        elif family == "sd3":
            pooled = p.pooled.expand(2, -1)
            got = comfy_net(x, sigma * 1000, context=context, y=pooled)
            expected = pair.transformer(hidden_states=x, encoder_hidden_states=context, pooled_projections=pooled,
                                        timestep=sigma * 1000).sample
        else:
            got = comfy_net(x, sigma * 1000, context=context)
            expected = pair.transformer(hidden_states=x, timestep=sigma * 1000, encoder_hidden_states=context).sample
    assert fm.relative_error(got, expected) < FORWARD_REL
    assert (expected[0] - expected[1]).abs().max() > 1e-2  # the inputs reach the output


def test_models_load_as_comfyuis_own_classes(flow_pairs):
    kinds = {family: type(pair.model.model).__name__ for family, pair in flow_pairs.items()}
    assert kinds == {"sd3": "SD3", "flux": "Flux", "wan": "WAN21"}
    shifts = {family: pair.model.get_model_object("model_sampling").shift for family, pair in flow_pairs.items()}
    assert shifts == {"sd3": 3.0, "flux": 1.15, "wan": 8.0}


def test_latent_layouts_are_the_published_vaes(flow_pairs):
    """ComfyUI's latent formats hold the VAE constants the pipelines decode with (SD3.5's and FLUX.1's
    vae/config.json; Wan 2.1's are diffusers' AutoencoderKLWan defaults)."""
    sd3, flux = flow_pairs["sd3"].model.model.latent_format, flow_pairs["flux"].model.model.latent_format
    assert (sd3.scale_factor, sd3.shift_factor) == (1.5305, 0.0609)
    assert (flux.scale_factor, flux.shift_factor) == (0.3611, 0.1159)
    wan = flow_pairs["wan"].model.model.latent_format
    defaults = inspect.signature(diffusers.AutoencoderKLWan.__init__).parameters
    assert wan.scale_factor == 1.0
    for name in ("latents_mean", "latents_std"):  # ComfyUI holds them as float32 tensors
        expected = torch.tensor(defaults[name].default, dtype=torch.float32)
        torch.testing.assert_close(getattr(wan, name).flatten(), expected, atol=0, rtol=0)


def _euler_parity(comfy, pair, *, seed, steps, cfg=1.0, batch=1, image=None, strength=1.0):
    reference, scheduler = fm.diffusers_reference(pair, fm.flow_euler_scheduler(pair), seed=seed, steps=steps, cfg=cfg,
                                                  batch=batch, image=image, strength=strength)
    sigmas = scheduler.sigmas[scheduler.begin_index or 0:]
    model = fm.flux_at_pipeline_mu(comfy, pair) if pair.family == "flux" else pair.model
    got = fm.comfy_custom(comfy, pair, comfy.samplers.sampler_object("euler"), sigmas, seed=seed, cfg=cfg,
                          batch=batch, latent=image, model=model)
    return fm.relative_error(got, reference), reference


@pytest.mark.parametrize("family", fm.FAMILIES)
@pytest.mark.parametrize(("steps", "cfg", "batch"), [(4, 1.0, 1), (3, 2.0, 2)], ids=("cfg1-b1", "cfg2-b2"))
def test_euler_matches_the_pipeline(comfy, flow_pairs, family, steps, cfg, batch):
    """Flux cfg 2 is FluxPipeline's true_cfg_scale with the guidance embedding at 3.5 in both passes."""
    error, reference = _euler_parity(comfy, flow_pairs[family], seed=42, steps=steps, cfg=cfg, batch=batch)
    assert error < REL
    if batch == 2:  # one noise draw of the whole batch: the images differ
        assert (reference[0] - reference[1]).abs().max() > 1e-2


@pytest.mark.parametrize(("family", "cfg"), [("sd3", 2.0), ("flux", 1.0)])
def test_euler_img2img_matches_the_img2img_pipeline(comfy, flow_pairs, family, cfg):
    """StableDiffusion3Img2ImgPipeline / FluxImg2ImgPipeline at strength 0.5 from a ComfyUI LATENT,
    batch 2 (Flux at cfg 1: see flow_models' docstring)."""
    pair = flow_pairs[family]
    start = torch.randn(pair.latent_shape(2), generator=torch.Generator().manual_seed(5))
    error, _ = _euler_parity(comfy, pair, seed=3, steps=4, cfg=cfg, batch=2, image=start, strength=0.5)
    assert error < REL


def test_other_seed_gives_other_latents(comfy, flow_pairs):
    """The parity above is not vacuous: the seed reaches the latents."""
    pair = flow_pairs["sd3"]
    first, _ = fm.diffusers_reference(pair, fm.flow_euler_scheduler(pair), seed=1, steps=2)
    second, _ = fm.diffusers_reference(pair, fm.flow_euler_scheduler(pair), seed=2, steps=2)
    assert (first - second).abs().max() > 1e-2


def test_flow_lcm_reference_is_a_function_of_the_seed(flow_pairs):
    """The generator convention: with the wrapper the run ignores torch's global RNG; without it
    (plain diffusers) the step noise comes from the global RNG, so the wrapper is what makes it exact."""
    pair = flow_pairs["sd3"]
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        runs.append(fm.diffusers_reference(pair, fm.flow_lcm_scheduler(pair), seed=9, steps=3)[0])
    torch.testing.assert_close(runs[0], runs[1], atol=0, rtol=0)
    torch.manual_seed(0)
    plain = diffusers.FlowMatchLCMScheduler(**fm.scheduler_config(pair))
    unwrapped, _ = fm.diffusers_reference(pair, plain, seed=9, steps=3)
    assert (unwrapped - runs[0]).abs().max() > 1e-3


def test_builtin_lcm_on_the_pipelines_sigmas_is_not_the_reference(comfy, flow_pairs):
    """ComfyUI's built-in `lcm` sampler does the same flow step but draws its step noise from its own
    generator: on the reference's exact sigmas it misses the reference by far more than the bound, so
    test_flow_parity.py's parity can only hold with diffusers' draw order."""
    pair = flow_pairs["sd3"]
    reference, scheduler = fm.diffusers_reference(pair, fm.flow_lcm_scheduler(pair), seed=42, steps=4)
    got = fm.comfy_custom(comfy, pair, comfy.samplers.sampler_object("lcm"), scheduler.sigmas, seed=42)
    assert fm.relative_error(got, reference) > 100 * REL
