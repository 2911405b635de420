"""Omniglot (Lake, Salakhutdinov, Tenenbaum 2015) from its release zips or tfds.

`load_omniglot(split)` returns the elements `tfds.load('omniglot')` gives --
dicts with `image` uint8 `[105, 105, 3]` in {0, 255} (black strokes on white),
`alphabet` (int64 in [0, 50)), `alphabet_char_id` (int64, 0-based character
within its alphabet) and `label` (int64 in [0, 1623)) -- read straight from the
original release zips in a local data directory, with no network. Ids and the
record order are those of tensorflow-datasets' omniglot builder: `alphabet`
indexes the sorted names of all 50 alphabets, `label` is the file name's NNNN
minus one, and records are sorted by the MD5 of the split name followed by the
key `<alphabet>_<character index>_<file name>` (tensorflow_datasets/core/
hashing.py), so `train`, `test`, `small1` and `small2` hold the same elements
in the same order either way. Without the zips it falls back to
`tfleak.data.files.load_tfds`, which needs the data prepared or a network.

`small1` and `small2` share the Greek and Latin alphabets: 1,000 byte-identical
images. `load_omniglot` can drop alphabets, or images, present in another split;
the experiment's schemes (`tfleak.data.omniglot_schemes`) use that to keep the
attacker's training and test images disjoint.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from tfleak.data.files import find_release_file, load_tfds, resolve_data_dir

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

IMAGE_SIZE = 105
NUM_CHARACTERS = 1623

# The 30 alphabets of `images_background` (tfds `train`; the small sets are
# subsets of it) and the 20 of `images_evaluation` (tfds `test`).
BACKGROUND_ALPHABETS = (
    "Alphabet_of_the_Magi", "Anglo-Saxon_Futhorc", "Arcadian", "Armenian",
    "Asomtavruli_(Georgian)", "Balinese", "Bengali",
    "Blackfoot_(Canadian_Aboriginal_Syllabics)", "Braille", "Burmese_(Myanmar)",
    "Cyrillic", "Early_Aramaic", "Futurama", "Grantha", "Greek", "Gujarati", "Hebrew",
    "Inuktitut_(Canadian_Aboriginal_Syllabics)", "Japanese_(hiragana)",
    "Japanese_(katakana)", "Korean", "Latin", "Malay_(Jawi_-_Arabic)",
    "Mkhedruli_(Georgian)", "N_Ko", "Ojibwe_(Canadian_Aboriginal_Syllabics)", "Sanskrit",
    "Syriac_(Estrangelo)", "Tagalog", "Tifinagh",
)  # fmt: skip
EVALUATION_ALPHABETS = (
    "Angelic", "Atemayar_Qelisayer", "Atlantean", "Aurek-Besh", "Avesta", "Ge_ez",
    "Glagolitic", "Gurmukhi", "Kannada", "Keble", "Malayalam", "Manipuri", "Mongolian",
    "Old_Church_Slavonic_(Cyrillic)", "Oriya", "Sylheti", "Syriac_(Serto)", "Tengwar",
    "Tibetan", "ULOG",
)  # fmt: skip
# tfds' ClassLabel names for `alphabet`: sorted over the whole release.
OMNIGLOT_ALPHABETS = tuple(sorted(BACKGROUND_ALPHABETS + EVALUATION_ALPHABETS))
NUM_ALPHABETS = len(OMNIGLOT_ALPHABETS)


class _Archive(NamedTuple):
    filename: str
    sha256: str
    num_images: int


# SHA-256 values as tensorflow-datasets records them (url_checksums/omniglot.txt).
OMNIGLOT_ARCHIVES = {
    "train": _Archive(
        "images_background.zip",
        "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640",
        19280,
    ),
    "test": _Archive(
        "images_evaluation.zip",
        "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee",
        13180,
    ),
    "small1": _Archive(
        "images_background_small1.zip",
        "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
        2720,
    ),
    "small2": _Archive(
        "images_background_small2.zip",
        "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
        3120,
    ),
}


class _Records(NamedTuple):
    """One split's images in tfds order: PNG bytes and integer ids, `[num_images]`."""

    png: list
    alphabet: np.ndarray
    alphabet_char_id: np.ndarray
    label: np.ndarray


