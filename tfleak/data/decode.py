"""Image files decoded at their real bit depth and mode, as float32 in [0, 1].

Every file PIL opens is read, and each mode is mapped onto [0, 1] by what its
numbers mean, never by a blind `convert('RGB')` (which clips a 16-bit PNG to
almost white and drops alpha without a word):

- 8-bit greyscale (`L`), bilevel (`1`), RGB: divided by 255.
- 16-bit PNG (greyscale, grey + alpha, RGB, RGBA): decoded with all 16 bits
  (`tf.io.decode_png(dtype=uint16)`; PIL keeps only the high byte of
  16-bit colour) and divided by 65535. Other 16-bit images (`I;16` TIFF, PGM)
  likewise; 32-bit integer images (`I`) only when their values fit 0..65535.
- 32-bit float (`F`): kept when finite and in [0, 1], refused otherwise.
- Transparency (`RGBA`, grey + alpha `LA`, palette `P` with transparency,
  which goes through RGBA): composited onto a white background,
  `pixel * alpha + 1 * (1 - alpha)`, as a browser shows it on a white page.
- `CMYK` (print JPEGs), `YCbCr`, `LAB`, `HSV`: converted to RGB by PIL.
- EXIF orientation (photos from phones) is applied.
- Animated GIF/PNG/WebP: the first frame.

A file larger than `PIL.Image.MAX_IMAGE_PIXELS` pixels (89 million by
default) is refused as a possible decompression bomb, with a `ValueError`
naming the file and the limit.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

__all__ = ["decode_image", "load_image_file", "resize_images", "readable_extensions"]

_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601-2 luma, as PIL's 'L'.
_ALPHA_MODES = {"RGBA": "RGBA", "RGBa": "RGBA", "LA": "LA", "La": "LA", "PA": "RGBA", "P": "RGBA"}
_TO_RGB_MODES = ("CMYK", "YCbCr", "LAB", "HSV", "RGBX")


def readable_extensions() -> frozenset:
    """File name endings (lower case, with the dot) of every format PIL can open."""
    from PIL import Image

    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def _check_path(path: Path) -> None:
    if path.is_dir():
        raise ValueError(
            f"image path {str(path)!r} is a directory, not an image file; pass one image file "
            "(for a folder of images, one sub-folder per class, load_dataset('folder', "
            "data_dir=...) or --dataset=folder --data_dir=...)."
        )
    if not path.exists():
        raise ValueError(f"image file {str(path)!r} does not exist; pass a PNG or JPEG path.")
    if not path.is_file():
        raise ValueError(f"image path {str(path)!r} is not a regular file; pass an image file.")


def _bomb_error(path: Path, detail: str):
    from PIL import Image

    return ValueError(
        f"image {str(path)!r} is refused as a possible decompression bomb: {detail}, more "
        f"than the limit of {Image.MAX_IMAGE_PIXELS:,} pixels (PIL.Image.MAX_IMAGE_PIXELS). "
        "Downscale the image, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file."
    )


def _is_16bit_png(image) -> bool:
    return image.format == "PNG" and any(
        isinstance(tile.args, str) and tile.args.endswith(";16B") for tile in image.tile
    )


def _decode_16bit_png(path: Path) -> np.ndarray:
    import tensorflow as tf

    try:
        pixels = tf.io.decode_png(path.read_bytes(), channels=0, dtype=tf.uint16).numpy()
    except tf.errors.OpError as error:
        raise ValueError(
            f"{str(path)!r} is a 16-bit PNG that cannot be decoded: it is truncated or "
            f"corrupt ({error.message}). Save or download it again."
        ) from error
    return pixels.astype(np.float32) / 65535.0


def _open(path: Path):
    """`Image.open`, trying the format the extension names first (4x fewer probes)."""
    from PIL import Image, UnidentifiedImageError

    hint = Image.registered_extensions().get(path.suffix.lower())
    if hint in Image.OPEN:
        try:
            return Image.open(path, formats=(hint,))
        except UnidentifiedImageError:
            pass  # A file whose extension lies: let PIL identify it.
    return Image.open(path)


def _composite_on_white(pixels: np.ndarray) -> np.ndarray:
    """`[h, w, c + 1]` colour + alpha in [0, 1] -> `[h, w, c]` on a white background."""
    colour, alpha = pixels[..., :-1], pixels[..., -1:]
    return colour * alpha + (1.0 - alpha)


def _pil_to_float(image, path: Path) -> np.ndarray:
    """A loaded PIL image -> `[h, w, 1 or 3 (+ 1 alpha)]` float32 in [0, 1]."""
    mode = image.mode
    if mode in _ALPHA_MODES:
        image = image.convert(_ALPHA_MODES[mode])
        return np.asarray(image, np.float32) / 255.0
    if mode in _TO_RGB_MODES:
        image, mode = image.convert("RGB"), "RGB"
    if mode == "1":
        image, mode = image.convert("L"), "L"
    if mode in ("L", "RGB"):
        pixels = np.asarray(image, np.float32) / 255.0
    elif mode.startswith("I;16"):
        pixels = np.asarray(image).astype(np.float32) / 65535.0
    elif mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"image {str(path)!r} holds 32-bit integer pixels in {values.min()}..."
                f"{values.max()}, outside 0..65535, so their scale is unknown; save it as an "
                "8- or 16-bit image."
            )
        pixels = values.astype(np.float32) / 65535.0
    elif mode == "F":
        pixels = np.asarray(image, np.float32)
        if not (np.all(np.isfinite(pixels)) and pixels.min() >= 0.0 and pixels.max() <= 1.0):
            raise ValueError(
                f"image {str(path)!r} holds 32-bit float pixels that are not all finite and "
                "in [0, 1], so their scale is unknown; save it scaled to [0, 1] or as an "
                "8- or 16-bit image."
            )
    else:
        try:
            pixels = np.asarray(image.convert("RGB"), np.float32) / 255.0
        except (ValueError, OSError) as error:
            raise ValueError(
                f"image {str(path)!r} has PIL mode {mode!r}, which tfleak cannot convert to "
                f"RGB ({error}); save it as an 8-bit RGB or greyscale PNG."
            ) from error
    return pixels if pixels.ndim == 3 else pixels[..., np.newaxis]


def decode_image(path, channels: int = 3) -> np.ndarray:
    """Reads one image file at its own size, as the module docstring describes.

    Args:
      path: an image file in any format PIL opens.
      channels: 3 for RGB (greyscale is repeated), 1 for greyscale (colour is
        reduced to luma, 0.299 R + 0.587 G + 0.114 B, as PIL's 'L').

    Returns:
      `[height, width, channels]` float32 in [0, 1].

    Raises:
      ValueError: the path is missing, a directory, not an image PIL can read,
        larger than `PIL.Image.MAX_IMAGE_PIXELS`, or holds pixels whose scale
        is unknown; or `channels` is not 1 or 3.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (greyscale) or 3 (RGB); got {channels}.")
    path = Path(path)
    _check_path(path)
    try:
        with warnings.catch_warnings():
            # The pixel limit is checked below, as an error instead of a warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _open(path) as image:
                width, height = image.size
                limit = Image.MAX_IMAGE_PIXELS
                if limit is not None and width * height > limit:
                    raise _bomb_error(path, f"{width}x{height} = {width * height:,} pixels")
                if _is_16bit_png(image):
                    pixels = _decode_16bit_png(path)
                    if pixels.shape[-1] in (2, 4):
                        pixels = _composite_on_white(pixels)
                else:
                    image.load()
                    if image.getexif().get(0x0112, 1) != 1:  # EXIF orientation.
                        image = ImageOps.exif_transpose(image)
                    pixels = _pil_to_float(image, path)
                    if pixels.shape[-1] in (2, 4):
                        pixels = _composite_on_white(pixels)
    except Image.DecompressionBombError as error:
        raise _bomb_error(path, str(error).split(" exceeds")[0]) from error
    except UnidentifiedImageError as error:
        raise ValueError(
            f"{str(path)!r} is not an image PIL can read ({error}); pass a PNG or JPEG file."
        ) from error
    except (OSError, SyntaxError, EOFError) as error:
        raise ValueError(
            f"{str(path)!r} is not an image PIL can read: it is truncated or corrupt "
            f"({error}). Save or download it again."
        ) from error
    if channels == 3 and pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    elif channels == 1 and pixels.shape[-1] == 3:
        pixels = (pixels @ _GREY_WEIGHTS)[..., np.newaxis]
    return np.clip(pixels, 0.0, 1.0).astype(np.float32)


def resize_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """`[n, h, w, c]` in [0, 1] -> `[n, image_size, image_size, c]`, antialiased.

    Non-square images are stretched to the square (as Keras'
    `image_dataset_from_directory` does by default), not cropped.
    """
    if images.shape[1:3] == (image_size, image_size):
        return images.astype(np.float32)
    import tensorflow as tf

    resized = tf.image.resize(images, (image_size, image_size), antialias=True)
    return np.clip(resized.numpy(), 0.0, 1.0).astype(np.float32)


def load_image_file(path, image_size: int = 32, channels: int = 3) -> np.ndarray:
    """Reads an image file as `[image_size, image_size, channels]` float32 in [0, 1].

    Any format PIL opens, at its real bit depth and mode: 16-bit images are
    scaled by 65535, transparent images (RGBA, grey + alpha, palette with
    transparency) are composited on white, CMYK is converted to RGB (see the
    module docstring).

    Args:
      path: the image file.
      image_size: side of the square output in pixels; the image is resized
        (stretched if it is not square).
      channels: 3 for RGB, 1 for greyscale.

    Raises:
      ValueError: the file does not exist, is a directory, is not an image, or
        is larger than `PIL.Image.MAX_IMAGE_PIXELS` (a decompression bomb).
    """
    if image_size < 1:
        raise ValueError(f"image_size must be at least 1 pixel; got {image_size}.")
    return resize_images(decode_image(path, channels)[np.newaxis], image_size)[0]
