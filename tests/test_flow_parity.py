"""Flow-matching LCM in ComfyUI, seed-exact against diffusers' FlowMatchLCMScheduler in the real pipelines.

On ComfyUI's own SD3, Flux (guidance embedding) and WAN21 model classes (tiny random weights,
tests/flow_models.py), the pack's names give the latents of the family's diffusers pipeline with
diffusers' FlowMatchLCMScheduler, configured from the family's published scheduler_config (SD3: shift
3.0, set_timesteps(n); Flux: dynamic shifting, sigmas = linspace(1, 1/n, n) plus mu from the image
sequence length, which ComfyUI's ModelSamplingFlux node at that width and height gives as its shift;
Wan: set_timesteps(n) at the model's shift), under the generator convention: ONE
torch.Generator("cpu").manual_seed(seed) draws the initial noise and then every step's noise
(Flux in the packed shape, Wan in 5-D).

- KSampler sampler `lcm_diffusers` + scheduler `lcm_diffusers`;
- SamplerCustom(add_noise=True) with the pack's FlowMatchLCMTimesteps and LCMSampler (default config),
  txt2img and img2img at strength 0.5 (diffusers' SD3 / Flux img2img pipelines' strength);
- the ModelSamplingSD3 / ModelSamplingFlux nodes' shift reaches the schedule.

The harness itself is proven exact with a deterministic sampler in test_flow_harness.py. Tolerance:
1e-4 relative to the latent's largest magnitude.
"""

from __future__ import annotations

import pytest
import torch

import flow_models as fm
from comfy_host import lcm_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REL = 1e-4
# (steps, cfg, batch): every value of each covered, and every (cfg, batch) pair, without the full product.
CASES = [(1, 1.0, 1), (2, 2.0, 2), (4, 1.0, 2), (8, 2.0, 1)]
CASE_IDS = [f"{steps}steps-cfg{cfg:g}-b{batch}" for steps, cfg, batch in CASES]


def _model(comfy, pair):
    """The ComfyUI model as a graph would feed it: Flux through ModelSamplingFlux at the image size."""
    return fm.flux_at_pipeline_mu(comfy, pair) if pair.family == "flux" else pair.model


def _timesteps_node(pack):
    return pack.NODE_CLASS_MAPPINGS["FlowMatchLCMTimesteps"]()


def _assert_parity(got, reference, what):
    error = fm.relative_error(got, reference)
    assert error < REL, f"{what}: max |ComfyUI - diffusers| / max |diffusers| = {error:.3g}"


@pytest.mark.parametrize("family", fm.FAMILIES)
@pytest.mark.parametrize(("steps", "cfg", "batch"), CASES, ids=CASE_IDS)
def test_ksampler_matches_the_pipeline(comfy, pack, flow_pairs, family, steps, cfg, batch):
    pair = flow_pairs[family]
    got = fm.comfy_ksampler(comfy, pair, seed=42, steps=steps, cfg=cfg, batch=batch, model=_model(comfy, pair))
    reference, _ = fm.diffusers_reference(pair, fm.flow_lcm_scheduler(pair), seed=42, steps=steps, cfg=cfg,
                                          batch=batch)
    _assert_parity(got, reference, f"{family} KSampler {steps} steps cfg {cfg} batch {batch}")


@pytest.mark.parametrize("family", fm.FAMILIES)
def test_ksampler_schedule_is_the_pipelines(comfy, pack, flow_pairs, family):
    """The scheduler name `lcm_diffusers` on a flow model: the sigmas the family's pipeline steps through."""
    pair = flow_pairs[family]
    model_sampling = _model(comfy, pair).get_model_object("model_sampling")
    _, scheduler = fm.diffusers_reference(pair, fm.flow_lcm_scheduler(pair), seed=0, steps=4)
    sigmas = comfy.samplers.calculate_sigmas(model_sampling, "lcm_diffusers", 4)
    torch.testing.assert_close(sigmas.float().cpu(), scheduler.sigmas.float())


