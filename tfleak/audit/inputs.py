"""What an audit is given: the user's model, their private images, the threats
and the defence chains, each checked and brought into tfleak's types."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from tfleak.threats.defenses import DPSGD, Defense, parse_defenses

__all__ = ["check_model", "defense_chain", "load_images", "parse_threat"]


def check_model(model, num_classes):
    """The user's model (or `.keras` path) as a `Victim`, after checking it can be attacked."""
    from tfleak.models import as_victim
    from tfleak.models.checks import check_attackable, load_model, require_classifier

    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        model = load_model(model)
    check_attackable(model)
    require_classifier(model)
    return as_victim(model, num_classes=num_classes)


def load_images(data, victim, count: int, seed: int):
    """`(images [n, h, w, c] float32 in [0, 1], labels [n] int64, description)`."""
    from tfleak.data import load_dataset, sample_batch

    height, width, channels = victim.image_shape
    if isinstance(data, (str, Path)):
        if height != width:
            raise ValueError(
                f"an image folder is read as square images, but {victim.name} takes "
                f"{height}x{width}; pass a tf.data.Dataset of images of that shape."
            )
        folder = load_dataset("folder", data_dir=str(data), image_size=height, channels=channels)
        if folder.num_classes > victim.num_classes:
            raise ValueError(
                f"the folder {data} has {folder.num_classes} classes but {victim.name} "
                f"classifies {victim.num_classes}."
            )
        rows = sample_batch(folder.labels, min(count, len(folder)), "random", seed=seed)
        return folder.images[rows], folder.labels[rows], folder.description
    if not isinstance(data, tf.data.Dataset):
        raise ValueError(
            f"data must be a tf.data.Dataset of (image, label) or an image folder path; got "
            f"{type(data).__name__}."
        )
    images, labels = [], []
    for element in data.take(count):
        image, label = (
            (element["image"], element["label"]) if isinstance(element, dict) else element
        )
        image, label = np.asarray(image), np.asarray(label)
        if image.ndim == 4:  # a batched dataset
            images += list(image)
            labels += list(label.reshape(-1))
        else:
            images.append(image)
            labels.append(int(label))
    if not images:
        raise ValueError("the dataset yielded no images.")
    images = np.stack(images[:count])
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    if tuple(images.shape[1:]) != victim.image_shape:
        raise ValueError(
            f"the dataset's images are shaped {list(images.shape[1:])} but {victim.name} takes "
            f"{list(victim.image_shape)}; resize them (e.g. dataset.map(tf.image.resize))."
        )
    labels = np.asarray(labels[:count], np.int64)
    if labels.min() < 0 or labels.max() >= victim.num_classes:
        raise ValueError(
            f"labels must be in 0..{victim.num_classes - 1}; got {labels.min()}..{labels.max()}."
        )
    return images.astype(np.float32), labels, "tf.data.Dataset"


def parse_threat(threat):
    """A threat given by name (`tfleak.threats.federated.parse_update`) or as an object."""
    from tfleak.threats.federated import parse_update

    return parse_update(threat)


def defense_chain(defense) -> tuple:
    """A defence chain (None, a `NAME:STRENGTH` string with '+', a `Defense` or `DPSGD`, or a
    list of them) as a tuple of `Defense` / `DPSGD` objects."""
    if defense is None:
        return ()
    if isinstance(defense, (Defense, DPSGD)):
        return (defense,)
    if isinstance(defense, str):
        return parse_defenses(defense.split("+"))
    chain = []
    for d in defense:
        chain += list(parse_defenses([d])) if isinstance(d, str) else [d]
    return tuple(chain)
