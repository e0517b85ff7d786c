"""The exact samplers and the LCM timesteps in ComfyUI's plain KSampler (in-process and over HTTP).

nodes/ksampler_names.py adds the sampler lcm_diffusers and the scheduler lcm_diffusers to
ComfyUI's lists when the pack loads. Checked here: the lists and the KSampler nodes show them,
registering again adds nothing and a name taken by someone else is left alone, seed-exact
parity with diffusers through the plain KSampler, which KSampler denoise values are
diffusers' LCM strength (the table in docs/nodes.md), and graphs posted over HTTP.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import sys
from typing import Any

import diffusers
import pytest
import torch

import comfy_host
from comfy_host import REPO_ROOT, ComfyServer, txt2img_graph
from test_nodes_parity import (
    LATENT,
    NEGATIVE,
    POSITIVE,
    _close,
    _lcm_unet_without_guidance_embedding,
    _pipeline,
    diffusers_txt2img,
)

SAMPLERS = ("lcm_diffusers", "tcd_diffusers")
SCHEDULER = "lcm_diffusers"
REGISTRY_LOGGER = "lcm_multistep.nodes.ksampler_names"


@pytest.fixture(scope="module")
def models(comfy):
    return comfy_host.tiny_unet_pair(seed=0)


@pytest.fixture(scope="module")
def registry(pack):
    return pack.nodes.ksampler_names


def ksampler(comfy, model, *, seed, steps=4, cfg=1.0, sampler="lcm_diffusers", scheduler=SCHEDULER, denoise=1.0,
             latent=None, batch=1):
    """ComfyUI's KSampler node as a graph runs it; returns the LATENT tensor."""
    latent = latent if latent is not None else {"samples": torch.zeros(batch, 4, LATENT, LATENT)}
    return comfy.nodes.KSampler().sample(model, seed, steps, cfg, sampler, scheduler, [[POSITIVE, {}]],
                                         [[NEGATIVE, {}]], latent, denoise=denoise)[0]


# --------------------------------------------------------------------------- registration


def test_names_reach_the_ksampler_dropdowns(comfy, pack):
    for node in (comfy.nodes.KSampler, comfy.nodes.KSamplerAdvanced):
        required = node.INPUT_TYPES()["required"]
        samplers, schedulers = required["sampler_name"][0], required["scheduler"][0]
        assert set(SAMPLERS) <= set(samplers) and SCHEDULER in schedulers
        assert all(samplers.count(name) == 1 for name in SAMPLERS) and schedulers.count(SCHEDULER) == 1
    assert set(SAMPLERS) <= set(comfy.samplers.KSAMPLER_NAMES)
    assert comfy.samplers.SCHEDULER_HANDLERS[SCHEDULER].use_ms
    for name in SAMPLERS:  # resolved the way ComfyUI resolves any k-diffusion sampler name
        assert isinstance(comfy.samplers.sampler_object(name), comfy.samplers.KSAMPLER)


def test_registering_again_adds_nothing_and_keeps_every_entry(comfy, registry, caplog):
    lists = (comfy.samplers.KSAMPLER_NAMES, comfy.samplers.SAMPLER_NAMES, comfy.samplers.SCHEDULER_NAMES)
    before = [list(names) for names in lists]
    handlers = dict(comfy.samplers.SCHEDULER_HANDLERS)
    with caplog.at_level(logging.INFO, logger=REGISTRY_LOGGER):
        result = registry.register()
    assert result.added == () and result.skipped == ()
    assert set(result.present) == {f"sampler {name}" for name in SAMPLERS} | {f"scheduler {SCHEDULER}"}
    assert [list(names) for names in lists] == before and comfy.samplers.SCHEDULER_HANDLERS == handlers
    assert len([r for r in caplog.records if r.name == REGISTRY_LOGGER]) == 1


