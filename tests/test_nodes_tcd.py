"""TCDSampler and LCMTimesteps(scheduler=tcd) inside a real ComfyUI (in-process), seed-exact against diffusers.

The same tiny UNet weights run in diffusers' pipelines with TCDScheduler, eta = gamma and
``torch.Generator("cpu").manual_seed(s)``, and in ComfyUI's SamplerCustom with this pack's nodes
and noise seed s (helpers from test_nodes_parity). Agreement is measured relative to the
latent's magnitude: max |ours - diffusers| <= 1e-4 * max(1, max |diffusers|), i.e. 1e-4 absolute
for latents up to magnitude 1 and 1e-4 relative above. The random UNet's latents reach
magnitudes near 100 (test_nodes_parity explains why), where float32 leaves about 1e-6 relative.
"""

from __future__ import annotations

import logging

import diffusers
import pytest
import torch

import comfy_host
from comfy_host import lcm_config
from test_nodes import sampler_custom_advanced
from test_nodes_parity import (
    LATENT,
    NEGATIVE,
    POSITIVE,
    _lcm_unet_without_guidance_embedding,
    _pipeline,
    comfy_sample,
    diffusers_txt2img,
)

RELATIVE = 1e-4
GAMMAS = (0.0, 0.3, 1.0)
SAMPLER_LOGGER = "lcm_multistep.nodes.sampler"


def tcd_parts(nodes, config, gamma, steps=4):
    """(SIGMAS of LCMTimesteps(scheduler=tcd), SAMPLER of TCDSampler(gamma))."""
    sigmas, _ = nodes.LCMTimesteps().get_sigmas(config, steps, 1.0, scheduler="tcd")
    return sigmas, nodes.TCDSampler().get_sampler(config, gamma)[0]


def tcd_sample(comfy, nodes, model, config, gamma, **options):
    """comfy_sample with TCDSampler(gamma) and LCMTimesteps(scheduler=tcd)."""
    sampler = nodes.TCDSampler().get_sampler(config, gamma)[0]
    return comfy_sample(comfy, nodes, model, config, sampler=sampler, scheduler="tcd", **options)


def sample_custom(comfy, model, sampler, sigmas, latent, noise_seed, step_seed=None, **options):
    """comfy.sample.sample_custom at cfg 1 with the initial noise of ``noise_seed`` (prepare_noise) and
    the sampler's seed ``step_seed`` (default: the same), as SamplerCustom passes both."""
    noise = comfy.sample.prepare_noise(latent, noise_seed) if noise_seed is not None else torch.zeros_like(latent)
    return comfy.sample.sample_custom(model, noise, 1.0, sampler, sigmas, [[POSITIVE, {}]], [[NEGATIVE, {}]],
                                      latent, disable_pbar=True,
                                      seed=noise_seed if step_seed is None else step_seed, **options)


def _close(comfy_latent, reference, scale):
    """max |ours - diffusers| within RELATIVE of the latent's magnitude (absolute below magnitude 1)."""
    got = comfy_latent["samples"] * scale
    assert got.shape == reference.shape and torch.isfinite(got).all()
    difference = (got - reference).abs().max().item()
    magnitude = reference.abs().max().item()
    assert difference <= RELATIVE * max(1.0, magnitude), (difference, magnitude)
    return difference / max(1.0, magnitude)


def _scale(model):
    return model.model.latent_format.scale_factor


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("steps", [1, 2, 4, 8])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("cfg", [1.0, 2.0], ids=("cfg1", "cfg2"))
def test_txt2img_seed_exact(comfy, nodes, models, gamma, steps, batch, cfg):
    unet, model = models
    config = lcm_config(nodes, model)
    latent, timesteps = tcd_sample(comfy, nodes, model, config, gamma, seed=42, cfg=cfg, steps=steps, batch=batch)
    reference = diffusers_txt2img(unet, seed=42, cfg=cfg, steps=steps, batch=batch,
                                  scheduler=diffusers.TCDScheduler(), eta=gamma)
    _close(latent, reference, _scale(model))
    scheduler = diffusers.TCDScheduler()
    scheduler.set_timesteps(steps)
    assert timesteps == ", ".join(str(t) for t in scheduler.timesteps.tolist())


