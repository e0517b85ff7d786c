"""lcm_core.FlowMatchLCMScheduler against diffusers' FlowMatchLCMScheduler, run in the same process.

Schedules (sigmas and timesteps) are compared bit for bit over the whole space of valid
configs and set_timesteps arguments; steps bit for bit over whole loops with one generator,
in float32 and bfloat16, scale-wise (SwD) included. Where diffusers returns a schedule with
NaN or infinite values, lcm_core refuses with a ValueError instead: those cases are found by
running diffusers, never listed by hand.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers import FlowMatchLCMScheduler as DiffusersFlowMatchLCM

import lcm_core

SPACINGS = ({}, {"use_karras_sigmas": True}, {"use_exponential_sigmas": True}, {"use_beta_sigmas": True})


def _configs():
    for shift, dynamic, terminal, spacing, invert, shift_type in itertools.product(
            (1.0, 3.0, 5.0), (False, True), (None, 0.02), SPACINGS, (False, True), ("exponential", "linear")):
        yield {"shift": shift, "use_dynamic_shifting": dynamic, "shift_terminal": terminal, "invert_sigmas": invert,
               "time_shift_type": shift_type, **spacing}


def _arguments(steps: int, dynamic: bool):
    mu = {"mu": 0.8} if dynamic else {}
    yield {"num_inference_steps": steps, **mu}
    yield {"sigmas": list(np.linspace(1.0, 1 / steps, steps)), **mu}  # what the Flux / Qwen-Image pipelines pass
    yield {"timesteps": [1000.0 * (steps - i) / steps for i in range(steps)], **mu}
    yield {"num_inference_steps": steps, "sigmas": [0.9 - 0.8 * i / steps for i in range(steps)], **mu}


def _set(scheduler, arguments):
    """set_timesteps' result: the scheduler, or the exception it raised."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # diffusers' numpy warnings where its schedule goes NaN
            scheduler.set_timesteps(**arguments)
    except Exception as error:  # noqa: BLE001 - compared below
        return error
    return scheduler


@pytest.mark.parametrize("config", list(_configs()), ids=lambda c: json.dumps(c, sort_keys=True))
def test_schedule_is_bit_identical_or_refused_where_diffusers_is_not_finite(config):
    checked = refused = 0
    for steps in (1, 2, 4, 8, 25):
        for arguments in _arguments(steps, config["use_dynamic_shifting"]):
            reference = _set(DiffusersFlowMatchLCM(**config), arguments)
            ours = _set(lcm_core.FlowMatchLCMScheduler(**config), arguments)
            assert not isinstance(reference, Exception), f"diffusers raised {reference!r} for {arguments}"
            if not (torch.isfinite(reference.sigmas).all() and torch.isfinite(reference.timesteps).all()):
                assert isinstance(ours, ValueError) and "NaN or infinite" in str(ours), (arguments, ours)
                refused += 1
                continue
            assert not isinstance(ours, Exception), f"{arguments}: {ours!r}"
            assert torch.equal(ours.sigmas, reference.sigmas), (arguments, ours.sigmas, reference.sigmas)
            assert torch.equal(ours.timesteps, reference.timesteps), (arguments, ours.timesteps, reference.timesteps)
            assert ours.sigmas.dtype == reference.sigmas.dtype and ours.num_inference_steps == \
                reference.num_inference_steps
            checked += 1
    assert checked > 0


def test_shift_terminal_with_one_step_is_refused_with_a_clear_error():
    scheduler = lcm_core.FlowMatchLCMScheduler(shift_terminal=0.02, shift=3.0)
    with pytest.raises(ValueError, match="NaN or infinite sigmas .1 steps, shift_terminal=0.02"):
        scheduler.set_timesteps(1)


