"""Presets, overrides and the JSON round trip of the config."""

import json

import pytest

from lnet_anet_tf import config as config_lib
from lnet_anet_tf import trained


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


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["stages"]["finetune_anet"].update(extra=1), "Unknown config setting stages.finetune_anet.extra"),
        (lambda d: d["anet"].update(extra=1), "Unknown config setting anet.extra"),
        (lambda d: d.update(extra=1), "Unknown config setting extra"),
        (lambda d: d["stages"]["finetune_anet"].pop("epochs"), "is missing the setting stages.finetune_anet.epochs"),
        (lambda d: d.pop("localization"), "is missing the section 'localization'"),
    ],
)
def test_from_dict_names_the_setting(edit, message):
    data = config_lib.to_dict(config_lib.get_config("demo"))
    edit(data)

    with pytest.raises(ValueError, match=message):
        config_lib.from_dict(data)


def test_from_dict_defaults_missing_optional():
    data = config_lib.to_dict(config_lib.get_config("demo"))
    del data["localization"]["min_box_side"]

    restored = config_lib.from_dict(data)

    assert restored.localization.min_box_side == config_lib.LocalizationConfig().min_box_side


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"seed": 0,', "Expecting"),
        ("[1, 2]", "The config is a list"),
        (None, "Unknown config setting svm.extra"),
    ],
)
def test_load_config_names_the_file(tmp_path, text, message):
    path = tmp_path / trained.CONFIG_FILENAME
    if text is None:
        data = config_lib.to_dict(config_lib.get_config("demo"))
        data["svm"]["extra"] = 1
        text = json.dumps(data)
    path.write_text(text)

    with pytest.raises(ValueError, match=message) as raised:
        trained.load_config(str(tmp_path))

    assert str(path) in str(raised.value)
    assert "new --model_dir" in str(raised.value)