def test_dense_grid_timesteps_seed_exact(comfy, nodes, models):
    """original_inference_steps set on LCMTimesteps(tcd) is TCDScheduler.set_timesteps(original_inference_steps=)."""
    unet, model = models
    config = lcm_config(nodes, model)
    latent, timesteps = tcd_sample(comfy, nodes, model, config, 0.3, seed=8, steps=4, original_inference_steps=50)
    assert timesteps == "999, 749, 499, 249"
    # The pipelines pass no original_inference_steps; the same schedule as custom timesteps:
    reference = diffusers_txt2img(unet, seed=8, scheduler=diffusers.TCDScheduler(), eta=0.3,
                                  timesteps=[999, 749, 499, 249])
    _close(latent, reference, _scale(model))


@pytest.mark.parametrize("gamma,steps,same", [(0.0, 4, True), (0.3, 1, True), (0.3, 4, False), (1.0, 2, False)])
def test_step_noise_is_drawn_only_where_diffusers_draws_it(comfy, nodes, models, gamma, steps, same):
    """The same initial noise with another step-noise seed: the same latents at gamma 0 and for one step
    (TCD draws no noise there), other latents otherwise (the seed reaches the step noise)."""
    _, model = models
    config = lcm_config(nodes, model)
    sigmas, sampler = tcd_parts(nodes, config, gamma, steps)
    latent = torch.zeros(1, 4, LATENT, LATENT)
    outputs = [sample_custom(comfy, model, sampler, sigmas, latent, 5, step_seed) for step_seed in (5, 6)]
    assert torch.equal(outputs[0], outputs[1]) == same


@pytest.mark.parametrize("gamma", [0.3, 1.0])
def test_img2img_chain_matches_sd_img2img_pipeline(comfy, nodes, models, gamma):
    """txt2img, then img2img at strength 0.5 on its LATENT: StableDiffusionImg2ImgPipeline with TCDScheduler
    (the pipelines that run TCD drop leading steps: strength_mode drop_leading)."""
    unet, model = models
    config = lcm_config(nodes, model)
    scale = _scale(model)
    first, _ = tcd_sample(comfy, nodes, model, config, gamma, seed=11)
    second, timesteps = tcd_sample(comfy, nodes, model, config, gamma, seed=12, strength=0.5, latent=first,
                                   strength_mode="drop_leading")
    assert timesteps == "499, 259"
    reference_first = diffusers_txt2img(unet, seed=11, scheduler=diffusers.TCDScheduler(), eta=gamma)
    _close(first, reference_first, scale)
    pipe = _pipeline(diffusers.StableDiffusionImg2ImgPipeline, unet)
    pipe.scheduler = diffusers.TCDScheduler()
    with torch.no_grad():
        reference = pipe(prompt_embeds=POSITIVE, negative_prompt_embeds=NEGATIVE, image=reference_first,
                         strength=0.5, num_inference_steps=4, guidance_scale=1.0, eta=gamma,
                         generator=torch.Generator("cpu").manual_seed(12), output_type="latent").images
    _close(second, reference, scale)


