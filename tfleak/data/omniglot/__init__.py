"""Omniglot (Lake, Salakhutdinov, Tenenbaum 2015) for model inversion.

- `release`: the release zips (or tfds) as `tfds.load('omniglot')` elements
  (`load_omniglot`), with the alphabets' names and ids.
- `schemes`: which images train and test the target and the attacker
  (`OMNIGLOT_SCHEMES`, `omniglot_scheme`).
- `mnist`: MNIST digits drawn like Omniglot characters (`mnist_surrogate`).
"""

from tfleak.data.omniglot.mnist import MNIST_ALPHABET_ID, mnist_surrogate
from tfleak.data.omniglot.release import (
    BACKGROUND_ALPHABETS,
    EVALUATION_ALPHABETS,
    IMAGE_SIZE,
    NUM_ALPHABETS,
    NUM_CHARACTERS,
    OMNIGLOT_ALPHABETS,
    OMNIGLOT_ARCHIVES,
    image_digests,
    load_omniglot,
    split_alphabets,
)
from tfleak.data.omniglot.schemes import (
    OMNIGLOT_SCHEMES,
    OmniglotScheme,
    describe_scheme,
    omniglot_scheme,
    split_by_alphabet,
)

__all__ = [
    "BACKGROUND_ALPHABETS",
    "EVALUATION_ALPHABETS",
    "OMNIGLOT_ALPHABETS",
    "OMNIGLOT_ARCHIVES",
    "NUM_ALPHABETS",
    "NUM_CHARACTERS",
    "IMAGE_SIZE",
    "load_omniglot",
    "split_alphabets",
    "image_digests",
    "OmniglotScheme",
    "OMNIGLOT_SCHEMES",
    "omniglot_scheme",
    "describe_scheme",
    "MNIST_ALPHABET_ID",
    "mnist_surrogate",
    "split_by_alphabet",
]
