"""Presets, overrides and the JSON round trip of the config."""

import json

import pytest

from lnet_anet_tf import config as config_lib


@pytest.mark.parametrize("preset", sorted(config_lib.PRESETS))
def test_json_round_trip(preset, tmp_path):
    config = config_lib.get_config(preset)
    path = tmp_path / "config.json"
    config_lib.save_json(config, str(path))

    restored = config_lib.from_dict(json.loads(path.read_text()))

    assert restored == config


def test_override_nested_field():
    config = config_lib.get_config("demo")

    changed = config_lib.override(config, "stages.finetune_anet.epochs=2")
    changed = config_lib.override(changed, "lnet_o.conv_filters=(8, 8, 8, 8, 8)")

    assert changed.stages["finetune_anet"].epochs == 2
    assert changed.lnet_o.conv_filters == (8, 8, 8, 8, 8)
    assert config.stages["finetune_anet"].epochs != 2


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("lnet_o.no_such_field=3", "Unknown config field 'no_such_field'"),
        ("stages.no_stage.epochs=3", "Unknown config key 'no_stage'"),
        ("seed", "expected dotted.path=value"),
        ("seed=three", "Invalid value 'three'"),
        ("seed.inner=3", "below a plain value"),
    ],
)
def test_override_errors(assignment, message):
    with pytest.raises(ValueError, match=message):
        config_lib.override(config_lib.get_config("demo"), assignment)


def test_unknown_preset():
    with pytest.raises(ValueError, match="Unknown preset 'huge'"):
        config_lib.get_config("huge")
