"""MNIST digits drawn like Omniglot characters, as extra surrogate images for the attacker."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import tensorflow as tf

from tfleak.data.files import find_release_file, resolve_data_dir
from tfleak.data.omniglot.release import IMAGE_SIZE

__all__ = ["MNIST_ALPHABET_ID", "mnist_surrogate"]

# The alphabet id given to MNIST digits used as surrogate images (not an Omniglot id).
MNIST_ALPHABET_ID = -1
_MNIST_TEST_IMAGES = "t10k-images-idx3-ubyte.gz"


def mnist_surrogate(data_dir=None, count: int = 2000, digit_size: int = 70) -> tf.data.Dataset:
    """MNIST test digits drawn like Omniglot characters, as extra surrogate images.

    Each digit is scaled from 28 to `digit_size` pixels (bilinear), thresholded
    at 0.5 to 1-bit strokes like Omniglot's, inverted (black strokes on white
    paper) and centred on a 105 x 105 page.

    Args:
      data_dir: folder holding `t10k-images-idx3-ubyte.gz` (directly or in
        `mnist/`); defaults to `$TFLEAK_DATA_DIR`.
      count: the first this many of the 10,000 test digits, in [1, 10000].
      digit_size: side of the scaled digit in pixels, in [28, 105].

    Returns:
      A cached `tf.data.Dataset` of `(image, alphabet)`: image float32
      `[105, 105, 1]` in {0, 1}, alphabet int64 `MNIST_ALPHABET_ID`.

    Raises:
      ValueError: `count` or `digit_size` out of range, or a malformed file.
      FileNotFoundError: the MNIST test images are not in `data_dir`.
    """
    if not 1 <= count <= 10000 or not 28 <= digit_size <= IMAGE_SIZE:
        raise ValueError(
            f"need count in [1, 10000] and digit_size in [28, {IMAGE_SIZE}]; got {count}, "
            f"{digit_size}."
        )
    data_dir = resolve_data_dir(data_dir)
    path = None if data_dir is None else find_release_file(data_dir, _MNIST_TEST_IMAGES, ("mnist",))
    if path is None:
        raise FileNotFoundError(
            f"MNIST surrogate images need {_MNIST_TEST_IMAGES} in --data_dir (or its mnist/ "
            f"folder); looked in {data_dir}."
        )
    raw = gzip.decompress(path.read_bytes())
    magic, number, rows, columns = struct.unpack(">IIII", raw[:16])
    if magic != 2051 or rows != 28 or columns != 28 or len(raw) != 16 + number * 784:
        raise ValueError(f"{path} is not an MNIST IDX image file.")
    digits = np.frombuffer(raw, np.uint8, offset=16).reshape(number, 28, 28, 1)[:count]
    scaled = tf.image.resize(digits.astype(np.float32) / 255.0, [digit_size, digit_size])
    strokes = tf.cast(scaled > 0.5, tf.float32)
    offset = (IMAGE_SIZE - digit_size) // 2
    pages = 1.0 - tf.image.pad_to_bounding_box(strokes, offset, offset, IMAGE_SIZE, IMAGE_SIZE)
    labels = tf.fill([len(digits)], tf.constant(MNIST_ALPHABET_ID, tf.int64))
    return tf.data.Dataset.from_tensor_slices((pages, labels)).cache()
