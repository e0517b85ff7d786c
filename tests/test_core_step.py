"""step(), add_noise(), get_velocity() of lcm_core against diffusers' LCMScheduler in this process.

Inputs are consistent with the forward process (x_t = sqrt(a) x0 + sqrt(1 - a) eps and
a model output near its target), so x0 stays at the scale real models give. lcm_core
reproduces the reference's float32 operations bit for bit except c_out * x0, which it
folds into one division: identical where c_out rounds to 1.0 (t >= 205), within one
float32 rounding of x0 below that. Hence the 1e-6 bound.
"""

from __future__ import annotations

import itertools

import diffusers
import pytest
import torch

import lcm_core
from lcm_core import LCMScheduler, TCDScheduler

ATOL = 1e-6


def _target(prediction_type, x0, eps, alpha_bar):
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "sample":
        return x0
    return alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0


def _step_inputs(scheduler, t, shape, prediction_type, seed, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.randn(shape, generator=generator).clamp(-3, 3)
    eps = torch.randn(shape, generator=generator)
    alpha_bar = scheduler.alphas_cumprod[t]
    sample = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
    model_output = _target(prediction_type, x0, eps, alpha_bar) + 0.1 * torch.randn(shape, generator=generator)
    return model_output.to(dtype), sample.to(dtype)


def _pair(name="LCMScheduler", **config):
    """(lcm_core's, diffusers') scheduler of class ``name``."""
    return getattr(lcm_core, name)(**config), getattr(diffusers, name)(**config)


# What LCMScheduler and TCDScheduler share (step index, noise draws, forward process) is tested for both.
SCHEDULERS = ("LCMScheduler", "TCDScheduler")


def _compare_every_step(config, shape, steps=4, dtype=torch.float32, atol=ATOL, rtol=0.0):
    """Each step of the schedule on fresh inputs: prev_sample and denoised agree."""
    ours, reference = _pair(**config)
    ours.set_timesteps(steps)
    reference.set_timesteps(steps)
    worst = 0.0
    for index, t in enumerate(reference.timesteps):
        model_output, sample = _step_inputs(reference, t, shape, config.get("prediction_type", "epsilon"),
                                            seed=index, dtype=dtype)
        ours.set_begin_index(index)
        ours._step_index = None
        reference._step_index = index
        got = ours.step(model_output, t, sample, generator=torch.Generator().manual_seed(7))
        want = reference.step(model_output, t, sample, generator=torch.Generator().manual_seed(7))
        for name in ("prev_sample", "denoised"):
            a, b = getattr(got, name), getattr(want, name)
            assert a.dtype == b.dtype and a.shape == b.shape
            assert torch.isfinite(a).all()
            torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=rtol, msg=f"{name} at t={int(t)}")
            worst = max(worst, (a.float() - b.float()).abs().max().item())
    return worst


PREDICTIONS = ("epsilon", "sample", "v_prediction")
CLIPPING = (dict(), dict(clip_sample=True, clip_sample_range=1.5), dict(thresholding=True, sample_max_value=2.0))


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize("clipping", CLIPPING, ids=("plain", "clip", "threshold"))
@pytest.mark.parametrize("shape", [(1, 4, 16, 16), (3, 4, 8, 8), (1, 16, 8, 8), (3, 16, 8, 8)],
                         ids=("b1c4", "b3c4", "b1c16", "b3c16"))
def test_step_matches_diffusers(prediction_type, clipping, shape):
    _compare_every_step(dict(prediction_type=prediction_type, **clipping), shape)


