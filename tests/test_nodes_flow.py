"""The pack on flow-matching models in a real ComfyUI: schedules against diffusers, and the refusals.

The schedules of the KSampler scheduler ``lcm_diffusers`` and of FlowMatchLCMTimesteps are
compared bit for bit with diffusers' FlowMatchLCMScheduler, configured and called as each
family's diffusers pipeline does (SD3 / Wan: set_timesteps(n) with the shift; Flux:
sigmas = linspace(1, 1/n, n) with mu from calculate_shift at the image size; the SD3 / Flux
img2img pipelines' get_timesteps for strength). The seed-exact latents against the pipelines
themselves are in tests/test_flow_parity.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FlowMatchLCMScheduler as DiffusersFlowMatchLCM
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

import comfy_host


@pytest.fixture(scope="module")
def sd3(flow_pairs):
    """The tiny SD3 of tests/flow_models.py, as ComfyUI loads it (its own SD3 class, shift 3.0)."""
    return flow_pairs["sd3"].model


def _patched(comfy, model, node: str, **widgets):
    """The model after one of ComfyUI's ModelSampling* nodes (what users put before the sampler)."""
    advanced = comfy.nodes_model_advanced
    node_class = getattr(advanced, node)
    return getattr(node_class(), node_class.FUNCTION)(model, **widgets)[0]


def _ksampler_sigmas(comfy, model, steps: int) -> torch.Tensor:
    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "lcm_diffusers", steps)