def test_pack_imported_a_second_time_registers_nothing_new(comfy, pack):
    """ComfyUI may import a pack under another module name (a second copy in custom_nodes, a reload)."""
    before = list(comfy.samplers.SAMPLER_NAMES), list(comfy.samplers.SCHEDULER_NAMES)
    name = "lcm_multistep_second_copy"
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        assert module.nodes.KSAMPLER_REGISTRATION.added == ()
        assert (list(comfy.samplers.SAMPLER_NAMES), list(comfy.samplers.SCHEDULER_NAMES)) == before
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


def test_a_name_taken_by_someone_else_is_left_alone(comfy, registry, monkeypatch, caplog):
    """Another pack (or a future ComfyUI) that owns the name keeps it; the pack says so once."""
    k_sampling = sys.modules["comfy.k_diffusion.sampling"]

    def theirs(model, x, sigmas, extra_args=None, callback=None, disable=None):
        return x

    monkeypatch.setattr(k_sampling, "sample_lcm_diffusers", theirs)
    monkeypatch.setitem(comfy.samplers.SCHEDULER_HANDLERS, SCHEDULER, comfy.samplers.SchedulerHandler(theirs))
    with caplog.at_level(logging.INFO, logger=REGISTRY_LOGGER):
        result = registry.register()
    assert "sampler lcm_diffusers" in result.skipped and f"scheduler {SCHEDULER}" in result.skipped
    assert k_sampling.sample_lcm_diffusers is theirs
    assert comfy.samplers.SCHEDULER_HANDLERS[SCHEDULER].handler is theirs
    (record,) = [r for r in caplog.records if r.name == REGISTRY_LOGGER]
    assert record.levelno == logging.WARNING and "left alone" in record.getMessage()


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
@pytest.mark.parametrize("cfg", [1.0, 2.0], ids=("cfg1", "cfg2"))
def test_plain_ksampler_is_seed_exact_with_diffusers(comfy, models, steps, cfg):
    unet, model = models
    latent = ksampler(comfy, model, seed=42, steps=steps, cfg=cfg)
    reference = diffusers_txt2img(unet, seed=42, cfg=cfg, steps=steps)
    _close(latent, reference, model.model.latent_format.scale_factor)


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
@pytest.mark.parametrize("cfg", [1.0, 2.0], ids=("cfg1", "cfg2"))
def test_plain_ksampler_tcd_is_seed_exact_with_diffusers(comfy, models, steps, cfg):
    """tcd_diffusers is TCDSampler at gamma 0.3: diffusers' TCDScheduler with eta 0.3 (its step's
    default), on the same timesteps as LCM's (TCD's default grid is LCM's)."""
    unet, model = models
    latent = ksampler(comfy, model, seed=42, steps=steps, cfg=cfg, sampler="tcd_diffusers")
    reference = diffusers_txt2img(unet, seed=42, cfg=cfg, steps=steps, scheduler=diffusers.TCDScheduler(), eta=0.3)
    scale = model.model.latent_format.scale_factor
    atol = 1e-4 * max(1.0, reference.abs().max().item())  # relative where the random UNet's latents are large
    torch.testing.assert_close(latent["samples"] * scale, reference, atol=atol, rtol=0)


def test_lcm_scheduler_gives_diffusers_timesteps_from_the_models_own_table(comfy, models):
    _, model = models
    for key, model_sampling in comfy_host.sd15_model_samplings(comfy).items():
        for steps in (1, 2, 4, 8, 50):
            scheduler = diffusers.LCMScheduler()
            scheduler.set_timesteps(steps)
            got = comfy_host.comfy_timesteps(comfy, model_sampling, SCHEDULER, steps)
            assert got == [(t,) for t in scheduler.timesteps.tolist()], (key, steps)
    with pytest.raises(ValueError, match=r"scheduler lcm_diffusers: num_inference_steps \(60\).*int\(steps / d\)"):
        comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), SCHEDULER, 60)


def denoise_equals_strength(steps: int, denoise: float) -> bool:
    """Whether KSampler's denoise on lcm_diffusers runs diffusers' LCM timesteps at strength = denoise."""
    from lcm_core import LCMConfig, lcm_timesteps

    total = int(steps / denoise)
    if total > 50:
        return False
    scheduler = diffusers.LCMScheduler()
    try:
        scheduler.set_timesteps(steps, strength=denoise)
    except (ValueError, IndexError):
        return False
    return lcm_timesteps(LCMConfig(), total)[-steps:] == tuple(scheduler.timesteps.tolist())


