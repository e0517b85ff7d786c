"""step(), whole loops, add_noise() and the config of lcm_core.TCDScheduler against diffusers' TCDScheduler.

TCD's step has no boundary condition to fold, so in float32 lcm_core performs the reference's
operations one for one with the same scalars: the outputs are asserted bit-identical. Inputs
are consistent with the forward process (see test_core_step).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging

import diffusers
import pytest
import torch

import lcm_core
from lcm_core import LCMConfig, TCDScheduler
from test_core_step import PREDICTIONS, _fake_unet, _step_inputs
from test_core_step import _pair as _scheduler_pair

GAMMAS = (0.0, 0.3, 0.7, 1.0)
OUTPUTS = ("prev_sample", "pred_noised_sample")


def _pair(**config):
    return _scheduler_pair("TCDScheduler", **config)


def _step_both(ours, reference, index, model_output, sample, gamma, seed=7):
    """Step ``index`` of the set schedule in both, with generators of the same seed."""
    t = reference.timesteps[index]
    ours.set_begin_index(index)
    ours._step_index = None
    reference._step_index = index
    got = ours.step(model_output, t, sample, eta=gamma, generator=torch.Generator().manual_seed(seed))
    want = reference.step(model_output, t, sample, eta=gamma, generator=torch.Generator().manual_seed(seed))
    return got, want


def _assert_every_step_identical(config, shape, gamma, steps=4, original=None, timesteps=None):
    ours, reference = _pair(**config)
    kwargs = dict(num_inference_steps=steps, original_inference_steps=original) if timesteps is None \
        else dict(timesteps=timesteps, original_inference_steps=original)
    ours.set_timesteps(**kwargs)
    reference.set_timesteps(**kwargs)
    for index, t in enumerate(reference.timesteps.tolist()):
        model_output, sample = _step_inputs(reference, t, shape, config.get("prediction_type", "epsilon"), seed=index)
        got, want = _step_both(ours, reference, index, model_output, sample, gamma)
        for name in OUTPUTS:
            a, b = getattr(got, name), getattr(want, name)
            assert a.dtype == b.dtype and a.shape == b.shape and torch.isfinite(a).all()
            assert torch.equal(a, b), f"{name} at t={t}, gamma={gamma}: {(a - b).abs().max().item()}"
        if index == len(reference.timesteps) - 1 or gamma == 0:
            assert torch.equal(got.prev_sample, got.pred_noised_sample)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize("shape", [(1, 4, 16, 16), (3, 4, 8, 8), (2, 16, 8, 8)], ids=("b1c4", "b3c4", "b2c16"))
def test_step_identical_to_diffusers(gamma, prediction_type, shape):
    _assert_every_step_identical(dict(prediction_type=prediction_type), shape, gamma)


@pytest.mark.parametrize("gamma", [0.05, 0.1, 0.25, 1 / 3, 0.45, 0.5, 0.6, 0.9, 0.95, 0.999])
@pytest.mark.parametrize("original", [None, 50])
def test_intermediate_timestep_rounds_as_the_reference(gamma, original):
    """s = floor((1 - gamma) t_prev) in float32: many gammas on the default and the dense grid (8 steps)."""
    _assert_every_step_identical(dict(), (1, 4, 8, 8), gamma, steps=8, original=original)


def test_intermediate_timestep_is_the_float32_floor():
    # (1 - 0.3) * 90 is 62.99999999999999 in float64, exactly 63 once rounded to float32.
    assert lcm_core.intermediate_timesteps([90, 0, 999], 0.3) == (63, 0, 699)
    assert int((1 - 0.3) * 90) == 62
    _assert_every_step_identical(dict(), (1, 4, 8, 8), 0.3, timesteps=[999, 500, 90])
    coefficients = lcm_core.tcd_step_coefficients(TCDScheduler().alphas_cumprod, [999, 500, 90], 0.3)
    assert [c.timestep_s for c in coefficients] == [350, 63, 0]
    assert [c.draws_noise for c in coefficients] == [True, True, False]


@pytest.mark.parametrize("beta_config", [
    dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02),
    dict(beta_schedule="squaredcos_cap_v2"),
    dict(trained_betas=torch.linspace(0.0001, 0.02, 1000).tolist()),
    dict(rescale_betas_zero_snr=True, prediction_type="v_prediction"),
], ids=("linear", "squaredcos_cap_v2", "trained_betas", "zero_snr_v"))
@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
def test_beta_schedules_identical_to_diffusers(beta_config, gamma):
    ours, reference = _pair(**beta_config)
    assert torch.equal(ours.alphas_cumprod, reference.alphas_cumprod)
    _assert_every_step_identical(beta_config, (1, 4, 8, 8), gamma, steps=8)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_half_precision_within_its_precision(dtype, prediction_type):
    """fp16 / bf16: the reference multiplies by float32 0-dim tensors, lcm_core by Python floats, so the
    two round differently. Both are held against exact maths on the same (half) inputs and noise: the
    reference's float32 x_s, re-noised with the half noise upcast. Ours is no further from it than the
    reference (+25%) or a unit or two in the last place of the result."""
    eps = torch.finfo(dtype).eps
    ours, reference = _pair(prediction_type=prediction_type)
    exact = diffusers.TCDScheduler(prediction_type=prediction_type)
    for scheduler in (ours, reference, exact):
        scheduler.set_timesteps(4)
    steps = lcm_core.tcd_step_coefficients(exact.alphas_cumprod, exact.timesteps.tolist(), 0.3)
    for index, t in enumerate(reference.timesteps.tolist()):
        model_output, sample = _step_inputs(reference, t, (2, 4, 16, 16), prediction_type, seed=index, dtype=dtype)
        got, want = _step_both(ours, reference, index, model_output, sample, 0.3)
        exact._step_index = index
        x_s = exact.step(model_output.float(), t, sample.float(), eta=0.3).pred_noised_sample
        noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(7), dtype=dtype).float()
        c = steps[index]
        truth = {"pred_noised_sample": x_s,
                 "prev_sample": c.renoise_signal * x_s + c.renoise_noise * noise if c.draws_noise else x_s}
        for name in OUTPUTS:
            a, b = getattr(got, name), getattr(want, name)
            assert a.dtype == b.dtype == dtype
            magnitude = truth[name].abs().max().item()
            our_error = (a.float() - truth[name]).abs().max().item()
            reference_error = (b.float() - truth[name]).abs().max().item()
            assert our_error <= max(1.25 * reference_error, 2 * eps * magnitude), (name, t, our_error,
                                                                                   reference_error)


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("steps,strength,original", [(1, 1.0, None), (2, 1.0, None), (4, 1.0, None),
                                                     (8, 1.0, None), (4, 0.5, None), (4, 1.0, 50), (6, 0.5, 25)])
def test_whole_loop_same_seed_same_latents(prediction_type, gamma, steps, strength, original):
    """A full loop, the reference's way (iterate timesteps, one generator): the same latents and the
    same number of generator draws (one per step but the last, none at gamma 0)."""
    results = []
    for scheduler in _pair(prediction_type=prediction_type):
        scheduler.set_timesteps(steps, original_inference_steps=original, strength=strength)
        generator = torch.Generator("cpu").manual_seed(1234)
        shape = (2, 4, 16, 16)
        x0_target = torch.randn(shape, generator=torch.Generator().manual_seed(5)).clamp(-2, 2)
        model = _fake_unet(prediction_type, scheduler.alphas_cumprod, x0_target)
        latents = torch.randn(shape, generator=generator)
        after_initial = generator.get_state()
        for t in scheduler.timesteps:
            latents, x_s = scheduler.step(model(latents, t), t, latents, eta=gamma, generator=generator,
                                          return_dict=False)
        results.append((latents, x_s, generator.get_state()))
    (ours, ours_x_s, ours_state), (reference, _, reference_state) = results
    assert torch.equal(ours, reference)
    assert torch.equal(ours, ours_x_s)  # the last step returns x_s at s = 0
    assert torch.equal(ours_state, reference_state)  # the generator was drawn exactly as often
    assert torch.equal(ours_state, after_initial) == (gamma == 0 or steps == 1)


def test_step_default_eta_is_the_references():
    """0.3, the TCD authors' gamma (the step index, generator and forward-process rules TCD shares with
    LCM are tested for both in test_core_step)."""
    defaults = [inspect.signature(scheduler.step).parameters["eta"].default for scheduler in _pair()]
    assert defaults == [lcm_core.DEFAULT_GAMMA] * 2 == [0.3] * 2


def test_output_forms():
    scheduler = TCDScheduler()
    scheduler.set_timesteps(2)
    sample = torch.randn(1, 4, 8, 8)
    output = scheduler.step(sample, 999, sample, generator=torch.Generator().manual_seed(0))
    assert isinstance(output, lcm_core.TCDSchedulerOutput)
    assert output[0] is output.prev_sample and output[1] is output.pred_noised_sample
    assert not torch.equal(output.prev_sample, output.pred_noised_sample)  # re-noised at gamma 0.3
    prev, x_s = scheduler.step(sample, 499, sample, return_dict=False)
    assert prev is x_s
    assert scheduler.scale_model_input(sample, 999) is sample
    assert scheduler.init_noise_sigma == 1.0 and scheduler.order == 1 and len(scheduler) == 1000
    assert [scheduler.previous_timestep(t) for t in (999, 499)] == [499, -1]


# -- configuration ------------------------------------------------------------------------


def test_constructor_equals_the_reference_signature_and_lcms():
    def defaults(cls):
        return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items() if name != "self"}

    ours = {field.name: field.default for field in dataclasses.fields(LCMConfig)}
    assert ours == defaults(diffusers.TCDScheduler) == defaults(diffusers.LCMScheduler)
    assert TCDScheduler().config == LCMConfig()
    with pytest.raises(TypeError, match="TCDScheduler"):
        TCDScheduler(eta=0.3)


def test_json_round_trip_with_diffusers(tmp_path):
    reference = diffusers.TCDScheduler(original_inference_steps=25, prediction_type="v_prediction",
                                       beta_schedule="linear", beta_start=0.0001, beta_end=0.02)
    reference.save_config(tmp_path / "ref")
    ours = TCDScheduler.from_pretrained(tmp_path / "ref")
    assert ours.config.original_inference_steps == 25 and ours.config.prediction_type == "v_prediction"
    path = ours.save_pretrained(tmp_path / "ours")
    written = json.loads(open(path).read())
    assert written["_class_name"] == "TCDScheduler"
    back = diffusers.TCDScheduler.from_pretrained(tmp_path / "ours")
    assert {k: back.config[k] for k in ours.config} == dict(ours.config)
    assert "TCDScheduler" in repr(ours)
    # Any diffusers scheduler's config works, as TCDScheduler.from_config(pipe.scheduler.config) does there.
    from_lcm = TCDScheduler.from_config(diffusers.LCMScheduler(timestep_scaling=5.0).config)
    assert isinstance(from_lcm, TCDScheduler) and from_lcm.config.timestep_scaling == 5.0


def test_clip_and_thresholding_are_ignored_as_in_the_reference_with_a_warning(caplog):
    config = dict(clip_sample=True, clip_sample_range=0.5, thresholding=True)
    with caplog.at_level(logging.WARNING, logger="lcm_core"):
        TCDScheduler(**config)
    assert "clip_sample and thresholding have no effect" in caplog.text
    _assert_every_step_identical(config, (1, 4, 8, 8), 0.3)


# -- the step in ComfyUI's k-space ---------------------------------------------------------


@pytest.mark.parametrize("gamma", GAMMAS)
def test_k_space_step_is_the_step_in_diffusers_variables(gamma):
    """x_k = x0 + sigma eps, x_t = x_k / sqrt(1 + sigma^2): the k-space step (a lerp to x_s_k, re-noise by
    sqrt(sigma_next^2 - sigma_s^2), the final x_s_k / sqrt(1 + sigma_0^2)) is TCD's step in diffusers'
    variables, step by step with the same x0, eps and noise (float64 maths, so the bound is tight)."""
    scheduler = TCDScheduler()
    scheduler.set_timesteps(4)
    alpha_bar = scheduler.alphas_cumprod.double()
    table = lcm_core.sigmas_from_alphas_cumprod(scheduler.alphas_cumprod).double()
    sigmas = table[scheduler.timesteps].tolist() + [0.0]
    generator = torch.Generator().manual_seed(0)
    for step, c in zip(lcm_core.k_space_steps(sigmas, table, gamma),
                       lcm_core.tcd_step_coefficients(alpha_bar, scheduler.timesteps.tolist(), gamma)):
        assert (step.timestep_prev, step.timestep_s, step.draws_noise) == (c.timestep_prev, c.timestep_s,
                                                                          c.draws_noise)
        x0, eps, z = (torch.randn(2, 4, 8, 8, generator=generator, dtype=torch.float64) for _ in range(3))
        x_k = x0 + step.sigma * eps
        x_s = c.sqrt_alpha_s * x0 + c.sqrt_beta_s * eps  # diffusers' pred_noised_sample
        x_s_k = lcm_core.k_space_trajectory_sample(x0, x_k, step)
        torch.testing.assert_close(lcm_core.sample_from_k_space(x_s_k, step.sigma_s), x_s, atol=1e-6, rtol=1e-6)
        if step.draws_noise:
            x_next = c.renoise_signal * x_s + c.renoise_noise * z
            x_next_k = lcm_core.renoise_k_space_(z.clone(), x_s_k, step.renoise_scale)
            torch.testing.assert_close(lcm_core.sample_from_k_space(x_next_k, step.sigma_next), x_next,
                                       atol=1e-6, rtol=1e-6)
        assert step.final == (step.sigma_next == 0)