def _diffusers(config: dict, **arguments) -> DiffusersFlowMatchLCM:
    scheduler = DiffusersFlowMatchLCM(**config)
    scheduler.set_timesteps(**arguments)
    return scheduler


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
@pytest.mark.parametrize("shift", [3.0, 5.0, 8.0])
def test_static_shift_models_get_the_sd3_and_wan_pipelines_schedule(comfy, pack, sd3, steps, shift):
    model = sd3 if shift == 3.0 else _patched(comfy, sd3, "ModelSamplingSD3", shift=shift)
    expected = _diffusers({"shift": shift}, num_inference_steps=steps)
    assert torch.equal(_ksampler_sigmas(comfy, model, steps), expected.sigmas)
    sigmas, text = pack.NODE_CLASS_MAPPINGS["FlowMatchLCMTimesteps"]().get_sigmas(model, steps, 1.0)
    assert torch.equal(sigmas, expected.sigmas)
    assert text == ", ".join(f"{t:g}" for t in expected.timesteps.tolist())


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
@pytest.mark.parametrize("width,height", [(1024, 1024), (512, 768)])
def test_flux_models_get_the_flux_pipelines_sigmas_and_mu(comfy, pack, sd3, steps, width, height):
    model = _patched(comfy, sd3, "ModelSamplingFlux", max_shift=1.15, base_shift=0.5, width=width, height=height)
    # FluxPipeline: image_seq_len = (h / 16) * (w / 16); FlowMatchEuler's Flux config (base 256 / 0.5, max 4096 / 1.15).
    mu = calculate_shift((height // 16) * (width // 16), 256, 4096, 0.5, 1.15)
    expected = _diffusers({"use_dynamic_shifting": True, "shift": 3.0},
                          sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    got = _ksampler_sigmas(comfy, model, steps)
    # ComfyUI's ModelSamplingFlux node computes mu in its own float order: equal to the last bits or so.
    torch.testing.assert_close(got, expected.sigmas, rtol=1e-6, atol=0)
    sigmas, _ = pack.NODE_CLASS_MAPPINGS["FlowMatchLCMTimesteps"]().get_sigmas(model, steps, 1.0)
    assert torch.equal(sigmas, got)


@pytest.mark.parametrize("steps,strength", [(4, 0.5), (4, 0.3), (8, 0.75), (2, 1.0), (1, 0.2)])
def test_strength_is_the_img2img_pipelines(comfy, pack, sd3, steps, strength):
    """StableDiffusion3Img2ImgPipeline / FluxImg2ImgPipeline: the n-step schedule less its first int(n - n s) steps."""
    expected = _diffusers({"shift": 3.0}, num_inference_steps=steps)
    init_timestep = min(steps * strength, steps)
    start = int(max(steps - init_timestep, 0))
    sigmas, text = pack.NODE_CLASS_MAPPINGS["FlowMatchLCMTimesteps"]().get_sigmas(sd3, steps, strength)
    assert torch.equal(sigmas, expected.sigmas[start:])
    assert len(text.split(", ")) == steps - start


def test_custom_sigmas_and_a_pasted_config_are_set_timesteps_arguments(comfy, pack, sd3):
    node = pack.NODE_CLASS_MAPPINGS["FlowMatchLCMTimesteps"]()
    sigmas, _ = node.get_sigmas(sd3, 4, 1.0, sigmas="1.0, 0.9375, 0.8333, 0.625")
    assert torch.equal(sigmas, _diffusers({"shift": 3.0}, sigmas=[1.0, 0.9375, 0.8333, 0.625]).sigmas)
    # Qwen-Image's published scheduler_config (dynamic shifting, shift_terminal 0.02) on a ModelSamplingFlux model.
    qwen = ('{"base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 8192, "max_shift": 0.9, '
            '"shift": 1.0, "shift_terminal": 0.02, "time_shift_type": "exponential", "use_dynamic_shifting": true, '
            '"_class_name": "FlowMatchEulerDiscreteScheduler"}')
    model = _patched(comfy, sd3, "ModelSamplingFlux", max_shift=0.9, base_shift=0.5, width=1024, height=1024)
    mu = model.get_model_object("model_sampling").shift
    sigmas, _ = node.get_sigmas(model, 4, 1.0, scheduler_config_json=qwen)
    expected = _diffusers({"use_dynamic_shifting": True, "shift_terminal": 0.02, "base_shift": 0.5, "max_shift": 0.9,
                           "max_image_seq_len": 8192}, sigmas=np.linspace(1.0, 0.25, 4), mu=mu)
    assert torch.equal(sigmas, expected.sigmas)


@pytest.mark.parametrize("widgets,needle", [
    ({"sigmas": "1.0, high"}, r"sigmas: '1.0, high' is not a list of numbers"),
    ({"sigmas": "1.0, 14.6"}, r"outside \[0, 1\]"),
    ({"scheduler_config_json": '{"scale_factors": [1.5, 2.0]}'}, "scale_factors .* ComfyUI's samplers do not allow"),
    ({"scheduler_config_json": '{"invert_sigmas": true}'}, "invert_sigmas"),
    ({"scheduler_config_json": '{"use_dynamic_shifting": true}'}, "carries a static shift"),
    ({"scheduler_config_json": '{"shift": -1}'}, "shift must be a positive number"),
    ({"scheduler_config_json": '{"shift_terminal": 0.02}', "steps": 1}, "NaN or infinite sigmas"),
])
def test_flow_timesteps_errors_name_the_input(pack, sd3, widgets, needle):
    node = pack.NODE_CLASS_MAPPINGS["FlowMatchLCMTimesteps"]()
    arguments = {"steps": 4, "strength": 1.0, **widgets}
    with pytest.raises(ValueError, match=f"^FlowMatchLCMTimesteps.*{needle}"):
        node.get_sigmas(sd3, **arguments)


def test_discrete_nodes_refuse_flow_models_and_the_flow_node_refuses_sd15(pack, nodes, sd3, models):
    flow_message = r"model: SD3 \(ModelSamplingDiscreteFlow, CONST\) is a flow-matching model; .* needs a " \
                   r"discrete-timestep model .* On flow models use LCMSampler"
    with pytest.raises(ValueError, match=flow_message.replace(".* needs", "LCMSchedulerConfig's model input .* needs")):
        comfy_host.lcm_config(nodes, model=sd3)
    with pytest.raises(ValueError, match=flow_message):
        nodes.LCMTimesteps().get_sigmas(comfy_host.lcm_config(nodes), 4, 1.0, model=sd3)
    with pytest.raises(ValueError, match=r"FlowMatchLCMTimesteps.*model: BaseModel .* is not a flow-matching model; "
                                         r"FlowMatchLCMTimesteps needs a flow-matching model such as SD3"):
        nodes.FlowMatchLCMTimesteps().get_sigmas(models[1], 4, 1.0)


def _sample_custom(comfy, model, sampler, sigmas, seed=3):
    latent = {"samples": torch.zeros(1, 16, 4, 4)}
    cond = [[torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(1)),
             {"pooled_output": torch.randn(1, 32, generator=torch.Generator().manual_seed(2))}]]
    node = comfy.nodes_custom_sampler.SamplerCustom()
    return node.sample(model, True, seed, 1.0, cond, cond, sampler, sigmas, latent)[0]["samples"]


def test_tcd_and_discrete_sigmas_on_a_flow_model_are_refused(comfy, nodes, sd3):
    flow_sigmas = nodes.FlowMatchLCMTimesteps().get_sigmas(sd3, 2, 1.0)[0]
    tcd = nodes.TCDSampler().get_sampler(comfy_host.lcm_config(nodes), 0.3)[0]
    with pytest.raises(ValueError, match=r"SD3 .* is a flow-matching model; TCD \(diffusers has no flow-matching TCD "
                                         r"scheduler\) needs a discrete-timestep model"):
        _sample_custom(comfy, sd3, tcd, flow_sigmas)
    discrete = nodes.LCMTimesteps().get_sigmas(comfy_host.lcm_config(nodes), 2, 1.0)[0]
    with pytest.raises(ValueError, match=r"outside \[0, 1\], so they are not a flow model's noise levels"):
        _sample_custom(comfy, sd3, nodes.LCMSampler().get_sampler(comfy_host.lcm_config(nodes))[0], discrete)


def test_lcm_sampler_samples_a_flow_model_as_the_ksampler_name(comfy, nodes, sd3):
    """On a flow model SamplerCustom with LCMSampler (default config) and KSampler's lcm_diffusers agree exactly."""
    sigmas = nodes.FlowMatchLCMTimesteps().get_sigmas(sd3, 4, 1.0)[0]
    custom = _sample_custom(comfy, sd3, nodes.LCMSampler().get_sampler(comfy_host.lcm_config(nodes))[0], sigmas,
                            seed=5)
    ksampler = _sample_custom(comfy, sd3, comfy.samplers.sampler_object("lcm_diffusers"),
                              _ksampler_sigmas(comfy, sd3, 4), seed=5)
    assert torch.isfinite(custom).all() and torch.equal(custom, ksampler)


def test_ksampler_scheduler_on_a_flow_model_with_a_bad_shift_names_it(comfy, sd3):
    model = _patched(comfy, sd3, "ModelSamplingSD3", shift=0.0)
    with pytest.raises(ValueError, match=r"scheduler lcm_diffusers \(4 steps, flow model .* shift 0.0\): shift must be "
                                         "a positive number"):
        _ksampler_sigmas(comfy, model, 4)


def test_docs_table_of_comfyui_schedulers_on_flow_models(comfy, pack):
    """docs/flow.md's table of 4-step sigmas: lcm_diffusers against ComfyUI's own schedulers, recomputed."""
    text = (comfy_host.REPO_ROOT / "docs" / "flow.md").read_text(encoding="utf-8")
    header = "| shift | `lcm_diffusers` (diffusers) | `simple` | `normal` | `sgm_uniform` | `beta` |"
    lines = text.splitlines()
    rows = lines[lines.index(header) + 2:lines.index(header) + 4]
    schedulers = ["lcm_diffusers", "simple", "normal", "sgm_uniform", "beta"]

    class FlowSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        model_sampling = FlowSampling()
        model_sampling.set_parameters(shift=float(cells[0].split()[0]))
        for scheduler, cell in zip(schedulers, cells[1:]):
            sigmas = comfy.samplers.calculate_sigmas(model_sampling, scheduler, 4)[:-1].tolist()
            assert cell == ", ".join(str(round(value, 4)) for value in sigmas), (cells[0], scheduler)


def test_over_http_a_discrete_node_on_a_flow_model_fails_its_prompt_and_the_server_keeps_serving(
        comfy_server, flow_pairs, nodes):
    """A tiny SD3 in models/diffusion_models (UNETLoader): LCMTimesteps refuses it, FlowMatchLCMTimesteps serves it."""
    from safetensors.torch import save_file

    folder = comfy_server.base_dir / "models" / "diffusion_models"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in flow_pairs["sd3"].transformer.state_dict().items()},
              str(folder / "tiny-sd3.safetensors"))
    loader = {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny-sd3.safetensors", "weight_dtype": "default"}}
    config = {"class_type": "LCMSchedulerConfig", "inputs": comfy_host.default_widgets(nodes.LCMSchedulerConfig)}
    refused = {"1": loader, "2": config,
               "3": {"class_type": "LCMTimesteps", "inputs": {"config": ["2", 0], "steps": 4, "strength": 1.0,
                                                              "model": ["1", 0]}},
               "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 1]}}}
    with pytest.raises(comfy_host.ComfyHostError, match=r"LCMTimesteps.*SD3 \(ModelSamplingDiscreteFlow, CONST\) is "
                                                        r"a flow-matching model"):
        comfy_server.run(refused, timeout=120)
    served = {"1": loader,
              "2": {"class_type": "FlowMatchLCMTimesteps", "inputs": {"model": ["1", 0], "steps": 4, "strength": 1.0}},
              "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}}}
    entry = comfy_server.run(served, timeout=120)
    expected = ", ".join(f"{t:g}" for t in _diffusers({"shift": 3.0}, num_inference_steps=4).timesteps.tolist())
    assert entry["outputs"]["3"]["text"] == [expected]
