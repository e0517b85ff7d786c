"""The deliberate differences from diffusers (docs/differences.md).

Each test shows what the reference does and what lcm_core does instead.
"""

from __future__ import annotations

import diffusers
import pytest
import torch

from lcm_core import LCMScheduler


@pytest.mark.parametrize("strength", [1.5, 0.0, -0.5, 2])
def test_strength_outside_unit_interval_is_a_value_error_naming_it(strength):
    with pytest.raises(ValueError, match=r"strength must lie in \(0, 1\]"):
        LCMScheduler().set_timesteps(4, strength=strength)
    with pytest.raises(ValueError, match="strength"):
        LCMScheduler().set_timesteps(timesteps=[999, 499], strength=strength)


def test_reference_fails_late_with_index_error_for_strength_above_one():
    reference = diffusers.LCMScheduler()
    reference.set_timesteps(4, strength=1.5)  # accepted ...
    assert reference.timesteps.max() > 999  # ... with timesteps the model never saw
    sample = torch.zeros(1, 4, 8, 8)
    with pytest.raises(IndexError):
        reference.step(sample, reference.timesteps[0], sample)


def test_custom_timesteps_with_strength_do_not_renoise_the_final_step():
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    results = {}
    for name, scheduler in (("ours", LCMScheduler()), ("reference", diffusers.LCMScheduler())):
        scheduler.set_timesteps(timesteps=[999, 759, 499, 259], strength=0.5)
        assert scheduler.timesteps.tolist() == [499, 259]
        generator = torch.Generator().manual_seed(1)
        latents = sample
        for t in scheduler.timesteps:
            latents, denoised = scheduler.step(sample, t, latents, generator=generator, return_dict=False)
        results[name] = (latents, denoised)
    ours_latents, ours_denoised = results["ours"]
    reference_latents, reference_denoised = results["reference"]
    assert torch.equal(ours_latents, ours_denoised)  # the final step returns the clean estimate
    assert not torch.allclose(reference_latents, reference_denoised)  # the reference adds noise to it
    torch.testing.assert_close(ours_denoised, reference_denoised, atol=1e-6, rtol=0)


def test_zero_snr_with_epsilon_is_refused_and_points_to_v_prediction():
    reference = diffusers.LCMScheduler(rescale_betas_zero_snr=True)
    reference.set_timesteps(4)
    sample = torch.randn(1, 4, 8, 8)
    assert torch.isnan(reference.step(sample, 999, sample).denoised).all()
    with pytest.raises(ValueError, match="v_prediction"):
        LCMScheduler(rescale_betas_zero_snr=True)
    with pytest.raises(ValueError, match="v_prediction"):
        LCMScheduler.from_config({"rescale_betas_zero_snr": True, "prediction_type": "epsilon"})


def test_steps_above_original_inference_steps_names_both_numbers():
    with pytest.raises(ValueError) as reference_error:
        diffusers.LCMScheduler().set_timesteps(60)
    assert "original_inference_steps" not in str(reference_error.value)  # it blames strength instead
    with pytest.raises(ValueError, match=r"num_inference_steps \(60\).*original_inference_steps \(50\)"):
        LCMScheduler().set_timesteps(60)
    with pytest.raises(ValueError, match=r"num_inference_steps \(30\).*original_inference_steps \(25\)"):
        LCMScheduler().set_timesteps(30, original_inference_steps=25)


def test_zero_steps_is_a_value_error_not_zero_division():
    with pytest.raises(ZeroDivisionError):
        diffusers.LCMScheduler().set_timesteps(0)
    with pytest.raises(ValueError, match="num_inference_steps must be a positive integer"):
        LCMScheduler().set_timesteps(0)


def test_too_many_step_calls_is_a_clear_error():
    scheduler = LCMScheduler()
    scheduler.set_timesteps(1)
    sample = torch.zeros(1, 4, 8, 8)
    scheduler.step(sample, 999, sample)
    with pytest.raises(ValueError, match="set_timesteps again"):
        scheduler.step(sample, 999, sample)