def test_img2img_tcd_strength_matches_tcd_set_timesteps(comfy, nodes, models):
    """strength_mode lcm_grid is TCDScheduler.set_timesteps(strength=) (its own meaning), in a diffusers loop:
    add_noise with the seed's first draw, then TCD steps with the same generator."""
    unet, model = models
    config = lcm_config(nodes, model)
    start = torch.randn(1, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(5))
    latent, timesteps = tcd_sample(comfy, nodes, model, config, 0.3, seed=3, strength=0.5,
                                   latent={"samples": start / _scale(model)})
    assert timesteps == "499, 379, 259, 139"
    scheduler = diffusers.TCDScheduler()
    scheduler.set_timesteps(4, strength=0.5)
    generator = torch.Generator("cpu").manual_seed(3)
    latents = scheduler.add_noise(start, torch.randn(start.shape, generator=generator), scheduler.timesteps[:1])
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = unet(latents, t, encoder_hidden_states=POSITIVE).sample
            latents = scheduler.step(eps, t, latents, eta=0.3, generator=generator).prev_sample
    _close(latent, latents, _scale(model))


def test_img2img_through_lcm_img2img_pipeline_is_refused_by_tcd():
    """Why the LCM img2img pipeline is no reference for TCD: it passes eta=None to step()."""
    pipe = _pipeline(diffusers.LatentConsistencyModelImg2ImgPipeline,
                     _lcm_unet_without_guidance_embedding(comfy_host.tiny_unet_pair(seed=0)[0]))
    pipe.scheduler = diffusers.TCDScheduler()
    with pytest.raises(TypeError):
        pipe(prompt_embeds=POSITIVE, image=torch.zeros(1, 4, LATENT, LATENT), strength=0.5, num_inference_steps=4,
             output_type="latent")


def test_v_prediction_model_matches_diffusers(comfy, nodes):
    unet, model = comfy_host.tiny_unet_pair(seed=0, prediction="v_prediction")
    config = lcm_config(nodes, model)
    assert config.prediction_type == "v_prediction"
    latent, _ = tcd_sample(comfy, nodes, model, config, 0.3, seed=4)
    reference = diffusers_txt2img(unet, seed=4, scheduler=diffusers.TCDScheduler(prediction_type="v_prediction"),
                                  eta=0.3)
    _close(latent, reference, _scale(model))


@pytest.mark.parametrize("steps", [2, 4])
def test_lcm_patched_model_gives_the_unpatched_result(comfy, nodes, models, steps, caplog):
    """ModelSamplingDiscrete(lcm) returns c_out * x0 + c_skip * x_k; the sampler recovers x0 from it."""
    _, model = models
    patched = comfy.nodes_model_advanced.ModelSamplingDiscrete().patch(model, "lcm", False)[0]
    config = lcm_config(nodes, model)
    plain, _ = tcd_sample(comfy, nodes, model, config, 0.3, seed=7, steps=steps)
    with caplog.at_level(logging.WARNING, logger=SAMPLER_LOGGER):
        lcm, _ = tcd_sample(comfy, nodes, patched, config, 0.3, seed=7, steps=steps)
    _close(lcm, plain["samples"], 1.0)
    assert not caplog.records


def test_timesteps_the_model_snaps_elsewhere_are_warned_about(comfy, nodes, models, caplog):
    """TCD's dense grid (999, 749, ...) on a ModelSamplingDiscrete(lcm) model, whose own table is the
    50-step LCM grid: the UNet would run at 739 for 749 and at 259 for 249 (the nearest in log sigma, by
    1-2% margins: no float tie). One warning; none on an unpatched model."""
    _, model = models
    patched = comfy.nodes_model_advanced.ModelSamplingDiscrete().patch(model, "lcm", False)[0]
    config = lcm_config(nodes, model)
    for subject, warned in ((model, False), (patched, True)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=SAMPLER_LOGGER):
            tcd_sample(comfy, nodes, subject, config, 0.3, seed=7, steps=4, original_inference_steps=50)
        assert len(caplog.records) == warned
    assert "[999, 749, 499, 249] at its own timesteps [999, 739, 499, 259]" in caplog.text


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models(comfy, nodes, dtype):
    """fp16 / bf16 UNets: fp32 sampler maths and latents; results track the fp32 diffusers run."""
    _, model = comfy_host.tiny_unet_pair(seed=0, dtype=dtype)
    config = lcm_config(nodes, model)
    latent, _ = tcd_sample(comfy, nodes, model, config, 0.3, seed=4)
    assert latent["samples"].dtype == torch.float32
    reference = diffusers_txt2img(comfy_host.tiny_unet_pair(seed=0)[0], seed=4, scheduler=diffusers.TCDScheduler(),
                                  eta=0.3)
    got = latent["samples"] * _scale(model)
    relative = ((got - reference).abs().max() / reference.abs().max()).item()
    assert relative < (2e-2 if dtype == torch.float16 else 1e-1), relative


