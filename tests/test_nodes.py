"""The pack's nodes inside a real ComfyUI, in-process: inputs, outputs, errors, host features."""

from __future__ import annotations

import json
import logging

import diffusers
import pytest
import torch

import comfy_host
from comfy_host import default_widgets, lcm_config
from test_nodes_parity import LATENT, NEGATIVE, POSITIVE, comfy_sample, diffusers_txt2img

SAMPLER_LOGGER = "lcm_multistep.nodes.sampler"


def test_registration_metadata(pack):
    mappings = pack.NODE_CLASS_MAPPINGS
    assert {"LCMSchedulerConfig", "LCMTimesteps", "LCMSampler"} <= set(mappings)
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(mappings)
    assert mappings["LCMSchedulerConfig"].RETURN_TYPES == ("LCM_CONFIG",)
    assert mappings["LCMTimesteps"].RETURN_TYPES[0] == "SIGMAS"
    assert mappings["LCMSampler"].RETURN_TYPES == ("SAMPLER",)
    for node in mappings.values():
        assert node.CATEGORY.startswith("sampling/custom_sampling/")
        assert len(node.DESCRIPTION) > 40
        assert len(node.OUTPUT_TOOLTIPS) == len(node.RETURN_TYPES)
        for section in node.INPUT_TYPES().values():
            for name, spec in section.items():
                assert len(spec) == 2 and spec[1].get("tooltip"), f"{node.__name__}.{name} has no tooltip"
        # Read by newer front ends' node search; older hosts ignore the attribute.
        aliases = node.SEARCH_ALIASES
        assert aliases and all(isinstance(a, str) and a.strip() == a and a for a in aliases), node.__name__


def test_rarely_changed_config_inputs_are_advanced(nodes):
    """Newer front ends fold inputs marked advanced away; the ones every LCM model uses stay in view."""
    required = nodes.LCMSchedulerConfig.INPUT_TYPES()["required"]
    advanced = {name for name, (_, options) in required.items() if options.get("advanced")}
    assert {"original_inference_steps", "prediction_type", "clip_sample", "timestep_scaling"}.isdisjoint(advanced)
    assert {"beta_start", "beta_end", "set_alpha_to_one", "steps_offset", "timestep_spacing"} <= advanced
    assert all(options.get("advanced") in (None, True) for _, options in required.values())


def test_config_node_has_every_diffusers_field_with_its_default(nodes):
    import inspect

    widgets = nodes.LCMSchedulerConfig.INPUT_TYPES()["required"]
    reference = {name: p.default for name, p in inspect.signature(diffusers.LCMScheduler.__init__).parameters.items()
                 if name not in ("self", "trained_betas")}  # trained_betas: through the pasted JSON
    assert set(widgets) == set(reference)
    for name, default in reference.items():
        assert widgets[name][1]["default"] == default, name


def test_config_from_model_json_and_widgets(comfy, nodes, models):
    _, model = models
    _, v_model = comfy_host.tiny_unet_pair(seed=0, prediction="v_prediction", zsnr=True)
    config = lcm_config(nodes, v_model)
    assert config.prediction_type == "v_prediction" and config.rescale_betas_zero_snr
    assert config.beta_schedule == "scaled_linear" and config.beta_start == pytest.approx(0.00085)
    pasted = json.dumps({"_class_name": "LCMScheduler", "original_inference_steps": 25, "timestep_scaling": 5.0,
                         "prediction_type": "v_prediction"})
    from_json = lcm_config(nodes, scheduler_config_json=pasted)
    assert from_json.original_inference_steps == 25 and from_json.timestep_scaling == 5.0
    with_model = lcm_config(nodes, model, scheduler_config_json=pasted)
    assert with_model.prediction_type == "epsilon" and with_model.original_inference_steps == 25


