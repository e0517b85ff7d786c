"""LCMConfig: defaults, validation, diffusers scheduler_config.json round trips."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging

import diffusers
import pytest

from lcm_core import LCMConfig, LCMScheduler


def test_defaults_equal_the_reference_signature():
    reference = {name: p.default for name, p in inspect.signature(diffusers.LCMScheduler.__init__).parameters.items()
                 if name != "self"}
    ours = {field.name: field.default for field in dataclasses.fields(LCMConfig)}
    assert ours == reference
    assert LCMScheduler().config == LCMConfig()


def test_config_is_frozen_and_reads_like_a_dict():
    config = LCMConfig(original_inference_steps=25)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.beta_end = 0.02  # type: ignore[misc]
    assert config["original_inference_steps"] == config.original_inference_steps == 25
    assert dict(config)["beta_schedule"] == "scaled_linear"
    assert config.get("missing", "x") == "x" and "beta_start" in config
    changed = config.replace(prediction_type="v_prediction")
    assert changed.prediction_type == "v_prediction" and config.prediction_type == "epsilon"
    assert hash(config) == hash(LCMConfig(original_inference_steps=25))


@pytest.mark.parametrize("kwargs,needle", [
    (dict(prediction_type="x0"), "prediction_type 'x0'"),
    (dict(num_train_timesteps=0), "num_train_timesteps"),
    (dict(original_inference_steps=0), "original_inference_steps"),
    (dict(original_inference_steps=2000), "original_inference_steps"),
    (dict(beta_start=0.02, beta_end=0.01), "beta_start"),
    (dict(timestep_scaling=0), "timestep_scaling"),
    (dict(clip_sample_range=-1), "clip_sample_range"),
    (dict(dynamic_thresholding_ratio=1.5), "dynamic_thresholding_ratio"),
    (dict(trained_betas=[0.1, 0.2]), "trained_betas"),
    (dict(timestep_spacing="uniform"), "timestep_spacing"),
])
def test_invalid_values_name_the_field(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        LCMConfig(**kwargs)


def test_unknown_schedule_is_not_implemented_like_reference():
    with pytest.raises(NotImplementedError, match="squaredcos_cap_v2"):
        LCMConfig(beta_schedule="exp")


def test_json_round_trip_with_diffusers(tmp_path):
    reference = diffusers.LCMScheduler(original_inference_steps=25, prediction_type="v_prediction",
                                       timestep_scaling=5.0)
    reference.save_config(tmp_path / "ref")
    ours = LCMScheduler.from_pretrained(tmp_path / "ref")
    assert ours.config.original_inference_steps == 25 and ours.config.timestep_scaling == 5.0
    path = ours.save_pretrained(tmp_path / "ours")
    written = json.loads(open(path).read())
    assert written["_class_name"] == "LCMScheduler"
    back = diffusers.LCMScheduler.from_pretrained(tmp_path / "ours")
    assert {k: back.config[k] for k in ours.config} == dict(ours.config)


def test_from_config_of_another_scheduler_warns_once_and_ignores_metadata(caplog):
    pndm = diffusers.PNDMScheduler(beta_schedule="scaled_linear", steps_offset=1, skip_prk_steps=True)
    with caplog.at_level(logging.WARNING, logger="lcm_core"):
        scheduler = LCMScheduler.from_config(pndm.config)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skip_prk_steps" in warnings[0].getMessage()
    assert "_class_name" not in warnings[0].getMessage()
    assert scheduler.config.steps_offset == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lcm_core"):
        LCMScheduler.from_config(diffusers.LCMScheduler().config)
    assert not caplog.records


def test_from_json_errors_are_clear():
    with pytest.raises(ValueError, match="not valid JSON"):
        LCMConfig.from_json("{nope")
    with pytest.raises(ValueError, match="JSON object"):
        LCMConfig.from_json("[1, 2]")
    assert LCMConfig.from_json('{"_class_name": "LCMScheduler", "beta_end": 0.012}') == LCMConfig()


@pytest.mark.parametrize("text,needle", [
    ('{"beta_start": {"a": 1}}', r"beta_start must be a number \(e\.g\. 0\.00085.*got \{'a': 1\} \(dict\)"),
    ('{"beta_end": "0.012"}', r"beta_end must be a number.*got '0\.012' \(str\)"),
    ('{"original_inference_steps": 50.5}', r"original_inference_steps must be an integer.*got 50\.5"),
    ('{"clip_sample": 1}', r"clip_sample must be true or false \(e\.g\. false"),
    ('{"prediction_type": 3}', r"prediction_type must be a string"),
    ('{"trained_betas": "linear"}', r"trained_betas must be a list of numbers"),
    ('{"trained_betas": [0.1, [0.2]]}', r"trained_betas must be a list of numbers"),
])
def test_values_of_the_wrong_kind_name_the_field(text, needle):
    """Found by trying: before, these reached the user as TypeError: '<' not supported between ..."""
    with pytest.raises(TypeError, match=needle):
        LCMConfig.from_json(text)


def test_integral_floats_and_int_floats_normalise():
    assert LCMConfig.from_json('{"num_train_timesteps": 1000.0, "timestep_scaling": 10}') == LCMConfig()
    assert hash(LCMConfig(timestep_scaling=10)) == hash(LCMConfig())
    assert type(LCMConfig(num_train_timesteps=1000.0).num_train_timesteps) is int


def test_huge_values_are_cut_in_messages():
    with pytest.raises(TypeError) as error:
        LCMConfig.from_json(json.dumps({"beta_end": "x" * 100_000}))
    assert len(str(error.value)) < 200


def test_deeply_nested_json_is_a_value_error():
    depth = 100_000
    with pytest.raises(ValueError, match="nested too deeply"):
        LCMConfig.from_json("[" * depth + "]" * depth)
    with pytest.raises(ValueError, match="nested too deeply"):
        LCMConfig.from_json('{"beta_end": ' + "[" * depth + "]" * depth + "}")


def test_many_unknown_keys_give_one_short_warning(caplog):
    text = json.dumps({f"unknown_{i}": i for i in range(200_000)})
    with caplog.at_level(logging.WARNING, logger="lcm_core"):
        assert LCMConfig.from_json(text) == LCMConfig()
    (record,) = caplog.records
    message = record.getMessage()
    assert len(message) < 300 and message.endswith("and 199990 more")
