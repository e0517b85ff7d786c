"""LCMPreset's flow and DDIM presets against their sources.

- Sources that are the authors' own code (LightX2V, Wan2.2-Lightning, CausVid, rCM): the preset's
  sigmas against the authors' formulas, re-run here as quoted in nodes/presets.py, and against the
  numbers the authors quote.
- Sources that are a diffusers scheduler config (Qwen-Image-Lightning's FlowMatchEulerDiscreteScheduler,
  Hyper-SD's DDIMScheduler with trailing spacing): the schedule against diffusers itself, and the
  latents of ComfyUI's sampler on the preset's sigmas against the diffusers pipeline on a tiny model.
- A preset on a model of another family is refused, naming both.
"""

from __future__ import annotations

import math

import diffusers
import numpy as np
import pytest
import torch

import flow_models
from test_nodes_parity import LATENT, NEGATIVE, POSITIVE, diffusers_txt2img

LIGHTX2V_WAN21 = "lightx2v Wan2.1 StepDistill-CfgDistill 4-step (LCM)"
LIGHTX2V_EULER = "lightx2v Wan2.1 StepDistill-CfgDistill 4-step (Euler, LightX2V since 2025-11)"
WAN22_LIGHTNING = "Wan2.2-Lightning / lightx2v Wan2.2 4-step (Euler)"
CAUSVID = "CausVid Wan2.1 bidirectional 3-step (LCM)"
RCM = "rCM Wan2.1 T2V 4-step (LCM)"
QWEN = {8: "Qwen-Image-Lightning 8-step (Euler)", 4: "Qwen-Image-Lightning 4-step (Euler)"}
HYPER_SD = {n: f"Hyper-SD {n}-step LoRA SD1.5 / SDXL (DDIM)" for n in (2, 4, 8)}

# Qwen-Image-Lightning generate_with_diffusers.py: the scheduler config for its LoRAs.
QWEN_LIGHTNING_CONFIG = dict(
    base_image_seq_len=256, base_shift=math.log(3), invert_sigmas=False, max_image_seq_len=8192,
    max_shift=math.log(3), num_train_timesteps=1000, shift=1.0, shift_terminal=None, stochastic_sampling=False,
    time_shift_type="exponential", use_beta_sigmas=False, use_dynamic_shifting=True, use_exponential_sigmas=False,
    use_karras_sigmas=False)
# stable-diffusion-v1-5's scheduler/scheduler_config.json (as diffusers' docs print it), what the Hyper-SD card's
# DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing") starts from.
SD15_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "trained_betas": None}


def shifted_table(shift):
    """LightX2V's WanStepDistillScheduler.set_denoising_timesteps and CausVid's FlowMatchScheduler(shift,
    sigma_min=0.0, extra_one_step=True).set_timesteps(1000): the same 1000-entry table."""
    sigmas = torch.linspace(1.0, 0.0, 1001)[:-1]
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def preset_sigmas(nodes, name, model=None):
    return nodes.LCMPreset().get_preset(name, 0, 1.0, model=model)[1]


def test_lightx2v_sigmas_are_its_schedulers(nodes):
    # configs/distill/wan_t2v_distill_4step_cfg.json: denoising_step_list [1000, 750, 500, 250], sample_shift 5;
    # the scheduler indexes the shifted table with 1000 - t.
    expected = shifted_table(5.0)[[1000 - t for t in (1000, 750, 500, 250)]]
    for name in (LIGHTX2V_WAN21, LIGHTX2V_EULER, WAN22_LIGHTNING):
        sigmas = preset_sigmas(nodes, name)
        torch.testing.assert_close(sigmas[:-1], expected, atol=1e-7, rtol=0, msg=name)
        assert sigmas[-1] == 0.0
        # The timesteps the Wan2.2-Lightning authors quote (LightX2V-Wan2.2-Lightning issue 3).
        torch.testing.assert_close(sigmas[:-1] * 1000, torch.tensor([1000.0, 937.5001, 833.3333, 625.0]),
                                   atol=2e-4, rtol=0)


def test_wan22_lightning_sigmas_are_its_euler_schedulers(nodes):
    # Wan2.2-Lightning wan/utils/fm_solvers_euler.py: np.linspace(1000, 0, steps + 1, float32) / 1000, shifted.
    timesteps = torch.from_numpy(np.linspace(1000, 0, 5, dtype=np.float32))
    sigmas = timesteps / 1000
    expected = 5.0 * sigmas / (1 + 4.0 * sigmas)
    torch.testing.assert_close(preset_sigmas(nodes, WAN22_LIGHTNING), expected, atol=1e-7, rtol=0)


def test_causvid_sigmas_are_the_tables_nearest_to_its_timesteps(nodes):
    table = shifted_table(8.0)
    nearest = [table[torch.argmin((table * 1000 - t).abs())] for t in (1000, 757, 522)]
    torch.testing.assert_close(preset_sigmas(nodes, CAUSVID)[:-1], torch.stack(nearest), atol=1e-7, rtol=0)


def test_rcm_sigmas_are_its_trigflow_steps(nodes):
    t = torch.tensor([math.atan(80), 1.5, 1.4, 1.0], dtype=torch.float64)
    expected = (torch.sin(t) / (torch.cos(t) + torch.sin(t))).float()
    torch.testing.assert_close(preset_sigmas(nodes, RCM)[:-1], expected, atol=1e-7, rtol=0)


def test_samplers_are_the_sources_steps(nodes):
    node = nodes.LCMPreset()
    for name in (LIGHTX2V_WAN21, CAUSVID, RCM):
        assert node.get_preset(name, 0, 1.0)[0].sampler_function.__name__ == "sample_lcm_multistep", name
    for name in (LIGHTX2V_EULER, WAN22_LIGHTNING, *QWEN.values(), *HYPER_SD.values()):
        sampler, _, _, cfg, about = node.get_preset(name, 0, 1.0)
        assert sampler.sampler_function.__name__ == "sample_euler", name  # ComfyUI's ddim is its euler
        assert cfg == 1.0 and "Source: " in about