def test_constructor_table_and_set_shift_match():
    for config in ({"shift": 3.0}, {"shift": 5.0, "num_train_timesteps": 100}, {"use_dynamic_shifting": True}):
        reference, ours = DiffusersFlowMatchLCM(**config), lcm_core.FlowMatchLCMScheduler(**config)
        assert torch.equal(ours.sigmas, reference.sigmas) and torch.equal(ours.timesteps, reference.timesteps)
        assert (ours.sigma_min, ours.sigma_max) == (reference.sigma_min, reference.sigma_max)
        # set_shift changes the second shift only: the table's ends keep the config's (both schedulers).
        for scheduler in (reference, ours):
            scheduler.set_shift(7.0)
            scheduler.set_timesteps(4, mu=1.0)
        assert ours.shift == reference.shift == 7.0
        assert torch.equal(ours.sigmas, reference.sigmas) and torch.equal(ours.timesteps, reference.timesteps)


@pytest.mark.parametrize("arguments", [{}, {"sigmas": [0.5, 0.25], "timesteps": [500.0]},
                                       {"num_inference_steps": 3, "sigmas": [0.5, 0.25]}])
def test_argument_errors_are_raised_where_diffusers_raises(arguments):
    for scheduler in (DiffusersFlowMatchLCM(), lcm_core.FlowMatchLCMScheduler()):
        with pytest.raises((ValueError, TypeError)):
            scheduler.set_timesteps(**arguments)
    with pytest.raises(ValueError, match="mu must be passed"):
        lcm_core.FlowMatchLCMScheduler(use_dynamic_shifting=True).set_timesteps(4)


def _loop(scheduler, timesteps, x, dtype, seed=7, pass_generator=True):
    """A whole sampling loop with made-up velocities; the same generator draws every step's noise."""
    generator = torch.Generator().manual_seed(seed)
    if not pass_generator:
        scheduler.with_step_generator(generator)
    x = x.to(dtype)
    for i, t in enumerate(timesteps):
        velocity = torch.randn(x.shape, generator=torch.Generator().manual_seed(100 + i)).to(dtype)
        x = scheduler.step(velocity, t, x, generator=generator if pass_generator else None).prev_sample
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("config,arguments", [
    ({"shift": 3.0}, {"num_inference_steps": 4}),                                      # SD3
    ({"use_dynamic_shifting": True, "shift": 3.0}, {"sigmas": [1.0, 0.75, 0.5, 0.25], "mu": 1.15}),  # Flux
    ({"shift": 5.0}, {"num_inference_steps": 1}),
    ({"shift": 8.0}, {"num_inference_steps": 8}),                                      # Wan's ComfyUI default
    ({"shift": 3.0, "invert_sigmas": True}, {"num_inference_steps": 2}),
    ({"shift": 5.0, "scale_factors": [1.5, 2.0, 2.0]}, {"num_inference_steps": 4}),    # SwD: the latent grows
    ({"shift": 5.0, "scale_factors": [2.0], "upscale_mode": "nearest"}, {"num_inference_steps": 2}),
], ids=lambda value: json.dumps(value))
def test_steps_are_bit_identical_over_a_whole_loop(config, arguments, dtype):
    reference, ours = DiffusersFlowMatchLCM(**config), lcm_core.FlowMatchLCMScheduler(**config)
    reference.set_timesteps(**arguments)
    ours.set_timesteps(**arguments)
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    expected = _loop(reference, reference.timesteps, x, dtype)
    got = _loop(ours, ours.timesteps, x, dtype)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected)
    # The same loop with the generator given once (what a diffusers pipeline needs).
    ours.set_timesteps(**arguments)
    assert torch.equal(_loop(ours, ours.timesteps, x, dtype, pass_generator=False), expected)


def test_step_takes_timesteps_by_value_and_starts_at_the_second_of_a_repeated_one():
    reference, ours = DiffusersFlowMatchLCM(), lcm_core.FlowMatchLCMScheduler()
    for scheduler in (reference, ours):
        scheduler.set_timesteps(timesteps=[1000.0, 500.0, 500.0, 250.0])
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    first = [s.step(v, 500.0 if s is ours else torch.tensor(500.0), x, generator=torch.Generator().manual_seed(5))
             for s in (reference, ours)]
    assert reference.step_index == ours.step_index == 3
    assert torch.equal(first[0].prev_sample, first[1].prev_sample)


