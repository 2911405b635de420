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
the experiment's schemes (`tfleak.data.omniglot.schemes`) use that to keep the
attacker's training and test images disjoint.
"""

from __future__ import annotations

import functools
import hashlib
import zipfile
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