@pytest.mark.parametrize("family", fm.FAMILIES)
def test_custom_sampler_nodes_match_the_pipeline(comfy, pack, nodes, flow_pairs, family):
    """SamplerCustom + FlowMatchLCMTimesteps + LCMSampler (default config), txt2img, 4 steps, cfg 2."""
    pair = flow_pairs[family]
    model = _model(comfy, pair)
    sigmas, _ = _timesteps_node(pack).get_sigmas(model=model, steps=4, strength=1.0)
    sampler = nodes.LCMSampler().get_sampler(lcm_config(nodes))[0]
    got = fm.comfy_custom(comfy, pair, sampler, sigmas, seed=7, cfg=2.0, model=model)
    reference, scheduler = fm.diffusers_reference(pair, fm.flow_lcm_scheduler(pair), seed=7, steps=4, cfg=2.0)
    torch.testing.assert_close(sigmas.float().cpu(), scheduler.sigmas.float())
    assert float(sigmas[-1]) == 0.0
    _assert_parity(got, reference, f"{family} SamplerCustom txt2img")


@pytest.mark.parametrize(("family", "cfg", "batch"), [("sd3", 2.0, 1), ("flux", 1.0, 2)])
def test_img2img_matches_the_img2img_pipeline(comfy, pack, nodes, flow_pairs, family, cfg, batch):
    """Strength 0.5 as StableDiffusion3Img2ImgPipeline / FluxImg2ImgPipeline define it: the full
    4-step schedule without its first int(4 - 4 * 0.5) = 2 steps, noise added at the first kept sigma.
    Flux at cfg 1: FluxImg2ImgPipeline runs true CFG only from a text negative prompt."""
    pair = flow_pairs[family]
    model = _model(comfy, pair)
    start = torch.randn(pair.latent_shape(batch), generator=torch.Generator().manual_seed(5))
    sigmas, _ = _timesteps_node(pack).get_sigmas(model=model, steps=4, strength=0.5)
    sampler = nodes.LCMSampler().get_sampler(lcm_config(nodes))[0]
    got = fm.comfy_custom(comfy, pair, sampler, sigmas, seed=3, cfg=cfg, batch=batch, latent=start, model=model)
    reference, scheduler = fm.diffusers_reference(pair, fm.flow_lcm_scheduler(pair), seed=3, steps=4, cfg=cfg,
                                                  batch=batch, image=start, strength=0.5)
    assert scheduler.begin_index == 2
    torch.testing.assert_close(sigmas.float().cpu(), scheduler.sigmas[2:].float())
    _assert_parity(got, reference, f"{family} img2img strength 0.5")


# family, the ComfyUI node that sets the shift and its inputs, the diffusers scheduler config it means.
SHIFTS = [
    ("sd3", "ModelSamplingSD3", dict(shift=5.0), dict(shift=5.0)),
    ("wan", "ModelSamplingSD3", dict(shift=5.0), dict(shift=5.0)),
    ("flux", "ModelSamplingFlux", dict(max_shift=2.0, base_shift=0.8), dict(max_shift=2.0, base_shift=0.8)),
]


@pytest.mark.parametrize(("family", "node", "inputs", "config"), SHIFTS, ids=[s[0] for s in SHIFTS])
def test_model_sampling_node_shift_reaches_the_schedule(comfy, pack, nodes, flow_pairs, family, node, inputs, config):
    pair = flow_pairs[family]
    patch = getattr(comfy.nodes_model_advanced, node)().patch
    if family == "flux":
        height, width = pair.pixels()
        model = patch(pair.model, width=width, height=height, **inputs)[0]
    else:
        model = patch(pair.model, **inputs)[0]
    reference, _ = fm.diffusers_reference(pair, fm.flow_lcm_scheduler(pair, **config), seed=11, steps=4)
    got = fm.comfy_ksampler(comfy, pair, seed=11, steps=4, model=model)
    _assert_parity(got, reference, f"{family} {node}{inputs} KSampler")
    sigmas, _ = _timesteps_node(pack).get_sigmas(model=model, steps=4, strength=1.0)
    sampler = nodes.LCMSampler().get_sampler(lcm_config(nodes))[0]
    _assert_parity(fm.comfy_custom(comfy, pair, sampler, sigmas, seed=11, model=model), reference,
                   f"{family} {node}{inputs} SamplerCustom")
    default, _ = fm.diffusers_reference(pair, fm.flow_lcm_scheduler(pair), seed=11, steps=4)
    assert fm.relative_error(default, reference) > 1e-3  # the shift changes the result