def test_integer_timesteps_and_steps_past_the_end_are_refused():
    scheduler = lcm_core.FlowMatchLCMScheduler(shift=3.0)
    scheduler.set_timesteps(1)
    x = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match="not an integer index"):
        scheduler.step(x, 0, x)
    with pytest.raises(ValueError, match="not an integer index"):
        scheduler.step(x, torch.tensor(1000), x)
    scheduler.step(x, scheduler.timesteps[0], x)
    with pytest.raises(ValueError, match="called 2 times for a schedule of 1 steps"):
        scheduler.step(x, scheduler.timesteps[0], x)
    with pytest.raises(ValueError, match="before set_timesteps"):
        lcm_core.FlowMatchLCMScheduler().step(x, torch.tensor(1000.0), x)
    swd = lcm_core.FlowMatchLCMScheduler(scale_factors=[1.5])
    swd.set_timesteps(4)
    with pytest.raises(ValueError, match="scale_factors has 1 values for a schedule of 4 steps"):
        swd.step(x, swd.timesteps[0], x)


@pytest.mark.parametrize("begin_index", [None, 2])
def test_scale_noise_matches(begin_index):
    reference, ours = DiffusersFlowMatchLCM(shift=3.0), lcm_core.FlowMatchLCMScheduler(shift=3.0)
    sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    for scheduler in (reference, ours):
        scheduler.set_timesteps(4)
        if begin_index is not None:
            scheduler.set_begin_index(begin_index)
    t = reference.timesteps[2:3].repeat(2)
    assert torch.equal(ours.scale_noise(sample, t, noise), reference.scale_noise(sample, t, noise))


def test_config_round_trips_through_diffusers(tmp_path):
    ours = lcm_core.FlowMatchLCMScheduler(shift=3.0, shift_terminal=0.02, use_dynamic_shifting=True,
                                          max_image_seq_len=8192, max_shift=0.9, scale_factors=[1.5, 2.0])
    ours.save_config(tmp_path)
    loaded = DiffusersFlowMatchLCM.from_pretrained(tmp_path)
    assert {k: loaded.config[k] for k in ours.config} == dict(ours.config)
    assert lcm_core.FlowMatchLCMScheduler.from_pretrained(tmp_path).config == ours.config
    # A pipeline's FlowMatchEulerDiscreteScheduler config (SD3's shift 3.0) carries over; unknown keys warn.
    euler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    swapped = lcm_core.FlowMatchLCMScheduler.from_config(euler.config)
    assert swapped.config.shift == 3.0
    assert dict(swapped.config) == {k: DiffusersFlowMatchLCM.from_config(euler.config).config[k]
                                    for k in swapped.config}


@pytest.mark.parametrize("fields,message", [
    ({"shift": 0.0}, "shift must be a positive number"),
    ({"shift": "3"}, "shift must be a number"),
    ({"use_karras_sigmas": True, "use_beta_sigmas": True}, "only one of use_karras_sigmas"),
    ({"time_shift_type": "cosine"}, "time_shift_type must be 'exponential' or 'linear'"),
    ({"shift_terminal": 1.0}, "shift_terminal must lie in"),
    ({"scale_factors": [1.5, -1.0]}, "scale_factors must be positive"),
    ({"scale_factors": "1.5"}, "scale_factors must be a list of numbers"),
    ({"upscale_mode": "lanczos"}, "upscale_mode 'lanczos' is not one of"),
])
def test_bad_configs_name_the_field(fields, message):
    with pytest.raises((ValueError, TypeError), match=message):
        lcm_core.FlowMatchLCMScheduler(**fields)
    with pytest.raises(TypeError, match="unexpected keyword arguments: beta_start"):
        lcm_core.FlowMatchLCMScheduler(beta_start=0.1)


def test_dynamic_shift_mu_is_the_pipelines_calculate_shift():
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    config = lcm_core.FlowMatchConfig(use_dynamic_shifting=True)
    for seq_len in (256, 1024, 4096, 6000):
        expected = calculate_shift(seq_len, config.base_image_seq_len, config.max_image_seq_len, config.base_shift,
                                   config.max_shift)
        assert math.isclose(lcm_core.dynamic_shift_mu(config, seq_len), expected, rel_tol=1e-15)
