"""The deliberate differences of lcm_core.TCDScheduler from diffusers' TCDScheduler.

Each test shows what the reference does and what lcm_core does instead: where the reference
crashes late or goes silently wrong, a ValueError that names the input, its value and what works.
"""

from __future__ import annotations

import diffusers
import pytest
import torch

from lcm_core import TCDScheduler

SAMPLE = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("eta", [1.5, -0.1, float("nan"), 2])
def test_gamma_outside_unit_interval_is_a_value_error_not_an_assert(eta):
    reference = diffusers.TCDScheduler()
    reference.set_timesteps(4)
    with pytest.raises(AssertionError):  # gone under `python -O`: then s < 0 indexes alpha_bar from its end
        reference.step(SAMPLE, 999, SAMPLE, eta=eta)
    ours = TCDScheduler()
    ours.set_timesteps(4)
    with pytest.raises(ValueError, match=r"gamma \(diffusers' eta\) must lie in \[0, 1\]"):
        ours.step(SAMPLE, 999, SAMPLE, eta=eta)
    assert ours.step_index is None  # refused before any state changed
    with pytest.raises(ValueError, match="eta"):
        ours.step(SAMPLE, 999, SAMPLE, eta="0.3")


@pytest.mark.parametrize("original", [None, 50])
def test_strength_above_one_is_a_value_error_not_a_late_index_error(original):
    reference = diffusers.TCDScheduler()
    reference.set_timesteps(4, original_inference_steps=original, strength=1.5)  # accepted ...
    assert reference.timesteps.max() > 999  # ... with timesteps the model never saw
    with pytest.raises(IndexError):
        reference.step(SAMPLE, reference.timesteps[0], SAMPLE)
    with pytest.raises(ValueError, match=r"strength must lie in \(0, 1\]"):
        TCDScheduler().set_timesteps(4, original_inference_steps=original, strength=1.5)


def test_steps_above_original_inference_steps_names_both_numbers():
    with pytest.raises(ValueError) as reference_error:
        diffusers.TCDScheduler().set_timesteps(60)
    assert "original_steps x strength" in str(reference_error.value)  # it blames strength
    with pytest.raises(ValueError, match=r"num_inference_steps \(60\).*original_inference_steps \(50\)"):
        TCDScheduler().set_timesteps(60)
    with pytest.raises(ValueError, match=r"\(60\).*\(50\): the explicit original_inference_steps caps the steps"):
        TCDScheduler().set_timesteps(60, original_inference_steps=50)


@pytest.mark.parametrize("original", [None, 50])
def test_zero_steps_is_a_value_error_not_zero_division(original):
    with pytest.raises(ZeroDivisionError):
        diffusers.TCDScheduler().set_timesteps(0, original_inference_steps=original)
    with pytest.raises(ValueError, match="num_inference_steps must be a positive integer"):
        TCDScheduler().set_timesteps(0, original_inference_steps=original)


def test_empty_and_negative_custom_timesteps_are_refused():
    with pytest.raises(IndexError):
        diffusers.TCDScheduler().set_timesteps(timesteps=[])
    with pytest.raises(ValueError, match="at least one timestep"):
        TCDScheduler().set_timesteps(timesteps=[])
    reference = diffusers.TCDScheduler()
    reference.set_timesteps(timesteps=[999, 499, -1])  # accepted: t = -1 reads alpha_bar[999]
    assert reference.timesteps.tolist() == [999, 499, -1]
    with pytest.raises(ValueError, match="must not be negative"):
        TCDScheduler().set_timesteps(timesteps=[999, 499, -1])


def test_too_many_step_calls_is_a_clear_error():
    reference = diffusers.TCDScheduler()
    reference.set_timesteps(1)
    reference.step(SAMPLE, 999, SAMPLE)
    reference.step(SAMPLE, 999, SAMPLE)  # silently steps again
    ours = TCDScheduler()
    ours.set_timesteps(1)
    ours.step(SAMPLE, 999, SAMPLE)
    with pytest.raises(ValueError, match="set_timesteps again"):
        ours.step(SAMPLE, 999, SAMPLE)


def test_zero_snr_with_epsilon_is_refused_and_points_to_v_prediction():
    reference = diffusers.TCDScheduler(rescale_betas_zero_snr=True)
    reference.set_timesteps(4)
    assert torch.isnan(reference.step(SAMPLE, 999, SAMPLE).prev_sample).all()
    with pytest.raises(ValueError, match="v_prediction"):
        TCDScheduler(rescale_betas_zero_snr=True)


def test_custom_timesteps_with_strength_draw_no_noise_on_the_final_step():
    """The reference keeps the untruncated step count, so its final step draws noise (and multiplies it
    by sqrt(1 - a_0 / a_0) = 0): the same latents, one generator draw more than a whole run makes."""
    results = {}
    for name, scheduler in (("ours", TCDScheduler()), ("reference", diffusers.TCDScheduler())):
        scheduler.set_timesteps(timesteps=[999, 759, 499, 259], strength=0.5)
        assert scheduler.timesteps.tolist() == [499, 259]
        generator = torch.Generator().manual_seed(1)
        latents = SAMPLE
        for t in scheduler.timesteps:
            latents = scheduler.step(torch.sin(latents), t, latents, generator=generator).prev_sample
        results[name] = (latents, generator.get_state())
    (ours, ours_state), (reference, reference_state) = results["ours"], results["reference"]
    assert torch.equal(ours, reference)
    one_draw = torch.Generator().manual_seed(1)
    torch.randn(SAMPLE.shape, generator=one_draw)  # the first step's noise, the only one ours drew
    assert torch.equal(ours_state, one_draw.get_state())
    assert not torch.equal(reference_state, ours_state)
