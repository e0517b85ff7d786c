"""TCD timesteps of lcm_core against diffusers' TCDScheduler (the oracle, run in this process).

TCDScheduler.set_timesteps picks from LCM's distillation grid by default, and from the dense
grid of every training timestep below int(T * strength) once original_inference_steps is
passed explicitly (then it only caps the number of steps).
"""

from __future__ import annotations

import logging

import diffusers
import pytest

from lcm_core import LCMScheduler, StrengthMode, TCDScheduler
from test_core_timesteps import CUSTOM_LISTS, STRENGTHS, _compare_custom, _compare_grid, _reference_outcome

# None: the default grid; any number: the dense grid (2000 > num_train_timesteps is accepted there).
ORIGINAL_STEPS = (None, 1, 10, 20, 25, 50, 100, 1000, 2000)


def _accepted_count(original):
    """How many (steps, strength) pairs the reference accepts: steps up to the size of its grid."""
    if original is None:
        return sum(min(int(50 * strength), 50) for strength in STRENGTHS)
    return sum(min(int(1000 * strength), original, 50) for strength in STRENGTHS)


@pytest.mark.parametrize("original", ORIGINAL_STEPS, ids=lambda o: f"original={o}")
def test_timesteps_grid_equal_to_diffusers(original):
    """steps 1..50 x strength: the same timesteps wherever diffusers accepts, the same error type elsewhere."""
    assert _compare_grid(TCDScheduler(), diffusers.TCDScheduler(), original) == _accepted_count(original)


def test_known_schedules_default_and_dense():
    scheduler = TCDScheduler()
    expected = [
        (4, None, 1.0, [999, 759, 499, 259]),  # LCM's grid
        (4, 50, 1.0, [999, 749, 499, 249]),  # explicit: the dense grid 0..999
        (4, None, 0.5, [499, 379, 259, 139]),
        (4, 50, 0.5, [499, 374, 249, 124]),  # the dense grid 0..499
        (2, 2000, 1.0, [999, 499]),
    ]
    for steps, original, strength, timesteps in expected:
        scheduler.set_timesteps(steps, original_inference_steps=original, strength=strength)
        assert scheduler.timesteps.tolist() == timesteps, (steps, original, strength)
    # LCM never switches grids: an explicit 50 is its default.
    lcm = LCMScheduler()
    lcm.set_timesteps(4, original_inference_steps=50)
    assert lcm.timesteps.tolist() == [999, 759, 499, 259]


@pytest.mark.parametrize("original", [None, 50])
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 8, 25])
@pytest.mark.parametrize("strength", [1.0, 0.75, 0.5, 0.3])
def test_drop_leading_equals_sd_img2img_get_timesteps(original, steps, strength):
    """strength_mode=drop_leading is StableDiffusion(XL)Img2ImgPipeline.get_timesteps on TCD's full schedule."""
    reference = diffusers.TCDScheduler()
    reference.set_timesteps(steps, original_inference_steps=original)
    full = reference.timesteps.tolist()
    init_timestep = min(int(steps * strength), steps)
    expected = full[max(steps - init_timestep, 0):]
    ours = TCDScheduler()
    if not expected:
        with pytest.raises(ValueError, match="keeps int"):
            ours.set_timesteps(steps, original_inference_steps=original, strength=strength,
                               strength_mode=StrengthMode.DROP_LEADING)
        return
    ours.set_timesteps(steps, original_inference_steps=original, strength=strength, strength_mode="drop_leading")
    assert ours.timesteps.tolist() == expected


@pytest.mark.parametrize("timesteps", CUSTOM_LISTS)
@pytest.mark.parametrize("strength", [1.0, 0.5])
@pytest.mark.parametrize("original", [None, 50, 25])
def test_custom_timesteps_equal_to_diffusers(timesteps, strength, original):
    _compare_custom(TCDScheduler(), diffusers.TCDScheduler(), timesteps, original, strength)


def test_custom_timesteps_are_checked_against_the_grid_in_use(caplog):
    """Off the LCM grid by default; on the dense grid every timestep below T * strength is valid."""
    with caplog.at_level(logging.WARNING, logger="lcm_core"):
        TCDScheduler().set_timesteps(timesteps=[999, 800, 600])
    assert "not on the LCM distillation grid" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lcm_core"):
        TCDScheduler().set_timesteps(timesteps=[999, 800, 600], original_inference_steps=50)
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="lcm_core"):
        TCDScheduler().set_timesteps(timesteps=[999, 800, 600], original_inference_steps=50, strength=0.5)
    assert "[800, 600] are not on the training timesteps below 500" in caplog.text


@pytest.mark.parametrize("kwargs", [
    dict(timesteps=[259, 499, 759]),              # ascending
    dict(timesteps=[999, 999]),                   # not strictly descending
    dict(timesteps=[1000, 500]),                  # beyond num_train_timesteps
    dict(),                                       # neither steps nor timesteps
    dict(num_inference_steps=4, timesteps=[999, 499]),
    dict(num_inference_steps=51),                 # more than the default grid
    dict(num_inference_steps=60, original_inference_steps=50),  # more than the explicit cap
    dict(num_inference_steps=1001, original_inference_steps=2000),
    dict(num_inference_steps=10, strength=0.1),   # default grid of 5 < 10 steps
    dict(num_inference_steps=10, original_inference_steps=50, strength=0.005),  # dense grid of 5
    dict(num_inference_steps=4, original_inference_steps=0),
])
def test_same_exception_type_as_diffusers(kwargs):
    expected = _reference_outcome(diffusers.TCDScheduler(), **kwargs)
    assert isinstance(expected, type) and issubclass(expected, Exception), f"diffusers accepted {kwargs}"
    with pytest.raises(expected):
        TCDScheduler().set_timesteps(**kwargs)
