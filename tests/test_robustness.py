"""Issue 10: odd image files are read as what they show, or refused with a clear message.

Each image is generated here as a real file in the format under test, with
pixel values chosen so the right answer is known by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tfleak.data import decode_image, load_dataset, load_image_file


def test_16bit_greyscale_png_is_scaled_by_65535_not_clipped(tmp_path):
    # A horizontal ramp 0..65535. Read as 8-bit it would be clipped: every value
    # above 255 (all but the first 0.4%) would become 1.0, "almost white".
    ramp = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (8, 1))
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"
    image = decode_image(path, channels=1)
    np.testing.assert_allclose(image[..., 0], ramp / 65535.0, atol=1e-6)
    assert image.mean() == pytest.approx(0.5, abs=1e-3)


def test_16bit_rgb_png_keeps_all_16_bits(tmp_path):
    import tensorflow as tf

    # Values that differ only in their low byte: PIL reads 16-bit colour as its
    # high byte (error up to 1/256); the full decode is exact to float32.
    pixels = np.array([[[0, 255, 65535], [256, 257, 32768]]], np.uint16)
    path = tmp_path / "rgb16.png"
    path.write_bytes(tf.io.encode_png(tf.constant(pixels)).numpy())
    np.testing.assert_allclose(decode_image(path), pixels / 65535.0, atol=1e-7)


def test_rgba_is_composited_on_white(tmp_path):
    # Red at alpha 255 stays red; red at alpha 0 is white; red at alpha 102
    # (0.4) is 0.4 * red + 0.6 * white = (1, 0.6, 0.6).
    rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 0], [255, 0, 0, 102]]], np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    image = decode_image(path)
    np.testing.assert_allclose(image[0], [[1, 0, 0], [1, 1, 1], [1, 0.6, 0.6]], atol=1e-6)


def test_palette_with_transparency_goes_through_rgba(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 255, 10, 200, 30] + [0] * 762)  # 0: blue, 1: green.
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    path = tmp_path / "palette.png"
    palette.save(path, transparency=0)  # Index 0 (blue) is fully transparent.
    image = decode_image(path)
    np.testing.assert_allclose(image[0], [[1, 1, 1], [10 / 255, 200 / 255, 30 / 255]], atol=1e-6)


def test_grey_with_alpha_is_composited_on_white(tmp_path):
    # Black opaque, black transparent, grey 51 at alpha 153 (0.6):
    # 0.6 * 0.2 + 0.4 = 0.52 in all three channels.
    la = np.array([[[0, 255], [0, 0], [51, 153]]], np.uint8)
    path = tmp_path / "grey_alpha.png"
    Image.fromarray(la, "LA").save(path)
    image = decode_image(path)
    np.testing.assert_allclose(image[0], [[0, 0, 0], [1, 1, 1], [0.52, 0.52, 0.52]], atol=1e-6)


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    # Pure cyan ink (C=255, M=Y=K=0) is RGB (0, 1, 1); pure black ink (K=255) is black.
    cmyk = np.zeros((16, 32, 4), np.uint8)
    cmyk[:, :16, 0] = 255
    cmyk[:, 16:, 3] = 255
    path = tmp_path / "print.jpg"
    Image.fromarray(cmyk, "CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    image = decode_image(path)
    np.testing.assert_allclose(image[4:12, 4:12].mean(axis=(0, 1)), [0, 1, 1], atol=0.03)
    np.testing.assert_allclose(image[4:12, 20:28].mean(axis=(0, 1)), [0, 0, 0], atol=0.03)


def test_greyscale_is_repeated_to_rgb_and_colour_reduced_to_luma(tmp_path):
    grey = np.array([[0, 128, 255]], np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    rgb = decode_image(tmp_path / "grey.png", channels=3)
    np.testing.assert_allclose(rgb[0], np.repeat(grey[0, :, None] / 255.0, 3, axis=-1))
    Image.fromarray(np.array([[[255, 0, 0]]], np.uint8)).save(tmp_path / "red.png")
    assert decode_image(tmp_path / "red.png", channels=1)[0, 0, 0] == pytest.approx(0.299)


def test_an_image_folder_decodes_odd_modes_too(tmp_path):
    (tmp_path / "deep").mkdir()
    (tmp_path / "clear").mkdir()
    Image.fromarray(np.full((4, 4), 32768, np.uint16)).save(tmp_path / "deep" / "a.png")
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(tmp_path / "clear" / "b.png")
    dataset = load_dataset("folder", data_dir=str(tmp_path), image_size=4)
    assert dataset.class_names == ["clear", "deep"]
    np.testing.assert_allclose(dataset.images[0], 1.0)  # Transparent -> white.
    np.testing.assert_allclose(dataset.images[1], 32768 / 65535, atol=1e-6)  # Not clipped.


@pytest.mark.parametrize("side", [40, 64])  # 1,600 px: PIL warns; 4,096 px: PIL raises.
def test_decompression_bomb_is_refused_with_the_limit(tmp_path, monkeypatch, side):
    path = tmp_path / "bomb.png"
    Image.new("L", (side, side)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    with pytest.raises(ValueError) as error:
        load_image_file(path)
    message = str(error.value)
    assert "bomb.png" in message and "decompression bomb" in message
    assert "limit of 1,000 pixels (PIL.Image.MAX_IMAGE_PIXELS)" in message


def test_a_directory_given_as_an_image_says_so(tmp_path):
    with pytest.raises(ValueError, match="is a directory, not an image file"):
        load_image_file(tmp_path)


def test_a_truncated_image_names_the_file(tmp_path):
    path = tmp_path / "cut.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match="cut.png' is not an image PIL can read: it is truncated"):
        load_image_file(path)


def test_float_pixels_of_unknown_scale_are_refused(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 300.0]], np.float32), "F").save(path)
    with pytest.raises(ValueError, match="32-bit float pixels that are not all finite and in"):
        decode_image(path)


def test_figures_are_written_whole_and_leave_no_temporary_files(tmp_path):
    from tfleak import plotting

    frames = [np.full((8, 8, 3), v, np.float32) for v in (0.0, 0.5, 1.0)]
    (tmp_path / "grid.png").write_text("an old, broken figure")
    plotting.plot_image_rows([frames], tmp_path / "grid.png")
    plotting.save_progress_gif(frames, tmp_path / "progress.gif")
    with Image.open(tmp_path / "grid.png") as grid, Image.open(tmp_path / "progress.gif") as gif:
        assert grid.format == "PNG" and gif.format == "GIF" and gif.n_frames == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "progress.gif"]
    with pytest.raises(ValueError, match="needs at least one frame"):
        plotting.save_progress_gif([], tmp_path / "empty.gif")
