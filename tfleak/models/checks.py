"""What cannot be attacked, as rules with messages, and loading a user's saved model.

Each rule looks at a model before any work and raises a `ValueError` whose one
sentence names the problem and the fix (the shape of opacus' validators):

- a Keras 2 (`tf_keras`) model object, or a `.keras` file saved by another
  Keras major version;
- a saved model whose custom class cannot be imported;
- a layer that draws random numbers while training (augmentation), or keeps
  state between calls: no attacker can reproduce the client's gradient;
- dropout in a subclassed model attacked in training mode;
- a model with no Dense classifier at the end, where label restoration or the
  audit needs one (`require_classifier`).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Sequence

import keras

__all__ = [
    "RANDOM_LAYERS",
    "all_layers",
    "is_graph_model",
    "is_softmax",
    "check_classifier_shape",
    "check_attackable",
    "load_model",
    "require_classifier",
]

# Layers that draw random numbers or keep state while training: at inference
# (which is how a functional victim runs them) they are the identity, but a
# client that trains through them shares a gradient no attacker can reproduce.
RANDOM_LAYERS = (
    "RandomFlip",
    "RandomCrop",
    "RandomRotation",
    "RandomZoom",
    "RandomTranslation",
    "RandomContrast",
    "RandomBrightness",
    "RandomHeight",
    "RandomWidth",
    "RandAugment",
    "AugMix",
    "MixUp",
    "CutMix",
)
_DROPOUT_LAYERS = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise")


def all_layers(model, include_models: bool = False) -> list:
    """The model's layers in order, nested models flattened (and listed too if asked)."""
    layers = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model):
            layers += [layer] * include_models + all_layers(layer, include_models)
        else:
            layers.append(layer)
    return layers


def is_graph_model(model) -> bool:
    """True for a functional or Sequential model with known inputs (one that can be cloned)."""
    try:
        return bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):
        return False


def check_attackable(model, batch_norm: str = "train") -> None:
    """Raises ValueError if `model` cannot be attacked, naming the problem and the fix.

    Args:
      model: the user's model object.
      batch_norm: 'train' or 'eval', how the client's pass runs (a subclassed
        model runs in training mode for 'train').
    """
    module = type(model).__module__
    if module.startswith("tf_keras") or module.startswith("tensorflow.python.keras"):
        raise ValueError(
            f"{getattr(model, 'name', 'the model')} is a Keras 2 (tf_keras) model; tfleak needs "
            "Keras 3: build it with `import keras` (TensorFlow 2.16 or newer), or rebuild it "
            "there and copy its weights with set_weights(old.get_weights())."
        )
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"as_victim needs a keras.Model (or a path to a .keras file); got "
            f"{type(model).__name__}."
        )
    subclassed = not is_graph_model(model)
    for layer in all_layers(model, include_models=True):
        kind = type(layer).__name__
        if kind in RANDOM_LAYERS:
            raise ValueError(
                f"layer {layer.name!r} ({kind}) draws random numbers while training, so no "
                "attacker can reproduce the client's gradient; attack the model without its "
                "augmentation layers."
            )
        if getattr(layer, "stateful", False):
            raise ValueError(
                f"layer {layer.name!r} ({kind}) is stateful; an attack would change its state. "
                "Attack a model without stateful layers."
            )
        if subclassed and batch_norm == "train" and kind in _DROPOUT_LAYERS:
            raise ValueError(
                f"layer {layer.name!r} ({kind}) of the subclassed model {model.name} is random "
                "in training mode, which batch_norm='train' runs it in; pass batch_norm='eval' "
                "(inference mode), or build the model functionally so that only batch norm "
                "uses batch statistics."
            )


def require_classifier(model) -> None:
    """Raises ValueError if `model` does not end in a Dense classifier (softmax aside).

    Label restoration and the audit read the labels off that layer's gradient.
    """
    layers = [
        layer
        for layer in all_layers(model)
        if not isinstance(layer, (keras.Model, keras.layers.Softmax, keras.layers.Activation))
    ]
    if not layers or not isinstance(layers[-1], keras.layers.Dense):
        last = type(layers[-1]).__name__ if layers else "missing"
        raise ValueError(
            f"{model.name} does not end in a Dense classifier (its last layer is {last}); the "
            "audit restores labels from the last Dense layer's gradient. End the model with "
            "keras.layers.Dense(classes)."
        )


def load_model(path) -> keras.Model:
    """Loads a user's model from a `.keras` file saved by Keras 3; the file is not changed.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not a `.keras` file, a file saved by another Keras major
        version, or a custom class that cannot be imported.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}; save one with model.save('m.keras').")
    if path.suffix != ".keras":
        raise ValueError(
            f"{path} is not a .keras file; save the model with Keras 3's model.save('m.keras') "
            "(or pass the model object)."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read("metadata.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path} is not a model saved by Keras' model.save ({error}); save it again with "
            "model.save('m.keras')."
        ) from None
    version = str(metadata.get("keras_version", "unknown"))
    if not version.startswith("3."):
        raise ValueError(
            f"{path} was saved by Keras {version}, and tfleak loads files saved by Keras 3; load "
            "it where it was saved, then save it again from Keras 3 (or copy its weights into "
            "the same architecture built with `import keras`)."
        )
    try:
        return keras.saving.load_model(path, compile=False)
    except TypeError as error:
        if "Could not locate" in str(error) or "could not be deserialized" in str(error):
            raise ValueError(
                f"{path} holds a model whose custom class cannot be imported "
                f"({str(error).splitlines()[0][:200]}); import the module that defines it "
                "(decorated with @keras.saving.register_keras_serializable()) before loading, "
                "or pass the model object."
            ) from None
        raise


def is_softmax(layer) -> bool:
    """True for a Softmax layer or a layer whose activation is softmax."""
    activation = getattr(layer, "activation", None)
    if isinstance(layer, keras.layers.Softmax):
        return True
    return activation is not None and getattr(activation, "__name__", "") == "softmax"


def check_classifier_shape(input_shape: Sequence[int], num_classes: int) -> tuple:
    """Validates a victim builder's `input_shape` and `num_classes`; returns the shape as ints.

    Raises:
      ValueError: a shape that is not three positive sizes, or fewer than 2 classes.
    """
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(
            f"input_shape must be (height, width, channels) of positive sizes; got {input_shape}."
        )
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2; got {num_classes}.")
    return input_shape