DENOISE_TABLE_STEPS = range(1, 9)
DENOISE_TABLE_VALUES = (0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9)


def denoise_table_rows() -> list[str]:
    """docs/nodes.md's table: for each step count, the denoise values that equal diffusers' strength."""
    rows = []
    for steps in DENOISE_TABLE_STEPS:
        exact = [f"{d:g}" for d in DENOISE_TABLE_VALUES if denoise_equals_strength(steps, d)]
        rows.append(f"| {steps} | {', '.join(exact) or 'none'} |")
    return rows


def test_readme_denoise_table_is_what_the_code_computes():
    readme = [line.strip() for line in (REPO_ROOT / "docs" / "nodes.md").read_text(encoding="utf-8").splitlines()]
    start = readme.index("| KSampler steps | denoise values that run diffusers' LCM `strength` exactly |")
    assert readme[start + 2:start + 2 + len(DENOISE_TABLE_STEPS)] == denoise_table_rows()


@pytest.mark.parametrize(("steps", "denoise"), [(4, 0.5), (4, 0.8), (2, 0.5), (4, 0.75)])
def test_ksampler_denoise_against_lcm_img2img(comfy, models, steps, denoise):
    """Where the table in docs/nodes.md says exact, KSampler's denoise is the LCM img2img pipeline's strength;
    where it says not, the latents differ (4 steps at 0.75 run the last 4 of 5 LCM steps, 799, 599, 399,
    199, where diffusers runs 739, 559, 379, 199)."""
    unet, model = models
    scale = model.model.latent_format.scale_factor
    start = torch.randn(1, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(5))
    latent = ksampler(comfy, model, seed=12, steps=steps, denoise=denoise, latent={"samples": start / scale})
    pipe = _pipeline(diffusers.LatentConsistencyModelImg2ImgPipeline, _lcm_unet_without_guidance_embedding(unet))
    with torch.no_grad():
        reference = pipe(prompt_embeds=POSITIVE, image=start, strength=denoise, num_inference_steps=steps,
                         guidance_scale=8.5, generator=torch.Generator("cpu").manual_seed(12),
                         output_type="latent").images
    if denoise_equals_strength(steps, denoise):
        _close(latent, reference, scale)
    else:
        assert (latent["samples"] * scale - reference).abs().max() > 1e-2


# --------------------------------------------------------------------------- over HTTP


def combo_options(spec: list[Any]) -> list[str]:
    """A combo input's choices in /object_info: a list (classic nodes) or options (V3 nodes)."""
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


def test_object_info_lists_the_names(comfy_server: ComfyServer):
    info = comfy_server.object_info()
    for node in ("KSampler", "KSamplerAdvanced"):
        required = info[node]["input"]["required"]
        sampler_names, schedulers = combo_options(required["sampler_name"]), combo_options(required["scheduler"])
        assert set(SAMPLERS) <= set(sampler_names) and SCHEDULER in schedulers
    assert set(SAMPLERS) <= set(combo_options(info["KSamplerSelect"]["input"]["required"]["sampler_name"]))
    assert SCHEDULER in combo_options(info["BasicScheduler"]["input"]["required"]["scheduler"])
    lines = [line for line in comfy_server.log_text().splitlines() if "LCM Multistep: KSampler" in line]
    assert len(lines) == 1 and "now lists" in lines[0]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_ksampler_graph_runs_over_http(comfy_server: ComfyServer, tiny_checkpoint: str, sampler: str):
    graph: dict[str, Any] = txt2img_graph(tiny_checkpoint, steps=2, sampler_name=sampler, scheduler=SCHEDULER,
                                          width=64, height=64, filename_prefix=f"ksampler_{sampler}")
    (path,) = comfy_server.output_files(comfy_server.run(copy.deepcopy(graph), timeout=120))
    assert path.name.startswith(f"ksampler_{sampler}") and path.is_file()