@pytest.mark.parametrize("changes,needle", [
    (dict(beta_start=0.02, beta_end=0.01), "beta_start"),
    (dict(rescale_betas_zero_snr=True), "v_prediction"),
])
def test_config_node_errors_name_the_input(nodes, changes, needle):
    with pytest.raises(ValueError, match=f"LCMSchedulerConfig.*{needle}"):
        nodes.LCMSchedulerConfig().build(**default_widgets(nodes.LCMSchedulerConfig, **changes))
    with pytest.raises(ValueError, match="scheduler_config_json.*JSON"):
        nodes.LCMSchedulerConfig().build(scheduler_config_json="{oops", **default_widgets(nodes.LCMSchedulerConfig))


@pytest.mark.parametrize("text,needle", [
    ('{"beta_start": {"a": 1}}', r"beta_start must be a number \(e\.g\. 0\.00085"),
    ('{"timestep_scaling": "10"}', r"timestep_scaling must be a number"),
    ("[" * 100_000 + "]" * 100_000, r"nested too deeply"),
], ids=("object-for-number", "string-for-number", "deep-nesting"))
def test_pasted_config_of_the_wrong_shape_is_a_clear_error(nodes, text, needle):
    with pytest.raises(ValueError, match=f"^LCMSchedulerConfig scheduler_config_json: .*{needle}"):
        nodes.LCMSchedulerConfig().build(scheduler_config_json=text, **default_widgets(nodes.LCMSchedulerConfig))


def test_timesteps_output(comfy, nodes, models):
    _, model = models
    config = lcm_config(nodes)
    sigmas, text = nodes.LCMTimesteps().get_sigmas(config, 4, 1.0)
    assert text == "999, 759, 499, 259"
    assert sigmas.dtype == torch.float32 and sigmas.device.type == "cpu" and sigmas[-1] == 0
    assert sigmas.shape == (5,)
    model_sampling = model.get_model_object("model_sampling")
    assert model_sampling.timestep(sigmas[:-1]).tolist() == [999, 759, 499, 259]
    from_model, _ = nodes.LCMTimesteps().get_sigmas(config, 4, 1.0, model=model)
    torch.testing.assert_close(from_model[:-1], model_sampling.sigmas[[999, 759, 499, 259]], atol=0, rtol=1e-6)
    _, text = nodes.LCMTimesteps().get_sigmas(config, 4, 0.5)
    assert text == "499, 379, 259, 139"
    _, text = nodes.LCMTimesteps().get_sigmas(config, 4, 0.5, strength_mode="drop_leading")
    assert text == "499, 259"
    _, text = nodes.LCMTimesteps().get_sigmas(config, 4, 1.0, custom_timesteps="[999, 499, 259]")
    assert text == "999, 499, 259"
    _, text = nodes.LCMTimesteps().get_sigmas(config, 4, 1.0, original_inference_steps=25)
    scheduler = diffusers.LCMScheduler()
    scheduler.set_timesteps(4, original_inference_steps=25)
    assert text == ", ".join(map(str, scheduler.timesteps.tolist()))


def test_timesteps_on_patched_lcm_model_map_back(comfy, nodes, models):
    _, model = models
    patched = comfy.nodes_model_advanced.ModelSamplingDiscrete().patch(model, "lcm", False)[0]
    sigmas, text = nodes.LCMTimesteps().get_sigmas(lcm_config(nodes), 8, 1.0, model=patched)
    timesteps = patched.get_model_object("model_sampling").timestep(sigmas[:-1])
    assert ", ".join(str(int(t)) for t in timesteps) == text


@pytest.mark.parametrize("kwargs,needle", [
    (dict(steps=60), r"num_inference_steps \(60\).*original_inference_steps \(50\)"),
    (dict(steps=4, custom_timesteps="999, 499, 700"), "descending"),
    (dict(steps=4, custom_timesteps="999, abc"), "not a list of integers"),
    (dict(steps=8, strength=0.1), "strength 0.1 keeps only 5"),
])
def test_timesteps_errors_name_inputs_and_fix(nodes, kwargs, needle):
    kwargs.setdefault("strength", 1.0)
    with pytest.raises(ValueError, match=needle) as error:
        nodes.LCMTimesteps().get_sigmas(lcm_config(nodes), **kwargs)
    assert "LCMTimesteps" in str(error.value)