@pytest.mark.parametrize("beta_config", [
    dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02),
    dict(beta_schedule="scaled_linear"),
    dict(beta_schedule="squaredcos_cap_v2"),
    dict(trained_betas=torch.linspace(0.0001, 0.02, 1000).tolist()),
], ids=("linear", "scaled_linear", "squaredcos_cap_v2", "trained_betas"))
@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_beta_schedules_match_diffusers(beta_config, prediction_type):
    ours, reference = _pair(**beta_config)
    assert torch.equal(ours.betas, reference.betas)
    assert torch.equal(ours.alphas_cumprod, reference.alphas_cumprod)
    _compare_every_step(dict(prediction_type=prediction_type, **beta_config), (1, 4, 8, 8), steps=8)


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("clipping", CLIPPING, ids=("plain", "clip", "threshold"))
def test_zero_snr_v_prediction_matches_diffusers(beta_schedule, clipping):
    config = dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", beta_schedule=beta_schedule, **clipping)
    ours, reference = _pair(**config)
    assert torch.equal(ours.alphas_cumprod, reference.alphas_cumprod)
    assert ours.alphas_cumprod[-1] == 0
    _compare_every_step(config, (2, 4, 8, 8))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_half_precision_within_its_precision(dtype, prediction_type):
    """fp16 / bf16: both implementations round the same exact result; ours is no further from it.

    The yardstick is the reference's own float32 step on the same (half) inputs: our
    error against it stays within the reference's error (+25%) or a unit or two in the
    last place of the result.
    """
    eps = torch.finfo(dtype).eps
    ours, reference, exact = LCMScheduler(), diffusers.LCMScheduler(), diffusers.LCMScheduler()
    for scheduler in (ours, reference, exact):
        scheduler.set_timesteps(4)
    for index, t in enumerate(reference.timesteps.tolist()):
        model_output, sample = _step_inputs(reference, t, (2, 4, 16, 16), prediction_type, seed=index, dtype=dtype)
        ours.set_begin_index(index)
        ours._step_index = None
        reference._step_index = exact._step_index = index
        got = ours.step(model_output, t, sample, generator=torch.Generator().manual_seed(7))
        want = reference.step(model_output, t, sample, generator=torch.Generator().manual_seed(7))
        truth = exact.step(model_output.float(), t, sample.float(), generator=torch.Generator().manual_seed(7))
        assert got.prev_sample.dtype == got.denoised.dtype == dtype
        magnitude = truth.denoised.abs().max().item()
        our_error = (got.denoised.float() - truth.denoised).abs().max().item()
        reference_error = (want.denoised.float() - truth.denoised).abs().max().item()
        assert our_error <= max(1.25 * reference_error, eps * magnitude), (t, our_error, reference_error)
        if index < 3:  # re-noised with the same half-precision noise: compare against exact maths on it
            noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(7), dtype=dtype).float()
            a_prev = exact.alphas_cumprod[exact.timesteps[index + 1]]
            exact_prev = a_prev.sqrt() * truth.denoised + (1 - a_prev).sqrt() * noise
            our_error = (got.prev_sample.float() - exact_prev).abs().max().item()
            reference_error = (want.prev_sample.float() - exact_prev).abs().max().item()
            magnitude = exact_prev.abs().max().item()
            assert our_error <= max(1.25 * reference_error, 2 * eps * magnitude), (t, our_error, reference_error)


def _fake_unet(prediction_type, alphas_cumprod, x0_target):
    """A deterministic 'model' that predicts its target for a fixed clean image, slightly wrong."""
    def model(sample, t):
        a = alphas_cumprod[t]
        eps = (sample - a.sqrt() * x0_target) / (1 - a).sqrt()
        wrong_x0 = x0_target + 0.05 * torch.sin(sample)
        return _target(prediction_type, wrong_x0, eps, a)
    return model


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize("steps,strength", [(1, 1.0), (2, 1.0), (4, 1.0), (8, 1.0), (4, 0.5)])
@pytest.mark.parametrize("batch", [1, 3])
def test_whole_loop_same_seed_same_latents(prediction_type, steps, strength, batch):
    """A full sampling loop, the reference's way (iterate timesteps, one generator): same latents."""
    config = dict(prediction_type=prediction_type)
    results = []
    for scheduler in _pair(**config):
        scheduler.set_timesteps(steps, strength=strength)
        generator = torch.Generator("cpu").manual_seed(1234)
        shape = (batch, 4, 16, 16)
        x0_target = torch.randn(shape, generator=torch.Generator().manual_seed(5)).clamp(-2, 2)
        model = _fake_unet(prediction_type, scheduler.alphas_cumprod, x0_target)
        latents = torch.randn(shape, generator=generator)
        for t in scheduler.timesteps:
            latents, denoised = scheduler.step(model(latents, t), t, latents, generator=generator, return_dict=False)
        results.append((latents, denoised, generator.initial_seed(), torch.randn(1, generator=generator)))
    (ours, ours_denoised, _, ours_next), (ref, ref_denoised, _, ref_next) = results
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)
    assert torch.equal(ours, ours_denoised)  # the last step returns denoised
    assert torch.equal(ours_next, ref_next)  # the generator was drawn exactly as often


@pytest.mark.parametrize("name", SCHEDULERS)
def test_generator_list_and_device_rules(name):
    ours, reference = _pair(name)
    for scheduler in (ours, reference):
        scheduler.set_timesteps(4)
    shape = (3, 4, 8, 8)
    model_output, sample = _step_inputs(reference, 999, shape, "epsilon", seed=0)
    got = ours.step(model_output, 999, sample, generator=[torch.Generator().manual_seed(s) for s in range(3)])
    want = reference.step(model_output, 999, sample, generator=[torch.Generator().manual_seed(s) for s in range(3)])
    torch.testing.assert_close(got.prev_sample, want.prev_sample, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="generators"):
        ours.step(model_output, 759, sample, generator=[torch.Generator()] * 2)


