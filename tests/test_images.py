"""open_rgb / image_problem: conversions to RGB and one clear error per kind of bad file."""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageFile

from ipce.datasets.images import PROBLEM_KINDS, decode_rgb, image_problem, open_rgb
from ipce.errors import DataError, IpceError
from tests.datagen import write_image


def _raises(path, kind):
    with pytest.raises(DataError) as info:
        open_rgb(path)
    err = info.value
    message = str(err)
    assert str(path) in message, message
    assert "\n" not in message
    assert err.kind == kind, (err.kind, message)
    assert kind in PROBLEM_KINDS
    assert isinstance(err, IpceError)
    assert image_problem(path) == (kind, message)
    return message


# ----------------------------------------------------------------------------- good files

def test_png_and_jpeg_open_as_fully_loaded_rgb(tmp_path):
    png = write_image(tmp_path / "a.png", size=(40, 30), color=(10, 20, 30))
    jpg = write_image(tmp_path / "b.jpg", size=(40, 30), color=(200, 100, 50))
    im = open_rgb(png)
    assert im.mode == "RGB" and im.size == (40, 30)
    assert im.getpixel((5, 5)) == (10, 20, 30)
    assert np.abs(np.asarray(open_rgb(jpg), dtype=int) - [200, 100, 50]).max() <= 3
    assert image_problem(png) is None and image_problem(jpg) is None


def test_pillow_truncation_guard_is_off_after_importing_ipce():
    import ipce.datasets.checks  # noqa: F401  (everything that opens images)
    import ipce.datasets.sources  # noqa: F401

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_palette_converts_to_its_colours(tmp_path):
    im = Image.new("P", (4, 4), 1)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    im.putpixel((0, 0), 0)
    im.save(tmp_path / "p.png")
    out = open_rgb(tmp_path / "p.png")
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 0, 0) and out.getpixel((3, 3)) == (0, 255, 0)


def test_palette_with_transparency_goes_on_white(tmp_path):
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    im.putpixel((0, 0), 0)
    im.info["transparency"] = 0
    im.save(tmp_path / "pt.png", transparency=0)
    assert Image.open(tmp_path / "pt.png").info.get("transparency") is not None
    out = open_rgb(tmp_path / "pt.png")
    assert out.getpixel((0, 0)) == (255, 255, 255)  # transparent index -> white, not black
    assert out.getpixel((2, 2)) == (0, 0, 255)
    # the same through a GIF (palette transparency is the common case there)
    im.save(tmp_path / "pt.gif", transparency=0)
    assert open_rgb(tmp_path / "pt.gif").getpixel((0, 0)) == (255, 255, 255)


def test_rgba_is_composited_on_white(tmp_path):
    pixels = np.zeros((2, 2, 4), np.uint8)
    pixels[0, 0] = (255, 0, 0, 255)    # opaque red
    pixels[0, 1] = (0, 0, 0, 0)        # fully transparent black
    pixels[1, 0] = (0, 0, 0, 128)      # half-transparent black
    pixels[1, 1] = (0, 0, 255, 255)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "rgba.png")
    out = open_rgb(tmp_path / "rgba.png")
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert out.getpixel((1, 0)) == (255, 255, 255)
    assert all(abs(v - 127) <= 2 for v in out.getpixel((0, 1)))
    assert out.getpixel((1, 1)) == (0, 0, 255)


def test_la_is_composited_on_white(tmp_path):
    pixels = np.array([[[50, 255], [0, 0]]], np.uint8)
    Image.fromarray(pixels, "LA").save(tmp_path / "la.png")
    out = open_rgb(tmp_path / "la.png")
    assert out.getpixel((0, 0)) == (50, 50, 50)
    assert out.getpixel((1, 0)) == (255, 255, 255)


def test_grey_bilevel_and_cmyk(tmp_path):
    Image.new("L", (3, 3), 77).save(tmp_path / "l.png")
    assert open_rgb(tmp_path / "l.png").getpixel((1, 1)) == (77, 77, 77)
    Image.new("1", (3, 3), 1).save(tmp_path / "one.png")
    assert open_rgb(tmp_path / "one.png").getpixel((1, 1)) == (255, 255, 255)
    Image.new("CMYK", (3, 3), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    r, g, b = open_rgb(tmp_path / "c.jpg").getpixel((1, 1))
    assert r > 200 and g < 60 and b < 60  # cyan=0, magenta=yellow=full -> red


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = np.asarray(open_rgb(tmp_path / "g16.png"))
    assert out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out[..., 0] == out[..., 2]).all()


