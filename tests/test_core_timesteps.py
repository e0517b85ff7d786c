"""Timesteps of lcm_core against diffusers' LCMScheduler (the oracle, run in this process)."""

from __future__ import annotations

import logging

import diffusers
import pytest
import torch

import lcm_core
from lcm_core import LCMScheduler, StrengthMode

STEPS = range(1, 51)
ORIGINAL_STEPS = (10, 20, 25, 50, 100, 1000)
STRENGTHS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05)


def _reference_outcome(scheduler, **kwargs):
    try:
        scheduler.set_timesteps(**kwargs)
    except Exception as error:  # noqa: BLE001 - the exception type is what we compare
        return type(error)
    return scheduler.timesteps.tolist()


def _compare_grid(ours, reference, original):
    """steps 1..50 x STRENGTHS: the same timesteps wherever ``reference`` accepts, the same error type
    elsewhere; returns how many combinations it accepted."""
    accepted = 0
    for strength in STRENGTHS:
        for steps in STEPS:
            kwargs = dict(num_inference_steps=steps, original_inference_steps=original, strength=strength)
            expected = _reference_outcome(reference, **kwargs)
            if isinstance(expected, list):
                ours.set_timesteps(**kwargs)
                assert ours.timesteps.tolist() == expected, kwargs
                assert ours.timesteps.dtype == torch.int64 and ours.num_inference_steps == steps
                accepted += 1
            else:
                with pytest.raises(expected):
                    ours.set_timesteps(**kwargs)
    return accepted


@pytest.mark.parametrize("original", ORIGINAL_STEPS)
def test_timesteps_grid_equal_to_diffusers(original):
    """steps 1..50 x strength: the same timesteps wherever diffusers accepts, the same error type elsewhere."""
    accepted = _compare_grid(LCMScheduler(), diffusers.LCMScheduler(), original)
    # The grid has int(original * strength) points; steps beyond it are refused by both.
    assert accepted == sum(min(int(original * s), 50) for s in STRENGTHS)


def test_known_schedules():
    scheduler = LCMScheduler()
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [999, 759, 499, 259]
    scheduler.set_timesteps(4, strength=0.5)
    assert scheduler.timesteps.tolist() == [499, 379, 259, 139]
    scheduler.set_timesteps(4, strength=0.5, strength_mode="drop_leading")
    assert scheduler.timesteps.tolist() == [499, 259]


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 6, 8, 25, 50])
@pytest.mark.parametrize("strength", [1.0, 0.75, 0.5, 0.3, 0.05])
def test_drop_leading_equals_sd_img2img_get_timesteps(steps, strength):
    """strength_mode=drop_leading is the SD img2img pipelines' get_timesteps on the full schedule."""
    reference = diffusers.LCMScheduler()
    reference.set_timesteps(steps)
    full = reference.timesteps.tolist()
    init_timestep = min(int(steps * strength), steps)  # StableDiffusionImg2ImgPipeline.get_timesteps
    expected = full[max(steps - init_timestep, 0):]
    if not expected:
        with pytest.raises(ValueError):
            LCMScheduler().set_timesteps(steps, strength=strength, strength_mode=StrengthMode.DROP_LEADING)
        return
    ours = LCMScheduler()
    ours.set_timesteps(steps, strength=strength, strength_mode=StrengthMode.DROP_LEADING)
    assert ours.timesteps.tolist() == expected


CUSTOM_LISTS = [
    [999, 759, 499, 259],
    [999, 499],
    [999],
    [979, 739, 499, 259, 19],
    [999, 800, 600, 400, 200, 100, 50, 10],  # off the grid: warned, accepted
    [500, 300, 100],
    list(range(999, 0, -20)),
]


def _compare_custom(ours, reference, timesteps, original, strength):
    """A custom list: the reference's timesteps, or a ValueError where it makes an empty schedule."""
    reference.set_timesteps(timesteps=timesteps, original_inference_steps=original, strength=strength)
    expected = reference.timesteps.tolist()
    if not expected:  # strength * len < 1: diffusers makes an empty schedule
        with pytest.raises(ValueError):
            ours.set_timesteps(timesteps=timesteps, original_inference_steps=original, strength=strength)
        return
    ours.set_timesteps(timesteps=timesteps, original_inference_steps=original, strength=strength)
    assert ours.timesteps.tolist() == expected
    assert ours.custom_timesteps


@pytest.mark.parametrize("timesteps", CUSTOM_LISTS)
@pytest.mark.parametrize("strength", [1.0, 0.5])
@pytest.mark.parametrize("original", [50, 25])
def test_custom_timesteps_equal_to_diffusers(timesteps, strength, original):
    _compare_custom(LCMScheduler(), diffusers.LCMScheduler(), timesteps, original, strength)


@pytest.mark.parametrize("kwargs", [
    dict(timesteps=[259, 499, 759]),              # ascending
    dict(timesteps=[999, 999]),                   # not strictly descending
    dict(timesteps=[1000, 500]),                  # beyond num_train_timesteps
    dict(),                                       # neither steps nor timesteps
    dict(num_inference_steps=4, timesteps=[999, 499]),
    dict(num_inference_steps=51),                 # more than original_inference_steps
    dict(num_inference_steps=4, original_inference_steps=1001),
    dict(num_inference_steps=1001, original_inference_steps=1000),
    dict(num_inference_steps=10, strength=0.1),   # grid of 5 < 10 steps
])
def test_same_exception_type_as_diffusers(kwargs):
    expected = _reference_outcome(diffusers.LCMScheduler(), **kwargs)
    assert isinstance(expected, type) and issubclass(expected, Exception), f"diffusers accepted {kwargs}"
    with pytest.raises(expected):
        LCMScheduler().set_timesteps(**kwargs)


def test_constructor_errors_match_diffusers_types():
    for kwargs, error in [(dict(beta_schedule="cosine"), NotImplementedError)]:
        with pytest.raises(error):
            diffusers.LCMScheduler(**kwargs)
        with pytest.raises(error, match="beta_schedule"):
            LCMScheduler(**kwargs)
    with pytest.raises(TypeError):
        LCMScheduler(not_a_field=1)


def test_custom_timesteps_warn_like_reference(caplog):
    with caplog.at_level(logging.WARNING, logger="lcm_core"):
        LCMScheduler().set_timesteps(timesteps=[999, 800, 600])
    assert "not on the LCM distillation grid" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lcm_core"):
        LCMScheduler().set_timesteps(timesteps=[899, 499])
    assert "start at 899" in caplog.text


def test_first_step_index_rule():
    assert lcm_core.first_step_index([999, 759, 499, 259], 499) == 2
    assert lcm_core.first_step_index([999, 499, 499, 259], 499) == 2  # second occurrence, as diffusers
    with pytest.raises(IndexError):
        lcm_core.first_step_index([999, 499], 500)


def test_sigmas_map_back_to_the_same_timesteps():
    scheduler = LCMScheduler()
    table = lcm_core.sigmas_from_alphas_cumprod(scheduler.alphas_cumprod)
    scheduler.set_timesteps(8)
    sigmas = table[scheduler.timesteps]
    assert lcm_core.timesteps_from_sigmas(sigmas, table).tolist() == scheduler.timesteps.tolist()
    zero_snr = LCMScheduler(rescale_betas_zero_snr=True, prediction_type="v_prediction")
    assert torch.isfinite(lcm_core.sigmas_from_alphas_cumprod(zero_snr.alphas_cumprod)).all()