def test_inpaint_mask_keeps_the_unmasked_latent(comfy, nodes, models):
    """The last TCD step returns diffusers' sample at t = 0, not x0; outside the mask the input latent is
    put back, as KSamplerX0Inpaint does for every x0 (and diffusers' inpaint pipelines at the end). What
    remains is the rounding of the host's latent scale round trip (x 0.18215, / 0.18215); without the
    final blend the kept region would move by about 0.5 here."""
    _, model = models
    config = lcm_config(nodes, model)
    start = torch.randn(1, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, LATENT, LATENT)
    mask[:, 4:12, 4:12] = 1.0
    out, _ = tcd_sample(comfy, nodes, model, config, 0.3, seed=3, latent={"samples": start, "noise_mask": mask})
    keep = mask[0] == 0
    kept_error = (out["samples"][0][:, keep] - start[0][:, keep]).abs().max()
    assert kept_error <= 2 * torch.finfo(torch.float32).eps * start.abs().max()
    assert (out["samples"][0][:, ~keep] - start[0][:, ~keep]).abs().max() > 0.1


def test_callback_every_step_preview_and_cancel(comfy, nodes, models):
    _, model = models
    config = lcm_config(nodes, model)
    sigmas, sampler = tcd_parts(nodes, config, 0.3)
    latent = torch.zeros(1, 4, LATENT, LATENT)
    calls = []

    def run(callback):
        return sample_custom(comfy, model, sampler, sigmas, latent, 5, callback=callback)

    out = run(lambda i, denoised, x, total: calls.append((i, denoised.shape, total)))
    assert [c[0] for c in calls] == [0, 1, 2, 3] and all(c[1] == latent.shape and c[2] == 4 for c in calls)
    assert out.shape == latent.shape

    class Cancelled(Exception):
        pass

    def cancel(i, denoised, x, total):
        if i == 1:
            raise Cancelled  # what ComfyUI's interrupt does inside its progress callback
        calls.append(i)

    calls.clear()
    with pytest.raises(Cancelled):
        run(cancel)
    assert calls == [0]


def test_sampler_custom_advanced_equals_sampler_custom(comfy, nodes, models):
    _, model = models
    config = lcm_config(nodes, model)
    sigmas, sampler = tcd_parts(nodes, config, 0.3)
    advanced = sampler_custom_advanced(comfy, model, sampler, sigmas, seed=9, cfg=2.0, batch=2)
    plain, _ = tcd_sample(comfy, nodes, model, config, 0.3, seed=9, cfg=2.0, batch=2)
    assert torch.equal(advanced, plain["samples"])


def test_split_sigmas_at_gamma_zero_equal_the_whole_run(comfy, nodes, models):
    """A run split in two (SplitSigmas): the first part's last step goes on to its last sigma, not to t = 0."""
    _, model = models
    config = lcm_config(nodes, model)
    sigmas, sampler = tcd_parts(nodes, config, 0.0)
    latent = torch.zeros(1, 4, LATENT, LATENT)
    whole = sample_custom(comfy, model, sampler, sigmas, latent, 2)
    first = sample_custom(comfy, model, sampler, sigmas[:3], latent, 2)
    second = sample_custom(comfy, model, sampler, sigmas[2:], first, None, step_seed=2)  # add_noise off
    torch.testing.assert_close(second, whole, atol=RELATIVE * max(1.0, whole.abs().max().item()), rtol=0)


