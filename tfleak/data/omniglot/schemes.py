"""The model-inversion experiment's Omniglot schemes: which images train and test the
target and the attacker (`OMNIGLOT_SCHEMES`), as `(image, alphabet)` datasets.

Every scheme keeps the attacker's training and test images disjoint
(`describe_scheme` counts the shared ones); `split_by_alphabet` holds
alphabets out of such a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tensorflow as tf

from tfleak.data.omniglot.release import OMNIGLOT_ALPHABETS, image_digests, load_omniglot

__all__ = [
    "OmniglotScheme",
    "OMNIGLOT_SCHEMES",
    "omniglot_scheme",
    "describe_scheme",
    "split_by_alphabet",
]


@dataclass(frozen=True)
class OmniglotScheme:
    """Which Omniglot images train and test the target and the attacker.

    Attributes:
      description: one line for logs and results.
      target_split: the split the target trains and validates on.
      target_train_size: the first this many images (tfds order) train the
        target, the rest validate it.
      attacker_train: (split, alphabets or None for all) the attacker's
        surrogate images.
      attacker_test: (split, alphabets or None for all) the images it inverts.
      attacker_test_exclude_alphabets_of: splits whose alphabets are removed
        from the attacker's test images.
    """

    description: str
    target_split: str
    target_train_size: int
    attacker_train: tuple
    attacker_test: tuple
    attacker_test_exclude_alphabets_of: tuple = ()


OMNIGLOT_SCHEMES = {
    "tfds": OmniglotScheme(
        description=(
            "as published: target on tfds 'test' (20 evaluation alphabets, first 11,000 "
            "train / 2,180 validate); attacker trains on 'small1', tests on 'small2' minus "
            "small1's alphabets (Greek and Latin, 1,000 images shared)"
        ),
        target_split="test",
        target_train_size=11000,
        attacker_train=("small1", None),
        attacker_test=("small2", None),
        attacker_test_exclude_alphabets_of=("small1",),
    ),
    "offline": OmniglotScheme(
        description=(
            "from the two small zips: target on 'small1' (5 alphabets, first 2,270 train / "
            "450 validate); attacker trains on small2's Japanese (katakana) and Sanskrit, "
            "tests on small2's Tagalog"
        ),
        target_split="small1",
        target_train_size=2270,
        attacker_train=("small2", ("Japanese_(katakana)", "Sanskrit")),
        attacker_test=("small2", ("Tagalog",)),
    ),
}


def _to_image_alphabet(element):
    """dict -> (image float32 `[105, 105, 1]` in [0, 1], alphabet int64)."""
    image = tf.cast(element["image"][..., :1], tf.float32) / 255.0
    return image, element["alphabet"]


def _get_scheme(name: str) -> OmniglotScheme:
    if name not in OMNIGLOT_SCHEMES:
        raise ValueError(
            f"unknown Omniglot scheme {name!r}; choose one of {', '.join(OMNIGLOT_SCHEMES)}."
        )
    return OMNIGLOT_SCHEMES[name]


def omniglot_scheme(name: str, data_dir=None) -> dict[str, tf.data.Dataset]:
    """The four datasets of a model-inversion scheme (see `OMNIGLOT_SCHEMES`).

    Args:
      name: 'tfds' (the published setup; needs the full release or tfds) or
        'offline' (only the two small zips).
      data_dir: folder with the release zips; defaults to `$TFLEAK_DATA_DIR`.

    Returns:
      Dict with keys `target_train`, `target_val`, `attacker_train`,
      `attacker_test`; each a finite, deterministic, in-memory cached
      `tf.data.Dataset` of `(image, alphabet)`: image float32 `[105, 105, 1]`
      in [0, 1] (1 = white paper), alphabet int64 in [0, 50).

    Raises:
      ValueError: unknown scheme, or a corrupt zip.
      FileNotFoundError: a zip the scheme needs is missing and tfds cannot
        load it offline.
    """
    scheme = _get_scheme(name)
    target = load_omniglot(scheme.target_split, data_dir).map(_to_image_alphabet).cache()
    train_split, train_alphabets = scheme.attacker_train
    test_split, test_alphabets = scheme.attacker_test
    attacker_train = load_omniglot(train_split, data_dir, alphabets=train_alphabets)
    attacker_test = load_omniglot(
        test_split,
        data_dir,
        alphabets=test_alphabets,
        exclude_alphabets_of=scheme.attacker_test_exclude_alphabets_of,
    )
    return {
        "target_train": target.take(scheme.target_train_size),
        "target_val": target.skip(scheme.target_train_size),
        "attacker_train": attacker_train.map(_to_image_alphabet).cache(),
        "attacker_test": attacker_test.map(_to_image_alphabet).cache(),
    }


def describe_scheme(name: str, datasets: dict[str, tf.data.Dataset]) -> dict:
    """Counts, alphabets and shared images of a scheme's datasets, for its output.

    Args:
      name: the scheme's name.
      datasets: `omniglot_scheme(name)`'s result.

    Returns:
      A JSON-ready dict: `scheme`, `description`, per dataset its number of
      images and alphabet names, and `attacker_shared_images`, the number of
      attacker test images whose pixels equal an attacker training image
      (0 for every scheme here).
    """
    summary = {"scheme": name, "description": _get_scheme(name).description}
    for key, dataset in datasets.items():
        alphabets = np.array([int(alphabet) for _, alphabet in dataset], np.int64)
        summary[key] = {
            "images": int(alphabets.size),
            "alphabets": [OMNIGLOT_ALPHABETS[i] for i in np.unique(alphabets)],
        }
    train = set(image_digests(datasets["attacker_train"]))
    summary["attacker_shared_images"] = sum(
        digest in train for digest in image_digests(datasets["attacker_test"])
    )
    return summary


def split_by_alphabet(
    dataset: tf.data.Dataset, held_out: Sequence[str]
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Splits `(image, alphabet)` elements into (other alphabets, `held_out` alphabets).

    Raises:
      ValueError: an unknown alphabet name.
    """
    unknown = sorted(set(held_out) - set(OMNIGLOT_ALPHABETS))
    if unknown:
        raise ValueError(f"unknown Omniglot alphabets {unknown}.")
    ids = tf.constant([OMNIGLOT_ALPHABETS.index(name) for name in held_out], tf.int64)

    def is_held_out(_, alphabet):
        return tf.reduce_any(tf.equal(alphabet, ids))

    kept = dataset.filter(lambda image, alphabet: tf.logical_not(is_held_out(image, alphabet)))
    return kept.cache(), dataset.filter(is_held_out).cache()