@pytest.mark.parametrize("steps", [8, 4])
def test_qwen_lightning_sigmas_are_diffusers(nodes, steps):
    """QwenImagePipeline: sigmas linspace(1, 1/n, n) and mu from the image size (log 3 at every size here)."""
    for seq_len in (256, 4096, 8192):
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(QWEN_LIGHTNING_CONFIG)
        mu = diffusers.pipelines.qwenimage.pipeline_qwenimage.calculate_shift(
            seq_len, 256, 8192, math.log(3), math.log(3))
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
        torch.testing.assert_close(preset_sigmas(nodes, QWEN[steps]), scheduler.sigmas, atol=1e-7, rtol=0)


@pytest.mark.parametrize("steps", [8, 4])
def test_qwen_lightning_latents_are_the_pipelines(comfy, nodes, flow_pairs, one_torch_thread, steps):
    """No tiny Qwen-Image here: the tiny Flux, whose FluxPipeline asks the scheduler as QwenImagePipeline does
    (sigmas linspace(1, 1/n, n) and mu from the config: log 3), runs the card's config in diffusers and
    ComfyUI's euler on the preset's sigmas."""
    pair = flow_pairs["flux"]
    sampler, sigmas, *_ = nodes.LCMPreset().get_preset(QWEN[steps], 0, 1.0)
    got = flow_models.comfy_custom(comfy, pair, sampler, sigmas, seed=3)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(QWEN_LIGHTNING_CONFIG)
    reference, scheduler = flow_models.diffusers_reference(pair, scheduler, seed=3, steps=steps)
    torch.testing.assert_close(scheduler.sigmas, sigmas, atol=1e-7, rtol=0)
    assert flow_models.relative_error(got, reference) < 1e-4


@pytest.mark.parametrize("steps", [2, 4, 8])
def test_hyper_sd_is_diffusers_ddim_trailing(comfy, nodes, models, steps):
    unet, model = models
    ddim = diffusers.DDIMScheduler.from_config(SD15_SCHEDULER_CONFIG, timestep_spacing="trailing")
    ddim.set_timesteps(steps)
    preset = nodes.presets.PRESETS_BY_NAME[HYPER_SD[steps]]
    assert list(preset.timesteps) == ddim.timesteps.tolist()
    sampler, sigmas, _, cfg, _ = nodes.LCMPreset().get_preset(preset.name, 0, 1.0, model=model)
    model_sampling = model.get_model_object("model_sampling")
    assert model_sampling.timestep(sigmas).round().tolist() == [*preset.timesteps, 0]
    out = comfy.nodes_custom_sampler.SamplerCustom.execute(
        model=model, add_noise=True, noise_seed=5, cfg=cfg, positive=[[POSITIVE, {}]], negative=[[NEGATIVE, {}]],
        sampler=sampler, sigmas=sigmas, latent_image={"samples": torch.zeros(1, 4, LATENT, LATENT)})
    got = out.args[0]["samples"] * model.model.latent_format.scale_factor
    reference = diffusers_txt2img(unet, seed=5, cfg=1.0, steps=steps, scheduler=ddim)
    # diffusers' DDIM ends at t = 0's noise level in its x_t = sqrt(alpha_bar_0) * x_k (set_alpha_to_one false).
    got = got * ddim.alphas_cumprod[0].sqrt()
    torch.testing.assert_close(got, reference, atol=1e-4 * reference.abs().max().item(), rtol=0)


def test_a_preset_for_another_family_is_refused_naming_both(nodes, models, flow_pairs):
    node = nodes.LCMPreset()
    with pytest.raises(ValueError, match=r"LCMPreset preset='Qwen-Image-Lightning 4-step \(Euler\)': made for "
                                         r"QwenImage \(flow-matching\) models, but the model is WAN21 \("):
        node.get_preset(QWEN[4], 0, 1.0, model=flow_pairs["wan"].model)
    with pytest.raises(ValueError, match=r"made for WAN21 \(flow-matching\) models, but the model is BaseModel "
                                         r"\(ModelSamplingDiscrete, EPS"):
        node.get_preset(LIGHTX2V_WAN21, 0, 1.0, model=models[1])
    with pytest.raises(ValueError, match=r"made for BaseModel / SDXL \(discrete-timestep\) models, but the model is "
                                         r"SD3 \(ModelSamplingDiscreteFlow, CONST"):
        node.get_preset(HYPER_SD[4], 0, 1.0, model=flow_pairs["sd3"].model)
    with pytest.raises(ValueError, match=r"steps=3: the preset 'rCM Wan2.1 T2V 4-step \(LCM\)' runs its source's "
                                         r"flow sigmas .* \(4 steps\); set steps to 0 or 4"):
        node.get_preset(RCM, 3, 1.0)
    with pytest.raises(ValueError, match=r"strength=0.5: .* set strength to 1.0"):
        node.get_preset(CAUSVID, 0, 0.5)


def test_a_wan_preset_runs_on_a_wan_model(comfy, nodes, flow_pairs, one_torch_thread):
    pair = flow_pairs["wan"]
    for name in (LIGHTX2V_WAN21, WAN22_LIGHTNING):
        sampler, sigmas, *_ = nodes.LCMPreset().get_preset(name, 0, 1.0, model=pair.model)
        latent = flow_models.comfy_custom(comfy, pair, sampler, sigmas, seed=1)
        assert latent.shape == pair.latent_shape(1) and torch.isfinite(latent).all()
