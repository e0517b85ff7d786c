"""LCMPreset: every model family's settings against diffusers run with the model card's own settings.

Each preset (nodes/presets.py) names its source and quotes it; here each one's timesteps are
diffusers' for the card's call (its scheduler class, config overrides, num_inference_steps or
timesteps=[...]), its sampler is the card's (LCMSampler, or TCDSampler at the card's eta), two
presets run seed-exact against the pipeline, and the README's preset table lists each one.
"""

from __future__ import annotations

import logging
import re

import diffusers
import pytest
import torch

from comfy_host import REPO_ROOT
from test_nodes_parity import LATENT, NEGATIVE, POSITIVE, diffusers_txt2img

README = REPO_ROOT / "README.md"
PRESETS_DOC = REPO_ROOT / "docs" / "presets.md"


@pytest.fixture(scope="module")
def presets(pack):
    return pack.nodes.presets


def card_scheduler(preset):
    """diffusers' scheduler as the card builds it (original_inference_steps left at the card's default)."""
    cls = diffusers.TCDScheduler if preset.scheduler == "tcd" else diffusers.LCMScheduler
    overrides = {k: v for k, v in preset.config.items() if k != "original_inference_steps"}
    return cls(**overrides)


def card_timesteps(preset, steps=None):
    scheduler = card_scheduler(preset)
    if preset.timesteps:
        scheduler.set_timesteps(timesteps=list(preset.timesteps))
    else:
        scheduler.set_timesteps(steps or preset.steps)
    return scheduler.timesteps.tolist()


def card_presets(presets):
    """The presets that run diffusers' LCMScheduler or TCDScheduler (the 2023-24 cards)."""
    return [preset for preset in presets.PRESETS if preset.scheduler in ("lcm", "tcd")]


def test_every_preset_is_sourced(presets):
    assert len(presets.PRESETS) == len(presets.PRESETS_BY_NAME) >= 20
    for preset in presets.PRESETS:
        assert preset.source.startswith(("huggingface.co/", "github.com/")) and preset.quote, preset.name
        if preset.source.startswith("github.com/"):  # repo@commit path
            assert re.match(r"github\.com/[\w.-]+/[\w.-]+@[0-9a-f]{40} \S", preset.source), preset.source
        assert preset.scheduler in ("lcm", "tcd", "flow_lcm", "euler", "ddim")
        assert (preset.gamma is not None) == (preset.scheduler == "tcd")
        assert preset.is_flow == (preset.scheduler == "flow_lcm" or bool(preset.sigmas)), preset.name
        assert preset.cfg >= 1.0


def test_each_preset_gives_the_cards_timesteps_and_sampler(nodes, presets, caplog):
    import lcm_core

    node = nodes.LCMPreset()
    for preset in card_presets(presets):
        with caplog.at_level(logging.WARNING):
            caplog.clear()
            sampler, sigmas, config, cfg, about = node.get_preset(preset.name, 0, 1.0)
            warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        expected = card_timesteps(preset)
        table = lcm_core.sigmas_from_alphas_cumprod(lcm_core.alphas_cumprod(card_scheduler(preset).config))
        torch.testing.assert_close(sigmas, torch.cat([table[expected], torch.zeros(1)]), atol=0, rtol=0,
                                   msg=preset.name)
        for key, value in preset.config.items():
            assert config[key] == value, (preset.name, key)
        assert sampler.extra_options.get("gamma") == preset.gamma, preset.name
        assert sampler.sampler_function.__name__ == ("sample_tcd" if preset.scheduler == "tcd"
                                                     else "sample_lcm_multistep")
        assert cfg == preset.cfg and preset.source in about and preset.name in about
        # The card's own timesteps are not "off the grid" for its preset.
        # The card's timesteps are on the preset's grid. A schedule that starts below 999 keeps the
        # reference's warning: ComfyUI then scales the initial noise by that sigma (README, presets).
        starts_low = bool(preset.timesteps) and preset.timesteps[0] < 999
        assert [r.getMessage() for r in warnings] == (
            [f"custom timesteps start at {preset.timesteps[0]}, not at 999: the first step will not start from "
             "pure noise"] if starts_low else []), preset.name