def test_inputs_are_not_mutated(comfy, nodes, models):
    _, model = models
    config = lcm_config(nodes)
    sigmas, _ = nodes.LCMTimesteps().get_sigmas(config, 4, 1.0)
    before = sigmas.clone()
    start = {"samples": torch.randn(1, 4, LATENT, LATENT)}
    start_copy = start["samples"].clone()
    comfy_sample(comfy, nodes, model, config, seed=0, latent=start, strength=0.5)
    assert torch.equal(sigmas, before) and torch.equal(start["samples"], start_copy)
    assert config == lcm_config(nodes)
    with pytest.raises(Exception):
        config.original_inference_steps = 4


def test_callback_every_step_and_denoised_preview(comfy, nodes, models):
    _, model = models
    config = lcm_config(nodes)
    sigmas, _ = nodes.LCMTimesteps().get_sigmas(config, 4, 1.0)
    sampler = nodes.LCMSampler().get_sampler(config)[0]
    latent = torch.zeros(1, 4, LATENT, LATENT)
    calls = []
    noise = comfy.sample.prepare_noise(latent, 5)
    out = comfy.sample.sample_custom(model, noise, 1.0, sampler, sigmas, [[POSITIVE, {}]], [[NEGATIVE, {}]], latent,
                                     callback=lambda i, denoised, x, total: calls.append((i, denoised.shape, total)),
                                     disable_pbar=True, seed=5)
    assert [c[0] for c in calls] == [0, 1, 2, 3] and all(c[2] == 4 for c in calls)
    assert out.shape == latent.shape


def sampler_custom_advanced(comfy, model, sampler, sigmas, *, seed, cfg, batch):
    """SamplerCustomAdvanced with RandomNoise(seed) and CFGGuider(cfg) on an empty latent batch; its LATENT samples."""
    ncs = comfy.nodes_custom_sampler
    noise = ncs.RandomNoise.execute(noise_seed=seed).args[0]
    guider = ncs.CFGGuider.execute(model=model, positive=[[POSITIVE, {}]], negative=[[NEGATIVE, {}]],
                                   cfg=cfg).args[0]
    latent = {"samples": torch.zeros(batch, 4, LATENT, LATENT)}
    return ncs.SamplerCustomAdvanced.execute(noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                                             latent_image=latent).args[0]["samples"]


def test_sampler_custom_advanced_equals_sampler_custom(comfy, nodes, models):
    _, model = models
    config = lcm_config(nodes)
    sigmas, _ = nodes.LCMTimesteps().get_sigmas(config, 4, 1.0)
    sampler = nodes.LCMSampler().get_sampler(config)[0]
    advanced = sampler_custom_advanced(comfy, model, sampler, sigmas, seed=9, cfg=2.0, batch=2)
    plain, _ = comfy_sample(comfy, nodes, model, config, seed=9, cfg=2.0, batch=2)
    assert torch.equal(advanced, plain["samples"])


def test_inpaint_noise_mask_keeps_the_unmasked_latent(comfy, nodes, models):
    _, model = models
    config = lcm_config(nodes)
    start = torch.randn(1, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, LATENT, LATENT)
    mask[:, 4:12, 4:12] = 1.0
    out, _ = comfy_sample(comfy, nodes, model, config, seed=3, latent={"samples": start, "noise_mask": mask})
    keep = mask[0] == 0
    kept_error = (out["samples"][0][:, keep] - start[0][:, keep]).abs().max()
    changed = (out["samples"][0][:, ~keep] - start[0][:, ~keep]).abs().max()
    assert kept_error < 1e-4 * start.abs().max() and changed > 0.1


