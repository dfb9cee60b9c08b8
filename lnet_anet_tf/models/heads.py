"""Classification heads: add, replace, and copy the trunk under a head.

Every model in this package returns a dict with a "logits" output made by one
Dense layer, the head, named after what it classifies ("objects", "identities",
"attributes"). The rest of the model is the trunk.
"""

from __future__ import annotations

import keras
from absl import logging


def add_head(features, num_outputs: int, head_name: str, kernel_regularizer=None):
    """Return float32 logits from a Dense head named `head_name` on `features`."""
    if int(num_outputs) <= 0:
        raise ValueError(f"num_outputs must be a positive int, got {num_outputs!r}.")
    return keras.layers.Dense(
        int(num_outputs),
        kernel_regularizer=kernel_regularizer,
        dtype="float32",
        name=head_name,
    )(features)


def find_head(model: keras.Model) -> keras.layers.Layer:
    """Return the Dense layer that produces `model`'s "logits" output."""
    outputs = model.output
    if not isinstance(outputs, dict) or "logits" not in outputs:
        raise ValueError(
            f"Model {model.name!r} has no 'logits' output; build it with "
            "build_lnet or build_anet."
        )
    logits = outputs["logits"]
    for layer in model.layers:
        if layer.output is logits:
            return layer
    raise ValueError(f"No layer of model {model.name!r} produces its 'logits' output.")


def replace_head(model: keras.Model, num_outputs: int, head_name: str) -> keras.Model:
    """Return a model with a new, freshly initialised head on `model`'s trunk.

    The trunk layers are the same objects as in `model`, so their weights are
    shared, not copied: training the returned model also changes `model`'s trunk.
    The new head keeps the old head's kernel regularizer.
    """
    old_head = find_head(model)
    if head_name != old_head.name and head_name in {layer.name for layer in model.layers}:
        raise ValueError(
            f"head_name {head_name!r} is already the name of a trunk layer of "
            f"{model.name!r}; choose another name."
        )
    logits = add_head(
        old_head.input, num_outputs, head_name, kernel_regularizer=old_head.kernel_regularizer
    )
    outputs = dict(model.output)
    outputs["logits"] = logits
    return keras.Model(model.input, outputs, name=model.name)


def trunk(model: keras.Model) -> keras.Model:
    """Return `model` without its head: every output except "logits", layers shared.

    For LNet that is {"feature_map"}, for ANet {"feature_map", "features"}. Layers
    that only feed the head (LNet's fully connected layers) are not in the result.
    """
    find_head(model)
    outputs = {key: value for key, value in model.output.items() if key != "logits"}
    return keras.Model(model.input, outputs, name=f"{model.name}_trunk")


def copy_trunk_weights(source: keras.Model, target: keras.Model) -> tuple[list, list]:
    """Copy the weights of every trunk layer of `target` from the same-named layer of `source`.

    A layer is copied only when `source` has a layer of that name whose weights all
    have the same shapes. Any other layer keeps its fresh initialisation. Conv
    layers copy between inputs of any size. The first fully connected layer after
    the flatten changes shape with the input size, so it stays fresh unless both
    inputs have the same size. Heads are never copied. Returns the names of the
    copied layers and of the layers left as they were.
    """
    source_layers = {layer.name: layer for layer in source.layers}
    source_head = find_head(source).name
    target_head = find_head(target).name

    copied, skipped = [], []
    for layer in target.layers:
        if not layer.weights or layer.name == target_head:
            continue
        match = source_layers.get(layer.name)
        if match is None or match.name == source_head:
            skipped.append(layer.name)
            logging.info("Layer %s: not in %s, keeps its initialisation.", layer.name, source.name)
            continue
        source_shapes = [tuple(weight.shape) for weight in match.weights]
        target_shapes = [tuple(weight.shape) for weight in layer.weights]
        if source_shapes != target_shapes:
            skipped.append(layer.name)
            logging.info(
                "Layer %s: weight shapes %s in %s differ from %s, keeps its initialisation.",
                layer.name, source_shapes, source.name, target_shapes,
            )
            continue
        layer.set_weights(match.get_weights())
        copied.append(layer.name)
    return copied, skipped