def test_steps_and_strength(nodes, presets):
    node = nodes.LCMPreset()
    _, sigmas, *_ = node.get_preset("LCM-LoRA SD1.5", 8, 1.0)
    assert len(sigmas) == 9
    tcd = presets.PRESETS_BY_NAME["Hyper-SD 1-step unified LoRA (TCD)"]
    _, sigmas, *_ = node.get_preset(tcd.name, 4, 1.0)
    assert len(sigmas) == 5
    _, half, *_ = node.get_preset("LCM-LoRA SD1.5", 0, 0.5)
    full, _ = nodes.LCMTimesteps().get_sigmas(node.get_preset("LCM-LoRA SD1.5", 0, 1.0)[2], 4, 0.5)
    torch.testing.assert_close(half, full, atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"LCMPreset steps=3: the preset 'DMD2 SDXL 4-step' runs its source's "
                                         r"timesteps 999, 749, 499, 249 \(4 steps\); set steps to 0 or 4"):
        node.get_preset("DMD2 SDXL 4-step", 3, 1.0)
    _, sigmas, *_ = node.get_preset("DMD2 SDXL 4-step", 4, 1.0)
    assert len(sigmas) == 5


def test_model_decides_its_schedule(comfy, nodes, models, caplog):
    """AnimateLCM's card sets beta_schedule linear; a connected model's own schedule wins, with one line."""
    _, model = models
    with caplog.at_level(logging.INFO, logger="lcm_multistep.nodes.config_node"):
        _, sigmas, config, *_ = nodes.LCMPreset().get_preset("AnimateLCM", 0, 1.0, model=model)
    assert config.beta_schedule == "scaled_linear"
    assert "LCMPreset: taking from the model beta_schedule='scaled_linear' (was 'linear')" in caplog.text
    model_sampling = model.get_model_object("model_sampling")
    assert model_sampling.timestep(sigmas[:-1]).tolist() == card_timesteps(
        nodes.presets.PRESETS_BY_NAME["AnimateLCM"])


def sample(comfy, model, outputs, seed):
    sampler, sigmas, _, cfg, _ = outputs
    latent = {"samples": torch.zeros(1, 4, LATENT, LATENT)}
    out = comfy.nodes_custom_sampler.SamplerCustom.execute(
        model=model, add_noise=True, noise_seed=seed, cfg=cfg, positive=[[POSITIVE, {}]],
        negative=[[NEGATIVE, {}]], sampler=sampler, sigmas=sigmas, latent_image=latent)
    return out.args[0]["samples"] * model.model.latent_format.scale_factor


@pytest.mark.parametrize("name", ["DMD2 SDXL 4-step", "Hyper-SD 1-step unified LoRA (TCD)", "TCD-LoRA SD1.5 / SDXL"])
def test_preset_through_sampler_custom_is_seed_exact_with_the_cards_pipeline_call(comfy, nodes, models, name):
    unet, model = models
    preset = nodes.presets.PRESETS_BY_NAME[name]
    got = sample(comfy, model, nodes.LCMPreset().get_preset(name, 0, 1.0), seed=7)
    call = {"eta": preset.gamma} if preset.gamma is not None else {}
    if preset.timesteps:
        call["timesteps"] = list(preset.timesteps)
    reference = diffusers_txt2img(unet, seed=7, cfg=1.0, steps=preset.steps, scheduler=card_scheduler(preset),
                                  **call)
    atol = 1e-4 * max(1.0, reference.abs().max().item())
    torch.testing.assert_close(got, reference, atol=atol, rtol=0)


def test_a_card_schedule_that_starts_low_is_not_diffusers_txt2img_as_the_readme_says(comfy, nodes, models):
    """DMD2's 1-step card starts at t = 399: diffusers gives the UNet unit-variance noise there,
    ComfyUI noise times sigma(399) / sqrt(1 + sigma^2) = sqrt(1 - alpha_bar_399), 0.76. The preset says so."""
    unet, model = models
    preset = nodes.presets.PRESETS_BY_NAME["DMD2 SDXL 1-step"]
    outputs = nodes.LCMPreset().get_preset(preset.name, 0, 1.0)
    got = sample(comfy, model, outputs, seed=7)
    reference = diffusers_txt2img(unet, seed=7, cfg=1.0, steps=1, scheduler=card_scheduler(preset),
                                  timesteps=list(preset.timesteps))
    assert (got - reference).abs().max() > 1e-2 * reference.abs().max()
    assert "not diffusers' to the seed" in outputs[4]


def test_docs_list_every_preset_with_its_source(presets):
    """docs/presets.md has a row per preset with its sampler, cfg and source; the README names each one
    and links the table."""
    rows = [line for line in PRESETS_DOC.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
    readme = " ".join(README.read_text(encoding="utf-8").split())  # names may wrap across lines
    assert "docs/presets.md" in readme
    for preset in presets.PRESETS:
        (row,) = [r for r in rows if r.startswith(f"| {preset.name} |")]
        assert preset.source in row, preset.name
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1] == preset.scheduler, (preset.name, cells)
        assert re.search(rf"\b{preset.cfg:g}\b", cells[4]), (preset.name, cells)
        assert preset.name in readme, preset.name