@pytest.mark.parametrize("scheduler_class,step_options", [
    (LCMScheduler, {}), (TCDScheduler, {"eta": 0.3}), (TCDScheduler, {"eta": 0.0}), (TCDScheduler, {"eta": 1.0}),
], ids=("lcm", "tcd-0.3", "tcd-0", "tcd-1"))
def test_step_without_sync_runs_on_meta_device(scheduler_class, step_options):
    """After set_timesteps, a whole loop runs on the meta device: no tensor value is ever read.

    Any .item(), .tolist(), .cpu(), nonzero or Python branch on a tensor raises on meta.
    """
    for config in (dict(), dict(prediction_type="v_prediction"), dict(prediction_type="sample"),
                   dict(clip_sample=True)):
        scheduler = scheduler_class(**config)
        scheduler.set_timesteps(4, device="meta")
        assert scheduler.timesteps.device.type == "meta"
        generator = torch.Generator("cpu").manual_seed(0)
        latents = torch.empty(2, 4, 16, 16, device="meta")
        for t in scheduler.timesteps:
            out = scheduler.step(torch.empty_like(latents), t, latents, generator=generator, **step_options)
            latents = out.prev_sample
            assert latents.device.type == "meta" and out[1].device.type == "meta"
        assert scheduler.step_index == 4


@pytest.mark.parametrize("name", SCHEDULERS)
def test_step_index_rules(name):
    ours, reference = _pair(name)
    for scheduler in (ours, reference):
        scheduler.set_timesteps(4)
    sample = torch.randn(1, 4, 8, 8)
    # Starting mid-schedule by value, as an int and as a tensor.
    for start in (499, torch.tensor(499)):
        ours.set_timesteps(4)
        ours.step(sample, start, sample)
        assert ours.step_index == 3
    reference.step(sample, torch.tensor(499), sample)
    assert reference.step_index == 3
    # A begin index set by a pipeline wins over the value.
    ours.set_timesteps(4)
    ours.set_begin_index(1)
    ours.step(sample, 999, sample)
    assert ours.step_index == 2 and ours.begin_index == 1
    # Not in the schedule: IndexError, like the reference.
    ours.set_timesteps(4)
    with pytest.raises(IndexError):
        ours.step(sample, 500, sample)
    with pytest.raises(IndexError):
        reference._step_index = None
        reference.step(sample, torch.tensor(500), sample)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_step_before_set_timesteps_is_the_same_error(name):
    ours, reference = _pair(name)
    sample = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError):
        reference.step(sample, 999, sample)
    with pytest.raises(ValueError, match="set_timesteps"):
        ours.step(sample, 999, sample)


def test_output_forms():
    scheduler = LCMScheduler()
    scheduler.set_timesteps(2)
    sample = torch.randn(1, 4, 8, 8)
    output = scheduler.step(sample, 999, sample, generator=torch.Generator().manual_seed(0))
    assert output[0] is output.prev_sample and output.denoised is not None
    prev, denoised = scheduler.step(sample, 499, sample, return_dict=False)
    assert torch.equal(prev, denoised)
    assert scheduler.scale_model_input(sample, 999) is sample
    assert scheduler.init_noise_sigma == 1.0 and scheduler.order == 1 and len(scheduler) == 1000


@pytest.mark.parametrize("name", SCHEDULERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_add_noise_and_velocity_match_diffusers(dtype, name):
    ours, reference = _pair(name)
    generator = torch.Generator().manual_seed(3)
    x0 = torch.randn(3, 4, 8, 8, generator=generator).to(dtype)
    noise = torch.randn(3, 4, 8, 8, generator=generator).to(dtype)
    timesteps = torch.tensor([999, 499, 0])
    for name in ("add_noise", "get_velocity"):
        got = getattr(ours, name)(x0, noise, timesteps)
        want = getattr(reference, name)(x0, noise, timesteps)
        assert got.dtype == want.dtype == dtype
        assert torch.equal(got, want), name


def test_previous_timestep():
    scheduler = LCMScheduler()
    scheduler.set_timesteps(4)
    assert [scheduler.previous_timestep(t) for t in (999, 759, 259)] == [759, 499, -1]


@pytest.mark.parametrize("steps,set_alpha_to_one,timestep_scaling",
                         list(itertools.product([2, 6], [True, False], [10.0, 1.5])))
def test_other_config_fields_match(steps, set_alpha_to_one, timestep_scaling):
    _compare_every_step(dict(set_alpha_to_one=set_alpha_to_one, timestep_scaling=timestep_scaling), (1, 4, 8, 8),
                        steps=steps)