def test_other_schedulers_sigmas_are_snapped_with_one_warning(comfy, nodes, models, caplog):
    _, model = models
    config = lcm_config(nodes)
    sigmas = comfy.nodes_custom_sampler.BasicScheduler.execute(model=model, scheduler="normal", steps=4,
                                                               denoise=1.0).args[0]
    sampler = nodes.LCMSampler().get_sampler(config)[0]
    latent = torch.zeros(1, 4, LATENT, LATENT)
    with caplog.at_level(logging.WARNING, logger=SAMPLER_LOGGER):
        out = comfy.sample.sample_custom(model, comfy.sample.prepare_noise(latent, 0), 1.0, sampler, sigmas,
                                         [[POSITIVE, {}]], [[NEGATIVE, {}]], latent, disable_pbar=True, seed=0)
    warnings = [r for r in caplog.records if r.name == SAMPLER_LOGGER]
    assert len(warnings) == 1 and "not on the LCM grid" in warnings[0].getMessage()
    assert torch.isfinite(out).all()
    caplog.clear()
    grid_sigmas, _ = nodes.LCMTimesteps().get_sigmas(config, 4, 1.0)
    with caplog.at_level(logging.WARNING, logger=SAMPLER_LOGGER):
        comfy.sample.sample_custom(model, comfy.sample.prepare_noise(latent, 0), 1.0, sampler, grid_sigmas,
                                   [[POSITIVE, {}]], [[NEGATIVE, {}]], latent, disable_pbar=True, seed=0)
    assert not [r for r in caplog.records if r.name == SAMPLER_LOGGER]


def test_v_prediction_model_matches_diffusers(comfy, nodes):
    unet, model = comfy_host.tiny_unet_pair(seed=0, prediction="v_prediction")
    config = lcm_config(nodes, model)
    assert config.prediction_type == "v_prediction"
    latent, _ = comfy_sample(comfy, nodes, model, config, seed=4)
    pipe_reference = _reference_with_scheduler(unet, diffusers.LCMScheduler(prediction_type="v_prediction"), seed=4)
    torch.testing.assert_close(latent["samples"] * model.model.latent_format.scale_factor, pipe_reference,
                               atol=1e-4, rtol=0)


def test_zero_snr_v_prediction_model_matches_diffusers_up_to_the_terminal_sigma(comfy, nodes):
    """ComfyUI keeps the terminal sigma finite (4519, alpha_bar 4.9e-8 instead of 0): at t = 999 its
    x0 differs from diffusers' by about x_t / 4519, which bounds the agreement here."""
    unet, model = comfy_host.tiny_unet_pair(seed=0, prediction="v_prediction", zsnr=True)
    config = lcm_config(nodes, model)
    latent, _ = comfy_sample(comfy, nodes, model, config, seed=4)
    reference = _reference_with_scheduler(
        unet, diffusers.LCMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True), seed=4)
    got = latent["samples"] * model.model.latent_format.scale_factor
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, reference, atol=5e-3, rtol=0)


def _reference_with_scheduler(unet, scheduler, seed):
    from test_nodes_parity import _pipeline

    pipe = _pipeline(diffusers.StableDiffusionPipeline, unet)
    pipe.scheduler = scheduler
    size = LATENT * pipe.vae_scale_factor
    with torch.no_grad():
        return pipe(prompt_embeds=POSITIVE, guidance_scale=1.0, num_inference_steps=4, height=size, width=size,
                    generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models(comfy, nodes, dtype):
    """fp16 / bf16 UNets: the sampler keeps fp32 maths and fp32 latents; results track the fp32 run."""
    unet, model = comfy_host.tiny_unet_pair(seed=0, dtype=dtype)
    config = lcm_config(nodes, model)
    latent, _ = comfy_sample(comfy, nodes, model, config, seed=4)
    assert latent["samples"].dtype == torch.float32
    reference = diffusers_txt2img(comfy_host.tiny_unet_pair(seed=0)[0], seed=4)
    got = latent["samples"] * model.model.latent_format.scale_factor
    relative = ((got - reference).abs().max() / reference.abs().max()).item()
    assert relative < (2e-2 if dtype == torch.float16 else 1e-1), relative