def test_int32_and_float_modes(tmp_path):
    Image.fromarray(np.array([[0, 65535, 257]], np.int32), "I").save(tmp_path / "i.tif")
    assert np.asarray(open_rgb(tmp_path / "i.tif"))[0, :, 1].tolist() == [0, 255, 1]
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F").save(tmp_path / "f01.tif")
    assert np.asarray(open_rgb(tmp_path / "f01.tif"))[0, :, 0].tolist() == [0, 128, 255]
    Image.fromarray(np.array([[0.0, 100.0, 300.0]], np.float32), "F").save(tmp_path / "f255.tif")
    assert np.asarray(open_rgb(tmp_path / "f255.tif"))[0, :, 0].tolist() == [0, 100, 255]


# ----------------------------------------------------------------------------- bad files

def test_missing_file(tmp_path):
    message = _raises(tmp_path / "nope.png", "missing")
    assert "not found" in message


def test_zero_byte_file(tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    assert "empty" in _raises(tmp_path / "zero.jpg", "empty")


def test_text_file_named_png_is_not_an_image(tmp_path):
    (tmp_path / "x.png").write_text("hello, I am text")
    assert "not an image" in _raises(tmp_path / "x.png", "not-an-image")


def test_folder_is_unreadable(tmp_path):
    (tmp_path / "dir.png").mkdir()
    _raises(tmp_path / "dir.png", "unreadable")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image_is_not_loaded_silently(tmp_path, suffix):
    path = write_image(tmp_path / f"t{suffix}", size=(64, 64), seed=3)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    Image.open(path)  # the header alone is fine: only the full decode finds the problem
    assert "truncated" in _raises(path, "truncated")


def test_corrupt_image(tmp_path):
    path = write_image(tmp_path / "c.png", size=(64, 64), seed=4)
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 8
    for i in range(start, start + 64):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    assert "corrupt" in _raises(path, "corrupt")


def test_decompression_bomb_over_twice_the_limit(tmp_path, monkeypatch):
    path = write_image(tmp_path / "bomb.png", size=(64, 64))  # 4096 px > 2 * 1000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert "decompression bomb" in _raises(path, "too-large")


def test_decompression_bomb_warning_is_an_error_too(tmp_path, monkeypatch):
    path = write_image(tmp_path / "warn.png", size=(40, 40))  # 1600 px: above 1000, below 2000 -> Pillow only warns
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _raises(path, "too-large")
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]
    assert list(warnings.filters) == before  # the filter does not leak out


def test_bomb_check_holds_under_parallel_decoding(tmp_path, monkeypatch):
    good = [write_image(tmp_path / f"g{i}.png", size=(20, 20), seed=i) for i in range(20)]
    bombs = [write_image(tmp_path / f"b{i}.png", size=(40, 40)) for i in range(20)]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    paths = [p for pair in zip(good, bombs) for p in pair]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(image_problem, paths))
    assert all(r is None for r in results[0::2])
    assert all(r is not None and r[0] == "too-large" and "decompression bomb" in r[1] for r in results[1::2])


def test_bytes_decode_like_the_file_and_name_the_label(tmp_path):
    """decode_rgb (uploads) gives the pixels open_rgb gives for the same file, and its
    problems carry open_rgb's kind with the caller's label instead of a path."""
    path = tmp_path / "pal.png"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8)).convert("P").save(path)
    data = path.read_bytes()
    assert np.array_equal(np.asarray(decode_rgb(data, "upload")), np.asarray(open_rgb(path)))
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as from_file:
        open_rgb(cut)
    for payload, kind in ((data[: len(data) // 2], from_file.value.kind), (b"not an image", "not-an-image"),
                          (b"", "empty")):
        with pytest.raises(DataError) as err:
            decode_rgb(payload, "images[3] (cat.png)")
        assert err.value.kind == kind
        assert str(err.value).startswith("images[3] (cat.png): ") and str(tmp_path) not in str(err.value)