def test_registration_and_inputs(pack):
    node = pack.NODE_CLASS_MAPPINGS["TCDSampler"]
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["TCDSampler"] == "TCD Sampler (gamma)"
    assert node.RETURN_TYPES == ("SAMPLER",) and node.CATEGORY == "sampling/custom_sampling/lcm"
    assert {"tcd", "trajectory consistency", "hyper-sd", "gamma", "eta"} <= set(node.SEARCH_ALIASES)
    inputs = node.INPUT_TYPES()["required"]
    assert list(inputs) == ["config", "gamma"] and inputs["config"][0] == "LCM_CONFIG"
    kind, options = inputs["gamma"]
    assert kind == "FLOAT" and (options["default"], options["min"], options["max"]) == (0.3, 0.0, 1.0)
    assert "eta" in options["tooltip"] and "0.0" in options["tooltip"]
    scheduler = pack.NODE_CLASS_MAPPINGS["LCMTimesteps"].INPUT_TYPES()["optional"]["scheduler"]
    assert scheduler[0] == ["lcm", "tcd"] and scheduler[1]["default"] == "lcm"


@pytest.mark.parametrize("kwargs,original", [
    (dict(steps=4), None), (dict(steps=4, original_inference_steps=50), 50), (dict(steps=8, strength=0.5), None),
    (dict(steps=6, original_inference_steps=25, strength=0.3), 25),
])
def test_timesteps_node_is_tcd_set_timesteps(nodes, kwargs, original):
    kwargs.setdefault("strength", 1.0)
    _, text = nodes.LCMTimesteps().get_sigmas(lcm_config(nodes), scheduler="tcd", **kwargs)
    scheduler = diffusers.TCDScheduler()
    scheduler.set_timesteps(kwargs["steps"], original_inference_steps=original, strength=kwargs["strength"])
    assert text == ", ".join(map(str, scheduler.timesteps.tolist()))
    # The default scheduler stays LCM's, whose grid an explicit count does not change.
    _, lcm_text = nodes.LCMTimesteps().get_sigmas(lcm_config(nodes), **kwargs)
    assert (lcm_text == text) == (original is None)


def test_timesteps_node_custom_list_on_the_dense_grid(nodes, caplog):
    with caplog.at_level(logging.WARNING, logger="lcm_multistep.lcm_core"):
        _, text = nodes.LCMTimesteps().get_sigmas(lcm_config(nodes), 4, 1.0, custom_timesteps="999, 800, 600",
                                                  original_inference_steps=50, scheduler="tcd")
    assert text == "999, 800, 600" and not caplog.records


@pytest.mark.parametrize("kwargs,needle", [
    (dict(steps=60, original_inference_steps=50), r"scheduler=tcd\): num_inference_steps \(60\)"),
    (dict(steps=4, scheduler="ddim"), "scheduler must be one of lcm, tcd"),
])
def test_timesteps_node_errors_name_the_scheduler(nodes, kwargs, needle):
    kwargs.setdefault("scheduler", "tcd")
    with pytest.raises(ValueError, match=needle):
        nodes.LCMTimesteps().get_sigmas(lcm_config(nodes), strength=1.0, **kwargs)


def test_sampler_node_refuses_gamma_outside_unit_interval_and_warns_on_clipping(nodes, caplog):
    with pytest.raises(ValueError, match=r"TCDSampler: gamma \(diffusers' eta\) must lie in \[0, 1\], got 1.5"):
        nodes.TCDSampler().get_sampler(lcm_config(nodes), 1.5)
    with caplog.at_level(logging.WARNING, logger="lcm_multistep.nodes.sampler"):
        nodes.TCDSampler().get_sampler(lcm_config(nodes, clip_sample=True), 0.3)
    assert "do not apply to TCD" in caplog.text