def _check_split(split: str) -> None:
    if split not in OMNIGLOT_ARCHIVES:
        raise ValueError(
            f"unknown Omniglot split {split!r}; choose one of {', '.join(OMNIGLOT_ARCHIVES)}."
        )


def _archive_path(split: str, data_dir: Path | None) -> Path | None:
    if data_dir is None:
        return None
    return find_release_file(data_dir, OMNIGLOT_ARCHIVES[split].filename, ("omniglot",))


@functools.lru_cache(maxsize=8)
def _read_archive(path: Path, split: str) -> _Records:
    """Checks the zip's SHA-256 and reads its PNGs in tfds' record order."""
    archive = OMNIGLOT_ARCHIVES[split]
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != archive.sha256:
        raise ValueError(
            f"{path} is corrupt or not the original Omniglot release: its SHA-256 is "
            f"{digest}, expected {archive.sha256}. Download {archive.filename} again from "
            "https://github.com/brendenlake/omniglot/tree/master/python."
        )
    salt = hashlib.md5(split.encode())
    rows = []
    with zipfile.ZipFile(path) as zipped:
        for name in zipped.namelist():
            parts = name.split("/")  # <folder>/<Alphabet>/character<NN>/<NNNN>_<DD>.png
            if len(parts) != 4 or not parts[3].endswith(".png"):
                continue
            _, alphabet, character, filename = parts
            char_id = int(character[len("character") :]) - 1
            key = f"{alphabet}_{char_id}_{filename}"
            hashed = salt.copy()
            hashed.update(key.encode())
            rows.append(
                (
                    int(hashed.hexdigest(), 16),
                    zipped.read(name),
                    OMNIGLOT_ALPHABETS.index(alphabet),
                    char_id,
                    int(filename.split("_")[0]) - 1,
                )
            )
    if len(rows) != archive.num_images:
        raise ValueError(f"{path} holds {len(rows)} images, expected {archive.num_images}.")
    rows.sort(key=lambda row: row[0])
    return _Records(
        png=[row[1] for row in rows],
        alphabet=np.array([row[2] for row in rows], np.int64),
        alphabet_char_id=np.array([row[3] for row in rows], np.int64),
        label=np.array([row[4] for row in rows], np.int64),
    )


def _from_records(records: _Records) -> tf.data.Dataset:
    def decode(png, alphabet, alphabet_char_id, label):
        image = tf.io.decode_png(png, channels=3)
        image.set_shape([IMAGE_SIZE, IMAGE_SIZE, 3])
        return {
            "image": image,
            "alphabet": alphabet,
            "alphabet_char_id": alphabet_char_id,
            "label": label,
        }

    return tf.data.Dataset.from_tensor_slices(
        (records.png, records.alphabet, records.alphabet_char_id, records.label)
    ).map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _load_split(split: str, data_dir: Path | None) -> tf.data.Dataset:
    path = _archive_path(split, data_dir)
    if path is not None:
        return _from_records(_read_archive(path, split))
    try:
        return load_tfds("omniglot", split, data_dir, shuffle_files=False)
    except ValueError as error:
        where = "no data directory was given" if data_dir is None else f"not in {data_dir}"
        raise FileNotFoundError(
            f"Omniglot {split!r} needs {OMNIGLOT_ARCHIVES[split].filename} ({where}; also "
            f"looked in its omniglot/ and downloads/ folders), and tfds cannot fetch it: "
            f"{error}"
        ) from error


def split_alphabets(split: str, data_dir=None) -> tuple[str, ...]:
    """The sorted names of the alphabets in an Omniglot split."""
    _check_split(split)
    data_dir = resolve_data_dir(data_dir)
    path = _archive_path(split, data_dir)
    if path is not None:
        ids = np.unique(_read_archive(path, split).alphabet)
    else:
        ids = np.unique([int(x) for x in _load_split(split, data_dir).map(lambda e: e["alphabet"])])
    return tuple(OMNIGLOT_ALPHABETS[i] for i in ids)


def image_digests(dataset: tf.data.Dataset) -> list[str]:
    """MD5 of each image's pixels, in order: equal images have equal digests.

    Args:
      dataset: elements are dicts with an `image` key, or tuples whose first
        item is the image (any shape and dtype).
    """
    digests = []
    for element in dataset:
        image = element["image"] if isinstance(element, dict) else element[0]
        digests.append(hashlib.md5(np.ascontiguousarray(image.numpy()).tobytes()).hexdigest())
    return digests


def load_omniglot(
    split: str,
    data_dir=None,
    alphabets: Sequence[str] | None = None,
    exclude_alphabets: Sequence[str] = (),
    exclude_alphabets_of: Sequence[str] = (),
    exclude_images_of: Sequence[str] = (),
) -> tf.data.Dataset:
    """Loads an Omniglot split with the element structure of `tfds.load('omniglot')`.

    Args:
      split: 'train' (images_background, 30 alphabets, 19,280 images), 'test'
        (images_evaluation, 20 alphabets, 13,180), 'small1' (2,720) or
        'small2' (3,120).
      data_dir: directory holding the release zips (directly, or in `omniglot/`
        or `downloads/`); defaults to `$TFLEAK_DATA_DIR`. Without the zip the
        split is loaded with tfds, which needs a network the first time.
      alphabets: keep only these alphabets (names as in `OMNIGLOT_ALPHABETS`);
        None keeps all.
      exclude_alphabets: drop these alphabets.
      exclude_alphabets_of: drop every alphabet present in these splits.
      exclude_images_of: drop images whose pixels equal an image of these
        splits (Omniglot's small sets share 1,000 byte-identical images).

    Returns:
      A finite `tf.data.Dataset` of dicts: `image` uint8 `[105, 105, 3]` in
      {0, 255}, `alphabet`, `alphabet_char_id`, `label` int64 scalars; in tfds'
      record order, deterministic.

    Raises:
      ValueError: unknown split or alphabet name, or a corrupt or altered zip
        (its SHA-256 differs from the release's).
      FileNotFoundError: the zip is not in `data_dir` and tfds cannot load the
        split offline.
    """
    _check_split(split)
    for other in (*exclude_alphabets_of, *exclude_images_of):
        _check_split(other)
    names = list(alphabets or ()) + list(exclude_alphabets)
    unknown = sorted(set(names) - set(OMNIGLOT_ALPHABETS))
    if unknown:
        raise ValueError(
            f"unknown Omniglot alphabets {unknown}; names are those of OMNIGLOT_ALPHABETS, "
            "e.g. 'Japanese_(katakana)'."
        )
    data_dir = resolve_data_dir(data_dir)
    dataset = _load_split(split, data_dir)

    dropped = set(exclude_alphabets)
    for other in exclude_alphabets_of:
        dropped |= set(split_alphabets(other, data_dir))
    kept = set(OMNIGLOT_ALPHABETS if alphabets is None else alphabets) - dropped
    if kept != set(OMNIGLOT_ALPHABETS):
        ids = tf.constant(sorted(OMNIGLOT_ALPHABETS.index(name) for name in kept), tf.int64)
        dataset = dataset.filter(lambda e: tf.reduce_any(tf.equal(e["alphabet"], ids)))

    if exclude_images_of:
        seen = set()
        for other in exclude_images_of:
            seen |= set(image_digests(_load_split(other, data_dir)))
        keep = tf.constant([digest not in seen for digest in image_digests(dataset)])
        dataset = dataset.enumerate().filter(lambda index, _: keep[index])
        dataset = dataset.map(lambda _, element: element)
    return dataset


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
